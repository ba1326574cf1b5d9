"""TVA: exact report likelihoods against brute force, Monte Carlo and an independent integral."""

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
from bayesattn.models.neuro.tva import (
    TVA,
    TVAReport,
    k_probabilities,
    k_probit_probabilities,
    partial_report_log_prob,
    report_log_prob,
    report_sets,
    simulate_partial_report,
    simulate_whole_report,
    whole_report_design,
    whole_report_log_prob,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: one thread is faster


def _weights(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=F64) + 0.2


def _codes(reported):
    return (reported.long() * 2 ** torch.arange(reported.shape[-1])).sum(-1)


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("K", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("exposure", [0.0, 10.0, 16.6, 50.0, 200.0, 5000.0])
def test_probabilities_over_all_report_sets_sum_to_one(K, exposure):
    sets = report_sets(6)
    lp = whole_report_log_prob(
        sets, torch.tensor(exposure, dtype=F64), C=55.0, weights=_weights(1), t0=12.0, K=K
    )
    assert lp.shape == (64,)
    assert torch.exp(lp).sum().item() == pytest.approx(1.0, abs=1e-10)
    # sets larger than K are impossible
    assert torch.isneginf(lp[sets.sum(-1) > K]).all()


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    C=st.floats(1.0, 200.0),
    t0=st.floats(-20.0, 60.0),
    exposure=st.floats(0.0, 400.0),
    k_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
)
def test_sum_to_one_property(n, C, t0, exposure, k_frac, seed):
    """Any display size, rate, threshold, exposure and (real) capacity: a distribution."""
    K = 1.0 + k_frac * (n - 1)
    lp = whole_report_log_prob(
        report_sets(n),
        torch.tensor(exposure, dtype=F64),
        C=C,
        weights=_weights(seed, n),
        t0=t0,
        K=K,
    )
    assert torch.exp(lp).sum().item() == pytest.approx(1.0, abs=1e-9)


def test_t0_sd_and_k_probs_still_sum_to_one():
    k_probs = torch.tensor([0.1, 0.2, 0.4, 0.2, 0.1, 0.0], dtype=F64)
    lp = report_log_prob(
        report_sets(6),
        torch.tensor(40.0, dtype=F64),
        C=40.0,
        weights=_weights(2),
        t0=20.0,
        t0_sd=8.0,
        k_probs=k_probs,
    )
    assert torch.exp(lp).sum().item() == pytest.approx(1.0, abs=1e-9)


# ----------------------------------------------------------------------------- references
def _full_case_by_integral(S, rates, tau, grid=200_001):
    """P(the items of S are the first |S| to finish, all before tau) by numerical integration.

    Density of the last item of S finishing at m, times the others of S before m, times all
    items outside S after m; trapezoid rule on a fine grid (independent of the closed form).
    """
    m = torch.linspace(0.0, tau, grid, dtype=F64)
    inside = rates[S]
    outside = rates[~S]
    cdf = 1 - torch.exp(-inside[:, None] * m)  # (|S|, G)
    pdf = inside[:, None] * torch.exp(-inside[:, None] * m)
    dens = torch.zeros_like(m)
    for i in range(len(inside)):
        others = torch.cat([cdf[:i], cdf[i + 1 :]]).prod(0)
        dens = dens + pdf[i] * others
    dens = dens * torch.exp(-outside.sum() * m)
    return torch.trapezoid(dens, m).item()


@pytest.mark.parametrize("K", [1, 2, 3, 5, 6])
def test_full_vstm_case_matches_numerical_integral(K):
    w = _weights(3)
    C, t0, exposure = 60.0, 10.0, 90.0
    rates = C * w / w.sum() / 1000.0
    g = torch.Generator().manual_seed(K)
    S = torch.zeros(6, dtype=torch.bool)
    S[torch.randperm(6, generator=g)[:K]] = True
    lp = whole_report_log_prob(S, torch.tensor(exposure, dtype=F64), C=C, weights=w, t0=t0, K=K)
    ref = _full_case_by_integral(S, rates, exposure - t0)
    assert math.exp(lp.item()) == pytest.approx(ref, rel=1e-6)


def test_single_slot_long_exposure_is_luce_choice_softmax():
    """K = 1, exposure -> inf: P(report {x}) = w_x / sum w = softmax(log w)_x."""
    w = _weights(4)
    singles = torch.eye(6, dtype=torch.bool)
    lp = whole_report_log_prob(
        singles, torch.tensor(1e6, dtype=F64), C=30.0, weights=w, t0=0.0, K=1
    )
    torch.testing.assert_close(torch.exp(lp), torch.softmax(torch.log(w), -1))


def test_exposure_below_threshold_reports_nothing():
    sets = report_sets(6)
    lp = whole_report_log_prob(
        sets, torch.tensor(10.0, dtype=F64), C=50.0, weights=_weights(), t0=15.0, K=4
    )
    assert lp[0].item() == 0.0 and torch.isneginf(lp[1:]).all()


def _mc_check(reported_mc, probs, sets_codes):
    """Every report set's Monte-Carlo frequency within 4.5 binomial standard errors."""
    n = reported_mc.shape[0]
    freq = torch.bincount(_codes(reported_mc), minlength=2 ** reported_mc.shape[1]).to(F64) / n
    f = freq[sets_codes]
    se = torch.sqrt(probs * (1 - probs) / n).clamp_min(1.0 / n)
    z = (f - probs).abs() / se
    assert z.max().item() < 4.5, z.max().item()
    assert freq.sum().item() == pytest.approx(f.sum().item())  # no impossible sets drawn


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(K=3, t0=15.0),
        dict(K=2.4, t0=15.0),  # real capacity: mixture of K = 2 and 3
        dict(K=4, t0=20.0, t0_sd=10.0),  # trial-to-trial threshold variability
    ],
)
def test_whole_report_matches_monte_carlo_race(kwargs):
    w = _weights(5)
    exposure = 70.0
    g = torch.Generator().manual_seed(11)
    sim = simulate_whole_report(
        torch.full((100_000,), exposure, dtype=F64), C=50.0, weights=w, generator=g, **kwargs
    )
    sets = report_sets(6)
    probs = torch.exp(
        whole_report_log_prob(sets, torch.tensor(exposure, dtype=F64), C=50.0, weights=w, **kwargs)
    )
    _mc_check(sim, probs, _codes(sets))


