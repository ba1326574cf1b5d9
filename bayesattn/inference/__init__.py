"""Fitting (exact, MAP, SVI, NUTS), ArviZ conversion, convergence verdicts, model comparison.

The names below are imported on first use, so that a NUTS worker process, which needs only
:mod:`.nuts`, does not load ArviZ, SciPy and Matplotlib (about 3 s a worker).
"""

from __future__ import annotations

import importlib
import sys
import types

#: public name -> the submodule that defines it
_SOURCES = {
    "GUIDES": "fit",
    "METHODS": "fit",
    "compare": "compare",
    "fit": "fit",
    "posterior_draws": "predictive",
    "predictive_draws": "predictive",
    "predictive_moments": "predictive",
    "to_inference_data": "convert",
    "verdict_line": "diagnostics",
}

__all__ = sorted(_SOURCES)


class _Package(types.ModuleType):
    """Loading submodule ``fit`` (or ``compare``) would bind the package's ``fit`` to the module;
    the public name stays the function, as with eager imports (``importlib.import_module``
    still returns the module)."""

    def __setattr__(self, name, value):
        if name in _SOURCES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name in _SOURCES:
        value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
