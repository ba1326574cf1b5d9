"""The Bayesian (BAM-style) Bahdanau alignment: its limits, its KL and its posterior-sd summary."""

from __future__ import annotations

import math

import pytest
import torch

from bayesattn.experiments.dates import make_dates
from bayesattn.experiments.seq2seq import Seq2SeqConfig, build_model, validation_nll
from bayesattn.experiments.seq2seq_bayes import alignment_uncertainty
from bayesattn.nn.bam_additive import BayesianAdditiveAttention
from bayesattn.nn.layers import AdditiveAttention

TINY = Seq2SeqConfig(embed_dim=8, hidden=12, d_model=8, nhead=2, num_layers=1,
                     dim_feedforward=12, dropout=0.0, mc_samples=16)


def _layer_and_inputs(seed=0):
    torch.manual_seed(seed)
    layer = BayesianAdditiveAttention(5, 4, 6, prior_sigma=1.0, init_sigma=0.5)
    q, k, v = torch.randn(3, 2, 5), torch.randn(3, 7, 4), torch.randn(3, 7, 3)
    kpm = torch.zeros(3, 7, dtype=torch.bool)
    kpm[1, 4:] = True
    return layer, q, k, v, kpm


def test_collapsed_posterior_is_deterministic_bahdanau():
    layer, q, k, v, kpm = _layer_and_inputs()
    plain = AdditiveAttention(5, 4, 6)
    plain.load_state_dict(layer.state_dict(), strict=False)  # W_q, W_k, w_v
    ref_out, ref_w = plain(q, k, v, kpm)
    layer.sample = False
    out, w = layer(q, k, v, kpm)
    assert torch.allclose(w, ref_w, atol=1e-6) and torch.allclose(out, ref_out, atol=1e-6)
    layer.sample = True
    with torch.no_grad():
        layer.sigma_net.bias.fill_(math.log(1e-5))  # posterior sd -> 0
    draws = torch.stack([layer(q, k, v, kpm)[1] for _ in range(50)])
    assert draws.std(0).max() < 1e-4  # alignment sd -> 0 ...
    assert torch.allclose(draws.mean(0), ref_w, atol=1e-4)  # ... and its mean -> Bahdanau's


def test_draws_have_bahdanau_mean_direction_padding_and_kl():
    layer, q, k, v, kpm = _layer_and_inputs(1)
    torch.manual_seed(3)
    _, w = layer(q, k, v, kpm)
    assert torch.all(w[1, :, 4:] == 0) and torch.allclose(w.sum(-1), torch.ones(3, 2))
    assert torch.all(layer.local_kl[1] >= 0)
    # unnormalised weights S = exp(log S): E_q[S_ij] = softmax_j(score) (the lognormal mean)
    phi, theta, sigma = layer.posterior(q, k, kpm)
    n = 40000
    eps = torch.randn(n, *phi.shape, generator=torch.Generator().manual_seed(4))
    s = torch.exp(phi - 0.5 * sigma**2 + sigma * eps)
    mean, se = s.mean(0), s.std(0) / math.sqrt(n)
    real = torch.isfinite(phi)
    assert torch.all((mean - phi.exp())[real].abs() < 5 * se[real])
    # KL against torch's Normal KL on log S, summed over the real keys (independent of
    # bayesattn.nn.bayesian.lognormal_kl, which the layer uses)
    D = torch.distributions
    kl = D.kl_divergence(D.Normal(phi - 0.5 * sigma**2, sigma),
                         D.Normal(theta - 0.5, torch.tensor(1.0)))
    ref = torch.where(real, kl, torch.zeros_like(kl)).sum(-1)
    assert torch.allclose(layer.local_kl, ref, atol=1e-5)
    # posterior = prior: zero KL (uniform scores and prior logits, sd = prior sd)
    with torch.no_grad():
        for p in (layer.w_v.weight, layer.prior_net.weight, layer.prior_net.bias,
                  layer.sigma_net.weight):
            p.zero_()
        layer.sigma_net.bias.zero_()  # sigma = 1 = prior_sigma
    layer(q, k, v, kpm)
    assert layer.local_kl.abs().max() < 1e-6


def test_bayesian_seq2seq_collapses_to_bahdanau_and_summarises_sd():
    torch.manual_seed(0)
    (split,) = make_dates((12,), seed=1)
    bam = build_model("bahdanau-bam", TINY).eval()
    det = build_model("bahdanau", TINY).eval()
    det.load_state_dict(bam.state_dict(), strict=False)
    src, pm = split.source, split.source_padding_mask
    tokens, w = det.greedy(src, pm, 10)
    with torch.no_grad():
        bam.additive.sigma_net.bias.fill_(math.log(1e-6))
    btok, mean, sd, probs = bam.alignment_posterior(src, pm, 10)
    assert torch.equal(btok, tokens) and torch.allclose(mean, w, atol=1e-4)
    assert sd.max() < 1e-4 and torch.allclose(probs.sum(-1), torch.ones(12, 10), atol=1e-5)
    with torch.no_grad():
        bam.additive.sigma_net.bias.fill_(math.log(1.0))
    torch.manual_seed(1)
    _, mean, sd, _ = bam.alignment_posterior(src, pm, 10)
    assert sd.min() >= 0 and sd.max() > 1e-2 and torch.all(sd.masked_select(pm[:, None]) == 0)
    torch.manual_seed(2)
    summary = alignment_uncertainty(bam, split, num_samples=8)
    assert summary["characters"] == 120 and 0 <= summary["char_errors"] <= 120
    assert 0 < summary["mean_sd_all"] <= summary["mean_sd_attended"] + 1  # finite, positive
    for key in ("auroc_sd", "auroc_confidence"):
        assert math.isnan(summary[key]) or 0 <= summary[key] <= 1
    # the teacher-forced Monte-Carlo NLL is a proper per-character NLL
    torch.manual_seed(3)
    assert 0 < validation_nll(bam, split) < 10
    bam.kl_weight = 2.0
    bam.train()
    bam(src, pm, split.target)
    assert bam.regularizer(120).item() == pytest.approx(2.0 * bam.attention_kl.item() / 120)
    with pytest.raises(ValueError, match="kl_weight"):
        type(bam)(40, 14, kl_weight=-1.0)
