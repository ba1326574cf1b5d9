"""Nadaraya-Watson kernel attention and the kernel log-densities (docs/design.md,
"Key-selection models"). The one place where each kernel's formula lives:
:func:`kernel_log_density` (elementwise, used by
:class:`bayesattn.models.KernelAttentionModel`) and the weights of :func:`kernel_attention` both
go through :func:`_log_profile`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_positive, check_tensor
from ._core import (
    _bias,
    _centre,
    _check_call,
    _check_magnitude,
    _legacy,
    _log_normalise,
    _max_norm,
    _safe_sqrt,
    _sdpa,
    _sq_dist,
    is_validating,
)

__all__ = [
    "KERNELS",
    "COMPACT_KERNELS",
    "kernel_log_density",
    "kernel_log_normaliser",
    "kernel_log_weights",
    "kernel_attention",
]

#: Kernels of :func:`kernel_attention` (key-selection likelihoods).
KERNELS = ("gaussian", "laplace", "cauchy", "epanechnikov", "boxcar", "von_mises_fisher")
#: Kernels with bounded support: a query may have no key in range.
COMPACT_KERNELS = ("epanechnikov", "boxcar")


def _log_profile(kernel: str, r2: torch.Tensor) -> torch.Tensor:
    """``log K`` as a function of the scaled squared distance ``r^2`` (not von Mises-Fisher).

    Gradients are finite everywhere, including ``r = 0`` (Laplace) and the support edge
    ``r = 1`` of the compact kernels (the log of 0 outside the support is a constant
    ``-inf``).
    """
    if kernel == "gaussian":
        return -0.5 * r2
    if kernel == "laplace":
        return -_safe_sqrt(r2)
    if kernel == "cauchy":
        return -torch.log1p(r2)
    if kernel == "epanechnikov":
        inside = r2 < 1
        return torch.where(inside, torch.log1p(-torch.where(inside, r2, 0.0)), -math.inf)
    if kernel == "boxcar":
        return torch.where(r2 <= 1, 0.0, -math.inf).to(r2.dtype)
    raise ValueError(f"no radial profile for kernel {kernel!r}")


def kernel_log_normaliser(kernel: str, bandwidth, E: int):
    """``log Z`` with ``int K(|(q - k) / h|) dq = Z`` over ``R^E``, or None if not normalisable.

    Gaussian ``(2 pi)^(E/2)``; Laplace ``2 pi^(E/2) Gamma(E) / Gamma(E/2)`` (the surface area
    of the unit sphere times ``Gamma(E)``); Epanechnikov ``V_E 2 / (E + 2)``; boxcar ``V_E``
    (``V_E = pi^(E/2) / Gamma(E/2 + 1)``, the unit-ball volume); Cauchy ``pi`` for E = 1 only;
    each times ``prod(h)`` (``h^E`` for a scalar bandwidth). None for von Mises-Fisher (a
    density on the sphere, not on ``R^E``) and Cauchy in ``E > 1``.

    Equivalent to::

        log(const[kernel](E)) + (E * log(h) if h is a scalar else log(h).sum())

    Args:
        kernel: one of :data:`KERNELS`.
        bandwidth: positive number, 0-dim or ``(E,)`` tensor.
        E: feature dim, positive int.

    Raises:
        ValueError: unknown ``kernel``, ``E < 1``.
    """
    kernel = check_choice("kernel", kernel, KERNELS)
    if not (isinstance(E, int) and E >= 1):
        raise ValueError(f"E must be a positive int, got {E!r}")
    half = E / 2.0
    log_ball = half * math.log(math.pi) - math.lgamma(half + 1)
    const = {
        "gaussian": half * math.log(2 * math.pi),
        "laplace": math.log(2) + half * math.log(math.pi) + math.lgamma(E) - math.lgamma(half),
        "epanechnikov": log_ball + math.log(2.0 / (E + 2)),
        "boxcar": log_ball,
        "cauchy": math.log(math.pi) if E == 1 else None,
    }.get(kernel)
    if const is None:
        return None
    bw = torch.as_tensor(bandwidth)
    return const + (torch.log(bw).sum() if bw.dim() else E * torch.log(bw))


def kernel_log_density(x, loc, *, kernel="gaussian", bandwidth=1.0, normalized=True):
    """Log-density of ``x`` under the kernel centred on ``loc``, elementwise, ``(...)``.

    ``log K(r) - log Z`` with ``r = |(x - loc) / bandwidth|`` (Euclidean, last dim), ``K`` as
    in :func:`kernel_attention` and ``Z`` from :func:`kernel_log_normaliser`; for
    ``von_mises_fisher`` ``cos(x, loc) / bandwidth`` (unnormalised). With ``normalized=False``
    (or a kernel without a finite normaliser) ``log Z`` is left out. The query likelihood of
    the key-selection model (docs/design.md, "Key-selection models").

    Equivalent to::

        r2 = (((x - loc) / bandwidth) ** 2).sum(-1)
        log_k = {"gaussian": -r2 / 2, "laplace": -sqrt(r2), "cauchy": -log1p(r2),
                 "epanechnikov": log(max(0, 1 - r2)), "boxcar": log(r2 <= 1)}[kernel]
        log_k - kernel_log_normaliser(kernel, bandwidth, E)

    Args:
        x: ``(..., E)`` floating point.
        loc: ``(..., E)``, broadcastable with ``x``.
        kernel: one of :data:`KERNELS`.
        bandwidth: positive number, 0-dim tensor or ``(E,)`` tensor (ARD); scalar for
            ``von_mises_fisher``.
        normalized: subtract ``log Z``.

    Returns:
        ``(...)``, the broadcast batch shape; ``-inf`` outside a compact kernel's support.
        Gradients are finite at ``x = loc`` and at the support edge.

    Raises:
        TypeError: non-tensor or integer ``x`` / ``loc``.
        ValueError: unknown ``kernel``; bad ``bandwidth``; ``E`` mismatch.
    """
    check_tensor("x", x, min_dim=1, check_values=False)
    check_tensor("loc", loc, min_dim=1, check_values=False)
    if x.shape[-1] != loc.shape[-1]:
        raise ValueError(f"x and loc must share the last dim E, got {x.shape[-1]} and "
                         f"{loc.shape[-1]}")
    kernel = check_choice("kernel", kernel, KERNELS)
    E = x.shape[-1]
    bandwidth = _check_bandwidth(kernel, bandwidth, E, is_validating())
    if kernel == "von_mises_fisher":
        return F.cosine_similarity(x, loc, dim=-1) / bandwidth
    r2 = (((x - loc) / bandwidth) ** 2).sum(-1)
    log_k = _log_profile(kernel, r2)
    log_z = kernel_log_normaliser(kernel, bandwidth, E) if normalized else None
    return log_k if log_z is None else log_k - log_z


def _check_bandwidth(kernel, bandwidth, E, validate):
    bandwidth = check_positive("bandwidth", bandwidth, feature_dim=E, check_values=validate)
    if kernel == "von_mises_fisher" and isinstance(bandwidth, torch.Tensor) and bandwidth.dim():
        raise ValueError("bandwidth must be a scalar for the von_mises_fisher kernel")
    return bandwidth


def _check_kernel_magnitude(kernel, query, key, bandwidth):
    """Named error when the kernel's logits would overflow (validation only)."""
    if kernel == "von_mises_fisher":
        bw = bandwidth.detach().double() if isinstance(bandwidth, torch.Tensor) else bandwidth
        _check_magnitude(1.0 / bw, query.dtype, "von Mises-Fisher logits 1 / bandwidth")
        return
    bw = bandwidth.detach() if isinstance(bandwidth, torch.Tensor) else bandwidth
    qs, ks = _centre(query.detach() / bw, key.detach() / bw)
    q_max, k_max = _max_norm(qs), _max_norm(ks)
    _check_magnitude((q_max + k_max) ** 2, query.dtype,
                     "kernel logits |(q - k) / bandwidth|^2")


