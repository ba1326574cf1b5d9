"""Cueing observers, the normalization model of attention and precision weighting."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro import poutine

from bayesattn.models.base import BayesianModel
from bayesattn.models.neuro.cueing import (
    OBSERVERS,
    CueingObserver,
    bayesian_posterior,
    choice_probabilities,
    cue_prior,
    simulate_cueing_design,
    simulate_cueing_responses,
)
from bayesattn.models.neuro.normalization import (
    NormalizationPsychometric,
    attended_d_prime,
    biased_competition_response,
    naka_rushton,
    normalization_response,
    population_response,
    psychometric_2afc,
    simulate_psychometric,
)
from bayesattn.models.neuro.precision import (
    PrecisionWeighting,
    posterior_estimate,
    precision_weights,
    report_distribution_params,
    simulate_estimation,
)

F64 = torch.float64
PARAMS = dict(believed_validity=0.7, cue_weight=0.6, attend_cued=0.75, criterion=0.8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: one thread is faster


def _phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _draws_and_data(model, data, num=3):
    """Prior draws of ``model``'s latents, and data simulated from the model (seeded)."""
    pyro.set_rng_seed(0)
    data = {**data, model.obs_name: model.model(**data)}
    draws: dict = {}
    for _ in range(num):
        tr = poutine.trace(model.model).get_trace(**data)
        for n in model.latent_names():
            draws.setdefault(n, []).append(tr.nodes[n]["value"])
    return {k: torch.stack(v) for k, v in draws.items()}, data


# ----------------------------------------------------------------------------- cueing
@pytest.mark.parametrize(
    "observer,task,m",
    [(o, "localisation", 4) for o in OBSERVERS]
    + [(o, "yes_no", 2) for o in OBSERVERS]
    + [("weighted_linear", "yes_no", 3), ("switching", "yes_no", 3)],
)
def test_choice_probabilities_match_simulated_observers(observer, task, m):
    """Quadrature/closed forms against the decision rules applied to sampled responses."""
    g = torch.Generator().manual_seed(1)
    n = 40_000
    des = simulate_cueing_design(n, num_locations=m, validity=0.7, task=task, generator=g)
    d = torch.tensor(1.4, dtype=F64)
    kw = dict(d_prime=d, num_locations=m, **PARAMS)
    sim = simulate_cueing_responses(
        observer, task, cue=des["cue"], target=des["target"], generator=g, **kw
    )
    rel_t = torch.where(des["target"] >= 0, (des["target"] - des["cue"]) % m, -1)
    rel_r = (sim - des["cue"]) % m if task == "localisation" else sim
    # one row per target position relative to the cue (cue at 0): -1 absent, 0 valid, ...
    rows = torch.arange(-1 if task == "yes_no" else 0, m)
    p = choice_probabilities(observer, task, cue=torch.zeros_like(rows), target=rows, **kw)
    for k, r in enumerate(rows.tolist()):
        sel = rel_t == r
        if task == "localisation":
            emp = (rel_r[sel][:, None] == torch.arange(m)).to(F64).mean(0)
        else:
            emp = rel_r[sel].to(F64).mean()
        pred = p[k]
        se = torch.sqrt(pred * (1 - pred) / int(sel.sum())).clamp_min(1e-4)
        assert ((emp - pred).abs() / se).max().item() < 4.5


def test_localisation_probabilities_sum_to_one_and_two_location_closed_form():
    cue = torch.tensor([0, 1, 1])
    target = torch.tensor([0, 0, 1])
    d = torch.tensor([0.5, 1.5, 3.0], dtype=F64)
    p = choice_probabilities(
        "bayesian",
        "localisation",
        cue=cue,
        target=target,
        d_prime=d,
        num_locations=2,
        believed_validity=0.8,
    )
    torch.testing.assert_close(p.sum(-1), torch.ones(3, dtype=F64))
    # M = 2: choose the cued location iff x_c - x_u > -log(v/(1-v))/d' (Shimozaki et al. 2003)
    lo = math.log(0.8 / 0.2)
    valid = _phi((1.5 + lo / 1.5) / math.sqrt(2))  # trial 1 is invalid: target at 0, cue 1
    invalid_correct = _phi((1.5 - lo / 1.5) / math.sqrt(2))
    assert p[1, 0].item() == pytest.approx(invalid_correct, abs=1e-6)
    assert p[2, 1].item() == pytest.approx(_phi((3.0 + lo / 3.0) / math.sqrt(2)), abs=1e-6)
    assert valid > invalid_correct


