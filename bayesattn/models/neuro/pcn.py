r"""Attention in a predictive-coding network: precision over options (the AttentionPCN bridge).

Singh & Buckley ("Attention as implicit structural inference", NeurIPS 2023, section 5, and
"Collapsed inference, a unifying principle of attention", CCN 2023; code: github
ryan-sussex/AttentionPCN, ``layers.py``, ``pcn.py``) put attention into a predictive-coding
network (PCN) as a choice between *options*: a layer makes ``K`` predictions ``f_k(h)`` of
the activity ``x`` below it, each with its own prediction error, and the layer's free energy
is a soft minimum of the errors:

.. math::

    e_k = |x - f_k(h)|, \qquad
    F = -\frac{1}{T} \log \sum_k \exp(-T e_k), \qquad
    \pi_k = \operatorname{softmax}_k(-T e_k) = \frac{\partial F}{\partial e_k}.

``T`` is an inverse temperature (the authors' ``temperature``; they measure the error with
the Euclidean norm, ``torch.cdist``). The gradient of ``F`` with respect to anything that
moves an error is ``sum_k pi_k d e_k``: every option's error enters with the *precision*
``pi_k`` -- attention is the precision weight of each option's prediction error (the
predictive-coding reading of attention, Feldman & Friston 2010, as in
:mod:`~bayesattn.models.neuro.precision`). States descend ``dF/dh`` (inference); weights
descend ``dF/dtheta`` at the states' equilibrium (learning).

**How F relates to the package's softmax attention.** ``exp(-T e_k)`` is, up to a factor
``c(D, T)`` that does not depend on ``k``, a density of ``x`` around ``f_k``: the radial
Laplace kernel of :func:`bayesattn.functional.kernel_attention` with bandwidth ``1 / T`` for
Euclidean errors, the Gaussian with variance ``1 / T`` for squared errors
``e_k = |x - f_k|^2 / 2``. So with an equal prior over options,

.. math::

    T F = -\log p(x \mid h) - \log K + \log c(D, T), \qquad
    p(x \mid h) = \frac{1}{K} \sum_k c(D, T) \, e^{-T e_k},

the free energy is (a rescaled) negative log marginal likelihood of a mixture over options,
and ``pi`` is the mixture's posterior over which option produced ``x`` -- exactly the
key-selection posterior that the package's attention weights are (docs/design.md,
"Key-selection models"): ``pi`` equals the weights of
``kernel_attention(x, f, f, kernel="laplace", bandwidth=1/T)`` (Euclidean errors) or of
``softmax_attention(x, f, f, scale=T)`` with the key bias ``-T |f_k|^2 / 2`` (squared
errors). A free (unclamped) ``x`` that descends ``F`` with squared errors and step 1 moves to
``sum_k pi_k f_k``, the attention output with query ``x`` and keys = values = predictions
(the modern-Hopfield update, Ramsauer et al. 2021). Limits:
``min_k e_k - log(K) / T <= F <= min_k e_k``, so ``F -> min_k e_k`` (hard attention) as
``T -> inf``; ``F + log(K) / T -> mean_k e_k`` (uniform attention) as ``T -> 0``.
:func:`option_mixture_model` is that mixture as a Pyro program (the package's second face):
its enumerated evidence and posterior are ``F`` and ``pi``.

:class:`AttentionPCN` is one such layer with linear options ``f_k(h) = W_k h + b_k`` over a
shared latent state ``h`` with a Gaussian prior; :func:`train_attention_pcn` learns it the
PCN way (states to equilibrium, then one weight step). With one option per class and the
label clamped as the prior over options during training, the attention at the equilibrium
of a held-out input is the inferred label (:mod:`bayesattn.experiments.pcn_digits`).
"""

from __future__ import annotations

import math
import numbers

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..._checks import check_choice, check_positive, check_tensor
from ...functional._core import _safe_sqrt
from ...functional.kernels import kernel_log_normaliser

__all__ = [
    "ERRORS",
    "option_errors",
    "free_energy",
    "option_attention",
    "option_mixture_model",
    "AttentionPCN",
    "train_attention_pcn",
]

#: Prediction-error measures: the authors' Euclidean norm, and half the squared norm.
ERRORS = ("euclidean", "squared")


