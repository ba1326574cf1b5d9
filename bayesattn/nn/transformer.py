"""A Transformer encoder layer and a sequence classifier that take any attention kind."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiheadAttention
from .layers import SinusoidalPositionalEncoding

__all__ = ["TransformerEncoderLayer", "TransformerClassifier", "masked_mean"]


def _activation(activation) -> Callable[[torch.Tensor], torch.Tensor]:
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    if callable(activation):
        return activation
    raise ValueError(f"unknown activation {activation!r}; expected 'relu', 'gelu' or a callable")


class TransformerEncoderLayer(nn.Module):
    """Transformer encoder layer (Vaswani et al. 2017, section 3.1) with any attention kind.

    Same constructor (first arguments), parameter names and forward as
    :class:`torch.nn.TransformerEncoderLayer`; with ``attention="softmax"`` it loads that
    layer's ``state_dict`` and gives the same outputs. Post-norm
    ``x = norm2(x + FF(norm1(x + SA(x))))`` by default, pre-norm
    ``x = x + SA(norm1(x)); x = x + FF(norm2(x))`` with ``norm_first=True``.

    Args:
        d_model: ``E``.
        nhead: heads.
        dim_feedforward: hidden width of the feed-forward block.
        dropout: dropout after attention, in and after the feed-forward block, and inside the
            attention (see :class:`MultiheadAttention`).
        activation: ``"relu"``, ``"gelu"`` or a callable.
        layer_norm_eps: LayerNorm epsilon.
        batch_first: ``(N, T, E)`` inputs.
        norm_first: pre-norm.
        bias: biases in linear layers and LayerNorms.
        device, dtype: factory arguments.
        attention: attention kind (:data:`bayesattn.nn.ATTENTION_KINDS`).
        **attention_options: passed to :class:`MultiheadAttention` (``kernel``, ``bandwidth``,
            ``ridge``, ``head_ratios``, ...).

    Raises:
        ValueError: unknown ``activation``; the errors of :class:`MultiheadAttention`.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        attention: str = "softmax",
        **attention_options,
    ) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
            attention=attention, **attention_options, **factory,
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.batch_first = batch_first

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        *,
        return_attention: bool = False,
    ):
        """Encode ``src``.

        Args:
            src: ``(T, N, E)`` (``(N, T, E)`` if ``batch_first``).
            src_mask: ``(T, T)`` or ``(N * H, T, T)`` attention mask (torch's convention).
            src_key_padding_mask: ``(N, T)`` bool, True at padded positions.
            is_causal: causal self-attention (see :class:`MultiheadAttention`).
            return_attention: also return the per-head weights ``(N, H, T, T)``.

        Returns:
            output like ``src`` (and the attention weights).

        Raises:
            TypeError, ValueError: as :meth:`MultiheadAttention.forward`.
        """
        x = src
        attn = None
        if self.norm_first:
            sa, attn = self._sa_block(
                self.norm1(x), src_mask, src_key_padding_mask, is_causal, return_attention
            )
            x = x + sa
            x = x + self._ff_block(self.norm2(x))
        else:
            sa, attn = self._sa_block(x, src_mask, src_key_padding_mask, is_causal,
                                      return_attention)
            x = self.norm1(x + sa)
            x = self.norm2(x + self._ff_block(x))
        return (x, attn) if return_attention else x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal, need_weights):
        out, weights = self.self_attn(
            x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
            need_weights=need_weights, average_attn_weights=False, is_causal=is_causal,
        )
        return self.dropout1(out), weights

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def masked_mean(x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of ``x (N, T, E)`` ignoring padded steps (``padding_mask (N, T)``)."""
    if padding_mask is None:
        return x.mean(1)
    keep = (~padding_mask).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class TransformerClassifier(nn.Module):
    """Sequence classifier: a small pre-norm Transformer encoder with any attention kind.

    ``logits = W_c mean_t LN(Encoder(W_in x_t + PE_t))`` over the real (unpadded) steps:
    a linear input embedding, sinusoidal positions (Vaswani et al. 2017), ``num_layers``
    :class:`TransformerEncoderLayer` (pre-norm, GELU), a final LayerNorm, masked mean pooling
    and a linear read-out.

    Args:
        in_features: features per time step ``F``.
        num_classes: ``C``.
        d_model, nhead, num_layers, dim_feedforward, dropout: encoder sizes.
        attention: attention kind (:data:`bayesattn.nn.ATTENTION_KINDS`).
        max_len: longest sequence.
        **attention_options: passed to :class:`MultiheadAttention`.

    Raises:
        ValueError: non-positive sizes; the errors of :class:`MultiheadAttention`.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        attention: str = "softmax",
        max_len: int = 512,
        **attention_options,
    ) -> None:
        for name, val in (("in_features", in_features), ("num_classes", num_classes),
                          ("num_layers", num_layers)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        super().__init__()
        self.attention = attention
        self.embed = nn.Linear(in_features, d_model)
        self.pos = SinusoidalPositionalEncoding(d_model, max_len, dropout, batch_first=True)
        self.layers = nn.ModuleList(
            self._make_layer(d_model, nhead, dim_feedforward, dropout, attention,
                             attention_options)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def _make_layer(self, d_model, nhead, dim_feedforward, dropout, attention, options):
        return TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation="gelu", batch_first=True,
            norm_first=True, attention=attention, **options,
        )

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        return_attention: bool = False,
    ):
        """Class logits for ``x``.

        Args:
            x: ``(N, T, F)``.
            padding_mask: ``(N, T)`` bool, True at padded steps.
            return_attention: also return a list (one per layer) of ``(N, H, T, T)`` weights.

        Returns:
            logits ``(N, C)`` (and the attention list).

        Raises:
            ValueError: ``x`` not 3-d; the errors of :class:`MultiheadAttention`.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError("x must be a tensor of shape (N, T, F)")
        h = self.pos(self.embed(x))
        maps = []
        for layer in self.layers:
            if return_attention:
                h, w = layer(h, src_key_padding_mask=padding_mask, return_attention=True)
                maps.append(w)
            else:
                h = layer(h, src_key_padding_mask=padding_mask)
        logits = self.head(masked_mean(self.norm(h), padding_mask))
        return (logits, maps) if return_attention else logits
