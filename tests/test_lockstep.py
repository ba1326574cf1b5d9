"""Chains in lockstep (``bayesattn.inference.lockstep``) are the chains run one at a time.

The references are independent runs: the same chain function run alone with its own seed, and
NUTS chains run one after another through ``run_nuts(chain_method="sequential")``.
"""

from __future__ import annotations

import importlib
import json
import threading

import pyro
import pyro.distributions as dist
import pyro.ops.integrator as integrator
import pytest
import torch

from bayesattn.inference.lockstep import Lockstep, batched_value_and_grad, direct_gradients
from bayesattn.inference.nuts import run_nuts
from bayesattn.models.neuro.tva import TVA

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _quadratic(requests):
    """``U = sum((z - 1)^2)`` and its gradient, one request at a time (a test reference)."""
    return [(((r["x"] - 1.0) ** 2).sum(), [2.0 * (r["x"] - 1.0)]) for r in requests]


def _toy_chain(steps):
    """A chain that draws random points, asks for ``U`` and its gradient, and records both."""

    def chain(potential):
        seen = []
        for _ in range(steps):
            x = torch.randn(3, dtype=F64).requires_grad_()
            u = potential({"x": x})
            (g,) = torch.autograd.grad(u, [x])
            seen.append((x.detach().clone(), float(u.detach()), g.clone()))
        return seen

    return chain


def _alone(chain, seed):
    torch.manual_seed(seed)
    return chain(lambda z: ((z["x"] - 1.0) ** 2).sum())


def _states(seeds):
    saved = torch.get_rng_state()
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(torch.get_rng_state())
    torch.set_rng_state(saved)
    return out


def test_each_chain_gets_its_own_answers_and_random_stream():
    steps = [5, 2, 7]  # chains of different lengths: the batch shrinks as they finish
    batches = []

    def evaluate(requests):
        batches.append(len(requests))
        return _quadratic(requests)

    chains = [_toy_chain(n) for n in steps]
    results = Lockstep(evaluate, ["x"], chains, _states([11, 12, 13])).run()
    for chain, seed, got in zip(chains, [11, 12, 13], results, strict=True):
        want = _alone(chain, seed)
        assert len(got) == len(want)
        for (x, u, g), (x0, u0, g0) in zip(got, want, strict=True):
            torch.testing.assert_close(x, x0, rtol=0, atol=0)
            assert u == pytest.approx(u0, rel=1e-15)
            torch.testing.assert_close(g, g0, rtol=1e-15, atol=0)
    assert batches == [3, 3, 2, 2, 2, 1, 1]  # one evaluation per step of the live chains


def test_a_failing_chain_stops_the_others_and_raises():
    def failing(potential):
        potential({"x": torch.zeros(3, dtype=F64)})
        raise ValueError("chain 1 broke")

    before = threading.active_count()
    lock = Lockstep(_quadratic, ["x"], [_toy_chain(50), failing, _toy_chain(50)],
                    _states([1, 2, 3]))
    with pytest.raises(ValueError, match="chain 1 broke"):
        lock.run()
    assert threading.active_count() == before  # every chain's thread has ended


def test_batched_evaluation_rejects_bad_rows_and_falls_back_on_errors():
    def potential(z):
        x = z["x"]
        if bool((x < -5).any()):
            raise ValueError("outside the support")
        return torch.where(x[:, 0] > 5, torch.nan, (x**2).sum(-1))

    def fallback(z):
        return torch.tensor(float("inf"), dtype=F64), [torch.zeros(2, dtype=F64)]

    requests = [{"x": torch.tensor([1.0, 2.0], dtype=F64)},
                {"x": torch.tensor([9.0, 0.0], dtype=F64)}]
    (u0, (g0,)), (u1, (g1,)) = batched_value_and_grad(potential, ["x"], requests, 3, fallback)
    assert float(u0) == 5.0
    torch.testing.assert_close(g0, torch.tensor([2.0, 4.0], dtype=F64))
    assert float(u1) == float("inf") and bool((g1 == 0).all())  # NaN row: a rejected step
    requests.append({"x": torch.tensor([-9.0, 0.0], dtype=F64)})
    out = batched_value_and_grad(potential, ["x"], requests, 3, fallback)
    assert [float(u) for u, _ in out] == [float("inf")] * 3  # every row through the fallback


