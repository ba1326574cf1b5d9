"""Attention as structural inference (Singh & Buckley 2023): multihop and expanding attention.

* Multihop: the fast path (SDPA per hop) against matrix powers written here, Pyro's exact
  enumeration of the hop count and path against the fast path (1e-6, float64), recovery of the
  hop weights under a Dirichlet prior.
* Expanding: the vectorised loop against a per-query plain-Python loop, the Pyro model's
  enumerated posterior against brute-force sums / integrals, and the loop's relation to the
  model (each pass is the model's exact conditional posterior at the tempered rate, in the
  window).
* Layers: shapes, gradcheck, equality with the functional path.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from bayesattn import functional as Fn
from bayesattn.models import MultihopAttentionModel

DT = torch.float64


def gen_(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, scale: float = 1.0):
    return torch.randn(*shape, generator=g, dtype=DT) * scale


def empty_guide(*args, **kwargs):
    """The guide of ``compute_marginals`` when every latent is enumerated."""


def matrix_power_reference(q, k, v, c, scale, mask=None):
    """``sum_h c_h A^h V`` with ``A`` a plain softmax, for 2-D inputs (numpy)."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    logits = scale * q @ k.T
    if mask is not None:
        logits = np.where(np.asarray(mask), logits, -np.inf)
    logits = logits - logits.max(-1, keepdims=True)
    A = np.exp(logits)
    A = A / A.sum(-1, keepdims=True)
    M = sum(ch * np.linalg.matrix_power(A, h) for h, ch in enumerate(c))
    return M @ v, M


# ----------------------------------------------------------------------------- multihop fast path
@pytest.mark.parametrize("c", [(1 / 3, 1 / 3, 1 / 3), (0.1, 0.2, 0.3, 0.4), (1.0,), (0.0, 1.0)])
def test_multihop_matches_matrix_powers(c):
    g = gen_(1)
    T, E, Ev = 6, 4, 3
    q, k, v = randn(g, T, E), randn(g, T, E), randn(g, T, Ev)
    ref_out, ref_M = matrix_power_reference(q, k, v, c, 0.7)
    out = Fn.multihop_attention(q, k, v, hop_weights=c, scale=0.7)
    out_w, M = Fn.multihop_attention(q, k, v, hop_weights=c, scale=0.7, need_weights=True)
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-12)
    np.testing.assert_allclose(out_w.numpy(), ref_out, atol=1e-12)
    np.testing.assert_allclose(M.numpy(), ref_M, atol=1e-12)


def test_multihop_default_is_authors_layer_and_batches():
    """Default ``c`` is ``(I + A + A^2) / 3``; batch dims broadcast; masks apply every hop."""
    g = gen_(2)
    B, H, T, E = 2, 3, 5, 4
    q, k, v = randn(g, B, H, T, E), randn(g, B, 1, T, E), randn(g, 1, H, T, 2)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    out, M = Fn.multihop_attention(q, k, v, attn_mask=mask, need_weights=True)
    assert out.shape == (B, H, T, 2) and M.shape == (B, H, T, T)
    for b in range(B):
        for h in range(H):
            ref_out, ref_M = matrix_power_reference(q[b, h], k[b, 0], v[0, h], (1 / 3,) * 3,
                                                    1 / math.sqrt(E), mask)
            np.testing.assert_allclose(out[b, h].numpy(), ref_out, atol=1e-12)
            np.testing.assert_allclose(M[b, h].numpy(), ref_M, atol=1e-12)
    fast = Fn.multihop_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(fast, out, atol=1e-12, rtol=0)
    assert torch.equal(M.triu(1), torch.zeros_like(M))  # a causal walk stays causal


def test_multihop_float_mask_is_a_log_prior():
    g = gen_(3)
    T = 4
    q, k, v = randn(g, T, 3), randn(g, T, 3), randn(g, T, 2)
    bias = randn(g, T, T)
    out = Fn.multihop_attention(q, k, v, attn_mask=bias, scale=1.0)
    ref, _ = matrix_power_reference(q, k + 0, v, (1 / 3,) * 3, 1.0)
    # reference with the bias folded into the logits by hand
    logits = (q @ k.T + bias).numpy()
    A = np.exp(logits - logits.max(-1, keepdims=True))
    A /= A.sum(-1, keepdims=True)
    M = (np.eye(T) + A + A @ A) / 3
    np.testing.assert_allclose(out.numpy(), M @ v.numpy(), atol=1e-12)