def test_uninformative_cue_makes_bayesian_and_linear_observers_identical():
    """validity = cue weight = 1/M: both pick argmax x (the unbiased max rule)."""
    cue = torch.tensor([0, 2, 3, 1])
    target = torch.tensor([0, 1, 3, 3])
    d = torch.tensor(1.2, dtype=F64)
    kw = dict(cue=cue, target=target, d_prime=d, num_locations=4)
    a = choice_probabilities("bayesian", "localisation", believed_validity=0.25, **kw)
    b = choice_probabilities("weighted_linear", "localisation", cue_weight=0.25, **kw)
    torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


def test_bayesian_yes_no_matches_grid_integral():
    cue, target = torch.tensor([0, 0, 0]), torch.tensor([0, 1, -1])
    d, lam, v = 1.5, 0.8, 0.7
    p = choice_probabilities(
        "bayesian",
        "yes_no",
        cue=cue,
        target=target,
        d_prime=torch.tensor(d, dtype=F64),
        num_locations=2,
        believed_validity=v,
        criterion=lam,
    )
    x = torch.linspace(-7, 9, 1601, dtype=F64)
    dx = (x[1] - x[0]).item()
    x0, x1 = torch.meshgrid(x, x, indexing="ij")
    llr = torch.logaddexp(math.log(v) + d * x0 - d * d / 2, math.log(1 - v) + d * x1 - d * d / 2)
    yes = (llr > lam).to(F64)

    def dens(u):
        return torch.exp(-(u**2) / 2) / math.sqrt(2 * math.pi)

    for k, (m0, m1) in enumerate([(d, 0.0), (0.0, d), (0.0, 0.0)]):
        ref = (yes * dens(x0 - m0) * dens(x1 - m1)).sum().item() * dx * dx
        assert p[k].item() == pytest.approx(ref, abs=2e-3)


@settings(max_examples=20, deadline=None)
@given(
    x=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
    v=st.floats(0.05, 0.95),
    d=st.floats(0.1, 4.0),
)
def test_bayesian_posterior_is_bayes_rule(x, v, d):
    """softmax(log p + d' x) equals prior x Gaussian likelihood, normalised."""
    x = torch.tensor(x, dtype=F64)
    prior = cue_prior(3, v)
    post = bayesian_posterior(x, torch.log(prior), torch.tensor(d, dtype=F64))
    like = torch.stack(
        [torch.exp(-0.5 * ((x - d * (torch.arange(3) == j).to(F64)) ** 2).sum()) for j in range(3)]
    )
    ref = prior * like / (prior * like).sum()
    torch.testing.assert_close(post, ref)