def test_vectorized_nuts_chains_are_the_sequential_chains():
    """Three TVA chains in lockstep give the draws of the same seeds run one after another
    (equal up to the rounding of the batched gradient, amplified by a few leapfrog steps)."""
    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    g = torch.Generator().manual_seed(0)
    exposure = torch.tensor([10.0, 20.0, 40.0, 80.0, 150.0], dtype=F64).repeat(8)
    distractors = torch.rand(40, 6, generator=g) < 0.3
    data = dict(exposure=exposure, targets=~distractors, distractors=distractors)
    pyro.set_rng_seed(1)
    data["reported"] = model.model(**data)
    kw = dict(num_samples=6, warmup_steps=6, num_chains=3, seed=4, target_accept_prob=0.8,
              max_tree_depth=4, jit_compile=False, progress_bar=False)
    seq_draws, seq_stats, _ = run_nuts(model, data, chain_method="sequential", **kw)
    vec_draws, vec_stats, _ = run_nuts(model, data, chain_method="vectorized", **kw)
    for k in seq_draws:
        assert vec_draws[k].shape == seq_draws[k].shape == (3, 6, *vec_draws[k].shape[2:])
        torch.testing.assert_close(vec_draws[k], seq_draws[k], rtol=1e-6, atol=1e-8)
    assert (vec_stats["n_steps"] == seq_stats["n_steps"]).all()
    assert not torch.equal(seq_draws["C"][0], seq_draws["C"][1])  # the chains differ


def _small_tva_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    exposure = torch.tensor([10.0, 20.0, 40.0, 80.0, 150.0], dtype=F64).repeat(8)
    distractors = torch.rand(40, 6, generator=g) < 0.3
    return dict(exposure=exposure, targets=~distractors, distractors=distractors)


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_init_values_start_each_chain_where_asked(monkeypatch, chain_method):
    """``init_values`` (one dict per chain) is each chain's starting point; sites left out
    start at a prior median (of random prior draws) as without it."""
    import bayesattn.inference.nuts as nuts

    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    data = _small_tva_data()
    pyro.set_rng_seed(1)
    data["reported"] = model.model(**data)
    starts = []
    real = nuts._sample_potential

    def spy(kernel, *args):
        starts.append(kernel.initial_params[nuts._FLAT].clone())
        return real(kernel, *args)

    monkeypatch.setattr(nuts, "_sample_potential", spy)
    kw = dict(num_samples=2, warmup_steps=2, num_chains=2, seed=4, target_accept_prob=0.8,
              max_tree_depth=3, jit_compile=False, progress_bar=False,
              chain_method=chain_method)
    run_nuts(model, data, **kw)
    asked = [{"C": torch.tensor(77.0, dtype=F64)}, {"C": torch.tensor(11.0, dtype=F64)}]
    run_nuts(model, data, init_values=asked, **kw)
    default, given = starts[:2], starts[2:]
    # the flat vector is the sorted sites, unconstrained: "C" first, as log C
    assert [float(torch.exp(s[0])) for s in given] == pytest.approx([77.0, 11.0], rel=1e-12)
    assert all(abs(float(torch.exp(d[0])) - 77.0) > 1.0 for d in default)
    assert all(bool(torch.isfinite(s).all()) for s in given)  # the rest: prior medians


