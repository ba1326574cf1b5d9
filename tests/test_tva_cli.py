"""``bayesattn tva fit`` and the fit backends: every bad input is one line and exit 2 before
any fit; per-group fits write renamed parameters, a wide summary.csv that matches the saved
posteriors, and honour --force; a failed fit is reported without stopping the others; the
process pool and Ray give the same numbers as a serial run."""

from __future__ import annotations

import importlib.util
import inspect
import math

import arviz as az
import numpy as np
import pandas as pd
import pytest
import torch

import bayesattn.experiments.tva_study as tva_study
from bayesattn.cli import main
from bayesattn.errors import UsageError
from bayesattn.experiments.backends import run_tasks
from bayesattn.experiments.tva_data import Trials, read_trials, write_trials
from bayesattn.experiments.tva_options import make_prior, parse_prior
from bayesattn.models.neuro import tva as tva_models
from bayesattn.models.neuro.tva import simulate_partial_report

N = 3
HEADER = "subject,condition,T,S1,S2,S3,D1,D2,D3,R1,R2,R3"
HAS_CONDITIONS = "conditions" in inspect.signature(tva_models.TVA.__init__).parameters
HAS_HIERARCHICAL = hasattr(tva_models, "HierarchicalTVA")


def simulate(num_subjects=2, conditions=("A", "B"), reps=2, seed=0) -> Trials:
    """Partial report at 3 locations: 4 exposures x ``reps`` without distractors and ``reps``
    trials with 1 distractor, per subject and condition (C differs by condition)."""
    gen = torch.Generator().manual_seed(seed)
    cols = {k: [] for k in ("subject", "condition", "exposure", "distractors", "reported")}
    for s in range(1, num_subjects + 1):
        for c, cond in enumerate(conditions):
            exposure = [t for t in (20.0, 50.0, 100.0, 200.0) for _ in range(reps)]
            dis = np.zeros((len(exposure) + reps, N), bool)
            for i in range(reps):
                dis[len(exposure) + i, i % N] = True
            exposure += [100.0] * reps
            d = torch.tensor(dis)
            rep = simulate_partial_report(
                torch.tensor(exposure, dtype=torch.float64), targets=~d, distractors=d,
                C=30.0 + 15 * c, weights=torch.ones(N, dtype=torch.float64), alpha=0.5, t0=10.0,
                K=2, generator=gen)
            cols["subject"] += [str(s)] * len(exposure)
            cols["condition"] += [cond] * len(exposure)
            cols["exposure"] += exposure
            cols["distractors"].append(dis)
            cols["reported"].append(rep.numpy())
    m = len(cols["exposure"])
    return Trials(np.array(cols["subject"]), np.array(cols["condition"]),
                  np.array(cols["exposure"]), np.ones((m, N), bool),
                  np.concatenate(cols["distractors"]), np.concatenate(cols["reported"]),
                  np.arange(1, m + 1))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("tva") / "trials.csv"
    write_trials(path, simulate())
    return path


def args_for(data, out, *extra):
    return ["tva", "fit", "--data", str(data), "--task", "partial", "--out", str(out),
            "--backend", "serial", "--quick", *extra]


