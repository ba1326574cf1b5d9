"""The two faces agree: Pyro's own inference on the Pyro models vs the closed-form fast path.

* Key selection (:class:`KernelAttentionModel`, :class:`SoftmaxAttentionModel`): exact
  enumeration (``TraceEnum_ELBO.compute_marginals``) and ``infer_discrete`` sampling of ``z``
  give the attention weights of :mod:`bayesattn.functional`.
* The regression program's log-density, pointwise log-likelihood and predictive moments
  equal a log-sum-exp / mixture computation written here (numpy loops).
* :class:`LeastSquaresAttentionModel`: Pyro's NUTS on ``W`` reproduces the closed form, which
  equals a numpy ridge regression; ``exact_posterior`` draws have the closed-form moments.
* :class:`GPAttentionModel`: agrees with ``pyro.contrib.gp.models.GPRegression`` and with
  brute-force leave-one-out refits.

Everything runs in float64.
"""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import pyro.contrib.gp as gp
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, TraceEnum_ELBO, infer_discrete

from bayesattn import functional as Fn
from bayesattn.models import (
    GPAttentionModel,
    KernelAttentionModel,
    LeastSquaresAttentionModel,
    SoftmaxAttentionModel,
)

DT = torch.float64
ARD_KERNELS = tuple(k for k in Fn.KERNELS if k != "von_mises_fisher")


def gen_(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=DT) * scale


def close(actual, expected, tol: float, rtol: float = 0.0) -> None:
    actual = np.asarray(actual.detach() if isinstance(actual, torch.Tensor) else actual)
    expected = np.asarray(expected.detach() if isinstance(expected, torch.Tensor) else expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, atol=tol, rtol=rtol)


def variance_se(y: torch.Tensor, dim: int) -> torch.Tensor:
    """Standard error of the sample variance of independent draws along ``dim``:
    ``sqrt((m4 - m2^2) / n)`` with the sample central moments ``m2``, ``m4``."""
    dev = y - y.mean(dim, keepdim=True)
    m2, m4 = (dev**2).mean(dim), (dev**4).mean(dim)
    return ((m4 - m2**2) / y.shape[dim]).sqrt()


def empty_guide(*args, **kwargs):
    """The guide of ``compute_marginals`` when every latent is enumerated."""


def enumerated_posterior_of_z(model, query) -> torch.Tensor:
    """``p(z_i = j | q_i)`` ``(L, S)`` by Pyro's exact enumeration of the selection model."""
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    marginals = elbo.compute_marginals(model.selection_model, empty_guide, query)
    return marginals["z"].probs


# ----------------------------------------------------------------------------- references
def ref_log_kernel(kernel: str, q: np.ndarray, k: np.ndarray, bandwidth) -> float:
    """Unnormalised log-kernel of one query/key pair, written from the table in the docs."""
    if kernel == "von_mises_fisher":
        cos = float(q @ k) / (np.linalg.norm(q) * np.linalg.norm(k))
        return cos / float(bandwidth)
    r2 = float((((q - k) / np.asarray(bandwidth)) ** 2).sum())
    if kernel == "gaussian":
        return -r2 / 2
    if kernel == "laplace":
        return -math.sqrt(r2)
    if kernel == "cauchy":
        return -math.log1p(r2)
    if kernel == "epanechnikov":
        return math.log(1 - r2) if r2 < 1 else -math.inf
    return 0.0 if r2 <= 1 else -math.inf  # boxcar


def sdpa_mask(mask, log_prior):
    """The functional API's one ``attn_mask``: the log-prior, ``-inf`` where ``mask`` is False."""
    if log_prior is None:
        return mask
    return log_prior if mask is None else log_prior.masked_fill(~mask, -math.inf)


def ref_weights(kernel, query, key, bandwidth=None, *, scale=None, mask=None, log_prior=None):
    """Attention weights ``(L, S)`` by a loop: kernel (or dot-product) times prior, normalised."""
    q, k = query.numpy(), key.numpy()
    bw = None if bandwidth is None else np.asarray(bandwidth)
    L, S = q.shape[0], k.shape[0]
    logits = np.empty((L, S))
    for i in range(L):
        for j in range(S):
            if kernel == "softmax":
                logits[i, j] = scale * float(q[i] @ k[j])
            else:
                logits[i, j] = ref_log_kernel(kernel, q[i], k[j], bw)
            if log_prior is not None:
                logits[i, j] += float(log_prior[i, j])
            if mask is not None and not bool(mask[i, j]):
                logits[i, j] = -math.inf
    top = logits.max(-1, keepdims=True)
    assert np.isfinite(top).all(), "test set-up: every query needs a key in range"
    w = np.exp(logits - top)
    return w / w.sum(-1, keepdims=True)


def ref_normal_logpdf(y, mean, sd):
    return -0.5 * math.log(2 * math.pi) - math.log(sd) - 0.5 * ((y - mean) / sd) ** 2


def ref_mixture_loglik(w: np.ndarray, value: np.ndarray, target: np.ndarray, noise: float):
    """``log sum_j w_ij prod_c N(y_ic; v_jc, noise^2)`` per query, by an explicit log-sum-exp."""
    L, S = w.shape
    out = np.empty(L)
    for i in range(L):
        terms = []
        for j in range(S):
            if w[i, j] == 0:
                continue
            lp = sum(ref_normal_logpdf(target[i, c], value[j, c], noise)
                     for c in range(value.shape[1]))
            terms.append(math.log(w[i, j]) + lp)
        m = max(terms)
        out[i] = m + math.log(sum(math.exp(t - m) for t in terms))
    return out


def memory(seed=0, S=7, E=2, Ev=2, L=5):
    g = gen_(seed)
    return randn(g, S, E), randn(g, S, Ev), randn(g, L, E, scale=0.5), g


def mask_and_prior(g, L, S):
    mask = torch.rand(L, S, generator=g) > 0.35
    mask[:, 0] = True  # every query keeps a key
    return mask, randn(g, L, S)


