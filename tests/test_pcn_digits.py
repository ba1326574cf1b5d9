"""The digits demonstration of the predictive-coding bridge (``bayesattn bench pcn``) on a tiny
configuration: the split, the files, and that inference on held-out digits beats chance by far."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bayesattn.cli import main
from bayesattn.experiments.pcn_digits import DigitsConfig, load_digits_split, run_pcn_digits

TINY = DigitsConfig(seeds=1, errors=("squared",), epochs=1, train_steps=5, test_steps=10,
                    temperatures=(1.0, math.inf))


def test_split_is_stratified_disjoint_and_scaled():
    s = load_digits_split(3)
    sizes = [s[k][0].shape[0] for k in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes[2] == 540
    for x, y in s.values():
        assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        share = np.bincount(y.numpy(), minlength=10) / y.shape[0]
        assert np.abs(share - 0.1).max() < 0.02  # each class ~10 % everywhere
    rows = {tuple(r) for r in s["test"][0].tolist()}
    assert not rows & {tuple(r) for r in s["val"][0].tolist()} - {tuple([0.0] * 64)}
    with pytest.raises(ValueError, match="test_size"):
        load_digits_split(0, test_size=1.0)


@pytest.mark.slow
def test_run_writes_files_and_infers_labels(tmp_path):
    res = run_pcn_digits(tmp_path, TINY, progress=False)
    for name in ("results.json", "results.md", "accuracy_vs_temperature.png",
                 "attention_maps.png"):
        assert (tmp_path / name).stat().st_size > 0
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["complete"] and payload["settings"]["temperatures"] == [1.0, "inf"]
    (rec,) = res["records"]
    assert rec["accuracy"] > 0.8  # chance is 0.1
    assert "AttentionPCN, squared errors" in (tmp_path / "results.md").read_text()


def test_cli_rejects_bad_counts(tmp_path, capsys):
    status = main(["bench", "pcn", "--seeds", "0", "--out", str(tmp_path / "x")])
    assert status == 2 and "--seeds" in capsys.readouterr().err
