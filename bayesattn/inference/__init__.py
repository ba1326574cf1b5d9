"""Fitting (exact, MAP, SVI, NUTS), ArviZ conversion, convergence verdicts, model comparison."""

from .compare import compare
from .convert import to_inference_data
from .diagnostics import verdict_line
from .fit import GUIDES, METHODS, fit

__all__ = ["GUIDES", "METHODS", "compare", "fit", "to_inference_data", "verdict_line"]