# ----------------------------------------------------------------------------- selection
KERNEL_CASES = [pytest.param(k, ard, id=f"{k}-{'ARD' if ard else 'scalar'}")
                for k in Fn.KERNELS for ard in (False, True)
                if not (ard and k == "von_mises_fisher")]  # vMF: scalar bandwidth only


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask+log_prior"])
@pytest.mark.parametrize("kernel,ard", KERNEL_CASES)
def test_enumerated_posterior_of_z_is_kernel_attention_weights(kernel, ard, masked):
    key, value, query, g = memory(seed=1)
    L, S = query.shape[0], key.shape[0]
    # bandwidths large enough that every query has a key inside the compact kernels' support
    bandwidth = torch.tensor([3.0, 4.5], dtype=DT) if ard else 3.5
    if kernel == "von_mises_fisher":
        bandwidth = 0.7
    mask, log_prior = mask_and_prior(g, L, S) if masked else (None, None)
    model = KernelAttentionModel(key, value, kernel=kernel, bandwidth=bandwidth, mask=mask,
                                 log_prior=log_prior)
    posterior = enumerated_posterior_of_z(model, query)
    _, weights = Fn.kernel_attention(query, key, value, kernel=kernel, bandwidth=bandwidth,
                                     attn_mask=sdpa_mask(mask, log_prior), need_weights=True)
    close(posterior, weights, 1e-6)
    close(posterior, ref_weights(kernel, query, key, bandwidth, mask=mask, log_prior=log_prior),
          1e-6)
    close(model.log_weights(query, {"bandwidth": torch.as_tensor(bandwidth, dtype=DT),
                                    "noise": torch.tensor(1.0, dtype=DT)}).exp(),
          ref_weights(kernel, query, key, bandwidth, mask=mask, log_prior=log_prior), 1e-12)
    if masked:
        assert bool((posterior[~mask] == 0).all())


def test_enumerated_posterior_with_small_bandwidth_is_peaked_and_still_agrees():
    key, value, query, _ = memory(seed=2)
    for kernel in ("gaussian", "laplace", "cauchy"):
        model = KernelAttentionModel(key, value, kernel=kernel, bandwidth=0.05)
        _, w = Fn.kernel_attention(query, key, value, kernel=kernel, bandwidth=0.05,
                                   need_weights=True)
        close(enumerated_posterior_of_z(model, query), w, 1e-6)
        if kernel == "gaussian":  # the test exercises the peaked regime (logits ~ -1e3)
            assert float(w.max(-1).values.min()) > 0.99


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask+log_prior"])
@pytest.mark.parametrize("scale", [None, 0.3, 2.0])
def test_enumerated_posterior_of_z_is_softmax_attention_weights(scale, masked):
    key, value, query, g = memory(seed=3, E=3)
    mask, log_prior = mask_and_prior(g, 5, 7) if masked else (None, None)
    model = SoftmaxAttentionModel(key, value, scale=scale, mask=mask, log_prior=log_prior)
    posterior = enumerated_posterior_of_z(model, query)
    _, weights = Fn.softmax_attention(query, key, value, scale=scale,
                                      attn_mask=sdpa_mask(mask, log_prior), need_weights=True)
    close(posterior, weights, 1e-6)
    expected_scale = 1 / math.sqrt(3) if scale is None else scale
    close(posterior, ref_weights("softmax", query, key, scale=expected_scale, mask=mask,
                                 log_prior=log_prior), 1e-6)


@pytest.mark.parametrize("family", ["gaussian", "laplace", "epanechnikov", "softmax"])
def test_leave_one_out_posterior_puts_zero_weight_on_the_query_itself(family):
    g = gen_(4)
    key = randn(g, 6, 2)
    value = randn(g, 6, 1)
    if family == "softmax":
        model = SoftmaxAttentionModel(key, value, scale=0.5, leave_one_out=True)
    else:
        model = KernelAttentionModel(key, value, kernel=family, bandwidth=4.0,
                                     leave_one_out=True)
    posterior = enumerated_posterior_of_z(model, key)
    assert bool((posterior.diagonal() == 0).all())
    close(posterior.sum(-1), torch.ones(6, dtype=DT), 1e-12)
    assert bool((posterior + torch.eye(6, dtype=DT) > 0).all())  # only the diagonal is dropped
    eye = torch.eye(6, dtype=torch.bool)
    fn_kwargs = {"scale": 0.5} if family == "softmax" else {"kernel": family, "bandwidth": 4.0}
    fn = Fn.softmax_attention if family == "softmax" else Fn.kernel_attention
    _, w = fn(key, key, value, attn_mask=~eye, need_weights=True, **fn_kwargs)
    close(posterior, w, 1e-6)
    close(model.posterior(key)["weights"], w, 1e-12)


def test_infer_discrete_sampling_frequencies_match_the_weights():
    key, value, query, g = memory(seed=5, S=5)
    mask, log_prior = mask_and_prior(g, 1, 5)
    n = 20000
    one = query[:1]
    model = KernelAttentionModel(key, value, kernel="laplace", bandwidth=0.8,
                                 mask=mask.expand(n, 5), log_prior=log_prior.expand(n, 5))
    pyro.set_rng_seed(0)
    sampler = infer_discrete(model.selection_model, first_available_dim=-2, temperature=1)
    z = poutine.trace(sampler).get_trace(one.expand(n, -1)).nodes["z"]["value"]
    assert z.shape == (n,)
    counts = torch.bincount(z, minlength=5).to(DT)
    _, w = Fn.kernel_attention(one, key, value, kernel="laplace", bandwidth=0.8,
                               attn_mask=sdpa_mask(mask, log_prior), need_weights=True)
    p = w[0]
    assert bool((counts[p == 0] == 0).all())
    sd = (n * p * (1 - p)).sqrt()
    assert bool(((counts - n * p).abs() <= 4 * sd + 1e-9).all()), (counts / n, p)
    # and not merely the MAP: every allowed key is drawn
    assert bool((counts[p > 0.01] > 0).all())
    # temperature 0 gives the MAP key (hard attention) for every query
    hard = infer_discrete(model.selection_model, first_available_dim=-2, temperature=0)
    z_map = poutine.trace(hard).get_trace(one.expand(n, -1)).nodes["z"]["value"]
    assert bool((z_map == int(p.argmax())).all())


