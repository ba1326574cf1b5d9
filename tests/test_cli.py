"""The command line: every bad input is one line + exit 2 before any fitting; outputs are
written atomically and tracked in a manifest; Ctrl-C leaves no partial file; the success path
of ``bayesattn fit`` for every model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import arviz as az
import numpy as np
import pytest

import bayesattn.experiments.mcycle as mcycle
from bayesattn.cli import MAX_SEED, METHOD_CHOICES, MODEL_CHOICES, main
from bayesattn.experiments.fit_csv import MAX_FIELD_CHARS, read_xy, row_limit
from bayesattn.io import MANIFEST_NAME, TEMP_PREFIX, OutputDir, atomic_path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bayesattn", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env=env, **kwargs)


def assert_one_line_error(code, stderr, *fragments):
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bayesattn: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def write_xy(path: Path, n: int = 12, *, header="t,y", seed=0, scale=1.0, encoding="utf-8"):
    """A small smooth data set, seeded."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 10, n))
    y = scale * (np.sin(x) + 0.3 * rng.normal(size=n))
    rows = "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y, strict=True))
    text = header + "\n" + rows
    path.write_text(text, encoding=encoding)
    return x, y


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if a fit starts: errors must be caught before fitting."""
    def fit(*args, **kwargs):
        raise AssertionError("fit was called")

    monkeypatch.setattr(mcycle, "fit", fit)


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("t,y,label\n1,2.0,a\n2,x,b\n3,,c\n4,5.5,d\n5,nan,e\n")
    return path


@pytest.fixture
def good_csv(tmp_path):
    path = tmp_path / "good.csv"
    write_xy(path)
    return path


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--data", "missing.csv", "--x", "t", "--y", "y"], ["missing.csv", "no such file"]),
        (["--x", "t", "--y", "speed"], ["--y 'speed'", "no such column", "t, y, label"]),
        (["--x", "time", "--y", "y"], ["--x 'time'", "no such column"]),
        (["--x", "t", "--y", "y"], ["column 'y'", "rows 2, 3, 5"]),
        (["--x", "t", "--y", "label"], ["column 'label'", "rows 1, 2, 3, 4, 5"]),
        (["--x", "t", "--y", "y", "--model", "transformer"],
         ["--model", "'transformer'", "kernel", "bayesattn fit --help"]),
        (["--x", "t", "--y", "y", "--method", "hmc"], ["--method", "'hmc'", "nuts"]),
        (["--x", "t", "--y", "y", "--seed", "-1"], ["--seed", f"0 to {MAX_SEED}", "-1"]),
        (["--x", "t", "--y", "y", "--seed", str(2**32)], ["--seed", str(2**32)]),
        (["--x", "t", "--y", "y", "--seed", "1.5"], ["--seed", "integer"]),
        (["--x", "t", "--y", "y", "--num-steps", "0"], ["--num-steps", "positive"]),
    ],
)
def test_fit_bad_input_is_one_line_and_exit_2(csv_file, tmp_path, monkeypatch, capsys, no_fit,
                                              args, fragments):
    monkeypatch.chdir(tmp_path)
    if "--data" not in args:
        args = ["--data", str(csv_file), *args]
    code = main(["fit", *args, "--out", str(tmp_path / "out")])
    assert_one_line_error(code, capsys.readouterr().err, *fragments)
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def _bad_file(tmp_path, kind) -> Path:
    path = tmp_path / f"{kind}.csv"
    if kind == "latin1":
        path.write_bytes("t,y\n1,2\n2,3\n3,4\n# caf\u00e9\n".encode("latin-1"))
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "utf16":
        path.write_text("t,y\n1,2\n2,3\n3,4\n", encoding="utf-16")
    elif kind == "long_field":
        path.write_text("t,y\n1,2\n2,\"" + "9" * (MAX_FIELD_CHARS + 1) + "\"\n")
    elif kind == "huge_y":
        path.write_text("t,y\n1,1e200\n2,-3e199\n3,2e200\n4,1e199\n")
    elif kind == "tiny_x":
        path.write_text("t,y\n1e-120,1\n2e-120,2\n3e-120,1.5\n")
    elif kind == "constant_y":
        path.write_text("t,y\n1,1\n2,1\n3,1\n")
    elif kind == "empty":
        path.write_text("")
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind,fragments",
    [
        ("latin1", ["not UTF-8", "iconv -f latin1 -t utf-8"]),
        ("binary", ["binary"]),
        ("utf16", ["UTF-16", "iconv -f utf-16 -t utf-8"]),
        ("long_field", ["field larger than field limit", str(MAX_FIELD_CHARS), "line 3"]),
        ("huge_y", ["--y 'y'", "2e+200", "rescale"]),
        ("tiny_x", ["--x 't'", "standard deviation", "rescale"]),
        ("constant_y", ["--y 'y'", "constant"]),
        ("empty", ["empty file"]),
        ("folder", ["not a file"]),
    ],
)
def test_unreadable_csv_is_one_line_error(tmp_path, capsys, no_fit, kind, fragments):
    path = _bad_file(tmp_path, kind)
    code = main(["fit", "--data", str(path), "--x", "t", "--y", "y", "--out",
                 str(tmp_path / "out")])
    assert_one_line_error(code, capsys.readouterr().err, *fragments)
    assert not (tmp_path / "out").exists()


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    """Excel writes UTF-8 CSV with a BOM; the first column must still be found."""
    path = tmp_path / "bom.csv"
    x, y = write_xy(path, 5, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    got_x, got_y = read_xy(path, "t", "y")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_too_many_rows_is_refused_before_reading_the_rest(tmp_path, capsys, no_fit):
    """A file over the model/method's row limit is refused after reading limit + 1 rows: a bad
    value further down is never reached, so the refusal does not depend on the file's size."""
    limit = row_limit("kernel", "nuts")
    path = tmp_path / "big.csv"
    rows = "".join(f"{i},{i % 7}\n" for i in range(limit + 1))
    path.write_text("t,y\n" + rows + "oops,1\n" * 1000)
    code = main(["fit", "--data", str(path), "--x", "t", "--y", "y", "--model", "kernel",
                 "--method", "nuts", "--out", str(tmp_path / "out")])
    assert_one_line_error(code, capsys.readouterr().err, f"more than {limit} rows",
                          "--method", "svi", str(row_limit("kernel", "svi")))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["proc", "under_file", "file"])
