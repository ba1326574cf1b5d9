"""The fast TVA log joint used by NUTS equals the density Pyro traces from the model.

``TVA.log_joint_fn`` evaluates priors and likelihood without Pyro's tracing and groups trials
by display; the independent reference is Pyro's own potential
(:func:`pyro.infer.mcmc.util.initialize_model`) of the same Pyro program.

These tests run the race sums on the torch path (the compiled kernel off), so that the two
densities share their arithmetic and agree to 1e-10; the kernel's own agreement, whose
additions come in another order and so differ where the alternating sums cancel, is tested in
``test_tva_kernel.py``.
"""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.mcmc.util import initialize_model

from bayesattn.errors import ConvergenceWarning
from bayesattn.inference import fit
from bayesattn.inference.nuts import _jit_traced, potential_from_log_joint
from bayesattn.models.neuro.tva import TVA, HierarchicalTVA, compiled

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_race_path")


@pytest.fixture
def torch_race_path(monkeypatch):
    """The race sums in torch: the compiled kernel reported unavailable."""
    monkeypatch.setattr(compiled, "_LIB", [None])


def _data(paradigm, conditions, seed, trials=30):
    """A design with repeated displays (so that trials share their decays) and reports
    simulated from the model's prior."""
    g = torch.Generator().manual_seed(seed)
    exposure = torch.tensor([10.0, 20.0, 40.0, 80.0, 150.0], dtype=F64).repeat(trials // 5)
    data = {"exposure": exposure}
    if paradigm == "partial":
        patterns = torch.rand(4, 6, generator=g) < 0.35
        distractors = patterns[torch.randint(0, 4, (trials,), generator=g)]
        data.update(targets=~distractors, distractors=distractors)
    if conditions > 1:
        data["condition"] = torch.arange(trials) % conditions
    return data


def _assert_same_potential(fast, reference, init, scale, seed):
    """Value (1e-10) and gradient (1e-7) agree at three random points around ``init``."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        z = {k: (v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype)).requires_grad_()
             for k, v in init.items()}
        want, got = reference(z), fast(z)
        assert torch.isfinite(want)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-9)
        grads_want = torch.autograd.grad(want, list(z.values()))
        grads_got = torch.autograd.grad(got, list(z.values()))
        for a, b in zip(grads_got, grads_want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)


CASES = [
    dict(paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0)),
    dict(paradigm="partial", K="free", t0_dist="exponential", regions="1-3,4-6"),
    dict(paradigm="whole", K="free"),  # fixed t0: its prior truncated below the data
    dict(paradigm="whole", K=dist.Uniform(1.0, 6.0), t0_sd=dist.HalfNormal(5.0)),
    dict(paradigm="whole", K=3, t0_sd=4.0, weights=torch.tensor([1.0, 2, 1, 1, 2, 1])),
    dict(paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0), conditions=2,
         by_condition=("C", "weights", "K", "t0")),
    dict(paradigm="whole", K="free", conditions=3, by_condition=("C", "K"), regions="1-2,3-6"),
]


def _simulated(case, seed):
    """``(model, data)`` of ``CASES[case]``: the design of ``_data`` (seeded by ``case``) with
    reports drawn from the model's prior predictive (Pyro seeded by ``seed``)."""
    kwargs = dict(CASES[case])
    model = TVA(6, **kwargs)
    data = _data(kwargs["paradigm"], kwargs.get("conditions", 1), seed=case)
    pyro.set_rng_seed(seed)
    data["reported"] = model.model(**data)
    return model, data


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_potential_equals_pyros_traced_potential(case):
    model, data = _simulated(case, seed=10 + case)
    init, pyro_potential, transforms, _ = initialize_model(model.model, model_kwargs=data)
    fast = potential_from_log_joint(model.log_joint_fn(data), transforms)
    _assert_same_potential(fast, pyro_potential, init, scale=0.4, seed=100 + case)


def test_traced_fast_potential_generalises_beyond_the_tracing_point():
    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    data = _data("partial", 1, seed=7)
    pyro.set_rng_seed(7)
    data["reported"] = model.model(**data)
    init, pyro_potential, transforms, _ = initialize_model(model.model, model_kwargs=data)
    traced = _jit_traced(potential_from_log_joint(model.log_joint_fn(data), transforms), init)
    g = torch.Generator().manual_seed(8)
    z = {k: v + 0.5 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in init.items()}
    torch.testing.assert_close(traced(z), pyro_potential(z), rtol=1e-10, atol=1e-9)


def test_log_joint_needs_reports_and_checks_the_data_once():
    model = TVA(6, paradigm="partial", K="probit")
    data = _data("partial", 1, seed=3)
    assert model.log_joint_fn(data) is None  # nothing observed: NUTS traces the program
    bad = dict(data, reported=data["distractors"].clone())
    bad["reported"][:, :] = False
    bad["reported"][0] = data["distractors"][0] | ~data["distractors"][0]
    with pytest.raises(ValueError, match="not a target"):
        model.log_joint_fn(bad)


def test_a_discrete_prior_leaves_the_traced_program():
    """A prior with no bijection onto its support gives no fast log joint (None: MAP and SVI
    then go through the traced program) instead of an error."""
    model = TVA(6, paradigm="partial", K="probit", mK=dist.Categorical(torch.ones(4)))
    _, data = _simulated(0, seed=10)
    assert model.log_joint_fn(data) is None
    assert TVA(6, **CASES[0]).log_joint_fn(data) is not None


def test_nuts_through_fit_uses_the_fast_log_joint(monkeypatch):
    """``fit(method="nuts")`` samples through ``log_joint_fn``, and the chain is a posterior:
    the draws of a well-identified parameter sit near the simulating value."""
    calls = []
    original = TVA.log_joint_fn

    def counting(self, data):
        fn = original(self, data)
        calls.append(1)
        return fn

    monkeypatch.setattr(TVA, "log_joint_fn", counting)
    model = TVA(6, paradigm="whole", K=3, t0=10.0, weights=None)
    data = _data("whole", 1, seed=4, trials=200)
    truth = TVA(6, paradigm="whole", K=3, t0=10.0, weights=None, C=50.0)
    pyro.set_rng_seed(4)
    data["reported"] = truth.model(**data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one short chain: judged, not used
        idata = fit(model, data, method="nuts", num_samples=100, warmup_steps=100,
                    num_chains=1, progress_bar=False)
    assert calls, "NUTS did not use the fast log joint"
    c = idata.posterior["C"].values.ravel()
    assert abs(c.mean() - 50.0) < 4 * c.std() + 1.0


@pytest.mark.parametrize("method", ["map", "svi"])
def test_map_optimiser_uses_the_fast_log_joint_and_finds_the_traced_mode(method, monkeypatch):
    """MAP (and SVI's MAP start) minimise through ``log_joint_fn``; the mode, the Hessian
    (always from the traced program) and the draws are those of the traced potential alone."""
    import json

    from bayesattn.inference import laplace, svi

    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    data = _data("partial", 1, seed=5, trials=60)
    pyro.set_rng_seed(5)
    data["reported"] = model.model(**data)
    calls, optimising = [], []  # fast log joint calls made inside find_mode (not conversion's)
    original, find_mode = TVA.log_joint_fn, laplace.find_mode

    def counting(self, d):
        fn = original(self, d)

        def log_joint(values):
            if optimising:
                calls.append(1)
            return fn(values)

        return log_joint

    def watched_find_mode(*args, **kwargs):
        optimising.append(1)
        try:
            return find_mode(*args, **kwargs)
        finally:
            optimising.clear()

    monkeypatch.setattr(laplace, "find_mode", watched_find_mode)
    monkeypatch.setattr(svi, "find_mode", watched_find_mode)

    kwargs = dict(method=method, num_chains=1, num_samples=50, seed=3, progress_bar=False)
    if method == "svi":
        kwargs.update(num_steps=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        monkeypatch.setattr(TVA, "log_joint_fn", lambda self, d: None)  # Pyro's trace only
        traced = fit(model, data, **kwargs)
        monkeypatch.setattr(TVA, "log_joint_fn", counting)
        fast = fit(model, data, **kwargs)
    assert calls, "the optimiser did not use the fast log joint"
    if method == "map":
        a, b = (json.loads(i.attrs["diagnostics"])["figures"] for i in (traced, fast))
        assert b["neg_log_density"] == pytest.approx(a["neg_log_density"], abs=1e-8)
        assert b["newton_decrement"] < 1e-3
    for k in model.latent_names():
        torch.testing.assert_close(torch.as_tensor(fast.posterior[k].values),
                                   torch.as_tensor(traced.posterior[k].values),
                                   rtol=1e-4, atol=1e-6)


HIER_CASES = [
    dict(paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0), conditions=2,
         by_condition=("C",)),
    dict(paradigm="whole", K="free", regions="1-3,4-6", conditions=2,
         by_condition=("C", "weights", "K"),  # a fixed t0 per subject, below the 10 ms exposure
         priors={"t0_mu": dist.Normal(torch.tensor(4.0, dtype=F64), 1.0),
                 "t0_sigma": dist.HalfNormal(torch.tensor(1.0, dtype=F64))}),
    dict(paradigm="partial", K=3, t0_dist="exponential", weights=None),
    dict(paradigm="whole", K="probit", t0=12.0, C=60.0),  # fixed t0 and C
    dict(paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0), conditions=2,
         by_condition=("C", "weights"), centered=True),
    dict(paradigm="whole", K="free", regions="1-3,4-6", centered=True),
    dict(paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0), conditions=2,
         by_condition=("C",), centered=("C", "mK", "t0")),  # mixed: the rest non-centred
    # one deviation per subject, shared by its conditions: non-centred, then centred
    dict(paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0), conditions=2,
         by_condition=("C", "weights"), deviation="subject"),
    dict(paradigm="partial", K="probit", conditions=2, by_condition=("C", "weights", "t0"),
         deviation="subject", centered=("C", "weights", "mK")),
]