def _selection_query_log_density(model, query) -> torch.Tensor:
    """``log p(q_i | z_i = 0)`` per query for a one-key model (z is then always 0)."""
    trace = poutine.trace(model.selection_model).get_trace(query)
    trace.compute_log_prob()
    return trace.nodes["query"]["log_prob"]


@pytest.mark.parametrize("kernel", ["gaussian", "laplace", "epanechnikov", "boxcar", "cauchy"])
def test_selection_likelihood_is_a_normalised_density_in_one_dim(kernel):
    """The bandwidth's posterior needs ``q | z`` normalised: its integral over q is 1."""
    h, step, half_width = 0.7, 2e-3, 60.0
    grid = torch.arange(-half_width, half_width, step, dtype=DT) + step / 2
    model = KernelAttentionModel(torch.tensor([[0.3]], dtype=DT), kernel=kernel, bandwidth=h)
    mass = float(_selection_query_log_density(model, (grid + 0.3).unsqueeze(-1)).exp().sum())
    mass *= step
    expected = 2 / math.pi * math.atan(half_width / h) if kernel == "cauchy" else 1.0
    assert mass == pytest.approx(expected, abs=2e-4)


@pytest.mark.parametrize("kernel", ["gaussian", "laplace", "epanechnikov", "boxcar"])
def test_selection_likelihood_is_a_normalised_density_in_two_dims_with_ard(kernel):
    bw = torch.tensor([0.6, 1.5], dtype=DT)
    # in bandwidth units; compact kernels get a fine grid over their support (the disc edge)
    step, half_width = (2e-3, 1.05) if kernel in ("epanechnikov", "boxcar") else (0.05, 25.0)
    axis = torch.arange(-half_width, half_width, step, dtype=DT) + step / 2
    gx, gy = torch.meshgrid(axis * bw[0], axis * bw[1], indexing="ij")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    model = KernelAttentionModel(torch.zeros(1, 2, dtype=DT), kernel=kernel, bandwidth=bw)
    density = _selection_query_log_density(model, points).exp()
    mass = float(density.sum()) * step**2 * float(bw.prod())
    assert mass == pytest.approx(1.0, abs=3e-3)


@pytest.mark.parametrize("kernel", ["epanechnikov", "boxcar"])
def test_compact_kernel_query_out_of_range_has_zero_evidence_and_a_nearest_key_fast_path(kernel):
    """Outside every key's support the selection model gives the query zero evidence (its
    documented limit); the fast path instead puts all weight on the nearest key."""
    key = torch.tensor([[0.0], [1.0], [3.0]], dtype=DT)
    value = torch.tensor([[1.0], [2.0], [3.0]], dtype=DT)
    far = torch.tensor([[10.0], [-5.0]], dtype=DT)
    for j in range(3):  # each key alone: the density of a far query is exactly 0
        one = KernelAttentionModel(key[j:j + 1], kernel=kernel, bandwidth=0.5)
        assert torch.isneginf(_selection_query_log_density(one, far)).all()
    _, w = Fn.kernel_attention(far, key, value, kernel=kernel, bandwidth=0.5,
                               need_weights=True)
    close(w, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=DT), 0.0)


# ----------------------------------------------------------------------------- regression
def _priors():
    return {"bandwidth": dist.LogNormal(0.0, 0.5), "noise": dist.HalfNormal(2.0)}


@pytest.mark.parametrize("case", ["gaussian", "laplace+mask", "loo", "softmax"])
def test_regression_program_log_density_is_a_logsumexp_over_keys(case):
    key, value, query, g = memory(seed=7, S=8, L=6)
    target = randn(g, 6, 2)
    bw, noise = 0.9, 0.4
    mask = log_prior = None
    if case == "softmax":
        model = SoftmaxAttentionModel(key, value, scale=dist.LogNormal(0.0, 1.0),
                                      noise=dist.HalfNormal(2.0))
        cond = {"scale": torch.tensor(bw, dtype=DT), "noise": torch.tensor(noise, dtype=DT)}
        prior_lp = float(dist.LogNormal(0.0, 1.0).log_prob(cond["scale"])
                         + dist.HalfNormal(2.0).log_prob(cond["noise"]))
        w = ref_weights("softmax", query, key, scale=bw)
    else:
        kernel = "laplace" if case == "laplace+mask" else "gaussian"
        if case == "laplace+mask":
            mask, log_prior = mask_and_prior(g, 6, 8)
        if case == "loo":
            query, target = key, value + randn(g, 8, 2, scale=0.3)
            mask = ~torch.eye(8, dtype=torch.bool)
        model = KernelAttentionModel(key, value, kernel=kernel, leave_one_out=case == "loo",
                                     mask=None if case == "loo" else mask, log_prior=log_prior,
                                     **_priors())
        cond = {"bandwidth": torch.tensor(bw, dtype=DT), "noise": torch.tensor(noise, dtype=DT)}
        prior_lp = sum(float(d.log_prob(cond[n])) for n, d in _priors().items())
        w = ref_weights(kernel, query, key, bw, mask=mask, log_prior=log_prior)
    trace = poutine.trace(poutine.condition(model.model, data=cond)).get_trace(query, target)
    expected = ref_mixture_loglik(w, value.numpy(), target.numpy(), noise)
    assert float(trace.log_prob_sum()) == pytest.approx(expected.sum() + prior_lp, abs=1e-8)
    one = {k: v.reshape(1) for k, v in cond.items()}
    out = model.per_observation_deterministics(one, {"query": query, "target": target})
    close(out["attention_output"][0], w @ value.numpy(), 1e-10)
    assert trace.nodes["target"]["fn"].batch_shape == (query.shape[0],)


