"""TVA at study scale: per-condition parameters, the hierarchical model, the study design."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from bayesattn.inference import to_inference_data
from bayesattn.models.base import BayesianModel
from bayesattn.models.neuro import HierarchicalTVA as NeuroHierarchicalTVA
from bayesattn.models.neuro.tva import (
    TVA,
    HierarchicalTVA,
    k_probit_probabilities,
    partial_report_design,
    simulate_partial_report,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: one thread is faster


def _draws(model, data, num=3):
    draws = {}
    for _ in range(num):
        tr = poutine.trace(model.model).get_trace(**data)
        for name in model.latent_names():
            draws.setdefault(name, []).append(tr.nodes[name]["value"])
    return {k: torch.stack(v) for k, v in draws.items()}


def _study(subjects=2, conditions=2, seed=0, cells=2):
    """Partial-report trials of ``subjects`` x ``conditions`` (issue 12 design, small)."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for s in range(subjects):
        for c in range(conditions):
            e, t, d = partial_report_design(trials_per_cell=cells, generator=g)
            parts.append((e, t, d, torch.full((len(e),), s), torch.full((len(e),), c)))
    keys = ("exposure", "targets", "distractors", "subject", "condition")
    return {k: torch.cat([p[i] for p in parts]) for i, k in enumerate(keys)}


# ----------------------------------------------------------------------------- design
def test_partial_report_design_is_the_issue_design():
    g = torch.Generator().manual_seed(0)
    exposure, targets, distractors = partial_report_design(generator=g)
    assert exposure.shape == (117,) and targets.shape == distractors.shape == (117, 6)
    assert not (targets & distractors).any() and (targets | distractors).all()
    counts = distractors.sum(-1)
    for e in (16.6, 33.3, 50.0, 100.0, 200.0):
        assert int((exposure == e).sum()) == 13
    assert int((exposure == 150.0).sum()) == 13 * 4
    assert sorted(counts[counts > 0].tolist()) == [2] * 13 + [3] * 13 + [4] * 13
    assert (exposure[counts > 0] == 150.0).all()
    with pytest.raises(ValueError, match="trials_per_cell"):
        partial_report_design(trials_per_cell=0)
    with pytest.raises(ValueError, match="distractor_counts"):
        partial_report_design(distractor_counts=(7,))


# ----------------------------------------------------------------------------- conditions
BY = ("C", "weights", "K", "t0", "alpha")


def test_condition_sites_gain_a_condition_axis():
    pyro.set_rng_seed(0)
    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(5.0), conditions=3,
                by_condition=BY)
    data = _study(1, 3)
    data.pop("subject")
    tr = poutine.trace(model.model).get_trace(**data)
    shapes = {k: tuple(tr.nodes[k]["value"].shape) for k in model.latent_names()}
    assert shapes == {"C": (3,), "t0": (3,), "t0_sd": (3,), "mK": (3,), "sK": (3,),
                      "weights": (3, 6), "alpha": (3,)}
    assert tr.nodes["attention_weights"]["value"].shape == (3, 6)
    assert tr.nodes["K_mean"]["value"].shape == (3,)
    shared = TVA(6, K="free", conditions=2, by_condition=("C",))
    tr = poutine.trace(shared.model).get_trace(
        exposure=torch.full((4,), 50.0, dtype=F64), condition=torch.tensor([0, 1, 1, 0])
    )
    assert tr.nodes["C"]["value"].shape == (2,) and tr.nodes["K_probs"]["value"].shape == (7,)


def test_per_condition_likelihood_is_the_single_condition_model_on_each_condition():
    """Trials of condition c under the 2-condition model have the log-likelihood of the
    one-condition model with condition c's parameters (an independent evaluation)."""
    pyro.set_rng_seed(1)
    kw = dict(paradigm="partial", K="probit", t0_sd=dist.HalfNormal(5.0))
    model = TVA(6, conditions=2, by_condition=BY, **kw)
    data = _study(1, 2, seed=1)
    data.pop("subject")
    data["reported"] = model.model(**data)
    draws = _draws(model, data)
    fast = model.log_likelihood(draws, data)
    single = TVA(6, **kw)
    for c in range(2):
        rows = data["condition"] == c
        sub = {k: v[rows] for k, v in data.items() if k != "condition"}
        one = {k: v[:, c] if k != "weights" else v[:, c, :] for k, v in draws.items()}
        torch.testing.assert_close(fast[:, rows], single.log_likelihood(one, sub))
    # and the Pyro model's own observation density agrees at the same draws
    torch.testing.assert_close(fast, BayesianModel.log_likelihood(model, draws, data))