def assert_one_line(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bayesattn: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture
def no_fit(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a fit started")

    monkeypatch.setattr(tva_study, "run_tasks", fail)


# ---------------------------------------------------------------------- data and options
def test_csv_roundtrip_keeps_every_trial(study):
    t = read_trials(study, task="partial", need_condition=True)
    ref = simulate()
    assert t.num_locations == N and len(t.exposure) == 40
    np.testing.assert_array_equal(t.reported, ref.reported)
    np.testing.assert_array_equal(t.targets, ~ref.distractors)
    assert list(t.subject[:1]) == ["1"] and set(t.condition) == {"A", "B"}


def row(s="1", c="A", T="50", S="1,1,1", D="0,0,0", R="1,0,0"):
    return f"{s},{c},{T},{S},{D},{R}"


CSV_ERRORS = [
    ("no subject", "condition,T,S1,S2,S3,D1,D2,D3,R1,R2,R3\nA,50,1,1,1,0,0,0,1,0,0\n",
     (), "no column 'subject'"),
    ("no T", "subject,condition,S1,D1,R1\n1,A,1,0,1\n", (), "no column 'T'"),
    ("no condition", "subject,T,S1,D1,R1\n1,50,1,0,1\n", ("--by", "subject,condition"),
     "no column 'condition'"),
    ("no D3", "subject,condition,T,S1,S2,S3,D1,D2,R1,R2,R3\n1,A,50,1,1,1,0,0,1,0,0\n", (),
     "column D3 missing"),
    ("S gap", "subject,condition,T,S1,S3,D1,D3,R1,R3\n1,A,50,1,1,0,0,1,0\n", (),
     "column S2 missing"),
    ("R4 beyond N", HEADER + ",R4\n" + row() + ",0\n", (), "R4 beyond N=3"),
    ("not 0/1", HEADER + "\n" + row() + "\n" + row(R="2,0,0") + "\n", (),
     "column 'R1' must hold 0 or 1, got '2' in rows 2"),
    ("T text", HEADER + "\n" + row(T="fast") + "\n", (), "column 'T'"),
    ("T negative", HEADER + "\n" + row(T="-5") + "\n", (), "negative in rows 1"),
    ("report not shown", HEADER + "\n" + row(S="0,1,1", D="0,0,0", R="1,0,0") + "\n", (),
     "column 'R1': a report where nothing is shown (S1 = 0) in rows 1"),
    ("distractor not shown", HEADER + "\n" + row(S="1,0,1", D="0,1,0", R="1,0,0") + "\n", (),
     "column 'D2': a distractor where nothing is shown"),
    ("reported distractor", HEADER + "\n" + row(D="1,0,0", R="1,0,0") + "\n", (),
     "column 'R1': a distractor (D1 = 1) reported in rows 1"),
    ("empty display", HEADER + "\n" + row(S="0,0,0", R="0,0,0") + "\n", (),
     "rows 1 show no stimulus"),
    ("empty subject", HEADER + "\n" + row(s="") + "\n", (), "column 'subject' is empty"),
    ("fixed K too small", HEADER + "\n" + row(R="1,1,0") + "\n", ("--k", "fixed=1"),
     "rows 1 report more than 1 items"),
    ("fixed t0 too late", HEADER + "\n" + row(T="10") + "\n", ("--t0", "fixed=20"),
     "rows 1 report items at an exposure <= t0"),
    ("regions", HEADER + "\n" + row() + "\n", ("--regions", "1-2,4-5"), "--regions '1-2,4-5'"),
    ("K above N", HEADER + "\n" + row() + "\n", ("--k", "fixed=4"), "more than the N=3"),
]


@pytest.mark.parametrize("text,extra,fragment", [c[1:] for c in CSV_ERRORS],
                         ids=[c[0] for c in CSV_ERRORS])
def test_bad_csv_is_one_line_before_fitting(tmp_path, capsys, no_fit, text, extra, fragment):
    data = tmp_path / "bad.csv"
    data.write_text(text)
    code = main(args_for(data, tmp_path / "out", *extra))
    assert_one_line(code, capsys.readouterr().err, fragment)
    assert not (tmp_path / "out").exists()


def test_whole_report_refuses_distractors(tmp_path, capsys, no_fit):
    data = tmp_path / "w.csv"
    data.write_text(HEADER + "\n" + row(D="0,1,0") + "\n")
    argv = args_for(data, tmp_path / "out")
    argv[argv.index("partial")] = "whole"
    assert_one_line(main(argv), capsys.readouterr().err, "--task whole: column 'D2'")


OPTION_ERRORS = [
    (("--k", "sometimes"), "--k 'sometimes': expected probit, free or fixed=VALUE"),
    (("--k", "fixed=0"), "positive integer"),
    (("--t0", "normal"), "--t0 'normal'"),
    (("--t0", "fixed=abc"), "fixed=VALUE needs a number"),
    (("--by", "trial"), "--by 'trial'"),
    (("--by", "condition", "--hierarchical"), "--hierarchical fits all subjects"),
    (("--deviation", "subject"), "--deviation needs --hierarchical"),
    (("--by", "subject,condition", "--condition-params", "C"), "--condition-params with --by"),
    (("--condition-params", "beta"), "unknown parameter 'beta'"),
    (("--address", "auto"), "--address needs --backend ray"),
    (("--prior", "C"), "expected NAME=Family(args)"),
    (("--prior", "beta=Normal(0,1)"), "unknown parameter 'beta'"),
    (("--prior", "C=Lognormal(4,1)"), "'Lognormal' is not a distribution"),
    (("--prior", "C=__import__('os').system('true')"), "expected Family(args)"),
    (("--prior", "C=LogNormal(mu,1)"), "arguments must be numbers"),
    (("--prior", "C=LogNormal(1,-1)"), "LogNormal rejects these arguments"),
    (("--prior", "C=LogNormal(1,1e999)"), "finite"),
    (("--prior", "C=Normal(40,10)"), "C must be positive"),
    (("--prior", "C=Poisson(40)"), "discrete"),
    (("--prior", "C=LogNormal([1,2],1)"), "C is one number"),
    (("--prior", "w=Dirichlet([1,1])"), "w needs a distribution on the simplex over 3"),
    (("--prior", "mK=Normal(3,1)", "--k", "free"), "only --k probit has it"),
    (("--prior", "sigma0=HalfNormal(5)", "--t0", "exponential"), "only --t0 gaussian"),
    (("--prior", "mu0=Normal(10,5)", "--t0", "exponential"), "mu0 must be positive"),
    (("--prior", "C=LogNormal(4,1)", "--prior", "C=Gamma(2,0.05)"), "--prior C given twice"),
    (("--method", "exact"), "--method: invalid choice"),
    (("--nuts-start", "mode"), "--nuts-start: invalid choice"),
    (("--nuts-start", "map"), "--nuts-start needs --method nuts"),
]


@pytest.mark.parametrize("extra,fragment", OPTION_ERRORS, ids=[" ".join(e) for e, _ in
                                                              OPTION_ERRORS])
def test_bad_options_are_one_line_before_fitting(tmp_path, capsys, no_fit, study, extra,
                                                 fragment):
    code = main(args_for(study, tmp_path / "out", *extra))
    assert_one_line(code, capsys.readouterr().err, fragment)


def test_nuts_start_reaches_the_fit():
    """``--nuts-start map`` makes each NUTS fit start from a MAP-Laplace fit; the default and
    the other methods leave the start alone."""
    from bayesattn.experiments.tva_study import fit_settings

    assert fit_settings("nuts", quick=True, nuts_start="map")["init_values"] == "map"
    assert fit_settings("nuts", quick=False)["init_values"] is None
    assert "init_values" not in fit_settings("map", quick=False)


def test_prior_is_parsed_not_evaluated():
    name, d = make_prior("C=LogNormal(4.5, 0.6)")
    assert name == "C" and float(d.loc) == 4.5 and float(d.scale) == 0.6
    name, d = make_prior("w=Dirichlet(2)", size=4)
    assert d.concentration.tolist() == [2.0] * 4
    assert parse_prior("mK=Normal(loc=-1, scale=2)") == ("mK", "Normal", [],
                                                         {"loc": -1.0, "scale": 2.0})


# ---------------------------------------------------------------------- fits
def test_per_subject_fits_summary_force_and_failure(tmp_path, capsys, study, monkeypatch):
    out = tmp_path / "out"
    original = tva_study.fit_one

    def fit_or_fail(payload):  # the serial backend fits subject 1, then subject 2
        fit_or_fail.calls += 1
        if fit_or_fail.calls == 2:
            raise FloatingPointError("simulated failure")
        return original(payload)

    fit_or_fail.calls = 0
    monkeypatch.setattr(tva_study, "fit_one", fit_or_fail)
    code = main(args_for(study, out, "--k", "probit", "--t0", "gaussian", "--by", "subject",
                         "--prior", "C=LogNormal(3.5,0.5)"))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "tva fit: 100%" in err  # progress per fit
    assert "subject=2 condition=all failed: FloatingPointError: simulated failure" in err
    assert "1 of 2 fits failed" in err
    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns[:6]) == ["subject", "condition", "C", "C_sd", "C_hdi_3%",
                                       "C_hdi_97%"]
    for p in ("alpha", "w[1]", "w[2]", "w[3]", "mu0", "sigma0", "mK", "sK"):
        assert {p, f"{p}_sd", f"{p}_hdi_3%", f"{p}_hdi_97%"} <= set(table.columns), p
    assert table["subject"].tolist() == [1, 2] and table["condition"].tolist() == ["all"] * 2
    assert (table["trials"] == 20).all()
    assert table["error"].isna().tolist() == [True, False]
    assert "FloatingPointError" in table.loc[1, "error"] and math.isnan(table.loc[1, "C"])
    assert sorted(p.name for p in out.glob("*.nc")) == ["fit-subject-1.nc"]
    r = table.iloc[0]
    idata = az.from_netcdf(out / r["file"])
    post = idata.posterior
    assert {"C", "alpha", "w", "mu0", "sigma0", "mK", "sK"} <= set(post.data_vars)
    assert not {"t0", "t0_sd", "weights"} & set(post.data_vars)
    c = post["C"].values.ravel()
    assert r["C"] == pytest.approx(c.mean(), rel=1e-12)
    assert r["C_sd"] == pytest.approx(c.std(ddof=1), rel=1e-9)
    lo, hi = az.hdi(c, hdi_prob=0.94)
    assert (r["C_hdi_3%"], r["C_hdi_97%"]) == pytest.approx((lo, hi))
    w = post["w"].values.reshape(-1, N).mean(0)
    assert [r[f"w[{j}]"] for j in (1, 2, 3)] == pytest.approx(w.tolist())
    assert int(idata.observed_data["reported"].shape[0]) == 20
    md = (out / "summary.md").read_text()
    assert md.count("convergence: ") == 1 and "1 fit(s) failed: subject=2" in md

    # a finished run is not replaced without --force
    assert_one_line(main(args_for(study, out, "--by", "condition")), capsys.readouterr().err,
                    "holds a finished bayesattn run")
    # --force replaces the previous run's files (and only those); one subject's condition A
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(tva_study, "fit_one", original)
    small = tmp_path / "one.csv"
    write_trials(small, simulate(num_subjects=1, conditions=("A",)))
    code = main(args_for(small, out, "--by", "condition", "--k", "fixed=2", "--t0", "fixed=5",
                         "--force"))
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.nc")) == ["fit-condition-A.nc"]
    assert (out / "notes.txt").read_text() == "mine"
    table = pd.read_csv(out / "summary.csv")
    assert table["condition"].tolist() == ["A"] and table["subject"].tolist() == [1]
    assert (table["trials"] == 10).all() and table["error"].isna().all()
    assert "mK" not in table.columns and "mu0" not in table.columns
    assert (table["C_hdi_3%"] <= table["C"]).all() and (table["C"] <= table["C_hdi_97%"]).all()
    assert (out / "summary.md").read_text().count("convergence: ") == 1
    assert (out / "fits.png").stat().st_size > 5000 and (out / "parameters.png").exists()


@pytest.mark.skipif(not HAS_CONDITIONS, reason="TVA has no per-condition parameters yet")
def test_condition_params_give_a_row_per_condition(tmp_path, capsys, study):
    out = tmp_path / "out"
    code = main(args_for(study, out, "--by", "subject", "--condition-params", "C", "--k",
                         "fixed=2", "--t0", "fixed=5"))
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out / "summary.csv")
    assert table[["subject", "condition"]].astype(str).values.tolist() == [
        ["1", "A"], ["1", "B"], ["2", "A"], ["2", "B"]]
    for s in (1, 2):  # alpha is shared by the conditions, C is not
        rows = table[table["subject"] == s]
        assert rows["alpha"].nunique() == 1 and rows["C"].nunique() == 2


