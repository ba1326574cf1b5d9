r"""The exact TVA race likelihood of an encoded set.

The race (Bundesen 1990; ``docs/design.md``, section "Neuroscience-style models"). A display
holds ``N`` items (one per location). Item ``x`` has attentional weight ``w_x >= 0`` (0 = empty
location) and processing rate

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

import torch

from .._common import gauss_hermite
from ._cache import _cached
from ._logspace import _NEG_INF, _safe_log, _safe_logsumexp
from .sets import _codes, report_sets


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
