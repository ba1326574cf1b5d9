"""Small helpers shared by the neuroscience models: quadrature, normal CDF, argument checks."""

from __future__ import annotations

import math
import numbers
from functools import lru_cache

import numpy as np
import torch

__all__ = [
    "gauss_hermite",
    "gauss_legendre",
    "log_ndtr",
    "ndtr",
    "as_float_tensor",
    "check_probability",
    "draws_slices",
    "fixed_or_draw",
]


@lru_cache(maxsize=16)
def _hermegauss(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    return nodes, weights / math.sqrt(2.0 * math.pi)


def _check_num_nodes(num_nodes) -> None:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, numbers.Integral) or num_nodes < 1:
        raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")


def gauss_hermite(num_nodes: int, *, dtype=torch.float64, device=None):
    """Nodes ``z (Q,)`` and weights ``w (Q,)`` with ``sum_q w_q f(z_q) ~ E[f(Z)]``, Z ~ N(0, 1).

    Probabilists' Gauss-Hermite rule (``numpy.polynomial.hermite_e.hermegauss``), the weights
    divided by ``sqrt(2 pi)`` so that they sum to 1. Exact for polynomials of degree
    ``2 Q - 1``.

    Raises:
        ValueError: ``num_nodes`` is not a positive integer.
    """
    _check_num_nodes(num_nodes)
    nodes, weights = _hermegauss(int(num_nodes))
    return (
        torch.as_tensor(nodes, dtype=dtype, device=device),
        torch.as_tensor(weights, dtype=dtype, device=device),
    )


@lru_cache(maxsize=16)
def _leggauss(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(num_nodes)


def gauss_legendre(num_nodes: int, *, dtype=torch.float64, device=None):
    """Gauss-Legendre nodes ``u (Q,)`` and weights ``w (Q,)`` on ``[-1, 1]``.

    ``sum_q w_q f(u_q) ~ int_{-1}^{1} f(u) du``, exact for polynomials of degree ``2 Q - 1``
    (``numpy.polynomial.legendre.leggauss``).

    Raises:
        ValueError: ``num_nodes`` is not a positive integer.
    """
    _check_num_nodes(num_nodes)
    nodes, weights = _leggauss(int(num_nodes))
    return (
        torch.as_tensor(nodes, dtype=dtype, device=device),
        torch.as_tensor(weights, dtype=dtype, device=device),
    )


def ndtr(x: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF ``Phi(x)`` (elementwise)."""
    return torch.special.ndtr(x)


def log_ndtr(x: torch.Tensor) -> torch.Tensor:
    """``log Phi(x)``, accurate in both tails (``torch.special.log_ndtr``)."""
    return torch.special.log_ndtr(x)


def as_float_tensor(name: str, x, *, dtype=torch.float64) -> torch.Tensor:
    """A number or a floating tensor as a float tensor; NaN and inf are rejected.

    Raises:
        TypeError: ``x`` is neither a real number nor a tensor.
        ValueError: ``x`` contains NaN or inf.
    """
    if isinstance(x, bool) or not isinstance(x, numbers.Real | torch.Tensor):
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(x).__name__}")
    t = x if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=dtype)
    if not t.is_floating_point():
        t = t.to(dtype)
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def check_probability(name: str, x, *, open_interval: bool = True) -> float:
    """A number in (0, 1) (or [0, 1] when ``open_interval`` is False) as a float.

    Raises:
        TypeError: ``x`` is not a real number.
        ValueError: ``x`` lies outside the interval.
    """
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(x).__name__}")
    x = float(x)
    ok = (0.0 < x < 1.0) if open_interval else (0.0 <= x <= 1.0)
    if not ok:
        bounds = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must lie in {bounds}, got {x}")
    return x


def draws_slices(draws: dict[str, torch.Tensor], chunk: int):
    """Yield ``{name: draws[name][a:b]}`` chunks of at most ``chunk`` draws."""
    from ..base import num_draws

    num = num_draws(draws)
    for start in range(0, num, chunk):
        yield {k: v[start : start + chunk] for k, v in draws.items()}, min(chunk, num - start)


def fixed_or_draw(draws: dict, name: str, value, num: int, dtype=torch.float64) -> torch.Tensor:
    """The ``(D, ...)`` draws of ``name``, or the fixed ``value`` repeated for ``num`` draws."""
    if name in draws:
        return torch.as_tensor(draws[name], dtype=dtype)
    t = torch.as_tensor(value, dtype=dtype)
    return t.expand(num, *t.shape)