def test_partial_report_sums_to_one_and_matches_monte_carlo():
    w = _weights(6)
    targets = torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool)
    distractors = torch.tensor([0, 1, 0, 1, 0, 0], dtype=torch.bool)
    sets = report_sets(6)
    sets = sets[(sets & ~targets).sum(-1) == 0]  # subsets of the targets
    kw = dict(targets=targets, distractors=distractors, C=40.0, weights=w, alpha=0.4, t0=10.0)
    probs = torch.exp(partial_report_log_prob(sets, torch.tensor(60.0, dtype=F64), K=2, **kw))
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-10)
    g = torch.Generator().manual_seed(12)
    sim = simulate_partial_report(torch.full((100_000,), 60.0, dtype=F64), K=2, generator=g, **kw)
    _mc_check(sim, probs, _codes(sets))


def test_partial_report_without_distractors_is_whole_report():
    w = _weights(7)
    targets = torch.ones(6, dtype=torch.bool)
    none = torch.zeros(6, dtype=torch.bool)
    sets = report_sets(6)
    exposure = torch.tensor(45.0, dtype=F64)
    a = partial_report_log_prob(
        sets, exposure, targets=targets, distractors=none, C=45, weights=w, alpha=0.3, t0=5, K=3
    )
    b = whole_report_log_prob(sets, exposure, C=45, weights=w, t0=5, K=3)
    torch.testing.assert_close(a, b)