def _kernel_logits(kernel, query, key, bandwidth):
    """Unnormalised log-kernel ``log K(q_i, k_j)`` ``(..., L, S)`` and the scaled ``r^2``."""
    if kernel == "von_mises_fisher":
        cos = F.normalize(query, dim=-1) @ F.normalize(key, dim=-1).mT
        return cos / bandwidth, None
    qs, ks = _centre(query / bandwidth, key / bandwidth)
    if kernel == "gaussian":
        # -|q-k|^2/2 up to the per-query constant -|q|^2/2, which the normalisation removes.
        return qs @ ks.mT - 0.5 * (ks * ks).sum(-1).unsqueeze(-2), None
    r2 = _sq_dist(qs, ks)
    return _log_profile(kernel, r2), r2


def kernel_log_weights(
    query,
    key,
    attn_mask=None,
    is_causal=False,
    *,
    kernel="gaussian",
    bandwidth=1.0,
    validate_args=None,
    **legacy,
) -> torch.Tensor:
    """Log Nadaraya-Watson attention weights ``log w_ij``, ``(..., L, S)``.

    ``w_ij = K(q_i, k_j) pi_ij / sum_l K(q_i, k_l) pi_il`` with ``log pi`` from ``attn_mask``:
    the posterior ``p(z_i = j | q_i)`` of the key-selection model whose likelihood is the
    kernel. See :func:`kernel_attention` for kernels and the fallback of compact kernels.

    Equivalent to::

        log_k = kernel_log_density(query[..., :, None, :], key[..., None, :, :],
                                   kernel=kernel, bandwidth=bandwidth, normalized=False)
        torch.log_softmax(log_k + bias, dim=-1)    # bias: 0 / -inf, or the float mask

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        attn_mask, is_causal, kernel, bandwidth, validate_args: as in :func:`kernel_attention`.

    Raises:
        TypeError, ValueError: as :func:`kernel_attention`.
    """
    attn_mask, _ = _legacy(attn_mask, False, legacy, "kernel_log_weights")
    validate = is_validating(validate_args)
    _check_call(query, key, key, attn_mask, is_causal, 0.0, validate)
    kernel = check_choice("kernel", kernel, KERNELS)
    bandwidth = _check_bandwidth(kernel, bandwidth, query.shape[-1], validate)
    if validate:
        _check_kernel_magnitude(kernel, query, key, bandwidth)
    logits, r2 = _kernel_logits(kernel, query, key, bandwidth)
    bias = _bias(attn_mask, is_causal, query.shape[-2], key.shape[-2], logits.dtype,
                 logits.device)
    if bias is not None:
        logits = logits + bias
    if kernel in COMPACT_KERNELS:
        logits = _nearest_key_fallback(logits, r2, bias)
    return _log_normalise(logits)


