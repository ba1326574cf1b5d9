"""TVA report sets: the ``2^N`` subsets of a display of ``N`` items, as bool masks and codes.

The exact likelihood (:mod:`.race`) enumerates these subsets, so a display holds at most
:data:`MAX_ITEMS` items.
"""

from __future__ import annotations

import numbers
from functools import lru_cache

import torch

__all__ = ["MAX_ITEMS", "report_sets"]

#: Largest display the exact likelihood accepts (it enumerates the ``2^N`` subsets).
MAX_ITEMS = 10


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
    if (
        isinstance(num_items, torch.Tensor)
        and num_items.dim() == 0
        and not num_items.is_floating_point()
    ):
        num_items = int(num_items)  # a shape under the PyTorch JIT tracer
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


@lru_cache(maxsize=32)
def _popcount_table(num_items: int, device) -> torch.Tensor:
    """``|S|`` for every set code ``0..2^N - 1`` as int64 ``(2^N,)``."""
    return _report_sets(num_items, device).sum(-1)