def test_gradients_match_finite_differences():
    w = _weights(8).requires_grad_()
    C = torch.tensor(40.0, dtype=F64, requires_grad=True)
    t0 = torch.tensor(12.0, dtype=F64, requires_grad=True)
    K = torch.tensor(2.6, dtype=F64, requires_grad=True)
    exposure = torch.tensor([16.6, 50.0, 200.0], dtype=F64)
    reported = torch.tensor(
        [[1, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0], [1, 0, 1, 1, 0, 0]], dtype=torch.bool
    )

    def f(C, w, t0, K):
        return whole_report_log_prob(reported, exposure, C=C, weights=w, t0=t0, K=K)

    assert torch.autograd.gradcheck(f, (C, w, t0, K))


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    w = _weights()
    rep = torch.zeros(3, 6, dtype=torch.bool)
    exp = torch.full((3,), 50.0, dtype=F64)
    ok = dict(C=40.0, weights=w, t0=10.0, K=3)
    with pytest.raises(ValueError, match="7 items per trial but the display has N=6"):
        whole_report_log_prob(torch.zeros(3, 7, dtype=torch.bool), exp, **ok)
    with pytest.raises(ValueError, match="exposure"):
        whole_report_log_prob(rep, -exp, **ok)
    for bad_k in (0, 7, -1, 6.5, 0.5):
        with pytest.raises(ValueError, match="K"):
            whole_report_log_prob(rep, exp, **{**ok, "K": bad_k})
    with pytest.raises(TypeError, match="bool"):
        whole_report_log_prob(rep.float(), exp, **ok)
    with pytest.raises(ValueError, match="C"):
        whole_report_log_prob(rep, exp, **{**ok, "C": -1.0})
    with pytest.raises(ValueError, match="weights"):
        whole_report_log_prob(rep, exp, **{**ok, "weights": -w})
    with pytest.raises(ValueError, match="t0_sd"):
        whole_report_log_prob(rep, exp, **ok, t0_sd=-2.0)
    with pytest.raises(ValueError, match="NaN"):
        whole_report_log_prob(rep, exp, **{**ok, "t0": float("nan")})
    with pytest.raises(ValueError, match="display must hold"):
        report_sets(11)
    targets = torch.tensor([1, 0, 0, 0, 0, 0], dtype=torch.bool)
    with pytest.raises(ValueError, match="not reportable"):
        partial_report_log_prob(
            torch.tensor([0, 1, 0, 0, 0, 0], dtype=torch.bool),
            torch.tensor(50.0, dtype=F64),
            targets=targets,
            distractors=~targets,
            alpha=0.5,
            **ok,
        )
    with pytest.raises(ValueError, match="share a location"):
        partial_report_log_prob(
            targets,
            torch.tensor(50.0, dtype=F64),
            targets=targets,
            distractors=targets,
            alpha=0.5,
            **ok,
        )


def test_k_probabilities_real_capacity():
    p = k_probabilities(torch.tensor(2.25, dtype=F64), 6)
    torch.testing.assert_close(p, torch.tensor([0, 0.75, 0.25, 0, 0, 0], dtype=F64))
    torch.testing.assert_close(k_probabilities(6.0, 6), torch.eye(6, dtype=F64)[5])
    torch.testing.assert_close(k_probabilities(3, 6), torch.eye(6, dtype=F64)[2])