@pytest.mark.skipif(not HAS_HIERARCHICAL, reason="HierarchicalTVA not merged yet")
def test_hierarchical_fit_gives_a_row_per_subject(tmp_path, capsys, study):
    out = tmp_path / "out"
    code = main(args_for(study, out, "--by", "subject", "--hierarchical", "--k", "fixed=2",
                         "--t0", "fixed=5"))
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out / "summary.csv")
    assert table["subject"].tolist() == [1, 2] and table["C"].notna().all()
    assert (out / "fit-hierarchical.nc").exists() and (out / "population.csv").exists()


@pytest.mark.skipif(not HAS_HIERARCHICAL, reason="HierarchicalTVA not merged yet")
def test_hierarchical_shared_deviation_reaches_the_model():
    """``--deviation subject`` builds the model with one deviation per subject: its
    subject-level C site loses the condition axis."""
    from bayesattn.experiments.tva_options import build_model

    spec = {"num_locations": 3, "task": "partial", "k": ("fixed", 2), "t0": ("fixed", 5.0),
            "regions": None, "priors": {}, "empty_slots": False, "conditions": 2,
            "by_condition": ("C",), "hierarchical": True, "num_subjects": 2}
    assert build_model(spec)._z_shape("C") == (2, 2)
    assert build_model({**spec, "deviation": "subject"})._z_shape("C") == (2,)


