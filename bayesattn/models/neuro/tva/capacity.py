r"""TVA visual short-term memory capacity ``K`` as probabilities over ``K = 0..N`` (or ``1..N``).

A fixed integer ``K`` is a point mass; a real ``K`` is a two-point mixture (so NUTS can move
through it); LibTVA's free distribution over ``1..N`` (or ``0..N``) is given directly (Dyrholm et
al. 2011); the probit capacity of StanTVA/RStanTVA (Tuennermann, Krueger & Scharlau 2021) is
:func:`k_probit_probabilities`.

Probability vectors of length ``N`` are over ``K = 1..N`` (the original convention, kept); of
length ``N + 1`` over ``K = 0..N`` (``K = 0``: nothing is encoded).
"""

from __future__ import annotations

import functools
import math
import numbers

import torch

from .._common import as_float_tensor, ndtr

__all__ = ["k_probabilities", "k_probit_probabilities"]


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


@functools.cache
def _probit_grid(num: int, dtype, device) -> tuple:
    """The category bounds of :func:`k_probit_probabilities`, ``-inf, 1, ..., N, +inf`` (as
    ``cuts`` where finite, else ``ends``: ``Phi(-inf) = 0``, ``Phi(inf) = 1`` exactly, with no
    gradient through them), and where each category sits (``k + 1/2``). Cached, so that a traced
    graph holds them as constants."""
    cuts = torch.tensor([0.0, *range(1, num + 1), 0.0], dtype=dtype, device=device)
    ends = torch.tensor([-math.inf, *([0.0] * num), math.inf], dtype=dtype, device=device)
    mid = torch.tensor([k + 0.5 for k in range(num + 1)], dtype=dtype, device=device)
    return cuts, ends, torch.isfinite(ends), mid


def k_probit_probabilities(mK, sK, num_items: int) -> torch.Tensor:
    r"""Probit VSTM capacity: ``P(K = k)``, ``k = 0..N``, for ``K = floor(X)`` clipped to ``0..N``.

    ``X ~ N(mK, sK^2)`` and ``K = min(N, max(0, floor(X)))`` (the StanTVA/RStanTVA convention;
    Tuennermann, Krueger & Scharlau 2021): for ``0 < k < N``

    .. math:: P(K = k) = \Phi\bigl(\tfrac{k + 1 - m_K}{s_K}\bigr)
              - \Phi\bigl(\tfrac{k - m_K}{s_K}\bigr),

    the bottom category takes the lower tail, ``P(K = 0) = Phi((1 - mK) / sK)``, and the top the
    upper tail, ``P(K = N) = 1 - Phi((N - mK) / sK)``. ``K = 0`` (nothing encoded) is included.
    Differentiable in ``mK`` and ``sK``; each probability is a difference of CDFs taken on the
    side of the median where it does not cancel (``Phi(b) - Phi(a) = Phi(-a) - Phi(-b)``).

    Args:
        mK: mean of the latent capacity (items), a number or tensor ``(...)``.
        sK: its standard deviation (items, > 0), broadcasting with ``mK``.
        num_items: display size ``N``.

    Returns:
        Tensor ``(..., N + 1)``: ``P(K = 0), ..., P(K = N)``; non-negative, sums to 1.

    Raises:
        ValueError: ``sK <= 0``; ``mK``/``sK`` NaN or inf; ``num_items`` outside ``1..MAX_ITEMS``.
        TypeError: ``mK`` or ``sK`` is not a number or tensor.
    """
    from .sets import _check_num_items

    num = _check_num_items(num_items)
    mK = as_float_tensor("mK", mK)
    sK = as_float_tensor("sK", sK)
    if bool((sK.detach() <= 0).any()):
        raise ValueError(f"sK (sd of the probit capacity, items) must be positive, got {sK}")
    mK, sK = torch.broadcast_tensors(mK, sK)
    cuts, ends, inner, mid = _probit_grid(num, mK.dtype, mK.device)
    z = torch.where(inner, (cuts - mK[..., None]) / sK[..., None], ends)  # (..., N + 2)
    below, above = ndtr(z), ndtr(-z)  # P(X < bound), P(X >= bound)
    left = mid < mK[..., None]  # below the median: differences of the lower tail, else upper
    return torch.where(left, below[..., 1:] - below[..., :-1],
                       above[..., :-1] - above[..., 1:]).clamp_min(0.0)


def _with_k0(k_probs: torch.Tensor, num_items: int) -> torch.Tensor:
    """Probabilities ``(..., N+1)`` over ``K = 0..N`` from ``(..., N)`` (1..N) or ``(..., N+1)``."""
    if k_probs.shape[-1] == num_items + 1:
        return k_probs
    return torch.cat([torch.zeros_like(k_probs[..., :1]), k_probs], -1)


def _check_k_probs(k_probs, num_items: int) -> torch.Tensor:
    """Validated probabilities over ``K = 0..N``, ``(..., N+1)`` (a length-``N`` input is over
    ``K = 1..N`` and gets ``P(K = 0) = 0``)."""
    k_probs = as_float_tensor("k_probs", k_probs)
    if k_probs.dim() < 1 or k_probs.shape[-1] not in (num_items, num_items + 1):
        raise ValueError(
            f"k_probs must have shape (..., N) = (..., {num_items}) (P(K=1..N)) or "
            f"(..., N+1) = (..., {num_items + 1}) (P(K=0..N)), got {tuple(k_probs.shape)}"
        )
    kd = k_probs.detach()
    if bool((kd < 0).any()) or not bool(
        torch.allclose(kd.sum(-1), torch.ones((), dtype=kd.dtype), atol=1e-6)
    ):
        raise ValueError("k_probs (probabilities of K) must be >= 0 and sum to 1")
    return _with_k0(k_probs, num_items)


def _resolve_k(K, k_probs, num_items):
    """``(..., N+1)`` probabilities of ``K = 0..N`` from ``K`` or ``k_probs`` (exactly one).

    ``K`` may also be a probability tensor ``(..., N)``/``(..., N+1)`` whose last dimension is
    not a batch of real capacities: a floating tensor with ``dim >= 1`` whose last axis has
    length ``N`` or ``N + 1`` and sums to 1 is read as ``k_probs`` (a ``K`` distribution).
    """
    if (K is None) == (k_probs is None):
        raise ValueError("give exactly one of K (capacity) and k_probs (probabilities of K)")
    if isinstance(K, torch.distributions.Categorical):
        K = K.probs.to(torch.float64)
    if k_probs is None and _looks_like_probs(K, num_items):
        k_probs, K = K, None
    if k_probs is None:
        return _with_k0(k_probabilities(K, num_items), num_items)
    return _check_k_probs(k_probs, num_items)


def _looks_like_probs(K, num_items) -> bool:
    if not isinstance(K, torch.Tensor) or not K.is_floating_point() or K.dim() < 1:
        return False
    if K.shape[-1] not in (num_items, num_items + 1):
        return False
    kd = K.detach()
    return bool((kd >= 0).all()) and bool(
        torch.allclose(kd.sum(-1), torch.ones((), dtype=kd.dtype), atol=1e-6)
    )
