"""The attention regression models of the CLI, with weakly informative priors in data units.

For one input column ``x`` (queries = keys) and one target column ``y`` (values):

* ``kernel``: Gaussian-kernel (Nadaraya-Watson) attention, leave-one-out, bandwidth
  ``~ LogNormal(log(range(x) / 20), 1)`` (units of x), noise ``~ HalfNormal(sd(y))``.
* ``softmax``: softmax (key-selection) attention on the raw inputs, leave-one-out,
  scale ``~ LogNormal(log(1 / var(x)), 1.5)`` (1 / units of x squared).
* ``gp``: GP attention (RBF), lengthscale ``~ LogNormal(log(range(x) / 10), 1)``, amplitude
  and noise ``~ HalfNormal(sd(y))``.
* ``least_squares``: least-squares attention (Bayesian linear regression) on the keys
  ``(1, x)``, prior scale and noise ``~ HalfNormal(sd(y))``-based.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch

from ..models import (
    GPAttentionModel,
    KernelAttentionModel,
    LeastSquaresAttentionModel,
    SoftmaxAttentionModel,
)

__all__ = ["MODELS", "build_model"]

MODELS = ("kernel", "softmax", "gp", "least_squares")


def _t(v):
    return torch.tensor(float(v), dtype=torch.float64)


def build_model(name: str, x: torch.Tensor, y: torch.Tensor):
    """Build model ``name`` for inputs ``x (N,)`` and targets ``y (N,)``.

    Returns ``(model, data, features)``: the model, its data dict for
    :func:`bayesattn.inference.fit`, and a function mapping new inputs ``(G,)`` to the model's
    query features ``(G, E)``.

    Raises:
        ValueError: unknown ``name``; fewer than 3 points; constant ``x`` or ``y``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if x.numel() < 3:
        raise ValueError(f"need at least 3 data points, got {x.numel()}")
    x_range, x_sd, y_sd = float(x.max() - x.min()), float(x.std()), float(y.std())
    if x_range == 0 or y_sd == 0:
        raise ValueError("x and y must not be constant")
    X, Y = x[:, None], y[:, None]
    noise = dist.HalfNormal(_t(y_sd))
    if name == "kernel":
        model = KernelAttentionModel(
            X, Y, kernel="gaussian", bandwidth=dist.LogNormal(_t(math.log(x_range / 20)), _t(1)),
            noise=noise, leave_one_out=True,
        )
        return model, {"query": X, "target": Y}, lambda g: g[:, None]
    if name == "softmax":
        model = SoftmaxAttentionModel(
            X, Y, scale=dist.LogNormal(_t(-2 * math.log(x_sd)), _t(1.5)), noise=noise,
            leave_one_out=True,
        )
        return model, {"query": X, "target": Y}, lambda g: g[:, None]
    if name == "gp":
        model = GPAttentionModel(
            kernel="rbf", lengthscale=dist.LogNormal(_t(math.log(x_range / 10)), _t(1)),
            amplitude=dist.HalfNormal(_t(y_sd)), noise=noise,
        )
        return model, {"key": X, "value": Y}, lambda g: g[:, None]

    def features(g):
        return torch.stack([torch.ones_like(g), g], dim=-1)

    model = LeastSquaresAttentionModel(prior_scale=dist.HalfNormal(_t(y_sd)), noise=noise)
    return model, {"key": features(x), "value": Y}, features
