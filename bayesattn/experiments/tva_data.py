"""TVA trials in the field's long CSV layout: read, check, group (``bayesattn tva fit``).

One row per trial (the layout of StanTVA/RStanTVA and LibTVA data exports)::

    subject,condition,T,S1,...,SN,D1,...,DN,R1,...,RN

* ``subject``: any label (text or number); ``condition``: any label, optional unless the fit
  uses it (``--by ...,condition``, per-condition parameters);
* ``T``: exposure duration in ms (finite, >= 0);
* ``Sj`` = 1 when a stimulus is shown at location ``j``; ``Dj`` = 1 when it is a distractor
  (targets are ``S & ~D``); ``Rj`` = 1 when the item at ``j`` was reported. Only the integers
  0 and 1 are accepted. ``N`` is the number of ``S`` columns; every ``j`` in ``1..N`` needs
  ``Sj``, ``Dj`` and ``Rj`` and no other ``S``/``D``/``R`` numbered column may appear.

Checks (each failure one :class:`~bayesattn.errors.UsageError` naming the column and the
1-based data rows): missing columns, gaps in the location numbers, values that are not 0/1 or
not finite, negative exposure, empty labels, a distractor or a report where nothing is shown,
a reported distractor (partial report), distractors in whole report, a display with no item.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..models.neuro.tva.sets import MAX_ITEMS
from .fit_csv import _open_text, _rows, csv_read_error

__all__ = ["Trials", "read_trials", "write_trials", "group_indices", "natural_key"]

_LOCATION = re.compile(r"^([SDR])(\d+)$")


@dataclass
class Trials:
    """Checked trials of a TVA study (``T`` trials, ``N`` locations).

    Attributes:
        subject: ``(T,)`` str labels.
        condition: ``(T,)`` str labels (``""`` when the file has no ``condition`` column).
        exposure: ``(T,)`` float64, ms.
        shown, distractors, reported: ``(T, N)`` bool.
        rows: ``(T,)`` int, the 1-based data row of each trial in the file.
    """

    subject: np.ndarray
    condition: np.ndarray
    exposure: np.ndarray
    shown: np.ndarray
    distractors: np.ndarray
    reported: np.ndarray
    rows: np.ndarray

    @property
    def num_locations(self) -> int:
        """``N``, the number of display locations."""
        return int(self.shown.shape[1])

    @property
    def targets(self) -> np.ndarray:
        """``(T, N)`` bool: shown and not a distractor."""
        return self.shown & ~self.distractors

    def subset(self, index: np.ndarray) -> Trials:
        """The trials at ``index`` (an integer array)."""
        return Trials(*(getattr(self, f)[index] for f in
                        ("subject", "condition", "exposure", "shown", "distractors",
                         "reported", "rows")))


def write_trials(path: str | Path, trials: Trials) -> None:
    """Write ``trials`` as the long CSV that :func:`read_trials` reads (the module's layout;
    the ``condition`` column is left out when every label is ``""``).

    Raises:
        OSError: the file cannot be written.
    """
    n = trials.num_locations
    with_condition = bool((trials.condition != "").any())
    header = ["subject", *(["condition"] if with_condition else []), "T",
              *(f"{k}{j}" for k in "SDR" for j in range(1, n + 1))]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i in range(len(trials.exposure)):
            masks = [int(v) for m in (trials.shown, trials.distractors, trials.reported)
                     for v in m[i]]
            writer.writerow([trials.subject[i], *([trials.condition[i]] if with_condition
                                                  else []), repr(float(trials.exposure[i])),
                             *masks])


def natural_key(label: str):
    """Sort key: numbers by value before text (``"2" < "10" < "a"``)."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _location_columns(header: list[str], path: Path) -> tuple[int, dict[str, list[int]]]:
    """``N`` and the column index of ``S1..SN``, ``D1..DN``, ``R1..RN``.

    Raises:
        UsageError: no ``S`` column, gaps, a missing ``Dj``/``Rj``, a stray numbered column.
    """
    found: dict[str, dict[int, int]] = {"S": {}, "D": {}, "R": {}}
    for i, name in enumerate(header):
        m = _LOCATION.match(name)
        if m:
            found[m.group(1)][int(m.group(2))] = i
    if not found["S"]:
        raise UsageError(f"--data {path}: no columns S1..SN (1 = a stimulus shown at location j)"
                         f"; columns: {', '.join(header)}")
    n = max(found["S"])
    if n > MAX_ITEMS:
        raise UsageError(f"--data {path}: {n} locations (S1..S{n}); at most {MAX_ITEMS} are "
                         "supported (the likelihood sums over subsets of the display)")
    for kind in "SDR":
        have = found[kind]
        missing = [f"{kind}{j}" for j in range(1, n + 1) if j not in have]
        extra = [f"{kind}{j}" for j in sorted(have) if not 1 <= j <= n]
        if missing:
            raise UsageError(f"--data {path}: column {', '.join(missing[:5])} missing; a display "
                             f"of N={n} locations (S1..S{n}) needs S, D and R columns 1..{n}")
        if extra:
            raise UsageError(f"--data {path}: column {', '.join(extra[:5])} beyond N={n} "
                             f"(S1..S{n}); the S, D and R columns must be numbered alike")
    return n, {k: [found[k][j] for j in range(1, n + 1)] for k in "SDR"}


