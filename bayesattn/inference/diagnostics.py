"""Convergence verdicts of fits (placeholder interface; the inference branch fills it in).

``fit`` stores ``idata.attrs["converged"]`` (int 1 or 0: netCDF attributes cannot hold bool)
and ``idata.attrs["diagnostics"]`` (a JSON string: ``{"method", "converged", "reasons",
"figures", "settings"}``).
"""

from __future__ import annotations

import json

__all__ = ["verdict_line"]


def verdict_line(idata) -> str:
    """One line starting with ``convergence:`` that states a fit's verdict and its figures."""
    info = json.loads(idata.attrs.get("diagnostics", "{}"))
    ok = bool(int(idata.attrs.get("converged", 0)))
    reasons = "; ".join(info.get("reasons", []))
    return f"convergence: {'OK' if ok else 'FAILED'}" + (f" ({reasons})" if reasons else "")
