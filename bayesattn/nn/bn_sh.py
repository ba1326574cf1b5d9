"""Attention-BN and Attention-SH (Nguyen et al., ICLR 2023, arXiv 2406.13781): the batch-
normalised query and the per-head key/value pooling used by :class:`bayesattn.nn.AttentionBN`,
:class:`bayesattn.nn.AttentionSH` and :class:`bayesattn.nn.AttentionBNSH`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["batch_normalized_query", "scaled_heads_pool", "default_ratios"]


def batch_normalized_query(
    query: torch.Tensor,
    key: torch.Tensor,
    allowed: torch.Tensor | None = None,
    *,
    mean_weight: float = 1.0,
    eps: float = 1e-5,
) -> torch.Tensor:
    """The query of Attention-BN: ``q~_i = (q_i - w mu_i) / (s_i^2 + eps)`` (elementwise).

    Attention-BN standardises queries and keys with the per-feature mean ``mu`` and (biased)
    variance ``s^2`` of the keys and takes the dot product:
    ``l_ij = sum_f (q_if - w mu_f) (k_jf - mu_f) / (s_f^2 + eps)``. Expanding,
    ``l_ij = q~_i . k_j - q~_i . mu``; the second term is the same for every key of query
    ``i`` and cancels in the softmax, so softmax attention with ``q~`` and the *raw* keys is
    exactly softmax attention with both standardised. Our reading of Attention-BN (Nguyen et
    al., ICLR 2023, arXiv 2406.13781, section 3: the SVR whose primal layer is batch-normalised);
    in the key-selection model of docs/design.md, "Key-selection models" a diagonal (ARD) Gaussian
    kernel with precision ``1 / s^2`` centred on the key mean.

    The statistics of query ``i`` are those of the keys it may attend to (``allowed``): all real
    keys of its sequence under padding alone; its past under a causal mask (so no information
    flows from masked keys).

    Args:
        query: ``(..., L, d)``.
        key: ``(..., S, d)``.
        allowed: bool, broadcastable to ``(..., L, S)``; True where a query may attend
            (default all).
        mean_weight: ``w``, weight of the mean term (1 = full centring, 0 = scaling only).
        eps: added to the variance.

    Returns:
        ``q~`` with the shape of ``query``; a query with no allowed key gets ``q / eps`` (its
        output is 0 anyway).
    """
    if allowed is None:
        mu = key.mean(-2, keepdim=True)
        var = (key - mu).pow(2).mean(-2, keepdim=True)
    else:
        a = allowed.to(key.dtype)
        n = a.sum(-1, keepdim=True).clamp_min(1.0)
        mu = (a @ key) / n
        var = ((a @ (key * key)) / n - mu * mu).clamp_min(0.0)
    return (query - mean_weight * mu) / (var + eps)


def scaled_heads_pool(
    key: torch.Tensor,
    value: torch.Tensor,
    ratio: int,
    key_valid: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
):
    """Mean-pool keys and values along the sequence in windows of ``ratio`` (Attention-SH).

    Window ``m`` covers keys ``m r .. m r + r - 1`` (the last window may be shorter). A pooled
    key/value is the mean of the *real* keys/values in its window; a window with none is
    padded. A query may attend to a pooled key iff it may attend to every real key of the
    window (so a causal mask stays causal). Our reading of Attention-SH (Nguyen et al., ICLR
    2023, arXiv 2406.13781): each head fits its SVR on fewer training points (keys), here
    ``ceil(S / r)`` window means; in the key-selection model, a compressed memory.

    Args:
        key: ``(N, h, S, d)``.
        value: ``(N, h, S, dv)``.
        ratio: positive int window length ``r``.
        key_valid: bool ``(N, 1, S)`` (or broadcastable), True for real keys.
        allowed: bool ``(N|1, h|1, L, S)``, True where a query may attend.

    Returns:
        ``(key (N, h, M, d), value (N, h, M, dv), pooled_valid (N|1, 1|h, M),
        pooled_allowed (..., L, M) or None, spread (N, 1|h, S))`` with ``M = ceil(S / r)``;
        ``spread[..., j]`` is the share of pooled key ``j // r`` that key ``j`` carries, so
        that the weights on the original keys are ``w_pooled[..., j // r] * spread[..., j]``.
    """
    S = key.shape[-2]
    M = math.ceil(S / ratio)
    pad = M * ratio - S
    if key_valid is None:
        key_valid = torch.ones(1, 1, S, dtype=torch.bool, device=key.device)
    valid = F.pad(key_valid.to(key.dtype), (0, pad))  # (N, 1, S + pad)
    kw = F.pad(key, (0, 0, 0, pad)).unflatten(-2, (M, ratio))
    vw = F.pad(value, (0, 0, 0, pad)).unflatten(-2, (M, ratio))
    vwin = valid.unflatten(-1, (M, ratio))  # (N, 1, M, r)
    count = vwin.sum(-1)  # (N, 1, M)
    denom = count.clamp_min(1.0).unsqueeze(-1)
    pooled_k = (kw * vwin.unsqueeze(-1)).sum(-2) / denom
    pooled_v = (vw * vwin.unsqueeze(-1)).sum(-2) / denom
    pooled_valid = count > 0
    spread = (vwin / count.clamp_min(1.0).unsqueeze(-1)).flatten(-2)[..., :S]
    pooled_allowed = None
    if allowed is not None:
        ok = allowed | ~key_valid.unsqueeze(-2).to(torch.bool)
        ok = F.pad(ok, (0, pad), value=True).unflatten(-1, (M, ratio)).all(-1)
        pooled_allowed = ok & pooled_valid.unsqueeze(-2)
    return pooled_k, pooled_v, pooled_valid, pooled_allowed, spread


def default_ratios(num_heads: int) -> tuple[int, ...]:
    """Half the heads see every key (ratio 1), the other half window means of 2 keys."""
    return tuple(1 if h < (num_heads + 1) // 2 else 2 for h in range(num_heads))
