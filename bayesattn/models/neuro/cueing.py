r"""Observers of the spatial cueing (Posner) task: Bayesian, weighted-linear, limited-capacity.

Task (Shimozaki, Eckstein & Abbey 2003; Vincent 2015). ``M`` locations; on each trial a cue
points at one location; the target appears at the cued location with probability ``validity``
and at each other location with probability ``(1 - validity) / (M - 1)``. Each location ``j``
yields a noisy internal response ``x_j ~ N(mu_j, 1)`` with ``mu_j = d'`` at the target and 0
elsewhere (signal detection theory; ``d'`` may differ between signal levels, e.g. contrasts).

* **localisation**: the target is always present; the observer names a location.
* **yes/no**: the target is present on half of the trials (design, not modelled) and the
  observer says yes (1) or no (0).

Observers (all share ``x``; they differ in how the cue enters the decision):

* ``"bayesian"`` -- the ideal observer (Shimozaki et al. 2003): the posterior over the target
  location is ``softmax_j(log p_j + d' x_j - d'^2/2)`` with the cue-set prior ``p`` (its believed
  validity may be fixed at the true one, the optimal observer, or fitted). Localisation picks
  the posterior mode; yes/no thresholds the likelihood ratio ``sum_j p_j exp(d' x_j - d'^2/2)``
  at ``exp(criterion)``.
* ``"weighted_linear"`` -- the weighted-linear observer (Kinchla 1992; Eckstein et al. 2002):
  the locations' responses are weighted by fixed positive weights ``w`` (``w_cued = cue_weight``,
  the rest ``(1 - cue_weight) / (M - 1)``); localisation picks ``argmax_j w_j x_j``, yes/no says
  yes when ``sum_j w_j x_j > criterion``.
* ``"switching"`` -- the limited-capacity switching observer (Shaw 1984; Shimozaki et al.
  2003): attention is on one location only, the cued one with probability ``attend_cued``,
  otherwise one of the others at random; only that location's response is seen. Localisation
  names the attended location when its response exceeds ``criterion`` and otherwise guesses
  among the other ``M - 1``; yes/no says yes when the attended response exceeds ``criterion``.

Each observer's normalised attention over locations (relative to the cue, index 0 = cued) is a
softmax: the Bayesian prior ``p = softmax(log p)``, the linear weights ``w = softmax(log w)``
and the switching probabilities; the Pyro models expose it as ``attention_weights (M,)``.

Choice probabilities are exact up to quadrature: the Bayesian and weighted-linear rules
both pick ``argmax_j (a_j + b_j x_j)`` with ``b_j > 0``, so ``P(choose m)`` is a 1-D integral
over the chosen location's decision value (piecewise Gauss-Legendre, panels at the competitors'
transition points); the Bayesian yes/no rule with ``M = 2`` reduces to a 1-D integral in the
same way; the linear yes/no and all switching probabilities are closed forms.
"""

from __future__ import annotations

import math
import numbers

import pyro
import pyro.distributions as dist
import torch

from ..base import (
    BayesianModel,
    hyperparameter,
    hyperparameter_log_prior,
    hyperparameter_prior_draws,
    num_draws,
)
from ._common import (
    as_float_tensor,
    check_probability,
    draws_slices,
    fixed_or_draw,
    gauss_legendre,
    ndtr,
)

__all__ = [
    "OBSERVERS",
    "TASKS",
    "cue_prior",
    "bayesian_posterior",
    "observer_attention",
    "choice_probabilities",
    "simulate_cueing_design",
    "simulate_cueing_responses",
    "CueingObserver",
]

OBSERVERS = ("bayesian", "weighted_linear", "switching")
TASKS = ("localisation", "yes_no")