def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a positive number, got {type(temperature).__name__}")
    t = float(temperature)
    if not t > 0 or math.isnan(t):
        raise ValueError(f"temperature must be positive (inf allowed), got {temperature}")
    return t


def option_errors(x, predictions, *, error: str = "euclidean") -> torch.Tensor:
    """Prediction error of each option, ``e_k = |x - f_k|`` (or ``|x - f_k|^2 / 2``).

    Args:
        x: the activity predicted, ``(..., D)``.
        predictions: the options' predictions ``f_k``, ``(..., K, D)`` (batch dims broadcast
            with those of ``x``).
        error: ``"euclidean"`` (the authors' ``torch.cdist``; its gradient is taken as 0,
            not NaN, where ``x = f_k``) or ``"squared"`` (half the squared norm: Gaussian
            options).

    Returns:
        ``(..., K)`` non-negative errors.

    Raises:
        TypeError: non-tensor or integer inputs.
        ValueError: unknown ``error``; ``D`` mismatch; ``K = 0``; NaN/inf entries.
    """
    check_tensor("x", x, min_dim=1)
    check_tensor("predictions", predictions, min_dim=2)
    error = check_choice("error", error, ERRORS)
    if x.shape[-1] != predictions.shape[-1]:
        raise ValueError(
            f"x (..., {x.shape[-1]}) and predictions (..., K, {predictions.shape[-1]}) must "
            "share the last dim D"
        )
    if predictions.shape[-2] == 0:
        raise ValueError("predictions has K = 0 options")
    sq = ((x.unsqueeze(-2) - predictions) ** 2).sum(-1)
    return 0.5 * sq if error == "squared" else _safe_sqrt(sq)


def _check_errors(errors, log_prior):
    check_tensor("errors", errors, min_dim=1)
    if errors.shape[-1] == 0:
        raise ValueError("errors has K = 0 options")
    if log_prior is None:
        return errors, None
    check_tensor("log_prior", log_prior, min_dim=1, check_values=False)
    if bool(torch.isnan(log_prior).any()) or bool(torch.isposinf(log_prior).any()):
        raise ValueError("log_prior contains NaN or +inf")
    try:
        torch.broadcast_shapes(errors.shape, log_prior.shape)
    except RuntimeError as err:
        raise ValueError(
            f"log_prior {tuple(log_prior.shape)} does not broadcast with errors "
            f"{tuple(errors.shape)}"
        ) from err
    if bool(torch.isneginf(log_prior).all(-1).any()):
        raise ValueError("log_prior excludes every option of some row (all -inf)")
    return errors, log_prior


def _allowed(errors, log_prior):
    """The errors with options excluded by the prior set to +inf (the hard limit)."""
    if log_prior is None:
        return errors
    errors, log_prior = torch.broadcast_tensors(errors, log_prior)
    return errors.masked_fill(torch.isneginf(log_prior), math.inf)


def free_energy(errors, temperature=1.0, *, log_prior=None) -> torch.Tensor:
    """Soft-minimum free energy ``F = -(1/T) log sum_k exp(-T e_k + log_prior_k)``.

    Singh & Buckley (2023; AttentionPCN ``AttentionLayer.free_energy_func``). With
    ``log_prior = None`` the options are equally likely a priori (the authors' case; a
    normalised prior ``log(1/K)`` would only add ``log(K) / T``). ``temperature = inf`` gives
    the hard limit ``min_k e_k`` over the options the prior allows. Bounds (equal prior):
    ``min e - log(K) / T <= F <= min e``.

    Args:
        errors: ``(..., K)`` option errors (:func:`option_errors`).
        temperature: inverse temperature ``T > 0`` (``math.inf`` allowed).
        log_prior: optional ``(..., K)`` log prior weights of the options, broadcasting with
            ``errors``; ``-inf`` excludes an option (a clamped label is a one-hot prior).

    Returns:
        ``(...)``.

    Raises:
        TypeError: non-tensor/integer ``errors``; a temperature that is not a number.
        ValueError: non-positive or NaN temperature; NaN/inf errors; ``K = 0``; a
            ``log_prior`` with NaN/+inf, that does not broadcast, or that excludes every
            option of a row.
    """
    t = _check_temperature(temperature)
    errors, log_prior = _check_errors(errors, log_prior)
    if math.isinf(t):
        return _allowed(errors, log_prior).amin(-1)
    logits = -t * errors if log_prior is None else -t * errors + log_prior
    return -torch.logsumexp(logits, -1) / t


