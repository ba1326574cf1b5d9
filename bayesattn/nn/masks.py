"""PyTorch-style masks (``attn_mask``, ``key_padding_mask``, ``is_causal``) of
:class:`torch.nn.MultiheadAttention` turned into the SDPA-style ``attn_mask`` of
:mod:`bayesattn.functional` (True = takes part, or additive float)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["merge_masks", "sdpa_mask", "bool_only", "pad_masks"]


def merge_masks(
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    *,
    is_causal: bool,
    batch: int,
    num_heads: int,
    L: int,
    S: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Turn PyTorch-style masks into ``(allowed, log_prior)`` of shape ``(N|1, H|1, L, S)``.

    ``allowed`` is bool, True where a query may attend (the convention of
    :mod:`bayesattn.functional`); ``log_prior`` collects float masks (additive). Either may be
    None.

    Args:
        attn_mask: ``(L, S)`` or ``(N * H, L, S)``; bool (True = not allowed) or float (added).
        key_padding_mask: ``(N, S)``; bool (True = padded) or float (added).
        is_causal: without ``attn_mask``, build the causal mask ``j <= i``.
        batch, num_heads, L, S: the sizes the masks must match.
        dtype: dtype of the float ``log_prior``.

    Raises:
        TypeError: a mask that is neither bool nor floating point.
        ValueError: a mask of the wrong shape; ``is_causal`` with ``L != S``.
    """
    allowed = None
    log_prior = None

    def add(m: torch.Tensor, name: str):
        nonlocal allowed, log_prior
        if m.dtype == torch.bool:
            allowed = ~m if allowed is None else allowed & ~m
        elif m.is_floating_point():
            m = m.to(dtype)
            log_prior = m if log_prior is None else log_prior + m
        else:
            raise TypeError(f"{name} must be a bool or floating-point tensor, got {m.dtype}")

    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor):
            raise TypeError(f"attn_mask must be a torch.Tensor, got {type(attn_mask).__name__}")
        if attn_mask.dim() == 2 and tuple(attn_mask.shape) == (L, S):
            add(attn_mask.view(1, 1, L, S), "attn_mask")
        elif attn_mask.dim() == 3 and tuple(attn_mask.shape) == (batch * num_heads, L, S):
            add(attn_mask.reshape(batch, num_heads, L, S), "attn_mask")
        else:
            raise ValueError(
                f"attn_mask must have shape (L, S) = ({L}, {S}) or (N * H, L, S) = "
                f"({batch * num_heads}, {L}, {S}), got {tuple(attn_mask.shape)}"
            )
    elif is_causal:
        if L != S:
            raise ValueError(f"is_causal needs L == S (self-attention), got L={L}, S={S}")
        causal = torch.ones(L, S, dtype=torch.bool).triu(1)
        add(causal.view(1, 1, L, S), "attn_mask")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor):
            raise TypeError(
                f"key_padding_mask must be a torch.Tensor, got {type(key_padding_mask).__name__}"
            )
        if tuple(key_padding_mask.shape) != (batch, S):
            raise ValueError(
                f"key_padding_mask must have shape (N, S) = ({batch}, {S}), "
                f"got {tuple(key_padding_mask.shape)}"
            )
        add(key_padding_mask.reshape(batch, 1, 1, S), "key_padding_mask")
    return allowed, log_prior


def bool_only(allowed, log_prior, kind: str):
    """Fold a float mask of 0 / -inf into ``allowed`` (bool ``(..., L, S)``, True = takes part)
    for kinds without an additive log-prior.

    Raises:
        ValueError: ``log_prior`` holds a finite value other than 0.
    """
    if log_prior is None:
        return allowed
    finite = torch.isfinite(log_prior)
    if bool((log_prior[finite] != 0).any()):
        raise ValueError(
            f"attention={kind!r} has no additive log-prior: float masks may only hold 0 and "
            "-inf (use a bool mask)"
        )
    extra = ~torch.isneginf(log_prior)
    return extra if allowed is None else allowed & extra


def pad_masks(attn_mask, key_padding_mask):
    """Allow attention to one appended key (torch's ``add_bias_kv`` / ``add_zero_attn``)."""
    if attn_mask is not None:
        attn_mask = F.pad(attn_mask, (0, 1))
    if key_padding_mask is not None:
        key_padding_mask = F.pad(key_padding_mask, (0, 1))
    return attn_mask, key_padding_mask


def sdpa_mask(allowed: torch.Tensor | None, log_prior: torch.Tensor | None):
    """One SDPA-style ``attn_mask`` from :func:`merge_masks`' ``(allowed, log_prior)``: bool
    when there is no float mask, else the float mask with ``-inf`` where not allowed."""
    if allowed is None or log_prior is None:
        return log_prior if allowed is None else allowed
    return log_prior.masked_fill(~allowed, -math.inf)
