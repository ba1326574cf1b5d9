r"""Bundesen's Theory of Visual Attention (TVA): exact report likelihoods, simulator, Pyro model.

The race (Bundesen 1990; DESIGN.md section 5). A display holds ``N`` items (one per location).
Item ``x`` has attentional weight ``w_x >= 0`` (0 = empty location) and processing rate

.. math:: v_x = C \, w_x / \textstyle\sum_z w_z \quad (\text{items/s}),

so the rates are the processing capacity ``C`` shared out by the normalised weights
``w_x / sum_z w_z = softmax(log w)_x`` -- the softmax of attention. Processing of item ``x``
finishes at ``t0 + T_x`` with ``T_x ~ Exp(v_x)`` independent, ``t0`` the perception threshold;
with exposure duration ``tau_exp`` the effective exposure is ``tau = max(0, tau_exp - t0)``.
Visual short-term memory (VSTM) holds ``K`` items: the first ``K`` items to finish before the
exposure ends are encoded, and (whole report) the encoded items are reported. The first item to
finish is ``x`` with probability ``v_x / sum_z v_z = w_x / sum_z w_z`` (Luce's choice rule).

Exact probability of the encoded set (Kyllingsbaek 2006; Dyrholm, Kyllingsbaek, Espeseth &
Bundesen 2011, the LibTVA likelihood). Write ``S`` for a candidate set, ``r = |S|``,
``V_out = sum_{y not in S} v_y``, ``v_A = sum_{x in A} v_x``.

* ``r < K``: VSTM is not filled, so ``S`` is encoded iff every item of ``S`` finishes before
  ``tau`` and no other item does:

  .. math:: P(S) = \prod_{x \in S} (1 - e^{-v_x \tau}) \prod_{y \notin S} e^{-v_y \tau}.

* ``r = K``: ``S`` is encoded iff its last item finishes (at ``M = max_{x in S} T_x``) before
  ``tau`` and before every item outside ``S`` (``U = min_{y not in S} T_y ~ Exp(V_out)``):
  ``P(S) = int_0^tau f_M(m) P(U > m) dm``. Inclusion-exclusion on the CDF of the maximum,
  ``F_M(m) = prod_{x in S}(1 - e^{-v_x m}) = sum_{A subset S} (-1)^{|A|} e^{-v_A m}``, gives
  ``f_M(m) = sum_{A != {}} (-1)^{|A|+1} v_A e^{-v_A m}`` and, integrating term by term,

  .. math:: P(S) = \sum_{\emptyset \ne A \subseteq S} (-1)^{|A|+1}
            \frac{v_A}{v_A + V_{out}} \bigl(1 - e^{-(v_A + V_{out})\tau}\bigr).

  (With ``S`` = all items, ``V_out = 0`` and this is ``F_M(tau)``, as it must be.)
* ``r > K``: ``P(S) = 0``.

These ``2^N`` probabilities sum to 1 (checked over all sets in the tests). The ``r = K`` sum has
``2^K - 1`` alternating terms; it is evaluated in the tensors' dtype (use float64: with ``N <= 8``
the cancellation costs a few digits at most) and a positive probability that rounds to ``<= 0``
is clamped to the smallest normal number (a log-probability near -708 in float64) rather than
returned as NaN. Structurally impossible sets (``r > K``, an encoded item with zero rate, or
``tau = 0`` with ``r > 0``) get exactly ``-inf``.

Extensions (Dyrholm et al. 2011): ``K`` may be a distribution over ``1..N`` (a mixture over
``K``; ``P(K > r)`` multiplies the first case and ``P(K = r)`` the second), and ``t0`` may vary
from trial to trial as ``N(t0, t0_sd^2)`` (integrated with Gauss-Hermite quadrature). In
*partial report* (targets among distractors, only targets reported) a distractor has weight
``alpha`` times the weight of a target at its location; distractors compete for rate and VSTM
but are not reported, so the probability of a reported target set sums ``P(S u D)`` over the
sets ``D`` of encoded distractors.

Units: ``C`` in items/s, times (``exposure``, ``t0``, ``t0_sd``) in ms.
"""

from __future__ import annotations

import math
import numbers
import weakref
from functools import lru_cache

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from ..base import BayesianModel, hyperparameter
from ._common import as_float_tensor, draws_slices, fixed_or_draw, gauss_hermite

__all__ = [
    "MAX_ITEMS",
    "report_sets",
    "k_probabilities",
    "processing_rates",
    "whole_report_log_prob",
    "partial_report_log_prob",
    "report_log_prob",
    "simulate_whole_report",
    "simulate_partial_report",
    "simulate_report",
    "whole_report_design",
    "TVAReport",
    "TVA",
]

#: Largest display the exact likelihood accepts (it enumerates the ``2^N`` subsets).
MAX_ITEMS = 10
_NEG_INF = -math.inf


# ----------------------------------------------------------------------------- subsets
def report_sets(num_items: int, *, device=None) -> torch.Tensor:
    """All ``2^N`` subsets of ``N`` items as a bool tensor ``(2^N, N)``.

    Row ``i`` is the binary expansion of ``i`` (item ``j`` is in the set iff bit ``j`` of ``i``
    is 1); row 0 is the empty set, the last row the full set.

    Raises:
        ValueError: ``num_items`` is not an integer in ``1..MAX_ITEMS``.
    """
    _check_num_items(num_items)
    return _report_sets(int(num_items), device)


@lru_cache(maxsize=32)
def _report_sets(num_items: int, device) -> torch.Tensor:
    codes = torch.arange(2**num_items, device=device)
    bits = 2 ** torch.arange(num_items, device=device)
    return (codes[:, None] & bits) > 0


def _check_num_items(num_items) -> int:
    if isinstance(num_items, bool) or not isinstance(num_items, numbers.Integral):
        raise ValueError(f"the number of display items N must be an integer, got {num_items!r}")
    if not 1 <= num_items <= MAX_ITEMS:
        raise ValueError(
            f"the display must hold 1..{MAX_ITEMS} items for the exact TVA likelihood, "
            f"got N={num_items}"
        )
    return int(num_items)