# ----------------------------------------------------------------------------- checks
def _check_int(name, x, lo, hi=None) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    if x < lo or (hi is not None and x > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be {rng}, got {x}")
    return int(x)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def _check_locations(name, t, num_locations, *, allow_absent=False) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an integer torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of location indices, got {t.dtype}")
    lo = -1 if allow_absent else 0
    if t.numel() and (int(t.min()) < lo or int(t.max()) >= num_locations):
        what = "-1 (absent) or " if allow_absent else ""
        raise ValueError(f"{name} must hold {what}location indices 0..{num_locations - 1}")
    return t.long()


# ----------------------------------------------------------------------------- priors
def cue_prior(num_locations: int, validity) -> torch.Tensor:
    """Prior over the target location relative to the cue, ``(..., M)``; index 0 = cued.

    ``p_0 = validity``, ``p_j = (1 - validity) / (M - 1)`` for ``j >= 1`` (Posner cueing).

    Raises:
        ValueError: ``M < 2``; ``validity`` outside (0, 1).
    """
    m = _check_int("num_locations", num_locations, 2)
    v = as_float_tensor("validity", validity)
    if bool(((v.detach() <= 0) | (v.detach() >= 1)).any()):
        raise ValueError(f"validity must lie in (0, 1), got {validity}")
    rest = ((1 - v) / (m - 1))[..., None].expand(*v.shape, m - 1)
    return torch.cat([v[..., None], rest], -1)


def bayesian_posterior(x, log_prior, d_prime) -> torch.Tensor:
    """Ideal observer's posterior over the target location, ``softmax_j(log p_j + d'x_j - d'^2/2)``.

    Args:
        x: internal responses ``(..., M)``. log_prior: ``(..., M)`` log prior over locations.
        d_prime: sensitivity, broadcasting to ``(...)``.

    Returns:
        ``(..., M)`` posterior probabilities (Shimozaki et al. 2003, eq. for the ideal observer;
        the ``-d'^2/2`` term is common to all locations and cancels).

    Raises:
        ValueError: ``d_prime`` not positive.
    """
    d = as_float_tensor("d_prime", d_prime)
    if bool((d.detach() <= 0).any()):
        raise ValueError("d_prime must be positive")
    return torch.softmax(log_prior + (d[..., None] if d.dim() else d) * x, -1)


def observer_attention(observer: str, num_locations: int, **params) -> torch.Tensor:
    """Normalised attention over locations (index 0 = cued), ``(..., M)``, for an observer.

    ``bayesian``: the believed prior (``believed_validity``); ``weighted_linear``: the weights
    from ``cue_weight``; ``switching``: the attention probabilities from ``attend_cued``. All are
    ``softmax`` of their logs, like attention weights.

    Raises:
        ValueError: unknown observer, or the parameter it needs is missing or not in (0, 1).
    """
    _check_choice("observer", observer, OBSERVERS)
    key = {
        "bayesian": "believed_validity",
        "weighted_linear": "cue_weight",
        "switching": "attend_cued",
    }[observer]
    if key not in params:
        raise ValueError(f"observer {observer!r} needs the parameter {key}")
    return cue_prior(num_locations, params[key])


# ----------------------------------------------------------------------------- choice probs
def _affine_argmax_probs(a, b, mu, num_nodes):
    """P(argmax_j (a_j + b_j x_j) = m), x_j ~ N(mu_j, 1) independent; all (..., M) -> (..., M).

    In decision-value space ``g_j ~ N(c_j, b_j^2)`` with ``c_j = a_j + b_j mu_j``, and
    ``P(choose m) = int N(v; c_m, b_m^2) prod_{j != m} Phi((v - c_j) / b_j) dv``. When the
    scales ``b`` differ a lot (a weighted-linear observer with a strong cue weight) the CDFs are
    near-steps on the scale of ``b_m``, so the integral over ``c_m +- 9 b_m`` is split into
    panels at every ``c_j +- 6 b_j`` and each panel gets ``num_nodes`` Gauss-Legendre nodes.
    """
    u, w = gauss_legendre(num_nodes, dtype=mu.dtype)
    m = mu.shape[-1]
    c = a + b * mu
    lo, hi = c - 9.0 * b, c + 9.0 * b  # (..., M) integration range for each chosen m
    marks = torch.cat([c - 6.0 * b, c + 6.0 * b], -1)  # (..., 2M)
    inner = torch.minimum(torch.maximum(marks[..., None, :], lo[..., None]), hi[..., None])
    bounds, _ = torch.sort(torch.cat([lo[..., None], inner, hi[..., None]], -1), -1)
    left, right = bounds[..., :-1], bounds[..., 1:]  # (..., M, P)
    half = (right - left) / 2
    v = left[..., None] + half[..., None] * (u + 1)  # (..., M, P, Q)
    dens = torch.exp(-0.5 * ((v - c[..., None, None]) / b[..., None, None]) ** 2) / (
        b[..., None, None] * math.sqrt(2 * math.pi))
    # P(g_j < v) for every competitor j: (..., M, P, Q, M); the chosen m itself excluded. The
    # product is taken of the CDFs themselves, not summed in logs (log_ndtr costs 5x ndtr): a
    # product that underflows is one whose exp(sum of logs) is below 1e-300 too.
    cdf = ndtr((v[..., None] - c[..., None, None, None, :]) / b[..., None, None, None, :])
    eye = torch.eye(m, dtype=torch.bool, device=mu.device)[:, None, None, :]  # (M, 1, 1, M)
    cdf = torch.where(eye, 1.0, cdf).prod(-1)
    p = (dens * cdf * w * half[..., None]).sum((-1, -2))  # (..., M)
    return p / p.sum(-1, keepdim=True)


def _bayes_yes_no_m2(log_p, d, mu, criterion, num_nodes):
    """P(yes) of the ideal observer with two locations, as a 1-D integral over ``x_0``.

    Say yes iff ``p_0 e^{d x_0 - d^2/2} + p_1 e^{d x_1 - d^2/2} > e^criterion``. For
    ``x_0 >= x*`` (where the first term alone reaches the criterion) the answer is yes whatever
    ``x_1``: probability ``Phi(mu_0 - x*)``. Below ``x*``, yes iff ``x_1 > h(x_0)`` with
    ``h = (log(e^criterion - p_0 e^{d x_0 - d^2/2}) - log p_1 + d^2/2) / d``; that part is
    integrated by Gauss-Legendre on ``[min(mu_0 - 9, x*), x*]`` (the integrand is smooth there;
    a Gauss-Hermite rule over the kink at ``x*`` converges slowly).
    """
    u, w = gauss_legendre(num_nodes, dtype=mu.dtype)
    dd = d[..., None]
    lam = criterion[..., None]
    mu0, mu1 = mu[..., :1], mu[..., 1:]
    x_star = (lam - log_p[..., :1] + dd**2 / 2) / dd  # (..., 1)
    lo = torch.minimum(mu0 - 9.0, x_star)
    half = (x_star - lo) / 2
    x0 = lo + half * (u + 1)  # (..., Q), interior of [lo, x*]
    gap = torch.clamp(log_p[..., :1] + dd * x0 - dd**2 / 2 - lam, max=-1e-300)  # < 0
    h = (lam + torch.log(-torch.expm1(gap)) - log_p[..., 1:] + dd**2 / 2) / dd
    dens = torch.exp(-0.5 * (x0 - mu0) ** 2) / math.sqrt(2 * math.pi)
    below = (dens * ndtr(mu1 - h) * w * half).sum(-1)
    return below + ndtr(mu0 - x_star).squeeze(-1)


def choice_probabilities(
    observer: str,
    task: str,
    *,
    cue,
    target,
    d_prime,
    num_locations: int,
    believed_validity=None,
    cue_weight=None,
    attend_cued=None,
    criterion=None,
    num_nodes: int = 24,
) -> torch.Tensor:
    """Response probabilities of an observer on cueing trials.

    Args:
        observer: ``"bayesian"``, ``"weighted_linear"`` or ``"switching"`` (module docstring).
        task: ``"localisation"`` or ``"yes_no"``.
        cue: cued location per trial, int ``(T,)`` in ``0..M-1``.
        target: target location per trial, int ``(T,)``; ``-1`` = absent (yes/no only).
        d_prime: sensitivity per trial ``(..., T)`` (or broadcastable), positive.
        num_locations: ``M``.
        believed_validity: Bayesian observer's prior probability of the cued location.
        cue_weight: weighted-linear observer's weight on the cued location (weights sum to 1).
        attend_cued: switching observer's probability of attending the cued location.
        criterion: yes/no criterion (Bayesian: log likelihood ratio; linear: on ``sum w x``;
            switching: on the attended response), and the switching observer's localisation
            threshold.
        num_nodes: Gauss-Legendre nodes (per panel for localisation).

        Parameters other than ``d_prime`` are numbers or tensors of a batch shape ``(...)``
        (e.g. posterior draws ``(D,)``); they broadcast over the trials.

    Returns:
        localisation: ``(..., T, M)`` probabilities of naming each location (absolute indices);
        yes/no: ``(..., T)`` probability of "yes".

    Raises:
        TypeError: ``cue``/``target`` not integer tensors.
        ValueError: unknown observer or task; indices out of range; a target absent in
            localisation; a missing or out-of-range parameter; the Bayesian yes/no observer
            with ``M != 2`` (no 1-D reduction; not implemented).
    """
    _check_choice("observer", observer, OBSERVERS)
    _check_choice("task", task, TASKS)
    m = _check_int("num_locations", num_locations, 2)
    cue = _check_locations("cue", cue, m)
    target = _check_locations("target", target, m, allow_absent=(task == "yes_no"))
    if cue.shape != target.shape:
        raise ValueError(
            f"cue and target must have the same shape, got {cue.shape}, {target.shape}"
        )
    d = as_float_tensor("d_prime", d_prime)
    if bool((d.detach() <= 0).any()):
        raise ValueError("d_prime must be positive")
    d = d.expand(torch.broadcast_shapes(d.shape, cue.shape))
    # locations relative to the cue: rel 0 = cued, rel j = (cue + j) mod M
    rel_target = torch.where(target >= 0, (target - cue) % m, -1)
    mu = d[..., None] * (rel_target[..., None] == torch.arange(m)).to(d.dtype)  # (..., T, M)

    def need(name, value, prob=True):
        if value is None:
            raise ValueError(f"observer {observer!r} on task {task!r} needs {name}")
        t = as_float_tensor(name, value)
        if prob and bool(((t.detach() <= 0) | (t.detach() >= 1)).any()):
            raise ValueError(f"{name} must lie in (0, 1), got {value}")
        return t[..., None]  # batch (...) -> (..., 1): broadcast over trials

    if task == "localisation":
        if observer == "switching":
            q = need("attend_cued", attend_cued)
            lam = need("criterion", criterion, prob=False)
            pi = cue_prior(m, q)  # (..., 1, M) prob of attending each relative location
            hit = ndtr(mu - lam[..., None])  # attended response above threshold
            # P(name j) = pi_j hit_j + sum_{a != j} pi_a (1 - hit_a) / (M - 1)
            miss = pi * (1 - hit)
            p_rel = pi * hit + (miss.sum(-1, keepdim=True) - miss) / (m - 1)
        else:
            if observer == "bayesian":
                v = need("believed_validity", believed_validity)
                log_p = torch.log(cue_prior(m, v)).expand(mu.shape)
                a, b = log_p, d[..., None].expand(mu.shape)
            else:
                w = need("cue_weight", cue_weight)
                a = torch.zeros_like(mu)
                b = cue_prior(m, w).expand(mu.shape)
            p_rel = _affine_argmax_probs(a, b, mu, num_nodes)
        # back to absolute locations: absolute k = (cue + rel) mod M
        idx = (torch.arange(m) - cue[..., None]) % m  # rel index of absolute k
        return p_rel.gather(-1, idx.expand(p_rel.shape))

    lam = need("criterion", criterion, prob=False).expand(mu.shape[:-1])
    if observer == "bayesian":
        if m != 2:
            raise ValueError(
                "the Bayesian yes/no observer is implemented for M = 2 locations only "
                f"(got M={m}); use the localisation task for more locations"
            )
        v = need("believed_validity", believed_validity)
        log_p = torch.log(cue_prior(m, v)).expand(mu.shape)
        return _bayes_yes_no_m2(log_p, d, mu, lam, 2 * num_nodes)
    if observer == "weighted_linear":
        w = cue_prior(m, need("cue_weight", cue_weight))
        mean = (w * mu).sum(-1)
        sd = torch.sqrt((w**2).sum(-1))
        return ndtr((mean - lam) / sd)
    pi = cue_prior(m, need("attend_cued", attend_cued))
    return (pi * ndtr(mu - lam[..., None])).sum(-1)


# ----------------------------------------------------------------------------- simulation
def simulate_cueing_design(
    num_trials: int,
    *,
    num_locations: int,
    validity: float,
    num_levels: int = 1,
    task: str = "localisation",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Random trials of a cueing experiment: ``{"cue", "target", "level"}``, int ``(T,)``.

    Cue uniform over locations; target at the cue with probability ``validity``, otherwise
    uniform over the others; in yes/no, absent (``-1``) on half of the trials; ``level`` (the
    signal level, e.g. contrast, indexing ``d'``) uniform over ``0..num_levels-1``.

    Raises:
        ValueError: ``num_trials < 1``, ``M < 2``, ``validity`` outside (0, 1), unknown task.
    """
    t = _check_int("num_trials", num_trials, 1)
    m = _check_int("num_locations", num_locations, 2)
    v = check_probability("validity", validity)
    _check_int("num_levels", num_levels, 1)
    _check_choice("task", task, TASKS)
    cue = torch.randint(m, (t,), generator=generator)
    valid = torch.rand(t, generator=generator) < v
    shift = torch.randint(1, m, (t,), generator=generator)
    target = torch.where(valid, cue, (cue + shift) % m)
    if task == "yes_no":
        present = torch.rand(t, generator=generator) < 0.5
        target = torch.where(present, target, -1)
    level = torch.randint(num_levels, (t,), generator=generator)
    return {"cue": cue, "target": target, "level": level}


def simulate_cueing_responses(
    observer: str,
    task: str,
    *,
    cue,
    target,
    d_prime,
    num_locations: int,
    believed_validity=None,
    cue_weight=None,
    attend_cued=None,
    criterion=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simulate an observer trial by trial from internal responses ``x_j ~ N(mu_j, 1)``.

    Draws ``x``, applies the observer's decision rule (module docstring) literally (no
    quadrature), so it checks :func:`choice_probabilities` independently. Arguments as there
    (``d_prime`` per trial ``(T,)`` or scalar).

    Returns:
        int ``(T,)``: named location (localisation) or 1 = yes / 0 = no (yes/no).

    Raises:
        ValueError: as :func:`choice_probabilities`.
    """
    _check_choice("observer", observer, OBSERVERS)
    _check_choice("task", task, TASKS)
    m = _check_int("num_locations", num_locations, 2)
    cue = _check_locations("cue", cue, m)
    target = _check_locations("target", target, m, allow_absent=(task == "yes_no"))
    d = as_float_tensor("d_prime", d_prime).expand(cue.shape)
    t = cue.shape[0]
    rel = (torch.arange(m) + cue[:, None]) % m  # absolute index of relative location j
    mu_abs = d[:, None] * (torch.arange(m) == target[:, None]).to(d.dtype)
    x = mu_abs + torch.randn((t, m), generator=generator, dtype=d.dtype)
    x_rel = x.gather(1, rel)  # responses relative to the cue (col 0 = cued)
    if observer == "bayesian":
        if believed_validity is None:
            raise ValueError("the Bayesian observer needs believed_validity")
        log_p = torch.log(cue_prior(m, believed_validity))
        if task == "localisation":
            choice_rel = torch.argmax(log_p + d[:, None] * x_rel, -1)
            return rel.gather(1, choice_rel[:, None]).squeeze(1)
        if criterion is None:
            raise ValueError("the yes/no task needs criterion")
        llr = torch.logsumexp(log_p + d[:, None] * x_rel - d[:, None] ** 2 / 2, -1)
        return (llr > criterion).long()
    if observer == "weighted_linear":
        if cue_weight is None:
            raise ValueError("the weighted-linear observer needs cue_weight")
        w = cue_prior(m, cue_weight)
        if task == "localisation":
            choice_rel = torch.argmax(w * x_rel, -1)
            return rel.gather(1, choice_rel[:, None]).squeeze(1)
        if criterion is None:
            raise ValueError("the yes/no task needs criterion")
        return ((w * x_rel).sum(-1) > criterion).long()
    if attend_cued is None or criterion is None:
        raise ValueError("the switching observer needs attend_cued and criterion")
    check_probability("attend_cued", float(attend_cued))
    cued = torch.rand(t, generator=generator) < float(attend_cued)
    other = torch.randint(1, m, (t,), generator=generator)
    att_rel = torch.where(cued, 0, other)
    seen = x_rel.gather(1, att_rel[:, None]).squeeze(1)
    above = seen > criterion
    if task == "yes_no":
        return above.long()
    guess = (att_rel + torch.randint(1, m, (t,), generator=generator)) % m  # another location
    choice_rel = torch.where(above, att_rel, guess)
    return rel.gather(1, choice_rel[:, None]).squeeze(1)


# ----------------------------------------------------------------------------- Pyro model
class CueingObserver(BayesianModel):
    """An observer of the cueing task as a Pyro model (module docstring; Vincent 2015).

    Data (``T`` trials)::

        cue (T,) int, target (T,) int (-1 = absent, yes/no), level (T,) int in 0..L-1,
        response (T,) int [obs]: named location (localisation) or 1/0 (yes/no)

    Parameters (each fixed or a Pyro prior):

    * ``d_prime``: sensitivity per signal level ``(L,)``; default ``LogNormal(0.5, 0.75)`` each.
    * ``believed_validity`` (Bayesian): default fixed at the task's ``validity`` (the optimal
      observer); pass a prior (e.g. ``Beta(2, 2)``) to fit it.
    * ``cue_weight`` (weighted linear): default ``Beta(2, 2)``.
    * ``attend_cued`` (switching): default ``Beta(2, 2)``.
    * ``criterion`` (yes/no; switching localisation): default ``Normal(1, 1.5)``.

    Deterministic ``attention_weights (M,)``: the observer's normalised attention over the
    locations relative to the cue (index 0 = cued), see :func:`observer_attention`.

    Raises:
        ValueError: unknown observer/task; ``M < 2``; ``validity`` outside (0, 1);
            ``num_levels < 1``; the Bayesian yes/no observer with ``M != 2``.
    """

    obs_name = "response"

    def __init__(
        self,
        observer: str,
        *,
        task: str = "localisation",
        num_locations: int = 4,
        validity: float = 0.7,
        num_levels: int = 1,
        d_prime=None,
        believed_validity=None,
        cue_weight=None,
        attend_cued=None,
        criterion=None,
        num_nodes: int = 24,
    ):
        self.observer = _check_choice("observer", observer, OBSERVERS)
        self.task = _check_choice("task", task, TASKS)
        self.num_locations = _check_int("num_locations", num_locations, 2)
        self.validity = check_probability("validity", validity)
        self.num_levels = _check_int("num_levels", num_levels, 1)
        if observer == "bayesian" and task == "yes_no" and self.num_locations != 2:
            raise ValueError("the Bayesian yes/no observer is implemented for M = 2 only")
        lvl = self.num_levels
        self.d_prime = (
            dist.LogNormal(torch.full((lvl,), 0.5, dtype=torch.float64), 0.75).to_event(1)
            if d_prime is None
            else d_prime
        )
        self.believed_validity = validity if believed_validity is None else believed_validity
        self.cue_weight = dist.Beta(2.0, 2.0) if cue_weight is None else cue_weight
        self.attend_cued = dist.Beta(2.0, 2.0) if attend_cued is None else attend_cued
        self.criterion = dist.Normal(1.0, 1.5) if criterion is None else criterion
        self.num_nodes = num_nodes

    def _param_names(self) -> list[str]:
        names = ["d_prime"]
        names.append(
            {
                "bayesian": "believed_validity",
                "weighted_linear": "cue_weight",
                "switching": "attend_cued",
            }[self.observer]
        )
        if self.task == "yes_no" or self.observer == "switching":
            names.append("criterion")
        return names

    def latent_names(self) -> list[str]:
        return [n for n in self._param_names() if isinstance(getattr(self, n), dist.Distribution)]

    def _probs(self, params: dict, cue, target, level):
        """Response probabilities per trial, ``(..., T, M)`` (localisation) or ``(..., T)``.

        They depend on a trial only through the target's position relative to the cue and the
        signal level, so they are computed once per such cell (``M`` or ``M + 1`` positions
        times ``L`` levels) and gathered: the cost does not grow with the number of trials.
        """
        m, lvl = self.num_locations, self.num_levels
        absent = 1 if self.task == "yes_no" else 0
        rel = torch.arange(-absent, m)  # relative target positions (-1 = absent)
        cell_target = rel.repeat(lvl)  # (Cells,)
        cell_level = torch.arange(lvl).repeat_interleave(rel.numel())
        d = params["d_prime"]
        d_cell = d[..., cell_level] if d.dim() else d.expand(cell_level.shape)
        kw = {k: v for k, v in params.items() if k != "d_prime"}
        p_cell = choice_probabilities(
            self.observer,
            self.task,
            cue=torch.zeros_like(cell_target),
            target=cell_target,
            d_prime=d_cell,
            num_locations=m,
            num_nodes=self.num_nodes,
            **kw,
        )  # (..., Cells, M) with responses relative to the cue, or (..., Cells)
        rel_target = torch.where(target >= 0, (target - cue) % m, -1)
        cell = level * rel.numel() + rel_target + absent  # (T,)
        if self.task == "yes_no":
            return p_cell[..., cell]
        p_rel = p_cell[..., cell, :]  # (..., T, M) over relative responses
        idx = (torch.arange(m) - cue[:, None]) % m  # absolute k -> relative (k - cue) mod M
        return p_rel.gather(-1, idx.expand(p_rel.shape))

    def _obs_dist(self, probs):
        if self.task == "localisation":
            return dist.Categorical(probs=probs.clamp_min(1e-12))
        return dist.Bernoulli(probs=probs.clamp(1e-12, 1 - 1e-12))

    def _check_data(self, cue, target, level):
        m = self.num_locations
        cue = _check_locations("cue", cue, m)
        target = _check_locations("target", target, m, allow_absent=self.task == "yes_no")
        if cue.dim() != 1 or cue.shape != target.shape:
            raise ValueError("cue and target must be 1-D tensors of the same length (T,)")
        if level is None:
            level = torch.zeros_like(cue)
        level = _check_locations("level", level, self.num_levels)
        if level.shape != cue.shape:
            raise ValueError("level must have the same shape as cue (T,)")
        return cue, target, level

    def model(self, cue, target, level=None, response=None):
        """The Pyro program; see the class docstring for the data.

        Raises:
            ValueError: data out of range (see :func:`choice_probabilities`); ``level`` outside
                ``0..L-1``.
        """
        cue, target, level = self._check_data(cue, target, level)
        params = {n: hyperparameter(n, getattr(self, n)) for n in self._param_names()}
        key = self._param_names()[1]
        pyro.deterministic("attention_weights", cue_prior(self.num_locations, params[key]))
        probs = self._probs(params, cue, target, level)
        if response is not None and self.task == "yes_no":
            response = response.to(probs.dtype)
        with pyro.plate("trials", cue.shape[0]):
            return pyro.sample(self.obs_name, self._obs_dist(probs), obs=response)

    # -- vectorised evaluation of draws
    log_likelihood_sums_to_joint = True

    def _draw_params(self, chunk: dict, num: int) -> dict:
        """The parameters of ``num`` draws, ``{name: (D, ...)}`` (fixed ones repeated)."""
        params = {n: fixed_or_draw(chunk, n, getattr(self, n), num) for n in self._param_names()}
        d = params["d_prime"]
        if d.dim() == 1:  # one d' shared by all levels
            d = d[:, None]
        params["d_prime"] = d.expand(num, self.num_levels)
        return params

    def _draw_chunk(self) -> int:
        """Draws per vectorised pass of :meth:`_draw_probs`: the largest temporary (for the
        localisation quadrature ``cells x M x (2M + 1) panels x nodes x M`` elements a draw) is
        kept near 2^19 elements (4 MiB). Larger passes spend their time in page faults: 1,000
        draws of the four-location design took 4.4 s in passes of 256 against 1.3 s in
        passes of 16."""
        m = self.num_locations
        cells = (m + (self.task == "yes_no")) * self.num_levels  # as in _probs
        per_draw = cells * m * self.num_nodes * 2
        if self.task == "localisation" and self.observer != "switching":
            per_draw = cells * m * (2 * m + 1) * self.num_nodes * m
        return max(1, min(256, 2**19 // per_draw))

    def _draw_probs(self, draws: dict, data: dict):
        """``(num, probs (D, T[, M]))`` per chunk of draws (:meth:`_draw_chunk`)."""
        cue, target, level = self._check_data(data["cue"], data["target"], data.get("level"))
        for chunk, num in draws_slices(draws, self._draw_chunk()):
            yield num, self._probs(self._draw_params(chunk, num), cue, target, level)

    def log_likelihood(self, draws: dict[str, torch.Tensor], data: dict) -> torch.Tensor:
        """Pointwise log-likelihood ``(D, T)``, vectorised over draws.

        Raises:
            ValueError: ``data`` lacks the observed responses.
        """
        response = data.get(self.obs_name)
        if response is None:
            raise ValueError("log_likelihood needs the observed 'response' in data")
        out = []
        for _, probs in self._draw_probs(draws, data):
            resp = response if self.task == "localisation" else response.to(probs.dtype)
            out.append(self._obs_dist(probs).log_prob(resp))
        return torch.cat(out, 0)

    def prior_log_density(self, draws: dict) -> torch.Tensor:
        """``log p(theta_d)`` ``(D,)``: the parameters' priors at each draw."""
        return hyperparameter_log_prior({n: getattr(self, n) for n in self._param_names()},
                                        draws)

    def prior_draws(self, num: int, data: dict) -> dict:
        """``num`` draws of each latent parameter from its prior, ``{name: (num, ...)}``."""
        return hyperparameter_prior_draws({n: getattr(self, n) for n in self._param_names()},
                                          num)

    @torch.no_grad()
    def deterministics(self, draws: dict, data: dict) -> dict:
        """``{"attention_weights": (D, M)}`` of each draw (:func:`cue_prior`)."""
        key = self._param_names()[1]
        value = fixed_or_draw(draws, key, getattr(self, key), num_draws(draws))
        return {"attention_weights": cue_prior(self.num_locations, value)}

    @torch.no_grad()
    def posterior_predictive(self, draws: dict, data: dict, generator) -> torch.Tensor | None:
        """Replicated responses ``(D, T)``, one data set per draw: the named location (int64)
        or yes/no (float 1/0), drawn from each draw's response probabilities (the
        distribution of the program's ``response`` site). None without draws.

        Raises:
            ValueError: ``cue``, ``target`` or ``level`` out of range (as :meth:`model`).
        """
        if not draws:
            return None
        out = []
        for num, probs in self._draw_probs(draws, data):
            if self.task == "localisation":
                flat = probs.clamp_min(1e-12).reshape(-1, probs.shape[-1])
                out.append(torch.multinomial(flat, 1, generator=generator).reshape(num, -1))
            else:
                out.append(torch.bernoulli(probs.clamp(1e-12, 1 - 1e-12), generator=generator))
        return torch.cat(out, 0)
