"""Argument checks shared by the TVA likelihood, simulator, distribution and model."""

from __future__ import annotations

import torch

from .._common import as_float_tensor
from .sets import _check_num_items


def _check_report(reported, num_items, name="reported") -> torch.Tensor:
    if not isinstance(reported, torch.Tensor):
        raise TypeError(
            f"{name} must be a bool or 0/1 integer torch.Tensor (..., N), "
            f"got {type(reported).__name__}"
        )
    if reported.dtype != torch.bool:
        if reported.is_floating_point() or reported.is_complex():
            raise TypeError(
                f"{name} must be a bool or 0/1 integer tensor (1 = item reported), "
                f"got {reported.dtype}"
            )
        if bool(((reported != 0) & (reported != 1)).any()):
            raise ValueError(f"{name} must hold only 0 and 1 (an integer mask)")
        reported = reported != 0
    if reported.dim() < 1:
        raise ValueError(f"{name} must have shape (..., N), got a scalar")
    if reported.shape[-1] != num_items:
        raise ValueError(
            f"{name} has {reported.shape[-1]} items per trial but the display has N={num_items} "
            "locations (the length of weights)"
        )
    return reported


def _check_exposure(exposure) -> torch.Tensor:
    exposure = as_float_tensor("exposure", exposure)
    if bool((exposure.detach() < 0).any()):
        raise ValueError("exposure (duration, ms) must be non-negative")
    return exposure


def _check_t0(t0, t0_sd):
    t0 = as_float_tensor("t0", t0)
    if t0_sd is None:
        return t0, None
    t0_sd = as_float_tensor("t0_sd", t0_sd)
    if bool((t0_sd.detach() < 0).any()):
        raise ValueError(f"t0_sd (ms) must be non-negative, got {t0_sd}")
    if t0_sd.dim() == 0 and not t0_sd.requires_grad and float(t0_sd) == 0.0:
        return t0, None
    return t0, t0_sd


def _threshold(p: dict) -> dict:
    """Per-draw parameters ``p`` with ``t0`` and ``t0_sd`` checked (:func:`_check_t0`) and
    ``t0_sd`` None when every draw's is 0: a fixed threshold, under which a report that the
    exposure cannot produce gets exactly ``-inf``."""
    p["t0"], p["t0_sd"] = _check_t0(p["t0"], p["t0_sd"])
    if p["t0_sd"] is not None and not bool((p["t0_sd"] > 0).any()):
        p["t0_sd"] = None
    return p


def _check_weights(weights) -> torch.Tensor:
    weights = as_float_tensor("weights", weights)
    if weights.dim() < 1:
        raise ValueError("weights must have shape (..., N) (one weight per display location)")
    _check_num_items(weights.shape[-1])
    return weights


def _check_t0_dist(t0_dist, t0, t0_sd) -> None:
    from .threshold import T0_KINDS

    if t0_dist not in ("normal", "exponential", "fixed"):
        raise ValueError(f"t0_dist must be one of {', '.join(T0_KINDS)}, got {t0_dist!r}")
    if t0_dist == "exponential":
        if t0_sd is not None:
            raise ValueError("t0_sd must be 0 with t0_dist='exponential' (t0 is its mean)")
        if bool((t0.detach() <= 0).any()):
            raise ValueError(f"t0 (mean of the exponential threshold, ms) must be > 0, got {t0}")
    if t0_dist == "fixed" and t0_sd is not None:
        raise ValueError("t0_sd must be 0 with t0_dist='fixed'")