def option_attention(errors, temperature=1.0, *, log_prior=None) -> torch.Tensor:
    """Attention over options ``pi = softmax(-T e + log_prior)``, the precision of each error.

    ``pi_k = dF/de_k`` for :func:`free_energy` (so ``dF = sum_k pi_k de_k``), and the
    posterior over options of the mixture whose negative log marginal ``F`` is (module
    docstring). ``temperature = inf``: one-hot on the smallest allowed error (ties share).

    Args and Raises: as :func:`free_energy`.

    Returns:
        ``(..., K)``, rows summing to 1.
    """
    t = _check_temperature(temperature)
    errors, log_prior = _check_errors(errors, log_prior)
    if math.isinf(t):
        e = _allowed(errors, log_prior)
        hit = (e == e.amin(-1, keepdim=True)).to(errors.dtype)
        return hit / hit.sum(-1, keepdim=True)
    logits = -t * errors if log_prior is None else -t * errors + log_prior
    return torch.softmax(logits, -1)


def option_mixture_model(x, predictions, *, temperature: float = 1.0, error: str = "euclidean",
                         log_prior=None):
    """The Pyro program whose negative log evidence is the free energy (module docstring).

    For each row ``n``: ``option_n ~ Categorical(softmax(log_prior))`` (uniform by default;
    site ``option``, enumerated) and ``x_n | option_n = k`` with density
    ``c(D, T) exp(-T e_nk)`` (a ``pyro.factor`` site ``x``): the radial Laplace kernel of
    bandwidth ``1 / T`` for Euclidean errors, ``N(f_k, I / T)`` for squared ones
    (normalisers from :func:`bayesattn.functional.kernel_log_normaliser`). Hence
    ``-log p(x_n) = T F_n - log c`` with ``F_n`` the :func:`free_energy` under the
    normalised prior, and Pyro's exact posterior of ``option`` (``TraceEnum_ELBO()
    .compute_marginals``) is :func:`option_attention`. (Enumerate at least two rows:
    pyro-ppl/pyro#3102.)

    Args:
        x: ``(N, D)`` observed activities.
        predictions: ``(N, K, D)`` the options' predictions.
        temperature: finite ``T > 0``.
        error: one of :data:`ERRORS`.
        log_prior: optional ``(K,)`` or ``(N, K)`` log prior weights (normalised here).

    Raises:
        TypeError, ValueError: as :func:`option_errors` and :func:`free_energy`; an infinite
            temperature (no density); ``x`` not 2-D.
    """
    t = _check_temperature(temperature)
    if math.isinf(t):
        raise ValueError("option_mixture_model needs a finite temperature (T = inf has no density)")
    check_tensor("x", x, min_dim=2)
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    e = option_errors(x, predictions, error=error)  # (N, K)
    n, k = e.shape
    logits = torch.zeros(k, dtype=e.dtype) if log_prior is None else log_prior
    e, logits = _check_errors(e, logits)
    kernel, bandwidth = ("laplace", 1.0 / t) if error == "euclidean" else ("gaussian", t**-0.5)
    log_c = -kernel_log_normaliser(kernel, torch.tensor(bandwidth, dtype=e.dtype), x.shape[1])
    with pyro.plate("data", n, dim=-1):
        option = pyro.sample("option", dist.Categorical(logits=logits.expand(n, k)),
                             infer={"enumerate": "parallel"})
        pyro.factor("x", log_c - t * e[torch.arange(n), option])


