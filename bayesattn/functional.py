"""Closed-form attention: the fast path (pure torch; this module never imports pyro).

Every function here is the exact posterior mean of one of the Pyro models in
:mod:`bayesattn.models` (DESIGN.md sections 1 and 3). Shape legend, as in
:func:`torch.nn.functional.scaled_dot_product_attention`: ``...`` batch dims (batch, heads),
``L`` queries, ``S`` keys/values, ``E`` query/key dim, ``Ev`` value dim::

    query (..., L, E)   key (..., S, E)   value (..., S, Ev)   ->   output (..., L, Ev)
    weights (..., L, S)   mask (..., L, S) bool, True = may attend   log_prior (..., L, S)

Batch dims broadcast. A query whose mask (or ``-inf`` log-prior) allows no key has an empty
posterior: its weights are all 0 and its output is 0, as in PyTorch's SDPA.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_mask, check_positive, check_qkv

__all__ = [
    "KERNELS",
    "GP_KERNELS",
    "softmax_log_weights",
    "softmax_attention",
    "kernel_log_weights",
    "kernel_attention",
    "least_squares_attention",
    "softmax_least_squares_attention",
    "gp_kernel",
    "gp_attention",
    "linear_attention",
]

#: Kernels of :func:`kernel_attention` (key-selection likelihoods, DESIGN.md section 1).
KERNELS = ("gaussian", "laplace", "cauchy", "epanechnikov", "boxcar", "von_mises_fisher")
#: Kernels with bounded support: a query may have no key in range.
COMPACT_KERNELS = ("epanechnikov", "boxcar")
#: Covariance functions of :func:`gp_attention`.
GP_KERNELS = ("rbf", "matern12", "matern32", "matern52")


# ----------------------------------------------------------------------------- helpers
def _key_bias(mask, log_prior, dtype):
    """Fold ``mask`` and ``log_prior`` into one additive bias (or None)."""
    if log_prior is None:
        return None if mask is None else torch.zeros((), dtype=dtype).masked_fill(~mask, -math.inf)
    bias = log_prior.to(dtype)
    return bias if mask is None else bias.masked_fill(~mask, -math.inf)


def _log_normalise(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax over the last dim; rows that are all ``-inf`` stay all ``-inf``."""
    row_max = logits.amax(-1, keepdim=True)
    empty = torch.isneginf(row_max)
    out = torch.log_softmax(logits.masked_fill(empty, 0.0), dim=-1)
    return out.masked_fill(empty, -math.inf)


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(..., L, S)``: a ``(..., L, E)``, b ``(..., S, E)``.

    Both are first centred on the mean of ``b`` (distances are translation invariant), so the
    expansion ``|a|^2 + |b|^2 - 2 a.b`` does not cancel catastrophically when the points share
    a large offset (float32).
    """
    a, b = _centre(a, b)
    d2 = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)
    return d2.clamp_min(0.0)


def _centre(a: torch.Tensor, b: torch.Tensor):
    """Subtract the mean of the rows of ``b`` from ``a`` and ``b``."""
    centre = b.mean(-2, keepdim=True)
    return a - centre, b - centre


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with gradient 0 (not NaN) where ``x == 0``."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


def _broadcast_batch(a: torch.Tensor, b: torch.Tensor):
    """Expand two ``(..., n, m)`` tensors to their common batch dims (no copy)."""
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return a.expand(*batch, *a.shape[-2:]), b.expand(*batch, *b.shape[-2:])


def _cholesky(matrix: torch.Tensor, what: str) -> torch.Tensor:
    chol, info = torch.linalg.cholesky_ex(matrix)
    if bool((info != 0).any()):
        raise ValueError(
            f"{what} is not positive definite (Cholesky failed); increase ridge"
        )
    return chol


# ----------------------------------------------------------------------------- softmax
def softmax_log_weights(query, key, *, scale=None, mask=None, log_prior=None) -> torch.Tensor:
    """Log attention weights of scaled dot-product attention, ``(..., L, S)``.

    ``log w_ij = log_softmax_j(scale * q_i . k_j + log_prior_ij)`` over the keys a query may
    attend to (``-inf`` elsewhere; all ``-inf`` for a query with no allowed key). This is the
    posterior ``log p(z_i = j | q_i)`` of the Gaussian key-selection model with variance
    ``1/scale`` and prior ``log pi_ij = log_prior_ij + scale |k_j|^2 / 2`` (DESIGN.md section 1).

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        scale: positive number (default ``1/sqrt(E)``) or 0-dim tensor.
        mask: bool ``(..., L, S)``, True where a query may attend.
        log_prior: additive log-prior over keys, ``(..., L, S)``.

    Raises:
        TypeError, ValueError: on bad input (see :func:`softmax_attention`).
    """
    check_qkv(query, key, key)
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2])
    check_mask(mask, log_prior, batch, query.shape[-2], key.shape[-2])
    scale = _default_scale(scale, query.shape[-1])
    logits = (query @ key.transpose(-1, -2)) * scale
    bias = _key_bias(mask, log_prior, logits.dtype)
    return _log_normalise(logits if bias is None else logits + bias)


def _default_scale(scale, E: int):
    return 1.0 / math.sqrt(E) if scale is None else check_positive("scale", scale)


def softmax_attention(
    query, key, value, *, scale=None, mask=None, log_prior=None, return_weights=False
):
    """Scaled dot-product softmax attention (Vaswani et al. 2017, eq. 1).

    ``out_i = sum_j w_ij v_j`` with ``w_ij = softmax_j(scale * q_i . k_j + log_prior_ij)``,
    restricted to the keys that ``mask`` allows. As inference (DESIGN.md section 1): the
    posterior mean of ``v_z`` in the key-selection model ``q_i | z_i = j ~ N(k_j, I / scale)``
    with prior ``log p(z_i = j) = log_prior_ij + scale |k_j|^2 / 2 + const``.

    Without ``return_weights`` this calls :func:`torch.nn.functional.scaled_dot_product_attention`,
    so PyTorch's fused kernels apply.

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``. Batch dims broadcast; all three share one float dtype.
        scale: positive number or 0-dim tensor; default ``1/sqrt(E)`` (inverse key-selection
            variance, ``1/sigma^2``).
        mask: bool ``(..., L, S)``, True where a query may attend (SDPA's convention).
        log_prior: float ``(..., L, S)`` additive log-prior over keys (``-inf`` = excluded).
        return_weights: also return the weights ``(..., L, S)``.

    Returns:
        ``(..., L, Ev)``, or ``(output, weights)``. A query with no allowed key gets output 0
        and weights 0.

    Raises:
        TypeError: non-tensors, integer tensors, mixed dtypes, non-bool ``mask``.
        ValueError: NaN/inf inputs, mismatched ``E`` or ``S``, ``S = 0``, batch dims or masks
            that do not broadcast, non-positive ``scale``.
    """
    batch = check_qkv(query, key, value)
    check_mask(mask, log_prior, batch, query.shape[-2], key.shape[-2])
    scale = _default_scale(scale, query.shape[-1])
    if return_weights:
        log_w = softmax_log_weights(query, key, scale=scale, mask=mask, log_prior=log_prior)
        weights = log_w.exp()
        return weights @ value, weights
    bias = _key_bias(mask, log_prior, query.dtype)
    return _sdpa(query, key, value, bias, scale)


def _sdpa(query, key, value, bias, scale):
    """SDPA with broadcast batch dims (SDPA itself wants them equal)."""
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    if bias is not None and bias.dim() > 2:  # a mask/log-prior may carry extra batch dims
        batch = torch.broadcast_shapes(batch, bias.shape[:-2])
    q = query.expand(*batch, *query.shape[-2:])
    k = key.expand(*batch, *key.shape[-2:])
    v = value.expand(*batch, *value.shape[-2:])
    if isinstance(scale, torch.Tensor):  # SDPA takes a Python float: fold a tensor scale into q
        q, scale = q * scale, 1.0
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


# ----------------------------------------------------------------------------- kernels
def _check_bandwidth(kernel, bandwidth, E):
    bandwidth = check_positive("bandwidth", bandwidth, feature_dim=E)
    if kernel == "von_mises_fisher" and isinstance(bandwidth, torch.Tensor) and bandwidth.dim():
        raise ValueError("bandwidth must be a scalar for the von_mises_fisher kernel")
    return bandwidth


def _kernel_logits(kernel, query, key, bandwidth):
    """Unnormalised log-kernel ``log K(q_i, k_j)`` ``(..., L, S)`` and the scaled ``r^2``."""
    if kernel == "von_mises_fisher":
        cos = F.normalize(query, dim=-1) @ F.normalize(key, dim=-1).transpose(-1, -2)
        return cos / bandwidth, None
    qs, ks = _centre(query / bandwidth, key / bandwidth)
    if kernel == "gaussian":
        # -|q-k|^2/2 up to the per-query constant -|q|^2/2, which the normalisation removes.
        return qs @ ks.transpose(-1, -2) - 0.5 * (ks * ks).sum(-1).unsqueeze(-2), None
    r2 = _sq_dist(qs, ks)
    if kernel == "laplace":
        return -_safe_sqrt(r2), r2
    if kernel == "cauchy":
        return -torch.log1p(r2), r2
    if kernel == "epanechnikov":
        return torch.where(r2 < 1, torch.log1p(-r2.clamp_max(1.0)), -math.inf), r2
    return torch.where(r2 <= 1, 0.0, -math.inf).to(r2.dtype), r2  # boxcar


def kernel_log_weights(
    query, key, *, kernel="gaussian", bandwidth=1.0, mask=None, log_prior=None
) -> torch.Tensor:
    """Log Nadaraya-Watson attention weights ``log w_ij``, ``(..., L, S)``.

    ``w_ij = K(q_i, k_j) pi_ij / sum_l K(q_i, k_l) pi_il`` with ``pi = exp(log_prior)`` and
    ``mask``: the posterior ``p(z_i = j | q_i)`` of the key-selection model whose likelihood is
    the kernel (DESIGN.md section 1). See :func:`kernel_attention` for kernels and the fallback
    of compact kernels.

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        kernel, bandwidth, mask, log_prior: as in :func:`kernel_attention`.

    Raises:
        TypeError, ValueError: as :func:`kernel_attention` (unknown kernel, bad bandwidth,
            bad tensors or masks).
    """
    check_qkv(query, key, key)
    kernel = check_choice("kernel", kernel, KERNELS)
    bandwidth = _check_bandwidth(kernel, bandwidth, query.shape[-1])
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2])
    check_mask(mask, log_prior, batch, query.shape[-2], key.shape[-2])
    logits, r2 = _kernel_logits(kernel, query, key, bandwidth)
    bias = _key_bias(mask, log_prior, logits.dtype)
    if bias is not None:
        logits = logits + bias
    if kernel in COMPACT_KERNELS:
        logits = _nearest_key_fallback(logits, r2, bias)
    return _log_normalise(logits)


def _nearest_key_fallback(logits, r2, bias):
    """Rows with no key in range but some allowed key: all weight on the nearest allowed key.

    This is the limit of the compact kernel as the bandwidth grows until the first key enters
    its support. Ties share the weight equally.
    """
    row_empty = torch.isneginf(logits.amax(-1, keepdim=True))
    if not bool(row_empty.any()):
        return logits
    allowed = torch.ones_like(r2, dtype=torch.bool) if bias is None else ~torch.isneginf(bias)
    allowed = allowed.expand_as(logits)
    r2_allowed = r2.expand_as(logits).masked_fill(~allowed, math.inf)
    nearest = allowed & (r2_allowed == r2_allowed.amin(-1, keepdim=True))
    fallback = torch.zeros_like(logits).masked_fill(~nearest, -math.inf)
    return torch.where(row_empty, fallback, logits)


def kernel_attention(
    query,
    key,
    value,
    *,
    kernel="gaussian",
    bandwidth=1.0,
    mask=None,
    log_prior=None,
    return_weights=False,
):
    """Nadaraya-Watson kernel attention (Nadaraya 1964; Watson 1964; D2L section 11.2).

    ``out_i = sum_j w_ij v_j``, ``w_ij proportional to K(q_i, k_j) pi_ij``. With
    ``r = |(q - k) / bandwidth|`` (Euclidean):

    ===================  ==============================
    ``gaussian``         ``exp(-r^2 / 2)``
    ``laplace``          ``exp(-r)``
    ``cauchy``           ``1 / (1 + r^2)``
    ``epanechnikov``     ``max(0, 1 - r^2)``
    ``boxcar``           ``1[r <= 1]``
    ``von_mises_fisher`` ``exp(cos(q, k) / bandwidth)``
    ===================  ==============================

    As inference: the posterior mean of ``v_z`` when ``q_i | z_i = j`` has density
    proportional to the kernel around ``k_j`` and ``p(z_i = j) = pi_ij`` (DESIGN.md section 1).
    The Gaussian kernel runs through :func:`torch.nn.functional.scaled_dot_product_attention`
    with ``scale = 1`` on ``q / bandwidth``, ``k / bandwidth`` and the additive key bias
    ``-|k_j / bandwidth|^2 / 2`` (the ``|q|^2`` term cancels), so unless weights are requested
    no ``L x S`` matrix is built by this function; ``von_mises_fisher`` also runs through SDPA.

    Compact kernels (``epanechnikov``, ``boxcar``): a query with no allowed key inside the
    support puts all its weight on the nearest allowed key (ties share equally), the limit of
    growing the bandwidth until one key enters. A query with no allowed key at all gets output 0.

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        kernel: one of :data:`KERNELS`.
        bandwidth: positive number, 0-dim tensor, or ``(E,)`` tensor of per-feature bandwidths
            (ARD); in the units of the query/key features. Scalar only for ``von_mises_fisher``
            (where it is ``1 / kappa``).
        mask: bool ``(..., L, S)``, True where a query may attend.
        log_prior: float ``(..., L, S)`` additive log-prior over keys.
        return_weights: also return the weights ``(..., L, S)``.

    Returns:
        ``(..., L, Ev)``, or ``(output, weights)``.

    Raises:
        TypeError: non-tensors, integer tensors, mixed dtypes, non-bool ``mask``.
        ValueError: unknown ``kernel``; non-positive, non-finite or wrongly shaped
            ``bandwidth``; NaN/inf inputs; mismatched ``E`` or ``S``; ``S = 0``; masks that do
            not broadcast.
    """
    batch = check_qkv(query, key, value)
    kernel = check_choice("kernel", kernel, KERNELS)
    bandwidth = _check_bandwidth(kernel, bandwidth, query.shape[-1])
    check_mask(mask, log_prior, batch, query.shape[-2], key.shape[-2])
    if return_weights or kernel not in ("gaussian", "von_mises_fisher"):
        log_w = kernel_log_weights(
            query, key, kernel=kernel, bandwidth=bandwidth, mask=mask, log_prior=log_prior
        )
        weights = log_w.exp()
        out = weights @ value
        return (out, weights) if return_weights else out
    bias = _key_bias(mask, log_prior, query.dtype)
    if kernel == "von_mises_fisher":
        q, k = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        return _sdpa(q, k, value, bias, 1.0 / bandwidth)
    qs, ks = _centre(query / bandwidth, key / bandwidth)
    key_bias = (-0.5 * (ks * ks).sum(-1)).unsqueeze(-2)  # (..., 1, S)
    bias = key_bias if bias is None else key_bias + bias
    return _sdpa(qs, ks, value, bias, 1.0)


# ----------------------------------------------------------------------------- least squares
def least_squares_attention(query, key, value, *, ridge=1.0, noise=1.0, return_variance=False):
    """Least-squares attention: the Bayesian linear regression posterior mean from keys to values.

    ``out = Q (K^T K + ridge I)^{-1} K^T V`` ("Intention", Garnelo & Czarnecki 2023,
    arXiv 2305.10203): the posterior-mean prediction at ``q`` of ``v_j = W^T k_j + eps``,
    ``eps ~ N(0, noise I)``, ``W[:, c] ~ N(0, (noise / ridge) I)`` (DESIGN.md section 3).
    Solved by Cholesky in ``O(S E^2 + E^3 + L E Ev)`` (linear in sequence length); when
    ``S < E`` the dual (Woodbury) form ``Q K^T (K K^T + ridge I)^{-1} V`` is used instead.

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        ridge: ``lambda = noise / prior variance of W``, a non-negative number (0 is ordinary
            least squares; needs ``K^T K`` or, when ``S < E``, ``K K^T`` to be invertible).
        noise: observation-noise variance ``sigma^2`` (units of value squared), positive; it
            scales only the returned variance.
        return_variance: also return the predictive variance per output dim,
            ``noise * (1 + q^T (K^T K + ridge I)^{-1} q)``, shape ``(..., L)``.

    Returns:
        ``(..., L, Ev)``, or ``(mean, variance)``.

    Raises:
        TypeError, ValueError: bad tensors as in :func:`softmax_attention`; negative or
            non-finite ``ridge``; non-positive ``noise``; a singular system (ridge 0 with
            dependent keys); ``return_variance`` with ``ridge = 0`` and ``S < E`` (the
            variance is then unbounded).
    """
    check_qkv(query, key, value)
    ridge = check_positive("ridge", ridge, allow_zero=True)
    noise = check_positive("noise", noise)
    S, E = key.shape[-2:]
    kt = key.transpose(-1, -2)
    if S >= E:  # primal: an E x E system
        gram = kt @ key
        gram.diagonal(dim1=-2, dim2=-1).add_(ridge)
        chol = _cholesky(gram, "K^T K + ridge I")
        mean = query @ torch.cholesky_solve(kt @ value, chol)
        if not return_variance:
            return mean
        half = torch.linalg.solve_triangular(chol, query.transpose(-1, -2), upper=False)
        quad = (half * half).sum(-2)
    else:  # dual: an S x S system
        gram = key @ kt
        gram.diagonal(dim1=-2, dim2=-1).add_(ridge)
        chol = _cholesky(gram, "K K^T + ridge I")
        mean = (query @ kt) @ torch.cholesky_solve(value, chol)
        if not return_variance:
            return mean
        if ridge == 0:
            raise ValueError("return_variance needs ridge > 0 when S < E (unbounded variance)")
        half = torch.linalg.solve_triangular(chol, key @ query.transpose(-1, -2), upper=False)
        quad = ((query * query).sum(-1) - (half * half).sum(-2)) / ridge
    return mean, noise * (1.0 + quad)


def softmax_least_squares_attention(query, key, value, *, scale=None, ridge=1.0):
    """Softmax least-squares attention: Intention's dual form with softmax similarities.

    ``out = A_QK (A_KK + ridge I)^{-1} V`` with ``A_QK = softmax(scale Q K^T)`` and
    ``A_KK = softmax(scale K K^T)`` (row-wise softmax over the keys). Our reading of the softmax
    variant of Garnelo & Czarnecki (2023, arXiv 2305.10203, section on generalising regular
    attention): replace the linear similarity ``Q K^T`` of the dual form of
    :func:`least_squares_attention` by the softmax similarity. It keeps the same strong-prior
    limit: ``ridge * out -> softmax_attention(Q, K, V)`` as ``ridge -> inf``, just as
    ``ridge * least_squares_attention -> Q K^T V`` (linear attention). Cost ``O(S^3 + L S Ev)``.

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        scale: positive number, default ``1/sqrt(E)``.
        ridge: positive number.

    Returns:
        ``(..., L, Ev)``.

    Raises:
        TypeError, ValueError: bad tensors as in :func:`softmax_attention`; non-positive
            ``scale`` or ``ridge``; a singular system.
    """
    check_qkv(query, key, value)
    ridge = check_positive("ridge", ridge)
    scale = _default_scale(scale, query.shape[-1])
    a_qk = softmax_log_weights(query, key, scale=scale).exp()
    a_kk = softmax_log_weights(key, key, scale=scale).exp()
    system = a_kk + ridge * torch.eye(a_kk.shape[-1], dtype=a_kk.dtype, device=a_kk.device)
    system, rhs = _broadcast_batch(system, value)
    solved, info = torch.linalg.solve_ex(system, rhs)
    if bool((info != 0).any()):
        raise ValueError("softmax(K K^T) + ridge I is singular; increase ridge")
    return a_qk @ solved


# ----------------------------------------------------------------------------- GP
def gp_kernel(a, b, *, kernel="rbf", lengthscale=1.0) -> torch.Tensor:
    """Stationary covariance ``k(a_i, b_j)`` with unit amplitude, ``(..., N, M)``.

    With ``r = |(a - b) / lengthscale|``: ``rbf`` ``exp(-r^2/2)``; ``matern12`` ``exp(-r)``;
    ``matern32`` ``(1 + sqrt3 r) exp(-sqrt3 r)``; ``matern52``
    ``(1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)`` (Rasmussen & Williams 2006, eqs. 4.9, 4.17).

    Args:
        a: ``(..., N, E)``.
        b: ``(..., M, E)``.
        kernel: one of :data:`GP_KERNELS`.
        lengthscale: positive number, 0-dim tensor or ``(E,)`` tensor (ARD), feature units.

    Raises:
        ValueError: unknown ``kernel``, non-positive ``lengthscale``.
    """
    kernel = check_choice("kernel", kernel, GP_KERNELS)
    lengthscale = check_positive("lengthscale", lengthscale, feature_dim=a.shape[-1])
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
    query, key, value, *, kernel="rbf", lengthscale=1.0, ridge=1e-2, return_variance=False
):
    """Gaussian-process attention: the kernelised least-squares attention (DESIGN.md section 3).

    Posterior mean ``k(Q, K) (k(K, K) + ridge I)^{-1} V`` and latent variance
    ``k(q, q) - k(q, K) (k(K, K) + ridge I)^{-1} k(K, q)`` of a zero-mean GP with unit
    amplitude and noise variance ``ridge`` (Rasmussen & Williams 2006, eqs. 2.25-2.26). The
    variance is the latent function's, without noise, as scikit-learn's
    ``GaussianProcessRegressor.predict(return_std=True)`` reports it. Cholesky solve,
    ``O(S^3 + L S (E + Ev))``.

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        kernel: one of :data:`GP_KERNELS`.
        lengthscale: positive number, 0-dim tensor or ``(E,)`` tensor, feature units.
        ridge: noise variance relative to the unit amplitude, non-negative.
        return_variance: also return the latent variance ``(..., L)``.

    Returns:
        ``(..., L, Ev)``, or ``(mean, variance)``.

    Raises:
        TypeError, ValueError: bad tensors as in :func:`softmax_attention`; unknown ``kernel``;
            non-positive ``lengthscale``; negative ``ridge``; a kernel matrix that is not
            positive definite (duplicate keys with ``ridge = 0``).
    """
    check_qkv(query, key, value)
    ridge = check_positive("ridge", ridge, allow_zero=True)
    k_kk = gp_kernel(key, key, kernel=kernel, lengthscale=lengthscale)
    k_kk = k_kk + ridge * torch.eye(k_kk.shape[-1], dtype=k_kk.dtype, device=k_kk.device)
    chol = _cholesky(k_kk, "k(K, K) + ridge I")
    k_qk = gp_kernel(query, key, kernel=kernel, lengthscale=lengthscale)
    chol_b, value_b = _broadcast_batch(chol, value)
    mean = k_qk @ torch.cholesky_solve(value_b, chol_b)
    if not return_variance:
        return mean
    half = torch.linalg.solve_triangular(chol, k_qk.transpose(-1, -2), upper=False)
    return mean, (1.0 - (half * half).sum(-2)).clamp_min(0.0)


# ----------------------------------------------------------------------------- linear
def _feature_map(feature_map) -> Callable[[torch.Tensor], torch.Tensor]:
    if feature_map is None:
        return lambda x: x
    if feature_map == "elu":
        return lambda x: F.elu(x) + 1.0
    if callable(feature_map):
        return feature_map
    raise ValueError(f"unknown feature_map {feature_map!r}; expected None, 'elu' or a callable")


def linear_attention(query, key, value, *, feature_map=None, normalize=False):
    """Linear attention ``phi(Q) (phi(K)^T V)`` (Katharopoulos et al. 2020, eq. 4-6).

    Computed right to left in ``O((L + S) E Ev)``. With ``normalize=True`` each row is divided
    by ``phi(q_i) . sum_j phi(k_j)``. The limit of :func:`least_squares_attention` under a
    strong prior: ``ridge * least_squares_attention -> Q K^T V`` as ``ridge -> inf``.

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        feature_map: ``None`` (identity), ``"elu"`` (``elu(x) + 1``, positive), or a callable
            mapping ``(..., N, E) -> (..., N, F)``.
        normalize: divide by the row sums of ``phi(Q) phi(K)^T``.

    Returns:
        ``(..., L, Ev)``.

    Raises:
        TypeError, ValueError: bad tensors as in :func:`softmax_attention`; unknown
            ``feature_map``; ``normalize=True`` with a zero normaliser (use a positive feature
            map such as ``"elu"``).
    """
    check_qkv(query, key, value)
    phi = _feature_map(feature_map)
    phi_q, phi_k = phi(query), phi(key)
    out = phi_q @ (phi_k.transpose(-1, -2) @ value)
    if not normalize:
        return out
    denom = phi_q @ phi_k.sum(-2).unsqueeze(-1)
    if bool((denom == 0).any()):
        raise ValueError("normalize=True met a zero normaliser phi(q).sum_j phi(k_j); "
                         "use a positive feature_map such as 'elu'")
    return out / denom