def test_cueing_errors():
    cue, target = torch.tensor([0, 1]), torch.tensor([0, 1])
    d = torch.tensor(1.0, dtype=F64)
    with pytest.raises(ValueError, match="observer"):
        choice_probabilities(
            "ideal",
            "localisation",
            cue=cue,
            target=target,
            d_prime=d,
            num_locations=2,
            believed_validity=0.5,
        )
    with pytest.raises(ValueError, match="M = 2"):
        choice_probabilities(
            "bayesian",
            "yes_no",
            cue=cue,
            target=target,
            d_prime=d,
            num_locations=4,
            believed_validity=0.5,
            criterion=0.0,
        )
    with pytest.raises(ValueError, match="location indices"):
        choice_probabilities(
            "bayesian",
            "localisation",
            cue=cue,
            target=torch.tensor([0, 5]),
            d_prime=d,
            num_locations=2,
            believed_validity=0.5,
        )
    with pytest.raises(ValueError, match="location indices"):  # absent target in localisation
        choice_probabilities(
            "bayesian",
            "localisation",
            cue=cue,
            target=torch.tensor([0, -1]),
            d_prime=d,
            num_locations=2,
            believed_validity=0.5,
        )
    with pytest.raises(ValueError, match="validity"):
        cue_prior(4, 1.2)
    with pytest.raises(ValueError, match="needs cue_weight"):
        choice_probabilities(
            "weighted_linear", "localisation", cue=cue, target=target, d_prime=d, num_locations=2
        )
    with pytest.raises(ValueError, match="d_prime"):
        choice_probabilities(
            "switching",
            "localisation",
            cue=cue,
            target=target,
            d_prime=-d,
            num_locations=2,
            attend_cued=0.5,
            criterion=0.0,
        )
    with pytest.raises(TypeError, match="integer"):
        choice_probabilities(
            "switching",
            "localisation",
            cue=cue.float(),
            target=target,
            d_prime=d,
            num_locations=2,
            attend_cued=0.5,
            criterion=0.0,
        )
    with pytest.raises(ValueError, match="M = 2"):
        CueingObserver("bayesian", task="yes_no", num_locations=3)


@pytest.mark.parametrize("observer", OBSERVERS)
@pytest.mark.parametrize("task", ["localisation", "yes_no"])
def test_cueing_model_log_likelihood_and_attention_weights(observer, task):
    m = 2 if task == "yes_no" else 4
    model = CueingObserver(observer, task=task, num_locations=m, validity=0.75, num_levels=2)
    g = torch.Generator().manual_seed(3)
    des = simulate_cueing_design(
        30, num_locations=m, validity=0.75, num_levels=2, task=task, generator=g
    )
    draws, data = _draws_and_data(model, des)
    fast = model.log_likelihood(draws, data)
    slow = BayesianModel.log_likelihood(model, draws, data)
    assert fast.shape == (3, 30)
    torch.testing.assert_close(fast, slow)
    tr = poutine.trace(model.model).get_trace(**data)
    w = tr.nodes["attention_weights"]["value"]
    assert w.shape == (m,) and w.sum().item() == pytest.approx(1.0)
    key = {"bayesian": 0.75, "weighted_linear": "cue_weight", "switching": "attend_cued"}[observer]
    expected = key if isinstance(key, float) else tr.nodes[key]["value"].item()
    assert w[0].item() == pytest.approx(expected)


