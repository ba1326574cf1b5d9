"""Least-squares ("Intention") attention: the Bayesian linear-regression posterior mean from
keys to values (docs/design.md, "Least-squares attention")."""

from __future__ import annotations

import torch

from .._checks import check_positive
from ._core import (
    _allowed,
    _check_call,
    _dropout_keys,
    _solve_dtype,
    is_validating,
    ridge_qr,
)
from .softmax import _default_scale, softmax_log_weights

__all__ = ["least_squares_attention", "softmax_least_squares_attention"]


def _ls_solve(query, key, value, ridge, need_variance, validate):
    """Unmasked ridge regression by QR: ``(mean (..., L, Ev), quad (..., L) or None)``.

    ``quad = q^T (K^T K + ridge I)^{-1} q``. Primal (``S >= E``): ``K = Q R`` from the QR of
    ``[K; sqrt(ridge) I_E]``, ``W = R^{-1} Q^T V``, ``quad = |R^{-T} q|^2``. Dual (``S < E``):
    ``K^T = Q R`` from the QR of ``[K^T; sqrt(ridge) I_S]``, mean ``(q Q) R^{-T} V`` and
    ``quad = (|q|^2 - |Q^T q|^2) / ridge`` (Woodbury). Neither forms ``K^T K``.
    """
    S, E = key.shape[-2:]
    if S >= E:
        q_top, r = ridge_qr(key, ridge, validate=validate, what="K")
        coef = torch.linalg.solve_triangular(r, q_top.mT @ value, upper=True)
        mean = query @ coef
        if not need_variance:
            return mean, None
        half = torch.linalg.solve_triangular(r.mT, query.mT, upper=False)
        return mean, (half * half).sum(-2)
    q_top, r = ridge_qr(key.mT, ridge, validate=validate, what="K^T")  # q_top (..., E, S)
    proj = query @ q_top  # (..., L, S)
    mean = proj @ torch.linalg.solve_triangular(r.mT, value, upper=False)
    if not need_variance:
        return mean, None
    return mean, ((query * query).sum(-1) - (proj * proj).sum(-1)) / ridge


def least_squares_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    *,
    ridge=1.0,
    noise=1.0,
    need_weights=False,
    return_variance=False,
    validate_args=None,
):
    """Least-squares attention: the Bayesian linear regression posterior mean from keys to values.

    ``out = Q (K^T K + ridge I)^{-1} K^T V`` ("Intention", Garnelo & Czarnecki 2023,
    arXiv 2305.10203): the posterior-mean prediction at ``q`` of ``v_j = W^T k_j + eps``,
    ``eps ~ N(0, noise^2 I)``, ``W[:, c] ~ N(0, (noise^2 / ridge) I)``. Solved by QR of
    ``[K; sqrt(ridge) I]`` (never the normal equations, which square the condition number) in
    ``O(S E^2 + L E Ev)``, linear in sequence length; when ``S < E`` the dual (Woodbury) form
    ``Q K^T (K K^T + ridge I)^{-1} V`` (the minimum-norm solution for ``ridge = 0``).

    A bool ``attn_mask`` removes keys from the regression: a mask that is the same for every
    query (shape ``(..., 1, S)``) zeroes the masked keys and values, which removes them exactly
    from ``K^T K`` and ``K^T V``; a per-query mask ``(..., L, S)`` (or ``is_causal``) gives each
    query its own regression on the keys it may attend to (``O(L S E^2)``).

    Equivalent to::

        m = attn_mask[..., :, :, None]                     # per query, 1 = key takes part
        Kq, Vq = key[..., None, :, :] * m, value[..., None, :, :] * m
        A = Kq.mT @ Kq + ridge * I
        out = (query[..., :, None, :] @ torch.linalg.solve(A, Kq.mT @ Vq))[..., 0, :]

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        attn_mask: bool, broadcastable to ``(..., L, S)``, True where a key takes part (no
            float masks: this model has no prior over keys).
        dropout_p: probability of removing each key from the memory (per batch element).
        is_causal: query ``i`` regresses on keys ``j <= i``; not with ``attn_mask``.
        ridge: ``lambda = noise^2 / prior variance of W``: a non-negative number (0 is
            ordinary least squares; needs ``K`` of full column rank, or full row rank when
            ``S < E``) or a positive 0-dim tensor (learnable).
        noise: observation-noise standard deviation ``sigma`` (units of the values), positive;
            it scales only the returned variance.
        need_weights: also return the implied weights ``(..., L, S)`` (``out = weights @ V``;
            signed).
        return_variance: also return the predictive variance per output dim,
            ``noise^2 (1 + q^T (K^T K + ridge I)^{-1} q)``, shape ``(..., L)``.
        validate_args: check values (see :func:`set_validation`).

    Returns:
        ``(..., L, Ev)``; with ``need_weights`` and/or ``return_variance`` a tuple
        ``(output[, weights][, variance])``. Half / bfloat16 inputs are solved in float32 and
        returned in their dtype.

    Raises:
        TypeError: bad tensors as in :func:`softmax_attention`; a float ``attn_mask``.
        ValueError: bad tensors or masks; negative or non-finite ``ridge``; non-positive
            ``noise``; ``return_variance`` with ``ridge = 0`` and ``S < E`` (unbounded).
        IllConditionedError: ``ridge = 0`` and the keys are numerically rank deficient in the
            working precision (validation on).
    """
    validate = is_validating(validate_args)
    batch = _check_call(query, key, value, attn_mask, is_causal, dropout_p, validate,
                        bool_only=True)
    ridge = check_positive("ridge", ridge, allow_zero=True, check_values=validate)
    noise = check_positive("noise", noise, check_values=validate)
    L, S, E = query.shape[-2], key.shape[-2], key.shape[-1]
    if return_variance and S < E and not isinstance(ridge, torch.Tensor) and ridge == 0:
        raise ValueError("return_variance needs ridge > 0 when S < E (unbounded variance)")
    dtype = query.dtype
    work = _solve_dtype(dtype)
    query, key, value = query.to(work), key.to(work), value.to(work)
    if isinstance(ridge, torch.Tensor):
        ridge = ridge.to(work)
    allowed = _allowed(attn_mask, is_causal, L, S, query.device)
    if dropout_p > 0:
        allowed = _dropout_keys(allowed, batch, L, S, dropout_p, query.device)
    if need_weights:  # regress the identity as well: out = weights @ V
        eye = torch.eye(S, dtype=work, device=query.device).expand(*value.shape[:-2], S, S)
        value = torch.cat([value, eye], dim=-1)
    if allowed is None or allowed.shape[-2] == 1:
        if allowed is not None:
            m = allowed.mT.to(work)  # (..., S, 1)
            key, value = key * m, value * m
        mean, quad = _ls_solve(query, key, value, ridge, return_variance, validate)
    else:  # a per-query mask: query i regresses on the keys it may attend to
        m = allowed.unsqueeze(-1).to(work)  # (..., L, S, 1)
        mean, quad = _ls_solve(query.unsqueeze(-2), key.unsqueeze(-3) * m,
                               value.unsqueeze(-3) * m, ridge, return_variance, validate)
        mean = mean.squeeze(-2)
        quad = None if quad is None else quad.squeeze(-1)
    Ev = mean.shape[-1] - (S if need_weights else 0)
    result = [mean[..., :Ev].to(dtype)]
    if need_weights:
        result.append(mean[..., Ev:].to(dtype))
    if return_variance:
        result.append((noise**2 * (1.0 + quad)).to(dtype))
    return result[0] if len(result) == 1 else tuple(result)