@pytest.mark.skipif(HAS_HIERARCHICAL and HAS_CONDITIONS, reason="the models are merged")
def test_missing_model_interface_is_one_line(tmp_path, capsys, study, no_fit):
    extra = ("--hierarchical",) if not HAS_HIERARCHICAL else ("--condition-params", "C")
    code = main(args_for(study, tmp_path / "out", "--by", "subject", *extra))
    assert_one_line(code, capsys.readouterr().err, "this version of bayesattn lacks")


# ---------------------------------------------------------------------- backends
def _payloads():
    trials = simulate(num_subjects=1, conditions=("A",), reps=2, seed=3)
    spec = {"num_locations": N, "task": "partial", "k": ("fixed", 2), "t0": ("fixed", 5.0),
            "regions": None, "priors": {}, "empty_slots": False, "conditions": 1,
            "by_condition": (), "hierarchical": False, "num_subjects": 1}
    data = {"exposure": trials.exposure, "reported": trials.reported,
            "targets": trials.targets, "distractors": trials.distractors}
    good = {"spec": spec, "data": data, "method": "map", "seed": 1,
            "settings": {"num_chains": 1, "num_samples": 20, "num_prior_draws": 10}}
    bad = {**good, "data": {**data, "reported": np.ones((10, N), bool)}}  # distractors reported
    return [("subject 1", good), ("bad", bad)]


