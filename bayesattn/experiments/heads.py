"""Attention over a short fixed-length memory with any attention kind, for the bench students.

:class:`HeadAttention` gives one interface ``(query (N, L, E), memory (N, S, E)) -> (N, L, E)``
over every kind the benches compare: the kinds of :class:`bayesattn.nn.MultiheadAttention`
(``softmax``, ``linear``, ``least_squares``, ``kernel``, ...) through that layer, and two kinds
it does not offer, computed per head from :mod:`bayesattn.functional` with the same input and
output projections (Vaswani et al. 2017, section 3.2.2):

* ``gp``: :func:`bayesattn.functional.gp_attention`, RBF kernel, with a learnable lengthscale
  and noise variance (Rasmussen & Williams 2006, eqs. 2.25-2.26);
* ``softmax_least_squares``: :func:`bayesattn.functional.softmax_least_squares_attention` with
  a learnable ridge (our reading of the softmax Intention of Garnelo & Czarnecki 2023,
  arXiv 2305.10203; docs/design.md, "Least-squares attention").

These two take no masks: the memory is a full, unpadded sequence (the benches' histories and
encoder outputs are).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import functional as Fn
from ..nn.attention import ATTENTION_KINDS, MultiheadAttention

__all__ = ["HEAD_KINDS", "HeadAttention"]

#: kinds computed here from :mod:`bayesattn.functional` (no masks)
_UNMASKED_KINDS = ("gp", "softmax_least_squares")
#: every kind :class:`HeadAttention` accepts
HEAD_KINDS = ATTENTION_KINDS + _UNMASKED_KINDS


class HeadAttention(nn.Module):
    """Multi-head attention of ``query`` on ``memory`` with one of :data:`HEAD_KINDS`.

    Args:
        embed_dim: ``E``.
        num_heads: ``H``; must divide ``E``.
        attention: one of :data:`HEAD_KINDS`.
        lengthscale: initial GP lengthscale (``gp``; default ``sqrt(E / H)``), learnable.
        ridge: initial ridge (``least_squares``, ``softmax_least_squares``) or GP noise
            variance (``gp``, default 0.1), learnable.

    Raises:
        ValueError: unknown ``attention``; the errors of :class:`MultiheadAttention`;
            non-positive ``lengthscale`` or ``ridge``.
    """

    def __init__(self, embed_dim: int, num_heads: int, attention: str = "softmax", *,
                 lengthscale: float | None = None, ridge: float | None = None) -> None:
        if attention not in HEAD_KINDS:
            raise ValueError(f"attention must be one of {HEAD_KINDS}, got {attention!r}")
        super().__init__()
        self.attention = attention
        self.num_heads = num_heads
        if attention in _UNMASKED_KINDS:
            if embed_dim % num_heads:
                raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
            d = embed_dim // num_heads
            ls = math.sqrt(d) if lengthscale is None else lengthscale
            rg = (0.1 if attention == "gp" else 1.0) if ridge is None else ridge
            if not (ls > 0 and rg > 0):
                raise ValueError(f"lengthscale and ridge must be positive, got {ls}, {rg}")
            self.q_proj = nn.Linear(embed_dim, embed_dim)
            self.k_proj = nn.Linear(embed_dim, embed_dim)
            self.v_proj = nn.Linear(embed_dim, embed_dim)
            self.out_proj = nn.Linear(embed_dim, embed_dim)
            self.log_ridge = nn.Parameter(torch.tensor(math.log(rg)))
            if attention == "gp":
                self.log_lengthscale = nn.Parameter(torch.tensor(math.log(ls)))
        else:
            options = {} if ridge is None or attention != "least_squares" else {"ridge": ridge}
            self.mha = MultiheadAttention(embed_dim, num_heads, batch_first=True,
                                          attention=attention, **options)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        N, T, E = x.shape
        return x.view(N, T, self.num_heads, E // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, memory: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                need_weights: bool = False):
        """Attend from ``query (N, L, E)`` to ``memory (N, S, E)``.

        Args:
            query, memory: batch-first tensors.
            key_padding_mask, attn_mask, is_causal, need_weights: as
                :meth:`bayesattn.nn.MultiheadAttention.forward` (batch-first, weights averaged
                over heads); only for the :class:`MultiheadAttention` kinds.

        Returns:
            ``(output (N, L, E), weights (N, L, S) or None)``.

        Raises:
            ValueError: a mask or ``need_weights`` with ``gp`` / ``softmax_least_squares``;
                the errors of the attention called.
        """
        if self.attention not in _UNMASKED_KINDS:
            return self.mha(query, memory, memory, key_padding_mask=key_padding_mask,
                            attn_mask=attn_mask, is_causal=is_causal, need_weights=need_weights)
        if key_padding_mask is not None or attn_mask is not None or is_causal or need_weights:
            raise ValueError(f"attention={self.attention!r} takes no masks and returns no weights")
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(memory))
        v = self._heads(self.v_proj(memory))
        ridge = self.log_ridge.exp()
        if self.attention == "gp":
            out = Fn.gp_attention(q, k, v, lengthscale=self.log_lengthscale.exp(), ridge=ridge,
                                  validate_args=False)
        else:
            out = Fn.softmax_least_squares_attention(q, k, v, ridge=ridge, validate_args=False)
        N, _, L, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(N, L, -1)), None