@pytest.mark.parametrize("observer", OBSERVERS)
@pytest.mark.parametrize("task", ["localisation", "yes_no"])
def test_cueing_vectorised_lp_deterministics_and_replicates_equal_pyros(observer, task):
    """The vectorised hooks against Pyro, draw by draw: ``lp`` (prior + summed
    log-likelihood) equals the conditioned program's ``log_prob_sum`` (1e-6 relative: the
    default Beta priors are float32, and the two sums round them differently), the
    deterministic ``attention_weights`` equal ``Predictive``'s, and replicated responses
    follow each draw's response probabilities (two draws x 1,500 replicates, 4.5 binomial
    standard errors on every trial)."""
    from pyro.infer import Predictive

    from bayesattn.inference.convert import to_inference_data

    m = 2 if task == "yes_no" else 4
    extra = {"believed_validity": dist.Beta(3.0, 2.0)} if observer == "bayesian" else {}
    model = CueingObserver(observer, task=task, num_locations=m, validity=0.75, num_levels=2,
                           **extra)
    g = torch.Generator().manual_seed(4)
    des = simulate_cueing_design(25, num_locations=m, validity=0.75, num_levels=2, task=task,
                                 generator=g)
    draws, data = _draws_and_data(model, des, num=6)
    idata = to_inference_data(model, data, {k: v.reshape(2, 3, *v.shape[1:])
                                            for k, v in draws.items()}, {}, num_prior_draws=0)
    for d in range(6):
        one = {k: v[d] for k, v in draws.items()}
        trace = poutine.trace(poutine.condition(model.model, data=one)).get_trace(**data)
        lp = float(idata.sample_stats["lp"].values.reshape(-1)[d])
        assert lp == pytest.approx(float(trace.log_prob_sum()), rel=1e-6)
    want = Predictive(model.model, posterior_samples=draws)(**{**data, "response": None})
    torch.testing.assert_close(model.deterministics(draws, data)["attention_weights"],
                               want["attention_weights"].reshape(6, m).to(F64))
    reps = 1500
    two = {k: v[:2] for k, v in draws.items()}
    rep = model.posterior_predictive({k: v.repeat_interleave(reps, 0) for k, v in two.items()},
                                     data, torch.Generator().manual_seed(5))
    assert rep.shape == (2 * reps, 25) and rep.dtype == want["response"].dtype
    p = model.log_likelihood(two, data).exp()  # P(observed response), (2, T)
    hits = (rep == data["response"]).reshape(2, reps, -1).double().mean(1)
    se = (p * (1 - p) / reps).sqrt()
    assert bool(((hits - p).abs() <= 4.5 * se + 1.0 / reps).all()), (hits - p).abs().max()


def test_cueing_prior_draws_follow_the_priors():
    """``prior_draws`` (the prior group, vectorised): moments of 20,000 draws within 5 Monte
    Carlo standard errors of the priors' (Beta(2, 2): mean 1/2, sd 0.2236; LogNormal(0.5,
    0.75) per level: mean exp(0.5 + 0.75^2 / 2)), and ``to_inference_data``'s prior
    predictive has the observed data's shape."""
    from bayesattn.inference.convert import to_inference_data

    model = CueingObserver("switching", num_locations=4, validity=0.75, num_levels=2)
    torch.manual_seed(6)
    draws = model.prior_draws(20_000, {})
    n = 20_000
    a = draws["attend_cued"].double()
    assert abs(float(a.mean()) - 0.5) < 5 * 0.2236 / n**0.5
    assert abs(float(a.std()) - 0.2236) < 5 * 0.2236 / (2 * n) ** 0.5 * 2
    d = draws["d_prime"]
    mean = math.exp(0.5 + 0.75**2 / 2)
    sd = mean * math.sqrt(math.exp(0.75**2) - 1)
    assert d.shape == (n, 2) and bool(((d.mean(0) - mean).abs() < 5 * sd / n**0.5).all())
    des = simulate_cueing_design(20, num_locations=4, validity=0.75, num_levels=2,
                                 generator=torch.Generator().manual_seed(7))
    post, data = _draws_and_data(model, des, num=4)
    idata = to_inference_data(model, data, {k: v[None] for k, v in post.items()}, {},
                              num_prior_draws=50)
    assert idata.prior_predictive["response"].shape == (1, 50, 20)
    assert idata.prior["attend_cued"].shape == (1, 50)


# ----------------------------------------------------------------------------- normalization
def test_global_pool_without_semisaturation_is_softmax():
    g = torch.Generator().manual_seed(0)
    E = torch.rand(5, 7, generator=g, dtype=F64) + 0.1
    A = torch.rand(5, 7, generator=g, dtype=F64) + 0.5
    R = normalization_response(E, A, sigma=0.0)
    torch.testing.assert_close(R, torch.softmax(torch.log(A) + torch.log(E), -1))
    # an explicit all-ones pool is the same global pool
    torch.testing.assert_close(
        normalization_response(E, A, sigma=0.0, pool=torch.ones(7, 7, dtype=F64)), R
    )