def _nearest_key_fallback(logits, r2, bias):
    """Rows with no key in range but some allowed key: all weight on the nearest allowed key.

    This is the limit of the compact kernel as the bandwidth grows until the first key enters
    its support. Ties share the weight equally. No host sync.
    """
    row_empty = torch.isneginf(logits.amax(-1, keepdim=True))
    allowed = torch.ones_like(r2, dtype=torch.bool) if bias is None else ~torch.isneginf(bias)
    allowed = allowed.expand_as(logits)
    r2_allowed = r2.detach().expand_as(logits).masked_fill(~allowed, math.inf)
    nearest = allowed & (r2_allowed == r2_allowed.amin(-1, keepdim=True))
    fallback = torch.zeros_like(logits).masked_fill(~nearest, -math.inf)
    return torch.where(row_empty, fallback, logits)


def kernel_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    *,
    kernel="gaussian",
    bandwidth=1.0,
    need_weights=False,
    validate_args=None,
    **legacy,
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
    proportional to the kernel around ``k_j`` and ``log p(z_i = j) = log pi_ij`` from
    ``attn_mask`` (docs/design.md, "Key-selection models"). The Gaussian kernel runs through
    :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale = 1`` on centred
    ``q / bandwidth``, ``k / bandwidth`` and the additive key bias ``-|k_j / bandwidth|^2 / 2``
    (the ``|q|^2`` term cancels); ``von_mises_fisher`` also runs through SDPA. Unless weights
    are requested (or a mask is given) neither builds an ``L x S`` matrix, for any batch rank.

    Compact kernels (``epanechnikov``, ``boxcar``): a query with no allowed key inside the
    support puts all its weight on the nearest allowed key (ties share equally), the limit of
    growing the bandwidth until one key enters. A query with no allowed key at all gets output 0.

    Equivalent to::

        w = kernel_log_weights(query, key, attn_mask, is_causal, kernel=kernel,
                               bandwidth=bandwidth).exp()
        w = torch.dropout(w, dropout_p, train=True)
        out = w @ value                              # (out, w) with need_weights

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)``.
        value: ``(..., S, Ev)``.
        attn_mask: bool (True = takes part) or additive float log-prior, broadcastable to
            ``(..., L, S)`` (as :func:`softmax_attention`).
        dropout_p: probability of zeroing a weight (rescaled by ``1 / (1 - p)``, as SDPA).
        is_causal: query ``i`` attends to keys ``j <= i``; not with ``attn_mask``.
        kernel: one of :data:`KERNELS`.
        bandwidth: positive number, 0-dim tensor, or ``(E,)`` tensor of per-feature bandwidths
            (ARD); in the units of the query/key features. Scalar only for ``von_mises_fisher``
            (where it is ``1 / kappa``).
        need_weights: also return the weights ``(..., L, S)``.
        validate_args: check values (see :func:`set_validation`).

    Returns:
        ``(..., L, Ev)``, or ``(output, weights)``.

    Raises:
        TypeError: non-tensors, integer tensors, mixed dtypes, a mask neither bool nor float.
        ValueError: unknown ``kernel``; non-positive, non-finite or wrongly shaped
            ``bandwidth``; NaN/inf inputs; ``E = 0``; mismatched ``E`` or ``S``; ``S = 0``;
            masks that do not broadcast; ``attn_mask`` with ``is_causal``; ``dropout_p``
            outside ``[0, 1)``; scaled distances that overflow the dtype (e.g. bandwidth
            ``1e-30`` in float32).
    """
    attn_mask, need_weights = _legacy(attn_mask, need_weights, legacy, "kernel_attention")
    validate = is_validating(validate_args)
    _check_call(query, key, value, attn_mask, is_causal, dropout_p, validate)
    kernel = check_choice("kernel", kernel, KERNELS)
    bandwidth = _check_bandwidth(kernel, bandwidth, query.shape[-1], validate)
    if validate:
        _check_kernel_magnitude(kernel, query, key, bandwidth)
    if need_weights or kernel not in ("gaussian", "von_mises_fisher"):
        w = kernel_log_weights(query, key, attn_mask, is_causal, kernel=kernel,
                               bandwidth=bandwidth, validate_args=False).exp()
        if dropout_p > 0:
            w = F.dropout(w, dropout_p)
        out = w @ value
        return (out, w) if need_weights else out
    bias = _bias(attn_mask, is_causal, query.shape[-2], key.shape[-2], query.dtype,
                 query.device)
    if kernel == "von_mises_fisher":
        q, k = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        return _sdpa(q, k, value, bias, 1.0 / bandwidth, dropout_p)
    qs, ks = _centre(query / bandwidth, key / bandwidth)
    key_bias = (-0.5 * (ks * ks).sum(-1)).unsqueeze(-2)  # (..., 1, S)
    bias = key_bias if bias is None else key_bias + bias
    return _sdpa(qs, ks, value, bias, 1.0, dropout_p)