def _codes(mask: torch.Tensor) -> torch.Tensor:
    """Integer code ``sum_j mask_j 2^j`` of bool sets ``(..., N)`` -> ``(...)`` int64."""
    bits = 2 ** torch.arange(int(mask.shape[-1]), device=mask.device)
    return (mask.long() * bits).sum(-1)


# ----------------------------------------------------------------------------- safe log ops
def _safe_log(p: torch.Tensor) -> torch.Tensor:
    """``log p`` with ``log 0 = -inf`` and no NaN gradient at 0."""
    pos = p > 0
    return torch.where(pos, torch.log(torch.where(pos, p, torch.ones_like(p))), _NEG_INF)


def _safe_logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``logsumexp`` that returns ``-inf`` (with zero gradient) when every entry is ``-inf``."""
    m = x.amax(dim, keepdim=True)
    finite = torch.isfinite(m)
    m_safe = torch.where(finite, m, torch.zeros_like(m))
    s = torch.where(torch.isfinite(x), torch.exp(x - m_safe), torch.zeros_like(x)).sum(dim, True)
    out = torch.where(finite, m_safe + _safe_log(s), torch.full_like(m, _NEG_INF))
    return out.squeeze(dim)


# ----------------------------------------------------------------------------- K
def k_probabilities(K, num_items: int, *, dtype=torch.float64) -> torch.Tensor:
    """VSTM capacity ``K`` as probabilities ``(..., N)`` of ``K = 1..N``.

    ``K`` is an integer in ``1..N`` (a point mass, shape ``(N,)``) or a real number/tensor
    ``(...)`` in ``[1, N]``: a non-integer capacity ``k`` is read as the two-point distribution
    ``P(K = floor k) = 1 - frac(k)``, ``P(K = floor k + 1) = frac(k)`` (mean ``k``; continuous
    and piecewise linear in ``k``, so NUTS can move through it; an integer-valued ``k`` is a
    point mass).

    Raises:
        TypeError: ``K`` is neither a number nor a tensor.
        ValueError: ``K`` outside ``1..N`` (or ``[1, N]``), or NaN.
    """
    if isinstance(K, bool) or not isinstance(K, numbers.Real | torch.Tensor):
        raise TypeError(f"K must be an int or a real in [1, N], got {type(K).__name__}")
    if isinstance(K, torch.Tensor) and not K.is_floating_point():
        if K.dim() != 0:
            K = K.to(dtype)
        else:
            K = int(K)
    if isinstance(K, numbers.Integral):
        k = int(K)
        if not 1 <= k <= num_items:
            raise ValueError(
                f"K (VSTM capacity) must be an integer in 1..N = 1..{num_items}, got {k}"
            )
        out = torch.zeros(num_items, dtype=dtype)
        out[k - 1] = 1.0
        return out
    K = as_float_tensor("K", K, dtype=dtype)
    kd = K.detach()
    if bool((kd < 1).any()) or bool((kd > num_items).any()):
        raise ValueError(f"K (VSTM capacity) must lie in [1, N] = [1, {num_items}], got {K}")
    lower = torch.clamp(torch.floor(kd), max=num_items - 1)  # K = N: all mass on N
    frac = (K - lower)[..., None]  # the gradient flows through frac
    idx = torch.arange(1, num_items + 1, dtype=K.dtype)
    low = (idx == lower[..., None]).to(K.dtype)
    high = (idx == lower[..., None] + 1).to(K.dtype)
    return (1 - frac) * low + frac * high


def _check_k_probs(k_probs, num_items: int) -> torch.Tensor:
    k_probs = as_float_tensor("k_probs", k_probs)
    if k_probs.dim() < 1 or k_probs.shape[-1] != num_items:
        raise ValueError(
            f"k_probs must have shape (..., N) = (..., {num_items}) (P(K=1..N)), "
            f"got {tuple(k_probs.shape)}"
        )
    kd = k_probs.detach()
    if bool((kd < 0).any()) or not bool(
        torch.allclose(kd.sum(-1), torch.ones((), dtype=kd.dtype), atol=1e-6)
    ):
        raise ValueError("k_probs (probabilities of K = 1..N) must be >= 0 and sum to 1")
    return k_probs


def _resolve_k(K, k_probs, num_items):
    if (K is None) == (k_probs is None):
        raise ValueError("give exactly one of K (capacity) and k_probs (probabilities of K=1..N)")
    return k_probabilities(K, num_items) if k_probs is None else _check_k_probs(k_probs, num_items)


# ----------------------------------------------------------------------------- rates
def processing_rates(C, weights) -> torch.Tensor:
    """TVA processing rates ``v (..., N)`` in items/ms: ``C w_x / sum_z w_z / 1000``.

    Args:
        C: processing capacity in items/s, a number or tensor broadcasting to ``(...)``.
        weights: attentional weights ``(..., N)``, non-negative; normalised inside (Bundesen
            1990, eq. 1): only their ratios matter.

    Raises:
        ValueError: a weight is negative or all weights of a display are 0; ``C`` is not
            positive.
    """
    C = as_float_tensor("C", C)
    weights = as_float_tensor("weights", weights)
    if bool((C.detach() <= 0).any()):
        raise ValueError(f"C (processing capacity, items/s) must be positive, got {C}")
    wd = weights.detach()
    if bool((wd < 0).any()):
        raise ValueError("weights (attentional weights) must be non-negative")
    if bool((wd.sum(-1) <= 0).any()):
        raise ValueError("weights of a display must not all be 0")
    share = weights / weights.sum(-1, keepdim=True)  # = softmax(log w)
    return C[..., None] * share / 1000.0


# ----------------------------------------------------------------------------- core race
def _inclusion_coefficients(encoded: torch.Tensor) -> torch.Tensor:
    """``c[..., A] = (-1)^(|A|+1)`` if ``{} != A subset of S`` else 0, for sets ``S`` ``(..., N)``.

    Depends on the data only, so it is cached for the last few report tensors seen (keyed by the
    tensor object and its version counter): NUTS re-evaluates the same data thousands of times.
    """
    return _cached(_COEF_CACHE, (encoded,), lambda: _coefficients(encoded))


def _coefficients(encoded: torch.Tensor) -> torch.Tensor:
    num = int(encoded.shape[-1])
    subsets = report_sets(num, device=encoded.device)  # (M, N)
    sizes = subsets.sum(-1)
    sign = torch.where(sizes % 2 == 1, 1.0, -1.0).to(torch.float64)
    sign = torch.where(sizes > 0, sign, 0.0)
    inside = (_codes(subsets) & ~_codes(encoded)[..., None]) == 0  # A subset of S, (..., M)
    return inside.to(torch.float64) * sign


_COEF_CACHE: dict = {}
_UNIQUE_CACHE: dict = {}


def _cached(cache: dict, tensors: tuple, compute):
    """Memoise ``compute()`` on data tensors (weak references + version counters)."""
    key = tuple(id(t) for t in tensors)
    hit = cache.get(key)
    if hit is not None:
        refs, versions, value = hit
        if all(r() is t for r, t in zip(refs, tensors, strict=True)) and versions == tuple(
            t._version for t in tensors
        ):
            return value
    value = compute()
    if not any(t.requires_grad for t in tensors):
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        cache[key] = (
            tuple(weakref.ref(t) for t in tensors),
            tuple(t._version for t in tensors),
            value,
        )
    return value


def _trial_constant(reported, exposure, rates, k_probs, t0, t0_sd) -> bool:
    """True when trials ``(T, N)`` differ only in report and exposure (parameters shared)."""
    if reported.dim() != 2 or exposure.dim() != 1 or exposure.shape[0] != reported.shape[0]:
        return False
    dims = [rates.shape[:-1], k_probs.shape[:-1], t0.shape]
    if t0_sd is not None:
        dims.append(t0_sd.shape)
    return all(len(d) == 0 or d[-1] == 1 for d in dims)


def _unique_trials(reported, exposure):
    """Distinct ``(report, exposure)`` trials, the inverse index and their coefficients."""

    def compute():
        key = torch.stack([_codes(reported).to(torch.float64), exposure.detach().double()], -1)
        uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
        first = torch.zeros(uniq.shape[0], dtype=torch.long).scatter_(
            0, inverse, torch.arange(reported.shape[0])
        )
        uniq_rep = reported[first]
        return uniq_rep, exposure[first], inverse, _inclusion_coefficients(uniq_rep)

    return _cached(_UNIQUE_CACHE, (reported, exposure), compute)


def _race_log_prob(encoded, tau, rates, k_probs, coef=None):
    """log P(encoded set) under the race; arguments broadcast against each other.

    encoded (..., N) bool, tau (...) ms >= 0, rates (..., N) 1/ms >= 0, k_probs (..., N);
    ``coef`` = :func:`_inclusion_coefficients` of ``encoded`` (computed when None).
    """
    num = int(encoded.shape[-1])
    dtype = rates.dtype
    r = encoded.sum(-1)  # (...)
    tau_ = tau[..., None]

    # case r < K: independent finish-before-tau events
    x = rates * tau_
    pos = x > 0
    log_fin = torch.where(pos, torch.log(-torch.expm1(-torch.where(pos, x, 1.0))), _NEG_INF)
    lp_small = torch.where(encoded, log_fin, -x).sum(-1)

    # case r = K: inclusion-exclusion over the non-empty subsets A of the encoded set
    if coef is None:
        coef = _inclusion_coefficients(encoded)
    subsets = report_sets(num, device=rates.device).to(dtype)  # (M, N)
    v_sub = rates @ subsets.T  # (..., M)
    v_out = (rates.sum(-1, keepdim=True) - (rates * encoded).sum(-1, keepdim=True)).clamp_min(0)
    tiny = torch.finfo(dtype).tiny
    total = (v_sub + v_out).clamp_min(tiny)  # 0 only when v_A = 0: the term is 0 then
    term = v_sub / total * -torch.expm1(-total * tau_)
    p_full = (coef.to(dtype) * term).sum(-1)
    impossible = ((tau <= 0) & (r > 0)) | (encoded & (rates <= 0)).any(-1)
    lp_full = torch.where(
        impossible, _NEG_INF, torch.log(torch.where(impossible, 1.0, p_full.clamp_min(tiny)))
    )

    # mixture over K = 1..N: P(K > r) P_small(S) + P(K = r) P_full(S)
    shape = torch.broadcast_shapes(r.shape, k_probs.shape[:-1])
    k_probs = k_probs.expand(*shape, num)
    r = r.expand(shape)
    tail = torch.flip(torch.cumsum(torch.flip(k_probs, [-1]), -1), [-1])  # P(K >= k), k=1..N
    tail = torch.cat([tail, torch.zeros_like(tail[..., :1])], -1)  # P(K >= N+1) = 0
    p_gt = tail.gather(-1, r[..., None]).squeeze(-1)  # P(K >= r + 1)
    p_eq = torch.where(r > 0, k_probs.gather(-1, (r[..., None] - 1).clamp(min=0)).squeeze(-1), 0.0)
    a = _safe_log(p_gt) + lp_small
    b = _safe_log(p_eq) + lp_full
    return _safe_logsumexp(torch.stack(torch.broadcast_tensors(a, b), -1), -1)


def _with_t0(encoded, exposure, rates, k_probs, t0, t0_sd, num_nodes, coef=None):
    """Integrate the race log-probability over ``t0 ~ N(t0, t0_sd^2)`` (or fixed ``t0``)."""
    if t0_sd is None or (not isinstance(t0_sd, torch.Tensor) and float(t0_sd) == 0.0):
        tau = torch.clamp(exposure - t0, min=0.0)
        return _race_log_prob(encoded, tau, rates, k_probs, coef)
    z, w = gauss_hermite(num_nodes, dtype=rates.dtype)
    t0q = t0[..., None] + t0_sd[..., None] * z  # (..., Q)
    tau = torch.clamp(exposure[..., None] - t0q, min=0.0)
    lp = _race_log_prob(
        encoded[..., None, :],
        tau,
        rates[..., None, :],
        k_probs[..., None, :],
        None if coef is None else coef[..., None, :],
    )  # (..., Q)
    return _safe_logsumexp(lp + torch.log(w), -1)


# ----------------------------------------------------------------------------- checks
def _check_report(reported, num_items, name="reported") -> torch.Tensor:
    if not isinstance(reported, torch.Tensor):
        raise TypeError(
            f"{name} must be a bool torch.Tensor (..., N), got {type(reported).__name__}"
        )
    if reported.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a bool tensor (True = item reported), got {reported.dtype}"
        )
    if reported.dim() < 1:
        raise ValueError(f"{name} must have shape (..., N), got a scalar")
    if reported.shape[-1] != num_items:
        raise ValueError(
            f"{name} has {reported.shape[-1]} items per trial but the display has N={num_items} "
            "locations (the length of weights)"
        )
    return reported


def _check_exposure(exposure) -> torch.Tensor:
    exposure = as_float_tensor("exposure", exposure)
    if bool((exposure.detach() < 0).any()):
        raise ValueError("exposure (duration, ms) must be non-negative")
    return exposure


def _check_t0(t0, t0_sd):
    t0 = as_float_tensor("t0", t0)
    if t0_sd is None:
        return t0, None
    t0_sd = as_float_tensor("t0_sd", t0_sd)
    if bool((t0_sd.detach() < 0).any()):
        raise ValueError(f"t0_sd (ms) must be non-negative, got {t0_sd}")
    if t0_sd.dim() == 0 and float(t0_sd) == 0.0 and not t0_sd.requires_grad:
        return t0, None
    return t0, t0_sd


def _check_weights(weights) -> torch.Tensor:
    weights = as_float_tensor("weights", weights)
    if weights.dim() < 1:
        raise ValueError("weights must have shape (..., N) (one weight per display location)")
    _check_num_items(weights.shape[-1])
    return weights


def _broadcast_leading(*tensors):
    """Broadcast the batch dims of ``(...)`` tensors (dim 0 ok)."""
    return torch.broadcast_shapes(*[t.shape for t in tensors])


# ----------------------------------------------------------------------------- public API
def report_log_prob(
    reported,
    exposure,
    *,
    C,
    weights,
    t0,
    K=None,
    k_probs=None,
    t0_sd=0.0,
    reportable=None,
    num_nodes: int = 32,
) -> torch.Tensor:
    """Log-probability ``(...)`` of a report under the TVA race (general form).

    Args:
        reported: bool ``(..., N)``, True where the item was reported.
        exposure: exposure duration ``(...)`` in ms.
        C: processing capacity (items/s), broadcasting to ``(...)``.
        weights: attentional weights of the items on each trial, ``(..., N)`` or ``(N,)``;
            0 marks an empty location. Normalised inside.
        t0: perception threshold (ms), broadcasting to ``(...)``; mean of ``t0`` when
            ``t0_sd > 0``.
        K: VSTM capacity, an int in ``1..N`` or a real in ``[1, N]`` (:func:`k_probabilities`).
        k_probs: instead of ``K``, probabilities ``(..., N)`` of ``K = 1..N``.
        t0_sd: trial-to-trial standard deviation of ``t0`` (ms); 0 = fixed ``t0``.
        reportable: bool ``(..., N)``, items that are reported when encoded (targets); the others
            (distractors) are marginalised. None = every item is reportable (whole report).
        num_nodes: Gauss-Hermite nodes for the ``t0`` integral.

    Returns:
        ``log P(reported)`` of shape ``(...)`` (module docstring; Kyllingsbaek 2006,
        Dyrholm et al. 2011).

    Raises:
        TypeError: ``reported`` is not a bool tensor; a parameter is not a number or tensor.
        ValueError: ``reported`` does not have ``N`` items; more than ``MAX_ITEMS`` items;
            negative ``exposure``; ``K`` outside ``1..N``, or both/neither of ``K`` and
            ``k_probs``, or ``k_probs`` not a distribution over ``1..N``; ``C`` not positive;
            negative or all-zero weights; negative ``t0_sd``; a reported item that is not
            reportable or has weight 0.
    """
    weights = _check_weights(weights)
    num = weights.shape[-1]
    reported = _check_report(reported, num)
    exposure = _check_exposure(exposure)
    t0, t0_sd = _check_t0(t0, t0_sd)
    k_probs = _resolve_k(K, k_probs, num)
    rates = processing_rates(C, weights)
    if bool((reported & (weights.detach() <= 0)).any()):
        raise ValueError("reported contains an item at an empty location (weight 0)")
    if reportable is not None:
        reportable = _check_report(reportable, num, name="reportable")
        if bool((reported & ~reportable).any()):
            raise ValueError("reported contains an item that is not reportable (a distractor)")
    return _report_log_prob(reported, exposure, rates, k_probs, t0, t0_sd, reportable, num_nodes)


def _report_log_prob(reported, exposure, rates, k_probs, t0, t0_sd, reportable, num_nodes):
    """:func:`report_log_prob` on validated tensors (``rates`` in items/ms)."""
    if reportable is None:
        if _trial_constant(reported, exposure, rates, k_probs, t0, t0_sd):
            # identical (report, exposure) trials share their probability: evaluate each once
            uniq_rep, uniq_exp, inverse, coef = _unique_trials(reported, exposure)
            lp = _with_t0(uniq_rep, uniq_exp, rates, k_probs, t0, t0_sd, num_nodes, coef)
            return lp[..., inverse]
        coef = _inclusion_coefficients(reported)
        return _with_t0(reported, exposure, rates, k_probs, t0, t0_sd, num_nodes, coef)
    # marginalise the unreported encoded distractors D: sum_D P(reported u D)
    num = int(rates.shape[-1])
    hidden = (~reportable) & (rates.detach() > 0)  # (..., N)
    subsets = report_sets(num, device=reported.device)  # (M, N)
    valid = (_codes(subsets) & ~_codes(hidden)[..., None]) == 0  # (..., M)
    encoded = reported[..., None, :] | subsets  # (..., M, N)
    lp = _with_t0(
        encoded,
        exposure[..., None],
        rates[..., None, :],
        k_probs[..., None, :],
        t0[..., None],
        None if t0_sd is None else t0_sd[..., None],
        num_nodes,
    )
    return _safe_logsumexp(torch.where(valid, lp, _NEG_INF), -1)


def whole_report_log_prob(reported, exposure, *, C, weights, t0, K, t0_sd=0.0, num_nodes=32):
    """Log-probability ``(...)`` of exactly the reported set in TVA whole report.

    The race of Bundesen (1990): item ``x`` finishes at ``t0 + Exp(C w_x / sum w)`` (``C`` in
    items/s, times in ms) and the first ``K`` items to finish before the exposure ends are
    reported. Exact closed form (module docstring; Kyllingsbaek 2006; Dyrholm et al. 2011).
    Differentiable in ``C``, ``weights`` and ``t0`` (and ``K`` when it is real-valued).

    Args:
        reported: bool ``(..., N)``, True where the item was reported.
        exposure: exposure duration in ms, ``(...)`` (broadcasts against ``reported[..., 0]``).
        C: processing capacity in items/s (number or tensor broadcasting to ``(...)``).
        weights: attentional weights ``(N,)`` or ``(..., N)``, normalised inside.
        t0: perception threshold in ms; effective exposure is ``max(0, exposure - t0)``.
        K: VSTM capacity, an int in ``1..N`` (or, see :func:`k_probabilities`, a real capacity
            or probabilities over ``1..N``).
        t0_sd: trial-to-trial sd of ``t0`` in ms (Dyrholm et al. 2011); 0 = fixed.
        num_nodes: Gauss-Hermite nodes used when ``t0_sd > 0``.

    Returns:
        Tensor ``(...)``: ``log P(reported | exposure)``; ``-inf`` for impossible reports (more
        than ``K`` items, or any item when ``exposure <= t0``).

    Raises:
        TypeError: ``reported`` is not a bool tensor.
        ValueError: ``reported`` has a different number of items than ``weights`` (a report
            longer than the display); ``exposure < 0``; ``K`` outside ``1..N``; ``C <= 0``;
            negative or all-zero weights; ``N > MAX_ITEMS``.
    """
    return report_log_prob(
        reported, exposure, C=C, weights=weights, t0=t0, K=K, t0_sd=t0_sd, num_nodes=num_nodes
    )


def partial_report_log_prob(
    reported,
    exposure,
    *,
    targets,
    distractors,
    C,
    weights,
    alpha,
    t0,
    K=None,
    k_probs=None,
    t0_sd=0.0,
    num_nodes=32,
):
    """Log-probability ``(...)`` of the reported targets in TVA partial report.

    Location ``j`` has spatial weight ``weights[j]``; a target there has attentional weight
    ``weights[j]``, a distractor ``alpha * weights[j]`` (Bundesen 1990; Duncan et al. 1999),
    an empty location 0. All present items race for ``C`` and VSTM; only encoded targets are
    reported, so the encoded distractors are summed out exactly.

    Args:
        reported: bool ``(..., N)``; must be a subset of ``targets``.
        exposure: exposure duration in ms ``(...)``.
        targets, distractors: bool ``(..., N)``, disjoint; neither = empty location.
        C: items/s. weights: ``(N,)`` or ``(..., N)`` spatial weights. alpha: distractor weight
            (> 0). t0: ms. K / k_probs: as in :func:`report_log_prob`. t0_sd: ms.

    Returns:
        Tensor ``(...)`` of log-probabilities.

    Raises:
        TypeError: a mask is not a bool tensor.
        ValueError: masks of the wrong length; a location both target and distractor; a
            reported item that is not a target; ``alpha <= 0``; and the errors of
            :func:`whole_report_log_prob`.
    """
    item_weights, reportable = _partial_weights(weights, alpha, targets, distractors)
    return report_log_prob(
        reported,
        exposure,
        C=C,
        weights=item_weights,
        t0=t0,
        K=K,
        k_probs=k_probs,
        t0_sd=t0_sd,
        reportable=reportable,
        num_nodes=num_nodes,
    )


def _partial_weights(weights, alpha, targets, distractors):
    weights = _check_weights(weights)
    num = weights.shape[-1]
    targets = _check_report(targets, num, name="targets")
    distractors = _check_report(distractors, num, name="distractors")
    if bool((targets & distractors).any()):
        raise ValueError("targets and distractors must not share a location")
    alpha = as_float_tensor("alpha", alpha)
    if bool((alpha.detach() <= 0).any()):
        raise ValueError(f"alpha (distractor weight) must be positive, got {alpha}")
    a = alpha[..., None] if alpha.dim() else alpha
    item = weights * (targets.to(weights.dtype) + a * distractors.to(weights.dtype))
    if bool((item.detach().sum(-1) <= 0).any()):
        raise ValueError("a display has no items (no target and no distractor)")
    return item, targets


# ----------------------------------------------------------------------------- simulation
def simulate_report(
    exposure,
    *,
    C,
    weights,
    t0,
    K=None,
    k_probs=None,
    t0_sd=0.0,
    reportable=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simulate the TVA race trial by trial; returns the reported set, bool ``(..., N)``.

    Draws ``T_x ~ Exp(v_x)`` (``v`` from :func:`processing_rates`), ``t0`` per trial
    (``N(t0, t0_sd^2)`` when ``t0_sd > 0``) and ``K`` per trial (from
    :func:`k_probabilities`); encodes the first ``K`` items with ``t0 + T_x < exposure`` and
    reports the encoded items that are ``reportable``. Arguments as in
    :func:`report_log_prob`; the batch shape is that of ``exposure`` broadcast with the
    parameters.

    Raises:
        ValueError: the argument errors of :func:`report_log_prob`.
    """
    weights = _check_weights(weights)
    num = weights.shape[-1]
    exposure = _check_exposure(exposure)
    t0, t0_sd = _check_t0(t0, t0_sd)
    k_probs = _resolve_k(K, k_probs, num)
    with torch.no_grad():
        rates = processing_rates(C, weights)
        batch = torch.broadcast_shapes(
            exposure.shape,
            rates.shape[:-1],
            k_probs.shape[:-1],
            t0.shape,
            () if t0_sd is None else t0_sd.shape,
        )
        rates = rates.expand(*batch, num)
        u = torch.rand((*batch, num), generator=generator, dtype=rates.dtype)
        e = -torch.log1p(-u)  # Exp(1)
        finish = torch.where(rates > 0, e / torch.where(rates > 0, rates, 1.0), math.inf)
        t0_trial = t0.expand(batch)
        if t0_sd is not None:
            z = torch.randn(batch, generator=generator, dtype=rates.dtype)
            t0_trial = t0_trial + t0_sd * z
        finish = finish + t0_trial[..., None]
        order = torch.argsort(finish, dim=-1)
        rank = torch.argsort(order, dim=-1)
        cdf = torch.cumsum(k_probs.expand(*batch, num), -1)
        uk = torch.rand((*batch, 1), generator=generator, dtype=rates.dtype)
        k_trial = (uk > cdf).sum(-1).clamp(max=num - 1) + 1  # categorical over 1..N
        encoded = (finish < exposure.expand(batch)[..., None]) & (rank < k_trial[..., None])
        if reportable is not None:
            reportable = _check_report(reportable, num, name="reportable")
            encoded = encoded & reportable
        return encoded


