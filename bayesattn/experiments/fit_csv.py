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

__all__ = ["MAX_ABS_VALUE", "MAX_FIELD_CHARS", "ROW_LIMITS", "parse_columns", "read_columns",
           "read_xy", "row_limit", "run_fit"]

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



def csv_read_error(err: Exception, flag: str, path, reader) -> UsageError:
    """The one-line :class:`UsageError` for an error met while reading a CSV file.

    Args:
        err: a ``UnicodeDecodeError`` (not UTF-8: the message gives an ``iconv`` command),
            a ``csv.Error`` (with the line) or an ``OSError`` (unreadable).
        flag: the option that named the file (``--data``).
        path: the file.
        reader: the ``csv.reader`` (for its line number) or None before it was made.

    Raises:
        TypeError: ``err`` is none of those (a bug: re-raise it instead).
    """
    if isinstance(err, UnicodeDecodeError):
        return UsageError(
            f"{flag} {path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} near line "
            f"{reader.line_num + 1 if reader is not None else 1}); convert it, e.g. for Latin-1 "
            f"`iconv -f latin1 -t utf-8 {path} > converted.csv`")
    if isinstance(err, csv.Error):
        line = f", line {reader.line_num}" if reader is not None else ""
        return UsageError(f"{flag} {path}{line}: {err}")
    if isinstance(err, OSError):
        return UsageError(f"{flag} {path}: cannot read it ({err.strerror})")
    raise TypeError(f"not a CSV reading error: {err!r}")

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
    """Read two numeric columns of a CSV file with a header row (:func:`read_columns`).

    Returns:
        ``(x (N,), y (N,))`` as float64.

    Raises:
        UsageError: see :func:`read_columns`.
    """
    cols = read_columns(path, [(x, "--x"), (y, "--y")], max_rows=max_rows, flag=flag)
    return cols[x], cols[y]


def read_columns(path: str | Path, columns: list[tuple[str, str]], *,
                 max_rows: int | None = None, flag: str = "--data") -> dict[str, np.ndarray]:
    """Read numeric columns of a CSV file with a header row.

    The file is UTF-8 (a leading byte-order mark is ignored) and is read row by row, at most
    ``max_rows + 1`` rows, so an oversized file is refused without loading it.

    Args:
        path: the CSV file.
        columns: ``(column name, option that named it)`` pairs, e.g. ``[("t", "--x")]``.
        max_rows: most data rows accepted (None: no limit).
        flag: the option naming the file in messages.

    Returns:
        ``{name: (N,) float64}``.

    Raises:
        UsageError: missing or unreadable file; not UTF-8 (with an ``iconv`` command to
            convert it); binary content; a field longer than :data:`MAX_FIELD_CHARS`; missing
            column (named, with the columns found); empty file; non-numeric, missing or
            non-finite values (the 1-based data rows named); more than ``max_rows`` rows;
            values beyond :data:`MAX_ABS_VALUE` in magnitude.
    """
    path = Path(path)
    names = list(dict.fromkeys(name for name, _ in columns))
    values: dict[str, list[float]] = {c: [] for c in names}
    bad: dict[str, list[int]] = {c: [] for c in names}
    fh = _open_text(path, flag)
    reader = None
    try:
        with fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise UsageError(f"{flag} {path}: empty file (expected a header row)")
            found = [c.strip() for c in header]
            index = {}
            for col, col_flag in columns:
                if col not in found:
                    raise UsageError(f"{col_flag} {col!r}: no such column in {path} "
                                     f"(columns: {', '.join(found)})")
                index[col] = found.index(col)
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
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise csv_read_error(err, flag, path, reader) from None
    if not values[names[0]]:
        raise UsageError(f"{flag} {path}: no data rows")
    problems = [f"column {col!r} has missing or non-numeric values in rows {_rows(rows_)}"
                for col, rows_ in bad.items() if rows_]
    if problems:
        raise UsageError("; ".join(problems))
    out = {col: np.array(values[col]) for col in names}
    for col, col_flag in columns:
        big = float(np.abs(out[col]).max())
        if big > MAX_ABS_VALUE:
            raise UsageError(
                f"{col_flag} {col!r}: values up to {big:.3g} in magnitude; bayesattn fits in "
                f"data units and squares them, so it accepts at most {MAX_ABS_VALUE:.0e}: "
                "rescale the column (e.g. divide it by a power of ten)")
    return out


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


def parse_columns(text: str, flag: str = "--x") -> list[str]:
    """The column names of a comma-separated option (``--x a,b,c``), in order.

    Raises:
        UsageError: an empty name or a name given twice.
    """
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise UsageError(f"{flag} {text!r}: empty column name (give names separated by commas)")
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise UsageError(f"{flag} {text!r}: column {', '.join(twice)} given twice")
    return names


def spec_name(model: str) -> str:
    """Name of the fitted-model specification ``bayesattn fit`` writes beside ``MODEL.nc``."""
    return f"{model}.json"


