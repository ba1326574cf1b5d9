"""TVA attentional weights to processing rates (Bundesen 1990, eq. 1) and partial-report weights.

``v_x = C w_x / sum_z w_z``: the capacity ``C`` shared out by the normalised weights, which are
``softmax(log w)``. In partial report a distractor at location ``j`` has weight ``alpha w_j``.
"""

from __future__ import annotations

import torch

from .._common import as_float_tensor
from ._checks import _check_report, _check_weights

__all__ = ["processing_rates"]


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
    return _rates(C, weights)


def _rates(C: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """:func:`processing_rates` on trusted tensors (no checks)."""
    share = weights / weights.sum(-1, keepdim=True)  # = softmax(log w)
    return C[..., None] * share / 1000.0


def _partial_weights(weights, alpha, targets, distractors):
    """Partial-report item weights ``(..., N)`` and the reportable mask (the targets).

    A target at location ``j`` has weight ``weights[j]``, a distractor ``alpha * weights[j]``,
    an empty location 0 (Bundesen 1990; Duncan et al. 1999).

    Raises:
        TypeError: a mask is not a bool tensor.
        ValueError: masks of the wrong length; a location both target and distractor;
            ``alpha <= 0``; a display with no item.
    """
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