def simulate_whole_report(
    exposure, *, C, weights, t0, K, t0_sd=0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Simulate TVA whole report: bool ``(..., N)`` of reported items per trial.

    Args as in :func:`whole_report_log_prob`; ``exposure (...)`` in ms sets the number of
    trials. ``generator`` seeds the draws.

    Raises:
        ValueError: the argument errors of :func:`whole_report_log_prob`.
    """
    return simulate_report(
        exposure, C=C, weights=weights, t0=t0, K=K, t0_sd=t0_sd, generator=generator
    )


def simulate_partial_report(
    exposure,
    *,
    targets,
    distractors,
    C,
    weights,
    alpha,
    t0,
    K=None,
    k_probs=None,
    t0_sd=0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simulate TVA partial report: bool ``(..., N)`` of reported targets per trial.

    Args as in :func:`partial_report_log_prob`.

    Raises:
        ValueError: the argument errors of :func:`partial_report_log_prob`.
    """
    item_weights, reportable = _partial_weights(weights, alpha, targets, distractors)
    return simulate_report(
        exposure,
        C=C,
        weights=item_weights,
        t0=t0,
        K=K,
        k_probs=k_probs,
        t0_sd=t0_sd,
        reportable=reportable,
        generator=generator,
    )


def whole_report_design(
    exposures=(16.6, 33.3, 50.0, 83.3, 133.3, 200.0), trials_per_exposure: int = 39
) -> torch.Tensor:
    """Exposure durations (ms) of a whole-report session, ``(len(exposures) * trials,)``.

    The default is a standard TVA design: six 60 Hz frame multiples from 16.6 to 200 ms, 39
    trials each (234 trials), with the six display locations all used on every trial.

    Raises:
        ValueError: a negative exposure or a non-positive number of trials.
    """
    if (
        isinstance(trials_per_exposure, bool)
        or not isinstance(trials_per_exposure, numbers.Integral)
        or trials_per_exposure < 1
    ):
        raise ValueError(f"trials_per_exposure must be a positive int, got {trials_per_exposure}")
    exp = _check_exposure(torch.as_tensor(exposures, dtype=torch.float64))
    return exp.repeat_interleave(int(trials_per_exposure))


# ----------------------------------------------------------------------------- distribution
class TVAReport(TorchDistribution):
    """Distribution of the report on TVA trials: batch ``(...)``, event ``(N,)`` bool.

    ``log_prob`` is :func:`report_log_prob` (exact, differentiable); ``sample`` runs
    :func:`simulate_report`. Parameters as there: ``exposure (...)`` ms, ``C`` items/s,
    ``weights (..., N)``, ``t0`` ms, ``k_probs (..., N)`` over ``K = 1..N``, ``t0_sd`` ms
    (None or 0 = fixed ``t0``), ``reportable (..., N)`` bool or None. With
    ``validate_args=False`` the arguments are trusted (the Pyro model validates them once).

    Raises:
        ValueError: the argument errors of :func:`report_log_prob` (when validating).
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False

    def __init__(
        self,
        exposure,
        *,
        C,
        weights,
        t0,
        k_probs,
        t0_sd=None,
        reportable=None,
        num_nodes=32,
        validate_args=None,
    ):
        check = validate_args is not False
        if check:
            weights = _check_weights(weights)
            exposure = _check_exposure(exposure)
            t0, t0_sd = _check_t0(t0, t0_sd)
            k_probs = _check_k_probs(k_probs, weights.shape[-1])
            C = as_float_tensor("C", C)
            if reportable is not None:
                reportable = _check_report(reportable, weights.shape[-1], name="reportable")
            rates = processing_rates(C, weights)
        else:
            rates = C[..., None] * weights / weights.sum(-1, keepdim=True) / 1000.0
        self.exposure, self.C, self.weights, self.t0, self.t0_sd = exposure, C, weights, t0, t0_sd
        self.k_probs, self.reportable, self.num_nodes, self.rates = (
            k_probs,
            reportable,
            num_nodes,
            rates,
        )
        shapes = [exposure.shape, t0.shape, rates.shape[:-1], k_probs.shape[:-1]]
        if t0_sd is not None:
            shapes.append(t0_sd.shape)
        if reportable is not None:
            shapes.append(reportable.shape[:-1])
        batch_shape = torch.broadcast_shapes(*shapes)
        super().__init__(batch_shape, torch.Size([weights.shape[-1]]), validate_args=check)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        num = self.event_shape[0]
        return TVAReport(
            self.exposure.expand(batch_shape),
            C=self.C.expand(batch_shape),
            weights=self.weights.expand(*batch_shape, num),
            t0=self.t0.expand(batch_shape),
            k_probs=self.k_probs.expand(*batch_shape, num),
            t0_sd=None if self.t0_sd is None else self.t0_sd.expand(batch_shape),
            reportable=None
            if self.reportable is None
            else self.reportable.expand(*batch_shape, num),
            num_nodes=self.num_nodes,
            validate_args=False,
        )

    def log_prob(self, value):
        if value.dtype != torch.bool:
            if bool(((value != 0) & (value != 1)).any()):
                raise ValueError("a TVA report must be 0/1 (or bool) per item")
            value = value != 0
        if self._validate_args:
            _check_report(value, self.event_shape[0])
            if bool((value & (self.rates.detach() <= 0)).any()):
                raise ValueError("reported contains an item at an empty location (weight 0)")
            if self.reportable is not None and bool((value & ~self.reportable).any()):
                raise ValueError("reported contains an item that is not reportable")
        return _report_log_prob(
            value,
            self.exposure,
            self.rates,
            self.k_probs,
            self.t0,
            self.t0_sd,
            self.reportable,
            self.num_nodes,
        )

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        return simulate_report(
            self.exposure.expand(shape),
            C=self.C,
            weights=self.weights,
            t0=self.t0,
            k_probs=self.k_probs,
            t0_sd=self.t0_sd,
            reportable=self.reportable,
        )


# ----------------------------------------------------------------------------- Pyro model
class _UpperTruncated(TorchDistribution):
    """A univariate distribution truncated to ``x < upper`` (needs ``cdf``/``icdf``)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base, upper, validate_args=None):
        self.base = base
        self.upper = torch.as_tensor(upper, dtype=torch.float64)
        self._log_mass = torch.log(base.cdf(self.upper))
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self):
        return constraints.less_than(self.upper)

    def log_prob(self, value):
        lp = self.base.log_prob(value) - self._log_mass
        return torch.where(value < self.upper, lp, -math.inf)

    def sample(self, sample_shape=()):
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.batch_shape
            u = torch.rand(shape, dtype=torch.float64) * torch.exp(self._log_mass)
            return torch.minimum(self.base.icdf(u), self.upper - 1e-9)

    def expand(self, batch_shape, _instance=None):
        return _UpperTruncated(self.base.expand(batch_shape), self.upper)


