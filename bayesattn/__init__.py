"""bayesattn: attention as inference.

Every attention mechanism has two faces: a closed-form fast path (:mod:`bayesattn.functional`,
:mod:`bayesattn.nn`) and a Pyro generative model whose posterior mean it is
(:mod:`bayesattn.models`), fitted with :mod:`bayesattn.inference`.
:class:`AttentionRegressor` wraps the regression models as a scikit-learn estimator (imported
on first use, so ``import bayesattn`` does not load scikit-learn, Pyro or ArviZ).
"""

from . import functional
from .functional import (
    gp_attention,
    kernel_attention,
    least_squares_attention,
    linear_attention,
    softmax_attention,
    softmax_least_squares_attention,
)

__version__ = "0.1.0"

__all__ = [
    "AttentionRegressor",
    "functional",
    "gp_attention",
    "kernel_attention",
    "least_squares_attention",
    "linear_attention",
    "softmax_attention",
    "softmax_least_squares_attention",
]


def __getattr__(name):
    if name == "AttentionRegressor":
        from .estimator import AttentionRegressor

        return AttentionRegressor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
