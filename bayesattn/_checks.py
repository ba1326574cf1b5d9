"""Argument checks shared by the functional core, the layers and the models.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape
or value) with a message that names the argument and says what was expected.
"""

from __future__ import annotations

import math
import numbers

import torch


def check_tensor(
    name: str, t, *, min_dim: int = 0, floating: bool = True, check_values: bool = True
) -> torch.Tensor:
    """Check that ``t`` is a (floating-point) tensor with at least ``min_dim`` dims, and, with
    ``check_values``, finite (one host sync)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dims, got shape {tuple(t.shape)}"
        )
    if check_values and floating and t.numel() and not _all_finite(t):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _all_finite(t: torch.Tensor) -> bool:
    """True when ``t`` has no NaN/inf: one min/max pass (NaN and inf propagate to it), much
    cheaper than materialising ``isfinite(t)``."""
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def check_qkv(
    query, key, value, *, same_dtype: bool = True, check_values: bool = True
) -> tuple[int, ...]:
    """Check ``query (..., L, E)``, ``key (..., S, E)``, ``value (..., S, Ev)``.

    Shapes and dtypes are always checked (no host sync); with ``check_values`` also that the
    entries are finite (one host sync per tensor). Returns the broadcast batch shape ``...``.

    Raises:
        TypeError: non-tensors, integer tensors, mixed dtypes.
        ValueError: fewer than 2 dims, ``E = 0``, mismatched ``E`` or ``S``, ``S = 0``, batch
            dims that do not broadcast, NaN/inf entries (with ``check_values``).
    """
    check_tensor("query", query, min_dim=2, check_values=check_values)
    check_tensor("key", key, min_dim=2, check_values=check_values)
    check_tensor("value", value, min_dim=2, check_values=check_values)
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            "query and key must share the feature dim E: got query (..., L, "
            f"{query.shape[-1]}) and key (..., S, {key.shape[-1]})"
        )
    if query.shape[-1] == 0:
        raise ValueError("query and key have E = 0 features: attention needs E >= 1")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            "key and value must have the same number of items S: got key with "
            f"S={key.shape[-2]} and value with S={value.shape[-2]}"
        )
    if key.shape[-2] == 0:
        raise ValueError("key is empty (S = 0): attention needs at least one key")
    if same_dtype and not (query.dtype == key.dtype == value.dtype):
        raise TypeError(
            f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, "
            f"{value.dtype}"
        )
    try:
        return tuple(torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2]))
    except RuntimeError as err:
        raise ValueError(
            "the batch dims of query, key and value do not broadcast: "
            f"{tuple(query.shape[:-2])}, {tuple(key.shape[:-2])}, {tuple(value.shape[:-2])}"
        ) from err


def check_positive(
    name: str,
    x,
    *,
    allow_zero: bool = False,
    feature_dim: int | None = None,
    check_values: bool = True,
):
    """Check a positive scalar, or a positive tensor of shape ``()`` or ``(feature_dim,)``.

    The one positive-value checker of the package. Numbers are always checked (no host
    sync) and come back as Python floats; tensors come back unchanged (gradients flow through
    them), their shape is always checked and their values only with ``check_values`` (one
    host sync).

    Raises:
        TypeError: not a real number or tensor (bools rejected).
        ValueError: wrong tensor shape; a value that is not positive (non-negative with
            ``allow_zero``) and finite.
    """
    bound = "non-negative" if allow_zero else "positive"
    if isinstance(x, bool) or not isinstance(x, numbers.Real | torch.Tensor):
        raise TypeError(f"{name} must be a {bound} number or tensor, got {type(x).__name__}")
    if isinstance(x, torch.Tensor):
        allowed = [()] if feature_dim is None else [(), (feature_dim,)]
        if tuple(x.shape) not in allowed:
            want = "a scalar" if feature_dim is None else f"a scalar or shape ({feature_dim},)"
            raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")
        if not check_values:
            return x
        values = x.detach()
        ok = bool(torch.isfinite(values).all()) and bool(
            ((values >= 0) if allow_zero else (values > 0)).all()
        )
    else:
        ok = math.isfinite(float(x)) and (float(x) >= 0 if allow_zero else float(x) > 0)
    if not ok:
        raise ValueError(f"{name} must be {bound} and finite, got {x}")
    return x if isinstance(x, torch.Tensor) else float(x)


def check_choice(name: str, value: str, choices) -> str:
    """Check that ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def check_mask(mask, log_prior, batch_shape, L: int, S: int):
    """Check a boolean ``mask`` and an additive ``log_prior``, both broadcastable to (..., L, S)."""
    target = (*batch_shape, L, S)
    for name, t in (("mask", mask), ("log_prior", log_prior)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if name == "mask" and t.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = may attend), got {t.dtype}")
        if name == "log_prior":
            if not t.is_floating_point():
                raise TypeError(f"log_prior must be a floating-point tensor, got {t.dtype}")
            if bool(torch.isnan(t).any()) or bool(torch.isposinf(t).any()):
                raise ValueError("log_prior contains NaN or +inf (use -inf for a zero prior)")
        try:
            shape = torch.broadcast_shapes(t.shape, target)
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast to (..., L, S) = {target}"
            ) from err
        if tuple(shape[-2:]) != (L, S):
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast to (..., L, S) = {target}"
            )


def check_attn_mask(
    attn_mask, batch_shape, L: int, S: int, *, bool_only: bool = False, check_values: bool = True
) -> None:
    """Check an SDPA-style ``attn_mask``: bool (True = takes part) or float (additive log-prior
    over keys), broadcastable to ``(..., L, S)``. Float values are checked (no NaN, no
    ``+inf``) only with ``check_values`` (one host sync).

    Raises:
        TypeError: not a tensor; neither bool nor floating point; a float mask where
            ``bool_only``.
        ValueError: a shape that does not broadcast to ``(..., L, S)``; NaN or ``+inf``.
    """
    if attn_mask is None:
        return
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor, got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool:
        if not attn_mask.is_floating_point():
            raise TypeError(
                "attn_mask must be bool (True = takes part) or floating point (added to the "
                f"log-weights), got {attn_mask.dtype}"
            )
        if bool_only:
            raise TypeError(
                "this attention has no additive log-prior over keys: attn_mask must be bool "
                f"(True = takes part), got {attn_mask.dtype}"
            )
        if check_values and (
            bool(torch.isnan(attn_mask).any()) or bool(torch.isposinf(attn_mask).any())
        ):
            raise ValueError("attn_mask contains NaN or +inf (use -inf to exclude a key)")
    target = (*batch_shape, L, S)
    try:
        shape = torch.broadcast_shapes(attn_mask.shape, target)
    except RuntimeError as err:
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (..., L, S) "
            f"= {target}"
        ) from err
    if tuple(shape[-2:]) != (L, S):
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (..., L, S) "
            f"= {target}"
        )