def test_fit_rejects_bad_init_values():
    from bayesattn.inference import fit

    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    data = _small_tva_data()
    pyro.set_rng_seed(1)
    data["reported"] = model.model(**data)
    bad = [({"nope": 1.0}, "not latent"),
           ([{"C": 50.0}], "list of 2"),
           ({"C": torch.ones(3)}, "shape"),
           ({"C": float("nan")}, "must be finite")]
    for values, message in bad:
        with pytest.raises(ValueError, match=message):
            fit(model, data, method="nuts", num_chains=2, num_samples=2, warmup_steps=2,
                init_values=values, progress_bar=False)
    bad_mass = [({"weights": torch.ones(6)}, r"shape \(5,\) \(unconstrained\)"),
                ({"C": -1.0}, "positive"),
                ({"nope": 1.0}, "not latent")]
    for values, message in bad_mass:
        with pytest.raises(ValueError, match=message):
            fit(model, data, method="nuts", num_chains=2, num_samples=2, warmup_steps=2,
                inverse_mass_matrix=values, progress_bar=False)


@pytest.mark.parametrize("full_mass", [False, True])
def test_initial_inverse_mass_is_the_starting_metric(full_mass):
    """A Gaussian with sds 100 and 0.01: with its variances as the starting inverse mass the
    step size search finds a step near 1, with Pyro's identity one near 0.01 (the narrow
    direction limits it); sites left out keep 1."""
    from torch.distributions.transforms import identity_transform

    from bayesattn.inference.nuts import RecordingNUTS

    sd = torch.tensor([100.0, 0.01], dtype=F64)

    def potential(z):
        return 0.5 * ((z["x"] / sd) ** 2).sum() + 0.5 * (z["y"] ** 2).sum()

    steps = {}
    for given in (None, {"x": sd**2}):
        pyro.set_rng_seed(0)
        kernel = RecordingNUTS(potential_fn=potential, full_mass=full_mass,
                               transforms={"x": identity_transform, "y": identity_transform},
                               initial_inverse_mass=given)
        kernel.initial_params = {"x": torch.tensor([1.0, 0.001], dtype=F64),
                                 "y": torch.zeros(3, dtype=F64)}
        kernel.setup(10)
        (key, metric), = kernel.inverse_mass_matrix.items()
        assert key == ("x", "y")
        diag = metric if metric.dim() == 1 else torch.diagonal(metric)
        want = torch.ones(5, dtype=F64) if given is None else torch.cat([sd**2, torch.ones(3)])
        torch.testing.assert_close(diag, want)
        steps[given is None] = kernel.step_size
        kernel.cleanup()
    assert steps[True] < 0.05 < 0.3 < steps[False]


def _spy_run_nuts(monkeypatch):
    """Record the start ``fit`` hands to ``run_nuts`` (the real sampler still runs)."""
    fit_module = importlib.import_module("bayesattn.inference.fit")  # the package exports fit()
    seen = []
    real = fit_module.run_nuts

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "run_nuts", spy)
    return seen


def test_map_start_begins_each_chain_at_its_own_laplace_draw(monkeypatch):
    """``init_values="map"``: chain ``c`` starts at draw ``c`` of ``fit(method="map")`` with the
    same seed (400 Laplace draws), and the starting metric is those draws' variance on each
    site's unconstrained scale (Pyro's transforms of the program)."""
    from pyro.infer.mcmc.util import initialize_model

    from bayesattn.inference import fit

    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    data = _small_tva_data()
    pyro.set_rng_seed(1)
    data["reported"] = model.model(**data)
    seen = _spy_run_nuts(monkeypatch)
    idata = fit(model, data, method="nuts", num_chains=3, num_samples=3, warmup_steps=3,
                seed=5, init_values="map", progress_bar=False)
    start = seen[0]
    laplace = fit(model, data, method="map", num_chains=1, num_samples=400, seed=5,
                  progress_bar=False).posterior
    _, _, transforms, _ = initialize_model(model.model, model_kwargs=data)
    assert len(start["init_values"]) == 3
    for name in model.latent_names():
        draws = torch.as_tensor(laplace[name].values[0], dtype=F64)
        for c in range(3):
            torch.testing.assert_close(start["init_values"][c][name], draws[c], rtol=1e-12,
                                       atol=0)
        assert not torch.equal(start["init_values"][0][name], start["init_values"][1][name])
        torch.testing.assert_close(start["inverse_mass_matrix"][name],
                                   transforms[name](draws).var(0), rtol=1e-10, atol=0)
    assert json.loads(idata.attrs["diagnostics"])["settings"]["start"] == "map-laplace"