def test_log_likelihood_is_pointwise_logsumexp_for_each_draw():
    key, value, query, g = memory(seed=8, S=9, L=6)
    target = randn(g, 6, 2)
    mask, log_prior = mask_and_prior(g, 6, 9)
    model = KernelAttentionModel(key, value, kernel="cauchy", mask=mask, log_prior=log_prior,
                                 **_priors())
    draws = {"bandwidth": torch.tensor([0.3, 1.0, 2.5], dtype=DT),
             "noise": torch.tensor([0.2, 0.7, 1.9], dtype=DT)}
    ll = model.log_likelihood(draws, {"query": query, "target": target})
    assert ll.shape == (3, 6)
    for d in range(3):
        w = ref_weights("cauchy", query, key, float(draws["bandwidth"][d]), mask=mask,
                        log_prior=log_prior)
        close(ll[d], ref_mixture_loglik(w, value.numpy(), target.numpy(),
                                        float(draws["noise"][d])), 1e-9)


def test_softmax_log_likelihood_with_fixed_hyperparameters_is_one_draw():
    key, value, query, g = memory(seed=9)
    target = randn(g, 5, 2)
    model = SoftmaxAttentionModel(key, value, scale=0.7, noise=0.5)
    ll = model.log_likelihood({}, {"query": query, "target": target})
    w = ref_weights("softmax", query, key, scale=0.7)
    close(ll, ref_mixture_loglik(w, value.numpy(), target.numpy(), 0.5)[None], 1e-9)


@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov", "von_mises_fisher"])
def test_posterior_mean_is_kernel_attention_and_variance_is_the_mixture_variance(kernel):
    key, value, query, _ = memory(seed=10, S=8, L=6)
    model = KernelAttentionModel(key, value, kernel=kernel, bandwidth=dist.LogNormal(0.0, 1.0),
                                 noise=0.3)
    if kernel == "von_mises_fisher":
        model = KernelAttentionModel(key, value, kernel=kernel, bandwidth=0.4, noise=0.3)
    params = {"bandwidth": torch.tensor(2.5 if kernel != "von_mises_fisher" else 0.4, dtype=DT)}
    post = model.posterior(query, params)
    w = ref_weights(kernel, query, key, float(params["bandwidth"]))
    v = value.numpy()
    close(post["mean"], w @ v, 1e-12)
    var = np.empty((6, 2))
    for i in range(6):
        m = sum(w[i, j] * v[j] for j in range(8))
        # law of total variance: E[Var(y|z)] + Var(E[y|z])
        var[i] = 0.3**2 + sum(w[i, j] * (v[j] - m) ** 2 for j in range(8))
    close(post["variance"], var, 1e-10)
    close(post["weights"], w, 1e-10)
    mean, variance = model.predict(query, params)
    close(mean, post["mean"], 1e-12)
    close(variance, post["variance"], 1e-12)


def test_posterior_of_softmax_model_matches_a_monte_carlo_of_the_program():
    """Moments of simulated targets (z drawn, then y) match posterior()'s mean and variance."""
    key, value, query, _ = memory(seed=11, L=2)
    model = SoftmaxAttentionModel(key, value, scale=1.3, noise=0.25)
    n = 40000
    big = query.repeat_interleave(n, 0)
    pyro.set_rng_seed(1)
    y = poutine.trace(model.model).get_trace(big).nodes["target"]["value"].reshape(2, n, 2)
    post = model.posterior(query)
    se_mean = (post["variance"] / n).sqrt()
    assert bool(((y.mean(1) - post["mean"]).abs() <= 4 * se_mean).all())
    assert bool((abs(y.var(1) - post["variance"]) <= 4 * variance_se(y, 1)).all())


def test_posterior_needs_values_for_hyperparameters_with_priors():
    key, value, query, _ = memory()
    model = KernelAttentionModel(key, value, **_priors())
    with pytest.raises(ValueError, match="bandwidth has a prior"):
        model.posterior(query)
    with pytest.raises(ValueError, match="noise has a prior"):
        model.posterior(query, {"bandwidth": torch.tensor(1.0, dtype=DT)})
    assert sorted(model.latent_names()) == ["bandwidth", "noise"]
    ls = LeastSquaresAttentionModel(prior_scale=dist.HalfNormal(1.0))
    with pytest.raises(ValueError, match="prior_scale has a prior"):
        ls.posterior(query, key, value)


# ----------------------------------------------------------------------------- least squares
def _ls_problem(seed=12, S=30, E=2, Ev=1, noise=0.5):
    g = gen_(seed)
    key = randn(g, S, E)
    w_true = randn(g, E, Ev)
    value = key @ w_true + randn(g, S, Ev, scale=noise)
    return key, value, randn(g, 4, E)


def _numpy_ridge(key, value, query, noise, prior_scale):
    k, v, q = key.numpy(), value.numpy(), query.numpy()
    a = k.T @ k + (noise**2 / prior_scale**2) * np.eye(k.shape[1])
    w_mean = np.linalg.solve(a, k.T @ v)
    quad = np.einsum("le,le->l", q, np.linalg.solve(a, q.T).T)
    return w_mean, noise**2 * np.linalg.inv(a), q @ w_mean, noise**2 * (1 + quad)


@pytest.mark.parametrize("S,E,Ev", [(30, 2, 1), (12, 3, 2), (3, 5, 2)])
def test_least_squares_closed_form_is_numpy_ridge_regression(S, E, Ev):
    g = gen_(S)
    key, value, query = randn(g, S, E), randn(g, S, Ev), randn(g, 4, E)
    model = LeastSquaresAttentionModel(prior_scale=0.8, noise=0.6)
    post = model.posterior(query, key, value)
    _, _, mean, var = _numpy_ridge(key, value, query, 0.6, 0.8)
    close(post["mean"], mean, 1e-10)
    close(post["variance"], var, 1e-10)


def test_least_squares_exact_posterior_draws_have_the_closed_form_moments():
    key, value, _ = _ls_problem(S=15, E=3, Ev=2)
    model = LeastSquaresAttentionModel(prior_scale=0.7, noise=0.5)
    n = 40000
    w = model.exact_posterior({"key": key, "value": value}, n, gen_(0))["W"]
    assert w.shape == (n, 3, 2)
    mean, cov, _, _ = _numpy_ridge(key, value, key[:1], 0.5, 0.7)
    sd = np.sqrt(np.diag(cov))[:, None]
    assert np.all(np.abs(w.mean(0).numpy() - mean) <= 4 * sd / math.sqrt(n))
    for c in range(2):
        emp = np.cov(w[:, :, c].numpy().T)
        se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
        assert np.all(np.abs(emp - cov) <= 5 * se), (emp, cov)
    # the two value columns are independent a posteriori
    cross = np.cov(w[:, :, 0].numpy().T, w[:, :, 1].numpy().T)[:3, 3:]
    assert np.all(np.abs(cross) <= 5 * np.sqrt(np.outer(np.diag(cov), np.diag(cov)) / n))


