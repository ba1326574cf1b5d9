"""Tests of ``bayesattn bench fewshot``: the references against libraries, the Intention layer
as ridge regression, the in-context Transformer's invariances, the digit episodes, and a quick
end-to-end run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor

from bayesattn.cli import main
from bayesattn.experiments import fewshot_digits as dg
from bayesattn.experiments import incontext as ic

D64 = torch.float64


def _prompt(d, n, q, seed, dtype=D64):
    fam = ic.family(f"linear{d}")
    gen = torch.Generator().manual_seed(seed)
    return ic.sample_prompts(fam, 3, n, q, gen, dtype=dtype)


@pytest.mark.parametrize("n", [2, 5, 13])  # fewer, equal and more examples than d = 5
def test_intention_layer_with_identity_projections_is_sklearn_ridge(n):
    xc, yc, xq, _ = _prompt(5, n, 4, seed=n)
    lam, sigma = 0.25, 0.5
    mean, var = ic.intention_predict(xc, yc, xq, ridge=lam, noise=sigma)
    for b in range(3):
        ref = Ridge(alpha=lam, fit_intercept=False, solver="svd").fit(xc[b].numpy(),
                                                                      yc[b].numpy())
        np.testing.assert_allclose(mean[b].numpy(), ref.predict(xq[b].numpy()), atol=1e-6,
                                   rtol=0)
        # predictive variance sigma^2 (1 + q^T (X^T X + lam I)^{-1} q), by a dense solve
        a = xc[b].numpy().T @ xc[b].numpy() + lam * np.eye(5)
        quad = np.einsum("qd,dq->q", xq[b].numpy(), np.linalg.solve(a, xq[b].numpy().T))
        np.testing.assert_allclose(var[b].numpy(), sigma**2 * (1 + quad), atol=1e-6, rtol=0)
    # the Cholesky reference of the benchmark agrees as well
    r_mean, r_var = ic.ridge_predict(xc, yc, xq, ridge=lam, noise=sigma)
    assert torch.allclose(r_mean, mean, atol=1e-9) and torch.allclose(r_var, var, atol=1e-9)


def test_bayes_predictive_interval_covers_90_percent_of_linear_tasks():
    # under the generating prior the posterior predictive is exact: coverage 0.9 in expectation
    fam = ic.family("linear5")
    gen = torch.Generator().manual_seed(7)
    xc, yc, xq, yq = ic.sample_prompts(fam, 2000, 6, 1, gen, dtype=D64)
    mean, var = ic.intention_predict(xc, yc, xq, ridge=fam.noise**2, noise=fam.noise)
    cov = ic.interval_coverage(mean, var, yq)
    se = math.sqrt(0.9 * 0.1 / 2000)
    assert abs(cov - 0.9) < 4 * se
    # and ridge at the true noise beats OLS and a mis-set ridge on the same tasks
    mse = float(((mean - yq) ** 2).mean())
    ols = float(((ic.ols_predict(xc, yc, xq) - yq) ** 2).mean())
    wrong, _ = ic.ridge_predict(xc, yc, xq, ridge=25.0, noise=fam.noise)
    assert mse < ols and mse < float(((wrong - yq) ** 2).mean())


def test_ols_is_minimum_norm_and_knn_matches_sklearn():
    xc, yc, xq, _ = _prompt(5, 3, 4, seed=1)
    got = ic.ols_predict(xc, yc, xq)
    for b in range(3):
        w = np.linalg.pinv(xc[b].numpy()) @ yc[b].numpy()
        np.testing.assert_allclose(got[b].numpy(), xq[b].numpy() @ w, atol=1e-9)
    xc, yc, xq, _ = _prompt(5, 9, 4, seed=2)
    got = ic.knn_predict(xc, yc, xq, k=3)
    for b in range(3):
        ref = KNeighborsRegressor(3).fit(xc[b].numpy(), yc[b].numpy()).predict(xq[b].numpy())
        np.testing.assert_allclose(got[b].numpy(), ref, atol=1e-12)
    assert torch.equal(ic.knn_predict(xc[:, :2], yc[:, :2], xq, k=5),
                       yc[:, :2].mean(-1, keepdim=True).expand(-1, 4))  # k capped at n


def test_task_families_have_the_stated_moments():
    gen = torch.Generator().manual_seed(3)
    fam = ic.family("linear10")
    _, y, _, _ = ic.sample_prompts(fam, 4000, 1, 1, gen, dtype=D64)
    # Var y = E|x|^2 Var w + sigma^2 = d + sigma^2; sd of the sample variance ~ sqrt(2/N) * var
    assert abs(float(y.var()) - 10.25) < 4 * 10.25 * math.sqrt(2 / 4000)
    x, y, _, _ = ic.sample_prompts(ic.family("sinusoid"), 500, 8, 1, gen)
    assert float(x.min()) >= -5 and float(x.max()) <= 5 and float(y.abs().max()) < 5.6
    with pytest.raises(ValueError, match="unknown task family"):
        ic.family("quadratic")



def test_sinusoid_bayes_prediction_matches_importance_sampling_and_beats_the_references():
    fam = ic.family("sinusoid")
    gen = torch.Generator().manual_seed(11)
    xc, yc, xq, yq = ic.sample_prompts(fam, 3, 3, 2, gen, dtype=D64)
    got = ic.sinusoid_bayes_prefixes(xc, yc, xq, noise=fam.noise)  # (3, 3, 2)
    assert got.shape == (3, 3, 2)
    # independent: self-normalised importance sampling from the prior, n = 1 and 2 points
    rng = np.random.default_rng(0)
    M = 400_000
    amp = rng.uniform(*ic.SINE_AMPLITUDE, M)
    phase = rng.uniform(*ic.SINE_PHASE, M)
    for b in range(3):
        x, y, q = xc[b, :, 0].numpy(), yc[b].numpy(), xq[b, :, 0].numpy()
        for n in (1, 2):
            resid = y[:n, None] - amp * np.sin(x[:n, None] + phase)
            logw = -0.5 * (resid**2).sum(0) / fam.noise**2
            w = np.exp(logw - logw.max())
            w /= w.sum()
            f = amp * np.sin(q[:, None] + phase)  # (Q, M)
            mean = f @ w
            se = np.sqrt(((f - mean[:, None]) ** 2 * w**2).sum(1))
            assert np.all(np.abs(got[n - 1, b].numpy() - mean) < 4 * se + 2e-3)
    # on many tasks its MSE is below every reference's and near sigma^2 with 20 points
    xc, yc, xq, yq = ic.sample_prompts(fam, 64, 20, 4, gen, dtype=D64)
    bayes = ((ic.sinusoid_bayes_prefixes(xc, yc, xq, noise=fam.noise) - yq) ** 2).mean((1, 2))
    gp = torch.stack([((ic.gp_attention_predict(xc[:, :n], yc[:, :n], xq, lengthscale=1.0,
                                                 ridge=0.01)[0] - yq) ** 2).mean()
                      for n in range(1, 21)])
    assert bool((bayes[1:] < gp[1:]).all()) and float(bayes[-1]) < 2 * fam.noise**2
    with pytest.raises(ValueError, match="d = 1|x_ctx"):
        ic.sinusoid_bayes_prefixes(xc.expand(-1, -1, 2), yc, xq, noise=0.1)

@pytest.mark.parametrize("kind", ["softmax", "least_squares", "gp", "softmax_least_squares"])
def test_in_context_transformer_is_permutation_invariant_and_queries_independent(kind):
    torch.manual_seed(0)
    model = ic.InContextTransformer(5, 2.0, attention=kind).double()
    xc, yc, xq, _ = _prompt(5, 7, 3, seed=4)
    with torch.no_grad():
        out = model(xc, yc, xq)
        perm = torch.randperm(7)
        assert torch.allclose(model(xc[:, perm], yc[:, perm], xq), out, atol=1e-10)
        # a query's prediction does not depend on the other queries
        assert torch.allclose(model(xc, yc, xq[:, :1]), out[:, :1], atol=1e-10)
        # but it does depend on the context values
        assert (model(xc, yc + 1.0, xq) - out).abs().max() > 1e-3
    with pytest.raises(ValueError, match="expected x_ctx"):
        model(xc[:, :0], yc[:, :0], xq)


def test_digit_episodes_keep_meta_train_and_meta_test_apart():
    split = dg.load_digit_split(seed=0)
    assert sorted(split["train"]) == [0, 1, 2, 3, 4] == sorted(split["val"])
    assert sorted(split["test"]) == [5, 6, 7, 8, 9]
    from sklearn.datasets import load_digits

    data = load_digits()
    for c in range(5):  # train and validation partition each meta-train class 80 / 20
        a, b = split["train"][c], split["val"][c]
        whole = np.sort(data.data[data.target == c] / 16.0, axis=0)
        both = np.sort(torch.cat([a, b]).numpy(), axis=0)
        np.testing.assert_allclose(both, whole, atol=1e-6)
        assert abs(b.shape[0] / (a.shape[0] + b.shape[0]) - 0.2) < 0.01
    gen = torch.Generator().manual_seed(0)
    s, sl, q, ql = dg.sample_episodes(split["test"], 4, 5, 5, 3, gen)
    assert s.shape == (4, 25, 64) and q.shape == (4, 15, 64)
    assert torch.equal(sl[0], torch.arange(5).repeat_interleave(5))
    for e in range(4):  # support and query images of an episode differ, classes match
        assert not (torch.cdist(s[e], q[e]) == 0).any()
        cs = torch.cdist(q[e], s[e]).argmin(-1)
        assert (sl[e][cs] == ql[e]).float().mean() > 0.6  # raw-pixel 1-NN is far above chance
    with pytest.raises(ValueError, match="ways=11"):
        dg.sample_episodes(split["test"], 1, 11, 1, 1, gen)


def test_least_squares_head_is_ridge_on_one_hot_labels_and_ci_is_normal():
    gen = torch.Generator().manual_seed(1)
    s, sl, q = torch.randn(2, 10, 6, generator=gen, dtype=D64), \
        torch.arange(5).repeat(2).expand(2, -1), torch.randn(2, 4, 6, generator=gen, dtype=D64)
    scores = dg.head_scores("least_squares", q, s, sl, 5, ridge=0.3)
    for e in range(2):
        y = np.eye(5)[sl[e].numpy()]
        ref = Ridge(alpha=0.3, fit_intercept=False).fit(s[e].numpy(), y).predict(q[e].numpy())
        np.testing.assert_allclose(scores[e].numpy(), ref, atol=1e-8)
    from scipy import stats

    acc = np.random.default_rng(0).uniform(size=50)
    mean, half = dg.mean_ci(acc)
    assert math.isclose(half, stats.norm.ppf(0.975) * stats.sem(acc), rel_tol=1e-9)
    with pytest.raises(ValueError, match="unknown head"):
        dg.head_scores("cosine", q, s, sl, 5)


@pytest.mark.slow
def test_bench_fewshot_quick_writes_tables_and_plots(tmp_path):
    out = tmp_path / "fs"
    assert main(["bench", "fewshot", "--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    lin = res["regression"]["linear5"]
    assert set(lin["transformers"]) == {"softmax", "linear", "least_squares",
                                        "softmax_least_squares", "kernel", "gp"}
    assert lin["references"]["intention_max_abs_diff_to_ridge"] < 1e-9
    bayes = np.asarray(lin["references"]["mse"]["ridge"])
    assert len(bayes) == 11 and (np.asarray(lin["references"]["mse"]["ols"]) >= bayes - 1e-3
                                 ).mean() > 0.5
    assert len(res["digits"]) == 1 and 0.2 < res["digits"][0]["pixels/softmax/5"]["accuracy"] <= 1
    md = (out / "results.md").read_text()
    assert "Intention layer, identity projections" in md and "5-shot" in md
    assert (out / "mse_vs_examples.png").stat().st_size > 0
    assert (out / "digits_accuracy.png").stat().st_size > 0
    assert main(["bench", "fewshot", "--quick", "--steps", "0", "--out",
                 str(tmp_path / "bad")]) != 0
