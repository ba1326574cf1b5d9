"""The attention regression models of the CLI for one input column (a thin wrapper).

The priors live in :mod:`bayesattn.models.defaults` (:func:`build_regression_model`, any number
of input and target columns); this module keeps the one-column interface of the demo and of
``bayesattn fit --x COL``.
"""

from __future__ import annotations

import torch

from ..models.defaults import MODELS, build_regression_model

__all__ = ["MODELS", "build_model"]


def build_model(name: str, x: torch.Tensor, y: torch.Tensor):
    """Build model ``name`` for inputs ``x (N,)`` and targets ``y (N,)``.

    Returns ``(model, data, features)``: the model, its data dict for
    :func:`bayesattn.inference.fit`, and a function mapping new inputs ``(G,)`` to the model's
    query features ``(G, E)``. The priors are those of
    :func:`bayesattn.models.defaults.build_regression_model` with ``P = K = 1``.

    Raises:
        ValueError: unknown ``name``; fewer than 3 points; constant ``x`` or ``y``.
    """
    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    model, data, features = build_regression_model(name, x[:, None], y[:, None])
    return model, data, lambda g: features(torch.as_tensor(g).reshape(-1, 1))
