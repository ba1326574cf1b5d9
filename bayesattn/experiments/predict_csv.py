"""``bayesattn predict``: predict new rows of a CSV file with a model ``bayesattn fit`` wrote.

Reads the fitted model (``MODEL.json`` + ``MODEL.nc`` in the ``--fit`` folder, see
:class:`bayesattn.AttentionRegressor`), the model's input columns of ``--data``, and writes
``--out``: those input columns plus ``mean``, ``sd`` (posterior predictive mean and standard
deviation of a new observation, the target's units) and ``lower``, ``upper`` (the central
``--prob`` posterior predictive interval). Every check happens before predicting, each failure
one :class:`~bayesattn.errors.UsageError`; the output is written atomically and an existing
file is replaced only with ``--force``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..io import atomic_path, check_writable
from .fit_csv import read_columns

__all__ = ["OUTPUT_COLUMNS", "find_spec", "run_predict"]

#: columns ``bayesattn predict`` adds after the input columns
OUTPUT_COLUMNS = ("mean", "sd", "lower", "upper")


def find_spec(fit: str | Path) -> Path:
    """The fitted-model specification named by ``--fit``: a ``.json`` file, or the only one in
    a folder.

    Raises:
        UsageError: no such file or folder; a folder with no specification or several.
    """
    from ..estimator import SPEC_FORMAT

    path = Path(fit)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UsageError(f"--fit {path}: no such file or folder")
    specs = []
    for candidate in sorted(path.glob("*.json")):
        try:
            if json.loads(candidate.read_text(encoding="utf-8")).get("format") == SPEC_FORMAT:
                specs.append(candidate)
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            continue
    if not specs:
        raise UsageError(f"--fit {path}: no fitted model there (the MODEL.json that "
                         "`bayesattn fit` writes)")
    if len(specs) > 1:
        raise UsageError(f"--fit {path}: several fitted models ({', '.join(p.name for p in specs)})"
                         "; name one, e.g. --fit " + str(specs[0]))
    return specs[0]


def _check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name, e.g. "
                         f"{out / 'predictions.csv'}")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    if (out.exists() or out.is_symlink()) and not force:
        raise UsageError(f"--out {out} exists; pass --force to replace it")
    check_writable(out.parent, "--out")


def run_predict(args) -> dict:
    """Predict ``args.data`` with the model in ``args.fit`` and write ``args.out``.

    Args:
        args: parsed ``bayesattn predict`` arguments (``fit, data, out, prob, force``).

    Returns:
        ``{"mean", "sd", "lower", "upper"}`` arrays ``(rows,)``.

    Raises:
        UsageError: see the module docstring: a missing or unreadable fitted model; bad CSV
            (see :func:`bayesattn.experiments.fit_csv.read_columns`; the model's input columns
            must be present); ``--prob`` outside (0, 1); an output that is a folder, in a
            missing or read-only folder, or an existing file without ``--force``.
    """
    import pandas as pd

    from ..estimator import AttentionRegressor

    if not 0 < args.prob < 1:
        raise UsageError(f"--prob must be between 0 and 1, got {args.prob}")
    out = Path(args.out)
    _check_out(out, args.force)
    spec_path = find_spec(args.fit)
    try:
        est = AttentionRegressor.load(spec_path)
    except (OSError, ValueError, TypeError) as err:
        raise UsageError(f"--fit {spec_path}: cannot load the fitted model ({err})") from None
    names = ([str(n) for n in est.feature_names_in_] if hasattr(est, "feature_names_in_")
             else None)
    if names is None:
        raise UsageError(f"--fit {spec_path}: the model has no column names (it was not "
                         "written by `bayesattn fit`)")
    cols = read_columns(args.data, [(n, "--data column") for n in names])
    frame = pd.DataFrame({n: cols[n] for n in names})
    mean, sd = est.predict(frame, return_std=True)
    lower, upper = est.predict_interval(frame, prob=args.prob)
    if est.n_outputs_ != 1 or mean.ndim != 1:
        raise UsageError(f"--fit {spec_path}: a model with several targets; use the Python "
                         "API (bayesattn.AttentionRegressor)")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*names, *OUTPUT_COLUMNS])
    for i in range(len(mean)):
        writer.writerow([repr(float(cols[n][i])) for n in names]
                        + [repr(float(v[i])) for v in (mean, sd, lower, upper)])
    with atomic_path(out) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    print(f"wrote {out} ({len(mean)} rows; {args.prob:g} intervals)", flush=True)
    return {"mean": np.asarray(mean), "sd": np.asarray(sd), "lower": lower, "upper": upper}