def test_multihop_errors():
    g = gen_(4)
    q, k, v = randn(g, 4, 3), randn(g, 4, 3), randn(g, 4, 2)
    with pytest.raises(ValueError, match="self-attention"):
        Fn.multihop_attention(q, randn(g, 5, 3), randn(g, 5, 2))
    with pytest.raises(ValueError, match="hop_weights"):
        Fn.multihop_attention(q, k, v, hop_weights=(0.5, -0.1))
    with pytest.raises(ValueError, match="hop_weights"):
        Fn.multihop_attention(q, k, v, hop_weights=())
    with pytest.raises(TypeError, match="hop_weights"):
        Fn.multihop_attention(q, k, v, hop_weights="abc")
    with pytest.raises(ValueError, match="scale"):
        Fn.multihop_attention(q, k, v, scale=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        Fn.multihop_attention(q, k, v, hop_weights=torch.tensor([0.5, float("nan")], dtype=DT))


def test_multihop_gradcheck():
    g = gen_(5)
    q, k, v = (randn(g, 4, 3).requires_grad_() for _ in range(2)), None, None
    q, k = q
    v = randn(g, 4, 2).requires_grad_()
    c = torch.tensor([0.2, 0.5, 0.3], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v, c: Fn.multihop_attention(q, k, v, hop_weights=c), (q, k, v, c))
    assert torch.autograd.gradcheck(
        lambda q, k, v, c: Fn.multihop_attention(q, k, v, hop_weights=c, need_weights=True)[1],
        (q, k, v, c))


# ----------------------------------------------------------------------------- multihop model
def _marginals(model, *args):
    return TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(model, empty_guide, *args)


@pytest.mark.parametrize("c", [(1 / 3, 1 / 3, 1 / 3), (0.1, 0.2, 0.3, 0.4)])
def test_multihop_enumeration_equals_fast_path(c):
    """Pyro's exact marginal of the token read, ``sum_j p(read = j) v_j``, is the fast path."""
    pyro.clear_param_store()
    g = gen_(6)
    T, E, Ev = 5, 3, 2
    q, k, v = randn(g, T, E), randn(g, T, E), randn(g, T, Ev)
    model = MultihopAttentionModel(k, v, hop_weights=c, scale=0.8)
    marg = _marginals(model.path_model, q)
    read = marg["read"].probs  # (T, T)
    fast = Fn.multihop_attention(q, k, v, hop_weights=c, scale=0.8)
    err = (read @ v - fast).abs().max().item()
    assert err < 1e-6, err
    hops = marg["hops"].probs  # prior over hop counts, untouched without a target
    torch.testing.assert_close(hops, torch.tensor(c, dtype=DT).expand(T, -1), atol=1e-9,
                               rtol=0)


def test_multihop_enumeration_with_target_equals_closed_posterior():
    """Given targets, Pyro's posterior of the hop count and the read equals the closed form
    ``p(h, read = j | y_i) ~ c_h (A^h)_ij N(y_i; v_j)``, written here with matrix powers."""
    pyro.clear_param_store()
    g = gen_(7)
    T, E, Ev = 4, 3, 2
    q, k, v = randn(g, T, E), randn(g, T, E), randn(g, T, Ev)
    y = randn(g, T, Ev)
    c = (0.5, 0.3, 0.2)
    model = MultihopAttentionModel(k, v, hop_weights=c, scale=1.1, noise=0.7)
    marg = _marginals(model.path_model, q, y)
    A = torch.softmax(1.1 * q @ k.T, -1).numpy()
    lik = np.exp(-((y.numpy()[:, None, :] - v.numpy()[None]) ** 2).sum(-1) / (2 * 0.49))
    joint = np.stack([ch * np.linalg.matrix_power(A, h) * lik for h, ch in enumerate(c)])
    joint /= joint.sum((0, 2), keepdims=True)
    err_read = np.abs(marg["read"].probs.numpy() - joint.sum(0)).max()
    err_hops = np.abs(marg["hops"].probs.numpy() - joint.sum(-1).T).max()
    assert err_read < 1e-6 and err_hops < 1e-6, (err_read, err_hops)
    post = model.posterior(q, y)
    np.testing.assert_allclose(post["read"].numpy(), joint.sum(0), atol=1e-12)
    np.testing.assert_allclose(post["hops"].numpy(), joint.sum(-1).T, atol=1e-12)


def test_multihop_log_likelihood_matches_model_density():
    g = gen_(8)
    T = 5
    q, k, v = randn(g, T, 3), randn(g, T, 3), randn(g, T, 2)
    y = randn(g, T, 2)
    model = MultihopAttentionModel(k, v, hop_weights=dist.Dirichlet(torch.ones(3, dtype=DT)),
                                   noise=0.5)
    c = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]], dtype=DT)
    ll = model.log_likelihood({"hop_weights": c}, {"query": q, "target": y})
    for d in range(2):
        tr = pyro.poutine.trace(pyro.poutine.condition(model.model, {"hop_weights": c[d]}))
        site = tr.get_trace(q, y).nodes["target"]
        np.testing.assert_allclose(ll[d].numpy(), site["fn"].log_prob(y).numpy(), atol=1e-12)
    # independent: the path model's evidence by enumeration of hops and path
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.loss(pyro.poutine.condition(model.path_model, {"hop_weights": c[0]}),
                     empty_guide, q, y)
    log_prior = dist.Dirichlet(torch.ones(3, dtype=DT)).log_prob(c[0]).item()  # conditioned site
    np.testing.assert_allclose(-loss, ll[0].sum().item() + log_prior, atol=1e-8)


