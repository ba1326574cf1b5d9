"""``bayesattn fit``: the demo's workflow on the user's own CSV file."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..inference import METHODS
from .regression import MODELS

__all__ = ["read_xy", "run_fit"]


def read_xy(path: str | Path, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Read two numeric columns of a CSV file with a header row.

    Returns ``(x (N,), y (N,))`` as float64.

    Raises:
        bayesattn.cli.UsageError: missing file; missing column (named, with the columns
            found); empty file; non-numeric or missing values (the 1-based data rows named).
    """
    from ..cli import UsageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        for flag, col in (("--x", x), ("--y", y)):
            if col not in columns:
                raise UsageError(
                    f"{flag} {col!r}: no such column in {path} (columns: {', '.join(columns)})"
                )
        rows = list(reader)
    if not rows:
        raise UsageError(f"--data {path}: no data rows")
    values, bad = {x: [], y: []}, {x: [], y: []}
    for i, row in enumerate(rows, start=1):
        for col in (x, y):
            try:
                v = float(row[col])
            except (TypeError, ValueError):
                v = math.nan
            if not math.isfinite(v):
                bad[col].append(i)
            values[col].append(v)
    problems = [f"column {col!r} has missing or non-numeric values in rows "
                f"{_rows(rows_)}" for col, rows_ in bad.items() if rows_]
    if problems:
        raise UsageError("; ".join(problems))
    return np.array(values[x]), np.array(values[y])


def _rows(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:10]))
    return shown + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


def run_fit(args, prepare_out) -> dict:
    """Fit ``args.model`` by ``args.method`` to columns ``args.x``, ``args.y`` of ``args.data``.

    Writes into ``args.out`` what the demo writes for one model (``summary.md``, plots, ``.nc``).

    Raises:
        bayesattn.cli.UsageError: unknown model or method, bad CSV (see :func:`read_xy`), an
            existing output folder without ``--force``.
    """
    from ..cli import UsageError
    from .mcycle import fit_and_report

    if args.model not in MODELS:
        raise UsageError(f"--model {args.model!r}: unknown; expected one of {', '.join(MODELS)}")
    if args.method not in METHODS:
        raise UsageError(
            f"--method {args.method!r}: unknown; expected one of {', '.join(METHODS)}"
        )
    x, y = read_xy(args.data, args.x, args.y)
    if len(x) < 3 or np.ptp(x) == 0 or np.std(y) == 0:
        raise UsageError("need at least 3 rows with varying x and y")
    out = prepare_out()
    try:
        result = fit_and_report(x, y, [args.model], out, method=args.method, quick=args.quick,
                                seed=args.seed, xlabel=args.x, ylabel=args.y)
    except NotImplementedError as err:  # "exact" for a model with priors
        raise UsageError(f"--method {args.method}: {err}") from err
    print(f"\nwrote {out}/summary.md", flush=True)
    return result
