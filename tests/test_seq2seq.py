"""Encoder-decoder bench: the date data, the three model families, the metrics and the CLI."""

from __future__ import annotations

import datetime
import json

import pytest
import torch

from bayesattn.cli import main
from bayesattn.experiments.dates import (
    FORMATS,
    decode_source,
    decode_target,
    make_dates,
    write_date,
)
from bayesattn.experiments.seq2seq import Seq2SeqConfig, build_model, evaluate, summarize

TINY = Seq2SeqConfig(embed_dim=8, hidden=12, d_model=8, nhead=2, num_layers=1,
                     dim_feedforward=12, dropout=0.0)


def test_written_dates():
    d = datetime.date(2011, 3, 3)  # a Thursday
    assert write_date(d, 0) == "thursday, 3 march 2011"
    assert write_date(d, 4) == "the 3rd of march 2011"
    assert write_date(d, 6) == "03.03.2011"
    ordinals = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 13: "13th",
                21: "21st", 22: "22nd", 23: "23rd", 31: "31st"}
    for day, text in ordinals.items():
        assert write_date(datetime.date(2000, 1, day), 4) == f"the {text} of january 2000"
    with pytest.raises(IndexError):
        write_date(d, len(FORMATS))


def test_splits_are_disjoint_decodable_and_seeded():
    train, val, test = make_dates((300, 50, 60), seed=4)
    assert (len(train), len(val), len(test)) == (300, 50, 60)
    isos = [set(s.iso) for s in (train, val, test)]
    assert sum(map(len, isos)) == len(set.union(*isos)) == 410  # distinct dates
    for split in (train, val, test):
        assert decode_source(split.source) == split.written
        assert decode_target(split.target) == split.iso
        assert torch.equal(split.source_padding_mask, split.source == 0)
        for w, iso in zip(split.written, split.iso, strict=True):
            day = datetime.date.fromisoformat(iso)
            assert str(day.year) in w and datetime.date(1900, 1, 1) <= day
    again = make_dates((300, 50, 60), seed=4)[0]
    assert again.written == train.written
    with pytest.raises(ValueError, match="sizes"):
        make_dates((0, 5, 5))


@pytest.mark.parametrize("name", ["gru", "bahdanau", "bahdanau-bam", "transformer-softmax",
                                  "transformer-least_squares", "transformer-gp"])
def test_models_are_causal_and_ignore_padding(name):
    torch.manual_seed(0)
    (split,) = make_dates((6,), seed=1)
    model = build_model(name, TINY).eval()
    if name == "bahdanau-bam":
        model.sample = False  # the mean alignment (the draws: tests/test_seq2seq_bayes.py)
    src, pm = split.source, split.source_padding_mask
    tokens, w = model.greedy(src, pm, 10)
    # teacher forcing on the model's own greedy output reproduces it (causal decoder)
    with torch.no_grad():
        assert torch.equal(model(src, pm, tokens).argmax(-1), tokens)
    # extra padding changes nothing
    src2 = torch.cat([src, torch.zeros(6, 3, dtype=torch.int64)], 1)
    tokens2, w2 = model.greedy(src2, src2 == 0, 10)
    assert torch.equal(tokens, tokens2)
    if name == "gru":
        assert w is None
        return
    assert w.shape == (6, 10, src.shape[1])
    assert torch.all(w2[..., src.shape[1]:] == 0)  # no weight on padding
    assert torch.all(w.masked_select(pm[:, None, :].expand_as(w)) == 0)
    if name not in ("transformer-least_squares", "transformer-gp"):  # a distribution
        assert torch.allclose(w.sum(-1), torch.ones(6, 10), atol=1e-6) and (w >= 0).all()


class _Oracle(torch.nn.Module):
    """Predicts the truth, with the day's last digit wrong on the first ``wrong`` rows."""

    def __init__(self, split, wrong):
        super().__init__()
        self.split, self.wrong = split, wrong

    def greedy(self, src, pm, steps):
        rows = [i for i, s in enumerate(self.split.source) if any(
            torch.equal(s[: src.shape[1]], r) and not s[src.shape[1]:].any() for r in src)]
        out = self.split.target[rows].clone()
        for i, row in enumerate(rows):
            if row < self.wrong:
                out[i, -1] = 2 + (out[i, -1] - 2 + 1) % 10
        return out, None


def test_metrics_count_exact_and_character_errors():
    (split,) = make_dates((40,), seed=2)
    perfect = evaluate(_Oracle(split, 0), split)
    assert perfect == {"exact_match": 1.0, "char_accuracy": 1.0, "bleu": pytest.approx(100.0)}
    half = evaluate(_Oracle(split, 20), split)
    assert half["exact_match"] == 0.5
    assert half["char_accuracy"] == pytest.approx(1 - 20 / 400)
    assert 50.0 < half["bleu"] < 100.0  # partial credit for 9 of 10 characters


def test_summary_and_bad_model_names(tmp_path):
    recs = [{"model": "gru", "seed": s, "exact_match": e, "char_accuracy": 0.9, "bleu": 80.0,
             "train_seconds": 1.0, "best_epoch": 2, "parameters": 10}
            for s, e in enumerate([0.2, 0.4])]
    (row,) = summarize(recs)
    assert row["exact_match"] == pytest.approx(0.3) and row["bleu_sd"] == 0.0
    status = main(["bench", "seq2seq", "--models", "lstm", "--out", str(tmp_path / "x")])
    assert status == 2
    for bad in ("a,0.1", "-1", ","):
        assert main(["bench", "seq2seq", "--kl-weights", bad, "--out",
                     str(tmp_path / "y")]) == 2


@pytest.mark.slow
def test_quick_bench_writes_its_outputs(tmp_path):
    assert main(["bench", "seq2seq", "--quick", "--out", str(tmp_path / "s")]) == 0
    res = json.loads((tmp_path / "s" / "results.json").read_text())
    assert [r["model"] for r in res["records"]] == [
        "gru", "bahdanau", "bahdanau-bam", "transformer-softmax", "transformer-least_squares",
        "transformer-gp"]
    assert 0 <= res["records"][2]["alignment"]["mean_sd_all"] < 1
    for r in res["records"]:
        assert 0 <= r["exact_match"] <= r["char_accuracy"] <= 1 and 0 <= r["bleu"] <= 100
    assert "| GRU + Bahdanau (additive) |" in (tmp_path / "s" / "results.md").read_text()
    for name in ("results.png", "attention.png", "alignment_sd.png"):
        assert (tmp_path / "s" / name).stat().st_size > 10_000