def test_least_squares_exact_posterior_needs_fixed_hyperparameters():
    key, value, _ = _ls_problem()
    model = LeastSquaresAttentionModel(noise=dist.HalfNormal(1.0))
    with pytest.raises(NotImplementedError, match="fixed prior_scale and noise"):
        model.exact_posterior({"key": key, "value": value}, 10, gen_(0))


@pytest.mark.slow
def test_least_squares_nuts_predictive_mean_matches_the_closed_form():
    key, value, query = _ls_problem(S=30, E=2, Ev=1, noise=0.5)
    model = LeastSquaresAttentionModel(prior_scale=1.0, noise=0.5)
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(model.model), num_samples=300, warmup_steps=200, num_chains=1,
                disable_progbar=True)
    mcmc.run(key, value)
    w = mcmc.get_samples()["W"]
    assert w.shape == (300, 2, 1)
    pred = (query @ w)[..., 0]  # (draws, L)
    ess = np.array([float(az.ess(pred[:, i].numpy()[None])) for i in range(query.shape[0])])
    mcse = pred.std(0).numpy() / np.sqrt(ess)
    expected = model.posterior(query, key, value)["mean"][:, 0].numpy()
    assert np.all(np.abs(pred.mean(0).numpy() - expected) <= 4 * mcse), (
        pred.mean(0), expected, mcse)
    # posterior sd of q^T W is noise * sqrt(q^T A^{-1} q); the predictive adds noise^2
    _, _, _, var = _numpy_ridge(key, value, query, 0.5, 1.0)
    # sample variance of correlated draws: MCSE from the ESS of the squared deviations
    sq = ((pred - pred.mean(0)) ** 2).numpy()
    ess_sq = np.array([float(az.ess(sq[:, i][None])) for i in range(query.shape[0])])
    mcse_var = sq.std(0) / np.sqrt(ess_sq)
    assert np.all(np.abs(sq.mean(0) - (var - 0.5**2)) <= 4 * mcse_var), (
        sq.mean(0), var - 0.5**2, mcse_var)


def test_least_squares_program_log_density_and_pointwise_log_likelihood():
    key, value, _ = _ls_problem(S=10, E=2, Ev=2)
    model = LeastSquaresAttentionModel(prior_scale=1.5, noise=0.4)
    g = gen_(3)
    draws = {"W": randn(g, 3, 2, 2)}
    ll = model.log_likelihood(draws, {"key": key, "value": value})
    assert ll.shape == (3, 10)
    k, v = key.numpy(), value.numpy()
    for d in range(3):
        wd = draws["W"][d].numpy()
        expected = [sum(ref_normal_logpdf(v[j, c], k[j] @ wd[:, c], 0.4) for c in range(2))
                    for j in range(10)]
        close(ll[d], expected, 1e-10)
        trace = poutine.trace(poutine.condition(model.model, data={"W": draws["W"][d]}))
        lp = float(trace.get_trace(key, value).log_prob_sum())
        prior = sum(ref_normal_logpdf(x, 0.0, 1.5) for x in wd.reshape(-1))
        assert lp == pytest.approx(sum(expected) + prior, abs=1e-9)


# ----------------------------------------------------------------------------- GP
def _gp_problem(seed=13, S=12, E=2, Ev=2):
    g = gen_(seed)
    key = randn(g, S, E)
    value = torch.sin(key.sum(-1, keepdim=True) * torch.arange(1, Ev + 1, dtype=DT))
    return key, value + randn(g, S, Ev, scale=0.1), randn(g, 5, E)


@pytest.mark.parametrize("ard", [False, True], ids=["scalar", "ARD"])
def test_gp_posterior_matches_pyro_gp_regression(ard):
    key, value, query = _gp_problem()
    ls = torch.tensor([0.8, 1.7], dtype=DT) if ard else 1.1
    amp, noise = 1.4, 0.3
    model = GPAttentionModel(lengthscale=ls, amplitude=amp, noise=noise)
    post = model.posterior(query, key, value)
    pyro.clear_param_store()  # PyroModule parameters live in the global param store
    rbf = gp.kernels.RBF(2, variance=torch.tensor(amp**2, dtype=DT),
                         lengthscale=torch.as_tensor(ls, dtype=DT))
    reg = gp.models.GPRegression(key, value.T, rbf, noise=torch.tensor(noise**2, dtype=DT),
                                 jitter=0.0)
    with torch.no_grad():
        mean, var = reg.forward(query, full_cov=False)
    assert mean.shape == var.shape == (2, 5)  # one batch row per value column
    close(post["mean"], mean.T, 1e-6)
    close(post["variance"], var[0], 1e-6)
    close(post["variance"], var[1], 1e-6)
    m_new, v_new = model.predict(query, {}, {"key": key, "value": value})
    close(m_new, mean.T, 1e-6)
    close(v_new, (var + noise**2).T, 1e-6)
    pyro.clear_param_store()


def test_gp_program_log_density_is_the_marginal_likelihood():
    key, value, _ = _gp_problem(S=9)
    model = GPAttentionModel(lengthscale=0.9, amplitude=1.2, noise=0.2)
    lp = float(poutine.trace(model.model).get_trace(key, value).log_prob_sum())
    k = key.numpy()
    d2 = ((k[:, None, :] - k[None, :, :]) ** 2).sum(-1)
    cov = 1.2**2 * np.exp(-0.5 * d2 / 0.9**2) + 0.2**2 * np.eye(9)
    _, logdet = np.linalg.slogdet(cov)
    expected = sum(-0.5 * (9 * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y))
                   for y in value.numpy().T)
    assert lp == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("kernel", ["rbf", "matern32"])
