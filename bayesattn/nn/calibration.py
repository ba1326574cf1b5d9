"""Post-hoc calibration of a classifier: temperature scaling (Guo et al., ICML 2017)."""

from __future__ import annotations

import math

import torch

__all__ = ["fit_temperature"]


def fit_temperature(
    logits: torch.Tensor, y: torch.Tensor, *, log_range: float = 4.0, steps: int = 1601
) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on held-out data.

    Temperature scaling (Guo, Pleiss, Sun & Weinberger, ICML 2017, section 4.2): one scalar
    fitted on a validation set, accuracy unchanged. The NLL is minimised over a grid of
    ``steps`` values of ``log T`` evenly spaced on ``[-log_range, log_range]`` (a dense grid
    rather than a local optimiser, so the answer is deterministic and never diverges when
    the validation set is separable: then the smallest ``T`` of the grid is returned).

    Args:
        logits: ``(N, C)`` unnormalised log-probabilities (log-probabilities work too).
        y: ``(N,)`` int64 labels.
        log_range: half-width of the grid of ``log T`` (nats).
        steps: grid points (odd includes ``T = 1``).

    Returns:
        ``T > 0`` (float).

    Raises:
        ValueError: ``logits`` not ``(N, C)`` finite floats; ``y`` not ``(N,)`` labels in
            range; non-positive ``log_range`` or ``steps < 2``.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point tensor of shape (N, C)")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contains NaN or inf")
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (logits.shape[0],) or \
            y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"y must be an integer tensor of shape ({logits.shape[0]},)")
    if bool((y < 0).any()) or bool((y >= logits.shape[1]).any()):
        raise ValueError(f"y must hold class indices in 0..{logits.shape[1] - 1}")
    if not (math.isfinite(log_range) and log_range > 0) or not (isinstance(steps, int)
                                                                 and steps >= 2):
        raise ValueError("log_range must be positive and steps an int >= 2")
    log_t = torch.linspace(-log_range, log_range, steps, dtype=torch.float64)
    z = logits.double().unsqueeze(0) / log_t.exp().view(-1, 1, 1)  # (G, N, C)
    nll = -z.log_softmax(-1).gather(-1, y.long().view(1, -1, 1).expand(steps, -1, 1)).mean(
        (1, 2))
    return float(log_t[int(torch.argmin(nll))].exp())