def test_condition_argument_errors():
    model = TVA(6, conditions=2, by_condition=("C",))
    exposure = torch.full((3,), 50.0, dtype=F64)
    with pytest.raises(ValueError, match="condition"):
        model.model(exposure=exposure)
    with pytest.raises(ValueError, match="condition must lie in 0..1"):
        model.model(exposure=exposure, condition=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="condition must have shape"):
        model.model(exposure=exposure, condition=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="condition"):
        model.model(exposure=exposure, condition=torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="unknown parameter 'sigma'"):
        TVA(6, conditions=2, by_condition=("sigma",))
    with pytest.raises(ValueError, match="fixed"):
        TVA(6, C=40.0, conditions=2, by_condition=("C",))
    with pytest.raises(ValueError, match="alpha"):
        TVA(6, conditions=2, by_condition=("alpha",))
    with pytest.raises(ValueError, match="conditions"):
        TVA(6, conditions=0)
    with pytest.raises(ValueError, match="sequence"):
        TVA(6, conditions=2, by_condition="C")


def test_inference_data_names_the_condition_dim():
    pyro.set_rng_seed(2)
    model = TVA(6, K="probit", t0_sd=dist.HalfNormal(5.0), conditions=2,
                by_condition=("C", "weights"))
    data = {"exposure": torch.tensor([20.0, 50.0, 100.0, 150.0], dtype=F64),
            "condition": torch.tensor([0, 1, 0, 1])}
    data["reported"] = model.model(**data)
    draws = {k: v[None] for k, v in _draws(model, data, 2).items()}
    idata = to_inference_data(model, data, draws, {}, num_prior_draws=0)
    assert idata.posterior["C"].dims == ("chain", "draw", "condition")
    assert idata.posterior["weights"].dims[:3] == ("chain", "draw", "condition")
    assert idata.posterior["attention_weights"].dims[:3] == ("chain", "draw", "condition")
    assert idata.posterior["mK"].dims == ("chain", "draw")
    assert idata.log_likelihood["reported"].shape == (1, 2, 4)


# ----------------------------------------------------------------------------- hierarchical
def _hier(**kw):
    base = dict(paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0), conditions=2,
                by_condition=("C", "weights"))
    return HierarchicalTVA(3, 6, **{**base, **kw})


def test_hierarchical_subject_parameters_are_the_non_centred_transform():
    pyro.set_rng_seed(3)
    model = _hier()
    assert NeuroHierarchicalTVA is HierarchicalTVA
    data = _study(3, 2, seed=3, cells=1)
    tr = poutine.trace(model.model).get_trace(**data)
    v = {k: n["value"] for k, n in tr.nodes.items() if n["type"] == "sample"}
    # C (S, conditions) = exp(mu + [0, effect] + sigma z)
    mean = torch.stack([v["C_mu"], v["C_mu"] + v["C_effect"][0]])
    torch.testing.assert_close(v["C"], torch.exp(mean + v["C_sigma"] * v["C_z"]))
    # weights (S, conditions, 6): softmax of the 5 logits and a reference 0
    logits = (v["weights_mu"] + torch.cat([torch.zeros(1, 5, dtype=F64), v["weights_effect"]])
              + v["weights_sigma"] * v["weights_z"])
    w = torch.exp(torch.cat([logits, torch.zeros(3, 2, 1, dtype=F64)], -1))
    torch.testing.assert_close(v["weights"], w / w.sum(-1, keepdim=True))
    # shared across conditions: one value per subject
    torch.testing.assert_close(v["mK"], v["mK_mu"] + v["mK_sigma"] * v["mK_z"])
    torch.testing.assert_close(v["t0_sd"], torch.exp(v["t0_sd_mu"] + v["t0_sd_sigma"]
                                                     * v["t0_sd_z"]))
    assert v["alpha"].shape == (3,) and v["attention_weights"].shape == (3, 2, 6)
    assert v["K_mean"].shape == (3,)


def test_hierarchical_likelihood_is_the_tva_likelihood_of_each_subject():
    """Pointwise log-likelihood of the hierarchical model = per-subject TVA (2 conditions) at
    the subject's derived parameters; and = the Pyro model's own density (replay)."""
    pyro.set_rng_seed(4)
    model = _hier()
    data = _study(3, 2, seed=4, cells=1)
    data["reported"] = model.model(**data)
    draws = _draws(model, data, 2)
    fast = model.log_likelihood(draws, data)
    assert fast.shape == (2, data["exposure"].shape[0]) and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, BayesianModel.log_likelihood(model, draws, data))
    single = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0), conditions=2,
                 by_condition=("C", "weights"))
    derived = []
    for d in range(2):
        one = {k: v[d] for k, v in draws.items()}
        tr = poutine.trace(poutine.condition(model.model, data=one)).get_trace(**data)
        derived.append({k: tr.nodes[k]["value"] for k in single.latent_names()})
    for s in range(3):
        rows = data["subject"] == s
        sub = {k: v[rows] for k, v in data.items() if k != "subject"}
        theta = {k: torch.stack([p[k][s] for p in derived]) for k in single.latent_names()}
        torch.testing.assert_close(fast[:, rows], single.log_likelihood(theta, sub))


