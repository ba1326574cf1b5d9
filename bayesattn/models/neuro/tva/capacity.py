"""TVA visual short-term memory capacity ``K`` as probabilities of ``K = 1..N``.

A fixed integer ``K`` is a point mass; a real ``K`` is a two-point mixture (so NUTS can move
through it); LibTVA's free distribution over ``1..N`` is given directly (Dyrholm et al. 2011).
"""

from __future__ import annotations

import numbers

import torch

from .._common import as_float_tensor

__all__ = ["k_probabilities"]


def k_probabilities(K, num_items: int, *, dtype=torch.float64) -> torch.Tensor:
    """VSTM capacity ``K`` as probabilities ``(..., N)`` of ``K = 1..N``.

    ``K`` is an integer in ``1..N`` (a point mass, shape ``(N,)``) or a real number/tensor
    ``(...)`` in ``[1, N]``: a non-integer capacity ``k`` is read as the two-point distribution
    ``P(K = floor k) = 1 - frac(k)``, ``P(K = floor k + 1) = frac(k)`` (mean ``k``; continuous
    and piecewise linear in ``k``, so NUTS can move through it; an integer-valued ``k`` is a
    point mass).

    Raises:
        TypeError: ``K`` is neither a number nor a tensor.
        ValueError: ``K`` outside ``1..N`` (or ``[1, N]``), or NaN.
    """
    if isinstance(K, bool) or not isinstance(K, numbers.Real | torch.Tensor):
        raise TypeError(f"K must be an int or a real in [1, N], got {type(K).__name__}")
    if isinstance(K, torch.Tensor) and not K.is_floating_point():
        if K.dim() != 0:
            K = K.to(dtype)
        else:
            K = int(K)
    if isinstance(K, numbers.Integral):
        k = int(K)
        if not 1 <= k <= num_items:
            raise ValueError(
                f"K (VSTM capacity) must be an integer in 1..N = 1..{num_items}, got {k}"
            )
        out = torch.zeros(num_items, dtype=dtype)
        out[k - 1] = 1.0
        return out
    K = as_float_tensor("K", K, dtype=dtype)
    kd = K.detach()
    if bool((kd < 1).any()) or bool((kd > num_items).any()):
        raise ValueError(f"K (VSTM capacity) must lie in [1, N] = [1, {num_items}], got {K}")
    lower = torch.clamp(torch.floor(kd), max=num_items - 1)  # K = N: all mass on N
    frac = (K - lower)[..., None]  # the gradient flows through frac
    idx = torch.arange(1, num_items + 1, dtype=K.dtype)
    low = (idx == lower[..., None]).to(K.dtype)
    high = (idx == lower[..., None] + 1).to(K.dtype)
    return (1 - frac) * low + frac * high


def _check_k_probs(k_probs, num_items: int) -> torch.Tensor:
    k_probs = as_float_tensor("k_probs", k_probs)
    if k_probs.dim() < 1 or k_probs.shape[-1] != num_items:
        raise ValueError(
            f"k_probs must have shape (..., N) = (..., {num_items}) (P(K=1..N)), "
            f"got {tuple(k_probs.shape)}"
        )
    kd = k_probs.detach()
    if bool((kd < 0).any()) or not bool(
        torch.allclose(kd.sum(-1), torch.ones((), dtype=kd.dtype), atol=1e-6)
    ):
        raise ValueError("k_probs (probabilities of K = 1..N) must be >= 0 and sum to 1")
    return k_probs


def _resolve_k(K, k_probs, num_items):
    if (K is None) == (k_probs is None):
        raise ValueError("give exactly one of K (capacity) and k_probs (probabilities of K=1..N)")
    return k_probabilities(K, num_items) if k_probs is None else _check_k_probs(k_probs, num_items)