# ----------------------------------------------------------------------------- Pyro model
def _data(seed=0, trials=12):
    exposure = whole_report_design(trials_per_exposure=trials // 6 or 1)
    g = torch.Generator().manual_seed(seed)
    reported = simulate_whole_report(
        exposure, C=45.0, weights=_weights(9), t0=10.0, K=3, generator=g
    )
    return {"exposure": exposure, "reported": reported}


def test_model_sites_and_attention_weights_are_a_softmax():
    pyro.set_rng_seed(1)
    model = TVA(6)
    data = _data()
    trace = poutine.trace(model.model).get_trace(**data)
    assert set(model.latent_names()) == {"C", "t0", "K", "weights"}
    for name in model.latent_names():
        assert trace.nodes[name]["type"] == "sample"
    w = trace.nodes["weights"]["value"]
    torch.testing.assert_close(
        trace.nodes["attention_weights"]["value"], torch.softmax(torch.log(w), -1)
    )
    obs = trace.nodes["reported"]
    assert obs["is_observed"] and obs["fn"].log_prob(obs["value"]).shape == (12,)
    # simulating from the model gives reports of the right shape
    sim = model.model(exposure=data["exposure"])
    assert sim.shape == (12, 6) and sim.dtype == torch.bool


@pytest.mark.parametrize("paradigm", ["whole", "partial"])
def test_vectorised_log_likelihood_matches_replay(paradigm):
    pyro.set_rng_seed(0)
    model = TVA(4, paradigm=paradigm, t0_sd=dist.HalfNormal(5.0) if paradigm == "whole" else 0.0)
    exposure = torch.tensor([20.0, 60.0, 100.0, 150.0, 40.0], dtype=F64)
    data = {"exposure": exposure}
    if paradigm == "partial":
        data["targets"] = torch.tensor(
            [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.bool
        )
        data["distractors"] = torch.tensor(
            [[0, 1, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1]], dtype=torch.bool
        )
    data["reported"] = model.model(**data)
    draws = {}
    for _ in range(3):
        tr = poutine.trace(model.model).get_trace(**data)
        for n in model.latent_names():
            draws.setdefault(n, []).append(tr.nodes[n]["value"])
    draws = {k: torch.stack(v) for k, v in draws.items()}
    fast = model.log_likelihood(draws, data)
    slow = BayesianModel.log_likelihood(model, draws, data)
    assert fast.shape == (3, 5)
    torch.testing.assert_close(fast, slow)


def test_model_input_errors():
    pyro.set_rng_seed(2)
    with pytest.raises(ValueError, match="K"):
        TVA(6, K=7)
    with pytest.raises(ValueError, match="paradigm"):
        TVA(6, paradigm="full")
    model = TVA(6, K=2)
    data = _data()
    data["reported"][0] = True  # 6 items reported
    with pytest.raises(ValueError, match="more than K=2"):
        model.model(**data)
    with pytest.raises(ValueError, match="targets"):
        TVA(6, paradigm="partial").model(**_data())


def test_distribution_validates_and_samples():
    torch.manual_seed(3)
    d = TVAReport(
        torch.full((4,), 50.0, dtype=F64),
        C=torch.tensor(40.0, dtype=F64),
        weights=_weights(),
        t0=torch.tensor(10.0, dtype=F64),
        k_probs=k_probabilities(3, 6),
    )
    assert d.batch_shape == (4,) and d.event_shape == (6,)
    x = d.sample((2,))
    assert x.shape == (2, 4, 6)
    assert torch.isfinite(d.log_prob(x)).all()
    with pytest.raises(ValueError, match="0/1"):
        d.log_prob(torch.full((4, 6), 0.5, dtype=F64))


# ----------------------------------------------------------------------------- package layout
def test_public_names_importable_from_the_package_paths():
    """The split into ``tva/`` modules keeps every public name where users import it from."""
    import importlib

    import bayesattn.models.neuro as neuro
    from bayesattn.models.neuro import tva

    assert len(tva.__all__) == len(set(tva.__all__)) == 16
    for name in tva.__all__:
        obj = getattr(tva, name)
        if name != "MAX_ITEMS":  # a constant: defined in tva.sets
            home = importlib.import_module(obj.__module__)
            assert home.__name__.startswith("bayesattn.models.neuro.tva.")
            assert getattr(home, name) is obj
        if name in neuro.__all__:
            assert getattr(neuro, name) is obj
    assert tva.sets.MAX_ITEMS == tva.MAX_ITEMS == 10


# ----------------------------------------------------------------------------- exact random t0
def _ref_set_probs(rates, tau, k_probs):
    """All ``2^N`` encoded-set probabilities at effective exposure ``tau`` (slow reference).

    The textbook formulas set by set (Kyllingsbaek 2006; Dyrholm et al. 2011): the product form
    when VSTM is not filled, ``sum_A (-1)^(|A|+1) v_A/(v_A+V_out) (1 - e^{-(v_A+V_out) tau})``
    when it is, mixed over ``K = 0..N`` (``k_probs`` of length ``N + 1``). NumPy, float64.
    """
    return _ref_set_prob_fn(rates, k_probs)(tau)


def _ref_set_prob_fn(rates, k_probs):
    """``tau -> `` the ``2^N`` reference set probabilities (structure precomputed in NumPy)."""
    import numpy as np

    rates = np.asarray(rates, dtype=float)
    k_probs = np.asarray(k_probs, dtype=float)
    n = len(rates)
    codes = np.arange(2**n)
    masks = (codes[:, None] >> np.arange(n)) & 1  # (2^N, N)
    sizes = masks.sum(1)
    v_set = masks @ rates
    v_out = rates.sum() - v_set
    inside_a = (codes[None, :] & ~codes[:, None]) == 0  # [S, A]: A subset of S
    sign = np.where(sizes % 2 == 1, 1.0, -1.0)[None, :] * (inside_a & (codes[None, :] > 0))
    rate_sum = v_set[None, :] + v_out[:, None]  # v_A + V_out(S)
    ratio = np.divide(v_set[None, :], rate_sum, out=np.zeros_like(rate_sum), where=rate_sum > 0)
    p_gt = np.array([k_probs[r + 1 :].sum() for r in sizes])
    p_eq = k_probs[sizes]

    def f(tau):
        tau = max(tau, 0.0)
        small = np.prod(np.where(masks == 1, -np.expm1(-rates * tau), 1.0), 1) * np.exp(
            -v_out * tau
        )
        full = (sign * ratio * -np.expm1(-rate_sum * tau)).sum(1)
        full[0] = 1.0  # K = 0 or S = {}: nothing encoded
        return p_gt * small + p_eq * full

    return f


def _ref_random_t0(rates, exposure, k_probs, density, support):
    """``E_t0[P(S | tau = exposure - t0)]`` for every set by adaptive quadrature (quad_vec),
    split at the kink ``t0 = exposure``; ``support`` = (low, high) of the threshold density."""
    import numpy as np
    from scipy import integrate

    probs = _ref_set_prob_fn(rates, k_probs)

    def f(t0):
        return probs(exposure - t0) * density(t0)

    low, high = support
    cut = min(max(exposure, low), high)
    total = np.zeros(2 ** len(rates))
    for a, b in ((low, cut), (cut, high)):
        if b > a:
            val, _ = integrate.quad_vec(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=400)
            total += val
    return total


_T0_SETTINGS = [
    # C (items/s), weights seed, mu0 (ms), sigma0 (ms), k_probs over K = 0..4
    (40.0, 1, 15.0, 8.0, [0.0, 0.1, 0.3, 0.4, 0.2]),
    (120.0, 2, 5.0, 20.0, [0.05, 0.15, 0.3, 0.3, 0.2]),
    (15.0, 3, 30.0, 2.0, [0.0, 0.0, 1.0, 0.0, 0.0]),
]


@pytest.mark.parametrize("setting", range(len(_T0_SETTINGS)))
def test_gaussian_t0_closed_form_matches_adaptive_quadrature(setting):
    """Every report set to 1e-10 against quad_vec of the slow reference, exposures 5-300 ms."""
    import numpy as np
    from scipy import stats

    C, seed, mu0, sd0, kp = _T0_SETTINGS[setting]
    w = _weights(seed, 4)
    rates = (C * w / w.sum() / 1000.0).numpy()
    kp = torch.tensor(kp, dtype=F64)
    sets = report_sets(4)
    for exposure in (5.0, 10.0, 16.6, 33.3, 50.0, 100.0, 300.0):
        lp = report_log_prob(
            sets, torch.tensor(exposure, dtype=F64), C=C, weights=w, t0=mu0, t0_sd=sd0, k_probs=kp
        )
        ref = _ref_random_t0(
            rates,
            exposure,
            kp.numpy(),
            lambda t: stats.norm.pdf(t, mu0, sd0),
            (mu0 - 40 * sd0, mu0 + 40 * sd0),
        )
        assert np.abs(torch.exp(lp).numpy() - ref).max() < 1e-10, exposure
        assert torch.exp(lp).sum().item() == pytest.approx(1.0, abs=1e-12)


def test_empty_report_at_a_short_exposure_is_exact_at_the_kink():
    """The kink of the integrand at t0 = exposure: 32-node Gauss-Hermite missed it by 2e-3."""
    w = _weights(0, 6)
    rates = (50.0 * w / w.sum() / 1000.0).numpy()
    kp = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=F64)
    from scipy import stats

    ref = _ref_random_t0(
        rates, 16.6, kp.numpy(), lambda t: stats.norm.pdf(t, 12.0, 6.0), (12 - 240, 12 + 240)
    )
    lp = report_log_prob(
        torch.zeros(6, dtype=torch.bool),
        torch.tensor(16.6, dtype=F64),
        C=50.0,
        weights=w,
        t0=12.0,
        t0_sd=6.0,
        k_probs=kp,
    )
    assert math.exp(lp.item()) == pytest.approx(ref[0], abs=1e-11)


def test_exponential_t0_matches_quadrature_and_sums_to_one():
    import numpy as np
    from scipy import stats

    w = _weights(4, 4)
    C, mean0 = 60.0, 12.0
    rates = (C * w / w.sum() / 1000.0).numpy()
    kp = torch.tensor([0.1, 0.2, 0.3, 0.3, 0.1], dtype=F64)
    sets = report_sets(4)
    for exposure in (5.0, 16.6, 60.0, 250.0):
        lp = report_log_prob(
            sets,
            torch.tensor(exposure, dtype=F64),
            C=C,
            weights=w,
            t0=mean0,
            k_probs=kp,
            t0_dist="exponential",
        )
        ref = _ref_random_t0(
            rates, exposure, kp.numpy(), lambda t: stats.expon.pdf(t, scale=mean0), (0, 60 * mean0)
        )
        assert np.abs(torch.exp(lp).numpy() - ref).max() < 1e-10, exposure
        assert torch.exp(lp).sum().item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("t0_kw", [dict(t0_sd=7.0), dict(t0_dist="exponential"), dict()])
def test_partial_report_against_brute_force_enumeration(t0_kw):
    """Partial report (any t0) equals the slow sum over every encoded distractor set D of the
    whole-display set probability P(R u D), brute force over all 2^N sets; sums to 1."""
    n = 5
    w = _weights(9, n)
    alpha = 0.35
    targets = torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool)
    distractors = torch.tensor([0, 1, 0, 0, 1], dtype=torch.bool)
    item_w = w * (targets.to(F64) + alpha * distractors.to(F64))
    kp = torch.tensor([0.05, 0.1, 0.3, 0.3, 0.15, 0.1], dtype=F64)
    sets = report_sets(n)
    reports = sets[(sets & ~targets).sum(-1) == 0]
    exposure = torch.tensor(45.0, dtype=F64)
    kw = dict(C=70.0, t0=14.0, k_probs=kp, **t0_kw)
    whole = torch.exp(report_log_prob(sets, exposure, weights=item_w, **kw))  # all 2^N sets
    codes = _codes(sets)
    brute = []
    for rep in reports:
        total = 0.0
        for s, c in zip(sets, codes, strict=True):
            if bool((s & targets).eq(rep).all()):  # S = R u D with D subset of the distractors
                total += whole[int(c)].item()
        brute.append(total)
    fast = torch.exp(
        partial_report_log_prob(
            reports,
            exposure,
            targets=targets,
            distractors=distractors,
            weights=w,
            alpha=alpha,
            **kw,
        )
    )
    torch.testing.assert_close(fast, torch.tensor(brute, dtype=F64), rtol=0, atol=1e-13)
    assert fast.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_whole_report_sets_against_slow_reference_with_k0():
    import numpy as np

    w = _weights(10, 5)
    kp = torch.tensor([0.1, 0.1, 0.2, 0.3, 0.2, 0.1], dtype=F64)
    for exposure in (0.0, 8.0, 40.0, 400.0):
        lp = report_log_prob(
            report_sets(5),
            torch.tensor(exposure, dtype=F64),
            C=80.0,
            weights=w,
            t0=10.0,
            k_probs=kp,
        )
        ref = _ref_set_probs((80.0 * w / w.sum() / 1000).numpy(), exposure - 10.0, kp.numpy())
        assert np.abs(torch.exp(lp).numpy() - ref).max() < 1e-13


