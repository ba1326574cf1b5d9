r"""The normalization model of attention (Reynolds & Heeger 2009) and biased competition.

Population response (Reynolds & Heeger 2009, Fig. 1 and eq. 1). Neurons are indexed by their
receptive-field centre ``x`` (deg) and preferred feature ``theta`` (e.g. orientation, deg):

* stimulus drive ``E(x, theta)``: the stimuli seen through the receptive fields -- a stimulus
  of contrast ``c``, centre ``x_s``, width ``size_s`` and feature ``theta_s`` drives neuron
  ``(x, theta)`` by ``c * [box_s conv N(0, rf_width^2)](x) * exp(-(theta - theta_s)^2 /
  (2 tuning_width^2))`` (the box-Gaussian convolution is a difference of error functions);
* attention field ``A(x, theta) = 1 + (gain - 1) exp(-(x - x_A)^2 / (2 attention_width^2))``
  (times a feature-tuned factor for feature-based attention), 1 = unattended;
* suppressive drive ``S = pool * (A E)``: the attention-weighted drive pooled by a normalised
  Gaussian kernel over space (``pool_width``) and feature (``pool_feature_width``);
* response ``R = A E / (S + sigma)``.

A small attention field on a large stimulus scales the response (response gain); a large field
on a small stimulus shifts the contrast-response function (contrast gain) -- the model's central
prediction, checked in the tests.

The softmax: with a global pool that sums the attention-weighted drive (``pool`` all ones) and
``sigma -> 0``, ``R_i = A_i E_i / sum_j A_j E_j = softmax(log A + log E)_i``
(:func:`normalization_response`; ``docs/design.md``, "Neuroscience-style models").

Reduced psychometric form (behaviour; Reynolds & Heeger 2009, Fig. 3-4; Herrmann et al. 2010):
sensitivity is a Naka-Rushton function of contrast ``d'(c) = d_max c^n / (c^n + c50^n)`` and
attention with gain ``g`` either multiplies the contrast (``contrast_gain``:
``c -> g c``, i.e. ``c50 -> c50 / g``) or the response (``response_gain``: ``d_max -> g
d_max``); two-alternative forced choice gives ``P(correct) = lapse / 2 + (1 - lapse)
Phi(d' / sqrt 2)``.

Biased competition (Reynolds, Chelazzi & Desimone 1999): the response to a pair of stimuli is
the average of the single-stimulus responses weighted by the input strengths, and attention
multiplies the strength of the attended input -- a softmax-weighted average
(:func:`biased_competition_response`).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch

from ..base import BayesianModel, hyperparameter
from ._common import as_float_tensor, check_probability, draws_slices, fixed_or_draw, ndtr

__all__ = [
    "VARIANTS",
    "normalization_response",
    "PopulationResponse",
    "population_response",
    "naka_rushton",
    "attended_d_prime",
    "psychometric_2afc",
    "simulate_psychometric",
    "biased_competition_response",
    "NormalizationPsychometric",
]

VARIANTS = ("contrast_gain", "response_gain")


def _check_nonneg(name, t):
    t = as_float_tensor(name, t)
    if bool((t.detach() < 0).any()):
        raise ValueError(f"{name} must be non-negative")
    return t


def _check_pos(name, t):
    t = as_float_tensor(name, t)
    if bool((t.detach() <= 0).any()):
        raise ValueError(f"{name} must be positive, got {t}")
    return t


# ----------------------------------------------------------------------------- generic form
def normalization_response(stimulus_drive, attention_field, *, sigma, pool=None) -> torch.Tensor:
    """Normalised response ``R = A E / (sigma + pool @ (A E))`` of ``P`` neurons, ``(..., P)``.

    Reynolds & Heeger (2009), eq. 1, for a population flattened to ``P`` neurons.

    Args:
        stimulus_drive: ``E (..., P)``, non-negative.
        attention_field: ``A (..., P)`` (or broadcastable), non-negative; 1 = no attention.
        sigma: semi-saturation constant (> 0; 0 allowed only with a global pool).
        pool: suppressive weights ``(P, P)`` (non-negative): neuron ``i`` is suppressed by
            ``sum_j pool[i, j] A_j E_j``. None = global pool of ones, whose ``sigma -> 0`` limit
            is ``softmax(log A + log E)``.

    Raises:
        ValueError: negative drive, field or pool; ``pool`` not ``(P, P)``; negative ``sigma``;
            ``sigma = 0`` with a neuron whose suppressive drive is 0.
    """
    E = _check_nonneg("stimulus_drive", stimulus_drive)
    A = _check_nonneg("attention_field", attention_field)
    s = _check_nonneg("sigma", sigma)
    drive = A * E
    if pool is None:
        suppressive = drive.sum(-1, keepdim=True)
    else:
        pool = _check_nonneg("pool", pool)
        p = drive.shape[-1]
        if pool.shape != (p, p):
            raise ValueError(f"pool must have shape (P, P) = ({p}, {p}), got {tuple(pool.shape)}")
        suppressive = drive @ pool.T
    denom = suppressive + s
    if bool((denom.detach() <= 0).any()):
        raise ValueError("sigma = 0 and a neuron has no suppressive drive: R would be 0/0")
    return drive / denom


class PopulationResponse(NamedTuple):
    """The stages of :func:`population_response`, each ``(..., X, Q)`` (space x feature)."""

    response: torch.Tensor
    stimulus_drive: torch.Tensor
    attention_field: torch.Tensor
    suppressive_drive: torch.Tensor


def _gauss_kernel(grid, width, *, period=None):
    d = grid[:, None] - grid[None, :]
    if period is not None:
        d = torch.remainder(d + period / 2, period) - period / 2
    k = torch.exp(-0.5 * (d / width) ** 2)
    return k / k.sum(-1, keepdim=True)


def population_response(
    positions,
    *,
    contrast,
    stimulus_center,
    stimulus_size,
    stimulus_feature=None,
    features=None,
    attention_center=0.0,
    attention_width=5.0,
    attention_gain=2.0,
    attention_feature=None,
    attention_feature_width=30.0,
    rf_width=1.0,
    tuning_width=20.0,
    pool_width=10.0,
    pool_feature_width=1e3,
    sigma=1e-6,
    feature_period=180.0,
) -> PopulationResponse:
    """The Reynolds-Heeger population: stimulus drive, attention field, suppression, response.

    Shapes: ``positions (X,)`` deg; ``features (Q,)`` deg (default a single channel);
    ``contrast (..., S)`` for ``S`` stimuli with ``stimulus_center (S,)``, ``stimulus_size (S,)``
    (deg), ``stimulus_feature (S,)``. Output fields ``(..., X, Q)`` (module docstring; Reynolds &
    Heeger 2009, Fig. 1). Feature distances wrap with ``feature_period`` (180 for orientation).

    Args:
        attention_center, attention_width, attention_gain: spatial attention field (peak
            ``attention_gain``, baseline 1).
        attention_feature, attention_feature_width: optional feature-based attention (the
            field is then also tuned in feature).
        rf_width, tuning_width: excitatory receptive field (space) and tuning (feature) widths.
        pool_width, pool_feature_width: widths of the suppressive pool (normalised kernels).
        sigma: semi-saturation constant.

    Raises:
        ValueError: mismatched stimulus shapes; non-positive widths, sizes or gain; negative
            contrast or sigma.
    """
    x = as_float_tensor("positions", positions)
    if x.dim() != 1 or x.numel() < 1:
        raise ValueError("positions must be a 1-D tensor of receptive-field centres")
    theta = (
        torch.zeros(1, dtype=x.dtype) if features is None else as_float_tensor("features", features)
    )
    c = _check_nonneg("contrast", contrast)
    centre = as_float_tensor("stimulus_center", stimulus_center)
    size = _check_pos("stimulus_size", stimulus_size)
    n_stim = c.shape[-1] if c.dim() else 1
    if c.dim() == 0:
        c = c[None]
    if centre.shape[-1:] != (n_stim,) or size.shape[-1:] != (n_stim,):
        raise ValueError(
            f"stimulus_center and stimulus_size must have shape (S,) = ({n_stim},) like contrast"
        )
    feat = (
        torch.zeros(n_stim, dtype=x.dtype)
        if stimulus_feature is None
        else as_float_tensor("stimulus_feature", stimulus_feature)
    )
    for name, v in (
        ("rf_width", rf_width),
        ("tuning_width", tuning_width),
        ("pool_width", pool_width),
        ("pool_feature_width", pool_feature_width),
        ("attention_width", attention_width),
        ("attention_feature_width", attention_feature_width),
        ("attention_gain", attention_gain),
    ):
        _check_pos(name, v)
    # stimulus drive: box (width size) convolved with a Gaussian RF, times feature tuning
    root2w = math.sqrt(2.0) * rf_width
    dx = x[:, None] - centre  # (X, S)
    spatial = 0.5 * (torch.erf((dx + size / 2) / root2w) - torch.erf((dx - size / 2) / root2w))
    dtheta = torch.remainder(theta[:, None] - feat + feature_period / 2, feature_period)
    dtheta = dtheta - feature_period / 2  # (Q, S)
    tuning = torch.exp(-0.5 * (dtheta / tuning_width) ** 2)
    E = torch.einsum("...s,xs,qs->...xq", c, spatial, tuning)
    # attention field
    spot = torch.exp(-0.5 * ((x - attention_center) / attention_width) ** 2)[:, None]  # (X, 1)
    if attention_feature is not None:
        dth = torch.remainder(theta - attention_feature + feature_period / 2, feature_period)
        dth = dth - feature_period / 2
        spot = spot * torch.exp(-0.5 * (dth / attention_feature_width) ** 2)[None, :]
    A = 1.0 + (as_float_tensor("attention_gain", attention_gain) - 1.0) * spot
    A = A.expand(E.shape[-2:])
    # suppressive drive: normalised Gaussian pools over space and feature
    ks = _gauss_kernel(x, pool_width)
    kf = _gauss_kernel(theta, pool_feature_width, period=feature_period)
    drive = A * E
    S = torch.einsum("xy,...yr,qr->...xq", ks, drive, kf)
    s = _check_nonneg("sigma", sigma)
    R = drive / (S + s)
    return PopulationResponse(R, E, A.expand_as(E), S)


# ----------------------------------------------------------------------------- behaviour
def naka_rushton(contrast, *, r_max, c50, n) -> torch.Tensor:
    """``r_max c^n / (c^n + c50^n)`` (Naka & Rushton 1966), elementwise.

    Raises:
        ValueError: negative contrast; non-positive ``r_max``, ``c50`` or ``n``.
    """
    c = _check_nonneg("contrast", contrast)
    c50 = as_float_tensor("c50", c50)
    n = as_float_tensor("n", n)
    # written as a logistic in log contrast: stable, and exactly 0 at c = 0
    pos = c > 0
    logc = torch.log(torch.where(pos, c, 1.0))
    frac = torch.sigmoid(n * (logc - torch.log(c50)))
    return as_float_tensor("r_max", r_max) * torch.where(pos, frac, 0.0)


def attended_d_prime(contrast, attended, *, d_max, c50, n, gain, variant) -> torch.Tensor:
    """Sensitivity ``d'`` with attention as contrast gain or response gain (module docstring).

    Args:
        contrast: ``(..., T)`` stimulus contrast in [0, 1] (or any non-negative unit of ``c50``).
        attended: ``(..., T)`` bool or 0/1: the stimulus was at the attended (cued) location.
        d_max, c50, n: Naka-Rushton maximum, semi-saturation contrast and exponent.
        gain: attentional gain (> 0; 1 = no effect).
        variant: ``"contrast_gain"`` or ``"response_gain"``.

    Raises:
        ValueError: unknown variant; non-positive parameters; negative contrast.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    gain = _check_pos("gain", gain)
    att = torch.as_tensor(attended).to(torch.float64)
    g = 1.0 + (gain - 1.0) * att  # gain on attended trials, 1 otherwise
    c = _check_nonneg("contrast", contrast)
    if variant == "contrast_gain":
        return naka_rushton(g * c, r_max=d_max, c50=c50, n=n)
    return g * naka_rushton(c, r_max=d_max, c50=c50, n=n)