@pytest.fixture(scope="module")
def serial_results():
    return run_tasks(tva_study.fit_one, _payloads(), backend="serial", progress=False)


def _assert_same(results, reference):
    assert [r.key for r in results] == ["subject 1", "bad"]
    assert [r.ok for r in results] == [True, False]
    assert results[1].error == reference[1].error and "ValueError" in results[1].error
    for r, ref in zip(results, reference, strict=True):
        if r.ok:
            for name in ("C", "alpha", "w"):
                np.testing.assert_array_equal(r.value.posterior[name].values,
                                              ref.value.posterior[name].values)
            np.testing.assert_array_equal(r.value.log_likelihood["reported"].values,
                                          ref.value.log_likelihood["reported"].values)
            assert r.value.prior.sizes["draw"] == 10  # fit(num_prior_draws=10)


@pytest.mark.slow
def test_process_pool_matches_serial_and_survives_a_failed_fit(serial_results, capsys):
    seen = []
    results = run_tasks(tva_study.fit_one, _payloads(), backend="process", workers=1,
                        progress=False, on_result=lambda i, r: seen.append(i))
    _assert_same(results, serial_results)
    assert sorted(seen) == [0, 1]
    assert "tasks: bad failed: ValueError" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_matches_serial(serial_results):
    results = run_tasks(tva_study.fit_one, _payloads(), backend="ray", workers=2,
                        progress=False)
    _assert_same(results, serial_results)


def test_backend_arguments_are_checked():
    with pytest.raises(UsageError, match="--backend 'dask'"):
        run_tasks(abs, [("a", 1)], backend="dask")
    with pytest.raises(UsageError, match="--workers"):
        run_tasks(abs, [("a", 1)], backend="serial", workers=0)
    with pytest.raises(UsageError, match="--address needs --backend ray"):
        run_tasks(abs, [("a", 1)], backend="process", address="auto")
    assert [r.value for r in run_tasks(abs, [("a", -1), ("b", 2)], backend="serial",
                                       progress=False)] == [1, 2]


def test_bench_uea_takes_the_backend_options(tmp_path, capsys):
    code = main(["bench", "uea", "--backend", "dask", "--out", str(tmp_path / "u")])
    assert_one_line(code, capsys.readouterr().err, "--backend")
    code = main(["bench", "uea", "--workers", "0", "--out", str(tmp_path / "u")])
    assert_one_line(code, capsys.readouterr().err, "--workers")
