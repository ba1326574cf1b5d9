"""Attention regression models with weakly informative default priors, in the data's units.

:func:`build_regression_model` turns inputs ``X (N, P)`` and targets ``Y (N, K)`` into one of
the four regression models (queries = keys = the inputs, values = the targets):

* ``kernel``: Gaussian-kernel (Nadaraya-Watson) attention, leave-one-out at fit time,
  bandwidth per feature ``~ LogNormal(log(sqrt(P) range(x_j) / 20), 1)`` (units of ``x_j``),
  noise ``~ HalfNormal(sd(y))``.
* ``softmax``: softmax (key-selection) attention on the raw inputs, leave-one-out, one scale
  ``~ LogNormal(-log(sum_j var(x_j)), 1.5)`` (1 / units of x squared).
* ``gp``: GP attention (RBF), lengthscale per feature ``~ LogNormal(log(range(x_j) / 10), 1)``,
  amplitude and noise ``~ HalfNormal(sd(y))``.
* ``least_squares``: least-squares attention (Bayesian linear regression) on the keys
  ``(1, x_1, ..., x_P)``, prior scale and noise ``~ HalfNormal(sd(y))``.

With ``P > 1`` the bandwidth and the lengthscale are ARD: one per feature, a prior with batch
shape ``(P,)`` made one event (``.to_event(1)``); with ``P = 1`` they are scalars, so the
single-column fits of ``bayesattn fit`` and the demo are unchanged. The ``sqrt(P)`` in the
kernel bandwidth keeps the typical scaled squared distance ``sum_j ((q_j - k_j) / h_j)^2`` of
near neighbours of the same order as in one dimension. ``sd(y)`` is the root mean square of
the per-column standard deviations. The priors' motivation: docs/design.md, "Regression
models" and "Key-selection models".

A prior can be replaced by a fixed positive number or by a text such as ``"LogNormal(0, 1)"``
(:func:`parse_prior`), so a fitted model's specification is plain text (no code objects).
"""

from __future__ import annotations

import math
import numbers
import re

import pyro.distributions as dist
import torch

from .regression import GPAttentionModel, LeastSquaresAttentionModel
from .selection import KernelAttentionModel, SoftmaxAttentionModel

__all__ = ["HYPERPARAMETERS", "MODELS", "PRIOR_FAMILIES", "build_regression_model",
           "parse_prior"]

#: names of the attention regression models
MODELS = ("kernel", "softmax", "gp", "least_squares")
#: hyperparameters of each model that a prior (or fixed value) can be given for
HYPERPARAMETERS = {
    "kernel": ("bandwidth", "noise"),
    "softmax": ("scale", "noise"),
    "gp": ("lengthscale", "amplitude", "noise"),
    "least_squares": ("prior_scale", "noise"),
}
#: hyperparameters with one value per input feature when ``P > 1`` (ARD)
_PER_FEATURE = ("bandwidth", "lengthscale")
#: distribution families accepted in a prior text, with their number of arguments; all are
#: supported on the positive reals (every hyperparameter is a positive scale)
PRIOR_FAMILIES = {
    "LogNormal": 2, "HalfNormal": 1, "HalfCauchy": 1, "Gamma": 2, "InverseGamma": 2,
    "Exponential": 1,
}
_PRIOR_RE = re.compile(r"^\s*([A-Za-z]+)\s*\((.*)\)\s*$")


def _t(v):
    return torch.tensor(float(v), dtype=torch.float64)


def parse_prior(name: str, spec, num_features: int = 1):
    """A hyperparameter's prior from its text, or a fixed value from a number.

    Args:
        name: the hyperparameter (named in errors; per-feature ones are expanded).
        spec: a positive finite number (the value is fixed), or a text
            ``"Family(a, b)"`` with ``Family`` in :data:`PRIOR_FAMILIES` and numeric
            arguments, e.g. ``"LogNormal(0, 1)"``, ``"HalfNormal(2.5)"``.
        num_features: ``P``; for ``bandwidth`` and ``lengthscale`` with ``P > 1`` the prior
            is expanded to batch shape ``(P,)`` and made one event (independent per feature).

    Returns:
        a float or a Pyro distribution (float64 parameters).

    Raises:
        TypeError: ``spec`` is neither a number nor a text.
        ValueError: a non-positive or non-finite number; an unknown family (the accepted
            ones named); the wrong number of arguments; non-numeric or invalid arguments.
    """
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        value = float(spec)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"priors[{name!r}]: a fixed value must be positive and finite, "
                             f"got {spec!r}")
        return value
    if not isinstance(spec, str):
        raise TypeError(f"priors[{name!r}] must be a positive number or a text such as "
                        f"'LogNormal(0, 1)', got {type(spec).__name__}")
    match = _PRIOR_RE.match(spec)
    if match is None or match.group(1) not in PRIOR_FAMILIES:
        raise ValueError(f"priors[{name!r}] = {spec!r}: expected 'Family(args)' with Family one "
                         f"of {', '.join(PRIOR_FAMILIES)}")
    family, body = match.group(1), match.group(2)
    try:
        args = [float(a) for a in body.split(",")] if body.strip() else []
    except ValueError:
        raise ValueError(f"priors[{name!r}] = {spec!r}: arguments must be numbers") from None
    if len(args) != PRIOR_FAMILIES[family]:
        raise ValueError(f"priors[{name!r}] = {spec!r}: {family} takes "
                         f"{PRIOR_FAMILIES[family]} argument(s), got {len(args)}")
    try:
        prior = getattr(dist, family)(*map(_t, args), validate_args=True)
    except ValueError as err:
        raise ValueError(f"priors[{name!r}] = {spec!r}: invalid arguments ({err})") from None
    if name in _PER_FEATURE and num_features > 1:
        prior = prior.expand([num_features]).to_event(1)
    return prior