def test_unusable_out_folder_is_refused_before_fitting(good_csv, tmp_path, capsys, no_fit,
                                                        where):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    out = {"proc": Path("/proc/bayesattn-test/x"), "under_file": a_file / "sub",
           "file": a_file}[where]
    code = main(["fit", "--data", str(good_csv), "--x", "t", "--y", "y", "--out", str(out)])
    assert_one_line_error(code, capsys.readouterr().err, "--out")
    assert a_file.read_text() == "x"


def test_unwritable_out_folder_is_refused_before_fitting(good_csv, tmp_path, capsys, no_fit,
                                                         monkeypatch):
    """The folder is probed with a temporary file before the fit (simulated: tests run as root,
    which ignores permission bits)."""
    import bayesattn.io as bio

    out = tmp_path / "locked"
    out.mkdir()
    real = bio.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if Path(dir) == out:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(bio.tempfile, "mkstemp", mkstemp)
    code = main(["fit", "--data", str(good_csv), "--x", "t", "--y", "y", "--out", str(out)])
    assert_one_line_error(code, capsys.readouterr().err, "--out", "Permission denied")
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_out_folder_is_refused(good_csv, tmp_path, capsys, no_fit):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        code = main(["fit", "--data", str(good_csv), "--x", "t", "--y", "y", "--out", str(out)])
    finally:
        out.chmod(0o700)
    assert_one_line_error(code, capsys.readouterr().err, "--out")


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