def test_hierarchical_prior_density_and_prior_overrides():
    pyro.set_rng_seed(5)
    model = _hier(priors={"C_mu": dist.Normal(math.log(60.0), 0.1),
                          "weights_sigma": dist.HalfNormal(torch.full((5,), 0.2, dtype=F64))})
    data = _study(3, 2, seed=5, cells=1)
    draws = _draws(model, data, 60)
    assert abs(float(draws["C_mu"].mean()) - math.log(60.0)) < 0.065  # 5 sd of the mean
    expected = []
    for d in range(3):
        one = {k: v[d] for k, v in draws.items()}
        tr = poutine.trace(poutine.condition(model.model, data=one)).get_trace(**data)
        expected.append(sum(tr.nodes[k]["fn"].log_prob(tr.nodes[k]["value"]).sum()
                            for k in model.latent_names()))
    got = model.prior_log_density({k: v[:3] for k, v in draws.items()})
    torch.testing.assert_close(got, torch.stack(expected))
    with pytest.raises(ValueError, match="unknown site 'C'"):
        _hier(priors={"C": dist.Normal(0.0, 1.0)})
    with pytest.raises(ValueError, match="shape"):
        _hier(priors={"weights_mu": dist.Normal(torch.zeros(3), 1.0)})


def test_hierarchical_argument_errors_and_fixed_parameters():
    with pytest.raises(ValueError, match="num_subjects"):
        HierarchicalTVA(0)
    with pytest.raises(ValueError, match="probit"):
        HierarchicalTVA(2, K=dist.Uniform(1.0, 6.0))
    model = HierarchicalTVA(2, 6, K=3, C=50.0, t0=10.0, weights=None)  # nothing latent
    assert model.latent_names() == []
    exposure = torch.full((4,), 80.0, dtype=F64)
    with pytest.raises(ValueError, match="subject"):
        model.model(exposure=exposure)
    with pytest.raises(ValueError, match="subject must lie in 0..1"):
        model.model(exposure=exposure, subject=torch.tensor([0, 1, 2, 0]))
    # with everything fixed, subjects are exchangeable and the likelihood is TVA's
    subject = torch.tensor([0, 1, 0, 1])
    rep = torch.tensor([[1, 1, 0, 0, 0, 0]] * 4, dtype=torch.bool)
    data = {"exposure": exposure, "reported": rep, "subject": subject}
    lp = model.log_likelihood({}, data)
    ref = TVA(6, K=3, C=50.0, t0=10.0, weights=None).log_likelihood(
        {}, {"exposure": exposure, "reported": rep}
    )
    torch.testing.assert_close(lp, ref)


@pytest.mark.slow
def test_hierarchical_model_fits_through_fit_with_pointwise_log_likelihood():
    """MAP of a 2-subject hierarchical whole-report model through ``fit``: InferenceData with
    subject-level sites named as in TVA, dims ``subject``, a log-likelihood per trial."""
    from bayesattn.inference import fit

    g = torch.Generator().manual_seed(6)
    exposure = torch.tensor([20.0, 50.0, 100.0, 200.0] * 10, dtype=F64)
    subject = torch.arange(40) % 2
    C = torch.tensor([30.0, 60.0], dtype=F64)[subject]
    reported = simulate_partial_report(
        exposure, targets=torch.ones(40, 4, dtype=torch.bool),
        distractors=torch.zeros(40, 4, dtype=torch.bool), C=C, weights=torch.ones(4, dtype=F64),
        alpha=1.0, t0=10.0, k_probs=k_probit_probabilities(3.0, 0.5, 4), generator=g)
    model = HierarchicalTVA(2, 4, weights=None, t0=10.0)
    data = {"exposure": exposure, "reported": reported, "subject": subject}
    idata = fit(model, data, method="map", num_steps=60, num_chains=1, num_samples=50,
                progress_bar=False)
    post = idata.posterior
    assert post["C"].dims[2:] == ("subject",) and post["C"].shape[2:] == (2,)
    assert set(post.data_vars) >= {"C", "mK", "sK", "C_mu", "C_sigma", "C_z", "K_mean"}
    assert idata.log_likelihood["reported"].shape[2] == 40
    c_hat = post["C"].values.reshape(-1, 2).mean(0)
    assert c_hat[1] > c_hat[0]  # the faster subject is recognised
    assert np.isfinite(idata.log_likelihood["reported"].values).all()
