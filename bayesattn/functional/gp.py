"""Gaussian-process attention: kernelised least squares (docs/design.md,
"Least-squares attention")."""

from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_positive, check_qkv
from ._core import _safe_sqrt, _solve_dtype, _sq_dist, cholesky, is_validating

__all__ = ["GP_KERNELS", "gp_kernel", "gp_attention"]

#: Covariance functions of :func:`gp_attention`.
GP_KERNELS = ("rbf", "matern12", "matern32", "matern52")


def gp_kernel(a, b, *, kernel="rbf", lengthscale=1.0) -> torch.Tensor:
    """Stationary covariance ``k(a_i, b_j)`` with unit amplitude, ``(..., N, M)``.

    With ``r = |(a - b) / lengthscale|``: ``rbf`` ``exp(-r^2/2)``; ``matern12`` ``exp(-r)``;
    ``matern32`` ``(1 + sqrt3 r) exp(-sqrt3 r)``; ``matern52``
    ``(1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)`` (Rasmussen & Williams 2006, eqs. 4.9, 4.17).

    Equivalent to::

        r = torch.cdist(a / lengthscale, b / lengthscale)
        {"rbf": exp(-r**2 / 2), "matern12": exp(-r), ...}[kernel]

    Args:
        a: ``(..., N, E)``.
        b: ``(..., M, E)``.
        kernel: one of :data:`GP_KERNELS`.
        lengthscale: positive number, 0-dim tensor or ``(E,)`` tensor (ARD), feature units.

    Raises:
        ValueError: unknown ``kernel``, non-positive ``lengthscale``.
    """
    kernel = check_choice("kernel", kernel, GP_KERNELS)
    lengthscale = check_positive("lengthscale", lengthscale, feature_dim=a.shape[-1],
                                 check_values=is_validating())
    r2 = _sq_dist(a / lengthscale, b / lengthscale)
    if kernel == "rbf":
        return torch.exp(-0.5 * r2)
    r = _safe_sqrt(r2)
    if kernel == "matern12":
        return torch.exp(-r)
    if kernel == "matern32":
        return (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
    return (1 + math.sqrt(5) * r + (5.0 / 3.0) * r2) * torch.exp(-math.sqrt(5) * r)


def gp_attention(
    query, key, value, *, kernel="rbf", lengthscale=1.0, ridge=1e-2, return_variance=False,
    key_mask=None, is_causal=False, validate_args=None,
):
    """Gaussian-process attention: the kernelised least-squares attention.

    Posterior mean ``k(Q, K) (k(K, K) + ridge I)^{-1} V`` and latent variance
    ``k(q, q) - k(q, K) (k(K, K) + ridge I)^{-1} k(K, q)`` of a zero-mean GP with unit
    amplitude and noise variance ``ridge`` (Rasmussen & Williams 2006, eqs. 2.25-2.26). The
    variance is the latent function's, without noise, as scikit-learn's
    ``GaussianProcessRegressor.predict(return_std=True)`` reports it. Cholesky solve,
    ``O(S^3 + L S (E + Ev))``; half / bfloat16 solved in float32.

    Equivalent to::

        A = gp_kernel(key, key) + ridge * I
        mean = gp_kernel(query, key) @ torch.linalg.solve(A, value)

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        kernel: one of :data:`GP_KERNELS`.
        lengthscale: positive number, 0-dim tensor or ``(E,)`` tensor, feature units.
        ridge: noise variance relative to the unit amplitude, non-negative.
        return_variance: also return the latent variance ``(..., L)``.
        key_mask: bool, broadcastable to ``(..., 1, S)``, True where a key takes part (the
            same keys for every query, e.g. ``~key_padding_mask``): the result is exactly that
            of the regression on the kept keys only (masked keys are made independent of the
            rest, ``k(K, K)`` block-diagonal, and get zero cross-covariance and value).
        is_causal: query ``i`` regresses on keys ``j <= i`` only (the top-left aligned mask of
            :func:`torch.nn.functional.scaled_dot_product_attention`), each query its own GP
            posterior, combined with ``key_mask`` if given. Exact and cheap: with
            ``A + ridge I = C C^T`` (lower Cholesky factor ``C``), the factor of the leading
            ``i x i`` block is the leading block of ``C``, and forward substitution of a
            vector's first ``i`` entries uses only those entries, so with ``a = C^{-1} k(K, q_i)``
            and ``B = C^{-1} V`` the regression on the first ``i`` keys is
            ``mean_i = sum_{j <= i} a_j B_j`` and ``var_i = 1 - sum_{j <= i} a_j^2``
            (``O(S^3 + S^2 (L + Ev))``, one factorisation for all queries).
        validate_args: check values (see :func:`set_validation`).

    Returns:
        ``(..., L, Ev)``, or ``(mean, variance)``.

    Raises:
        TypeError, ValueError: bad tensors as in :func:`softmax_attention`; unknown ``kernel``;
            non-positive ``lengthscale``; negative ``ridge``; ``key_mask`` not bool or not
            broadcastable to ``(..., 1, S)``.
        NotPositiveDefiniteError: ``k(K, K) + ridge I`` is not positive definite (duplicate
            keys with ``ridge = 0``; validation on).
    """
    validate = is_validating(validate_args)
    check_qkv(query, key, value, check_values=validate)
    ridge = check_positive("ridge", ridge, allow_zero=True, check_values=validate)
    dtype, work = query.dtype, _solve_dtype(query.dtype)
    query, key, value = query.to(work), key.to(work), value.to(work)
    k_kk = gp_kernel(key, key, kernel=kernel, lengthscale=lengthscale)
    k_qk = gp_kernel(query, key, kernel=kernel, lengthscale=lengthscale)
    eye = torch.eye(k_kk.shape[-1], dtype=work, device=k_kk.device)
    if key_mask is not None:
        keep = _check_key_mask(key_mask, key.shape[-2]).to(work)  # (..., 1, S)
        k_kk = k_kk * keep * keep.mT + eye * (1.0 - keep)  # masked keys: independent
        k_qk = k_qk * keep
        value = value * keep.mT
    k_kk = k_kk + ridge * eye
    chol = cholesky(k_kk, "k(K, K) + ridge I", validate=validate)
    batch = torch.broadcast_shapes(chol.shape[:-2], value.shape[:-2])
    chol_b = chol.expand(*batch, *chol.shape[-2:])
    if is_causal:
        return _causal(chol, chol_b, k_qk, value.expand(*batch, *value.shape[-2:]), dtype,
                       return_variance)
    mean = k_qk @ torch.cholesky_solve(value.expand(*batch, *value.shape[-2:]), chol_b)
    if not return_variance:
        return mean.to(dtype)
    half = torch.linalg.solve_triangular(chol, k_qk.mT, upper=False)
    return mean.to(dtype), (1.0 - (half * half).sum(-2)).clamp_min(0.0).to(dtype)


def _causal(chol, chol_b, k_qk, value, dtype, return_variance):
    """Per-query regressions on the key prefixes ``j <= i`` (see :func:`gp_attention`)."""
    S, L = k_qk.shape[-1], k_qk.shape[-2]
    prefix = torch.ones(S, L, dtype=torch.bool, device=k_qk.device).triu()  # [j, i]: j <= i
    a = torch.linalg.solve_triangular(chol, k_qk.mT, upper=False)  # (..., S, L)
    a = a * prefix
    b = torch.linalg.solve_triangular(chol_b, value, upper=False)  # (..., S, Ev)
    mean = a.mT @ b
    if not return_variance:
        return mean.to(dtype)
    return mean.to(dtype), (1.0 - (a * a).sum(-2)).clamp_min(0.0).to(dtype)


def _check_key_mask(key_mask, S: int) -> torch.Tensor:
    """``key_mask`` as a bool ``(..., 1, S)`` tensor (True = key takes part)."""
    if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool:
        raise TypeError("key_mask must be a bool tensor, True where a key takes part")
    if key_mask.dim() < 2 or key_mask.shape[-2] != 1 or key_mask.shape[-1] != S:
        raise ValueError(f"key_mask must have shape (..., 1, {S}), got {tuple(key_mask.shape)}")
    return key_mask