def psychometric_2afc(d_prime, *, lapse=0.0) -> torch.Tensor:
    """Two-alternative forced-choice accuracy ``lapse/2 + (1 - lapse) Phi(d'/sqrt 2)``.

    Green & Swets (1966): the difference of two unit-variance responses has sd ``sqrt 2``.

    Raises:
        ValueError: ``lapse`` outside [0, 1).
    """
    lapse = as_float_tensor("lapse", lapse)
    if bool(((lapse.detach() < 0) | (lapse.detach() >= 1)).any()):
        raise ValueError(f"lapse must lie in [0, 1), got {lapse}")
    return lapse / 2 + (1 - lapse) * ndtr(as_float_tensor("d_prime", d_prime) / math.sqrt(2.0))


def simulate_psychometric(
    contrast,
    attended,
    *,
    d_max,
    c50,
    n,
    gain,
    variant,
    lapse=0.02,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simulate 2AFC correct (1) / error (0) per trial, float ``(T,)``.

    Arguments as :func:`attended_d_prime` and :func:`psychometric_2afc`.

    Raises:
        ValueError: as those functions.
    """
    p = psychometric_2afc(
        attended_d_prime(contrast, attended, d_max=d_max, c50=c50, n=n, gain=gain, variant=variant),
        lapse=lapse,
    )
    return (torch.rand(p.shape, generator=generator, dtype=p.dtype) < p).to(p.dtype)


def biased_competition_response(responses, strengths, attention_gain=None) -> torch.Tensor:
    """Pair response of biased competition ``sum_i g_i s_i r_i / sum_i g_i s_i``, ``(...)``.

    Reynolds, Chelazzi & Desimone (1999): the response to several stimuli in one receptive field
    is the average of the single-stimulus responses ``r (..., S)`` weighted by input strengths
    ``s (..., S)``, and attention multiplies the attended input's strength by ``g``; the weights
    are ``softmax(log g + log s)``.

    Raises:
        ValueError: negative responses; non-positive strengths or gains.
    """
    r = as_float_tensor("responses", responses)
    s = _check_pos("strengths", strengths)
    g = torch.ones_like(s)
    if attention_gain is not None:
        g = _check_pos("attention_gain", attention_gain)
    weights = torch.softmax(torch.log(g) + torch.log(s), -1)
    return (weights * r).sum(-1)


# ----------------------------------------------------------------------------- Pyro model
class NormalizationPsychometric(BayesianModel):
    """Reduced normalization model of attention for 2AFC contrast psychophysics (Pyro).

    Data (``T`` trials)::

        contrast (T,) float, attended (T,) bool/0-1, correct (T,) 0/1 float [obs]

    Parameters (fixed or Pyro priors): ``d_max`` (default ``LogNormal(log 3, 0.5)``), ``c50``
    (``LogNormal(log 0.1, 0.75)``, contrast units), ``n`` (``LogNormal(log 2, 0.3)``), ``gain``
    (``LogNormal(log 1.5, 0.5)``), ``lapse`` (fixed 0.02).

    Deterministic ``attention_weights (2,)``: the normalised attention field over the attended
    and an unattended location at equal drive, ``softmax([log gain, 0])`` -- the share of the
    global normalisation pool (module docstring).

    Raises:
        ValueError: unknown ``variant``; a fixed lapse outside [0, 1).
    """

    obs_name = "correct"

    def __init__(
        self, variant: str = "contrast_gain", *, d_max=None, c50=None, n=None, gain=None, lapse=0.02
    ):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        self.variant = variant
        self.d_max = dist.LogNormal(math.log(3.0), 0.5) if d_max is None else d_max
        self.c50 = dist.LogNormal(math.log(0.1), 0.75) if c50 is None else c50
        self.n = dist.LogNormal(math.log(2.0), 0.3) if n is None else n
        self.gain = dist.LogNormal(math.log(1.5), 0.5) if gain is None else gain
        if isinstance(lapse, numbers.Real):
            check_probability("lapse", lapse, open_interval=False)
            if lapse >= 1:
                raise ValueError("lapse must be < 1")
        self.lapse = lapse

    _names = ("d_max", "c50", "n", "gain", "lapse")

    def latent_names(self) -> list[str]:
        return [k for k in self._names if isinstance(getattr(self, k), dist.Distribution)]

    def _p(self, params, contrast, attended):
        d = attended_d_prime(
            contrast,
            attended,
            d_max=params["d_max"],
            c50=params["c50"],
            n=params["n"],
            gain=params["gain"],
            variant=self.variant,
        )
        return psychometric_2afc(d, lapse=params["lapse"]).clamp(1e-12, 1 - 1e-12)

    def model(self, contrast, attended, correct=None):
        """The Pyro program; see the class docstring for the data.

        Raises:
            ValueError: negative contrasts; ``contrast`` and ``attended`` of different shapes.
        """
        if contrast.shape != torch.as_tensor(attended).shape:
            raise ValueError("contrast and attended must have the same shape (T,)")
        params = {k: hyperparameter(k, getattr(self, k)) for k in self._names}
        pyro.deterministic(
            "attention_weights",
            torch.softmax(torch.stack([torch.log(params["gain"]), torch.zeros(())]), -1),
        )
        p = self._p(params, contrast, attended)
        with pyro.plate("trials", contrast.shape[0]):
            return pyro.sample(self.obs_name, dist.Bernoulli(probs=p), obs=correct)

    def log_likelihood(self, draws, data):
        """Pointwise log-likelihood ``(D, T)``, vectorised over draws.

        Raises:
            ValueError: ``data`` lacks the observed ``correct``.
        """
        y = data.get(self.obs_name)
        if y is None:
            raise ValueError("log_likelihood needs the observed 'correct' in data")
        out = []
        for chunk, num in draws_slices(draws, 1024):
            params = {
                k: fixed_or_draw(chunk, k, getattr(self, k), num)[:, None] for k in self._names
            }
            p = self._p(params, data["contrast"], data["attended"])
            out.append(dist.Bernoulli(probs=p).log_prob(y.to(p.dtype)))
        return torch.cat(out, 0)
