"""Linear attention, the strong-prior limit of least-squares attention (docs/design.md,
"Least-squares attention")."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._core import _allowed, _check_call, _dropout_keys, is_validating

__all__ = ["linear_attention"]


def _feature_map(feature_map) -> Callable[[torch.Tensor], torch.Tensor]:
    if feature_map is None:
        return lambda x: x
    if feature_map == "elu":
        return _elu_feature
    if callable(feature_map):
        return feature_map
    raise ValueError(f"unknown feature_map {feature_map!r}; expected None, 'elu' or a callable")


def _elu_feature(x: torch.Tensor) -> torch.Tensor:
    """``elu(x) + 1`` (Katharopoulos et al. 2020), kept at least ``sqrt(tiny)`` of the dtype:
    ``elu(x) + 1 = exp(x)`` underflows to 0 for very negative ``x`` (e.g. a padded query), and
    then ``phi(q) . sum_j phi(k_j)`` would be 0; with the floor it is at least ``tiny``."""
    return (F.elu(x) + 1.0).clamp_min(torch.finfo(x.dtype).tiny ** 0.5)


def linear_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    *,
    feature_map=None,
    normalize=False,
    need_weights=False,
    validate_args=None,
):
    """Linear attention ``phi(Q) (phi(K)^T V)`` (Katharopoulos et al. 2020, eqs. 4-6).

    Computed right to left in ``O((L + S) E Ev)`` without a mask or with a mask that is the
    same for every query (``(..., 1, S)``: masked keys are removed from ``phi(K)^T V`` and
    ``sum_j phi(k_j)``); a per-query mask (or ``is_causal``) is applied to the explicit
    ``phi(Q) phi(K)^T`` (``O(L S)``). With ``normalize=True`` each row is divided by
    ``phi(q_i) . sum_j phi(k_j)`` over its allowed keys; a query with no allowed key outputs 0.
    The limit of :func:`least_squares_attention` under a strong prior:
    ``ridge * least_squares_attention -> Q K^T V`` as ``ridge -> inf``.

    Equivalent to::

        a = (phi(query) @ phi(key).mT) * attn_mask           # (..., L, S)
        a = a / a.sum(-1, keepdim=True) if normalize else a
        out = a @ value                                      # (out, a) with need_weights

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        attn_mask: bool, broadcastable to ``(..., L, S)``, True where a key takes part.
        dropout_p: probability of removing each key from the memory (per batch element).
        is_causal: query ``i`` sees keys ``j <= i``; not with ``attn_mask``.
        feature_map: ``None`` (identity), ``"elu"`` (``elu(x) + 1``, floored at
            ``sqrt(tiny)`` of the dtype so that it stays positive), or a callable
            mapping ``(..., N, E) -> (..., N, F)``.
        normalize: divide by the row sums of ``phi(Q) phi(K)^T``.
        need_weights: also return the implied weights ``(..., L, S)``.
        validate_args: check values (see :func:`set_validation`).

    Returns:
        ``(..., L, Ev)``, or ``(output, weights)``.

    Raises:
        TypeError: bad tensors as in :func:`softmax_attention`; a float ``attn_mask``.
        ValueError: bad tensors or masks; unknown ``feature_map``; ``normalize=True`` with a
            zero normaliser for a query that has allowed keys (use a positive feature map such
            as ``"elu"``; validation on).
    """
    validate = is_validating(validate_args)
    batch = _check_call(query, key, value, attn_mask, is_causal, dropout_p, validate,
                        bool_only=True)
    phi = _feature_map(feature_map)
    L, S = query.shape[-2], key.shape[-2]
    allowed = _allowed(attn_mask, is_causal, L, S, query.device)
    if dropout_p > 0:
        allowed = _dropout_keys(allowed, batch, L, S, dropout_p, query.device)
    phi_q, phi_k = phi(query), phi(key)
    if need_weights or (allowed is not None and allowed.shape[-2] != 1):
        a = phi_q @ phi_k.mT
        if allowed is not None:
            a = a * allowed.to(a.dtype)
        num, denom = a @ value, a.sum(-1, keepdim=True)
    else:
        if allowed is not None:
            phi_k = phi_k * allowed.mT.to(phi_k.dtype)
        num = phi_q @ (phi_k.mT @ value)
        denom = phi_q @ phi_k.sum(-2).unsqueeze(-1) if normalize else None
        a = None
    if not normalize:
        return (num, a) if need_weights else num
    has_key = None if allowed is None else allowed.any(-1, keepdim=True)
    if validate:
        bad = denom == 0 if has_key is None else (denom == 0) & has_key
        if bool(bad.any()):
            raise ValueError("normalize=True met a zero normaliser phi(q).sum_j phi(k_j); "
                             "use a positive feature_map such as 'elu'")
    safe = torch.where(denom == 0, torch.ones_like(denom), denom)
    out = torch.where(denom == 0, 0.0, num / safe)
    return (out, torch.where(denom == 0, 0.0, a / safe)) if need_weights else out
