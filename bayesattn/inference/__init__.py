"""Fitting (exact, MAP, SVI, NUTS), ArviZ conversion, convergence verdicts, model comparison."""

from .compare import compare
from .convert import to_inference_data
from .diagnostics import verdict_line
from .fit import GUIDES, METHODS, fit
from .predictive import posterior_draws, predictive_draws, predictive_moments

__all__ = [
    "GUIDES",
    "METHODS",
    "compare",
    "fit",
    "posterior_draws",
    "predictive_draws",
    "predictive_moments",
    "to_inference_data",
    "verdict_line",
]
