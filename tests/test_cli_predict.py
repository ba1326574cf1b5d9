"""``bayesattn fit --x a,b`` then ``bayesattn predict``: the predictions file agrees with the
Python API on the saved model; every bad input is one line + exit 2; no file is overwritten
without --force."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bayesattn import AttentionRegressor
from bayesattn.cli import main


def one_line_error(capsys, code, *fragments):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bayesattn: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One MAP fit of GP attention on two input columns (seeded)."""
    root = tmp_path_factory.mktemp("fit")
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(25, 2))
    y = np.sin(1.5 * X[:, 0]) + 0.1 * rng.normal(size=25)
    data = root / "train.csv"
    data.write_text("a,b,y\n" + "".join(f"{p!r},{q!r},{r!r}\n" for p, q, r in zip(
        X[:, 0].tolist(), X[:, 1].tolist(), y.tolist(), strict=True)))
    code = main(["fit", "--data", str(data), "--x", "a,b", "--y", "y", "--model", "gp",
                 "--method", "map", "--num-steps", "60", "--out", str(root / "out")])
    assert code == 0
    new = root / "new.csv"
    new.write_text("id,b,a\nr1,0.5,0.1\nr2,-1.0,1.5\nr3,0.0,-1.9\n")  # columns reordered
    return root, X, y


def test_fit_writes_spec_and_predict_matches_the_api(fitted, capsys):
    root, X, y = fitted
    out = root / "out"
    assert {"gp.nc", "gp.json", "summary.md"} <= {p.name for p in out.iterdir()}
    assert "gp.json" in (out / ".bayesattn-manifest.json").read_text()
    pred = root / "pred.csv"
    code = main(["predict", "--fit", str(out), "--data", str(root / "new.csv"), "--out",
                 str(pred), "--prob", "0.8"])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(pred.open()))
    assert list(rows[0]) == ["a", "b", "mean", "sd", "lower", "upper"] and len(rows) == 3
    est = AttentionRegressor.load(out / "gp.json")
    import pandas as pd
    frame = pd.DataFrame({"a": [0.1, 1.5, -1.9], "b": [0.5, -1.0, 0.0]})
    mean, sd = est.predict(frame, return_std=True)
    lo, hi = est.predict_interval(frame, prob=0.8)
    got = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    np.testing.assert_array_equal(got["a"], frame["a"])
    np.testing.assert_array_equal(got["mean"], mean)
    np.testing.assert_array_equal(got["sd"], sd)
    np.testing.assert_array_equal(got["lower"], lo)
    np.testing.assert_array_equal(got["upper"], hi)
    assert np.all(got["lower"] < got["mean"]) and np.all(got["mean"] < got["upper"])
    # the fitted GP tracks sin(1.5 a): within 3 predictive sd at the new points
    assert np.all(np.abs(got["mean"] - np.sin(1.5 * frame["a"])) < 3 * got["sd"])


def test_predict_never_overwrites_without_force(fitted, capsys):
    root, _, _ = fitted
    pred = root / "keep.csv"
    pred.write_text("precious\n")
    args = ["predict", "--fit", str(root / "out"), "--data", str(root / "new.csv"), "--out",
            str(pred)]
    one_line_error(capsys, main(args), "exists", "--force")
    assert pred.read_text() == "precious\n"
    assert main([*args, "--force"]) == 0
    assert pred.read_text().startswith("a,b,mean,sd,lower,upper\n")


@pytest.mark.parametrize("change,fragments", [
    ({"--fit": "nowhere"}, ["--fit", "no such file or folder"]),
    ({"--fit": "."}, ["--fit", "no fitted model"]),
    ({"--data": "missing.csv"}, ["--data", "no such file"]),
    ({"--data": "bad.csv"}, ["'b'", "no such column"]),
    ({"--data": "text.csv"}, ["'a'", "non-numeric", "rows 2"]),
    ({"--prob": "1.5"}, ["--prob", "between 0 and 1"]),
    ({"--out": "nofolder/p.csv"}, ["--out", "does not exist"]),
    ({"--out": "."}, ["--out", "is a folder"]),
])
def test_predict_errors_are_one_line(fitted, capsys, monkeypatch, change, fragments):
    root, _, _ = fitted
    monkeypatch.chdir(root)
    (root / "bad.csv").write_text("a,c\n1,2\n")
    (root / "text.csv").write_text("a,b\n1,2\nx,3\n")
    args = {"--fit": "out", "--data": "new.csv", "--out": "p_err.csv", **change}
    code = main(["predict", *[t for kv in args.items() for t in kv]])
    one_line_error(capsys, code, *fragments)
    assert not (root / "p_err.csv").exists()


def test_fit_column_list_errors(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n1,2,3\n2,1,5\n3,3,4\n4,0,1\n")
    base = ["fit", "--data", str(data), "--y", "y", "--out", str(tmp_path / "o")]
    one_line_error(capsys, main([*base, "--x", "a,,b"]), "--x", "empty column name")
    one_line_error(capsys, main([*base, "--x", "a,a"]), "--x", "given twice")
    one_line_error(capsys, main([*base, "--x", "a,zz"]), "--x 'zz'", "no such column")
    one_line_error(capsys, main([*base, "--x", "a,y"]), "--y 'y'", "also an input column")
    assert not (tmp_path / "o").exists()
