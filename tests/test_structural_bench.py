"""The structural-inference experiments (``bayesattn bench structural``): the task generators
against their definitions, the models against plain numpy, the cost formula by hand, the
quick CLI run and resuming."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bayesattn.cli import main
from bayesattn.experiments.structural import (
    ExpandingConfig,
    ExpandingTaskModel,
    MultihopConfig,
    MultihopTaskModel,
    expanding_batch,
    multihop_batch,
    relative_cost,
    run_structural_bench,
    train_expanding,
)


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def test_multihop_batch_follows_the_generator():
    g = torch.Generator().manual_seed(0)
    A, w = torch.rand(3, 3, generator=g), 1 + torch.randn(3, generator=g)
    x, y = multihop_batch(20_000, A, w, g)
    x64, A64, w64 = x.double().numpy(), A.double().numpy(), w.double().numpy()
    z, g0, g1, g2 = x64[:, :2], x64[:, 2], x64[:, 3], x64[:, 4]
    np.testing.assert_allclose(y.numpy(), (2 * g0 + g1 + g2) @ w64, rtol=1e-4, atol=1e-3)
    assert g0.min() >= 0 and g0.max() <= 10 and abs(g0.mean() - 5) < 4 * 10 / math.sqrt(12 * 6e4)
    for noise in (z.reshape(-1, 3), g1 - g0 @ A64, g2 - g1 @ A64):
        n = noise.size
        assert abs(noise.mean()) < 4 / math.sqrt(n)          # N(0, 1): mean 0 ...
        assert abs(noise.var() - 1) < 4 * math.sqrt(2 / n)   # ... variance 1


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_expanding_batch_places_g0_at_a_geometric_distance(p):
    g = torch.Generator().manual_seed(1)
    d, T, n = 4, 50, 20_000
    A, w = torch.rand(d, d, generator=g), 1 + torch.randn(d, generator=g)
    x, y, dist = expanding_batch(n, A, w, p, T, g)
    x64 = x.double().numpy()
    g0 = x64[np.arange(n), T - 1 - dist.numpy()]
    np.testing.assert_allclose(y.numpy(), g0 @ w.double().numpy(), rtol=1e-4, atol=1e-4)
    assert g0.min() >= 0 and g0.max() <= 2
    resid = x64[:, -1] - g0 @ A.double().numpy()
    assert abs(resid.std() - 0.1) < 0.005
    # distance = min(x + 1, T - 1) with x ~ Geometric(p) on {1, 2, ...}: exact pmf and mean
    k = np.arange(2, T)
    pmf = p * (1 - p) ** (k - 2)
    pmf[-1] = (1 - p) ** (T - 3)  # the tail mass is capped at T - 1
    mean, sd = (k * pmf).sum(), math.sqrt(((k - (k * pmf).sum()) ** 2 * pmf).sum())
    assert dist.min() >= 2 and dist.max() <= T - 1
    assert abs(dist.double().mean().item() - mean) < 4 * sd / math.sqrt(n)
    assert abs((dist == 2).double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    # the distractors (everything but g0 and the query): N(0, 0.1^2)
    mask = np.ones((n, T), bool)
    mask[np.arange(n), T - 1 - dist.numpy()] = False
    mask[:, -1] = False
    assert abs(x64[mask].std() - 0.1) < 0.002


def test_relative_cost_by_hand():
    # window 10 (counts as 28), 2 passes, d = 10, T = 50: 28 * 12 / 500
    assert relative_cost([10], [2], 50, 10) == pytest.approx(28 * 12 / 500)
    # window 60 is cut to T: 50 * (10 + 3) / 500, averaged with the first
    assert relative_cost([10, 60], [2, 3], 50, 10) == pytest.approx((336 + 650) / 2 / 500)
    with pytest.raises(ValueError, match="same length"):
        relative_cost([1, 2], [1], 50, 10)


def test_task_models_match_plain_numpy():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64)  # 2 stacked runs, 4 sequences each
    for kind in ("multihop", "softmax1", "softmax2"):
        model = MultihopTaskModel(kind, seeds=[3, 4]).double()
        pred, rows = model(x).detach().numpy(), model.last_row(x).numpy()
        for r in range(2):
            xn = x[r].numpy()
            if kind == "softmax2":
                W1q, W1k, W1v = np.split(model.first[r].detach().numpy(), 3)
                A1 = _softmax((xn @ W1q.T) @ (xn @ W1k.T).transpose(0, 2, 1) / math.sqrt(3))
                xn = xn + A1 @ (xn @ W1v.T)
            Wq, Wk, Wv = np.split(model.proj[r].detach().numpy(), [3, 6])
            A = _softmax((xn @ Wq.T) @ (xn @ Wk.T).transpose(0, 2, 1) / math.sqrt(3))
            M = (np.eye(5) + A + A @ A) / 3 if kind == "multihop" else A
            np.testing.assert_allclose(pred[r], (M @ (xn @ Wv.T))[:, -1, 0], rtol=1e-10)
            np.testing.assert_allclose(rows[r], M[:, -1], rtol=1e-10)
    # each stacked run is initialised from its own seed alone
    alone = MultihopTaskModel("multihop", seeds=[4])
    assert torch.equal(alone.proj[0], MultihopTaskModel("multihop", seeds=[3, 4]).proj[1])
    # the expanding task's softmax baseline: the last token over the 49 earlier ones only
    xe = torch.randn(1, 1, 50, 6, dtype=torch.float64)
    model = ExpandingTaskModel("softmax", 6).double()
    Wq, Wk, Wv = np.split(model.proj[0].detach().numpy(), [6, 12])
    xn = xe.numpy()[0, 0]
    a = _softmax((xn[:-1] @ Wk.T) @ (Wq @ xn[-1]) / math.sqrt(6))
    assert model(xe).item() == pytest.approx(float(a @ (xn[:-1] @ Wv.T)[:, 0]), rel=1e-10)


@pytest.mark.slow
def test_stacked_expanding_runs_train_as_alone():
    """Two runs stacked in one batch (own data, own prior) end where each ends alone."""
    cfg = ExpandingConfig(dims=(4,), steps=6, tail=3, block=3)
    both = train_expanding("expanding", 4, [(0, 0.5), (1, 0.2)], cfg)
    for rec in both:
        (alone,) = train_expanding("expanding", 4, [(rec["seed"], rec["p"])], cfg)
        for key in ("tail_mse", "window", "passes", "cost", "alpha", "beta"):
            assert alone[key] == pytest.approx(rec[key], rel=1e-4), key
        np.testing.assert_allclose(alone["curve"], rec["curve"], rtol=1e-4)


@pytest.mark.slow
def test_quick_bench_writes_every_output(tmp_path):
    status = main(["bench", "structural", "--quick", "--out", str(tmp_path)])
    assert status == 0
    state = json.loads((tmp_path / "results.json").read_text())
    assert sorted((r["kind"], r["seed"]) for r in state["multihop"]) == [
        (k, s) for k in ("multihop", "softmax1", "softmax2") for s in (0, 1)]
    assert len(state["expanding"]) == 4
    for r in state["expanding"]:
        assert r["cost"] == 1.0 if r["kind"] == "softmax" else r["passes"] >= 1
        assert np.isfinite(r["tail_mse"]) and 2 <= r["window"]
    for r in state["multihop"]:
        att = r["attention"]
        assert sum(att.values()) == pytest.approx(1.0, abs=1e-5)
    md = (tmp_path / "results.md").read_text()
    assert "| softmax, 2 layers | 2 |" in md and "| 10 | 1/2 | expanding | 1 |" in md
    for name in ("multihop.png", "expanding.png"):
        assert (tmp_path / name).stat().st_size > 10_000


@pytest.mark.slow
def test_bench_resumes_from_its_results(tmp_path):
    mh = MultihopConfig(steps=10, batch_size=8, test_size=50, block=5)
    ex = ExpandingConfig(dims=(4,), ps=(0.5,), steps=10, tail=5, block=5)
    kw = {"multihop": mh, "expanding": ex, "progress": False, "plots": False}
    first = run_structural_bench(tmp_path, seeds=1, expanding_seeds=1, **kw)
    again = run_structural_bench(tmp_path, seeds=1, expanding_seeds=1, **kw)
    assert again == first  # read back, not retrained (the timings are the same)
    more = run_structural_bench(tmp_path, seeds=2, expanding_seeds=1, **kw)
    assert more["expanding"] == first["expanding"]
    # the multihop groups are retrained with both seeds; seed 0 ends as it did alone
    assert sorted(r["seed"] for r in more["multihop"]) == [0, 0, 0, 1, 1, 1]
    for r in first["multihop"]:
        (m,) = [x for x in more["multihop"] if (x["kind"], x["seed"]) == (r["kind"], 0)]
        assert m["test_mse"] == pytest.approx(r["test_mse"], rel=1e-5)
