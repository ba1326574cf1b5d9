"""Self-attention layers of attention as structural inference (Singh & Buckley 2023, arXiv
2304.04556): :class:`MultihopAttention` and :class:`ExpandingAttention`, on
:func:`bayesattn.functional.multihop_attention` and
:func:`bayesattn.functional.expanding_attention` (docs/design.md, "Reversed selection: slot
attention, Hopfield retrieval, mixtures").

Both take one sequence ``x`` (self-attention), project it to queries, keys and values with
the parameter layout of :class:`torch.nn.MultiheadAttention` (``in_proj_weight (3E, E)``,
``in_proj_bias``, ``out_proj``), split ``H`` heads of ``d = E / H`` features, attend per head
and project back. Shapes: ``x (N, T, E)`` with ``batch_first=True`` (default), ``(T, N, E)``
otherwise, or unbatched ``(T, E)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .. import functional as Fn
from .._checks import check_positive
from .masks import merge_masks, sdpa_mask
from .projection import in_projection, split_heads

__all__ = ["MultihopAttention", "ExpandingAttention", "hop_logits_init"]


def hop_logits_init(hop_weights: Sequence[float] | None = None, *, device=None, dtype=None):
    """Logits ``log c`` of initial hop weights (default ``(1/3, 1/3, 1/3)``), so that
    ``softmax(logits) = c / sum(c)``.

    Raises:
        ValueError: ``hop_weights`` not a non-empty sequence of positive finite numbers.
    """
    c = Fn.DEFAULT_HOP_WEIGHTS if hop_weights is None else hop_weights
    if isinstance(c, torch.Tensor) or isinstance(c, str):
        raise ValueError("hop_weights must be a sequence of positive numbers (initial values)")
    c = [check_positive("hop_weights", x) for x in c]
    if not c:
        raise ValueError("hop_weights must have at least one entry (hop count 0)")
    return torch.tensor([math.log(x) for x in c], device=device, dtype=dtype)


class _SelfAttention(nn.Module):
    """Projections and head bookkeeping shared by the structural layers."""

    def __init__(self, embed_dim, num_heads, bias, batch_first, device, dtype):
        if not (isinstance(embed_dim, int) and embed_dim > 0):
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if not (isinstance(num_heads, int) and num_heads > 0):
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.batch_first = embed_dim, num_heads, batch_first
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            nn.init.constant_(self.out_proj.bias, 0.0)

    def _heads(self, x):
        """``x`` to batch-first heads ``q, k, v (N, H, T, d)``; returns them and ``batched``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating-point torch.Tensor")
        if x.dim() not in (2, 3) or x.shape[-1] != self.embed_dim:
            raise ValueError(
                f"x must be (N, T, E), (T, N, E) or (T, E) with E = {self.embed_dim}, got "
                f"{tuple(x.shape)}"
            )
        batched = x.dim() == 3
        x = x.unsqueeze(0) if not batched else (x if self.batch_first else x.transpose(0, 1))
        q, k, v = in_projection(x, x, x, self.embed_dim, self.in_proj_weight, self.in_proj_bias)
        return tuple(split_heads(t, self.num_heads) for t in (q, k, v)), batched

    def _merge(self, out, batched):
        N, H, T, d = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(N, T, H * d))
        if not batched:
            return out.squeeze(0)
        return out if self.batch_first else out.transpose(0, 1)


