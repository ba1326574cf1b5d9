"""Public TVA report log-probabilities: general, whole report and partial report.

Validates the arguments, converts weights to rates and evaluates the exact race likelihood of
:mod:`.race`; in partial report the encoded but unreported distractors are summed out exactly.
Identical ``(report, exposure)`` trials are evaluated once.
"""

from __future__ import annotations

import torch

from ._checks import _check_exposure, _check_report, _check_t0, _check_t0_dist, _check_weights
from .capacity import _resolve_k, _with_k0
from .race import _cached_plan, _race_log_prob
from .rates import _partial_weights, processing_rates

__all__ = ["report_log_prob", "whole_report_log_prob", "partial_report_log_prob"]


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
    num_nodes: int | None = None,
    t0_dist: str = "normal",
) -> torch.Tensor:
    """Log-probability ``(...)`` of a report under the TVA race (general form).

    Args:
        reported: bool ``(..., N)``, True where the item was reported.
        exposure: exposure duration ``(...)`` in ms.
        C: processing capacity (items/s), broadcasting to ``(...)``.
        weights: attentional weights of the items on each trial, ``(..., N)`` or ``(N,)``;
            0 marks an empty location. Normalised inside.
        t0: perception threshold (ms), broadcasting to ``(...)``: fixed, the mean ``mu0`` of a
            Gaussian threshold (``t0_sd > 0``) or the mean of an exponential one.
        K: VSTM capacity: an int in ``1..N``, a real in ``[1, N]`` (:func:`k_probabilities`), or
            a ``K`` distribution -- a probability tensor ``(..., N)`` over ``1..N`` or
            ``(..., N+1)`` over ``0..N`` (e.g. :func:`k_probit_probabilities`), or a
            ``torch.distributions.Categorical`` over ``0..N``/``1..N``.
        k_probs: instead of ``K``, probabilities ``(..., N)`` of ``K = 1..N`` or ``(..., N+1)``
            of ``K = 0..N``.
        t0_sd: trial-to-trial standard deviation ``sigma0`` of a Gaussian ``t0`` (ms); 0 =
            fixed ``t0``.
        reportable: bool ``(..., N)``, items that are reported when encoded (targets); the others
            (distractors) are marginalised. None = every item is reportable (whole report).
        num_nodes: ignored; kept so that old calls still work (the random threshold is
            integrated in closed form, :mod:`.threshold`).
        t0_dist: ``"normal"`` (fixed when ``t0_sd = 0``, else ``t0 ~ N(t0, t0_sd^2)`` on the
            real line, the StanTVA convention: the mass ``t0 >= exposure`` encodes nothing) or
            ``"exponential"`` (``t0 ~ Exp`` with mean ``t0 > 0``; ``t0_sd`` must be 0).

    Returns:
        ``log P(reported)`` of shape ``(...)`` (module docstring; Kyllingsbaek 2006,
        Dyrholm et al. 2011).

    Raises:
        TypeError: ``reported`` is not a bool tensor; a parameter is not a number or tensor.
        ValueError: ``reported`` does not have ``N`` items; more than ``MAX_ITEMS`` items;
            negative ``exposure``; ``K`` outside ``1..N``, or both/neither of ``K`` and
            ``k_probs``, or ``k_probs`` not a distribution over ``1..N``; ``C`` not positive;
            negative or all-zero weights; negative ``t0_sd``; a reported item that is not
            reportable or has weight 0; ``t0_dist`` unknown, or exponential with ``t0 <= 0`` or
            ``t0_sd > 0``.
    """
    weights = _check_weights(weights)
    num = weights.shape[-1]
    reported = _check_report(reported, num)
    exposure = _check_exposure(exposure)
    t0, t0_sd = _check_t0(t0, t0_sd)
    _check_t0_dist(t0_dist, t0, t0_sd)
    k_probs = _resolve_k(K, k_probs, num)
    rates = processing_rates(C, weights)
    if bool((reported & (weights.detach() <= 0)).any()):
        raise ValueError("reported contains an item at an empty location (weight 0)")
    if reportable is not None:
        reportable = _check_report(reportable, num, name="reportable")
        if bool((reported & ~reportable).any()):
            raise ValueError("reported contains an item that is not reportable (a distractor)")
    return _report_log_prob(
        reported, exposure, rates, k_probs, t0, t0_sd, reportable, num_nodes, t0_dist
    )