def test_random_t0_gradients_match_finite_differences():
    C = torch.tensor(50.0, dtype=F64, requires_grad=True)
    w = _weights(11, 4).requires_grad_()
    mu0 = torch.tensor(12.0, dtype=F64, requires_grad=True)
    sd0 = torch.tensor(6.0, dtype=F64, requires_grad=True)
    kp = torch.tensor([0.1, 0.2, 0.3, 0.3, 0.1], dtype=F64, requires_grad=True)
    rep = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    exposure = torch.tensor([10.0, 50.0, 16.6], dtype=F64)
    targets = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 1, 0]], dtype=torch.bool)

    def f(C, w, mu0, sd0, kp):
        a = partial_report_log_prob(
            rep,
            exposure,
            targets=targets,
            distractors=~targets,
            C=C,
            weights=w,
            alpha=0.5,
            t0=mu0,
            t0_sd=sd0,
            k_probs=kp,
        )
        b = report_log_prob(
            rep, exposure, C=C, weights=w, t0=mu0, k_probs=kp, t0_dist="exponential"
        )
        return a, b

    assert torch.autograd.gradcheck(f, (C, w, mu0, sd0, kp))


# ----------------------------------------------------------------------------- the field's model
@pytest.mark.parametrize("mK,sK,n", [(3.2, 0.8, 6), (0.4, 1.5, 4), (5.7, 0.3, 6), (2.0, 3.0, 5)])
def test_probit_k_matches_monte_carlo_of_floor_normal(mK, sK, n):
    """P(K = k) against the frequencies of floor(N(mK, sK)) clipped to 0..N (4.5 SE)."""
    p = k_probit_probabilities(mK, sK, n)
    assert p.shape == (n + 1,) and p.sum().item() == pytest.approx(1.0, abs=1e-14)
    g = torch.Generator().manual_seed(int(10 * mK))
    draws = 200_000
    x = mK + sK * torch.randn(draws, generator=g, dtype=F64)
    k = torch.floor(x).clamp(0, n).long()
    freq = torch.bincount(k, minlength=n + 1).to(F64) / draws
    se = torch.sqrt(p * (1 - p) / draws).clamp_min(1.0 / draws)
    assert ((freq - p).abs() / se).max().item() < 4.5


