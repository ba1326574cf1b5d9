"""Shared machinery of the functional core: validation switch, masks, SDPA call, solves.

Nothing here is a formula of a mechanism; each mechanism module holds its own formula.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from .._checks import check_attn_mask, check_qkv

_VALIDATE = True


def set_validation(value: bool) -> None:
    """Turn argument validation of :mod:`bayesattn.functional` on or off (default on).

    Like :meth:`torch.distributions.Distribution.set_default_validate_args`: validation checks
    tensor values (finite inputs, positive tensor hyperparameters, float32 magnitudes that
    would overflow, positive-definite systems), each a host-device sync. Off, no function of
    :mod:`bayesattn.functional` syncs (shapes, dtypes and Python numbers are still checked) and
    bad values give NaN instead of an error. A call's ``validate_args`` overrides this default.
    Validation is always off while :func:`torch.compile` traces.

    Raises:
        TypeError: ``value`` is not a bool.
    """
    global _VALIDATE
    if not isinstance(value, bool):
        raise TypeError(f"set_validation takes a bool, got {type(value).__name__}")
    _VALIDATE = value


def is_validating(validate_args: bool | None = None) -> bool:
    """Whether a call with this ``validate_args`` validates (see :func:`set_validation`)."""
    if torch.compiler.is_compiling():
        return False
    return _VALIDATE if validate_args is None else bool(validate_args)


# ----------------------------------------------------------------------------- deprecated names
def _legacy(attn_mask, need_weights, legacy: dict, where: str):
    """Map the pre-0.2 keywords ``mask``, ``log_prior``, ``return_weights`` to the SDPA ones
    (with a ``FutureWarning``); returns ``(attn_mask, need_weights)``.

    Raises:
        TypeError: an unknown keyword; ``attn_mask`` together with ``mask`` / ``log_prior``.
    """
    legacy = dict(legacy)
    mask = legacy.pop("mask", None)
    log_prior = legacy.pop("log_prior", None)
    return_weights = legacy.pop("return_weights", None)
    if legacy:
        raise TypeError(f"{where}() got unexpected keyword arguments {sorted(legacy)}")
    if mask is None and log_prior is None and return_weights is None:
        return attn_mask, need_weights
    if attn_mask is not None and (mask is not None or log_prior is not None):
        raise TypeError(f"{where}: pass attn_mask alone, not with mask= / log_prior=")
    warnings.warn(
        f"{where}: mask= and log_prior= are now one attn_mask= (bool True = takes part, or an "
        "additive float mask) and return_weights= is need_weights=",
        FutureWarning,
        stacklevel=3,
    )
    if return_weights is not None:
        need_weights = bool(return_weights)
    if mask is None and log_prior is None:
        return attn_mask, need_weights
    if mask is not None and not (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool):
        raise TypeError("mask must be a bool tensor (True = may attend)")
    if mask is None:
        return log_prior, need_weights
    if log_prior is None:
        return mask, need_weights
    return log_prior.masked_fill(~mask, -math.inf), need_weights


# ----------------------------------------------------------------------------- masks
def _causal(L: int, S: int, device) -> torch.Tensor:
    """SDPA's causal mask ``(L, S)``: query ``i`` takes key ``j`` iff ``j <= i``."""
    return torch.ones(L, S, dtype=torch.bool, device=device).tril()


def _check_call(query, key, value, attn_mask, is_causal, dropout_p, validate, *, bool_only=False):
    """The boundary checks every attention function shares; returns the batch shape."""
    batch = check_qkv(query, key, value, check_values=validate)
    check_attn_mask(attn_mask, batch, query.shape[-2], key.shape[-2], bool_only=bool_only,
                    check_values=validate)
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as SDPA)")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, int | float) or not (
        0.0 <= dropout_p < 1.0
    ):
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")
    return batch


def _bias(attn_mask, is_causal, L, S, dtype, device):
    """Additive bias ``(..., L|1, S)`` (``-inf`` = excluded) from ``attn_mask`` / ``is_causal``."""
    if is_causal:
        attn_mask = _causal(L, S, device)
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        return torch.zeros(attn_mask.shape, dtype=dtype, device=device).masked_fill(
            ~attn_mask, -math.inf
        )
    return attn_mask.to(dtype)


def _allowed(attn_mask, is_causal, L, S, device):
    """Bool ``(..., L|1, S)`` (True = takes part) from a bool ``attn_mask`` / ``is_causal``."""
    return _causal(L, S, device) if is_causal else attn_mask


