"""The in-projection and head split of multi-head attention (Vaswani et al. 2017, section
3.2.2), shared by :class:`bayesattn.nn.MultiheadAttention` and
:class:`bayesattn.nn.BayesianMultiheadAttention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["in_projection", "split_heads"]


def in_projection(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    embed_dim: int,
    in_proj_weight: torch.Tensor | None,
    in_proj_bias: torch.Tensor | None,
    q_proj_weight: torch.Tensor | None = None,
    k_proj_weight: torch.Tensor | None = None,
    v_proj_weight: torch.Tensor | None = None,
):
    """``(Q W_Q^T + b_Q, K W_K^T + b_K, V W_V^T + b_V)`` with torch's parameter layout.

    The weights are the three ``embed_dim``-row blocks of ``in_proj_weight`` (packed, as
    :class:`torch.nn.MultiheadAttention` with ``kdim == vdim == embed_dim``) or, when it is
    None, ``q/k/v_proj_weight``; the biases the three blocks of ``in_proj_bias`` (or none).

    Equivalent to::

        w_q, w_k, w_v = in_proj_weight.split(embed_dim)
        b_q, b_k, b_v = in_proj_bias.split(embed_dim)
        F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    Args:
        query: ``(..., L, E)``; key ``(..., S, kdim)``; value ``(..., S, vdim)``.
        embed_dim: ``E``.
        in_proj_weight: ``(3 E, E)`` or None.
        in_proj_bias: ``(3 E,)`` or None.
        q_proj_weight, k_proj_weight, v_proj_weight: ``(E, E)``, ``(E, kdim)``,
            ``(E, vdim)`` when ``in_proj_weight`` is None.

    Returns:
        ``(q (..., L, E), k (..., S, E), v (..., S, E))``.
    """
    b_q = b_k = b_v = None
    if in_proj_bias is not None:
        b_q, b_k, b_v = in_proj_bias.split(embed_dim)
    if in_proj_weight is not None:
        w_q, w_k, w_v = in_proj_weight.split(embed_dim)
    else:
        w_q, w_k, w_v = q_proj_weight, k_proj_weight, v_proj_weight
    return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(N, T, E) -> (N, H, T, E / H)``: head ``h`` gets features ``h d .. h d + d - 1``."""
    N, T, E = x.shape
    return x.view(N, T, num_heads, E // num_heads).transpose(1, 2)
