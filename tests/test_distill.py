"""Policy distillation bench: the LQR expert, the rollouts, the attention heads and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gym = pytest.importorskip("gymnasium")

from bayesattn.cli import main  # noqa: E402
from bayesattn.experiments.cartpole import (  # noqa: E402
    OBSERVATIONS,
    LQRExpert,
    _linear_model,
    lqr_gain,
    rollout,
)
from bayesattn.experiments.distill import (  # noqa: E402
    DistillConfig,
    HistoryPolicy,
    summarize,
    train_policy,
)
from bayesattn.experiments.heads import HeadAttention  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = gym.make("CartPole-v1")
    yield e
    e.close()


def test_lqr_gain_solves_the_riccati_equation(env):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    A, B = _linear_model(env)
    Q, r = np.diag([1.0, 1.0, 10.0, 1.0]), 0.1
    P = scipy_linalg.solve_discrete_are(A, B, Q, np.array([[r]]))
    K_ref = np.linalg.solve(r + B.T @ P @ B, B.T @ P @ A).ravel()
    K = lqr_gain(env, Q=np.diag(Q), r=r)
    assert np.allclose(K, K_ref, rtol=1e-6)
    # the linear closed loop is stable
    assert np.abs(np.linalg.eigvals(A - B @ K[None])).max() < 1


def test_linear_model_matches_the_environment_near_upright(env):
    A, B = _linear_model(env)
    u = env.unwrapped
    s = np.array([0.01, -0.02, 0.003, 0.01])
    for action in (0, 1):
        u.state = s.copy()
        nxt = np.asarray(u.step(action)[0], float)
        force = u.force_mag if action == 1 else -u.force_mag
        pred = A @ s + B[:, 0] * force
        assert np.allclose(nxt, pred, atol=2e-4)


def test_expert_balances_and_rollout_histories_are_consistent(env):
    expert = LQRExpert(lqr_gain(env))
    r = rollout(lambda h, s: expert(s), [3], history=4, observe="positions", max_steps=200)
    assert r.returns.tolist() == [200.0]  # never falls: the truncation length
    cols = list(OBSERVATIONS["positions"])
    h, s, a = r.histories, r.states, r.actions
    assert h.shape == (200, 4, 3) and s.shape == (200, 4)
    assert np.allclose(h[:, -1, :-1], s[:, cols], atol=1e-6)  # newest row = current state
    assert np.all(h[1:, -1, -1] == 2.0 * a[:-1] - 1.0)  # then the action that led there
    assert np.all(h[0] == h[0, :1]) and np.all(h[0, :, -1] == 0)  # padded start
    assert np.allclose(h[1:, :-1], h[:-1, 1:])  # a sliding window
    assert np.array_equal(a, expert(s))
    many = rollout(lambda h, s: expert(s), list(range(5)), record=False)
    assert np.all(many.returns == 500.0)


def test_rollout_rejects_bad_arguments():
    with pytest.raises(ValueError, match="observe"):
        rollout(lambda h, s: np.zeros(len(s), int), [0], observe="velocities")
    with pytest.raises(ValueError, match="history"):
        rollout(lambda h, s: np.zeros(len(s), int), [0], history=0)


def _heads(x, H):
    N, T, E = x.shape
    return x.view(N, T, H, E // H).transpose(1, 2)


def _rbf(a, b, lengthscale):
    return torch.exp(-0.5 * torch.cdist(a, b) ** 2 / lengthscale**2)


def _softmax_similarity(a, b, scale):  # scale 1 / sqrt(head dim 4)
    return torch.softmax(scale * a @ b.T, -1)


@pytest.mark.parametrize("kind", ["gp", "softmax_least_squares"])
def test_head_attention_matches_a_slow_reference(kind):
    torch.manual_seed(0)
    layer = HeadAttention(8, 2, kind).double()
    q_in, mem = torch.randn(3, 2, 8, dtype=torch.float64), torch.randn(3, 5, 8,
                                                                        dtype=torch.float64)
    out, w = layer(q_in, mem)
    assert w is None
    q, k, v = (_heads(p(x), 2) for p, x in ((layer.q_proj, q_in), (layer.k_proj, mem),
                                               (layer.v_proj, mem)))
    ridge = float(layer.log_ridge.detach().exp())
    heads = torch.empty_like(q)
    for n in range(3):
        for h in range(2):
            qq, kk, vv = q[n, h], k[n, h], v[n, h]
            sim = _rbf if kind == "gp" else _softmax_similarity
            scale = float(layer.log_lengthscale.detach().exp()) if kind == "gp" else 0.5
            heads[n, h] = sim(qq, kk, scale) @ torch.linalg.solve(
                sim(kk, kk, scale) + ridge * torch.eye(5, dtype=torch.float64), vv)
    ref = layer.out_proj(heads.transpose(1, 2).reshape(3, 2, 8))
    assert torch.allclose(out, ref, atol=1e-10)
    with pytest.raises(ValueError, match="no masks"):
        layer(q_in, mem, key_padding_mask=torch.zeros(3, 5, dtype=torch.bool))


def test_history_policy_checks_shapes():
    with pytest.raises(ValueError, match="attention"):
        HistoryPolicy(3, 8, "cosine")
    policy = HistoryPolicy(3, 8, "softmax")
    with pytest.raises(ValueError, match="histories"):
        policy(torch.zeros(2, 7, 3))


@pytest.mark.slow
def test_train_policy_learns_a_rule_that_needs_the_history():
    # the label is the sign of the change between the two newest steps: the newest step
    # alone carries no information about it
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 4, 1, generator=gen)
    y = (x[:, -1, 0] > x[:, -2, 0]).long()
    torch.manual_seed(0)
    policy = HistoryPolicy(1, 4, "softmax", d_model=16)
    train_policy(policy, x[:500], y[:500], steps=150,
                 config=DistillConfig(batch_size=64, lr=1e-2), generator=gen)
    with torch.no_grad():
        acc = (policy(x[500:]).argmax(-1) == y[500:]).float().mean()
    assert acc > 0.85  # chance is 0.5


def test_summary_mean_and_sd():
    recs = [{"attention": "gp", "method": "bc", "trajectories": 2, "seed": s,
             "return_ratio": v, "us_per_step": 10.0, "train_seconds": 1.0}
            for s, v in enumerate([0.5, 0.7])]
    (row,) = summarize(recs)
    assert row["return_ratio"] == pytest.approx(0.6)
    assert row["return_ratio_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


@pytest.mark.slow
def test_quick_bench_writes_its_outputs(tmp_path):
    status = main(["bench", "distill", "--quick", "--out", str(tmp_path / "d")])
    assert status == 0
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    assert res["expert"]["mean_return"] == 500.0
    runs = {(r["attention"], r["method"], r["trajectories"]) for r in res["records"]}
    assert ("gp", "dagger", 2) in runs and ("softmax", "bc", 1) in runs
    for r in res["records"]:
        assert 0 < r["return_ratio"] <= 1 and r["us_per_step"] > 0
    table = (tmp_path / "d" / "results.md").read_text()
    assert "| GP (RBF) |" in table and "DAgger" in table
    assert (tmp_path / "d" / "results.png").stat().st_size > 10_000
