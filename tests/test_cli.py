"""The command line: the quick demo end to end, and every bad-input case gives one line + exit 2."""

from __future__ import annotations

import subprocess
import sys

import arviz as az
import pytest

from bayesattn.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bayesattn", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def assert_one_line_error(code, stderr, *fragments):
    assert code == 2
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bayesattn: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("t,y,label\n1,2.0,a\n2,x,b\n3,,c\n4,5.5,d\n5,nan,e\n")
    return path


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--data", "missing.csv", "--x", "t", "--y", "y"], ["missing.csv", "no such file"]),
        (["--x", "t", "--y", "speed"], ["--y 'speed'", "no such column", "t, y, label"]),
        (["--x", "time", "--y", "y"], ["--x 'time'", "no such column"]),
        (["--x", "t", "--y", "y"], ["column 'y'", "rows 2, 3, 5"]),
        (["--x", "t", "--y", "label"], ["column 'label'", "rows 1, 2, 3, 4, 5"]),
        (["--x", "t", "--y", "y", "--model", "transformer"], ["--model 'transformer'", "kernel"]),
        (["--x", "t", "--y", "y", "--method", "hmc"], ["--method 'hmc'", "nuts"]),
    ],
)
def test_fit_bad_input_is_one_line_and_exit_2(csv_file, tmp_path, monkeypatch, capsys, args,
                                              fragments):
    monkeypatch.chdir(tmp_path)
    if "--data" not in args:
        args = ["--data", str(csv_file), *args]
    code = main(["fit", *args, "--out", str(tmp_path / "out")])
    assert_one_line_error(code, capsys.readouterr().err, *fragments)
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_existing_output_folder_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    keep = out / "mine.txt"
    keep.write_text("precious")
    assert main(["demo", "--out", str(out), "--quick"]) == 2
    assert "--force" in capsys.readouterr().err
    assert keep.read_text() == "precious" and sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    """``python -m bayesattn`` in a fresh process: one line, exit 2 (no class-identity slip)."""
    result = run_cli("fit", "--data", "missing.csv", "--x", "t", "--y", "y", cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "no such file")


@pytest.mark.parametrize("argv", [["demo", "nosuchdemo"], ["frobnicate"]])
def test_unknown_subcommand_or_demo_exits_non_zero(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--quick", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    for model in ("kernel", "softmax", "gp"):
        assert {f"{model}.nc", f"predictive_{model}.png", f"posterior_{model}.png"} <= names
    assert {"summary.md", "compare.png", "attention_weights_kernel.png"} <= names
    summary = (out / "summary.md").read_text()
    assert "PSIS-LOO comparison" in summary and "bandwidth" in summary
    idata = az.from_netcdf(out / "kernel.nc")
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive",
                  "observed_data"):
        assert group in idata.groups()
    assert idata.log_likelihood["target"].shape[-1] == 133
    # the bandwidth is reported in ms: mcycle's NW bandwidth is a few ms, not a fraction
    assert 0.3 < float(idata.posterior["bandwidth"].mean()) < 10
    assert "elpd_loo" in result.stdout or "elpd_loo" in summary