def test_probit_k_gradients_and_errors():
    mK = torch.tensor([1.5, 3.3], dtype=F64, requires_grad=True)
    sK = torch.tensor([0.7, 2.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: k_probit_probabilities(a, b, 5), (mK, sK))
    with pytest.raises(ValueError, match="sK"):
        k_probit_probabilities(3.0, 0.0, 6)


def test_k_distribution_and_integer_masks_are_accepted():
    """whole_report_log_prob takes a K distribution (0..N or 1..N, a tensor or a Categorical)
    and 0/1 integer masks, as its docstring says."""
    w = _weights(12)
    sets = report_sets(6)
    exposure = torch.tensor(60.0, dtype=F64)
    kp = k_probit_probabilities(3.0, 1.0, 6)  # over 0..6
    a = whole_report_log_prob(sets, exposure, C=50.0, weights=w, t0=10.0, K=kp)
    assert torch.exp(a).sum().item() == pytest.approx(1.0, abs=1e-12)
    # the mixture over K equals the K-weighted sum of fixed-K likelihoods (K = 0: empty report)
    mix = kp[0] * (sets.sum(-1) == 0).to(F64)
    for k in range(1, 7):
        fixed = whole_report_log_prob(sets, exposure, C=50.0, weights=w, t0=10.0, K=k)
        mix = mix + kp[k] * torch.exp(fixed)
    torch.testing.assert_close(torch.exp(a), mix, rtol=0, atol=1e-14)
    b = whole_report_log_prob(
        sets, exposure, C=50.0, weights=w, t0=10.0, K=torch.distributions.Categorical(probs=kp)
    )
    c = whole_report_log_prob(sets.int(), exposure, C=50.0, weights=w, t0=10.0, k_probs=kp)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match="0 and 1"):
        whole_report_log_prob(2 * sets.int(), exposure, C=50.0, weights=w, t0=10.0, K=3)
    with pytest.raises(TypeError, match="bool or 0/1 integer"):
        whole_report_log_prob(sets.double(), exposure, C=50.0, weights=w, t0=10.0, K=3)