@pytest.mark.parametrize("argv", [["demo", "nosuchdemo"], ["frobnicate"], []])
def test_unknown_subcommand_or_demo_is_one_line_exit_2(argv, capsys):
    assert_one_line_error(main(argv), capsys.readouterr().err)


def test_choices_match_the_models_and_methods():
    from bayesattn.experiments.regression import MODELS
    from bayesattn.inference import METHODS

    assert set(MODEL_CHOICES) == set(MODELS) and set(METHOD_CHOICES) == set(METHODS)


def test_imports_have_no_side_effects():
    """Importing the CLI, plots and experiments leaves Matplotlib's backend and torch's thread
    count alone (a notebook keeps showing figures)."""
    code = ("import matplotlib, torch; matplotlib.use('svg'); torch.set_num_threads(3)\n"
            "import bayesattn.cli, bayesattn.plots, bayesattn.experiments.mcycle, "
            "bayesattn.experiments.neuro, bayesattn.experiments.fit_csv\n"
            "print(matplotlib.get_backend(), torch.get_num_threads())")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MPLBACKEND", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["svg", "3"]


def test_experiments_do_not_import_the_cli():
    for path in (ROOT / "bayesattn" / "experiments").glob("*.py"):
        text = path.read_text()
        assert "from ..cli" not in text and "bayesattn.cli" not in text, path.name


# ----------------------------------------------------------------------------- success paths
FAST = ["--quick", "--num-steps", "40"]


def fit_args(data, out, model, method="map", *extra, y="y"):
    return ["fit", "--data", str(data), "--x", "t", "--y", y, "--model", model, "--method",
            method, "--out", str(out), *FAST, *extra]


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("model", MODEL_CHOICES)
def test_fit_map_success_path_for_every_model(good_csv, tmp_path, capsys, model):
    out = tmp_path / "out"
    assert main(fit_args(good_csv, out, model)) == 0
    captured = capsys.readouterr()
    assert "convergence:" in captured.out
    idata = az.from_netcdf(out / f"{model}.nc")
    one_draw = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"] == 1
    # MODEL.json: the AttentionRegressor specification `bayesattn predict --fit` reads
    expected = {f"{model}.nc", f"{model}.json", f"predictive_{model}.png", "summary.md"}
    if model == "kernel":
        expected.add("attention_weights_kernel.png")
    if not one_draw:  # a Laplace approximation at the mode: draws with a spread
        expected.add(f"posterior_{model}.png")
    assert {p.name for p in out.iterdir()} == expected | {MANIFEST_NAME}  # no temporary files
    info = manifest(out)
    assert info["complete"] is True and set(info["files"]) == expected
    summary = (out / "summary.md").read_text().splitlines()
    assert summary[0] == "# bayesattn report"
    assert next(line for line in summary[1:] if line.strip()).startswith("convergence:")
    text = "\n".join(summary)
    assert "nan" not in text.lower()  # never a table of NaNs
    if one_draw:
        assert "point estimate" in text
    else:  # a posterior table with a standard-deviation column
        assert re.search(r"\|\s*sd\s*\|", text)
    assert "warmup_steps" not in text  # MAP's settings, not NUTS'


@pytest.mark.slow
def test_fit_svi_reports_stats_without_r_hat(good_csv, tmp_path, capsys):
    out = tmp_path / "svi"
    assert main(fit_args(good_csv, out, "least_squares", "svi")) == 0
    text = (out / "summary.md").read_text()
    assert "r_hat" not in text and "ess_bulk" not in text and "hdi_3%" in text
    assert "posterior_least_squares.png" in manifest(out)["files"]


@pytest.mark.slow
def test_fit_nuts_tiny(good_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mcycle, "_settings",
                        lambda quick: {"num_chains": 2, "warmup_steps": 20, "num_samples": 20})
    out = tmp_path / "nuts"
    assert main(fit_args(good_csv, out, "least_squares", "nuts")) == 0
    text = (out / "summary.md").read_text()
    assert "r_hat" in text and "warmup_steps" in text
    assert (out / "posterior_least_squares.png").is_file()


