"""Torch intra-op threads for a fit: a context manager that always restores the setting.

Small models (a few hundred observations) run several times faster on one torch thread: the
per-operation threading overhead dwarfs the arithmetic on tiny tensors (the issue measured
~30x for NUTS on the 133-point mcycle data on two cores). :func:`torch_threads` sets the count
for the duration of a fit and restores the previous one on exit, also on exceptions, so a fit
has no global side effect.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["SMALL_MODEL_ELEMENTS", "auto_num_threads", "torch_threads"]

#: a model whose pairwise size ``N * S`` (observations x memory items) is at most this runs
#: on one torch thread when ``num_threads=None``
SMALL_MODEL_ELEMENTS = 250_000


def auto_num_threads(model, data: dict, num_queries: int | None = None) -> int | None:
    """The thread count :func:`bayesattn.inference.fit` (and the predictions of
    :mod:`.predictive` and the estimator) use when the caller does not choose one.

    Rule: ``N`` = ``num_queries`` (a prediction at new queries) or else the rows of the
    observation ``data[model.obs_name]``, and ``S`` = rows of the model's memory (``model.key``
    when it has one, else the observation's rows); when ``N * S`` is at most
    :data:`SMALL_MODEL_ELEMENTS` (e.g. 500 x 500) the work runs on 1 thread, otherwise torch's
    current setting is kept (``None``).

    Returns:
        ``1`` or ``None`` (leave torch's setting alone).
    """
    obs = data.get(model.obs_name)
    rows = int(obs.shape[0]) if getattr(obs, "ndim", 0) else 1
    key = getattr(model, "key", None)
    s = int(key.shape[0]) if isinstance(key, torch.Tensor) and key.ndim else rows
    n = rows if num_queries is None else int(num_queries)
    return 1 if n * s <= SMALL_MODEL_ELEMENTS else None


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Run the body with ``torch.set_num_threads(num_threads)``; restore the old count after.

    Args:
        num_threads: a positive int, or ``None`` to leave the setting unchanged.

    Raises:
        ValueError: ``num_threads`` is not ``None`` nor a positive int.
    """
    if num_threads is None:
        yield
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
