"""Public TVA report log-probabilities: general, whole report and partial report.

Validates the arguments, converts weights to rates and evaluates the exact race likelihood of
:mod:`.race`; in partial report the encoded but unreported distractors are summed out exactly.
Identical ``(report, exposure)`` trials are evaluated once.
"""

from __future__ import annotations

import torch

from ._cache import _cached
from ._checks import _check_exposure, _check_report, _check_t0, _check_weights
from ._logspace import _NEG_INF, _safe_logsumexp
from .capacity import _resolve_k
from .race import _inclusion_coefficients, _with_t0
from .rates import _partial_weights, processing_rates
from .sets import _codes, report_sets

__all__ = ["report_log_prob", "whole_report_log_prob", "partial_report_log_prob"]

_UNIQUE_CACHE: dict = {}


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