def _partial_data(n=6, trials=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    distractors = torch.rand(trials, n, generator=g) < 0.3
    targets = ~distractors
    exposure = torch.tensor([10.0, 20.0, 40.0, 80.0, 150.0] * (trials // 5), dtype=F64)
    return {"exposure": exposure, "targets": targets, "distractors": distractors}


def test_tied_regions_equal_the_free_model_with_equal_weights():
    pyro.set_rng_seed(4)
    data = _partial_data()
    tied = TVA(6, paradigm="partial", regions="1-3,4-6", K="probit", t0_sd=dist.HalfNormal(5.0))
    free = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(5.0))
    data["reported"] = tied.model(**data)
    draws = {}
    for _ in range(4):
        tr = poutine.trace(tied.model).get_trace(**data)
        for name in tied.latent_names():
            draws.setdefault(name, []).append(tr.nodes[name]["value"])
    draws = {k: torch.stack(v) for k, v in draws.items()}
    assert draws["weights"].shape == (4, 2)
    expanded = {**draws, "weights": draws["weights"][:, [0, 0, 0, 1, 1, 1]]}
    torch.testing.assert_close(
        tied.log_likelihood(draws, data), free.log_likelihood(expanded, data)
    )
    # the regions as 0-based index lists are the same model
    same = TVA(6, paradigm="partial", regions=[[0, 1, 2], [3, 4, 5]], K="probit")
    assert torch.equal(same._region_index, tied._region_index)
    with pytest.raises(ValueError, match="regions"):
        TVA(6, regions="1-3,3-6")
    with pytest.raises(ValueError, match="regions"):
        TVA(6, regions="1-2,4-6")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(K="probit", t0_sd=dist.HalfNormal(5.0)),
        dict(K="probit", mK=3.0, sK=dist.LogNormal(0.0, 0.5)),  # a fixed mK, a custom sK prior
        dict(K="free", t0_dist="exponential"),
        dict(K=dist.Dirichlet(torch.ones(7, dtype=F64)), regions="1-2,3-4,5-6"),
        dict(K=3, t0=12.0, t0_sd=4.0, weights=None),  # everything but C and alpha fixed
    ],
)
def test_field_models_vectorised_log_likelihood_matches_replay(kwargs):
    """Each K, t0 and weight option: log_likelihood (vectorised over draws) equals the Pyro
    model's own observation log-density replayed at the same draws."""
    pyro.set_rng_seed(5)
    model = TVA(6, paradigm="partial", **kwargs)
    data = _partial_data(seed=1)
    data["reported"] = model.model(**data)
    draws = {}
    for _ in range(3):
        tr = poutine.trace(model.model).get_trace(**data)
        for name in model.latent_names():
            draws.setdefault(name, []).append(tr.nodes[name]["value"])
    draws = {k: torch.stack(v) for k, v in draws.items()}
    fast = model.log_likelihood(draws, data)
    slow = BayesianModel.log_likelihood(model, draws, data)
    assert fast.shape == (3, 10) and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, slow)