@pytest.mark.parametrize("case", range(len(HIER_CASES)))
def test_hierarchical_fast_potential_equals_pyros_traced_potential(case):
    kwargs = dict(HIER_CASES[case])
    conditions = kwargs.get("conditions", 1)
    model = HierarchicalTVA(3, 6, **kwargs)
    data = _data(kwargs["paradigm"], conditions, seed=20 + case, trials=60)
    data["subject"] = (torch.arange(60) // 7) % 3
    pyro.set_rng_seed(30 + case)
    data["reported"] = model.model(**data)
    # at prior medians (C near 40 items/s), not at Pyro's default uniform(-2, 2) point: there
    # C can be 0.01 items/s, and a report's probability of 1e-12 is a difference of O(1)
    # decays, whose rounding (1e-16 absolute) makes gradients of both potentials noisy
    init, pyro_potential, transforms, _ = initialize_model(
        model.model, model_kwargs=data, init_strategy=init_to_median(num_samples=31))
    fast = potential_from_log_joint(model.log_joint_fn(data), transforms)
    _assert_same_potential(fast, pyro_potential, init, scale=0.3, seed=200 + case)


@pytest.mark.parametrize("hierarchical", [False, True])
def test_batched_potential_rows_are_the_single_potentials(hierarchical):
    """A batch of parameter vectors (several chains in lockstep) gives each row's own potential
    and gradient."""
    kwargs = dict((HIER_CASES if hierarchical else CASES)[1])
    conditions = kwargs.get("conditions", 1)
    model = HierarchicalTVA(3, 6, **kwargs) if hierarchical else TVA(6, **kwargs)
    data = _data(kwargs["paradigm"], conditions, seed=40, trials=60)
    if hierarchical:
        data["subject"] = (torch.arange(60) // 7) % 3
    pyro.set_rng_seed(41)
    data["reported"] = model.model(**data)
    init, _, transforms, _ = initialize_model(
        model.model, model_kwargs=data, init_strategy=init_to_median(num_samples=31))
    log_joint = model.log_joint_fn(data)
    single = potential_from_log_joint(log_joint, transforms)
    batched = potential_from_log_joint(log_joint, transforms,
                                       {k: v.dim() for k, v in init.items()})
    g = torch.Generator().manual_seed(42)
    rows = [{k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype)
             for k, v in init.items()} for _ in range(3)]
    stacked = {k: torch.stack([r[k] for r in rows]).requires_grad_() for k in init}
    u = batched(stacked)
    assert u.shape == (3,)
    grads = torch.autograd.grad(u.sum(), list(stacked.values()))
    for i, row in enumerate(rows):
        z = {k: v.clone().requires_grad_() for k, v in row.items()}
        want = single(z)
        torch.testing.assert_close(u[i], want, rtol=1e-12, atol=1e-10)
        for got, ref in zip(grads, torch.autograd.grad(want, list(z.values())), strict=True):
            torch.testing.assert_close(got[i], ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [0, 4, 6])
def test_centred_and_non_centred_log_joints_differ_by_the_jacobian(case):
    """The centred model is the non-centred one under ``x = mean + sigma z``: at corresponding
    points the log joints differ by ``-sum log sigma`` over every subject-level value (the
    change of variables), so both give the same posterior of the subject parameters."""
    kwargs = {k: v for k, v in HIER_CASES[case].items() if k != "centered"}
    conditions = kwargs.get("conditions", 1)
    data = _data(kwargs["paradigm"], conditions, seed=50, trials=60)
    data["subject"] = (torch.arange(60) // 7) % 3
    plain = HierarchicalTVA(3, 6, **kwargs)
    centred = HierarchicalTVA(3, 6, centered=True, **kwargs)
    pyro.set_rng_seed(51)
    data["reported"] = plain.model(**data)
    trace = pyro.poutine.trace(plain.model).get_trace(**data)
    values = {k: trace.nodes[k]["value"] for k in plain.latent_names()}
    moved = {k: v for k, v in values.items() if not k.endswith("_z")}
    log_sigma = torch.zeros((), dtype=F64)
    for name in plain._shapes:
        z, mu, sigma = (values[f"{name}_{part}"] for part in ("z", "mu", "sigma"))
        per_condition = z.dim() > 1 + mu.dim()  # z (S, C, *u), else (S, *u)
        if per_condition and f"{name}_effect" in values:  # loc (C, *u): baseline, + effects
            mu = torch.cat([mu[None], mu + values[f"{name}_effect"]])
        moved[f"{name}_x"] = mu + sigma * z  # z (S, [C,] *u)
        log_sigma = log_sigma + torch.log(sigma).expand(z.shape).sum()
    want = plain.log_joint_fn(data)(values)
    got = centred.log_joint_fn(data)(moved)
    torch.testing.assert_close(got, want - log_sigma, rtol=1e-12, atol=1e-9)
    subject_values = plain._subject_values(values)  # the same subject-level parameters
    for name, x in centred._subject_values(moved).items():
        torch.testing.assert_close(x, subject_values[name], rtol=1e-12, atol=1e-12)


def test_centered_names_parameters_of_the_model():
    model = HierarchicalTVA(3, 6, paradigm="partial", K="probit", centered=["C", "mK"])
    assert model.centered == {"C", "mK"}
    assert {"C_x", "mK_x", "alpha_z", "sK_z"} <= set(model.latent_names())
    assert "C_z" not in model.latent_names()
    for bad in ("C", ["C", "K_probs"], 1):  # a bare string, not a parameter here, not names
        with pytest.raises(ValueError, match="centered"):
            HierarchicalTVA(3, 6, paradigm="partial", K="probit", centered=bad)


@pytest.mark.parametrize("centered", [False, True])
def test_shared_deviation_shifts_every_subject_by_the_same_effect(centered):
    """``deviation="subject"``: one deviation per subject, so every subject's unconstrained
    values differ between conditions by exactly the population effect; with the default
    ``"condition"`` they do not (independent deviations)."""
    kwargs = dict(paradigm="partial", K="probit", conditions=2, by_condition=("C", "weights"),
                  centered=centered)
    data = _data("partial", 2, seed=60, trials=60)
    data["subject"] = (torch.arange(60) // 7) % 4
    shared = HierarchicalTVA(4, 6, deviation="subject", **kwargs)
    assert shared._z_shape("C") == (4,) and shared._z_shape("weights") == (4, 5)
    site = "C_x" if centered else "C_z"
    assert shared.param_dims()[site] == ["subject"]
    pyro.set_rng_seed(61)
    trace = pyro.poutine.trace(shared.model).get_trace(**data)
    c, w = trace.nodes["C"]["value"], trace.nodes["weights"]["value"]  # (S, 2), (S, 2, 6)
    effect = trace.nodes["C_effect"]["value"]  # (1,)
    torch.testing.assert_close(c[:, 1].log() - c[:, 0].log(), effect.expand(4),
                               rtol=0, atol=1e-12)
    logits = (w[..., :5] / w[..., 5:]).log()  # the reference region's logit is 0
    torch.testing.assert_close(logits[:, 1] - logits[:, 0],
                               trace.nodes["weights_effect"]["value"][0].expand(4, 5),
                               rtol=0, atol=1e-12)
    independent = HierarchicalTVA(4, 6, **kwargs)
    pyro.set_rng_seed(61)
    c = pyro.poutine.trace(independent.model).get_trace(**data).nodes["C"]["value"]
    assert (c[:, 1].log() - c[:, 0].log()).std() > 1e-3
    with pytest.raises(ValueError, match="deviation"):
        HierarchicalTVA(4, 6, deviation="trial", **kwargs)


def test_map_of_a_centred_model_is_refused_because_it_has_no_mode():
    """The centred density is unbounded: with every subject's value at the population mean,
    the log joint grows like ``-S log sigma`` as the population sd shrinks, so a MAP would
    run to sigma = 0. ``fit`` refuses MAP (and SVI started at the MAP) with the reason; the
    non-centred model is accepted."""
    kwargs = dict(paradigm="partial", K="probit", weights=None)
    data = _data("partial", 1, seed=70, trials=30)
    data["subject"] = torch.arange(30) % 3
    centred = HierarchicalTVA(3, 6, centered=("C",), **kwargs)
    pyro.set_rng_seed(71)
    trace = pyro.poutine.trace(centred.model).get_trace(**data)  # parameters and reports
    values = {k: trace.nodes[k]["value"] for k in centred.latent_names()}
    data["reported"] = trace.nodes[centred.obs_name]["value"]
    log_joint = centred.log_joint_fn(data)
    heights = []
    for sigma in (1e-1, 1e-3, 1e-5):
        at = {**values, "C_sigma": torch.tensor(sigma, dtype=F64),
              "C_x": values["C_mu"].expand(3).clone()}
        heights.append(float(log_joint(at)))
    assert heights[0] < heights[1] < heights[2]
    assert heights[2] - heights[1] == pytest.approx(3 * 2 * torch.log(torch.tensor(10.0)).item(),
                                                    rel=1e-3)
    assert "centered=C" in centred.map_degenerate()
    for method, init in (("map", "map"), ("svi", "map")):
        with pytest.raises(ValueError, match="no posterior mode"):
            fit(centred, data, method=method, init=init, num_steps=2)
    assert HierarchicalTVA(3, 6, **kwargs).map_degenerate() is None


@pytest.mark.parametrize("case", [0, 3, 5])
def test_inference_data_lp_is_pyros_log_joint_of_each_draw(case):
    """``sample_stats.lp``, now computed by the batched fast log joint in chunks of draws,
    equals Pyro's ``log_prob_sum`` of the program conditioned on each draw (the traced
    density it replaces), for draws spread across the prior."""
    from pyro import poutine

    from bayesattn.inference.convert import to_inference_data

    kwargs = dict(CASES[case])
    model = TVA(6, **kwargs)
    data = _data(kwargs["paradigm"], kwargs.get("conditions", 1), seed=80 + case, trials=40)
    pyro.set_rng_seed(81 + case)
    data["reported"] = model.model(**data)
    init, _, transforms, _ = initialize_model(
        model.model, model_kwargs=data, init_strategy=init_to_median(num_samples=31))
    g = torch.Generator().manual_seed(82 + case)
    draws = {k: torch.stack([transforms[k].inv(v + 0.3 * torch.randn(v.shape, generator=g,
                                                                     dtype=v.dtype))
                             for _ in range(70)]).reshape(2, 35, *transforms[k].inv(v).shape)
             for k, v in init.items()}  # 2 chains x 35 draws: more than one chunk of 64
    idata = to_inference_data(model, data, draws, {}, num_prior_draws=0)
    for chain, draw in ((0, 0), (0, 34), (1, 20), (1, 34)):
        cond = {k: v[chain, draw] for k, v in draws.items()}
        trace = poutine.trace(poutine.condition(model.model, data=cond)).get_trace(**data)
        want = float(trace.log_prob_sum())
        got = float(idata.sample_stats["lp"][chain, draw])
        assert got == pytest.approx(want, rel=1e-10, abs=1e-8)


# -- the vectorised posterior predictive and deterministic sites (Pyro's Predictive, draw by
# draw, is the reference)

def _spread_draws(model, data, num, seed):
    """``num`` draws ``{site: (num, ...)}`` around the prior medians."""
    init, _, transforms, _ = initialize_model(
        model.model, model_kwargs=data, init_strategy=init_to_median(num_samples=31))
    g = torch.Generator().manual_seed(seed)
    return {k: torch.stack([transforms[k].inv(v + 0.3 * torch.randn(v.shape, generator=g,
                                                                    dtype=v.dtype))
                            for _ in range(num)]) for k, v in init.items()}


def _model_and_data(hierarchical, case):
    kwargs = dict((HIER_CASES if hierarchical else CASES)[case])
    conditions = kwargs.get("conditions", 1)
    if hierarchical:
        model = HierarchicalTVA(3, 6, **kwargs)
        data = _data(kwargs["paradigm"], conditions, seed=90 + case, trials=60)
        data["subject"] = (torch.arange(60) // 7) % 3
    else:
        model = TVA(6, **kwargs)
        data = _data(kwargs["paradigm"], conditions, seed=90 + case, trials=40)
    pyro.set_rng_seed(91 + case)
    data["reported"] = model.model(**data)
    return model, data


@pytest.mark.parametrize(("hierarchical", "case"),
                         [(False, c) for c in (0, 1, 3, 4, 5, 6)]
                         + [(True, c) for c in (0, 1, 3, 4, 7, 8)])
def test_vectorised_deterministics_equal_predictives(hierarchical, case):
    from pyro.infer import Predictive

    model, data = _model_and_data(hierarchical, case)
    draws = _spread_draws(model, data, 70, seed=92 + case)  # 70: more than one chunk
    got = model.deterministics(draws, data)
    pred = Predictive(model.model, posterior_samples=draws)(**{**data, "reported": None})
    want = {k: v for k, v in pred.items() if k not in draws and k != "reported"}
    assert set(got) == set(want) and got
    for k, v in want.items():
        torch.testing.assert_close(got[k], v.reshape(got[k].shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("hierarchical", "case"), [(False, 0), (False, 1), (True, 8)])
def test_vectorised_posterior_predictive_has_each_draws_report_distribution(hierarchical, case):
    """Two draws, each repeated 2,000 times: on every trial, the frequency with which the
    replicated report equals the observed one is that draw's likelihood of it (binomial
    bound, 4.5 standard errors per trial, and a chi-square over all of them), so the
    replicates use each draw's own parameters and the distribution of the program's
    observed site."""
    model, data = _model_and_data(hierarchical, case)
    two = _spread_draws(model, data, 2, seed=93 + case)
    reps = 2000
    draws = {k: v.repeat_interleave(reps, 0) for k, v in two.items()}  # draw 0, then draw 1
    replicated = model.posterior_predictive(draws, data, torch.Generator().manual_seed(94))
    assert replicated.dtype == torch.bool
    assert replicated.shape == (2 * reps, *data["reported"].shape)
    p = model.log_likelihood(two, data).exp().clamp(0.0, 1.0)  # (2, T)
    hits = (replicated == data["reported"]).all(-1).reshape(2, reps, -1).double().mean(1)
    se = (p * (1 - p) / reps).sqrt()
    assert bool(((hits - p).abs() <= 4.5 * se + 1.0 / reps).all()), (hits - p).abs().max()
    inner = (p > 1e-3) & (p < 1 - 1e-3)  # jointly: chi-square of the (draw, trial) cells
    chi2 = float((((hits - p) / se)[inner] ** 2).sum())
    df = int(inner.sum())
    assert chi2 < df + 5 * (2 * df) ** 0.5, (chi2, df)
    assert bool(((p[0] - p[1]).abs() > 10 * se.max(0).values).any())  # the draws differ


def test_inference_data_of_tva_replicates_without_predictive(monkeypatch):
    """``to_inference_data`` takes TVA's replicated reports and deterministic sites from its
    vectorised hooks; Pyro's ``Predictive`` is not run."""
    from bayesattn.inference import convert

    def refuse(*args, **kwargs):
        raise AssertionError("Predictive was called")

    monkeypatch.setattr(convert, "Predictive", refuse)
    model, data = _model_and_data(False, 0)
    draws = {k: v.reshape(2, 5, *v.shape[1:])
             for k, v in _spread_draws(model, data, 10, seed=95).items()}
    idata = convert.to_inference_data(model, data, draws, {}, num_prior_draws=0)
    assert idata.posterior_predictive["reported"].shape == (2, 5, 40, 6)
    assert idata.posterior["attention_weights"].shape == (2, 5, 6)
    assert idata.posterior["K_mean"].shape == (2, 5)


@pytest.mark.parametrize(("hierarchical", "case"),
                         [(False, c) for c in (0, 2, 4, 6)] + [(True, c) for c in (1, 3, 8)])
def test_pointwise_log_likelihood_by_display_equals_pyros_replay(hierarchical, case):
    """``log_likelihood`` evaluates each distinct (display, report) row once and copies it to
    its trials; per trial it equals the observed site's log-density of the Pyro program
    replayed at each draw (:meth:`BayesianModel.log_likelihood`), on designs whose displays
    repeat, including a fixed threshold whose impossible reports are exactly -inf."""
    from bayesattn.models.base import BayesianModel

    model, data = _model_and_data(hierarchical, case)
    draws = _spread_draws(model, data, 5, seed=96 + case)
    got = model.log_likelihood(draws, data)
    want = BayesianModel.log_likelihood(model, draws, data)
    assert got.shape == (5, data["exposure"].shape[0])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if case == 2 and not hierarchical:  # fixed t0: a draw above the shortest exposure
        late = {k: v[:1].clone() for k, v in draws.items()}
        late["t0"] = torch.full_like(late["t0"], 15.0)  # 10 ms trials cannot report
        got, want = model.log_likelihood(late, data), BayesianModel.log_likelihood(model, late,
                                                                                    data)
        assert bool(torch.isneginf(got).any())
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_prior_draws_follow_the_traced_programs_priors(case):
    """The vectorised prior group (``TVA.prior_draws``) against tracing the program once per
    draw: every element of every site passes a two-sample KS test (600 draws each, seeded).
    The cases include priors the data truncate (a fixed ``t0`` below the shortest exposure with
    a report; a real-valued ``K`` above the largest report minus one), which untruncated draws
    fail (p < 1e-10)."""
    from scipy.stats import ks_2samp

    from bayesattn.inference import convert

    model, data = _simulated(case, seed=20 + case)

    class Traced(TVA):
        def prior_draws(self, num, data):
            return None

    traced = Traced(6, **CASES[case])
    fast, fast_pred = convert._prior(model, data, 600, seed=1)
    slow, slow_pred = convert._prior(traced, data, 600, seed=2)
    assert set(fast) == set(slow) == set(model.latent_names())
    assert fast_pred.shape == slow_pred.shape == (600, *data["reported"].shape)
    for name in fast:
        assert fast[name].shape == slow[name].shape, name
        a, b = fast[name].reshape(600, -1), slow[name].reshape(600, -1)
        for j in range(a.shape[1]):
            assert ks_2samp(a[:, j], b[:, j]).pvalue > 1e-4, (name, j)
