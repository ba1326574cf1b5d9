"""The motorcycle-impact data (Silverman 1985), shipped as ``mcycle.csv``."""

from __future__ import annotations

import csv
import io
from importlib import resources

import numpy as np

__all__ = ["load_mcycle"]


def load_mcycle() -> dict[str, np.ndarray]:
    """Head acceleration after a simulated motorcycle impact: 133 rows.

    Returns ``{"times": (133,), "accel": (133,)}`` as float64 arrays, in file order (sorted by
    time, with repeated times): ``times`` in milliseconds after impact, ``accel`` head
    acceleration in g. A classic test case for kernel smoothing: a sharply non-linear mean and
    noise whose size changes with time.

    Source: Silverman, B. W. (1985) "Some aspects of the spline smoothing approach to
    non-parametric curve fitting", JRSS B 47, 1-52; distributed as ``mcycle`` in R's MASS
    package (Venables & Ripley, Modern Applied Statistics with S).
    """
    text = resources.files(__package__).joinpath("mcycle.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    return {name: np.array([float(r[name]) for r in rows]) for name in ("times", "accel")}