def _log_normalise(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax over the last dim; rows that are all ``-inf`` stay all ``-inf``.

    The package's one normalisation of log-weights (an empty posterior has weights 0).
    """
    row_max = logits.amax(-1, keepdim=True)
    empty = torch.isneginf(row_max)
    out = torch.log_softmax(logits.masked_fill(empty, 0.0), dim=-1)
    return out.masked_fill(empty, -math.inf)


def _centre(a: torch.Tensor, b: torch.Tensor):
    """Subtract the mean of the rows of ``b`` from ``a`` and ``b`` (distances are unchanged,
    and float32 expansions ``|a|^2 + |b|^2 - 2 a.b`` do not cancel catastrophically)."""
    centre = b.mean(-2, keepdim=True)
    return a - centre, b - centre


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(..., L, S)``: a ``(..., L, E)``, b ``(..., S, E)``."""
    a, b = _centre(a, b)
    d2 = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(-2) - 2 * a @ b.mT
    return d2.clamp_min(0.0)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with gradient 0 (not NaN) where ``x == 0``."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


def _check_magnitude(bound: torch.Tensor | float, dtype: torch.dtype, what: str) -> None:
    """Raise when a bound on ``|logit|`` would overflow ``dtype`` (validation only)."""
    limit = torch.finfo(dtype).max / 8
    if not math.isfinite(float(bound)) or float(bound) > limit:
        raise ValueError(
            f"{what} overflow {dtype} (bound {float(bound):.3g} > {limit:.3g}): rescale the "
            "inputs or the bandwidth/scale, or use float64"
        )


def _max_norm(x: torch.Tensor) -> torch.Tensor:
    """Largest row norm of ``x`` in float64 (0-dim), for :func:`_check_magnitude`."""
    return torch.linalg.vector_norm(x.detach(), dim=-1, dtype=torch.float64).amax()


def _dropout_keys(allowed, batch, L, S, p, device):
    """Drop each key from each batch element's memory with probability ``p``."""
    keep = torch.rand(*batch, 1, S, device=device) >= p
    return keep if allowed is None else allowed & keep


# ----------------------------------------------------------------------------- SDPA
def _sdpa(query, key, value, bias, scale, dropout_p=0.0, is_causal=False):
    """SDPA on exactly 4-D inputs, whatever the batch rank.

    :func:`torch.nn.functional.scaled_dot_product_attention` uses its fused (flash / memory
    efficient) kernels only for 4-D inputs and falls back to a math path that materialises
    ``L x S`` otherwise, so the broadcast batch dims are folded into two. A bias whose batch
    dims are all 1 is passed as ``(1, 1, L|1, S)`` (a view, no copy).
    """
    bias_batch = () if bias is None else bias.shape[:-2]
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2],
                                   bias_batch)
    if isinstance(scale, torch.Tensor):  # SDPA takes a Python float: fold a tensor into q
        query, scale = query * scale, 1.0
    lead = (math.prod(batch[:-1]), batch[-1]) if len(batch) >= 2 else (1, math.prod(batch))

    def four(t):
        return t.expand(*batch, *t.shape[-2:]).reshape(*lead, *t.shape[-2:])

    if bias is not None:
        if all(n == 1 for n in bias_batch):
            bias = bias.reshape(1, 1, *bias.shape[-2:])
        else:
            bias = four(bias)
    out = F.scaled_dot_product_attention(four(query), four(key), four(value), attn_mask=bias,
                                         dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    return out.reshape(*batch, *out.shape[-2:])


# ----------------------------------------------------------------------------- solves
class NotPositiveDefiniteError(ValueError):
    """A matrix that must be symmetric positive definite is not (Cholesky failed)."""


class IllConditionedError(ValueError):
    """A least-squares system is numerically singular in the working precision."""


def _solve_dtype(dtype: torch.dtype) -> torch.dtype:
    """Solves run in float32 for half / bfloat16 inputs (their LAPACK kernels do not exist and
    their precision is too low), else in the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def cholesky(matrix: torch.Tensor, what: str, *, validate: bool = True) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric positive-definite ``(..., n, n)`` matrix.

    The package's one ridge/Cholesky factorisation: with ``validate`` a failed factorisation
    raises :class:`NotPositiveDefiniteError` (one host sync); without, no sync (the factor of a
    non-PD matrix is then partly NaN / garbage).

    Equivalent to::

        torch.linalg.cholesky(matrix)   # raising NotPositiveDefiniteError instead

    Raises:
        NotPositiveDefiniteError: ``matrix`` (named ``what`` in the message) is not PD.
    """
    chol, info = torch.linalg.cholesky_ex(matrix)
    if validate and bool((info != 0).any()):
        raise NotPositiveDefiniteError(
            f"{what} is not positive definite (Cholesky failed); increase ridge"
        )
    return chol


def ridge_qr(a: torch.Tensor, ridge, *, validate: bool = True, what: str = "K"):
    """Reduced QR of ``[a; sqrt(ridge) I]`` for ``a (..., m, n)``: ``(Q_top (..., m, n), R)``.

    ``R^T R = a^T a + ridge I`` without forming ``a^T a`` (which squares the condition
    number), and ``a = Q_top R``: the stable route to ridge regression and, with
    ``ridge = 0``, ordinary least squares (Golub & Van Loan 2013, section 5.3). With
    ``validate`` and ``ridge = 0``, ``R`` is checked for numerical rank (one host sync).

    Equivalent to::

        q, r = torch.linalg.qr(torch.cat([a, sqrt(ridge) * I]))   # reduced
        q[..., :m, :], r

    Raises:
        IllConditionedError: with ``ridge = 0``, ``min |R_ii| <= n eps max |R_ii|``.
    """
    m, n = a.shape[-2:]
    if isinstance(ridge, torch.Tensor) or ridge > 0:
        eye = torch.eye(n, dtype=a.dtype, device=a.device).expand(*a.shape[:-2], n, n)
        root = ridge.sqrt() if isinstance(ridge, torch.Tensor) else math.sqrt(ridge)
        q, r = torch.linalg.qr(torch.cat([a, root * eye], dim=-2))
        return q[..., :m, :], r
    if m < n:
        raise IllConditionedError(f"{what} has fewer rows ({m}) than columns ({n}) and ridge = 0")
    q, r = torch.linalg.qr(a)
    if validate:
        d = r.diagonal(dim1=-2, dim2=-1).abs()
        tol = n * torch.finfo(a.dtype).eps
        if bool((d.amin(-1) <= tol * d.amax(-1)).any()):
            raise IllConditionedError(
                f"{what} is numerically rank deficient in {a.dtype} (ridge = 0): use ridge > 0"
                " or float64"
            )
    return q, r