def _simulate_multihop(seed, T, c, noise):
    g = gen_(seed)
    E = 4
    q, k = randn(g, T, E, scale=3.0), randn(g, T, E, scale=3.0)
    v = randn(g, T, 1, scale=3.0)
    model = MultihopAttentionModel(k, v, hop_weights=c, scale=1.0, noise=noise)
    M = model.read_weights(q)
    read = torch.multinomial(M, 1, generator=g).squeeze(-1)
    y = v[read] + noise * randn(g, T, 1)
    return q, k, v, y


# tiny tensors: on a busy 2-core machine torch's 2 threads made the SVI steps 5-15x slower
@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_multihop_learns_hop_weights_under_dirichlet_prior():
    """Simulated data with known ``c``: the exact posterior of ``c`` (a grid on the simplex)
    covers the truth, and Pyro's MAP (AutoDelta, TraceEnum-free closed-form mixture) lands
    inside one posterior sd of the exact posterior mean."""
    true_c = (0.2, 0.5, 0.3)
    q, k, v, y = _simulate_multihop(9, 120, true_c, 0.1)
    prior = dist.Dirichlet(torch.full((3,), 2.0, dtype=DT))
    model = MultihopAttentionModel(k, v, hop_weights=prior, scale=1.0, noise=0.1)
    # exact posterior on a grid of the 2-simplex (log-likelihood linear in c inside the log)
    n = 120
    a, b = np.meshgrid(np.arange(1, n) / n, np.arange(1, n) / n, indexing="ij")
    keep = a + b < 1
    grid = torch.tensor(np.stack([a[keep], b[keep], 1 - a[keep] - b[keep]], -1), dtype=DT)
    per_hop = model.log_likelihood({"hop_weights": torch.eye(3, dtype=DT)},
                                   {"query": q, "target": y})  # (3, T): log p(y_i | h)
    ll = torch.logsumexp(grid.log()[:, :, None] + per_hop[None], dim=1).sum(-1)
    logp = ll + prior.log_prob(grid)
    w = torch.softmax(logp, 0)
    mean = (w[:, None] * grid).sum(0)
    sd = ((w[:, None] * (grid - mean) ** 2).sum(0)).sqrt()
    assert bool(((mean - torch.tensor(true_c, dtype=DT)).abs() < 3 * sd).all()), (mean, sd)
    # MAP by Pyro's SVI on the model's own program
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pyro.infer.autoguide.AutoDelta(model.model)
    svi = pyro.infer.SVI(model.model, guide, pyro.optim.Adam({"lr": 0.05}),
                         pyro.infer.Trace_ELBO())
    for _ in range(150):  # converged: 300 steps give the same MAP to 4 decimals (measured)
        svi.step(q, y)
    c_map = guide.median()["hop_weights"].detach()
    mode = grid[logp.argmax()]
    print("posterior mean", mean.numpy(), "sd", sd.numpy(), "MAP", c_map.numpy())
    assert bool(((c_map - mode).abs() < 1.5 / n + 0.02).all()), (c_map, mode)
    assert bool(((c_map - mean).abs() < sd).all()), (c_map, mean, sd)