def test_gp_log_likelihood_is_brute_force_leave_one_out(kernel):
    key, value, _ = _gp_problem(S=10)
    model = GPAttentionModel(kernel=kernel, lengthscale=dist.LogNormal(0.0, 1.0),
                             amplitude=dist.HalfNormal(2.0), noise=dist.HalfNormal(1.0))
    draws = {"lengthscale": torch.tensor([0.5, 1.3], dtype=DT),
             "amplitude": torch.tensor([1.0, 0.6], dtype=DT),
             "noise": torch.tensor([0.3, 0.05], dtype=DT)}
    ll = model.log_likelihood(draws, {"key": key, "value": value})
    assert ll.shape == (2, 10)
    k, v = key.numpy(), value.numpy()

    def cov(a, b, ls, amp):
        r = np.sqrt((((a[:, None, :] - b[None, :, :]) / ls) ** 2).sum(-1))
        if kernel == "rbf":
            return amp**2 * np.exp(-0.5 * r**2)
        return amp**2 * (1 + math.sqrt(3) * r) * np.exp(-math.sqrt(3) * r)

    for d in range(2):
        ls, amp, noise = (float(draws[n][d]) for n in ("lengthscale", "amplitude", "noise"))
        for i in range(10):
            rest = np.arange(10) != i
            c = cov(k[rest], k[rest], ls, amp) + noise**2 * np.eye(9)
            kx = cov(k[i:i + 1], k[rest], ls, amp)[0]
            mean = kx @ np.linalg.solve(c, v[rest])
            var = amp**2 - kx @ np.linalg.solve(c, kx) + noise**2
            expected = sum(ref_normal_logpdf(v[i, col], mean[col], math.sqrt(var))
                           for col in range(2))
            assert float(ll[d, i]) == pytest.approx(expected, abs=1e-8)


# ----------------------------------------------------------------------------- bad input
def _km(**kw):
    key, value, _, _ = memory()
    return KernelAttentionModel(key, value, **kw)


BAD_CONSTRUCTION = {
    "key 1-D": (lambda: KernelAttentionModel(torch.zeros(5, dtype=DT)), ValueError, r"key"),
    "key 3-D": (lambda: KernelAttentionModel(torch.zeros(2, 5, 2, dtype=DT)), ValueError,
                r"key must have shape \(S, E\)"),
    "key empty": (lambda: KernelAttentionModel(torch.zeros(0, 2, dtype=DT)), ValueError,
                  r"key must have shape \(S, E\) with S >= 1"),
    "key list": (lambda: SoftmaxAttentionModel([[1.0, 2.0]]), TypeError, r"key"),
    "key int": (lambda: KernelAttentionModel(torch.zeros(3, 2, dtype=torch.int64)), TypeError,
                r"key"),
    "value S": (lambda: KernelAttentionModel(torch.zeros(4, 2, dtype=DT),
                                             torch.zeros(3, 1, dtype=DT)), ValueError,
                r"value must have shape \(S, Ev\) = \(4, Ev\)"),
    "value 1-D": (lambda: SoftmaxAttentionModel(torch.zeros(4, 2, dtype=DT),
                                                torch.zeros(4, dtype=DT)), ValueError, r"value"),
    "unknown kernel": (lambda: _km(kernel="rbf"), ValueError, r"unknown kernel 'rbf'"),
    "bandwidth 0": (lambda: _km(bandwidth=0.0), ValueError, r"bandwidth must be positive"),
    "bandwidth < 0": (lambda: _km(bandwidth=-1), ValueError, r"bandwidth must be positive"),
    "bandwidth inf": (lambda: _km(bandwidth=math.inf), ValueError,
                      r"bandwidth must be positive and finite"),
    "bandwidth nan": (lambda: _km(bandwidth=math.nan), ValueError, r"bandwidth"),
    "bandwidth tensor entry": (lambda: _km(bandwidth=torch.tensor([1.0, -1.0], dtype=DT)),
                               ValueError, r"bandwidth must be positive"),
    "bandwidth str": (lambda: _km(bandwidth="1"), TypeError, r"bandwidth must be a positive"),
    "bandwidth bool": (lambda: _km(bandwidth=True), TypeError, r"bandwidth"),
    "noise 0": (lambda: _km(noise=0.0), ValueError, r"noise must be positive"),
    "noise None": (lambda: _km(noise=None), TypeError, r"noise"),
    "softmax scale < 0": (lambda: SoftmaxAttentionModel(torch.zeros(3, 2, dtype=DT),
                                                        scale=-0.5), ValueError,
                          r"scale must be positive"),
    "LS prior_scale 0": (lambda: LeastSquaresAttentionModel(prior_scale=0), ValueError,
                         r"prior_scale must be positive"),
    "LS noise < 0": (lambda: LeastSquaresAttentionModel(noise=-2.0), ValueError,
                     r"noise must be positive"),
    "LS prior_scale str": (lambda: LeastSquaresAttentionModel(prior_scale="a"), TypeError,
                           r"prior_scale"),
    "GP kernel": (lambda: GPAttentionModel(kernel="gaussian"), ValueError,
                  r"unknown kernel 'gaussian'"),
    "GP lengthscale": (lambda: GPAttentionModel(lengthscale=0.0), ValueError,
                       r"lengthscale must be positive"),
    "GP amplitude": (lambda: GPAttentionModel(amplitude=-1.0), ValueError,
                     r"amplitude must be positive"),
    "GP noise": (lambda: GPAttentionModel(noise=math.inf), ValueError, r"noise must be positive"),
}


@pytest.mark.parametrize("case", list(BAD_CONSTRUCTION))
def test_bad_construction_raises_naming_the_argument(case):
    make, exc, match = BAD_CONSTRUCTION[case]
    with pytest.raises(exc, match=match):
        make()