def test_exponential_t0_simulation_matches_likelihood():
    w = _weights(13, 4)
    sets = report_sets(4)
    kp = torch.tensor([0.05, 0.2, 0.4, 0.25, 0.1], dtype=F64)
    kw = dict(C=60.0, weights=w, t0=15.0, k_probs=kp, t0_dist="exponential")
    probs = torch.exp(report_log_prob(sets, torch.tensor(30.0, dtype=F64), **kw))
    from bayesattn.models.neuro.tva import simulate_report

    g = torch.Generator().manual_seed(14)
    sim = simulate_report(torch.full((100_000,), 30.0, dtype=F64), generator=g, **kw)
    _mc_check(sim, probs, _codes(sets))


def test_threshold_and_capacity_option_errors():
    rep = torch.zeros(2, 6, dtype=torch.bool)
    exp = torch.full((2,), 50.0, dtype=F64)
    ok = dict(C=40.0, weights=_weights(), K=3)
    with pytest.raises(ValueError, match="t0_dist"):
        whole_report_log_prob(rep, exp, t0=10.0, t0_dist="gamma", **ok)
    with pytest.raises(ValueError, match="t0_sd must be 0"):
        whole_report_log_prob(rep, exp, t0=10.0, t0_sd=3.0, t0_dist="exponential", **ok)
    with pytest.raises(ValueError, match="exponential threshold"):
        whole_report_log_prob(rep, exp, t0=-1.0, t0_dist="exponential", **ok)
    with pytest.raises(ValueError, match="k_probs"):
        report_log_prob(rep, exp, C=40.0, weights=_weights(), t0=1.0, k_probs=torch.ones(5))
    with pytest.raises(ValueError, match="K must be"):
        TVA(6, K="gaussian")
    with pytest.raises(ValueError, match="t0_dist"):
        TVA(6, t0_dist="gamma")


@pytest.mark.slow
def test_probit_model_map_recovers_a_simulated_partial_report_subject():
    """MAP of the field's model (probit K, Gaussian t0, free weights, alpha) on 468 simulated
    partial-report trials lands near the generating parameters."""
    from bayesattn.inference import fit

    g = torch.Generator().manual_seed(3)
    distractors = torch.zeros(468, 6, dtype=torch.bool)
    for i in range(156):  # a third of the trials with 2-4 distractors at 150 ms
        distractors[i, torch.randperm(6, generator=g)[: 2 + i % 3]] = True
    exposure = torch.tensor([150.0] * 156 + [16.6, 33.3, 50.0, 100.0, 150.0, 200.0] * 52, dtype=F64)
    targets = ~distractors
    w = torch.tensor([1.3, 1.0, 0.8, 1.1, 0.9, 1.0], dtype=F64)
    truth = dict(C=50.0, weights=w, alpha=0.4, t0=15.0, t0_sd=5.0)
    kp = k_probit_probabilities(3.4, 0.6, 6)
    reported = simulate_partial_report(
        exposure, targets=targets, distractors=distractors, generator=g, k_probs=kp, **truth
    )
    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    data = dict(exposure=exposure, reported=reported, targets=targets, distractors=distractors)
    idata = fit(model, data, method="map", num_steps=600, learning_rate=0.05, progress_bar=False)
    post = {
        k: torch.as_tensor(v.values).reshape(-1, *v.shape[2:])[0]
        for k, v in idata.posterior.items()
    }
    # the Laplace step needs finite second derivatives of the Gaussian-t0 likelihood (they
    # were NaN while the two threshold terms were added with logaddexp)
    assert idata.attrs["converged"] == 1, idata.attrs["diagnostics"]
    assert abs(post["mK"].item() - 3.4) < 0.4
    assert abs(post["C"].item() - 50.0) < 12.0
    assert (post["attention_weights"] - w / w.sum()).abs().max().item() < 0.04


@pytest.mark.slow
def test_probit_model_is_jit_traceable_and_gives_the_same_chain():
    """NUTS with ``jit_compile=True`` (1.4-3x faster on the shared machine) draws the same chain."""
    from pyro.infer import MCMC, NUTS

    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(5.0))
    data = _partial_data(trials=20, seed=2)
    pyro.set_rng_seed(6)
    data["reported"] = model.model(**data)
    chains = []
    for jit in (False, True):
        pyro.set_rng_seed(7)
        kernel = NUTS(model.model, jit_compile=jit, ignore_jit_warnings=True)
        mcmc = MCMC(kernel, num_samples=10, warmup_steps=10, disable_progbar=True)
        mcmc.run(**data)
        chains.append(mcmc.get_samples())
    for name in ("C", "mK", "sK", "t0", "t0_sd", "alpha"):
        torch.testing.assert_close(chains[0][name], chains[1][name], rtol=1e-6, atol=1e-6)
