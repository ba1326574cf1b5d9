"""Tests of the Bayesian attention layer, its SVI training helper and the uncertainty metrics."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from bayesattn.nn import MultiheadAttention
from bayesattn.nn.bayesian import (
    BayesianMultiheadAttention,
    BayesianTransformerClassifier,
    lognormal_kl,
    predict_bayesian,
    train_svi,
    weibull_gamma_kl,
)
from bayesattn.nn.metrics import (
    accuracy,
    expected_calibration_error,
    negative_log_likelihood,
    predictive_uncertainty,
    reliability_curve,
)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state (inputs drawn without a generator)."""
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- KL formulas
def test_lognormal_kl_against_monte_carlo():
    """KL(q || p) = E_q[log q(S) - log p(S)] on log-normal draws, within 5 standard errors."""
    g = torch.Generator().manual_seed(0)
    D = torch.distributions
    mu_q, mu_p = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), torch.tensor(
        [0.0, 0.5, 2.0], dtype=torch.float64)
    for s_q, s_p in ((1.0, 1.0), (0.3, 1.2), (2.0, 0.5)):
        z = torch.randn(200_000, 3, generator=g, dtype=torch.float64)
        draws = torch.exp(mu_q + s_q * z)
        q, p = D.LogNormal(mu_q, s_q), D.LogNormal(mu_p, s_p)
        ratio = q.log_prob(draws) - p.log_prob(draws)
        mc, se = ratio.mean(0), ratio.std(0) / math.sqrt(z.shape[0])
        exact = lognormal_kl(mu_q, s_q, mu_p, s_p)
        assert ((exact - mc).abs() <= 5 * se + 1e-12).all()


@pytest.mark.parametrize("k,lam,alpha,beta", [(2.0, 0.7, 1.0, 1.5), (10.0, 0.2, 0.5, 4.0),
                                              (1.0, 1.0, 3.0, 2.0)])
def test_weibull_gamma_kl_against_monte_carlo(k, lam, alpha, beta):
    torch.manual_seed(0)
    q = torch.distributions.Weibull(torch.tensor(lam, dtype=torch.float64),
                                    torch.tensor(k, dtype=torch.float64))
    p = torch.distributions.Gamma(torch.tensor(alpha, dtype=torch.float64),
                                  torch.tensor(beta, dtype=torch.float64))
    s = q.sample((400_000,))
    ratio = q.log_prob(s) - p.log_prob(s)
    mc, se = ratio.mean(), ratio.std() / math.sqrt(s.numel())
    exact = weibull_gamma_kl(k, torch.tensor(math.log(lam), dtype=torch.float64), alpha,
                             torch.tensor(math.log(beta), dtype=torch.float64))
    assert abs(float(exact - mc)) < 4 * float(se) + 1e-6


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_unnormalised_weights_have_mean_exp_phi(family):
    """E_q[S_ij] = exp(phi_ij): the stochastic weights are centred on the softmax weights."""
    torch.manual_seed(1)
    layer = BayesianMultiheadAttention(4, 1, attention_distribution=family, weibull_shape=3.0,
                                       posterior_sigma=0.7)
    phi = torch.log_softmax(torch.randn(1, 1, 1, 5), -1).expand(200_000, 1, 1, 5)
    log_s, kl = layer._sample_and_kl(phi, phi)
    s = log_s.exp().double()
    se = s.std(0) / math.sqrt(s.shape[0])
    assert ((s.mean(0) - phi[0].exp()).abs() <= 5 * se).all()  # Monte-Carlo error bound
    assert (kl >= -1e-6).all()


# ----------------------------------------------------------------------------- the layer
def _conditioned(layer, E, H, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = {
        "in_proj_weight": torch.randn(3 * E, E, generator=g) / math.sqrt(E),
        "out_proj_weight": torch.randn(E, E, generator=g) / math.sqrt(E),
        "log_temperature": torch.zeros(H),
    }
    return poutine.condition(layer, data=values), values


def test_mean_weights_equal_softmax_attention():
    """With the weights at their mean and temperature 1 the layer is softmax attention."""
    torch.manual_seed(2)
    E, H = 8, 2
    layer = BayesianMultiheadAttention(E, H)
    layer.stochastic = False
    with torch.no_grad():
        layer.in_proj_bias.normal_()
        layer.out_proj_bias.normal_()
    conditioned, values = _conditioned(layer, E, H)
    ref = MultiheadAttention(E, H, batch_first=True)
    ref.load_state_dict({
        "in_proj_weight": values["in_proj_weight"], "in_proj_bias": layer.in_proj_bias.detach(),
        "out_proj.weight": values["out_proj_weight"],
        "out_proj.bias": layer.out_proj_bias.detach(),
    })
    x = torch.randn(3, 5, E)
    kpm = torch.zeros(3, 5, dtype=torch.bool)
    kpm[1, 3:] = True
    out, w = conditioned(x, x, x, key_padding_mask=kpm, need_weights=True)
    out_ref, w_ref = ref(x, x, x, key_padding_mask=kpm)
    assert torch.allclose(out, out_ref, atol=1e-5) and torch.allclose(w, w_ref, atol=1e-6)


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_sampled_weights_are_normalised_and_ignore_padding(family):
    torch.manual_seed(3)
    E, H = 8, 2
    layer = BayesianMultiheadAttention(E, H, attention_distribution=family)
    conditioned, _ = _conditioned(layer, E, H)
    x = torch.randn(2, 6, E)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[0, 4:] = True
    out, w = conditioned(x, x, x, key_padding_mask=kpm, need_weights=True,
                         average_attn_weights=False)
    assert w.shape == (2, H, 6, 6)
    assert torch.allclose(w.sum(-1), torch.ones(2, H, 6), atol=1e-5)
    assert w[0, :, :, 4:].abs().max() == 0
    assert layer.kl.shape == (2, 6) and (layer.kl >= -1e-5).all()
    # the draws differ (stochastic attention) but padded content never matters
    torch.manual_seed(4)
    out_a, _ = conditioned(x, x, x, key_padding_mask=kpm)
    junk = x.clone()
    junk[0, 4:] = 50.0
    torch.manual_seed(4)
    out_b, _ = conditioned(junk, junk, junk, key_padding_mask=kpm)
    assert torch.allclose(out_a[0, :4], out_b[0, :4], atol=1e-5)
    assert not torch.allclose(out, out_a)
    _, wc = conditioned(x, x, x, is_causal=True, need_weights=True, average_attn_weights=False)
    assert wc.triu(1).abs().max() == 0 and layer.kl.shape == (2, 6)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="attention_distribution"):
        BayesianMultiheadAttention(8, 2, attention_distribution="gamma")
    with pytest.raises(ValueError, match="posterior_sigma"):
        BayesianMultiheadAttention(8, 2, posterior_sigma=0.0)
    with pytest.raises(ValueError, match="num_heads"):
        BayesianMultiheadAttention(8, 3)
    with pytest.raises(ValueError, match="kl_weight"):
        BayesianTransformerClassifier(3, 2, kl_weight=0.0)