def read_trials(path: str | Path, *, task: str, need_condition: bool = False) -> Trials:
    """Read and check a TVA trial file (layout in the module docstring).

    Args:
        path: the CSV file (UTF-8, header row).
        task: ``"partial"`` or ``"whole"`` report.
        need_condition: the ``condition`` column is required.

    Returns:
        :class:`Trials`.

    Raises:
        UsageError: unreadable or non-UTF-8 file; a missing column; a bad value (module
            docstring); no data rows.
    """
    path = Path(path)
    fh = _open_text(path, "--data")
    reader = None
    try:
        with fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise UsageError(f"--data {path}: empty file (expected a header row)")
            header = [c.strip() for c in header]
            twice = sorted({c for c in header if header.count(c) > 1 and c})
            if twice:
                raise UsageError(f"--data {path}: column {', '.join(twice)} appears twice")
            for col in ("subject", "T") + (("condition",) if need_condition else ()):
                if col not in header:
                    what = {"subject": "subject labels", "T": "exposure duration in ms",
                            "condition": "condition labels (needed by --by or "
                                         "--condition-params)"}[col]
                    raise UsageError(f"--data {path}: no column {col!r} ({what}); columns: "
                                     f"{', '.join(header)}")
            n, loc = _location_columns(header, path)
            raw = [(i, row) for i, row in enumerate(reader, start=1) if row]
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise csv_read_error(err, "--data", path, reader) from None
    if not raw:
        raise UsageError(f"--data {path}: no data rows")
    return _check(path, header, raw, n, loc, task)


def _column(raw, j):
    return [row[j].strip() if j < len(row) else "" for _, row in raw]


def _check(path, header, raw, n, loc, task) -> Trials:
    rows = np.array([i for i, _ in raw])
    where = header.index
    subject = np.array(_column(raw, where("subject")), dtype=object)
    empty = rows[subject == ""]
    if len(empty):
        raise UsageError(f"--data {path}: column 'subject' is empty in rows {_rows(list(empty))}")
    if "condition" in header:
        condition = np.array(_column(raw, where("condition")), dtype=object)
        empty = rows[condition == ""]
        if len(empty):
            raise UsageError(f"--data {path}: column 'condition' is empty in rows "
                             f"{_rows(list(empty))}")
    else:
        condition = np.full(len(raw), "", dtype=object)
    exposure = []
    for text in _column(raw, where("T")):
        try:
            exposure.append(float(text))
        except ValueError:
            exposure.append(math.nan)
    exposure = np.array(exposure)
    bad = rows[~np.isfinite(exposure)]
    if len(bad):
        raise UsageError(f"--data {path}: column 'T' (exposure, ms) has missing or non-numeric "
                         f"values in rows {_rows(list(bad))}")
    bad = rows[exposure < 0]
    if len(bad):
        raise UsageError(f"--data {path}: column 'T' (exposure, ms) is negative in rows "
                         f"{_rows(list(bad))}")
    masks = {}
    for kind in "SDR":
        cols = []
        for j, idx in enumerate(loc[kind], start=1):
            text = np.array(_column(raw, idx), dtype=object)
            ok = (text == "0") | (text == "1")
            if not ok.all():
                shown = ", ".join(repr(v) for v in dict.fromkeys(text[~ok]))
                raise UsageError(f"--data {path}: column '{kind}{j}' must hold 0 or 1, got "
                                 f"{_first(shown)} in rows {_rows(list(rows[~ok]))}")
            cols.append(text == "1")
        masks[kind] = np.stack(cols, axis=1)
    shown, distractors, reported = masks["S"], masks["D"], masks["R"]
    _relations(path, rows, shown, distractors, reported, task)
    return Trials(subject.astype(str), condition.astype(str), exposure, shown, distractors,
                  reported, rows)


def _first(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _relations(path, rows, shown, distractors, reported, task) -> None:
    """Masks that contradict each other (module docstring).

    Raises:
        UsageError: the first contradiction, naming the column and rows.
    """
    n = shown.shape[1]
    empty = ~shown.any(1)
    if empty.any():
        raise UsageError(f"--data {path}: rows {_rows(list(rows[empty]))} show no stimulus "
                         f"(S1..S{n} all 0)")
    for j in range(n):
        for mask, kind, what in ((distractors, "D", "a distractor"),
                                 (reported, "R", "a report")):
            bad = mask[:, j] & ~shown[:, j]
            if bad.any():
                raise UsageError(f"--data {path}: column '{kind}{j + 1}': {what} where nothing "
                                 f"is shown (S{j + 1} = 0) in rows {_rows(list(rows[bad]))}")
    if task == "whole":
        for j in range(n):
            bad = distractors[:, j]
            if bad.any():
                raise UsageError(f"--task whole: column 'D{j + 1}' marks distractors in rows "
                                 f"{_rows(list(rows[bad]))}; whole report has none (use "
                                 "--task partial)")
    else:
        for j in range(n):
            bad = reported[:, j] & distractors[:, j]
            if bad.any():
                raise UsageError(f"--data {path}: column 'R{j + 1}': a distractor (D{j + 1} = 1)"
                                 f" reported in rows {_rows(list(rows[bad]))}; in partial report "
                                 "only targets (S & ~D) are reported")


def group_indices(trials: Trials, by: tuple[str, ...]) -> list[tuple[dict, np.ndarray]]:
    """Split the trials into groups by the columns ``by`` (``()``: one group).

    Returns:
        ``[({column: label}, index (T_g,) int), ...]`` in natural order of the labels
        (:func:`natural_key`).
    """
    if not by:
        return [({}, np.arange(len(trials.exposure)))]
    keys = list(zip(*(getattr(trials, c) for c in by), strict=True))
    order = sorted(set(keys), key=lambda k: tuple(natural_key(v) for v in k))
    where: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        where.setdefault(k, []).append(i)
    return [(dict(zip(by, key, strict=True)), np.array(where[key])) for key in order]
