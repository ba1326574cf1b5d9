"""Experimental conditions in the TVA models: which parameters vary, and per-trial gathering.

A study runs every subject under several conditions (e.g. cue valid/invalid); some TVA
parameters may differ between conditions (Bundesen 1990; the per-condition parameters of
StanTVA/RStanTVA, Tuennermann, Krueger & Scharlau 2021). A parameter that varies carries a
condition axis just before its event dims; each trial reads the copy of its condition.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

__all__ = ["CONDITION_GROUPS"]

#: the names ``by_condition`` accepts, and the sites each one covers
CONDITION_GROUPS: dict[str, tuple[str, ...]] = {
    "C": ("C",),
    "alpha": ("alpha",),
    "weights": ("weights",),
    "K": ("mK", "sK", "K_probs", "K"),
    "t0": ("t0", "t0_sd"),
}


def _check_conditions(conditions, by_condition: Sequence[str]):
    """``(conditions, by_condition)`` validated: a positive int and a tuple of group names.

    Raises:
        ValueError: ``conditions`` is not a positive int; ``by_condition`` is a string, names
            an unknown parameter or names one twice.
    """
    if isinstance(conditions, bool) or not isinstance(conditions, numbers.Integral):
        raise ValueError(f"conditions must be a positive int, got {conditions!r}")
    if conditions < 1:
        raise ValueError(f"conditions must be a positive int, got {conditions}")
    if isinstance(by_condition, str):
        raise ValueError(
            f"by_condition must be a sequence of names such as ('C', 'weights'), got the string "
            f"{by_condition!r}"
        )
    groups = tuple(by_condition)
    for g in groups:
        if g not in CONDITION_GROUPS:
            raise ValueError(
                f"by_condition names unknown parameter {g!r}; choose among "
                f"{', '.join(CONDITION_GROUPS)}"
            )
    if len(set(groups)) != len(groups):
        raise ValueError(f"by_condition names a parameter twice: {groups}")
    return int(conditions), groups


def _condition_index(condition, num_trials: int, conditions: int) -> torch.Tensor:
    """The condition of each trial as int64 ``(T,)``; zeros when ``condition`` is None.

    Raises:
        ValueError: ``condition`` is None although ``conditions > 1``; not of shape ``(T,)``;
            values outside ``0..conditions-1``.
        TypeError: ``condition`` is not an integer tensor.
    """
    return _index("condition", condition, num_trials, conditions)


def _index(name: str, index, num_trials: int, size: int) -> torch.Tensor:
    if index is None:
        if size > 1:
            raise ValueError(
                f"{name} (T,) int64 in 0..{size - 1} is needed: the model has {size} {name}s"
            )
        return torch.zeros(num_trials, dtype=torch.long)
    if (
        not isinstance(index, torch.Tensor)
        or index.is_floating_point()
        or index.is_complex()
        or index.dtype == torch.bool
    ):
        raise TypeError(
            f"{name} must be an int64 tensor (T,), got {getattr(index, 'dtype', index)}"
        )
    if index.shape != (num_trials,):
        raise ValueError(f"{name} must have shape (T,) = ({num_trials},), got {tuple(index.shape)}")
    index = index.long()
    if num_trials and (int(index.min()) < 0 or int(index.max()) >= size):
        raise ValueError(
            f"{name} must lie in 0..{size - 1}, got values in "
            f"{int(index.min())}..{int(index.max())}"
        )
    return index


def _gather(x, index: torch.Tensor, event_dims: int, varies: bool):
    """Per-trial values ``(..., T, *event)`` of ``x (..., C, *event)`` (``varies``) or
    ``(..., 1, *event)`` of a shared ``x (..., *event)``; None stays None."""
    if x is None:
        return None
    if varies:
        return x.index_select(x.dim() - 1 - event_dims, index)
    return x.unsqueeze(x.dim() - event_dims)


def _per_condition(values: torch.Tensor, index: torch.Tensor, size: int, reduce: str, fill):
    """``values (T,)`` reduced (``"amin"``/``"amax"``) per condition ``(size,)``; ``fill`` where a
    condition has no trial."""
    out = torch.full((size,), float(fill), dtype=torch.float64)
    return out.scatter_reduce(0, index, values.to(torch.float64), reduce=reduce)
