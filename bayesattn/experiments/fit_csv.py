"""``bayesattn fit``: the demo's workflow on the user's own CSV file.

Everything that can be checked before the (slow) fit is checked first, each failure one
:class:`~bayesattn.errors.UsageError` naming the argument: the file (exists, readable, UTF-8
text, a header row, fields under :data:`MAX_FIELD_CHARS`), the columns (present, numeric,
finite, magnitudes the models can square: :data:`MAX_ABS_VALUE`), the size (at most
:func:`row_limit` rows for the model and method; the file is read only that far), and the
output folder (created and written to before fitting; see :class:`bayesattn.io.OutputDir`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..inference import METHODS
from ..io import OutputDir
from .regression import MODELS

__all__ = ["MAX_ABS_VALUE", "MAX_FIELD_CHARS", "ROW_LIMITS", "read_xy", "row_limit", "run_fit"]

#: Python's ``csv`` default field limit: a longer field is refused (it is not a number anyway)
MAX_FIELD_CHARS = 131072
#: largest magnitude accepted in ``--x`` / ``--y``: the models work in data units and square
#: values (variances, squared distances), which overflow float64 above about 1.3e154; we
#: refuse instead of standardising silently, so the reported parameters stay in data units
MAX_ABS_VALUE = 1e100
#: smallest standard deviation accepted (smaller ones underflow when squared)
MIN_SD = 1e-100
#: rows each model and method can fit here. The kernel, softmax and GP models hold several
#: N x N float64 matrices (about 35 at once: 280 MB at N = 1000, measured for MAP), so they are
#: limited to 2500 rows (about 2 GB) for MAP, SVI and exact, and to 1000 rows for NUTS (each
#: NUTS draw costs tens of gradient evaluations of about 0.15 s at N = 1000). Least squares is
#: linear in N, but every fit stores a log-likelihood and a replicated observation per draw
#: and row (16 bytes x 1200 draws x N: 1.9 GB at N = 100,000).
ROW_LIMITS = {
    **{name: {"nuts": 1000, "map": 2500, "svi": 2500, "exact": 2500}
       for name in ("kernel", "softmax", "gp")},
    "least_squares": dict.fromkeys(("nuts", "map", "svi", "exact"), 100_000),
}
_QUADRATIC = ("kernel", "softmax", "gp")


def row_limit(model: str, method: str) -> int:
    """Most data rows ``--model model --method method`` accepts (:data:`ROW_LIMITS`)."""
    return ROW_LIMITS[model][method]


def _size_hint(model: str, method: str) -> str:
    """The alternative named when a data set is too large for ``model`` and ``method``."""
    limit = row_limit(model, method)
    better = [m for m in METHODS if row_limit(model, m) > limit]
    if better:
        return (f"use --method {' or '.join(better)} (up to {row_limit(model, better[0])} rows),"
                " or fit a random subset of the rows")
    if model != "least_squares":
        return "use --model least_squares, or fit a random subset of the rows"
    return "fit a random subset of the rows"


def _open_text(path: Path, flag: str):
    """Open ``path`` as UTF-8 text (a byte-order mark is skipped); refuse binary files.

    Raises:
        UsageError: missing, not a file, unreadable, UTF-16/32 or binary content.
    """
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise UsageError(f"{flag} {path}: not a file")
    try:
        with path.open("rb") as fh:
            head = fh.read(8192)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot read it ({err.strerror})") from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UsageError(f"{flag} {path}: UTF-16 text; convert it to UTF-8, e.g. "
                         f"`iconv -f utf-16 -t utf-8 {path} > converted.csv`")
    if b"\x00" in head:
        raise UsageError(f"{flag} {path}: binary content (NUL bytes), not a CSV text file")
    return path.open(newline="", encoding="utf-8-sig")


def read_xy(path: str | Path, x: str, y: str, *, max_rows: int | None = None,
            flag: str = "--data") -> tuple[np.ndarray, np.ndarray]:
    """Read two numeric columns of a CSV file with a header row.

    The file is UTF-8 (a leading byte-order mark is ignored) and is read row by row, at most
    ``max_rows + 1`` rows, so an oversized file is refused without loading it.

    Args:
        path: the CSV file.
        x, y: column names.
        max_rows: most data rows accepted (None: no limit).
        flag: the option named in messages.

    Returns:
        ``(x (N,), y (N,))`` as float64.

    Raises:
        UsageError: missing or unreadable file; not UTF-8 (with an ``iconv`` command to
            convert it); binary content; a field longer than :data:`MAX_FIELD_CHARS`; missing
            column (named, with the columns found); empty file; non-numeric, missing or
            non-finite values (the 1-based data rows named); more than ``max_rows`` rows;
            values beyond :data:`MAX_ABS_VALUE` in magnitude.
    """
    path = Path(path)
    values: dict[str, list[float]] = {x: [], y: []}
    bad: dict[str, list[int]] = {x: [], y: []}
    fh = _open_text(path, flag)
    reader = None
    try:
        with fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise UsageError(f"{flag} {path}: empty file (expected a header row)")
            columns = [c.strip() for c in header]
            index = {}
            for col_flag, col in (("--x", x), ("--y", y)):
                if col not in columns:
                    raise UsageError(f"{col_flag} {col!r}: no such column in {path} "
                                     f"(columns: {', '.join(columns)})")
                index[col] = columns.index(col)
            for i, row in enumerate(reader, start=1):
                if max_rows is not None and i > max_rows:
                    raise _TooManyRows(max_rows)
                if not row:
                    continue
                for col, j in index.items():
                    try:
                        v = float(row[j])
                    except (IndexError, ValueError):
                        v = math.nan
                    if not math.isfinite(v):
                        bad[col].append(i)
                    values[col].append(v)
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{flag} {path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} near line "
            f"{reader.line_num + 1 if reader is not None else 1}); convert it, e.g. for Latin-1 "
            f"`iconv -f latin1 -t utf-8 {path} > converted.csv`") from None
    except csv.Error as err:
        line = f", line {reader.line_num}" if reader is not None else ""
        raise UsageError(f"{flag} {path}{line}: {err}") from None
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot read it ({err.strerror})") from None
    if not values[x]:
        raise UsageError(f"{flag} {path}: no data rows")
    problems = [f"column {col!r} has missing or non-numeric values in rows {_rows(rows_)}"
                for col, rows_ in bad.items() if rows_]
    if problems:
        raise UsageError("; ".join(problems))
    xs, ys = np.array(values[x]), np.array(values[y])
    for col_flag, col, arr in (("--x", x, xs), ("--y", y, ys)):
        big = float(np.abs(arr).max())
        if big > MAX_ABS_VALUE:
            raise UsageError(
                f"{col_flag} {col!r}: values up to {big:.3g} in magnitude; bayesattn fits in "
                f"data units and squares them, so it accepts at most {MAX_ABS_VALUE:.0e}: "
                "rescale the column (e.g. divide it by a power of ten)")
    return xs, ys


class _TooManyRows(UsageError):
    def __init__(self, limit):
        super().__init__(limit)
        self.limit = limit


def _rows(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:10]))
    return shown + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


def check_xy(x: np.ndarray, y: np.ndarray, xname: str, yname: str) -> None:
    """Refuse data the models cannot fit: fewer than 3 rows, constant or tiny-spread columns.

    Raises:
        UsageError: as described, naming the column.
    """
    if len(x) < 3:
        raise UsageError(f"need at least 3 data rows, got {len(x)}")
    for col_flag, col, arr in (("--x", xname, x), ("--y", yname, y)):
        sd = float(np.std(arr))
        if sd == 0:
            raise UsageError(f"{col_flag} {col!r} is constant; need varying x and y")
        if sd < MIN_SD:
            raise UsageError(f"{col_flag} {col!r}: standard deviation {sd:.3g} is below "
                             f"{MIN_SD:.0e}; rescale the column (multiply it by a power of ten)")


def run_fit(args, *, command: list[str] | None = None) -> dict:
    """Fit ``args.model`` by ``args.method`` to columns ``args.x``, ``args.y`` of ``args.data``.

    Checks the file, the data, the size and the output folder (in that order) before fitting,
    then writes into ``args.out`` what the demo writes for one model (``summary.md``, plots,
    ``MODEL.nc``), every file atomically and listed in the folder's manifest.

    Args:
        args: the parsed ``bayesattn fit`` arguments (``data, x, y, model, method, out, seed,
            quick, force, num_steps``).
        command: the command line, recorded in the manifest.

    Returns:
        :func:`bayesattn.experiments.mcycle.fit_and_report`'s result.

    Raises:
        UsageError: unknown model or method; bad CSV (see :func:`read_xy`, :func:`check_xy`);
            more rows than :func:`row_limit`; an unusable output folder (see
            :meth:`bayesattn.io.OutputDir.prepare`); a method that cannot fit this model
            (``NotImplementedError`` or a diverged optimisation from the fit).
    """
    from .mcycle import fit_and_report, planned_files

    if args.model not in MODELS:  # argparse's choices= checks this on the command line
        raise UsageError(f"--model {args.model!r}: unknown; expected one of {', '.join(MODELS)}")
    if args.method not in METHODS:
        raise UsageError(f"--method {args.method!r}: unknown; expected one of "
                         f"{', '.join(METHODS)}")
    limit = row_limit(args.model, args.method)
    try:
        x, y = read_xy(args.data, args.x, args.y, max_rows=limit)
    except _TooManyRows:
        raise UsageError(
            f"--data {args.data}: more than {limit} rows; --model {args.model} --method "
            f"{args.method} handles at most {limit} rows here ("
            + ("it holds N x N matrices" if args.model in _QUADRATIC else
               "it stores a log-likelihood per draw and row")
            + "); " + _size_hint(args.model, args.method)) from None
    check_xy(x, y, args.x, args.y)
    out = OutputDir.prepare(args.out, force=args.force, planned=planned_files([args.model]),
                            command=command)
    try:
        result = fit_and_report(x, y, [args.model], out, method=args.method, quick=args.quick,
                                seed=args.seed, xlabel=args.x, ylabel=args.y,
                                num_steps=getattr(args, "num_steps", None))
    except (NotImplementedError, FloatingPointError) as err:  # e.g. "exact" without a closed form
        out.abandon()
        raise UsageError(f"--method {args.method} --model {args.model}: {err}") from None
    except BaseException:
        out.abandon()
        raise
    out.finish()
    print(f"\nwrote {out.path / 'summary.md'}", flush=True)
    return result