def _report_log_prob(
    reported, exposure, rates, k_probs, t0, t0_sd, reportable, num_nodes=None, t0_dist="normal"
):
    """:func:`report_log_prob` on validated tensors (``rates`` in items/ms).

    ``k_probs (..., N)`` over ``K = 1..N`` or ``(..., N+1)`` over ``K = 0..N``; ``t0_sd`` None
    for a fixed threshold; ``num_nodes`` is ignored (kept for old callers: the threshold is
    integrated in closed form).
    """
    num = int(rates.shape[-1])
    k_probs = _with_k0(k_probs, num)
    kind = "fixed" if t0_sd is None and t0_dist == "normal" else t0_dist
    present = rates.detach() > 0
    data_shape = reported.shape[:-1]
    if reportable is not None:
        data_shape = torch.broadcast_shapes(data_shape, reportable.shape[:-1])
    shapes = [data_shape, exposure.shape, rates.shape[:-1], k_probs.shape[:-1], t0.shape]
    if t0_sd is not None:
        shapes.append(t0_sd.shape)
    batch = torch.broadcast_shapes(*shapes)
    nd = len(data_shape)
    if nd and tuple(batch[len(batch) - nd :]) == tuple(data_shape):
        lead = batch[: len(batch) - nd]  # parameter-only dimensions (e.g. posterior draws)
        rep = reported
        able = reportable
    else:  # general broadcasting: expand the data to the full batch
        lead = torch.Size()
        rep = reported.expand(*batch, num)
        able = None if reportable is None else reportable.expand(*batch, num)
        data_shape = batch
    rows = int(torch.Size(data_shape).numel())
    rep_flat = rep.expand(*data_shape, num).reshape(rows, num)
    pres = present.expand(*batch, num).reshape(-1, rows, num).any(0)
    if able is None:
        hidden = torch.zeros_like(rep_flat)
    else:
        hidden = ~able.expand(*data_shape, num).reshape(rows, num) & pres
    plan = _cached_plan(rep_flat, hidden)

    def flat(x, *event):
        return x.expand(torch.Size([*batch, *event])).reshape(*lead, rows, *event)

    lp = _race_log_prob(
        plan,
        rep_flat,
        flat(rates, num),
        flat(k_probs, num + 1),
        flat(exposure),
        flat(t0),
        None if t0_sd is None else flat(t0_sd),
        kind,
    )
    return lp.reshape(batch)


def whole_report_log_prob(
    reported,
    exposure,
    *,
    C,
    weights,
    t0,
    K=None,
    k_probs=None,
    t0_sd=0.0,
    num_nodes=None,
    t0_dist="normal",
):
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
        K: VSTM capacity, an int in ``1..N``, a real capacity (:func:`k_probabilities`) or a
            ``K`` distribution: probabilities ``(..., N)`` over ``1..N`` or ``(..., N+1)`` over
            ``0..N`` (as :func:`report_log_prob`).
        k_probs: instead of ``K``, the probabilities of ``K`` (``(..., N)`` or ``(..., N+1)``).
        t0_sd: trial-to-trial sd of ``t0`` in ms (Dyrholm et al. 2011); 0 = fixed.
        num_nodes: ignored (kept for old calls; the threshold is integrated in closed form).
        t0_dist: ``"normal"`` or ``"exponential"`` (:func:`report_log_prob`).

    Returns:
        Tensor ``(...)``: ``log P(reported | exposure)``; ``-inf`` for impossible reports (more
        than ``K`` items, or any item when ``exposure <= t0``).

    Raises:
        TypeError: ``reported`` is neither a bool nor an integer 0/1 tensor.
        ValueError: ``reported`` has a different number of items than ``weights`` (a report
            longer than the display) or holds values other than 0/1; ``exposure < 0``; ``K``
            outside ``1..N``, both or neither of ``K`` and ``k_probs``; ``C <= 0``; negative or
            all-zero weights; ``N > MAX_ITEMS``.
    """
    return report_log_prob(
        reported,
        exposure,
        C=C,
        weights=weights,
        t0=t0,
        K=K,
        k_probs=k_probs,
        t0_sd=t0_sd,
        num_nodes=num_nodes,
        t0_dist=t0_dist,
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
    num_nodes=None,
    t0_dist="normal",
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
            t0_dist: as in :func:`report_log_prob`. num_nodes: ignored (old calls).

    Only the encoded sets consistent with the report are visited (``S = R u D``, ``D`` any
    subset of the present distractors), vectorised over trials (:func:`.race._plan`).

    Returns:
        Tensor ``(...)`` of log-probabilities.

    Raises:
        TypeError: a mask is neither a bool nor an integer 0/1 tensor.
        ValueError: masks of the wrong length or with values other than 0/1; a location both
            target and distractor; a reported item that is not a target; ``alpha <= 0``; and
            the errors of :func:`whole_report_log_prob`.
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
        t0_dist=t0_dist,
    )