def _crf(stimulus_size, attention_width):
    contrasts = torch.logspace(-4, 0, 17, dtype=F64)
    x = torch.linspace(-40, 40, 161, dtype=F64)
    centre = 80  # x = 0
    out = {}
    for gain in (1.0, 3.0):
        r = population_response(
            x,
            contrast=contrasts[:, None],
            stimulus_center=torch.tensor([0.0], dtype=F64),
            stimulus_size=torch.tensor([stimulus_size], dtype=F64),
            attention_center=0.0,
            attention_width=attention_width,
            attention_gain=gain,
            rf_width=1.0,
            pool_width=6.0,
            sigma=0.001,
        ).response[:, centre, 0]
        out[gain] = r
    return out[1.0], out[3.0]


def test_normalization_model_predicts_contrast_gain_and_response_gain():
    """Reynolds & Heeger (2009): large field / small stimulus shifts the contrast-response
    function (same maximum); small field / large stimulus scales it (higher maximum)."""
    un, att = _crf(stimulus_size=1.0, attention_width=30.0)  # contrast gain
    assert att[-1] / un[-1] == pytest.approx(1.0, abs=0.05)  # same saturation
    assert (att[3:8] / un[3:8]).min() > 1.5  # shifted to lower contrasts
    un, att = _crf(stimulus_size=30.0, attention_width=1.0)  # response gain
    assert att[-1] / un[-1] > 1.5  # higher saturation
    # the response-gain ratio is about constant across contrast (multiplicative scaling)
    ratio = att[4:] / un[4:]
    assert (ratio.max() - ratio.min()).item() < 0.35 * ratio.mean().item()


def test_naka_rushton_and_attended_d_prime():
    c = torch.tensor([0.0, 0.05, 0.1, 0.4], dtype=F64)
    r = naka_rushton(c, r_max=2.0, c50=0.1, n=2.5)
    assert r[0].item() == 0.0 and r[2].item() == pytest.approx(1.0)
    att = torch.tensor([1, 1, 1, 1])
    cg = attended_d_prime(c, att, d_max=2.0, c50=0.1, n=2.5, gain=2.0, variant="contrast_gain")
    torch.testing.assert_close(cg, naka_rushton(2 * c, r_max=2.0, c50=0.1, n=2.5))
    rg = attended_d_prime(c, att, d_max=2.0, c50=0.1, n=2.5, gain=2.0, variant="response_gain")
    torch.testing.assert_close(rg, 2 * r)
    un = attended_d_prime(c, 0 * att, d_max=2.0, c50=0.1, n=2.5, gain=2.0, variant="response_gain")
    torch.testing.assert_close(un, r)
    p = psychometric_2afc(torch.tensor([0.0, 1.0], dtype=F64), lapse=0.1)
    assert p[0].item() == pytest.approx(0.5)
    assert p[1].item() == pytest.approx(0.05 + 0.9 * _phi(1 / math.sqrt(2)))


def test_biased_competition_is_a_softmax_weighted_average():
    r = torch.tensor([10.0, 50.0], dtype=F64)
    s = torch.tensor([1.0, 1.0], dtype=F64)
    assert biased_competition_response(r, s).item() == pytest.approx(30.0)
    big = biased_competition_response(r, s, torch.tensor([1.0, 1e6], dtype=F64))
    assert big.item() == pytest.approx(50.0, abs=1e-3)  # attention to the preferred stimulus