def _identity(g):
    """Query features of the kernel, softmax and GP models: the inputs, ``(G, P)``."""
    return g


def _with_intercept(g):
    """Query features of least squares: ``(1, x_1, ..., x_P)``, ``(G, P + 1)``."""
    return torch.cat([torch.ones_like(g[:, :1]), g], dim=-1)


def _check_xy(X, Y):
    X = torch.as_tensor(X, dtype=torch.float64)
    Y = torch.as_tensor(Y, dtype=torch.float64)
    if X.dim() == 1:
        X = X[:, None]
    if Y.dim() == 1:
        Y = Y[:, None]
    if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"X must be (N, P) and y (N,) or (N, K) with the same N, got "
                         f"{tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[0] < 3:
        raise ValueError(f"need at least 3 data points, got n_samples = {X.shape[0]}")
    if X.shape[1] < 1 or Y.shape[1] < 1:
        raise ValueError(f"need at least one input and one target column, got "
                         f"{tuple(X.shape)} and {tuple(Y.shape)}")
    if not (bool(torch.isfinite(X).all()) and bool(torch.isfinite(Y).all())):
        raise ValueError("X and y must be finite (no NaN or inf)")
    return X, Y


def build_regression_model(name: str, X, Y, priors: dict | None = None, *,
                           constant_ok: bool = False):
    """Build regression model ``name`` for inputs ``X (N, P)`` and targets ``Y (N, K)``.

    Args:
        name: one of :data:`MODELS`.
        X: ``(N, P)`` inputs (``(N,)`` is read as ``P = 1``), data units.
        Y: ``(N, K)`` targets (``(N,)`` is read as ``K = 1``), data units.
        priors: optional ``{hyperparameter: number or prior text}`` replacing the defaults
            (module docstring; :func:`parse_prior`); names from :data:`HYPERPARAMETERS`.

    Returns:
        ``(model, data, features)``: the model, its data dict for
        :func:`bayesattn.inference.fit`, and a function mapping new inputs ``(G, P)`` to the
        model's query features ``(G, E)``.

    Raises:
        ValueError: unknown ``name`` or prior name; fewer than 3 points; shapes that disagree;
            non-finite values; a constant input column or constant targets; a bad prior
            (see :func:`parse_prior`).
        TypeError: a prior neither a number nor a text.

    With ``constant_ok`` (standardised data, as :class:`bayesattn.AttentionRegressor` passes
    it) a constant column is not an error: it counts as range 1 and variance 1 in the default
    priors, and constant targets as sd 1.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    X, Y = _check_xy(X, Y)
    P = X.shape[1]
    x_range = X.max(0).values - X.min(0).values
    if constant_ok:
        x_range = torch.where(x_range == 0, torch.ones_like(x_range), x_range)
    if bool((x_range == 0).any()):
        cols = [str(j) for j in torch.nonzero(x_range == 0).reshape(-1).tolist()]
        raise ValueError(f"input columns must not be constant (column {', '.join(cols)} is)")
    y_sd = float(Y.std(0).pow(2).mean().sqrt()) if Y.shape[0] > 1 else 0.0
    if y_sd == 0 and constant_ok:
        y_sd = 1.0
    if y_sd == 0:
        raise ValueError("y must not be constant")
    priors = dict(priors or {})
    unknown = sorted(set(priors) - set(HYPERPARAMETERS[name]))
    if unknown:
        raise ValueError(f"priors: unknown hyperparameter(s) {', '.join(unknown)} for "
                         f"{name!r}; expected {', '.join(HYPERPARAMETERS[name])}")
    chosen = {k: parse_prior(k, v, P) for k, v in priors.items()}

    def per_feature(loc, scale):
        if P == 1:
            return dist.LogNormal(loc.reshape(()), _t(scale))
        return dist.LogNormal(loc, _t(scale)).to_event(1)

    noise = chosen.get("noise", dist.HalfNormal(_t(y_sd)))
    if name == "kernel":
        bw = per_feature(torch.log(x_range * math.sqrt(P) / 20), 1.0)
        model = KernelAttentionModel(X, Y, kernel="gaussian", bandwidth=chosen.get("bandwidth", bw),
                                     noise=noise, leave_one_out=True)
        return model, {"query": X, "target": Y}, _identity
    if name == "softmax":
        x_var = X.var(0)
        if constant_ok:
            x_var = torch.where(x_var == 0, torch.ones_like(x_var), x_var)
        var = float(x_var.sum())
        scale = dist.LogNormal(_t(-math.log(var)), _t(1.5))
        model = SoftmaxAttentionModel(X, Y, scale=chosen.get("scale", scale), noise=noise,
                                      leave_one_out=True)
        return model, {"query": X, "target": Y}, _identity
    if name == "gp":
        ls = per_feature(torch.log(x_range / 10), 1.0)
        model = GPAttentionModel(kernel="rbf", lengthscale=chosen.get("lengthscale", ls),
                                 amplitude=chosen.get("amplitude", dist.HalfNormal(_t(y_sd))),
                                 noise=noise)
        return model, {"key": X, "value": Y}, _identity

    model = LeastSquaresAttentionModel(
        prior_scale=chosen.get("prior_scale", dist.HalfNormal(_t(y_sd))), noise=noise)
    return model, {"key": _with_intercept(X), "value": Y}, _with_intercept
