"""Fitting (exact, MAP, SVI, NUTS), ArviZ conversion and model comparison."""

from .compare import compare
from .convert import to_inference_data
from .fit import GUIDES, METHODS, fit

__all__ = ["GUIDES", "METHODS", "compare", "fit", "to_inference_data"]