def run_fit(args, *, command: list[str] | None = None) -> dict:
    """Fit ``args.model`` by ``args.method`` to columns ``args.x``, ``args.y`` of ``args.data``.

    Checks the file, the data, the size and the output folder (in that order) before fitting,
    then writes into ``args.out``, every file atomically and listed in the folder's manifest:

    * one input column: what the demo writes for one model (``summary.md``, plots,
      ``MODEL.nc``);
    * several input columns (``--x a,b,c``): ``summary.md`` (verdict, settings, parameter
      table) and ``MODEL.nc``; the bandwidth or lengthscale is then one per column (ARD);

    and in both cases ``MODEL.json``, the :class:`bayesattn.AttentionRegressor` specification
    that ``bayesattn predict --fit DIR`` reads. The model works in data units (no
    standardisation), so the reported parameters are in the units of the columns.

    Args:
        args: the parsed ``bayesattn fit`` arguments (``data, x, y, model, method, out, seed,
            quick, force, num_steps``); ``x`` may name several columns separated by commas.
        command: the command line, recorded in the manifest.

    Returns:
        one column: :func:`bayesattn.experiments.mcycle.fit_and_report`'s result; several:
        ``{"estimator", "idata", "convergence"}``.

    Raises:
        UsageError: unknown model or method; bad column list; bad CSV (see
            :func:`read_columns`, :func:`check_xy`); more rows than :func:`row_limit`; an
            unusable output folder (see :meth:`bayesattn.io.OutputDir.prepare`); a method
            that cannot fit this model (``NotImplementedError`` or a diverged optimisation
            from the fit).
    """
    from .mcycle import planned_files

    if args.model not in MODELS:  # argparse's choices= checks this on the command line
        raise UsageError(f"--model {args.model!r}: unknown; expected one of {', '.join(MODELS)}")
    if args.method not in METHODS:
        raise UsageError(f"--method {args.method!r}: unknown; expected one of "
                         f"{', '.join(METHODS)}")
    xs = parse_columns(args.x)
    if args.y in xs:
        raise UsageError(f"--y {args.y!r} is also an input column (--x)")
    limit = row_limit(args.model, args.method)
    try:
        cols = read_columns(args.data, [*((c, "--x") for c in xs), (args.y, "--y")],
                            max_rows=limit)
    except _TooManyRows:
        raise UsageError(
            f"--data {args.data}: more than {limit} rows; --model {args.model} --method "
            f"{args.method} handles at most {limit} rows here ("
            + ("it holds N x N matrices" if args.model in _QUADRATIC else
               "it stores a log-likelihood per draw and row")
            + "); " + _size_hint(args.model, args.method)) from None
    for c in xs:
        check_xy(cols[c], cols[args.y], c, args.y)
    X, y = np.stack([cols[c] for c in xs], axis=1), cols[args.y]
    planned = (planned_files([args.model]) if len(xs) == 1
               else ["summary.md", f"{args.model}.nc"]) + [spec_name(args.model)]
    out = OutputDir.prepare(args.out, force=args.force, planned=planned, command=command)
    try:
        if len(xs) == 1:
            result = _fit_one_column(args, X, y, out)
        else:
            result = _fit_columns(args, xs, X, y, out)
    except (NotImplementedError, FloatingPointError) as err:  # e.g. "exact" without a closed form
        out.abandon()
        raise UsageError(f"--method {args.method} --model {args.model}: {err}") from None
    except BaseException:
        out.abandon()
        raise
    out.finish()
    print(f"\nwrote {out.path / 'summary.md'} and {out.path / spec_name(args.model)}",
          flush=True)
    return result


def _write_spec(out: OutputDir, estimator, model: str) -> None:
    import json

    out.write_text(spec_name(model), json.dumps(estimator.to_spec(f"{model}.nc")) + "\n")


def _fit_one_column(args, X, y, out):
    """The demo's report for one input column, then the estimator specification."""
    from ..estimator import AttentionRegressor
    from .mcycle import fit_and_report

    result = fit_and_report(X[:, 0], y, [args.model], out, method=args.method,
                            quick=args.quick, seed=args.seed, xlabel=args.x, ylabel=args.y,
                            num_steps=getattr(args, "num_steps", None))
    est = AttentionRegressor.from_fit(args.model, args.method, X, y,
                                      result["idatas"][args.model], seed=args.seed,
                                      feature_names=[args.x])
    _write_spec(out, est, args.model)
    return result


def _fit_columns(args, xs, X, y, out):
    """Several input columns: fit the estimator (data units, ARD), write .nc, spec, summary."""
    import pandas as pd

    from ..estimator import AttentionRegressor
    from ..inference.diagnostics import verdict_line
    from ..inference.threads import torch_threads
    from .mcycle import _parameter_table, _settings

    settings = {k: v for k, v in _settings(args.quick).items() if k != "chain_method"}
    if getattr(args, "num_steps", None) is not None:
        settings["num_steps"] = args.num_steps
    est = AttentionRegressor(args.model, args.method, standardize=False, random_state=args.seed,
                             progress_bar=True, **settings)
    with torch_threads(1):  # small models: one thread (restored after)
        est.fit(pd.DataFrame(X, columns=xs), y)
    idata = est.idata_
    out.to_netcdf(f"{args.model}.nc", idata)
    _write_spec(out, est, args.model)
    verdict = verdict_line(idata)
    print(verdict, flush=True)
    names = est.model_.latent_names()
    lines = ["# bayesattn report", "", verdict, "", f"Method: {args.method}.", "",
             f"Inputs: {', '.join(xs)} (one bandwidth / lengthscale per column, in that "
             f"order); target: {args.y}; {len(y)} rows.", "", "## Parameters", ""]
    if names:
        lines += [_parameter_table(idata, names, args.method).to_markdown(), ""]
    lines += ["## Files", "", f"`{args.model}.nc` (InferenceData), `{spec_name(args.model)}` "
              "(read by `bayesattn predict --fit`).", ""]
    out.write_text("summary.md", "\n".join(lines))
    converged = None if est.converged_ is None else bool(est.converged_)
    return {"estimator": est, "idata": idata, "convergence": {args.model: converged}}