# ----------------------------------------------------------------------------- expanding
from bayesattn.models import ExpandingAttentionModel  # noqa: E402


def expanding_reference(s, v, alpha, beta, coverage=0.95, max_iter=100, tol=0.01):
    """The authors' loop, one query at a time, in plain Python (delta = 1..ceil(m))."""
    T = len(s)
    out, windows = [[0.0] * len(v[0])], [0.0]
    for i in range(1, T):
        a, b, m_old = alpha, beta, 0.0
        for _ in range(max_iter):
            m = math.log(1 - coverage) / math.log(1 - a / (a + b))
            ds = range(1, min(math.ceil(m), i) + 1)
            logits = [s[i][i - d] - d / m for d in ds]
            top = max(logits)
            e = [math.exp(x - top) for x in logits]
            w = [x / sum(e) for x in e]
            a, b = a + 1, b + sum(wd * d for wd, d in zip(w, ds, strict=True))
            if m > i + 1 or m - m_old < tol:
                break
            m_old = m
        out.append([sum(wd * v[i - d][c] for wd, d in zip(w, ds, strict=True))
                    for c in range(len(v[0]))])
        windows.append(m)
    return np.array(out), np.array(windows)


def _expanding_inputs(seed, T, E=3, far=True):
    g = gen_(seed)
    q, k, v = randn(g, T, E), randn(g, T, E), randn(g, T, 2)
    if far:  # make a distant key match each late query strongly, so windows expand
        k[: T // 3] = 4 * q[-T // 3:].mean(0)
    return q, k, v


@pytest.mark.parametrize("alpha,beta", [(0.1, 0.9), (1.0, 3.0)])
def test_expanding_loop_matches_per_query_reference(alpha, beta):
    T = 70
    q, k, v = _expanding_inputs(10, T)
    scale = 0.6
    out, (m, passes) = Fn.expanding_attention(q, k, v, alpha=alpha, beta=beta, scale=scale,
                                              need_window=True)
    s = (scale * q @ k.T).tolist()
    ref, windows = expanding_reference(s, v.tolist(), alpha, beta)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(m.numpy(), windows, atol=1e-9)
    assert int(passes.max()) > 1  # some queries really iterate
    # batch dims: each batch element is its own sequence
    qb = torch.stack([q, q.flip(0)])
    outb = Fn.expanding_attention(qb, k, v, alpha=torch.tensor(alpha, dtype=DT),
                                  beta=beta, scale=scale)
    torch.testing.assert_close(outb[0], out, atol=1e-12, rtol=0)
    s2 = (scale * q.flip(0) @ k.T).tolist()
    np.testing.assert_allclose(outb[1].numpy(), expanding_reference(s2, v.tolist(), alpha,
                                                                    beta)[0], atol=1e-12)


def test_expanding_weights_are_causal_and_exclude_self():
    q, k, v = _expanding_inputs(11, 40)
    out, w = Fn.expanding_attention(q, k, v, need_weights=True)
    assert torch.equal(w.triu(0), torch.zeros_like(w))
    np.testing.assert_allclose(w.sum(-1)[1:].numpy(), 1.0, atol=1e-12)
    assert torch.equal(out[0], torch.zeros(2, dtype=DT))
    torch.testing.assert_close(out, w @ v, atol=1e-12, rtol=0)


def test_expanding_errors():
    q, k, v = _expanding_inputs(12, 6)
    with pytest.raises(ValueError, match="self-attention"):
        Fn.expanding_attention(q, k[:5], v[:5])
    with pytest.raises(ValueError, match="alpha"):
        Fn.expanding_attention(q, k, v, alpha=0.0)
    with pytest.raises(ValueError, match="coverage"):
        Fn.expanding_attention(q, k, v, coverage=1.0)
    with pytest.raises(ValueError, match="max_iter"):
        Fn.expanding_attention(q, k, v, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        Fn.expanding_attention(q, k, v, tol=-1.0)


def test_expanding_gradcheck():
    q, k, v = _expanding_inputs(13, 7, far=False)
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    a = torch.tensor(0.3, dtype=DT, requires_grad=True)
    b = torch.tensor(0.9, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v, a, b: Fn.expanding_attention(q, k, v, alpha=a, beta=b, coverage=0.6),
        (q, k, v, a, b))


def test_expanding_model_enumeration_given_rate_matches_brute_force():
    """Pyro's enumerated posterior of the distance given each token's rate equals
    ``p (1-p)^(delta-1) exp(s) / Z`` summed here by hand (max error printed)."""
    T = 8
    q, k, v = _expanding_inputs(14, T, far=False)
    model = ExpandingAttentionModel(k, v, scale=0.9)
    rate = torch.linspace(0.05, 0.6, T - 1, dtype=DT)
    cond = pyro.poutine.condition(model.model, {"rate": rate})
    marg = _marginals(cond, q)["distance"].probs  # (T - 1, T + 1) over x = delta - 1
    s = (0.9 * q @ k.T).numpy()
    err = 0.0
    for i in range(1, T):
        p = float(rate[i - 1])
        w = np.array([p * (1 - p) ** (d - 1) * math.exp(s[i, i - d]) for d in range(1, i + 1)])
        w /= w.sum()
        full = np.zeros(T + 1)
        full[:i] = w
        err = max(err, np.abs(marg[i - 1].numpy() - full).max())
    assert err < 1e-9, err


def test_expanding_model_exact_posterior_matches_quadrature():
    """The closed-form posterior (rate integrated out) equals brute-force numerical
    integration over the rate (scipy.integrate.quad) of the geometric-times-Beta joint."""
    from scipy import integrate, stats

    T = 7
    q, k, v = _expanding_inputs(15, T, far=False)
    alpha, beta = 0.7, 1.6
    model = ExpandingAttentionModel(k, v, alpha=alpha, beta=beta, scale=0.8)
    post = model.posterior(q)
    s = (0.8 * q @ k.T).numpy()
    err = 0.0
    for i in range(1, T):
        mass = [integrate.quad(lambda p, d=d: p * (1 - p) ** (d - 1)
                               * stats.beta.pdf(p, alpha, beta), 0, 1, epsabs=1e-13)[0]
                for d in range(1, i + 1)]
        w = np.array([mass[d - 1] * math.exp(s[i, i - d]) for d in range(1, i + 1)])
        w /= w.sum()
        row = np.zeros(T)
        row[[i - d for d in range(1, i + 1)]] = w
        err = max(err, np.abs(post["weights"][i].numpy() - row).max())
        rate = sum(wd * integrate.quad(lambda p, d=d: p * p * (1 - p) ** (d - 1)
                                       * stats.beta.pdf(p, alpha, beta), 0, 1)[0] / mass[d - 1]
                   for d, wd in zip(range(1, i + 1), w, strict=True))
        assert abs(rate - float(post["rate_mean"][i])) < 1e-7
    assert err < 1e-7, err


def test_expanding_loop_pass_is_model_conditional_posterior_at_tempered_rate():
    """The claimed relation: the loop's last pass for query ``i`` equals the model's exact
    (Pyro-enumerated) posterior of the distance given rate ``p~ = 1 - exp(-1/m)`` with the
    distance cut to the window ``ceil(m)``."""
    T = 60
    q, k, v = _expanding_inputs(16, T)
    out, w, (m, passes) = Fn.expanding_attention(q, k, v, scale=0.6, need_weights=True,
                                                 need_window=True)
    model = ExpandingAttentionModel(k, v, scale=0.6)
    rate = 1 - torch.exp(-1 / m[1:])
    maxd = torch.ceil(m[1:]).long()
    cond = pyro.poutine.condition(model.model, {"rate": rate})
    marg = _marginals(cond, q, None, maxd)["distance"].probs  # over x = delta - 1
    loop = torch.zeros(T - 1, T + 1, dtype=DT)
    for i in range(1, T):
        for d in range(1, i + 1):
            loop[i - 1, d - 1] = w[i, i - d]
    err = (marg - loop).abs().max().item()
    assert err < 1e-9, err
    assert int(passes.max()) > 1


def test_expanding_exact_posterior_concentrated_prior_limit():
    """As the Beta prior concentrates at ``p`` (``alpha = kappa p``, ``beta = kappa (1-p)``,
    ``kappa -> inf``) the exact posterior tends to the conditional posterior at ``p``; and with
    one key dominating inside the first window, loop and exact posterior read the same value."""
    T = 12
    q, k, v = _expanding_inputs(17, T, far=False)
    p = 0.2
    s = 0.5 * q @ k.T
    idx = torch.arange(T)
    delta = (idx[:, None] - idx[None]).to(DT)
    cond = torch.softmax((s + (delta - 1) * math.log(1 - p)).masked_fill(delta < 1, -math.inf)[1:],
                         -1)
    errs = []
    for kappa in (10.0, 1e3, 1e5):
        model = ExpandingAttentionModel(k, v, alpha=kappa * p, beta=kappa * (1 - p), scale=0.5)
        errs.append((model.posterior(q)["weights"][1:] - cond).abs().max().item())
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-4, errs
    # a dominant key at distance 3 for every query i >= 3 (one-hot keys: score 40 vs 0)
    k2 = torch.eye(T, dtype=DT)
    q2 = torch.zeros(T, T, dtype=DT)
    q2[3:] = 40 * k2[:-3]
    loop = Fn.expanding_attention(q2, k2, v, scale=1.0)
    exact = ExpandingAttentionModel(k2, v, scale=1.0).posterior(q2)["mean"]
    torch.testing.assert_close(loop[3:], v[:-3], atol=1e-5, rtol=0)
    torch.testing.assert_close(exact[3:], v[:-3], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- layers
from bayesattn.nn import ExpandingAttention, MultiheadAttention, MultihopAttention  # noqa: E402


def _heads(layer, x):
    w_q, w_k, w_v = layer.in_proj_weight.split(layer.embed_dim)
    b_q, b_k, b_v = layer.in_proj_bias.split(layer.embed_dim)
    N, T, E = x.shape
    H = layer.num_heads

    def split(t):
        return t.view(N, T, H, E // H).transpose(1, 2)

    return split(x @ w_q.T + b_q), split(x @ w_k.T + b_k), split(x @ w_v.T + b_v)


def _merge(layer, heads):
    N, H, T, d = heads.shape
    return layer.out_proj(heads.transpose(1, 2).reshape(N, T, H * d))


def test_multihop_layer_equals_functional_and_mha_kind():
    torch.manual_seed(20)
    layer = MultihopAttention(8, 2, hop_weights=(0.2, 0.3, 0.4, 0.1), dtype=DT)
    with torch.no_grad():
        layer.in_proj_bias.normal_()
    x = torch.randn(3, 6, 8, dtype=DT)
    kpm = torch.zeros(3, 6, dtype=torch.bool)
    kpm[1, 4:] = True
    out, M = layer(x, key_padding_mask=kpm, need_weights=True)
    q, k, v = _heads(layer, x)
    torch.testing.assert_close(layer.hop_weights, torch.tensor([0.2, 0.3, 0.4, 0.1], dtype=DT))
    heads = torch.zeros_like(q)
    for n in range(3):
        for h in range(2):
            ref, _ = matrix_power_reference(q[n, h].detach(), k[n, h].detach(), v[n, h].detach(),
                                            (0.2, 0.3, 0.4, 0.1), 0.5,
                                            (~kpm[n]).expand(6, 6))
            heads[n, h] = torch.from_numpy(ref)
    torch.testing.assert_close(out, _merge(layer, heads), atol=1e-10, rtol=0)
    assert M.shape == (3, 2, 6, 6) and M[1, :, :4, 4:].abs().max() == 0  # real rows
    mha = MultiheadAttention(8, 2, batch_first=True, attention="multihop", dtype=DT,
                             hop_weights=(0.2, 0.3, 0.4, 0.1))
    mha.load_state_dict(layer.state_dict())  # same names: in_proj_*, out_proj, hop_logits
    out_mha, w_mha = mha(x, x, x, key_padding_mask=kpm, average_attn_weights=False)
    torch.testing.assert_close(out_mha, out, atol=1e-12, rtol=0)
    torch.testing.assert_close(w_mha, M, atol=1e-12, rtol=0)
    # padded tokens never change a real token's output
    junk = x.clone()
    junk[1, 4:] = 1e3
    torch.testing.assert_close(layer(junk, key_padding_mask=kpm)[0][1, :4], out[1, :4],
                               atol=1e-9, rtol=0)


def test_structural_layers_shapes_batch_first_and_unbatched():
    torch.manual_seed(21)
    x = torch.randn(2, 9, 8, dtype=DT)
    for cls in (MultihopAttention, ExpandingAttention):
        first = cls(8, 2, dtype=DT)
        second = cls(8, 2, batch_first=False, dtype=DT)
        second.load_state_dict(first.state_dict())
        out1, w1 = first(x, need_weights=True)
        out2, w2 = second(x.transpose(0, 1), need_weights=True)
        assert out1.shape == (2, 9, 8) and w1.shape == (2, 2, 9, 9)
        torch.testing.assert_close(out2.transpose(0, 1), out1, atol=1e-12, rtol=0)
        out_u, w_u = first(x[1])
        assert out_u.shape == (9, 8) and w_u is None
        torch.testing.assert_close(out_u, out1[1], atol=1e-12, rtol=0)
    m, passes = first.last_window
    assert m.shape == passes.shape == (1, 2, 9)  # the unbatched call: (N=1, H, T)


def test_expanding_layer_equals_functional():
    torch.manual_seed(22)
    layer = ExpandingAttention(8, 2, alpha=0.5, beta=2.0, dtype=DT)
    x = torch.randn(2, 30, 8, dtype=DT)
    out, w = layer(x, need_weights=True)
    q, k, v = _heads(layer, x)
    heads = Fn.expanding_attention(q, k, v, alpha=0.5, beta=2.0)
    torch.testing.assert_close(out, _merge(layer, heads), atol=1e-12, rtol=0)
    s = (q[0, 1] @ k[0, 1].T / 2.0).tolist()
    ref, windows = expanding_reference(s, v[0, 1].tolist(), 0.5, 2.0)
    np.testing.assert_allclose(heads[0, 1].detach().numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(layer.last_window[0][0, 1].numpy(), windows, atol=1e-9)
    # causal: the future never changes the past
    future = x.clone()
    future[:, 20:] = 10 * torch.randn(2, 10, 8, dtype=DT)
    torch.testing.assert_close(layer(future)[0][:, :20], out[:, :20], atol=1e-10, rtol=0)


@pytest.mark.parametrize("cls", [MultihopAttention, ExpandingAttention])
def test_structural_layers_gradcheck(cls):
    """Gradients in the input and in every parameter, including ``hop_logits`` and the Beta
    prior's ``log_alpha`` / ``log_beta`` (float64, tiny)."""
    torch.manual_seed(23)
    kw = {"coverage": 0.6} if cls is ExpandingAttention else {}
    layer = cls(4, 2, dtype=DT, **kw)
    x = torch.randn(2, 5, 4, dtype=DT, requires_grad=True)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in layer.named_parameters()}

    def f(inp, *values):
        return torch.func.functional_call(layer, dict(zip(params, values, strict=True)),
                                          (inp,))[0]

    assert torch.autograd.gradcheck(f, (x, *params.values()))


def test_multihop_kind_arguments():
    with pytest.raises(ValueError, match="dropout"):
        MultiheadAttention(8, 2, attention="multihop", dropout=0.1)
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiheadAttention(8, 2, attention="multihop", add_bias_kv=True)
    with pytest.raises(ValueError, match="hop_weights"):
        MultiheadAttention(8, 2, attention="multihop", hop_weights=(0.5, 0.0))
    with pytest.raises(ValueError, match="self-attention"):
        x, kv = torch.randn(1, 4, 8), torch.randn(1, 5, 8)
        MultiheadAttention(8, 2, attention="multihop", batch_first=True)(x, kv, kv)
    torch.manual_seed(24)
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=DT)
    mine = MultiheadAttention(8, 2, batch_first=True, attention="multihop", dtype=DT)
    result = mine.load_state_dict(ref.state_dict())  # strict; hop_logits keep their init
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(mine.hop_weights, torch.full((3,), 1 / 3, dtype=DT))


def test_expanding_model_log_likelihood_matches_enumerated_evidence():
    """``log_likelihood`` (distance summed out) equals Pyro's enumerated ``log p(y, q | rate)``
    minus ``log p(q | rate)`` (two TraceEnum evidences, with and without the targets)."""
    T = 6
    q, k, v = _expanding_inputs(25, T, far=False)
    y = randn(gen_(26), T, 2)
    model = ExpandingAttentionModel(k, v, scale=0.7, noise=0.8)
    rate = torch.linspace(0.1, 0.5, T - 1, dtype=DT)
    ll = model.log_likelihood({"rate": rate[None]}, {"query": q, "target": y})
    cond = pyro.poutine.condition(model.model, {"rate": rate})
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    joint = -elbo.loss(cond, empty_guide, q, y)
    evidence = -elbo.loss(cond, empty_guide, q)
    np.testing.assert_allclose(ll.sum().item(), joint - evidence, atol=1e-9)


def test_multihop_token_with_no_allowed_key_is_an_empty_posterior():
    """A token whose mask allows no key has a zero row of ``A``: its own output is
    ``c_0 v_i`` and paths through it contribute nothing (no NaN on either path)."""
    g = gen_(27)
    T = 5
    q, k, v = randn(g, T, 3), randn(g, T, 3), randn(g, T, 2)
    mask = torch.ones(T, T, dtype=torch.bool)
    mask[2] = False
    c = (0.5, 0.3, 0.2)
    out, M = Fn.multihop_attention(q, k, v, hop_weights=c, attn_mask=mask, need_weights=True)
    fast = Fn.multihop_attention(q, k, v, hop_weights=c, attn_mask=mask)
    logits = (q @ k.T / math.sqrt(3)).numpy()
    A = np.exp(logits - logits.max(-1, keepdims=True))
    A /= A.sum(-1, keepdims=True)
    A[2] = 0.0
    ref = (0.5 * np.eye(T) + 0.3 * A + 0.2 * A @ A) @ v.numpy()
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(fast.numpy(), ref, atol=1e-12)
    torch.testing.assert_close(out[2], 0.5 * v[2])


@pytest.mark.slow
def test_multihop_compiles_fullgraph():
    """Validation is off while tracing, so the SDPA-per-hop path compiles as one graph."""
    g = gen_(28)
    q, k, v = randn(g, 2, 6, 4), randn(g, 2, 6, 4), randn(g, 2, 6, 3)
    c = torch.tensor([0.2, 0.5, 0.3], dtype=DT)
    compiled = torch.compile(
        lambda q, k, v, c: Fn.multihop_attention(q, k, v, hop_weights=c), fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, c),
                               Fn.multihop_attention(q, k, v, hop_weights=c), atol=1e-12, rtol=0)


def test_expanding_last_queries_and_per_sequence_priors():
    """``L < S`` queries are the last ``L`` rows of the full call; a prior per sequence of
    the batch gives each sequence's own call."""
    g = gen_(7)
    q, k, v = randn(g, 3, 12, 4), randn(g, 3, 12, 4), randn(g, 3, 12, 2)
    full, w_full, (m_full, n_full) = Fn.expanding_attention(q, k, v, need_weights=True,
                                                            need_window=True)
    last, w_last, (m_last, n_last) = Fn.expanding_attention(q[:, -3:], k, v, need_weights=True,
                                                            need_window=True)
    torch.testing.assert_close(last, full[:, -3:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w_last, w_full[:, -3:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m_last, m_full[:, -3:], rtol=1e-12, atol=1e-12)
    assert torch.equal(n_last, n_full[:, -3:])
    alpha = torch.tensor([0.1, 0.5, 2.0], dtype=DT)
    beta = torch.tensor([0.9, 0.5, 1.0], dtype=DT)
    both = Fn.expanding_attention(q, k, v, alpha=alpha, beta=beta)
    for i in range(3):
        alone = Fn.expanding_attention(q[i], k[i], v[i], alpha=float(alpha[i]),
                                       beta=float(beta[i]))
        torch.testing.assert_close(both[i], alone, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="broadcast"):
        Fn.expanding_attention(q, k, v, alpha=torch.ones(2, dtype=DT))
    with pytest.raises(ValueError, match="positive"):
        Fn.expanding_attention(q, k, v, beta=-beta)
    with pytest.raises(ValueError, match="L <= S"):
        Fn.expanding_attention(k, q[:, :5], v[:, :5])
