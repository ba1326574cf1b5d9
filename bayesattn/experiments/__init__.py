"""Runnable studies behind the CLI: the mcycle demo, the neuro demo, the UEA benchmark."""

from __future__ import annotations

import contextlib
import inspect

__all__ = ["fit_threads"]


@contextlib.contextmanager
def _torch_threads(num: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fit_threads():
    """Context manager for the studies' small fits: one torch thread inside the block, the
    previous count restored after it; a no-op once :func:`bayesattn.inference.fit` sets its own
    thread count (its ``num_threads`` argument). Never changes the count outside the block."""
    from ..inference import fit

    if "num_threads" in inspect.signature(fit).parameters:
        return contextlib.nullcontext()
    return _torch_threads(1)
