"""Loaders for the real data sets shipped with the package (no downloads)."""

from .japanese_vowels import load_japanese_vowels
from .mcycle import load_mcycle

__all__ = ["load_japanese_vowels", "load_mcycle"]