def test_normalization_errors():
    E = torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match="stimulus_drive"):
        normalization_response(-E, E, sigma=1.0)
    with pytest.raises(ValueError, match="pool"):
        normalization_response(E, E, sigma=1.0, pool=torch.ones(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="0/0"):
        normalization_response(torch.zeros(3, dtype=F64), E, sigma=0.0)
    with pytest.raises(ValueError, match="variant"):
        attended_d_prime(E, E, d_max=1, c50=1, n=1, gain=1, variant="both")
    with pytest.raises(ValueError, match="lapse"):
        psychometric_2afc(E, lapse=1.0)
    with pytest.raises(ValueError, match="contrast"):
        naka_rushton(-E, r_max=1.0, c50=0.1, n=2.0)


@pytest.mark.parametrize("variant", ["contrast_gain", "response_gain"])
def test_normalization_psychometric_model(variant):
    model = NormalizationPsychometric(variant)
    c = torch.tensor([0.02, 0.05, 0.1, 0.2] * 5, dtype=F64)
    att = torch.tensor([0, 1] * 10)
    draws, data = _draws_and_data(model, {"contrast": c, "attended": att})
    torch.testing.assert_close(
        model.log_likelihood(draws, data), BayesianModel.log_likelihood(model, draws, data)
    )
    tr = poutine.trace(model.model).get_trace(**data)
    gain = tr.nodes["gain"]["value"]
    w = tr.nodes["attention_weights"]["value"]
    assert w[0].item() == pytest.approx((gain / (1 + gain)).item())
    sim = simulate_psychometric(
        c,
        att,
        d_max=3.0,
        c50=0.1,
        n=2.0,
        gain=2.0,
        variant=variant,
        generator=torch.Generator().manual_seed(0),
    )
    assert set(sim.unique().tolist()) <= {0.0, 1.0}


# ----------------------------------------------------------------------------- precision
def test_precision_weighted_update_is_the_gaussian_posterior_mean():
    x = torch.tensor([2.0, -1.0], dtype=F64)
    pi0, pis, mu0 = 0.5, 3.0, 1.0
    est = posterior_estimate(
        x, prior_mean=mu0, log_prior_precision=math.log(pi0), log_sensory_precision=math.log(pis)
    )
    torch.testing.assert_close(est, (pi0 * mu0 + pis * x) / (pi0 + pis))
    w = precision_weights(torch.tensor([math.log(pi0), math.log(pis)], dtype=F64))
    torch.testing.assert_close(w, torch.tensor([pi0, pis], dtype=F64) / (pi0 + pis))


def test_report_distribution_matches_simulation():
    n = 60_000
    s = torch.full((n,), 3.0, dtype=F64)
    cond = torch.arange(n) % 2
    kw = dict(
        prior_mean=0.0,
        log_prior_precision=0.0,
        log_sensory_precision=torch.tensor([-0.5, 1.5], dtype=F64),
        response_sd=0.3,
    )
    y = simulate_estimation(s, cond, generator=torch.Generator().manual_seed(0), **kw)
    mean, sd = report_distribution_params(s, cond, **kw)
    for c in (0, 1):
        sel = cond == c
        m_emp, s_emp = y[sel].mean(), y[sel].std()
        se = sd[sel][0] / math.sqrt(int(sel.sum()))
        assert abs((m_emp - mean[sel][0]).item()) < 4.5 * se.item()
        assert s_emp.item() == pytest.approx(sd[sel][0].item(), rel=0.02)
    # attention (higher precision) reduces the pull towards the prior mean
    assert mean[1] > mean[0]


def test_precision_model_log_likelihood_and_errors():
    model = PrecisionWeighting(3)
    s = torch.linspace(-2, 2, 12, dtype=F64)
    cond = torch.arange(12) % 3
    draws, data = _draws_and_data(model, {"stimulus": s, "condition": cond})
    torch.testing.assert_close(
        model.log_likelihood(draws, data), BayesianModel.log_likelihood(model, draws, data)
    )
    tr = poutine.trace(model.model).get_trace(**data)
    w = tr.nodes["attention_weights"]["value"]
    assert w.shape == (3, 2)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="condition"):
        model.model(stimulus=s, condition=cond + 1)
    with pytest.raises(ValueError, match="response_sd"):
        report_distribution_params(
            s,
            cond,
            prior_mean=0.0,
            log_prior_precision=0.0,
            log_sensory_precision=torch.zeros(3),
            response_sd=-1.0,
        )
    with pytest.raises(ValueError, match="num_conditions"):
        PrecisionWeighting(0)