class TVA(BayesianModel):
    """TVA as a Pyro model for whole or partial report (Bundesen 1990; Dyrholm et al. 2011).

    Data (tensors over ``T`` trials, display of ``N`` locations)::

        exposure (T,) ms, reported (T, N) bool [obs; None = simulate]
        partial report only: targets (T, N) bool, distractors (T, N) bool

    Each parameter is a fixed value or a Pyro prior (:func:`bayesattn.models.base.hyperparameter`):

    * ``C``: processing capacity (items/s). Default prior ``LogNormal(log 40, 0.6)``.
    * ``K``: VSTM capacity: an int in ``1..N`` (fixed); a probability tensor ``(N,)``; a
      distribution over reals in ``[1, N]`` (latent ``K``, read by :func:`k_probabilities` as a
      mixture of ``floor K`` and ``floor K + 1``; default ``Uniform(1, N)``); or a distribution
      with event shape ``(N,)`` on the simplex (latent ``K_probs``, a free distribution over
      ``1..N`` as in LibTVA).
    * ``t0``: perception threshold (ms). Default prior ``Normal(15, 15)``.
    * ``t0_sd``: trial-to-trial sd of ``t0`` (ms); default 0 (fixed ``t0``).
    * ``weights``: spatial attentional weights ``(N,)``: a distribution on the simplex (default
      ``Dirichlet(2 * ones(N))``), a fixed tensor, or None for equal weights.
    * ``alpha``: distractor weight (partial report only). Default ``LogNormal(log 0.5, 0.75)``.

    Deterministic site ``attention_weights (N,)``: the normalised spatial weights
    ``w / sum w = softmax(log w)``, the share of ``C`` each location gets in whole report (and
    ``K_mean``, the mean VSTM capacity, when ``K`` is latent).

    Raises:
        ValueError: ``paradigm`` not ``"whole"``/``"partial"``; ``num_locations`` outside
            ``1..MAX_ITEMS``; a fixed ``K`` outside ``1..N``; fixed weights not of shape ``(N,)``.
    """

    obs_name = "reported"

    def __init__(
        self,
        num_locations: int = 6,
        *,
        paradigm: str = "whole",
        C=None,
        K=None,
        t0=None,
        t0_sd=0.0,
        weights="prior",
        alpha=None,
        num_nodes: int = 32,
    ):
        self.num_locations = _check_num_items(num_locations)
        n = self.num_locations
        if paradigm not in ("whole", "partial"):
            raise ValueError(f"paradigm must be 'whole' or 'partial', got {paradigm!r}")
        self.paradigm = paradigm
        self.C = dist.LogNormal(math.log(40.0), 0.6) if C is None else C
        self.K = dist.Uniform(1.0, float(n)) if K is None else K
        if n == 1 and K is None:
            self.K = 1
        if not isinstance(self.K, dist.Distribution):
            self._fixed_k_probs()  # validates
        self.t0 = dist.Normal(15.0, 15.0) if t0 is None else t0
        self.t0_sd = t0_sd
        if isinstance(weights, str) and weights == "prior":
            weights = dist.Dirichlet(torch.full((n,), 2.0, dtype=torch.float64))
        if weights is None:
            weights = torch.ones(n, dtype=torch.float64)
        if not isinstance(weights, dist.Distribution):
            weights = _check_weights(torch.as_tensor(weights, dtype=torch.float64))
            if weights.shape != (n,):
                raise ValueError(f"fixed weights must have shape (N,) = ({n},)")
        self.weights = weights
        self.alpha = dist.LogNormal(math.log(0.5), 0.75) if alpha is None else alpha
        self.num_nodes = num_nodes

    # -- helpers
    def _fixed_k_probs(self) -> torch.Tensor:
        n = self.num_locations
        K = self.K
        if isinstance(K, torch.Tensor) and K.dim() >= 1:
            return _check_k_probs(K.to(torch.float64), n)
        return k_probabilities(K, n)

    def _k_site(self):
        if isinstance(self.K, dist.Distribution):
            return "K_probs" if self.K.event_shape == (self.num_locations,) else "K"
        return None

    def latent_names(self) -> list[str]:
        names = []
        for name in ("C", "t0", "t0_sd"):
            if isinstance(getattr(self, name), dist.Distribution):
                names.append(name)
        if self._k_site():
            names.append(self._k_site())
        if isinstance(self.weights, dist.Distribution):
            names.append("weights")
        if self.paradigm == "partial" and isinstance(self.alpha, dist.Distribution):
            names.append("alpha")
        return names

    def _support_bounds(self, exposure, reported):
        """Priors restricted to where the likelihood of ``reported`` is positive.

        With a fixed ``t0`` (``t0_sd = 0``) nothing can be reported when ``exposure <= t0``, so
        ``t0`` must lie below the shortest exposure with a report; with a real-valued ``K``, a
        report of ``r`` items needs ``K > r - 1``. Truncating the priors there leaves the
        posterior unchanged (the likelihood is 0 outside) but keeps NUTS and SVI guides out of
        the impossible region (an SVI guide on the untruncated prior would put mass there and
        give an infinite loss).
        """
        t0_prior, k_prior = self.t0, self.K
        if reported is None or not bool(reported.any()):
            return t0_prior, k_prior
        fixed_sd = not isinstance(self.t0_sd, dist.Distribution) and float(self.t0_sd) == 0.0
        if fixed_sd and isinstance(t0_prior, dist.Distribution) and t0_prior.event_shape == ():
            bound = exposure[reported.any(-1)].min()
            t0_prior = _UpperTruncated(t0_prior, bound)
        if isinstance(k_prior, dist.Uniform) and k_prior.event_shape == ():
            r_max = float(reported.sum(-1).max())
            low = torch.clamp(torch.as_tensor(k_prior.low, dtype=torch.float64), min=r_max - 1)
            if bool((low < k_prior.high).all()):
                k_prior = dist.Uniform(low, k_prior.high)
        return t0_prior, k_prior

    def _params(self, t0_prior=None, k_prior=None):
        """Sample or fix every parameter (inside the Pyro program)."""
        n = self.num_locations
        C = hyperparameter("C", self.C)
        t0 = hyperparameter("t0", self.t0 if t0_prior is None else t0_prior)
        t0_sd = hyperparameter("t0_sd", self.t0_sd)
        site = self._k_site()
        if site is None:
            k_probs = self._fixed_k_probs()
        else:
            k = pyro.sample(site, self.K if k_prior is None else k_prior)
            k_probs = k if site == "K_probs" else k_probabilities(k, n)
            pyro.deterministic(
                "K_mean", (k_probs * torch.arange(1, n + 1, dtype=k_probs.dtype)).sum(-1)
            )
        weights = (
            pyro.sample("weights", self.weights)
            if isinstance(self.weights, dist.Distribution)
            else self.weights
        )
        alpha = hyperparameter("alpha", self.alpha) if self.paradigm == "partial" else None
        return C, t0, t0_sd, k_probs, weights, alpha

    def _item_weights(self, weights, alpha, targets, distractors):
        if self.paradigm == "whole":
            return weights, None
        if targets is None or distractors is None:
            raise ValueError("partial report needs data 'targets' and 'distractors' (T, N) bool")
        return _partial_weights(weights, alpha, targets, distractors)

    def model(self, exposure, reported=None, targets=None, distractors=None):
        """The Pyro program; see the class docstring for the data.

        Raises:
            ValueError: bad data (see :func:`report_log_prob`), or, with a fixed integer ``K``,
                a trial reporting more than ``K`` items (impossible under the model).
        """
        exposure = _check_exposure(exposure)
        n = self.num_locations
        if reported is not None:
            _check_report(reported, n)
            if isinstance(self.K, numbers.Integral) and bool((reported.sum(-1) > self.K).any()):
                raise ValueError(
                    f"a trial reports more than K={self.K} items, impossible with a fixed K; "
                    "raise K or give K a prior"
                )
        C, t0, t0_sd, k_probs, weights, alpha = self._params(
            *self._support_bounds(exposure, reported)
        )
        pyro.deterministic("attention_weights", weights / weights.sum(-1, keepdim=True))
        item_weights, reportable = self._item_weights(weights, alpha, targets, distractors)
        if reported is not None:
            if bool((reported & (item_weights.detach() <= 0)).any()):
                raise ValueError("reported contains an item at an empty location (weight 0)")
            if reportable is not None and bool((reported & ~reportable).any()):
                raise ValueError("reported contains an item that is not a target")
        t0, t0_sd = _check_t0(t0, t0_sd)
        num_trials = exposure.shape[0]
        with pyro.plate("trials", num_trials):
            d = TVAReport(
                exposure,
                C=C,
                weights=item_weights,
                t0=t0,
                k_probs=k_probs,
                t0_sd=t0_sd,
                reportable=reportable,
                num_nodes=self.num_nodes,
                validate_args=False,
            )
            return pyro.sample(self.obs_name, d.expand([num_trials]), obs=reported)

    def log_likelihood(self, draws: dict[str, torch.Tensor], data: dict) -> torch.Tensor:
        """Pointwise log-likelihood ``(D, T)``, vectorised over draws (in chunks of 64).

        Raises:
            ValueError: ``data`` lacks the observed reports.
        """
        reported = data.get(self.obs_name)
        if reported is None:
            raise ValueError("log_likelihood needs the observed 'reported' in data")
        n = self.num_locations
        exposure = _check_exposure(data["exposure"])
        out = []
        for chunk, num in draws_slices(draws, 64):
            C = fixed_or_draw(chunk, "C", self.C, num)[:, None]
            t0 = fixed_or_draw(chunk, "t0", self.t0, num)[:, None]
            t0_sd = fixed_or_draw(chunk, "t0_sd", self.t0_sd, num)[:, None]
            site = self._k_site()
            if site is None:
                k_probs = self._fixed_k_probs().expand(num, n)
            elif site == "K_probs":
                k_probs = torch.as_tensor(chunk["K_probs"], dtype=torch.float64)
            else:
                k_probs = k_probabilities(torch.as_tensor(chunk["K"], dtype=torch.float64), n)
            weights = fixed_or_draw(chunk, "weights", self.weights, num)
            alpha = (
                fixed_or_draw(chunk, "alpha", self.alpha, num)[:, None]
                if self.paradigm == "partial"
                else None
            )
            item_weights, reportable = self._item_weights(
                weights[:, None, :], alpha, data.get("targets"), data.get("distractors")
            )
            out.append(
                report_log_prob(
                    reported,
                    exposure,
                    C=C,
                    weights=item_weights,
                    t0=t0,
                    k_probs=k_probs[:, None, :],
                    t0_sd=None if not bool((t0_sd > 0).any()) else t0_sd,
                    reportable=reportable,
                    num_nodes=self.num_nodes,
                )
            )
        return torch.cat(out, 0)
