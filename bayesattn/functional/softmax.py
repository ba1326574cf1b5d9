"""Scaled dot-product softmax attention as a posterior mean (docs/design.md, "Key-selection
models")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_positive
from ._core import (
    _bias,
    _check_call,
    _check_magnitude,
    _legacy,
    _log_normalise,
    _max_norm,
    _sdpa,
    is_validating,
)

__all__ = ["softmax_log_weights", "softmax_attention"]


def _default_scale(scale, E: int, validate: bool):
    """SDPA's ``scale``: a multiplier of the logits (inverse key-selection variance
    ``1 / sigma^2``, *not* Pyro's ``scale``, a standard deviation); default ``1/sqrt(E)``."""
    return 1.0 / math.sqrt(E) if scale is None else check_positive(
        "scale", scale, check_values=validate
    )


def softmax_log_weights(
    query, key, attn_mask=None, is_causal=False, scale=None, *, validate_args=None, **legacy
) -> torch.Tensor:
    """Log attention weights of scaled dot-product attention, ``(..., L, S)``.

    ``log w_ij = log_softmax_j(scale * q_i . k_j + b_ij)`` with ``b`` from ``attn_mask`` (0 or
    ``-inf`` for a bool mask, the values of a float mask); all ``-inf`` for a query with no
    allowed key. The posterior ``log p(z_i = j | q_i)`` of the Gaussian key-selection model
    with variance ``1/scale`` and prior ``log pi_ij = b_ij + scale |k_j|^2 / 2``.

    Equivalent to::

        logits = scale * query @ key.mT + bias      # bias: 0 / -inf, or the float mask
        torch.log_softmax(logits, dim=-1)           # rows all -inf stay -inf

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        attn_mask, is_causal, scale, validate_args: as in :func:`softmax_attention`.

    Raises:
        TypeError, ValueError: as :func:`softmax_attention`.
    """
    attn_mask, _ = _legacy(attn_mask, False, legacy, "softmax_log_weights")
    validate = is_validating(validate_args)
    _check_call(query, key, key, attn_mask, is_causal, 0.0, validate)
    scale = _default_scale(scale, query.shape[-1], validate)
    if validate:
        _check_magnitude(float(scale) * _max_norm(query) * _max_norm(key), query.dtype,
                         "softmax logits scale * q.k")
    logits = (query @ key.mT) * scale
    bias = _bias(attn_mask, is_causal, query.shape[-2], key.shape[-2], logits.dtype,
                 logits.device)
    return _log_normalise(logits if bias is None else logits + bias)


def softmax_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    *,
    need_weights=False,
    validate_args=None,
    **legacy,
):
    """Scaled dot-product softmax attention (Vaswani et al. 2017, eq. 1), SDPA's conventions.

    ``out_i = sum_j w_ij v_j`` with ``w_ij = softmax_j(scale * q_i . k_j + b_ij)``. As
    inference (docs/design.md, "Key-selection models"): the posterior mean of ``v_z`` in the
    key-selection model ``q_i | z_i = j ~ N(k_j, I / scale)`` with prior
    ``log p(z_i = j) = b_ij + scale |k_j|^2 / 2 + const``. Without ``need_weights`` this is
    :func:`torch.nn.functional.scaled_dot_product_attention` on 4-D views of the inputs (any
    batch rank), so its fused kernels apply and no ``L x S`` matrix is built.

    Equivalent to::

        w = softmax_log_weights(query, key, attn_mask, is_causal, scale).exp()
        w = torch.dropout(w, dropout_p, train=True)
        out = w @ value                              # (out, w) with need_weights

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``. Batch dims broadcast; all three share one float dtype.
        attn_mask: bool ``(..., L, S)`` (broadcastable), True where a query may attend (SDPA's
            convention), or a float mask added to the logits (an additive log-prior over keys;
            ``-inf`` excludes).
        dropout_p: probability of zeroing a weight (SDPA's dropout, rescaled by
            ``1 / (1 - p)``).
        is_causal: query ``i`` attends to keys ``j <= i`` (SDPA's top-left causal mask); not
            with ``attn_mask``.
        scale: logit multiplier, positive number or 0-dim tensor; default ``1/sqrt(E)``. In the
            model the inverse variance ``1/sigma^2`` (not Pyro's ``scale``, an sd).
        need_weights: also return the weights ``(..., L, S)`` (then computed explicitly).
        validate_args: check values (see :func:`set_validation`); default the global switch.

    Returns:
        ``(..., L, Ev)``, or ``(output, weights)``. A query with no allowed key gets output 0
        and weights 0 (an empty posterior; torch's SDPA also outputs 0).

    Raises:
        TypeError: non-tensors, integer tensors, mixed dtypes, a mask neither bool nor float.
        ValueError: NaN/inf inputs, ``E = 0``, mismatched ``E`` or ``S``, ``S = 0``, batch
            dims or masks that do not broadcast, non-positive ``scale``, ``attn_mask`` with
            ``is_causal``, ``dropout_p`` outside ``[0, 1)``, magnitudes whose logits overflow
            the dtype.
    """
    attn_mask, need_weights = _legacy(attn_mask, need_weights, legacy, "softmax_attention")
    validate = is_validating(validate_args)
    _check_call(query, key, value, attn_mask, is_causal, dropout_p, validate)
    scale = _default_scale(scale, query.shape[-1], validate)
    if validate:
        _check_magnitude(float(scale) * _max_norm(query) * _max_norm(key), query.dtype,
                         "softmax logits scale * q.k")
    if need_weights:
        w = softmax_log_weights(query, key, attn_mask, is_causal, scale,
                                validate_args=False).exp()
        if dropout_p > 0:
            w = F.dropout(w, dropout_p)
        return w @ value, w
    if is_causal:  # SDPA's own causal path: no mask tensor
        return _sdpa(query, key, value, None, scale, dropout_p, is_causal=True)
    bias = _bias(attn_mask, False, query.shape[-2], key.shape[-2], query.dtype, query.device)
    return _sdpa(query, key, value, bias, scale, dropout_p)