def softmax_least_squares_attention(
    query, key, value, scale=None, *, ridge=1.0, validate_args=None
):
    """Softmax least-squares attention: Intention's dual form with softmax similarities.

    ``out = A_QK (A_KK + ridge I)^{-1} V`` with ``A_QK = softmax(scale Q K^T)`` and
    ``A_KK = softmax(scale K K^T)`` (row-wise softmax over the keys). Our reading of the softmax
    variant of Garnelo & Czarnecki (2023, arXiv 2305.10203, section on generalising regular
    attention): replace the linear similarity ``Q K^T`` of the dual form of
    :func:`least_squares_attention` by the softmax similarity. It keeps the same strong-prior
    limit: ``ridge * out -> softmax_attention(Q, K, V)`` as ``ridge -> inf``, just as
    ``ridge * least_squares_attention -> Q K^T V`` (linear attention). Cost ``O(S^3 + L S Ev)``
    (an LU solve: ``A_KK`` is not symmetric).

    Equivalent to::

        a_qk = torch.softmax(scale * query @ key.mT, -1)
        a_kk = torch.softmax(scale * key @ key.mT, -1)
        out = a_qk @ torch.linalg.solve(a_kk + ridge * I, value)

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        scale: logit multiplier (SDPA's), positive; default ``1/sqrt(E)``.
        ridge: positive number.
        validate_args: check values (see :func:`set_validation`).

    Returns:
        ``(..., L, Ev)`` (half / bfloat16 solved in float32, returned in the input dtype).

    Raises:
        TypeError, ValueError: bad tensors as in :func:`softmax_attention`; non-positive
            ``scale`` or ``ridge``; a singular system (validation on).
    """
    validate = is_validating(validate_args)
    _check_call(query, key, value, None, False, 0.0, validate)
    ridge = check_positive("ridge", ridge, check_values=validate)
    scale = _default_scale(scale, query.shape[-1], validate)
    dtype, work = query.dtype, _solve_dtype(query.dtype)
    query, key, value = query.to(work), key.to(work), value.to(work)
    a_qk = softmax_log_weights(query, key, scale=scale, validate_args=validate).exp()
    a_kk = softmax_log_weights(key, key, scale=scale, validate_args=False).exp()
    system = a_kk + ridge * torch.eye(a_kk.shape[-1], dtype=work, device=a_kk.device)
    batch = torch.broadcast_shapes(system.shape[:-2], value.shape[:-2])
    system = system.expand(*batch, *system.shape[-2:])
    rhs = value.expand(*batch, *value.shape[-2:])
    solved, info = torch.linalg.solve_ex(system, rhs)
    if validate and bool((info != 0).any()):
        raise ValueError("softmax(K K^T) + ridge I is singular; increase ridge")
    return (a_qk @ solved).to(dtype)