# ----------------------------------------------------------------------------- training
def _toy(n=40, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, 3, generator=g)
    lengths = torch.randint(2, T + 1, (n,), generator=g)
    pm = torch.arange(T)[None, :] >= lengths[:, None]
    x = x.masked_fill(pm.unsqueeze(-1), 0.0)
    y = ((x[..., 0].sum(1) / lengths) > 0).long()
    return x, pm, y


@pytest.mark.slow
def test_svi_training_reduces_the_loss_and_predicts():
    x, pm, y = _toy()
    model = BayesianTransformerClassifier(3, 2, d_model=8, nhead=2, num_layers=1,
                                          dim_feedforward=8, dropout=0.0, bayesian_head=True)
    guide, losses = train_svi(model, x, pm, y, epochs=25, batch_size=20, lr=1e-2, seed=0,
                              progress=False)
    assert sum(losses[-5:]) < sum(losses[:5])  # the negative ELBO went down
    pred = predict_bayesian(model, guide, x, pm, num_samples=8, record_attention=True)
    assert negative_log_likelihood(pred["probs"], y) < 0.5  # chance: log 2 = 0.69
    assert pred["probs"].shape == (40, 2) and pred["prob_samples"].shape == (8, 40, 2)
    assert torch.allclose(pred["probs"].sum(-1), torch.ones(40), atol=1e-5)
    mi, h = pred["mutual_information"], pred["predictive_entropy"]
    assert (mi >= 0).all() and (mi <= h + 1e-6).all() and (h <= math.log(2) + 1e-6).all()
    assert pred["attention"][0].shape == (8, 40, 2, 6, 6)
    assert accuracy(pred["probs"], y) > 0.75
    # the guide's parameters are namespaced by the model's unique name
    other = BayesianTransformerClassifier(3, 2, d_model=8, nhead=2, num_layers=1)
    assert model._pyro_name != other._pyro_name
    assert any(name.startswith(f"{model._pyro_name}.") for name in pyro.get_param_store())


# ----------------------------------------------------------------------------- metrics
def test_predictive_uncertainty_decomposition():
    same = torch.tensor([[0.7, 0.2, 0.1]]).expand(5, 1, 3)
    out = predictive_uncertainty(same)
    h = -(same[0] * same[0].log()).sum(-1)
    assert torch.allclose(out["predictive_entropy"], h) and out["mutual_information"].abs() < 1e-6
    disagree = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    out = predictive_uncertainty(disagree)
    assert torch.allclose(out["mean"], torch.tensor([[0.5, 0.5]]))
    assert math.isclose(float(out["mutual_information"]), math.log(2), rel_tol=1e-6)
    assert float(out["expected_entropy"]) < 1e-12
    with pytest.raises(ValueError, match="S, N, C"):
        predictive_uncertainty(torch.ones(2, 2))


def test_calibration_metrics_against_a_loop():
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(3 * torch.randn(500, 4, generator=g), -1)
    y = torch.randint(0, 4, (500,), generator=g)
    conf, pred = probs.max(-1)
    ece = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            gap = (pred[inside] == y[inside]).double().mean() - conf[inside].double().mean()
            ece += inside.double().mean() * gap.abs()
    assert math.isclose(expected_calibration_error(probs, y), float(ece), rel_tol=1e-9)
    curve = reliability_curve(probs, y, n_bins=15)
    assert int(curve.count.sum()) == 500
    nll = -probs[torch.arange(500), y].double().log().mean()
    assert math.isclose(negative_log_likelihood(probs, y), float(nll), rel_tol=1e-9)
    from torchmetrics.functional.classification import multiclass_calibration_error

    ref = multiclass_calibration_error(probs, y, num_classes=4, n_bins=15, norm="l1")
    assert math.isclose(expected_calibration_error(probs, y), float(ref), rel_tol=1e-5)
    # a perfectly calibrated coin: confidence 0.5, half right -> ECE 0
    coin = torch.full((4, 2), 0.5)
    assert expected_calibration_error(coin, torch.tensor([0, 1, 0, 1])) == 0.0
    with pytest.raises(ValueError, match="class indices"):
        accuracy(probs, y + 4)
