"""Multi-head attention with a choice of attention mechanism, on :mod:`bayesattn.functional`.

:class:`MultiheadAttention` has the constructor and forward signature of
:class:`torch.nn.MultiheadAttention`; with ``attention="softmax"`` it is a drop-in (same
parameter names, same ``state_dict``, same outputs and weights). Other kinds replace the
per-head scaled dot-product attention (Vaswani et al. 2017, eq. 1) by another posterior mean
(docs/design.md, "Key-selection models", "Least-squares attention", "Support-vector view"):

==================  =====================================================================
``softmax``         :func:`bayesattn.functional.softmax_attention`, scale ``1/sqrt(d)``
``kernel``          :func:`bayesattn.functional.kernel_attention` (Nadaraya-Watson) with a
                    learnable bandwidth (one scalar per layer)
``least_squares``   :func:`bayesattn.functional.least_squares_attention` ("Intention",
                    Garnelo & Czarnecki 2023) with a learnable ridge
``linear``          :func:`bayesattn.functional.linear_attention` with ``elu + 1`` features,
                    normalised (Katharopoulos et al. 2020)
``bn``              Attention-BN (Nguyen et al. 2023): queries and keys standardised with the
                    per-feature mean and variance of the keys, then softmax attention
``sh``              Attention-SH (Nguyen et al. 2023): keys/values mean-pooled along the
                    sequence by a per-head ratio, then softmax attention
``bn_sh``           both
``multihop``        :func:`bayesattn.functional.multihop_attention` (Singh & Buckley 2023):
                    ``sum_h c_h A^h V`` with learnable hop weights ``c = softmax(hop_logits)``;
                    self-attention only (``L == S``), so it is in
                    :data:`SELF_ATTENTION_KINDS`, not in :data:`ATTENTION_KINDS`
``gp``              :func:`bayesattn.functional.gp_attention` (kernelised least squares, an
                    RBF covariance) with a learnable lengthscale and ridge; key padding and
                    the causal mask only (each exact: padded keys leave the regression, a
                    causal query regresses on its prefix), no other mask: in
                    :data:`UNMASKED_KINDS`
``softmax_least_squares``  :func:`bayesattn.functional.softmax_least_squares_attention`
                    (our reading of Intention's softmax variant,
                    ``softmax(QK^T)(softmax(KK^T) + ridge I)^{-1} V``) with a learnable
                    ridge; no masks (:data:`UNMASKED_KINDS`)
==================  =====================================================================

Shapes follow :class:`torch.nn.MultiheadAttention`: ``L`` target (query) length, ``S`` source
(key) length, ``N`` batch, ``E`` embedding dim, ``H`` heads, ``d = E / H``. Masks follow its
conventions (``key_padding_mask`` and boolean ``attn_mask`` are True where a key is *not*
allowed; float masks are added to the logits). Every kind honours padding: a padded key
never influences any output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .. import functional as Fn
from .._checks import check_choice, check_positive
from .bn_sh import batch_normalized_query, default_ratios, scaled_heads_pool
from .masks import bool_only, merge_masks, pad_masks, sdpa_mask
from .projection import in_projection, split_heads
from .structural import hop_logits_init

__all__ = [
    "ATTENTION_KINDS",
    "SELF_ATTENTION_KINDS",
    "UNMASKED_KINDS",
    "MultiheadAttention",
    "AttentionBN",
    "AttentionSH",
    "AttentionBNSH",
]

#: Attention kinds accepted by :class:`MultiheadAttention`.
ATTENTION_KINDS = ("softmax", "kernel", "least_squares", "linear", "bn", "sh", "bn_sh")
#: Kinds defined for self-attention only (``L == S``: a hop moves from a key to that token's
#: query), also accepted by :class:`MultiheadAttention`.
SELF_ATTENTION_KINDS = ("multihop",)
#: Kinds whose memory is a joint regression over the keys, where a general mask cannot remove
#: a key exactly (it would still enter the covariance), also accepted by
#: :class:`MultiheadAttention`: they take no general ``attn_mask``, no float mask and no
#: dropout. ``gp`` takes a bool ``key_padding_mask`` and the causal mask (``is_causal`` or a
#: bool causal ``attn_mask``), both exact (:func:`bayesattn.functional.gp_attention`'s
#: ``key_mask`` and ``is_causal``); ``softmax_least_squares`` takes no mask.
UNMASKED_KINDS = ("gp", "softmax_least_squares")
#: Kinds whose weights are a posterior over keys (convex, may take an additive log-prior).
_SELECTION_KINDS = ("softmax", "kernel", "bn")


# ----------------------------------------------------------------------------- the layer
class MultiheadAttention(nn.Module):
    """Multi-head attention with a choice of mechanism; a drop-in for torch's.

    ``MultiHead(Q, K, V) = Concat(head_1..head_H) W_O`` with
    ``head_h = Attn(Q W_Q^h, K W_K^h, V W_V^h)`` (Vaswani et al. 2017, section 3.2.2); in the
    key-selection model each head has its own latent ``z`` (docs/design.md, "Key-selection models").
    ``Attn`` is chosen by ``attention`` (see the module docstring for the kinds). With
    ``attention="softmax"`` the parameters, ``state_dict``, outputs and weights are those of
    :class:`torch.nn.MultiheadAttention` (tested to 1e-9 in float64).

    Inside torch's own modules: it can be assigned as ``self_attn`` / ``multihead_attn`` of
    :class:`torch.nn.TransformerEncoderLayer`, :class:`torch.nn.TransformerEncoder` and
    :class:`torch.nn.TransformerDecoderLayer`, and the chosen kind is computed in train and
    eval mode, under ``no_grad`` and ``inference_mode``: the module reports
    ``_qkv_same_embed_dim = False`` so that torch never replaces its forward by the fused
    softmax fast path (see :attr:`_qkv_same_embed_dim`). ``load_state_dict`` accepts a
    state_dict of :class:`torch.nn.MultiheadAttention` (strict) for every kind; the extra
    parameters (``log_bandwidth``, ``log_ridge``, ``hop_logits``) keep their initial values.

    Differences from torch, all documented here: a query with no allowed key outputs 0 (torch
    gives NaN); ``is_causal=True`` without ``attn_mask`` builds the causal mask (torch raises).

    Padding: masked keys never influence other positions, for every kind. For
    ``least_squares`` and ``linear`` the masked keys and values are zeroed, which removes them
    exactly from ``K^T K``, ``K^T V`` and ``sum_j phi(k_j)``; a mask that differs between
    queries (causal, general ``attn_mask``) gives each query its own regression on the keys it
    may attend to.

    Dropout: for ``softmax``, ``kernel``, ``bn``, ``sh`` and ``bn_sh`` it zeroes attention
    weights (torch's behaviour); for ``least_squares`` and ``linear``, whose weights are
    implicit, it removes each key from each head's memory with probability ``dropout``.

    Args:
        embed_dim: ``E``.
        num_heads: ``H``; must divide ``E``.
        dropout: probability, see above.
        bias: add biases to the input and output projections.
        add_bias_kv: append a learned key and value to the sequence (torch's option).
        add_zero_attn: append a zero key and value (torch's option).
        kdim: key feature dim (default ``E``).
        vdim: value feature dim (default ``E``).
        batch_first: inputs are ``(N, L, E)`` instead of ``(L, N, E)``.
        device, dtype: factory arguments.
        attention: one of :data:`ATTENTION_KINDS`, :data:`SELF_ATTENTION_KINDS` or
            :data:`UNMASKED_KINDS`.
        kernel: kernel of ``attention="kernel"`` (see :data:`bayesattn.functional.KERNELS`).
        bandwidth: initial bandwidth of ``kernel`` attention (default ``d ** 0.25``, the
            Gaussian kernel's match to ``1/sqrt(d)`` softmax); learnable (``log_bandwidth``).
        ridge: initial ridge ``lambda`` of ``least_squares``, ``gp`` (noise variance
            relative to the unit amplitude) and ``softmax_least_squares``; learnable
            (``log_ridge``).
        lengthscale: initial RBF lengthscale of ``gp`` (default ``sqrt(d)``, feature units of
            a head); learnable (``log_lengthscale``).
        head_ratios: per-head pooling ratios of ``sh`` / ``bn_sh`` (default: the first
            ``ceil(H/2)`` heads 1, the rest 2).
        bn_mean_weight: weight of the mean term of ``bn`` / ``bn_sh``.
        bn_eps: variance epsilon of ``bn`` / ``bn_sh``.
        hop_weights: initial hop weights ``c`` of ``multihop`` over hop counts ``0..H``
            (default the authors' ``(1/3, 1/3, 1/3)``); learnable as ``hop_logits``
            (``c = softmax(hop_logits)``).

    Raises:
        ValueError: non-positive ``embed_dim`` / ``num_heads``; ``H`` not dividing ``E``;
            ``dropout`` outside ``[0, 1)``; unknown ``attention`` or ``kernel``; non-positive
            ``bandwidth`` or ``ridge``; ``head_ratios`` not ``H`` positive ints;
            ``add_bias_kv`` / ``add_zero_attn`` with ``bn``, ``sh``, ``bn_sh`` or
            ``multihop``, ``gp`` or ``softmax_least_squares``; ``dropout > 0`` with
            ``multihop``, ``gp`` or ``softmax_least_squares``; ``hop_weights`` that are not
            positive numbers; non-positive ``lengthscale``.
    """

    __constants__ = ["batch_first"]

    #: Parameters that :class:`torch.nn.MultiheadAttention` does not have; a state_dict from
    #: torch's module may lack them (they keep their initial values).
    _EXTRA_PARAMETERS = ("log_bandwidth", "log_ridge", "hop_logits", "log_lengthscale")

    @property
    def _qkv_same_embed_dim(self) -> bool:
        """Always False, so that torch's own modules never bypass :meth:`forward`.

        ``torch.nn.TransformerEncoderLayer.forward`` (eval mode, no grad) runs its fused
        softmax kernel on ``self_attn.in_proj_weight`` instead of calling ``self_attn`` when
        this flag is True, and ``torch.nn.TransformerEncoder`` then converts padded inputs to
        nested tensors. Both check this flag (torch 2.x, ``transformer.py``, the
        ``why_not_sparsity_fast_path`` checks), so reporting False makes torch take its Python
        path, which calls this module's forward: the chosen kind is always computed. The
        weight layout is given by ``in_proj_weight is not None`` (packed, as torch's module
        with ``kdim == vdim == embed_dim``). A side effect: ``torch.nn.TransformerEncoder``
        built with ``enable_nested_tensor=True`` (its default) warns that it will not use
        nested tensors.
        """
        return False

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
        error_msgs,
    ):
        """Load as :class:`torch.nn.Module` does, allowing only our extra parameters to be
        missing (a state_dict of :class:`torch.nn.MultiheadAttention`): they keep their
        current values (the constructor's ``bandwidth`` / ``ridge``)."""
        n_before = len(missing_keys)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
            error_msgs,
        )
        extras = {prefix + name for name in self._EXTRA_PARAMETERS}
        mine = missing_keys[n_before:]
        del missing_keys[n_before:]
        missing_keys.extend(k for k in mine if k not in extras)

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
        *,
        attention: str = "softmax",
        kernel: str = "gaussian",
        bandwidth: float | None = None,
        ridge: float = 1.0,
        head_ratios: Sequence[int] | None = None,
        bn_mean_weight: float = 1.0,
        bn_eps: float = 1e-5,
        hop_weights: Sequence[float] | None = None,
        lengthscale: float | None = None,
    ) -> None:
        if not (isinstance(embed_dim, int) and embed_dim > 0):
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if not (isinstance(num_heads, int) and num_heads > 0):
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        attention = check_choice("attention", attention,
                                 ATTENTION_KINDS + SELF_ATTENTION_KINDS + UNMASKED_KINDS)
        kernel = check_choice("kernel", kernel, Fn.KERNELS)
        if (add_bias_kv or add_zero_attn) and attention in ("bn", "sh", "bn_sh", "multihop",
                                                            *UNMASKED_KINDS):
            raise ValueError(f"add_bias_kv / add_zero_attn are not defined for {attention!r}")
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        packed = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        self.attention = attention
        self.kernel = kernel
        if packed:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn

        if attention == "kernel":
            bw = self.head_dim**0.25 if bandwidth is None else bandwidth
            if isinstance(bw, torch.Tensor):
                raise TypeError("bandwidth must be a positive number (the initial value)")
            bw = check_positive("bandwidth", bw)
            self.log_bandwidth = nn.Parameter(torch.tensor(math.log(bw), **factory))
        if attention in ("least_squares", *UNMASKED_KINDS):
            if isinstance(ridge, torch.Tensor):
                raise TypeError("ridge must be a positive number (the initial value)")
            ridge = check_positive("ridge", ridge)
            self.log_ridge = nn.Parameter(torch.tensor(math.log(ridge), **factory))
        if attention in ("multihop", *UNMASKED_KINDS) and float(dropout) > 0:
            raise ValueError(f"dropout is not defined for attention={attention!r} (use 0.0)")
        if attention == "gp":
            ls = math.sqrt(self.head_dim) if lengthscale is None else lengthscale
            if isinstance(ls, torch.Tensor):
                raise TypeError("lengthscale must be a positive number (the initial value)")
            ls = check_positive("lengthscale", ls)
            self.log_lengthscale = nn.Parameter(torch.tensor(math.log(ls), **factory))
        if attention == "multihop":
            self.hop_logits = nn.Parameter(hop_logits_init(hop_weights, **factory))
        ratios = default_ratios(num_heads) if head_ratios is None else tuple(head_ratios)
        if len(ratios) != num_heads or not all(
            isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ratios
        ):
            raise ValueError(
                f"head_ratios must be {num_heads} positive ints (one per head), got {head_ratios!r}"
            )
        self.head_ratios = ratios
        self.bn_mean_weight = float(bn_mean_weight)
        self.bn_eps = float(bn_eps)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Initialise as torch does: Xavier-uniform projections, zero biases."""
        if self.in_proj_weight is not None:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            nn.init.xavier_uniform_(self.q_proj_weight)
            nn.init.xavier_uniform_(self.k_proj_weight)
            nn.init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    def extra_repr(self) -> str:
        extra = f", kernel={self.kernel!r}" if self.attention == "kernel" else ""
        if self.attention in ("sh", "bn_sh"):
            extra = f", head_ratios={self.head_ratios}"
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"attention={self.attention!r}{extra}, batch_first={self.batch_first}"
        )

    @property
    def bandwidth(self) -> torch.Tensor:
        """Kernel bandwidth (0-dim tensor); only for ``attention="kernel"``."""
        return self.log_bandwidth.exp()

    @property
    def hop_weights(self) -> torch.Tensor:
        """Hop weights ``c = softmax(hop_logits)``; only for ``attention="multihop"``."""
        return torch.softmax(self.hop_logits, dim=0)

    @property
    def ridge(self) -> torch.Tensor:
        """Ridge ``lambda`` (0-dim tensor); for ``least_squares``, ``gp`` and
        ``softmax_least_squares``."""
        return self.log_ridge.exp()

    @property
    def lengthscale(self) -> torch.Tensor:
        """RBF lengthscale (0-dim tensor); only for ``attention="gp"``."""
        return self.log_lengthscale.exp()

    # ------------------------------------------------------------------ projections
    def in_projection(self, query, key, value):
        """Project ``(N, L, E)``, ``(N, S, kdim)``, ``(N, S, vdim)`` to ``(N, ., E)`` each."""
        return in_projection(
            query, key, value, self.embed_dim, self.in_proj_weight, self.in_proj_bias,
            self.q_proj_weight, self.k_proj_weight, self.v_proj_weight,
        )

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return split_heads(x, self.num_heads)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``query`` to ``key`` / ``value``.

        Args:
            query: ``(L, N, E)`` (``(N, L, E)`` if ``batch_first``), or unbatched ``(L, E)``.
            key: ``(S, N, kdim)`` / ``(N, S, kdim)`` / ``(S, kdim)``.
            value: ``(S, N, vdim)`` / ``(N, S, vdim)`` / ``(S, vdim)``.
            key_padding_mask: ``(N, S)`` (or ``(S,)`` unbatched); bool True = padded key, or
                float added to the logits.
            need_weights: also return the attention weights.
            attn_mask: ``(L, S)`` or ``(N * H, L, S)``; bool True = not allowed, or float
                added to the logits (float values other than 0 / -inf only for ``softmax``,
                ``kernel`` and ``bn``).
            average_attn_weights: average the returned weights over heads.
            is_causal: causal hint; without ``attn_mask`` it builds the mask ``j <= i``.

        Returns:
            ``(output, weights)``: output ``(L, N, E)`` / ``(N, L, E)`` / ``(L, E)``; weights
            ``(N, L, S)`` (or ``(N, H, L, S)`` unaveraged; no ``N`` unbatched) or None. For
            ``least_squares`` and ``linear`` the weights are the implied ones, ``output_head =
            weights_head @ V_head`` (signed for least squares).

        Raises:
            TypeError: non-tensor inputs or masks of a wrong dtype.
            ValueError: inputs of the wrong rank or feature size, batch or length mismatches,
                masks of the wrong shape, float masks the kind does not support, NaN/inf
                (raised by :mod:`bayesattn.functional`).
        """
        query, key, value, batched = self._to_batch_first(query, key, value)
        if not batched and key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
        N, L, _ = query.shape
        q, k, v = self.in_projection(query, key, value)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(N, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(N, 1, -1)], dim=1)
            attn_mask, key_padding_mask = pad_masks(attn_mask, key_padding_mask)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(N, self.num_heads, 1, self.head_dim)], dim=2)
            v = torch.cat([v, v.new_zeros(N, self.num_heads, 1, self.head_dim)], dim=2)
            attn_mask, key_padding_mask = pad_masks(attn_mask, key_padding_mask)
        S = k.shape[2]
        allowed, log_prior = merge_masks(
            attn_mask, key_padding_mask, is_causal=is_causal, batch=N,
            num_heads=self.num_heads, L=L, S=S, dtype=q.dtype,
        )
        key_valid = None
        if key_padding_mask is not None:
            kpm = key_padding_mask
            kpm = kpm if kpm.dtype == torch.bool else torch.isneginf(kpm)
            key_valid = ~kpm.view(N, 1, S)
        out, weights = self.attend(q, k, v, allowed, log_prior, key_valid, need_weights)
        out = out.transpose(1, 2).reshape(N, L, self.embed_dim)
        out = self.out_proj(out)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        if not batched:
            out = out.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _to_batch_first(self, query, key, value):
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"{name} must be floating point, got {t.dtype}")
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(
                "query, key and value must all be 3-d (batched) or 2-d (unbatched), got "
                f"shapes {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        for name, t, want in (
            ("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)
        ):
            if t.shape[-1] != want:
                raise ValueError(f"{name} must have {want} features, got {t.shape[-1]}")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError(
                "batch sizes and key/value lengths must match: query "
                f"{tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)} "
                "(batch-first view)"
            )
        return query, key, value, batched

    # ------------------------------------------------------------------ per-head attention
    def attend(self, q, k, v, allowed, log_prior, key_valid, need_weights):
        """Per-head attention of the chosen kind.

        Args:
            q: ``(N, H, L, d)``; k: ``(N, H, S, d)``; v: ``(N, H, S, d)``.
            allowed: bool ``(N|1, H|1, L, S)`` or None (True = may attend).
            log_prior: float ``(N|1, H|1, L, S)`` or None.
            key_valid: bool ``(N, 1, S)`` or None: False at padded keys.
            need_weights: also return ``(N, H, L, S)`` weights.

        Returns:
            ``(output (N, H, L, d), weights or None)``.
        """
        kind = self.attention
        drop = self.dropout if self.training else 0.0
        if kind in UNMASKED_KINDS:
            return self._unmasked(q, k, v, allowed, log_prior, key_valid, need_weights)
        if kind in ("least_squares", "linear"):
            allowed = bool_only(allowed, log_prior, kind)
            if kind == "least_squares":
                res = Fn.least_squares_attention(q, k, v, allowed, drop, ridge=self.ridge,
                                                 need_weights=need_weights)
            else:
                res = Fn.linear_attention(q, k, v, allowed, drop, feature_map="elu",
                                          normalize=True, need_weights=need_weights)
            return res if need_weights else (res, None)
        if kind in ("bn", "bn_sh"):
            stats = allowed
            if log_prior is not None:
                finite = ~torch.isneginf(log_prior)
                stats = finite if stats is None else stats & finite
            q = batch_normalized_query(
                q, k, stats, mean_weight=self.bn_mean_weight, eps=self.bn_eps
            )
        if kind in ("sh", "bn_sh"):
            allowed = bool_only(allowed, log_prior, kind)
            return self._scaled_heads(q, k, v, allowed, key_valid, need_weights, drop)
        mask = sdpa_mask(allowed, log_prior)
        if kind == "multihop":
            res = Fn.multihop_attention(q, k, v, hop_weights=self.hop_weights, attn_mask=mask,
                                        need_weights=need_weights)
        elif kind == "kernel":
            res = Fn.kernel_attention(q, k, v, mask, drop, kernel=self.kernel,
                                      bandwidth=self.bandwidth, need_weights=need_weights)
        else:
            res = Fn.softmax_attention(q, k, v, mask, drop, need_weights=need_weights)
        return res if need_weights else (res, None)

    def _unmasked(self, q, k, v, allowed, log_prior, key_valid, need_weights):
        """``gp`` / ``softmax_least_squares`` heads; the implied weights (``out = weights @ V``,
        signed) by regressing the identity as well.

        Raises:
            ValueError: a mask the kind cannot apply exactly (see :data:`UNMASKED_KINDS`).
        """
        key_mask, causal = None, False
        if self.attention == "gp" and log_prior is None and allowed is not None:
            key_mask, causal, exact = _padding_and_causal(allowed, key_valid)
            if not exact:
                raise ValueError(
                    "attention='gp' takes key_padding_mask (bool) and the causal mask only, "
                    "not a general attn_mask (a masked key would still enter the regression)"
                )
        elif allowed is not None or log_prior is not None:
            raise ValueError(
                f"attention={self.attention!r} takes no attn_mask, key_padding_mask or "
                "is_causal (a masked key would still enter the joint regression)"
            )
        S, dv = k.shape[-2], v.shape[-1]
        if need_weights:
            eye = torch.eye(S, dtype=v.dtype, device=v.device).expand(*v.shape[:-2], S, S)
            v = torch.cat([v, eye], dim=-1)
        if self.attention == "gp":
            out = Fn.gp_attention(q, k, v, kernel="rbf", lengthscale=self.lengthscale,
                                  ridge=self.ridge, key_mask=key_mask, is_causal=causal)
        else:
            out = Fn.softmax_least_squares_attention(q, k, v, ridge=self.ridge)
        return (out[..., :dv], out[..., dv:]) if need_weights else (out, None)

    def _scaled_heads(self, q, k, v, allowed, key_valid, need_weights, drop):
        N, H, L, d = q.shape
        S = k.shape[2]
        out = q.new_zeros(N, H, L, v.shape[-1])
        weights = q.new_zeros(N, H, L, S) if need_weights else None
        for ratio in sorted(set(self.head_ratios)):
            heads = [h for h, r in enumerate(self.head_ratios) if r == ratio]
            idx = torch.tensor(heads, device=q.device)
            a = None
            if allowed is not None:
                a = allowed if allowed.shape[1] == 1 else allowed.index_select(1, idx)
            kp, vp, pvalid, pallowed, spread = scaled_heads_pool(
                k.index_select(1, idx), v.index_select(1, idx), ratio, key_valid, a
            )
            if pallowed is None and key_valid is not None:
                pallowed = pvalid.unsqueeze(-2)  # (N, 1, 1, M)
            qh = q.index_select(1, idx)
            res = Fn.softmax_attention(qh, kp, vp, pallowed, drop, need_weights=need_weights)
            if need_weights:
                out[:, idx], w = res
                weights[:, idx] = w.repeat_interleave(ratio, dim=-1)[..., :S] * spread.unsqueeze(-2)
            else:
                out[:, idx] = res
        return out, weights


def _padding_and_causal(allowed, key_valid):
    """Split a bool ``allowed (N|1, H|1, L, S)`` into key padding and the causal mask.

    Returns ``(key_mask (N, 1, 1, S) or None, causal, exact)``: ``exact`` is True when
    ``allowed`` is exactly ``key_valid`` (or all True) and/or the top-left causal mask
    ``j <= i``, False for any other mask (the caller then refuses it).
    """
    L, S = allowed.shape[-2:]
    key_mask = None if key_valid is None else key_valid.unsqueeze(1)  # (N, 1, 1, S)
    base = torch.ones(1, 1, 1, S, dtype=torch.bool, device=allowed.device)
    base = base if key_mask is None else key_mask
    tril = torch.ones(L, S, dtype=torch.bool, device=allowed.device).tril()
    shape = torch.broadcast_shapes(allowed.shape, base.shape)
    if torch.equal(allowed.expand(shape), base.expand(shape)):
        return key_mask, False, True
    shape = torch.broadcast_shapes(allowed.shape, (base & tril).shape)
    if torch.equal(allowed.expand(shape), (base & tril).expand(shape)):
        return key_mask, True, True
    return None, False, False


class AttentionBN(MultiheadAttention):
    """Attention-BN (Nguyen et al., ICLR 2023, arXiv 2406.13781): batch-normalised attention.

    Definition implemented (our reading; the paper's exact formula could not be confirmed):
    per head and query ``i``, with ``mu_i`` and ``s_i^2`` the per-feature mean and biased
    variance of the keys that query may attend to (the real keys of its sequence; its past
    under a causal mask) and ``w`` = ``bn_mean_weight``::

        q'_i = (q_i - w mu_i) / sqrt(s_i^2 + eps),   k'_j = (k_j - mu_i) / sqrt(s_i^2 + eps)
        head_i = sum_j softmax_j(q'_i . k'_j / sqrt(d)) v_j

    computed as softmax attention of ``q~_i = (q_i - w mu_i) / (s_i^2 + eps)`` on the raw keys
    (the difference is constant over keys; see :func:`batch_normalized_query`). In the SVR
    view of the paper the primal layer is batch-normalised; in the key-selection model a
    diagonal (ARD) Gaussian kernel centred on the key mean. Same arguments as
    :class:`MultiheadAttention` (``attention`` fixed).
    """

    def __init__(self, embed_dim: int, num_heads: int, *args, **kwargs):
        kwargs["attention"] = "bn"
        super().__init__(embed_dim, num_heads, *args, **kwargs)


class AttentionSH(MultiheadAttention):
    """Attention-SH, scaled heads (Nguyen et al., ICLR 2023, arXiv 2406.13781).

    Definition implemented (our reading; the paper's exact formula could not be confirmed):
    head ``h`` mean-pools its keys and values along the sequence in windows of
    ``r_h = head_ratios[h]`` (:func:`scaled_heads_pool`; padded keys excluded from the means,
    a pooled key allowed for a query iff all its real keys are) and attends with softmax over
    the ``ceil(S / r_h)`` pooled keys; queries keep the full length. Cost per head
    ``O(L S / r_h)``. In the SVR view each head fits its regression on fewer points; in the
    key-selection model a compressed memory (inducing points). Returned weights are spread
    back over the original keys so that ``output_head = weights_head @ V_head``.
    Same arguments as :class:`MultiheadAttention` (``attention`` fixed; ``head_ratios``).
    """

    def __init__(self, embed_dim: int, num_heads: int, *args, **kwargs):
        kwargs["attention"] = "sh"
        super().__init__(embed_dim, num_heads, *args, **kwargs)


class AttentionBNSH(MultiheadAttention):
    """Attention-BN combined with Attention-SH (Nguyen et al., ICLR 2023, arXiv 2406.13781).

    Queries are transformed as in :class:`AttentionBN` (statistics of the unpooled keys each
    query may attend to), then keys and values are pooled per head (:class:`AttentionSH`).
    Standardisation is affine per feature, so it commutes with the window means: this is
    Attention-BN on the pooled memory.
    """

    def __init__(self, embed_dim: int, num_heads: int, *args, **kwargs):
        kwargs["attention"] = "bn_sh"
        super().__init__(embed_dim, num_heads, *args, **kwargs)