def _call_cases():
    key, value, query, g = memory()  # S=7, E=2, Ev=2, L=5
    target = randn(g, 5, 2)
    km = KernelAttentionModel(key, value)
    ls = LeastSquaresAttentionModel()
    gpm = GPAttentionModel()
    return {
        "query E": (lambda: km.model(randn(g, 5, 3), target), ValueError,
                    r"query must have shape \(L, E\) with E = 2"),
        "query 1-D": (lambda: km.model(query[0], target), ValueError, r"query"),
        "query 3-D": (lambda: km.model(query[None], target), ValueError, r"query"),
        "query list": (lambda: km.model(query.tolist(), target), TypeError, r"query"),
        "query NaN": (lambda: km.model(query * math.nan, target), ValueError,
                      r"query contains NaN"),
        "selection query E": (lambda: km.selection_model(randn(g, 5, 1)), ValueError, r"query"),
        "target L": (lambda: km.model(query, target[:4]), ValueError,
                     r"target must have shape \(L, Ev\) = \(5, 2\)"),
        "target Ev": (lambda: km.model(query, target[:, :1]), ValueError, r"target"),
        "target int": (lambda: km.model(query, target.long()), TypeError, r"target"),
        "no value": (lambda: KernelAttentionModel(key).model(query, target), ValueError,
                     r"without value"),
        "posterior query E": (lambda: km.posterior(randn(g, 5, 4)), ValueError, r"query"),
        "leave_one_out L != S": (lambda: KernelAttentionModel(key, value, leave_one_out=True)
                                 .model(query, target), ValueError, r"leave_one_out.*L == S"),
        "leave_one_out selection": (lambda: SoftmaxAttentionModel(key, leave_one_out=True)
                                    .selection_model(query), ValueError, r"leave_one_out"),
        "mask shape": (lambda: KernelAttentionModel(key, value, mask=torch.ones(
            5, 6, dtype=torch.bool)).model(query, target), ValueError, r"mask of shape \(5, 6\)"),
        "mask float": (lambda: SoftmaxAttentionModel(key, value, mask=torch.ones(
            5, 7, dtype=DT)).model(query, target), TypeError, r"mask must be a bool tensor"),
        "log_prior +inf": (lambda: KernelAttentionModel(key, value, log_prior=torch.full(
            (5, 7), math.inf, dtype=DT)).model(query, target), ValueError, r"log_prior"),
        "mask excludes all": (lambda: KernelAttentionModel(key, value, mask=torch.zeros(
            5, 7, dtype=torch.bool)).model(query, target), ValueError, r"no key it may attend"),
        "ARD bandwidth shape": (lambda: KernelAttentionModel(
            key, value, bandwidth=torch.ones(3, dtype=DT)).model(query, target), ValueError,
            r"bandwidth must be a scalar or shape \(2,\)"),
        "vMF ARD bandwidth": (lambda: KernelAttentionModel(
            key, value, kernel="von_mises_fisher", bandwidth=torch.ones(2, dtype=DT))
            .model(query, target), ValueError, r"bandwidth must be a scalar"),
        "cauchy prior E=2": (lambda: KernelAttentionModel(
            key, kernel="cauchy", bandwidth=dist.LogNormal(0.0, 1.0)).selection_model(query),
            ValueError, r"cauchy kernel has no normalisable density in E=2.*fixed bandwidth"),
        "vMF prior": (lambda: KernelAttentionModel(
            key, kernel="von_mises_fisher", bandwidth=dist.LogNormal(0.0, 1.0))
            .selection_model(query), ValueError,
            r"von_mises_fisher kernel has no normalisable density.*bandwidth"),
        "LS key 1-D": (lambda: ls.model(key[:, 0], value), ValueError, r"key"),
        "LS value S": (lambda: ls.model(key, value[:3]), ValueError,
                       r"value must have shape \(S, Ev\) = \(7, Ev\)"),
        "LS posterior value": (lambda: ls.posterior(query, key, value[:, 0]), ValueError,
                               r"value"),
        "LS posterior query E": (lambda: ls.posterior(randn(g, 5, 3), key, value), ValueError,
                                 r"query and key must share the feature dim E"),
        "GP value S": (lambda: gpm.model(key, value[:2]), ValueError, r"value"),
        "GP key list": (lambda: gpm.posterior(query, key.tolist(), value), TypeError, r"key"),
    }


@pytest.mark.parametrize("case", list(_call_cases()))
def test_bad_calls_raise_naming_the_argument(case):
    call, exc, match = _call_cases()[case]
    with pytest.raises(exc, match=match):
        call()


def test_log_likelihood_rejects_a_target_of_the_wrong_shape():
    key, value, query, g = memory()  # Ev = 2
    model = KernelAttentionModel(key, value)
    with pytest.raises(ValueError, match=r"target"):
        model.log_likelihood({}, {"query": query, "target": randn(g, 5, 1)})


def test_cauchy_prior_is_allowed_in_one_dim_and_fixed_bandwidth_in_any_dim():
    g = gen_(14)
    key1, q1 = randn(g, 4, 1), randn(g, 3, 1)
    model = KernelAttentionModel(key1, kernel="cauchy", bandwidth=dist.LogNormal(0.0, 1.0))
    trace = poutine.trace(model.selection_model).get_trace(q1)
    assert trace.nodes["bandwidth"]["type"] == "sample"
    key2, q2 = randn(g, 4, 2), randn(g, 3, 2)
    fixed = KernelAttentionModel(key2, kernel="cauchy", bandwidth=0.8)
    _, w = Fn.kernel_attention(q2, key2, key2, kernel="cauchy", bandwidth=0.8,
                               need_weights=True)
    close(enumerated_posterior_of_z(fixed, q2), w, 1e-6)