class MultihopAttention(_SelfAttention):
    """Multihop self-attention (Singh & Buckley 2023, arXiv 2304.04556), per head
    ``sum_h c_h A^h V`` with learnable hop weights ``c = softmax(hop_logits)``.

    The authors' layer is ``c = (1/3, 1/3, 1/3)`` fixed, one head, no output projection; here
    ``c`` is learned (``learn_hop_weights=False`` keeps it fixed) and heads and projections are
    those of :class:`torch.nn.MultiheadAttention`. The same as
    ``bayesattn.nn.MultiheadAttention(..., attention="multihop")`` on ``(x, x, x)``.

    Args:
        embed_dim: ``E``.
        num_heads: ``H``, dividing ``E``.
        hop_weights: initial ``c`` over hop counts ``0..H_hops`` (positive numbers).
        learn_hop_weights: make ``hop_logits`` a parameter (else a buffer).
        bias: biases in the projections.
        batch_first: ``x`` is ``(N, T, E)`` (default True).
        device, dtype: factory arguments.

    Raises:
        ValueError: non-positive sizes, ``H`` not dividing ``E``, bad ``hop_weights``.
    """

    def __init__(self, embed_dim: int, num_heads: int = 1, *, hop_weights=None,
                 learn_hop_weights: bool = True, bias: bool = True, batch_first: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__(embed_dim, num_heads, bias, batch_first, device, dtype)
        logits = hop_logits_init(hop_weights, device=device, dtype=dtype)
        if learn_hop_weights:
            self.hop_logits = nn.Parameter(logits)
        else:
            self.register_buffer("hop_logits", logits)

    @property
    def hop_weights(self) -> torch.Tensor:
        """``c = softmax(hop_logits)``, ``(H_hops + 1,)``."""
        return torch.softmax(self.hop_logits, dim=0)

    def forward(self, x, attn_mask=None, key_padding_mask=None, need_weights: bool = False,
                is_causal: bool = False):
        """Attend within ``x``.

        Args:
            x: ``(N, T, E)`` (``batch_first``), ``(T, N, E)``, or ``(T, E)``.
            attn_mask: ``(T, T)`` or ``(N * H, T, T)``, torch's convention (bool True = not
                allowed; float added to the logits).
            key_padding_mask: ``(N, T)``, bool True = padded (or float, added).
            need_weights: also return ``M = sum_h c_h A^h`` per head, ``(N, H, T, T)``.
            is_causal: without ``attn_mask``, token ``i`` attends to ``j <= i``.

        Returns:
            ``(output like x, M or None)``.

        Raises:
            TypeError, ValueError: bad ``x`` or masks (see
                :func:`bayesattn.functional.multihop_attention`).
        """
        (q, k, v), batched = self._heads(x)
        N, H, T, _ = q.shape
        if not batched and key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
        allowed, log_prior = merge_masks(attn_mask, key_padding_mask, is_causal=is_causal,
                                         batch=N, num_heads=H, L=T, S=T, dtype=q.dtype)
        res = Fn.multihop_attention(q, k, v, hop_weights=self.hop_weights,
                                    attn_mask=sdpa_mask(allowed, log_prior),
                                    need_weights=need_weights)
        out, M = res if need_weights else (res, None)
        if M is not None and not batched:
            M = M.squeeze(0)
        return self._merge(out, batched), M


class ExpandingAttention(_SelfAttention):
    """Causal expanding attention (Singh & Buckley 2023), per head
    :func:`bayesattn.functional.expanding_attention` with a learnable Beta prior.

    ``alpha = exp(log_alpha)``, ``beta = exp(log_beta)`` (one pair per layer, shared by the
    heads) receive gradients through the distance penalty (in the authors' code they get
    none); ``learn_prior=False`` keeps them fixed. After each forward, :attr:`last_window`
    holds ``(m (N, H, T), passes (N, H, T))``, the window and the number of passes per query
    (detached), from which the benchmark's window size and relative cost are computed. The
    layer is causal by construction; right padding never reaches real tokens, so there is no
    padding mask.

    Args:
        embed_dim: ``E``.
        num_heads: ``H``, dividing ``E``.
        alpha, beta: initial Beta prior (the authors' 0.1 and 0.9).
        learn_prior: make ``log_alpha`` / ``log_beta`` parameters (else buffers).
        coverage, max_iter, tol: as :func:`bayesattn.functional.expanding_attention`.
        bias, batch_first, device, dtype: as :class:`MultihopAttention`.

    Raises:
        ValueError: non-positive sizes, ``alpha`` or ``beta``; bad ``coverage``,
            ``max_iter`` or ``tol`` (at the first forward).
    """

    def __init__(self, embed_dim: int, num_heads: int = 1, *, alpha: float = 0.1,
                 beta: float = 0.9, learn_prior: bool = True, coverage: float = 0.95,
                 max_iter: int = 100, tol: float = 0.01, bias: bool = True,
                 batch_first: bool = True, device=None, dtype=None) -> None:
        super().__init__(embed_dim, num_heads, bias, batch_first, device, dtype)
        factory = {"device": device, "dtype": dtype}
        logs = [torch.tensor(math.log(check_positive(n, x)), **factory)
                for n, x in (("alpha", alpha), ("beta", beta))]
        for name, t in zip(("log_alpha", "log_beta"), logs, strict=True):
            if learn_prior:
                setattr(self, name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        self.coverage, self.max_iter, self.tol = coverage, max_iter, tol
        self.last_window = None

    def forward(self, x, need_weights: bool = False):
        """Causal expanding attention within ``x``.

        Args:
            x: ``(N, T, E)`` (``batch_first``), ``(T, N, E)``, or ``(T, E)``.
            need_weights: also return the last pass's weights per head ``(N, H, T, T)``.

        Returns:
            ``(output like x, weights or None)``; token 0 reads nothing (its head output is 0).

        Raises:
            TypeError, ValueError: bad ``x`` (see
                :func:`bayesattn.functional.expanding_attention`).
        """
        (q, k, v), batched = self._heads(x)
        res = Fn.expanding_attention(q, k, v, alpha=self.log_alpha.exp(),
                                     beta=self.log_beta.exp(), coverage=self.coverage,
                                     max_iter=self.max_iter, tol=self.tol,
                                     need_weights=need_weights, need_window=True)
        if need_weights:
            out, w, (m, passes) = res
        else:
            (out, (m, passes)), w = res, None
        self.last_window = (m.detach(), passes)
        if w is not None and not batched:
            w = w.squeeze(0)
        return self._merge(out, batched), w