@pytest.mark.slow
def test_dollar_column_name_is_drawn_literally(tmp_path, capsys):
    data = tmp_path / "d.csv"
    write_xy(data, header="t,y $\\frac$")
    out = tmp_path / "o"
    argv = fit_args(data, out, "least_squares", y="y $\\frac$")
    assert main(argv) == 0, capsys.readouterr().err
    assert (out / "predictive_least_squares.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("model", MODEL_CHOICES)
def test_exact_never_leaves_an_empty_folder(good_csv, tmp_path, capsys, model):
    """``--method exact`` either fits or fails with one line, leaving no folder behind (not
    even the parents it created)."""
    out = tmp_path / "new" / "exact"
    code = main(fit_args(good_csv, out, model, "exact"))
    err = capsys.readouterr().err
    if code == 0:
        assert (out / "summary.md").is_file()
    else:
        assert_one_line_error(code, err, "--method exact")
        assert not (tmp_path / "new").exists()


@pytest.mark.slow
@pytest.mark.parametrize("model", MODEL_CHOICES)
def test_exact_works_for_every_model(good_csv, tmp_path, capsys, model):
    out = tmp_path / "exact"
    assert main(fit_args(good_csv, out, model, "exact")) == 0
    assert (out / f"{model}.nc").is_file()


# ----------------------------------------------------------------------------- safe files
def test_atomic_write_interrupted_keeps_the_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "summary.md"
    dest.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(dest) as tmp:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt
    assert dest.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.md"]
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".md"
        tmp.write_text("new")
    assert dest.read_text() == "new"
    umask = os.umask(0o022)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_atomic_write_replaces_a_link_instead_of_writing_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.png").symlink_to(outside)
    out = OutputDir.plain(folder)
    out.write_text("a.png", "ours")
    assert not (folder / "a.png").is_symlink() and (folder / "a.png").read_text() == "ours"
    assert outside.read_text() == "keep"
    for bad in ("../escape.txt", "/tmp/x", "..", MANIFEST_NAME):
        with pytest.raises(ValueError):
            out.write_text(bad, "no")
    assert not (tmp_path / "escape.txt").exists()


def test_manifest_listing_a_path_outside_is_ignored(tmp_path, good_csv, capsys, no_fit):
    """A tampered manifest cannot make --force delete outside the folder."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps(
        {"tool": "bayesattn", "complete": True, "files": ["../victim.txt", str(victim)]}))
    OutputDir.prepare(out, force=True)
    assert victim.read_text() == "keep"


@pytest.mark.slow
def test_interrupt_during_a_write_leaves_no_partial_file_and_rerun_works(
        good_csv, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = fit_args(good_csv, out, "least_squares")
    real = az.InferenceData.to_netcdf

    def interrupted(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x89HDF\r\n partial")  # half a file, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(az.InferenceData, "to_netcdf", interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("bayesattn")]
    assert "Traceback" not in err and len(ours) == 1 and ours[0].startswith("bayesattn: interr")
    assert not (out / "least_squares.nc").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert manifest(out)["complete"] is False

    monkeypatch.setattr(az.InferenceData, "to_netcdf", real)
    assert main(argv) == 0  # same command, no --force: our unfinished run is started over
    az.from_netcdf(out / "least_squares.nc")
    assert manifest(out)["complete"] is True
    assert main(argv) == 2  # a finished run is not replaced without --force
    assert "--force" in capsys.readouterr().err


@pytest.mark.slow
def test_force_replaces_only_our_files_and_never_follows_links(good_csv, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(fit_args(good_csv, out, "least_squares")) == 0
    (out / "notes.txt").write_text("mine")
    outside = tmp_path / "outside.txt"
    outside.write_text("do not touch")
    # an entry of our manifest swapped for a link pointing outside --out
    (out / "least_squares.nc").unlink()
    (out / "least_squares.nc").symlink_to(outside)
    assert main(fit_args(good_csv, out, "gp", "map", "--force")) == 0
    names = {p.name for p in out.iterdir()}
    assert "least_squares.nc" not in names and "predictive_least_squares.png" not in names
    assert "least_squares.json" not in names
    assert {"gp.nc", "gp.json", "predictive_gp.png", "posterior_gp.png", "summary.md",
            "notes.txt"} <= names
    assert (out / "notes.txt").read_text() == "mine"
    assert outside.read_text() == "do not touch"
    assert set(manifest(out)["files"]) == {"gp.nc", "gp.json", "predictive_gp.png",
                                           "posterior_gp.png",
                                           "summary.md"}


def test_force_refuses_to_write_over_a_file_or_link_we_did_not_write(good_csv, tmp_path,
                                                                     capsys, no_fit):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("do not touch")
    (out / "gp.nc").symlink_to(outside)
    (out / "summary.md").write_text("my notes")
    code = main(["fit", "--data", str(good_csv), "--x", "t", "--y", "y", "--model", "gp",
                 "--out", str(out), "--force"])
    assert_one_line_error(code, capsys.readouterr().err, "gp.nc", "summary.md",
                          "not written by bayesattn")
    assert outside.read_text() == "do not touch"
    assert (out / "summary.md").read_text() == "my notes" and (out / "gp.nc").is_symlink()
    assert not (out / MANIFEST_NAME).exists()


def interrupt_fit(popen, tmp_path, data, *extra, wait=3.0):
    """Start ``bayesattn fit`` (NUTS) in its own process group, press Ctrl-C (SIGINT to the
    group, as a terminal does) ``wait`` s into the fit; returns (status, seconds from the
    signal to the exit, stderr, out folder)."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err_file:
        proc = popen(
            [sys.executable, "-m", "bayesattn", "fit", "--data", str(data), "--x", "t", "--y",
             "y", "--model", "kernel", "--method", "nuts", "--out", str(out), *extra],
            stdout=subprocess.DEVNULL, stderr=err_file, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (out / MANIFEST_NAME).exists():
                time.sleep(0.05)
            time.sleep(wait)  # inside the fit
            assert proc.poll() is None, err_path.read_text()[-2000:]
            sent = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
            elapsed = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return proc.returncode, elapsed, err_path.read_text(), out


def assert_prompt_clean_interrupt(code, elapsed, err, out):
    print(f"exit {code} {elapsed:.2f} s after SIGINT")
    assert code == 130, err[-2000:]
    assert elapsed < 2.0
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("bayesattn: interrupted")
    # nothing was complete yet: no partial file, no temporary file, no empty folder
    assert not out.exists()


@pytest.mark.slow
def test_ctrl_c_exits_promptly_with_one_line(good_csv, tmp_path, interruptible_popen):
    """A real SIGINT during a NUTS fit (sequential chains): exit 130 within 2 s, one line."""
    assert_prompt_clean_interrupt(*interrupt_fit(interruptible_popen, tmp_path, good_csv, "--quick",
                                                 wait=1.0))


@pytest.mark.slow
def test_ctrl_c_during_parallel_chains_exits_promptly(good_csv, tmp_path, interruptible_popen):
    assert_prompt_clean_interrupt(*interrupt_fit(interruptible_popen, tmp_path, good_csv, wait=4.0))


# ----------------------------------------------------------------------------- demo
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
    assert summary.splitlines()[2].startswith("convergence:")
    assert "PSIS-LOO comparison" in summary and "bandwidth" in summary
    assert result.stdout.count("convergence:") >= 3
    idata = az.from_netcdf(out / "kernel.nc")
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive",
                  "observed_data"):
        assert group in idata.groups()
    # the bandwidth is reported in ms: mcycle's NW bandwidth is a few ms, not a fraction
    assert 0.3 < float(idata.posterior["bandwidth"].mean()) < 10
    assert "elpd_loo" in result.stdout or "elpd_loo" in summary
    assert manifest(out)["complete"] is True
