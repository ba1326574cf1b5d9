"""Tests of ``bayesattn bench uncertainty``: corruptions, splits, summary, verdict, quick run."""

from __future__ import annotations

import json

import pytest
import torch

from bayesattn.cli import main
from bayesattn.data.japanese_vowels import SequenceSplit, load_japanese_vowels
from bayesattn.experiments.corruptions import CORRUPTIONS, corrupt
from bayesattn.experiments.uncertainty import (
    held_out_pair,
    report_from,
    stratified_split,
    summarize,
    verdict,
)
from bayesattn.experiments.uncertainty_methods import METHODS


@pytest.fixture(scope="module")
def vowels_test():
    data = load_japanese_vowels()
    mean, std = data.train.feature_mean_std()
    return data.test.standardized(mean, std)


def test_noise_and_scale_grow_with_severity_and_keep_padding(vowels_test):
    real = ~vowels_test.padding_mask
    for name in ("gaussian_noise", "channel_scale"):
        dev = []
        for s in (1, 3, 5):
            c = corrupt(vowels_test, name, s, seed=0)
            assert torch.equal(c.padding_mask, vowels_test.padding_mask)
            assert torch.equal(c.y, vowels_test.y)
            assert bool((c.x[~real] == 0).all())
            dev.append(float((c.x - vowels_test.x)[real].pow(2).mean()))
        assert dev[0] < dev[1] < dev[2]
    torch.testing.assert_close(corrupt(vowels_test, "gaussian_noise", 2, seed=1).x,
                               corrupt(vowels_test, "gaussian_noise", 2, seed=1).x)


def test_dropped_channels_zero_the_stated_number(vowels_test):
    for s, k in ((1, 1), (3, 4), (5, 8)):
        c = corrupt(vowels_test, "dropped_channels", s, seed=0)
        zero_channels = (c.x.abs().sum(1) == 0).sum(-1)  # per utterance
        assert bool((zero_channels == k).all())


def test_time_warp_lengths_and_padding(vowels_test):
    for s in (1, 5):
        c = corrupt(vowels_test, "time_warp", s, seed=0)
        assert bool((c.lengths >= 3).all())
        expect = torch.arange(c.x.shape[1]).unsqueeze(0) >= c.lengths.unsqueeze(1)
        assert torch.equal(c.padding_mask, expect)
        assert bool((c.x[c.padding_mask] == 0).all())
    mild = corrupt(vowels_test, "time_warp", 1, seed=0).lengths.float().mean()
    severe = corrupt(vowels_test, "time_warp", 5, seed=0).lengths.float().mean()
    assert severe < mild < vowels_test.lengths.float().mean()


def test_corrupt_rejects_bad_arguments(vowels_test):
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(vowels_test, "blur", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(vowels_test, "gaussian_noise", 6)
    assert len(CORRUPTIONS) == 4


def test_stratified_split_is_disjoint_and_balanced():
    data = load_japanese_vowels()
    train, val = stratified_split(data.train, 8, seed=3)
    assert len(train) == 270 - 72 and len(val) == 72
    assert torch.equal(torch.bincount(val.y), torch.full((9,), 8))
    rows = {tuple(x.flatten().tolist()) for x in data.train.x}
    assert len(rows) == 270
    val_rows = {tuple(torch.nn.functional.pad(x, (0, 0, 0, 26 - x.shape[0])).flatten().tolist())
                for x in val.x}
    tr_rows = {tuple(torch.nn.functional.pad(x, (0, 0, 0, 26 - x.shape[0])).flatten().tolist())
               for x in train.x}
    assert not val_rows & tr_rows and (val_rows | tr_rows) == rows
    with pytest.raises(ValueError, match="class"):
        stratified_split(SequenceSplit(data.train.x[:5], data.train.padding_mask[:5],
                                       data.train.lengths[:5], data.train.y[:5]), 8, seed=0)
    assert len({held_out_pair(s) for s in range(5)}) == 5


def _rec(method, seed, acc, nll, ece, auroc, secs):
    return {"method": method, "seed": seed,
            "in_distribution": {"accuracy": acc, "nll": nll, "brier": 0.1, "ece": ece,
                                "aurc": 0.01},
            "shift_mean": {"accuracy": acc - 0.1, "nll": nll + 1, "ece": ece + 0.1},
            "unknown": {"auroc_entropy": auroc, "fpr95_entropy": 0.5, "auroc_mi": None,
                        "fpr95_mi": None},
            "train_seconds": secs, "predict_ms_per_example": 0.1, "parameters": 10}


def test_summary_and_verdict():
    recs = [_rec("softmax_ts", s, 0.98, 0.1, 0.02, 0.7, 10) for s in range(2)]
    recs += [_rec("ensemble", s, 0.99, 0.05, 0.01, 0.9, 50) for s in range(2)]
    recs += [_rec("bam", 0, 0.978, 0.08, 0.01, 0.8, 20), _rec("bam", 1, 0.978, 0.06, 0.01, 0.8,
                                                             20)]
    recs += [_rec("gp_attention", s, 0.96, 0.05, 0.01, 0.8, 15) for s in range(2)]
    summ = summarize(recs)
    assert list(summ) == [m for m in METHODS if m in summ]
    assert summ["bam"]["nll"] == pytest.approx(0.07) and summ["bam"]["nll_sd"] > 0
    assert summ["bam"]["auroc_mi"] is None
    v = verdict(summ)
    assert v["bam"]["met"] and v["bam"]["cost_vs_ensemble"] == pytest.approx(0.4)
    assert not v["gp_attention"]["met"] and not v["gp_attention"]["accuracy_within_0.5"]
    v = verdict(summ, reference="ensemble")  # a stronger reference: nothing beats it here
    assert not v["bam"]["shift_nll"] and not v["bam"]["met"]
    assert verdict(summ, reference="laplace") == {}


@pytest.mark.slow
def test_quick_run_writes_every_output(tmp_path):
    out = tmp_path / "unc"
    main(["bench", "uncertainty", "--quick", "--out", str(out)])
    doc = json.loads((out / "results.json").read_text())
    assert doc["complete"] and {r["method"] for r in doc["records"]} == set(METHODS)
    assert set(doc["protocol"]["grid_search"]) == {"bam", "gp_attention"}
    for r in doc["records"]:
        assert 0 <= r["in_distribution"]["accuracy"] <= 1
        assert r["in_distribution"]["ece"] == pytest.approx(
            r["in_distribution"].get("ece_torchmetrics", r["in_distribution"]["ece"]),
            abs=1e-5)
        assert 0 <= r["unknown"]["auroc_entropy"] <= 1
    text = (out / "results.md").read_text()
    assert "softmax + TS" in text and "What chose what" in text
    for name in ("reliability.png", "shift.png", "roc.png", "coverage.png"):
        assert (out / name).stat().st_size > 10_000
    again = tmp_path / "again"  # the report rebuilt from the saved per-seed results
    report_from(out, again, notes="rebuilt")
    assert json.loads((again / "results.json").read_text())["summary"] == doc["summary"]
    assert (again / "results.md").read_text().endswith("rebuilt\n")
