"""Tests of the stochastic attention layers (GP attention, temperature posterior), the
last-layer Laplace approximation, temperature scaling and the detection / selective metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bayesattn import functional as Fn
from bayesattn.nn import (
    GPMultiheadAttention,
    MultiheadAttention,
    TemperaturePosteriorAttention,
    TransformerClassifier,
    sample_probs,
    set_sampling,
    swap_attention,
    total_kl,
)
from bayesattn.nn.calibration import fit_temperature
from bayesattn.nn.laplace import LastLayerLaplace
from bayesattn.nn.metrics import (
    area_under_risk_coverage,
    brier_score,
    detection_auroc,
    fpr_at_tpr,
    risk_coverage_curve,
)


# ----------------------------------------------------------------------------- gp key_mask
def test_gp_attention_key_mask_equals_regression_on_kept_keys():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    k = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    v = torch.randn(3, 7, 2, generator=g, dtype=torch.float64)
    lengths = [7, 4, 2]
    mask = (torch.arange(7) < torch.tensor(lengths).unsqueeze(-1)).unsqueeze(-2)  # (3, 1, 7)
    mean, var = Fn.gp_attention(q, k, v, lengthscale=1.3, ridge=0.05, return_variance=True,
                                key_mask=mask)
    for n, L in enumerate(lengths):
        m1, v1 = Fn.gp_attention(q[n], k[n, :L], v[n, :L], lengthscale=1.3, ridge=0.05,
                                 return_variance=True)
        torch.testing.assert_close(mean[n], m1, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(var[n], v1, atol=1e-10, rtol=1e-10)


def test_gp_attention_key_mask_errors():
    q = k = v = torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match="key_mask"):
        Fn.gp_attention(q, k, v, key_mask=torch.ones(2, 1, 3))
    with pytest.raises(ValueError, match="key_mask"):
        Fn.gp_attention(q, k, v, key_mask=torch.ones(2, 3, 3, dtype=torch.bool))


# ----------------------------------------------------------------------------- GP layer
def _gp_layer(amplitude=1.0, **kw):
    torch.manual_seed(1)
    return GPMultiheadAttention(8, 2, batch_first=True, amplitude=amplitude, **kw).double()


def test_gp_layer_mean_ignores_padding():
    """The mean output of a padded sequence equals that of the unpadded sequence alone."""
    layer = _gp_layer()
    layer.sample = False
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    out, _ = layer(x, x, x, key_padding_mask=pad)
    alone, _ = layer(x[1:, :4], x[1:, :4], x[1:, :4])
    torch.testing.assert_close(out[1, :4], alone[0], atol=1e-10, rtol=1e-10)
    x2 = x.clone()
    x2[1, 4:] = 100.0  # padded frames must not matter
    out2, _ = layer(x2, x2, x2, key_padding_mask=pad)
    torch.testing.assert_close(out2[1, :4], out[1, :4], atol=1e-10, rtol=1e-10)


def test_gp_layer_weights_reproduce_the_mean():
    layer = _gp_layer()
    layer.sample = False
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    q, k, v = (layer._split_heads(t) for t in layer.in_projection(x, x, x))
    out, w = layer.attend(q, k, v, None, None, None, True)
    torch.testing.assert_close(w @ v, out, atol=1e-10, rtol=1e-10)


def test_gp_layer_sample_variance_is_amplitude_squared_times_gp_variance():
    """Per head and feature the draws have mean m and variance a^2 c (5 standard errors)."""
    a = 0.7
    layer = _gp_layer(amplitude=a)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 8, generator=g, dtype=torch.float64)
    q, k, v = (layer._split_heads(t) for t in layer.in_projection(x, x, x))
    mean, var = Fn.gp_attention(q, k, v, lengthscale=layer.lengthscale.detach(),
                                ridge=layer.log_ridge.exp().detach(), return_variance=True)
    n = 4000
    with torch.no_grad():  # n independent draws in one batch
        draws = layer.attend(*(t.expand(n, -1, -1, -1) for t in (q, k, v)), None, None, None,
                             False)[0]
    expected = (a**2 * var).unsqueeze(-1).expand_as(mean)
    se_mean = expected.sqrt() / math.sqrt(n)
    assert bool(((draws.mean(0) - mean).abs() <= 5 * se_mean + 1e-12).all())
    se_var = expected * math.sqrt(2 / (n - 1))
    assert bool(((draws.var(0) - expected).abs() <= 5 * se_var + 1e-12).all())


def test_gp_layer_rejects_attn_mask_and_bad_amplitude():
    layer = _gp_layer()
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="key padding only"):
        layer(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="amplitude"):
        GPMultiheadAttention(8, 2, amplitude=-1.0)


# ----------------------------------------------------------------------------- temperature
def test_temperature_layer_mean_is_softmax_attention_at_the_posterior_mean():
    torch.manual_seed(4)
    layer = TemperaturePosteriorAttention(8, 2, batch_first=True).double()
    ref = MultiheadAttention(8, 2, batch_first=True).double()
    ref.load_state_dict({k: v for k, v in layer.state_dict().items()
                         if not k.startswith("temperature_")})
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    layer.sample = False
    torch.testing.assert_close(layer(x, x, x)[0], ref(x, x, x)[0], atol=1e-10, rtol=1e-10)
    with torch.no_grad():
        layer.temperature_loc.fill_(math.log(2.0))
    q, k, v = (layer._split_heads(t) for t in layer.in_projection(x, x, x))
    expect = F.scaled_dot_product_attention(q, k, v, scale=1 / (2.0 * math.sqrt(4)))
    torch.testing.assert_close(layer.attend(q, k, v, None, None, None, False)[0], expect,
                               atol=1e-10, rtol=1e-10)


def test_temperature_layer_kl_closed_form():
    layer = TemperaturePosteriorAttention(8, 2, prior_scale=0.5)
    with torch.no_grad():
        layer.temperature_loc.copy_(torch.tensor([0.3, -0.2]))
        layer.temperature_log_scale.copy_(torch.log(torch.tensor([0.1, 0.4])))
    mu, s, p = torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.4]), 0.5
    expect = (torch.log(p / s) + (s**2 + mu**2) / (2 * p**2) - 0.5).sum()
    torch.testing.assert_close(layer.kl(), expect)
    model = swap_attention(TransformerClassifier(3, 2, d_model=8, nhead=2, num_layers=2),
                           lambda: TemperaturePosteriorAttention(8, 2, batch_first=True))
    assert float(total_kl(model).detach()) > 0


def test_sample_probs_draws_vary_only_when_sampling():
    torch.manual_seed(5)
    model = swap_attention(TransformerClassifier(3, 4, d_model=8, nhead=2, num_layers=1,
                                                 dropout=0.0),
                           lambda: TemperaturePosteriorAttention(8, 2, batch_first=True,
                                                                 init_scale=0.5))
    x = torch.randn(6, 5, 3)
    draws = sample_probs(model, x, None, num_samples=3)
    assert draws.shape == (3, 6, 4) and float(draws.std(0).max()) > 1e-4
    set_sampling(model, False)
    draws = sample_probs(model, x, None, num_samples=3)
    assert float(draws.std(0).max()) == 0.0
    with pytest.raises(ValueError, match="num_samples"):
        sample_probs(model, x, None, num_samples=0)


# ----------------------------------------------------------------------------- Laplace
def _tiny_classifier():
    torch.manual_seed(6)
    model = TransformerClassifier(3, 3, d_model=8, nhead=2, num_layers=1, dropout=0.0).double()
    x = torch.randn(20, 4, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return model, x, y


def test_laplace_ggn_equals_the_hessian_of_the_last_layer_loss():
    """The logits are linear in the head, so the GGN is the exact Hessian of the summed CE."""
    model, x, y = _tiny_classifier()
    la = LastLayerLaplace(model).fit(x, None, y)
    phi, _ = la._features(x, None)

    def loss(theta):
        W = theta.view(3, 9)
        return F.cross_entropy(phi @ W.T, y, reduction="sum")

    theta = torch.cat([model.head.weight, model.head.bias.unsqueeze(-1)], -1).detach().reshape(-1)
    hess = torch.autograd.functional.hessian(loss, theta)
    torch.testing.assert_close(la.ggn, hess, atol=1e-10, rtol=1e-8)


def test_laplace_logit_covariance_and_limits():
    model, x, y = _tiny_classifier()
    la = LastLayerLaplace(model).fit(x, None, y)
    phi, f_map = la._features(x[:2], None)
    tau = 3.0
    sigma = torch.linalg.inv(la.ggn + tau * torch.eye(27, dtype=torch.float64))
    _, cov = la._logit_moments(x[:2], None, tau)
    for n in range(2):
        J = torch.kron(torch.eye(3, dtype=torch.float64), phi[n].unsqueeze(0))  # (3, 27)
        torch.testing.assert_close(cov[n], J @ sigma @ J.T, atol=1e-10, rtol=1e-8)
    sharp = la.predict(x[:2], None, num_samples=5, prior_precision=1e12)
    torch.testing.assert_close(sharp, f_map.softmax(-1).float().expand(5, 2, 3), atol=1e-4,
                               rtol=0)
    chosen = la.optimize_prior_precision(x, None, y, grid=(0.1, 10.0), num_samples=4)
    assert chosen in (0.1, 10.0) and la.prior_precision == chosen
    with pytest.raises(RuntimeError, match="fit"):
        LastLayerLaplace(model).predict(x, None)


# ----------------------------------------------------------------------------- calibration
def test_fit_temperature_recovers_the_generating_temperature():
    g = torch.Generator().manual_seed(7)
    logits = 3 * torch.randn(2000, 5, generator=g)
    y = torch.multinomial((logits / 2.0).softmax(-1), 1, generator=g).squeeze(-1)
    assert abs(fit_temperature(logits, y) - 2.0) < 0.25
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))


# ----------------------------------------------------------------------------- metrics
def test_brier_auroc_fpr_against_sklearn_and_numpy():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(8)
    probs = torch.softmax(torch.randn(50, 4, generator=g), -1)
    y = torch.randint(0, 4, (50,), generator=g)
    onehot = np.eye(4)[y.numpy()]
    assert brier_score(probs, y) == pytest.approx(((probs.numpy() - onehot) ** 2).sum(1).mean())
    s_in = torch.randint(0, 5, (40,), generator=g).double()  # ties on purpose
    s_out = torch.randint(2, 8, (30,), generator=g).double()
    labels = np.r_[np.zeros(40), np.ones(30)]
    scores = np.r_[s_in.numpy(), s_out.numpy()]
    assert detection_auroc(s_in, s_out) == pytest.approx(
        sklearn_metrics.roc_auc_score(labels, scores))
    fpr, tpr, _ = sklearn_metrics.roc_curve(labels, scores)
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_aurc_against_a_loop():
    g = torch.Generator().manual_seed(9)
    probs = torch.softmax(2 * torch.randn(30, 3, generator=g), -1)
    y = torch.randint(0, 3, (30,), generator=g)
    conf = probs.max(-1).values.tolist()
    wrong = (probs.argmax(-1) != y).tolist()
    order = sorted(range(30), key=lambda i: -conf[i])
    risks = [sum(wrong[i] for i in order[:k]) / k for k in range(1, 31)]
    cov, risk = risk_coverage_curve(probs, y)
    np.testing.assert_allclose(risk.numpy(), risks)
    assert cov[-1] == 1.0
    assert area_under_risk_coverage(probs, y) == pytest.approx(np.mean(risks))
    with pytest.raises(ValueError, match="score_in"):
        detection_auroc(torch.tensor([]), torch.tensor([1.0]))
