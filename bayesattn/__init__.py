"""bayesattn: attention as inference.

Every attention mechanism has two faces: a closed-form fast path (:mod:`bayesattn.functional`,
:mod:`bayesattn.nn`) and a Pyro generative model whose posterior mean it is
(:mod:`bayesattn.models`), fitted with :mod:`bayesattn.inference`.
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
    "functional",
    "gp_attention",
    "kernel_attention",
    "least_squares_attention",
    "linear_attention",
    "softmax_attention",
    "softmax_least_squares_attention",
]
