"""Loaders for the real data sets shipped with the package."""

from .mcycle import load_mcycle

__all__ = ["load_mcycle"]
