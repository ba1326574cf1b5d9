"""The predictive-coding bridge (bayesattn.models.neuro.pcn): the free energy against mixture
likelihoods from torch.distributions, the attention against the package's attention weights,
limits in the temperature, gradients, equilibria against closed-form solutions, and learning."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, Laplace, MixtureSameFamily, Normal

from bayesattn.functional import kernel_attention, softmax_attention, softmax_log_weights
from bayesattn.models.neuro.pcn import (
    AttentionPCN,
    free_energy,
    option_attention,
    option_errors,
    option_mixture_model,
    train_attention_pcn,
)

D64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _mixture(comp, k):
    return MixtureSameFamily(Categorical(logits=torch.zeros(k, dtype=D64)), comp)


# ----------------------------------------------------------------------------- free energy
def test_free_energy_is_negative_log_marginal_of_a_laplace_mixture():
    # D = 1, Euclidean errors: exp(-T |x - f_k|) = (2 / T) Laplace(x; f_k, 1 / T)
    g = _gen(0)
    f = torch.randn(5, generator=g, dtype=D64)
    x = torch.randn(7, 1, generator=g, dtype=D64)
    for t in (0.3, 1.0, 4.0):
        e = option_errors(x, f[:, None].expand(7, 5, 1).contiguous(), error="euclidean")
        log_p = _mixture(Laplace(f, 1 / t), 5).log_prob(x[:, 0])
        expected = (-log_p - math.log(5) + math.log(t / 2)) / t
        torch.testing.assert_close(free_energy(e, t), expected, rtol=1e-12, atol=1e-12)
        # the attention is the mixture's posterior over components (Bayes' rule)
        joint = Laplace(f, 1 / t).log_prob(x)  # (7, 5)
        torch.testing.assert_close(option_attention(e, t), torch.softmax(joint, -1))


def test_free_energy_is_negative_log_marginal_of_a_gaussian_mixture():
    # squared errors |x - f|^2 / 2 and T = 1 / sigma^2: a Gaussian mixture in D = 3
    g = _gen(1)
    k, d, t = 4, 3, 2.5
    f = torch.randn(k, d, generator=g, dtype=D64)
    x = torch.randn(6, d, generator=g, dtype=D64)
    log_prior = torch.log_softmax(torch.randn(k, generator=g, dtype=D64), -1)
    comp = Independent(Normal(f, t**-0.5), 1)
    mix = MixtureSameFamily(Categorical(logits=log_prior), comp)
    e = option_errors(x, f.expand(6, k, d), error="squared")
    expected = (-mix.log_prob(x) + 0.5 * d * math.log(t / (2 * math.pi))) / t
    torch.testing.assert_close(free_energy(e, t, log_prior=log_prior), expected)
    posterior = torch.softmax(comp.log_prob(x[:, None]) + log_prior, -1)
    torch.testing.assert_close(option_attention(e, t, log_prior=log_prior), posterior)


def test_gradient_of_free_energy_in_the_errors_is_the_attention():
    g = _gen(2)
    e = torch.rand(3, 4, 6, generator=g, dtype=D64).requires_grad_(True)
    log_prior = torch.randn(6, generator=g, dtype=D64)
    log_prior[2] = -math.inf
    for lp in (None, log_prior):
        (grad,) = torch.autograd.grad(free_energy(e, 1.7, log_prior=lp).sum(), e)
        # closed form, written out here: exp(-T e + lp) / sum
        w = torch.exp(-1.7 * e.detach() + (0.0 if lp is None else lp))
        torch.testing.assert_close(grad, w / w.sum(-1, keepdim=True))
        torch.testing.assert_close(option_attention(e.detach(), 1.7, log_prior=lp), grad)
    assert float(grad[..., 2].abs().max()) == 0.0


def test_attention_equals_the_packages_kernel_and_softmax_attention_weights():
    g = _gen(3)
    x = torch.randn(2, 5, 4, generator=g, dtype=D64)  # 5 queries
    f = torch.randn(2, 7, 4, generator=g, dtype=D64)  # 7 options = keys
    t = 1.3
    # Euclidean errors: the radial Laplace kernel with bandwidth 1 / T
    e = option_errors(x, f[:, None].expand(2, 5, 7, 4), error="euclidean")
    _, w = kernel_attention(x, f, f, kernel="laplace", bandwidth=1 / t, need_weights=True)
    torch.testing.assert_close(option_attention(e, t), w)
    # squared errors: dot-product softmax with scale T and key bias -T |f|^2 / 2
    e2 = option_errors(x, f[:, None].expand(2, 5, 7, 4), error="squared")
    bias = (-0.5 * t * (f**2).sum(-1))[:, None, :].expand(2, 5, 7)
    log_w = softmax_log_weights(x, f, attn_mask=bias, scale=t)
    torch.testing.assert_close(option_attention(e2, t), log_w.exp())


def test_descending_F_in_x_with_squared_errors_is_an_attention_step():
    # x - dF/dx = sum_k pi_k f_k: the attention output with query x, keys = values = f
    g = _gen(4)
    f = torch.randn(6, 3, generator=g, dtype=D64)
    x = torch.randn(5, 3, generator=g, dtype=D64).requires_grad_(True)
    t = 0.8
    (grad,) = torch.autograd.grad(free_energy(option_errors(x, f.expand(5, 6, 3),
                                                            error="squared"), t).sum(), x)
    bias = (-0.5 * t * (f**2).sum(-1)).expand(5, 6)
    out = softmax_attention(x.detach(), f, f, attn_mask=bias, scale=t)
    torch.testing.assert_close(x.detach() - grad, out)


def test_temperature_limits_and_bounds():
    g = _gen(5)
    e = 3 * torch.rand(50, 8, generator=g, dtype=D64)
    lo, mean = e.amin(-1), e.mean(-1)
    for t in (0.01, 0.5, 2.0, 40.0):
        f = free_energy(e, t)
        assert bool((f <= lo + 1e-12).all()) and bool((f >= lo - math.log(8) / t - 1e-12).all())
    torch.testing.assert_close(free_energy(e, math.inf), lo)
    torch.testing.assert_close(free_energy(e, 1e7), lo, atol=1e-6, rtol=0)
    torch.testing.assert_close(free_energy(e, 1e-7) + math.log(8) / 1e-7, mean, atol=1e-5, rtol=0)
    hard = option_attention(e, math.inf)
    assert torch.equal(hard.argmax(-1), e.argmin(-1)) and torch.equal(hard.sum(-1), torch.ones(50,
                                                                                           dtype=D64))
    torch.testing.assert_close(option_attention(e, 1e7), hard, atol=1e-6, rtol=0)
    # the hard limit respects the prior's exclusions
    lp = torch.zeros(8, dtype=D64)
    lp[e[0].argmin()] = -math.inf
    assert float(free_energy(e[:1], math.inf, log_prior=lp)) == float(e[0].sort().values[1])


def test_gradcheck_free_energy_and_layer_energy():
    g = _gen(6)
    e = torch.rand(3, 5, generator=g, dtype=D64).requires_grad_(True)
    lp = torch.randn(5, generator=g, dtype=D64)
    assert torch.autograd.gradcheck(lambda a: free_energy(a, 2.0, log_prior=lp), (e,))
    for error in ("euclidean", "squared"):
        layer = AttentionPCN(4, 2, 3, error=error, temperature=1.5, state_precision=0.7,
                             init_scale=1.0, generator=g, dtype=D64)
        with torch.no_grad():
            layer.bias.normal_(generator=g)
        x = torch.randn(5, 4, generator=g, dtype=D64).requires_grad_(True)
        h = torch.randn(5, 2, generator=g, dtype=D64).requires_grad_(True)
        w, b = layer.weight.detach().clone(), layer.bias.detach().clone()

        def energy(x, h, w, b, layer=layer):
            with torch.no_grad():
                layer.weight.copy_(w)
                layer.bias.copy_(b)
            f = torch.einsum("kdh,nh->nkd", w, h) + b
            return free_energy(option_errors(x, f, error=layer.error), 1.5) + 0.35 * (h**2).sum(-1)

        assert torch.autograd.gradcheck(
            energy, (x, h, w.requires_grad_(True), b.requires_grad_(True))
        )
        torch.testing.assert_close(layer.energy(x, h), energy(x, h, w, b))


def test_euclidean_error_gradient_is_finite_at_zero_error():
    f = torch.zeros(1, 2, 3, dtype=D64)
    x = torch.zeros(1, 3, dtype=D64, requires_grad=True)
    (grad,) = torch.autograd.grad(free_energy(option_errors(x, f), 2.0).sum(), x)
    assert bool(torch.isfinite(grad).all())


# ----------------------------------------------------------------------------- equilibria
def _layer(k, error, seed, d=5, h=2, prec=0.5, t=2.0):
    g = _gen(seed)
    layer = AttentionPCN(d, h, k, error=error, temperature=t, state_precision=prec,
                         init_scale=0.7, generator=g, dtype=D64)
    with torch.no_grad():
        layer.bias.normal_(generator=g)
    return layer, torch.randn(4, d, generator=g, dtype=D64)


def test_equilibrium_of_one_gaussian_option_is_the_ridge_solution():
    layer, x = _layer(1, "squared", 7)
    h = layer.infer(x, num_steps=5000, step_size=0.2, tol=1e-12)
    w, b = layer.weight[0].detach(), layer.bias[0].detach()
    a = w.T @ w + 0.5 * torch.eye(2, dtype=D64)
    expected = torch.linalg.solve(a, ((x - b) @ w).T).T
    torch.testing.assert_close(h, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("error", ["squared", "euclidean"])
def test_equilibrium_balances_precision_weighted_errors(error):
    # at equilibrium: prec h = sum_k pi_k W_k^T (x - f_k) / s_k, s_k = 1 (squared) or e_k
    layer, x = _layer(3, error, 8)
    h = layer.infer(x, num_steps=20000, step_size=0.05, tol=1e-10)
    with torch.no_grad():
        f = layer.predictions(h)
        r = x[:, None] - f  # (N, K, D)
        e = r.norm(dim=-1)
        pi = torch.softmax(-2.0 * (0.5 * e**2 if error == "squared" else e), -1)
        s = torch.ones_like(e) if error == "squared" else e
        drive = torch.einsum("nk,kdh,nkd->nh", pi / s, layer.weight, r)
    torch.testing.assert_close(0.5 * h, drive, atol=1e-7, rtol=0)
    # and it is a local minimum of the energy
    g = _gen(9)
    e0 = layer.energy(x, h)
    for _ in range(5):
        assert bool((layer.energy(x, h + 1e-3 * torch.randn(h.shape, generator=g,
                                                             dtype=D64)) >= e0).all())


def test_weight_gradient_at_equilibrium_is_the_total_derivative():
    # envelope theorem: d/dtheta min_h E(x, h; theta) = dE/dtheta at h*. K = 1, squared errors:
    # h*(theta) in closed form, differentiated through the solve.
    layer, x = _layer(1, "squared", 10)
    h = layer.infer(x, num_steps=5000, step_size=0.2, tol=1e-12)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    a = w[0].T @ w[0] + 0.5 * torch.eye(2, dtype=D64)
    hs = torch.linalg.solve(a, ((x - b[0]) @ w[0]).T).T
    total = (0.5 * ((x - hs @ w[0].T - b[0]) ** 2).sum(-1) + 0.25 * (hs**2).sum(-1)).sum()
    gw, gb = torch.autograd.grad(total, (w, b))
    layer.zero_grad()
    layer.energy(x, h).sum().backward()
    torch.testing.assert_close(layer.weight.grad, gw, atol=1e-8, rtol=0)
    torch.testing.assert_close(layer.bias.grad, gb, atol=1e-8, rtol=0)


def test_weight_gradient_at_equilibrium_matches_finite_differences_with_options():
    layer, x = _layer(3, "squared", 11)
    kw = {"num_steps": 20000, "step_size": 0.05, "tol": 1e-11}
    h = layer.infer(x, **kw)
    layer.zero_grad()
    layer.energy(x, h).sum().backward()
    eps = 1e-5

    def minimised(delta):
        with torch.no_grad():
            layer.weight[1, 2, 0] += delta
        hh = layer.infer(x, h0=h, **kw)
        out = float(layer.energy(x, hh).sum().detach())
        with torch.no_grad():
            layer.weight[1, 2, 0] -= delta
        return out

    fd = (minimised(eps) - minimised(-eps)) / (2 * eps)
    assert abs(fd - float(layer.weight.grad[1, 2, 0])) < 1e-6


# ----------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_training_learns_options_that_infer_held_out_labels():
    # three classes, each a line in R^4 (one latent dim) plus noise
    g = _gen(12)
    k, d = 3, 4
    centres = 2.0 * torch.randn(k, d, generator=g)
    dirs = torch.randn(k, d, generator=g)
    labels = torch.randint(0, k, (300,), generator=g)
    x = (centres[labels] + torch.randn(300, 1, generator=g) * dirs[labels]
         + 0.1 * torch.randn(300, d, generator=g))
    layer = AttentionPCN(d, 1, k, error="squared", temperature=1.0, state_precision=0.1,
                         generator=g)
    history = train_attention_pcn(layer, x[:200], labels[:200], epochs=8, batch_size=100,
                                  lr=0.1, infer_steps=20, step_size=0.3, generator=g)
    assert history[-1] < 0.5 * history[0]
    h = layer.infer(x[200:], num_steps=60, step_size=0.3)
    accuracy = float((layer.attention(x[200:], h).argmax(-1) == labels[200:]).float().mean())
    assert accuracy > 0.95


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises():
    e = torch.rand(2, 3)
    for t in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            free_energy(e, t)
    with pytest.raises(TypeError, match="temperature"):
        option_attention(e, "hot")
    with pytest.raises(ValueError, match="log_prior"):
        free_energy(e, 1.0, log_prior=torch.full((3,), -math.inf))
    with pytest.raises(ValueError, match="log_prior"):
        free_energy(e, 1.0, log_prior=torch.zeros(4))
    with pytest.raises(ValueError, match="errors"):
        free_energy(torch.tensor([[0.1, float("nan")]]), 1.0)
    with pytest.raises(ValueError, match="error"):
        option_errors(torch.zeros(2, 3), torch.zeros(2, 4, 3), error="manhattan")
    with pytest.raises(ValueError, match="last dim"):
        option_errors(torch.zeros(2, 3), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="num_options"):
        AttentionPCN(4, 2, 0)
    layer = AttentionPCN(4, 2, 3)
    with pytest.raises(ValueError, match="x must have shape"):
        layer.infer(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="num_steps"):
        layer.infer(torch.zeros(5, 4), num_steps=-1)
    with pytest.raises(ValueError, match="labels"):
        train_attention_pcn(layer, torch.zeros(5, 4), torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(TypeError, match="labels"):
        train_attention_pcn(layer, torch.zeros(5, 4), torch.zeros(5))


# ----------------------------------------------------------------------------- the Pyro program
def _enumerated(model, *args, **kwargs):
    import pyro
    from pyro.infer import TraceEnum_ELBO

    def guide(*a, **k):
        pass

    pyro.clear_param_store()
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    marg = elbo.compute_marginals(model, guide, *args, **kwargs)
    return marg["option"].probs, elbo.loss(model, guide, *args, **kwargs)


def test_pyro_program_evidence_and_posterior_are_F_and_the_attention():
    g = _gen(13)
    # D = 1, Euclidean errors: the evidence of a Laplace mixture (torch.distributions)
    f = torch.randn(5, generator=g, dtype=D64)
    x = torch.randn(6, 1, generator=g, dtype=D64)
    preds = f[None, :, None].expand(6, 5, 1)
    probs, loss = _enumerated(option_mixture_model, x, preds, temperature=1.5)
    e = option_errors(x, preds)
    torch.testing.assert_close(probs, option_attention(e, 1.5))
    log_p = _mixture(Laplace(f, 1 / 1.5), 5).log_prob(x[:, 0]).sum()
    assert abs(loss + float(log_p)) < 1e-9
    # D = 3, squared errors, a prior over options: a Gaussian mixture
    k, d, t = 4, 3, 0.7
    f = torch.randn(6, k, d, generator=g, dtype=D64)
    x = torch.randn(6, d, generator=g, dtype=D64)
    lp = torch.randn(k, generator=g, dtype=D64)
    probs, loss = _enumerated(option_mixture_model, x, f, temperature=t, error="squared",
                              log_prior=lp)
    e = option_errors(x, f, error="squared")
    torch.testing.assert_close(probs, option_attention(e, t, log_prior=lp.log_softmax(-1)))
    mix = MixtureSameFamily(Categorical(logits=lp.expand(6, k)),
                            Independent(Normal(f, t**-0.5), 1))
    assert abs(loss + float(mix.log_prob(x).sum())) < 1e-9
    with pytest.raises(ValueError, match="finite temperature"):
        option_mixture_model(x, f, temperature=math.inf)
