"""Simulation of TVA whole- and partial-report trials, and the standard study designs."""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import _check_exposure, _check_report, _check_t0, _check_t0_dist, _check_weights
from .capacity import _resolve_k
from .rates import _partial_weights, processing_rates

__all__ = [
    "simulate_report",
    "simulate_whole_report",
    "simulate_partial_report",
    "whole_report_design",
    "partial_report_design",
]


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
    t0_dist: str = "normal",
) -> torch.Tensor:
    """Simulate the TVA race trial by trial; returns the reported set, bool ``(..., N)``.

    Draws ``T_x ~ Exp(v_x)`` (``v`` from :func:`processing_rates`), ``t0`` per trial
    (``N(t0, t0_sd^2)`` when ``t0_sd > 0``) and ``K`` per trial (from
    :func:`k_probabilities`, or ``k_probs`` over ``0..N`` / ``1..N``; with
    ``t0_dist="exponential"`` the threshold is exponential with mean ``t0``); encodes the first
    ``K`` items with ``t0 + T_x < exposure`` and reports the encoded items that are
    ``reportable``. Arguments as in
    :func:`report_log_prob`; the batch shape is that of ``exposure`` broadcast with the
    parameters.

    Raises:
        ValueError: the argument errors of :func:`report_log_prob`.
    """
    weights = _check_weights(weights)
    num = weights.shape[-1]
    exposure = _check_exposure(exposure)
    t0, t0_sd = _check_t0(t0, t0_sd)
    _check_t0_dist(t0_dist, t0, t0_sd)
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
        if t0_dist == "exponential":
            e0 = -torch.log1p(-torch.rand(batch, generator=generator, dtype=rates.dtype))
            t0_trial = t0_trial * e0
        elif t0_sd is not None:
            z = torch.randn(batch, generator=generator, dtype=rates.dtype)
            t0_trial = t0_trial + t0_sd * z
        finish = finish + t0_trial[..., None]
        order = torch.argsort(finish, dim=-1)
        rank = torch.argsort(order, dim=-1)
        cdf = torch.cumsum(k_probs.expand(*batch, num + 1), -1)
        uk = torch.rand((*batch, 1), generator=generator, dtype=rates.dtype)
        k_trial = (uk > cdf).sum(-1).clamp(max=num)  # categorical over 0..N
        encoded = (finish < exposure.expand(batch)[..., None]) & (rank < k_trial[..., None])
        if reportable is not None:
            reportable = _check_report(reportable, num, name="reportable")
            encoded = encoded & reportable
        return encoded


def simulate_whole_report(
    exposure,
    *,
    C,
    weights,
    t0,
    K=None,
    k_probs=None,
    t0_sd=0.0,
    generator: torch.Generator | None = None,
    t0_dist: str = "normal",
) -> torch.Tensor:
    """Simulate TVA whole report: bool ``(..., N)`` of reported items per trial.

    Args as in :func:`whole_report_log_prob`; ``exposure (...)`` in ms sets the number of
    trials. ``generator`` seeds the draws.

    Raises:
        ValueError: the argument errors of :func:`whole_report_log_prob`.
    """
    return simulate_report(
        exposure,
        C=C,
        weights=weights,
        t0=t0,
        K=K,
        k_probs=k_probs,
        t0_sd=t0_sd,
        generator=generator,
        t0_dist=t0_dist,
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
    t0_dist: str = "normal",
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
        t0_dist=t0_dist,
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


def partial_report_design(
    num_locations: int = 6,
    *,
    exposures=(16.6, 33.3, 50.0, 100.0, 150.0, 200.0),
    distractor_counts=(2, 3, 4),
    distractor_exposure: float = 150.0,
    trials_per_cell: int = 13,
    generator: torch.Generator | None = None,
):
    """One condition of a combined whole/partial-report session: ``(exposure, targets,
    distractors)``, ``(T,)`` ms and bool ``(T, N)``.

    ``trials_per_cell`` trials at each exposure with a target at every location and no
    distractor, then ``trials_per_cell`` trials for each count in ``distractor_counts`` at
    ``distractor_exposure`` with that many distractors at random locations (uniform without
    replacement, from ``generator``) and targets elsewhere. The default is the design of a
    published-style TVA study (issue 12; Bundesen 1990, Duncan et al. 1999): 6 x 13 + 3 x 13 =
    117 trials.

    Raises:
        ValueError: ``trials_per_cell`` not a positive int; a distractor count outside
            ``0..N``; a negative exposure.
    """
    from .sets import _check_num_items

    num = _check_num_items(num_locations)
    if (
        isinstance(trials_per_cell, bool)
        or not isinstance(trials_per_cell, numbers.Integral)
        or trials_per_cell < 1
    ):
        raise ValueError(f"trials_per_cell must be a positive int, got {trials_per_cell!r}")
    for d in distractor_counts:
        if not 0 <= int(d) <= num:
            raise ValueError(f"distractor_counts must lie in 0..{num}, got {d}")
    m = int(trials_per_cell)
    exp = [float(e) for e in exposures for _ in range(m)]
    distractors = [torch.zeros(num, dtype=torch.bool) for _ in exp]
    for d in distractor_counts:
        for _ in range(m):
            mask = torch.zeros(num, dtype=torch.bool)
            mask[torch.randperm(num, generator=generator)[: int(d)]] = True
            distractors.append(mask)
            exp.append(float(distractor_exposure))
    exposure = _check_exposure(torch.tensor(exp, dtype=torch.float64))
    distractors = torch.stack(distractors)
    return exposure, ~distractors, distractors