def test_predictive_sample_draws_from_the_key_mixture():
    """At new queries: keys chosen with the attention weights, then value plus noise."""
    key, value, query, _ = memory(seed=15, S=5, Ev=1)
    model = KernelAttentionModel(key, value, kernel="laplace", bandwidth=dist.LogNormal(0., 1.),
                                 noise=1e-9)
    params = {"bandwidth": torch.tensor(0.7, dtype=DT)}
    n = 20000
    y = model.predictive_sample(query[:1].expand(n, -1), params, None, gen_(0))[:, 0]
    # with negligible noise each draw is one of the stored values, picked with weight w_j
    match = (y[:, None] - value[:, 0]).abs() < 1e-6  # (n, S)
    assert bool((match.sum(-1) == 1).all())
    p = ref_weights("laplace", query[:1], key, 0.7)[0]
    freq = match.to(DT).mean(0).numpy()
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12), (freq, p)
    # with noise, the draws have the predictive mean and variance of posterior()
    noisy = KernelAttentionModel(key, value, kernel="laplace", bandwidth=0.7, noise=0.4)
    y = noisy.predictive_sample(query[:1].expand(n, -1), {}, None, gen_(1))[:, 0]
    post = noisy.posterior(query[:1])
    assert abs(float(y.mean() - post["mean"][0, 0])) <= 4 * math.sqrt(
        float(post["variance"][0, 0]) / n)
    assert abs(float(y.var() - post["variance"][0, 0])) <= 4 * float(variance_se(y, 0))


def test_many_predictive_samples_at_once_follow_the_key_mixture():
    """``num_samples=n``: ``(n, L, Ev)`` draws, each row from its own query's mixture."""
    key, value, query, _ = memory(seed=15, S=5, Ev=1)
    model = KernelAttentionModel(key, value, kernel="laplace", bandwidth=0.7, noise=1e-9)
    n = 20000
    y = model.predictive_sample(query[:2], {}, None, gen_(3), num_samples=n)
    assert y.shape == (n, 2, 1)
    for row in range(2):
        match = (y[:, row, 0][:, None] - value[:, 0]).abs() < 1e-6  # (n, S)
        assert bool((match.sum(-1) == 1).all())
        p = ref_weights("laplace", query[row:row + 1], key, 0.7)[0]
        freq = match.to(DT).mean(0).numpy()
        assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12), (row, freq, p)
    assert model.predictive_sample(query[:2], {}, None, gen_(3)).shape == (2, 1)


def test_least_squares_predictive_sample_is_gaussian_around_key_times_w():
    key, value, query = _ls_problem(S=10, E=2, Ev=1)
    model = LeastSquaresAttentionModel(prior_scale=1.0, noise=0.3)
    w = torch.tensor([[0.5], [-1.0]], dtype=DT)
    n = 20000
    q = query[:1].expand(n, -1)
    y = model.predictive_sample(q, {"W": w}, {"key": key, "value": value}, gen_(2))
    assert y.shape == (n, 1)
    assert abs(float(y.mean() - query[0] @ w[:, 0])) <= 4 * 0.3 / math.sqrt(n)
    assert abs(float(y.var()) - 0.3**2) <= 4 * float(variance_se(y, 0))
    many = model.predictive_sample(query[:1], {"W": w}, {"key": key, "value": value}, gen_(4),
                                   num_samples=n)[:, 0]  # (n, 1): the predictive once
    assert many.shape == (n, 1)
    assert abs(float(many.mean() - query[0] @ w[:, 0])) <= 4 * 0.3 / math.sqrt(n)
    assert abs(float(many.var()) - 0.3**2) <= 4 * float(variance_se(many, 0))


# ----------------------------------------------------------------------------- gradients
def _positive(loc=0.0):
    return dist.LogNormal(torch.tensor(loc, dtype=DT), torch.tensor(1.0, dtype=DT))


def _gradcheck_case(case):
    """``(model, data, {site: value})`` whose log joint is differentiated w.r.t. the values."""
    key, value, query, g = memory(seed=16, S=6, L=4)
    target = randn(g, 4, 2)
    if case in ("gaussian", "laplace", "cauchy"):
        mask, log_prior = mask_and_prior(g, 4, 6) if case == "laplace" else (None, None)
        model = KernelAttentionModel(key, value, kernel=case, bandwidth=_positive(),
                                     noise=_positive(), mask=mask, log_prior=log_prior)
        return model, {"query": query, "target": target}, {"bandwidth": 0.8, "noise": 0.6}
    if case == "softmax":
        model = SoftmaxAttentionModel(key, value, scale=_positive(), noise=_positive(),
                                      leave_one_out=True)
        return model, {"query": key, "target": value + 0.1}, {"scale": 0.9, "noise": 0.5}
    if case == "least_squares":
        model = LeastSquaresAttentionModel(prior_scale=_positive(), noise=_positive())
        return model, {"key": key, "value": value}, {
            "W": [[0.3, -0.2], [0.1, 0.4]], "prior_scale": 1.2, "noise": 0.7}
    model = GPAttentionModel(lengthscale=_positive(), amplitude=_positive(), noise=_positive())
    return model, {"key": key, "value": value}, {"lengthscale": 0.9, "amplitude": 1.1,
                                                 "noise": 0.4}


@pytest.mark.parametrize("case", ["gaussian", "laplace", "cauchy", "softmax", "least_squares",
                                  "gp"])
def test_log_joint_gradient_passes_gradcheck(case):
    """float64 finite differences vs autograd of ``log p(theta, y)`` for every model."""
    model, data, point = _gradcheck_case(case)
    names = list(point)

    def log_joint(*values):
        cond = poutine.condition(model.model, data=dict(zip(names, values, strict=True)))
        return poutine.trace(cond).get_trace(**data).log_prob_sum()

    inputs = tuple(torch.tensor(point[n], dtype=DT, requires_grad=True) for n in names)
    # (check_undefined_grad off: Pyro's NaN-warning hooks reject None output gradients)
    assert torch.autograd.gradcheck(log_joint, inputs, check_undefined_grad=False)


@pytest.mark.parametrize("case", ["laplace", "softmax", "gp"])
def test_pointwise_log_likelihood_gradient_passes_gradcheck(case):
    model, data, point = _gradcheck_case(case)
    names = [n for n in point if n != "W"]

    def pointwise(*values):
        draws = {n: v.reshape(1, *v.shape) for n, v in zip(names, values, strict=True)}
        return model.log_likelihood(draws, data)

    inputs = tuple(torch.tensor(point[n], dtype=DT, requires_grad=True) for n in names)
    assert torch.autograd.gradcheck(pointwise, inputs, check_undefined_grad=False)