def test_map_start_falls_back_when_laplace_gives_a_point_estimate(monkeypatch):
    """A MAP fit whose Hessian fails (a point estimate) leaves the default start, and the
    verdict says so; bad ``init_values`` strings and models without a mode are refused."""
    from bayesattn.inference import fit
    from bayesattn.models.neuro.tva import HierarchicalTVA

    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    data = _small_tva_data()
    pyro.set_rng_seed(1)
    data["reported"] = model.model(**data)
    seen = _spy_run_nuts(monkeypatch)
    monkeypatch.setattr(importlib.import_module("bayesattn.inference.fit"), "fit_map",
                        lambda *a, **k: ({}, {"figures": {"point_estimate": True}}))
    idata = fit(model, data, method="nuts", num_chains=2, num_samples=2, warmup_steps=2,
                init_values="map", progress_bar=False)
    assert seen[0]["init_values"] is None and seen[0]["inverse_mass_matrix"] is None
    assert "point estimate" in json.loads(idata.attrs["diagnostics"])["settings"]["start"]
    with pytest.raises(ValueError, match="init_values must be"):
        fit(model, data, method="nuts", init_values="median", progress_bar=False)
    centred = HierarchicalTVA(3, 6, paradigm="partial", K="probit", weights=None,
                              centered=("C",))
    hdata = dict(data, subject=torch.arange(40) % 3)
    with pytest.raises(ValueError, match="no posterior mode"):
        fit(centred, hdata, method="nuts", init_values="map", progress_bar=False)


def test_direct_gradients_uses_the_known_gradient_only_inside_and_restores_pyro():
    original = integrator.potential_grad
    z = {"x": torch.tensor([1.0, -2.0], dtype=torch.float64)}

    def quadratic(v):
        return 1.5 * (v["x"] ** 2).sum()

    def known(v):  # must not be called: the gradient is known
        raise AssertionError("called the potential")

    known.value_and_grad = lambda v: ({"x": torch.tensor([7.0, 8.0])}, torch.tensor(9.0))
    with direct_gradients():
        grads, u = integrator.potential_grad(known, z)
        assert torch.equal(grads["x"], torch.tensor([7.0, 8.0])) and float(u) == 9.0
        grads, u = integrator.potential_grad(quadratic, dict(z))  # autograd, as Pyro
        torch.testing.assert_close(grads["x"], 3.0 * z["x"])
        assert float(u) == 7.5
    assert integrator.potential_grad is original
    with pytest.raises(AssertionError, match="called the potential"):
        integrator.potential_grad(known, z)


def test_a_nuts_worker_does_not_load_arviz_and_the_package_exports_the_functions():
    """A chain worker imports bayesattn.inference.nuts (and the model): not ArviZ, SciPy's
    stats or Matplotlib, ~3 s a worker. Loading the submodules ``fit`` and ``compare`` leaves
    the package's ``fit`` and ``compare`` the functions."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, bayesattn.inference.nuts, bayesattn.models.neuro.tva\n"
            "print(sorted(m for m in ('arviz', 'scipy.stats', 'matplotlib') if m in sys.modules))\n"
            "import bayesattn.inference.fit, bayesattn.inference.compare\n"
            "import bayesattn.inference as I\n"
            "from bayesattn.inference import fit, compare\n"
            "print(callable(I.fit) and fit is I.fit and type(compare).__name__)")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "function"]
