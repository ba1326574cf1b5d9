"""Tests of the UEA benchmark runner (``bayesattn bench uea``) on a tiny configuration."""

from __future__ import annotations

import json

import pytest

from bayesattn.cli import UsageError, main
from bayesattn.experiments.uea import BenchConfig, run_uea_bench, summarize

TINY = BenchConfig(d_model=8, nhead=2, num_layers=1, dim_feedforward=8, epochs=1,
                   bayes_epochs=1, mc_samples=2)


@pytest.mark.slow
def test_bench_writes_results_table_and_figure(tmp_path):
    records = run_uea_bench(tmp_path, attention=["softmax", "least-squares", "bayesian"],
                            seeds=2, epochs=None, config=TINY, progress=False)
    assert [(r["attention"], r["seed"]) for r in records] == [
        ("softmax", 0), ("softmax", 1), ("least_squares", 0), ("least_squares", 1),
        ("bayesian", 0), ("bayesian", 1),
    ]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == records
    for r in records:
        assert {"attention", "seed", "accuracy", "nll", "ece", "train_seconds"} <= set(r)
        assert 0 <= r["accuracy"] <= 1 and r["nll"] > 0 and 0 <= r["ece"] <= 1
        assert r["train_seconds"] > 0 and r["epochs"] == 1
    assert "mean_mutual_information" in records[-1]
    table = (tmp_path / "results.md").read_text()
    assert "| softmax |" in table and "| least-squares |" in table and "Bayesian" in table
    assert (tmp_path / "results.png").stat().st_size > 10_000
    assert (tmp_path / "predictions.npz").exists()


def test_summary_mean_and_sd():
    recs = [{"attention": "linear", "seed": s, "accuracy": a, "nll": 0.1, "ece": 0.0,
             "train_seconds": 1.0} for s, a in enumerate([0.9, 1.0])]
    (row,) = summarize(recs)
    assert row["accuracy"] == pytest.approx(0.95)
    assert row["accuracy_sd"] == pytest.approx(0.0707107, rel=1e-5)
    assert row["nll_sd"] == 0.0 and row["seeds"] == 2


def test_bad_arguments_are_usage_errors(tmp_path, capsys):
    with pytest.raises(UsageError, match="unknown attention"):
        run_uea_bench(tmp_path, attention=["cosine"], seeds=1, epochs=1, config=TINY)
    with pytest.raises(UsageError, match="seeds"):
        run_uea_bench(tmp_path, attention=["softmax"], seeds=0, epochs=1, config=TINY)
    with pytest.raises(UsageError, match="epochs"):
        run_uea_bench(tmp_path, attention=["softmax"], seeds=1, epochs=0, config=TINY)
    status = main(["bench", "uea", "--attention", "nope", "--out", str(tmp_path / "x")])
    assert status == 2 and "unknown attention" in capsys.readouterr().err