class AttentionPCN(nn.Module):
    """One attention layer of a predictive-coding network with linear options.

    Options ``f_k(h) = W_k h + b_k`` (``k = 1..K``) predict an observed ``x (D,)`` from a
    latent state ``h (H,)`` with a Gaussian prior of precision ``state_precision`` (in free
    energy units). The energy of a state is

    ``E(x, h) = F(e(x, h)) + state_precision |h|^2 / 2`` with ``F`` the soft minimum
    (:func:`free_energy`) of the option errors (:func:`option_errors`),

    so that ``T E(x, h) = -log p(x, h) + const`` under the mixture ``k ~ prior``,
    ``x | h, k ~ c exp(-T e_k)``, ``h ~ N(0, I / (T state_precision))`` (module docstring).
    Inference descends ``E`` in ``h`` (:meth:`infer`); learning descends ``E`` in the
    weights at the inferred equilibrium (:func:`train_attention_pcn`). With the authors'
    ``GMMLayer`` the options are the classes; here each class option has its own linear map
    of a shared state (a mixture of factor analysers in the squared-error case).

    Args:
        num_features: ``D``, size of the observation.
        state_dim: ``H``, size of the latent state (0 allowed: options are constants
            ``b_k``).
        num_options: ``K``.
        temperature: inverse temperature ``T`` (positive, ``math.inf`` for hard attention).
        error: one of :data:`ERRORS`.
        state_precision: prior precision of ``h`` (positive).
        init_scale: sd of the initial weights ``W``.
        generator: optional ``torch.Generator`` for the initial weights.
        dtype: parameter dtype.

    Attributes:
        weight: ``(K, D, H)`` parameter. bias: ``(K, D)`` parameter.

    Raises:
        ValueError: non-positive sizes, temperature or precision; unknown ``error``.
        TypeError: sizes that are not ints.
    """

    def __init__(
        self,
        num_features: int,
        state_dim: int,
        num_options: int,
        *,
        temperature: float = 1.0,
        error: str = "euclidean",
        state_precision: float = 1.0,
        init_scale: float = 0.1,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        for name, v, low in (("num_features", num_features, 1), ("state_dim", state_dim, 0),
                             ("num_options", num_options, 1)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            if v < low:
                raise ValueError(f"{name} must be >= {low}, got {v}")
        self.temperature = _check_temperature(temperature)
        self.error = check_choice("error", error, ERRORS)
        self.state_precision = check_positive("state_precision", state_precision)
        init_scale = check_positive("init_scale", init_scale, allow_zero=True)
        w = torch.randn(num_options, num_features, state_dim, generator=generator, dtype=dtype)
        self.weight = nn.Parameter(init_scale * w)
        self.bias = nn.Parameter(torch.zeros(num_options, num_features, dtype=dtype))

    @property
    def num_options(self) -> int:
        return self.weight.shape[0]

    @property
    def num_features(self) -> int:
        return self.weight.shape[1]

    @property
    def state_dim(self) -> int:
        return self.weight.shape[2]

    def predictions(self, h: torch.Tensor) -> torch.Tensor:
        """The options' predictions ``f_k(h) = W_k h + b_k``: ``(..., H) -> (..., K, D)``.

        Raises:
            ValueError: ``h`` does not end in ``H``.
        """
        if h.shape[-1] != self.state_dim:
            raise ValueError(f"h must have shape (..., {self.state_dim}), got {tuple(h.shape)}")
        return torch.einsum("kdh,...h->...kd", self.weight, h) + self.bias

    def errors(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Option errors ``(..., K)`` of ``x (..., D)`` given the state ``h (..., H)``.

        Raises:
            ValueError, TypeError: as :func:`option_errors` and :meth:`predictions`.
        """
        return option_errors(x, self.predictions(h), error=self.error)

    def energy(self, x, h, *, log_prior=None, temperature=None) -> torch.Tensor:
        """``E(x, h) = F + state_precision |h|^2 / 2``, ``(...)`` (class docstring).

        Args:
            x: ``(..., D)``. h: ``(..., H)``.
            log_prior: optional ``(..., K)`` log prior over options (a clamped label).
            temperature: override of the layer's ``T``.

        Raises:
            ValueError, TypeError: as :func:`free_energy` and :meth:`errors`.
        """
        t = self.temperature if temperature is None else temperature
        f = free_energy(self.errors(x, h), t, log_prior=log_prior)
        return f + 0.5 * self.state_precision * (h**2).sum(-1)

    def attention(self, x, h, *, log_prior=None, temperature=None) -> torch.Tensor:
        """Attention over options ``(..., K)`` at state ``h`` (:func:`option_attention`).

        Raises:
            ValueError, TypeError: as :meth:`energy`.
        """
        t = self.temperature if temperature is None else temperature
        return option_attention(self.errors(x, h), t, log_prior=log_prior)

    def infer(
        self,
        x,
        *,
        log_prior=None,
        temperature=None,
        num_steps: int = 200,
        step_size: float = 0.1,
        h0=None,
        tol: float = 0.0,
    ) -> torch.Tensor:
        """Inference: the state descends the energy, ``h <- h - step_size dE/dh``.

        Plain gradient descent from ``h0`` (default 0), the predictive-coding state dynamics
        (AttentionPCN ``PCN.infer``, Euler steps of size ``dt``); the weights are not
        touched. Stops early once every row's gradient norm is below ``tol``.

        Args:
            x: ``(N, D)`` or ``(D,)`` observations (clamped).
            log_prior: optional ``(N, K)`` log prior over options (``-inf`` off a clamped
                label).
            temperature: override of the layer's ``T``.
            num_steps: maximum number of steps (>= 0).
            step_size: positive step.
            h0: optional initial state ``(N, H)``.
            tol: gradient-norm tolerance (>= 0; 0 runs every step).

        Returns:
            The equilibrium state ``(N, H)`` (detached).

        Raises:
            ValueError: bad ``num_steps``/``step_size``/``tol``; shape errors as
            :meth:`energy`.
        """
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be a non-negative int, got {num_steps!r}")
        step_size = check_positive("step_size", step_size)
        tol = check_positive("tol", tol, allow_zero=True)
        check_tensor("x", x, min_dim=1)
        if x.shape[-1] != self.num_features:
            raise ValueError(f"x must have shape (..., {self.num_features}), got {tuple(x.shape)}")
        shape = (*x.shape[:-1], self.state_dim)
        if h0 is None:
            h = torch.zeros(shape, dtype=x.dtype, device=x.device)
        else:
            check_tensor("h0", h0)
            if tuple(h0.shape) != shape:
                raise ValueError(f"h0 must have shape {shape}, got {tuple(h0.shape)}")
            h = h0.detach().clone()
        x = x.detach()
        with torch.enable_grad():
            for _ in range(num_steps):
                h.requires_grad_(True)
                e = self.energy(x, h, log_prior=log_prior, temperature=temperature).sum()
                (grad,) = torch.autograd.grad(e, h)
                h = (h - step_size * grad).detach()
                if tol > 0 and float(grad.norm(dim=-1).max()) < tol:
                    break
        return h.detach()


def train_attention_pcn(
    layer: AttentionPCN,
    x,
    labels,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-2,
    infer_steps: int = 50,
    step_size: float = 0.1,
    generator: torch.Generator | None = None,
    callback=None,
) -> list[float]:
    """Supervised PCN learning: clamp the label, infer the state, one weight step, repeat.

    For each minibatch the label clamps the option (``log_prior`` 0 on the label, ``-inf``
    elsewhere: the label as the top of the network, as the authors clamp it during
    training), the state descends to equilibrium (:meth:`AttentionPCN.infer`), and Adam
    takes one step on the mean energy with the state held fixed -- the weight gradient at
    equilibrium (AttentionPCN ``PCN.set_weight_grads``), which is the total derivative of
    the state-minimised energy (envelope theorem).

    Args:
        layer: the :class:`AttentionPCN` to train (in place).
        x: ``(N, D)`` observations. labels: ``(N,)`` ints in ``0..K-1``.
        epochs, batch_size, lr: optimisation (Adam).
        infer_steps, step_size: inference per minibatch (:meth:`AttentionPCN.infer`).
        generator: shuffles the minibatches.
        callback: optional ``callback(epoch, mean_energy)`` after each epoch.

    Returns:
        The mean energy of each epoch (at the inferred states, before the weight steps).

    Raises:
        ValueError: labels out of range or of the wrong shape; non-positive sizes.
        TypeError: integer ``x`` or non-integer labels.
    """
    check_tensor("x", x, min_dim=2)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point():
        raise TypeError("labels must be an integer torch.Tensor")
    if labels.shape != x.shape[:1]:
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    k = layer.num_options
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    lr = check_positive("lr", lr)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    log_prior = torch.full((x.shape[0], k), -math.inf, dtype=x.dtype)
    log_prior[torch.arange(x.shape[0]), labels] = 0.0
    history = []
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        total = 0.0
        for start in range(0, x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            h = layer.infer(x[idx], log_prior=log_prior[idx], num_steps=infer_steps,
                            step_size=step_size)
            opt.zero_grad()
            energy = layer.energy(x[idx], h, log_prior=log_prior[idx])
            energy.mean().backward()
            opt.step()
            total += float(energy.detach().sum())
        history.append(total / x.shape[0])
        if callback is not None:
            callback(epoch, history[-1])
    return history
