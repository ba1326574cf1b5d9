"""Pyro generative models whose posterior means are the attention mechanisms."""

from .base import BayesianModel, hyperparameter
from .regression import GPAttentionModel, LeastSquaresAttentionModel
from .selection import KernelAttentionModel, KeySelectionModel, SoftmaxAttentionModel
from .structural import ExpandingAttentionModel, MultihopAttentionModel

__all__ = [
    "BayesianModel",
    "GPAttentionModel",
    "KernelAttentionModel",
    "KeySelectionModel",
    "LeastSquaresAttentionModel",
    "ExpandingAttentionModel",
    "MultihopAttentionModel",
    "SoftmaxAttentionModel",
    "hyperparameter",
]
