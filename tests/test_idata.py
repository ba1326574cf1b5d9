"""The InferenceData of :func:`bayesattn.inference.to_inference_data` works with ArviZ's own tools.

Draws are not fitted: a sampling-importance-resampling step from the prior (Rubin 1988) gives
posterior-like draws in milliseconds, and ``to_inference_data`` is called directly, as every
fitting method does. The ArviZ functions named in issue 8 (``summary``, ``loo``, ``loo_pit``,
``plot_loo_pit``, ``plot_ppc``, ``plot_lm``, ``compare``, ``bfmi``, ``plot_energy``) must run
on it, the dims must be those ArviZ pairs up, and the numbers in it (``lp``, the prior draws)
are checked against independent computations.
"""

from __future__ import annotations

import json
import math
import warnings

import arviz as az
import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from bayesattn.experiments.regression import build_model
from bayesattn.inference.convert import OBS_DIM, check_loo_ready, to_inference_data
from bayesattn.models import LeastSquaresAttentionModel

matplotlib.use("Agg")  # noqa: E402 - tests only; the package never sets a backend
import matplotlib.pyplot as plt  # noqa: E402

DT = torch.float64
KINDS = ("kernel", "softmax", "gp", "least_squares")
SITES = {"kernel": "target", "softmax": "target", "gp": "value", "least_squares": "value"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    plt.close("all")


def xy(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0.0, 5.0, n, dtype=DT)
    return x, torch.sin(x) + 0.3 * torch.randn(n, dtype=DT, generator=g)


def sir_draws(model, data, chains=2, draws=60, proposals=300, seed=0):
    """Posterior-like draws ``{name: (chains, draws, ...)}``: prior draws resampled by their
    likelihood (sampling-importance-resampling)."""
    pyro.set_rng_seed(seed)
    traces = [poutine.trace(model.model).get_trace(**data) for _ in range(proposals)]
    names = model.latent_names()
    prop = {k: torch.stack([t.nodes[k]["value"] for t in traces]) for k in names}
    with torch.no_grad():
        logw = model.log_likelihood(prop, data).sum(-1)
    w = torch.softmax(logw, 0)
    g = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(w, chains * draws, replacement=True, generator=g)
    return {k: v[idx].reshape(chains, draws, *v.shape[1:]) for k, v in prop.items()}


@pytest.fixture(scope="module")
def built():
    """``{kind: (model, data, idata)}`` on the same data (x, y)."""
    x, y = xy()
    out = {}
    for kind in KINDS:
        model, data, _ = build_model(kind, x, y)
        draws = sir_draws(model, data)
        stats = {"energy": np.random.default_rng(1).normal(size=(2, 60)),
                 "my_stat": np.arange(120.0).reshape(2, 60)}
        out[kind] = model, data, to_inference_data(model, data, draws, stats, seed=3,
                                                   method="fake", num_prior_draws=50)
    return out


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("kind", KINDS)
def test_layout_pairs_observed_log_likelihood_and_predictive(built, kind):
    model, data, idata = built[kind]
    n = 40
    assert set(idata.groups()) >= {"posterior", "sample_stats", "log_likelihood",
                                   "posterior_predictive", "observed_data", "constant_data",
                                   "prior", "prior_predictive"}
    assert idata.attrs["observed_site"] == SITES[kind]
    assert idata.attrs["observed_variable"] == "y"
    assert idata.attrs["num_draws"] == 120
    assert idata.observed_data["y"].dims == (OBS_DIM,)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", OBS_DIM)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", OBS_DIM)
    assert idata.prior_predictive["y"].dims == ("chain", "draw", OBS_DIM)
    assert idata.prior_predictive["y"].shape == (1, 50, n)
    assert idata.posterior_predictive["attention_output"].dims == ("chain", "draw", OBS_DIM)
    np.testing.assert_array_equal(idata.observed_data[OBS_DIM].values, np.arange(n))
    # the input as the non-index coordinate x, in every group indexed by obs_id; for least
    # squares the keys are (1, x) and x is their second column
    x, y = xy()
    for group in ("observed_data", "log_likelihood", "posterior_predictive", "constant_data",
                  "prior_predictive"):
        np.testing.assert_array_equal(idata[group]["x"].values, x.numpy())
    np.testing.assert_array_equal(idata.observed_data["y"].values, y.numpy())
    # posterior: parameters only
    assert set(idata.posterior.data_vars) == set(model.latent_names())
    assert set(idata.prior.data_vars) == set(model.latent_names())
    # every stat passed is kept; lp added
    assert set(idata.sample_stats.data_vars) == {"energy", "my_stat", "lp"}
    np.testing.assert_array_equal(idata.sample_stats["my_stat"].values,
                                  np.arange(120.0).reshape(2, 60))


@pytest.mark.parametrize("kind", KINDS)
def test_lp_is_the_log_joint_density_of_each_draw(built, kind):
    """``lp`` against Pyro's own ``log_prob_sum`` of the model conditioned on the draw."""
    model, data, idata = built[kind]
    post = idata.posterior
    for chain, draw in ((0, 0), (1, 17), (1, 59)):
        cond = {k: torch.as_tensor(post[k].values[chain, draw]) for k in model.latent_names()}
        trace = poutine.trace(poutine.condition(model.model, data=cond)).get_trace(**data)
        expected = float(trace.log_prob_sum())
        assert float(idata.sample_stats["lp"][chain, draw]) == pytest.approx(expected, abs=1e-8)


def test_lp_passed_in_is_kept():
    model, data, _ = build_model("kernel", *xy())
    draws = sir_draws(model, data, chains=1, draws=5, proposals=20)
    lp = np.full((1, 5), -3.0)
    idata = to_inference_data(model, data, draws, {"lp": lp}, num_prior_draws=0)
    np.testing.assert_array_equal(idata.sample_stats["lp"].values, lp)
    assert "prior" not in idata.groups() and "prior_predictive" not in idata.groups()


def test_prior_draws_follow_the_prior_and_leave_the_global_rng_alone():
    """The prior noise draws have the HalfNormal(sd y) mean within 4 Monte-Carlo SEs."""
    x, y = xy()
    model, data, _ = build_model("kernel", x, y)
    draws = sir_draws(model, data, chains=1, draws=10, proposals=30)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    idata = to_inference_data(model, data, draws, {}, num_prior_draws=200, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    noise = idata.prior["noise"].values.reshape(-1)
    sd = float(y.std())
    mean, var = sd * math.sqrt(2 / math.pi), sd**2 * (1 - 2 / math.pi)
    assert abs(noise.mean() - mean) < 4 * math.sqrt(var / noise.size)
    # the prior predictive of the first observation: a mixture with the prior noise, so
    # its variance is at least E[noise^2] = sd^2 (the mixture adds the values' spread)
    first = idata.prior_predictive["y"].values[0, :, 0]
    assert first.var() > 0.5 * sd**2
    again = to_inference_data(model, data, draws, {}, num_prior_draws=200, seed=5)
    np.testing.assert_array_equal(again.prior_predictive["y"].values,
                                  idata.prior_predictive["y"].values)


@pytest.mark.parametrize("kind", ["kernel", "softmax", "gp"])
def test_vectorised_prior_groups_follow_the_traced_program(kind):
    """The selection and GP models draw their prior groups vectorised (``prior_draws`` +
    ``prior_predictive``); the same groups from tracing the unconditioned Pyro program once
    per draw (the generic path) must have the same distribution: two-sample KS tests on every
    latent and on two observations' replicates (seeded, so the p-values are fixed). Measured:
    replicates scaled by 1.3 fail it (p < 1e-3)."""
    from scipy.stats import ks_2samp

    from bayesattn.inference import convert

    x, y = xy()
    model, data, _ = build_model(kind, x, y)
    assert model.prior_draws(3, data) is not None

    class Traced(type(model)):
        def prior_draws(self, num, data):
            return None

    traced = Traced.__new__(Traced)
    traced.__dict__.update(model.__dict__)
    num = 600
    fast, fast_pred = convert._prior(model, data, num, seed=3)
    slow, slow_pred = convert._prior(traced, data, num, seed=4)
    assert set(fast) == set(slow) == set(model.latent_names())
    for name in fast:
        assert fast[name].shape == slow[name].shape == (num,)
        assert ks_2samp(fast[name], slow[name]).pvalue > 1e-3, name
    assert fast_pred.shape == slow_pred.shape == (num, *data[SITES[kind]].shape)
    for row in (0, 20):
        # |y|: the replicates are centred scale mixtures, and KS sees their scale better so
        assert ks_2samp(fast_pred[:, row, 0].abs().numpy(),
                        slow_pred[:, row, 0].abs().numpy()).pvalue > 1e-3


def test_several_value_columns_keep_y_dim_and_log_likelihood_is_per_observation():
    g = torch.Generator().manual_seed(4)
    key = torch.randn(25, 2, generator=g, dtype=DT)
    value = key @ torch.randn(2, 3, generator=g, dtype=DT) + 0.1 * torch.randn(
        25, 3, generator=g, dtype=DT)
    model = LeastSquaresAttentionModel(prior_scale=1.0, noise=dist.HalfNormal(
        torch.tensor(1.0, dtype=DT)))
    data = {"key": key, "value": value}
    draws = sir_draws(model, data, chains=2, draws=10, proposals=50)
    idata = to_inference_data(model, data, draws, {}, num_prior_draws=20)
    assert idata.observed_data["y"].dims == (OBS_DIM, "y_dim")
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", OBS_DIM, "y_dim")
    assert idata.prior_predictive["y"].shape == (1, 20, 25, 3)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", OBS_DIM)
    assert "x" not in idata.observed_data.coords  # two varying key columns: no single input
    # the pointwise term is the sum over the 3 columns of the Gaussian log-density
    W = idata.posterior["W"].values[1, 3]
    noise = float(idata.posterior["noise"][1, 3])
    resid = value.numpy() - key.numpy() @ W
    expected = (-0.5 * (resid / noise) ** 2 - math.log(noise) - 0.5 * math.log(2 * math.pi)
                ).sum(-1)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[1, 3], expected, atol=1e-10)


# ----------------------------------------------------------------------------- ArviZ runs
@pytest.mark.parametrize("kind", KINDS)
def test_arviz_summary_loo_loo_pit_and_plots_run(built, kind):
    model, data, idata = built[kind]
    table = az.summary(idata)
    assert list(table.index) == [
        name for v in model.latent_names() for name in
        ([v] if idata.posterior[v].ndim == 2 else
         [f"{v}[{', '.join(map(str, i))}]" for i in np.ndindex(idata.posterior[v].shape[2:])])
    ]
    check_loo_ready(idata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto k of resampled prior draws
        loo = az.loo(idata, pointwise=True)
    assert np.isfinite(loo.elpd_loo)
    assert loo.loo_i.shape == (40,)
    pit = az.loo_pit(idata, y="y")
    assert pit.shape == (40,) and ((pit >= 0) & (pit <= 1)).all()
    for plot in (lambda: az.plot_loo_pit(idata, y="y"),
                 lambda: az.plot_ppc(idata, num_pp_samples=20, random_seed=0),
                 lambda: az.plot_ppc(idata, group="prior", num_pp_samples=20, random_seed=0),
                 lambda: az.plot_lm(idata=idata, y="y", x="x", num_samples=10)):
        plot()
        plt.close("all")


def test_compare_ranks_models_fitted_to_the_same_y(built):
    table = az.compare({k: built[k][2] for k in ("kernel", "gp", "least_squares")})
    assert set(table.index) == {"kernel", "gp", "least_squares"}
    # sin(x) + noise: the straight line is the worst of the three
    assert table.index[-1] == "least_squares"


def test_bfmi_and_plot_energy_run_on_a_recorded_energy(built):
    idata = built["kernel"][2]
    energy = idata.sample_stats["energy"].values
    bfmi = az.bfmi(idata)
    # E-BFMI = sum (E_t - E_{t-1})^2 / sum (E_t - mean)^2 per chain (Betancourt 2016)
    expected = [np.sum(np.diff(e) ** 2) / np.sum((e - e.mean()) ** 2) for e in energy]
    np.testing.assert_allclose(bfmi, expected, rtol=1e-12)
    az.plot_energy(idata)
    plt.close("all")


def test_netcdf_round_trip_keeps_attrs_coords_and_values(built, tmp_path):
    idata = built["least_squares"][2]
    idata.attrs["diagnostics"] = json.dumps({"reasons": ["none"]})
    path = tmp_path / "ls.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(idata.groups())
    for key in ("observed_site", "observed_variable", "method", "model", "diagnostics"):
        assert back.attrs[key] == idata.attrs[key]
    assert int(back.attrs["num_draws"]) == 120
    for group in idata.groups():
        for name, var in idata[group].data_vars.items():
            np.testing.assert_array_equal(back[group][name].values, var.values)
    np.testing.assert_array_equal(back.observed_data["x"].values, idata.observed_data["x"].values)
    az.loo_pit(back, y="y")


# ----------------------------------------------------------------------------- point estimates
def test_single_draw_loo_is_refused_with_a_clear_message():
    """ArviZ fails on one draw with an IndexError; ``check_loo_ready`` says why first."""
    model, data, _ = build_model("kernel", *xy())
    one = {"bandwidth": torch.tensor([[0.4]], dtype=DT), "noise": torch.tensor([[0.3]],
                                                                                dtype=DT)}
    idata = to_inference_data(model, data, one, {}, method="map", num_prior_draws=10)
    assert idata.log_likelihood["y"].shape == (1, 1, 40)
    assert idata.sample_stats["lp"].shape == (1, 1)
    with pytest.raises(ValueError, match=r"one posterior draw.*'map'.*many posterior draws"):
        check_loo_ready(idata, "kernel")
    with pytest.raises(Exception):  # noqa: B017 - documents that ArviZ cannot do it itself
        az.loo(idata)


def test_fixed_hyperparameters_give_one_draw_of_nothing_and_a_finite_lp():
    x, y = xy()
    model = LeastSquaresAttentionModel(prior_scale=1.0, noise=0.5)
    data = {"key": torch.stack([torch.ones_like(x), x], -1), "value": y[:, None]}
    draws = {"W": torch.zeros(1, 1, 2, 1, dtype=DT)}
    idata = to_inference_data(model, data, draws, {}, method="exact", num_prior_draws=5)
    lp = float(idata.sample_stats["lp"][0, 0])
    expected = float(dist.Normal(torch.tensor(0.0, dtype=DT), 0.5).log_prob(y).sum()) \
        - math.log(2 * math.pi)  # + two N(0, 1) prior terms at W = 0
    assert lp == pytest.approx(expected, abs=1e-9)


def test_bad_arguments_raise_naming_them():
    model, data, _ = build_model("kernel", *xy())
    draws = sir_draws(model, data, chains=1, draws=4, proposals=10)
    with pytest.raises(ValueError, match="stats"):
        to_inference_data(model, data, draws, {"energy": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="num_prior_draws"):
        to_inference_data(model, data, draws, {}, num_prior_draws=-1)
    with pytest.raises(ValueError, match="observation 'target'"):
        to_inference_data(model, {"query": data["query"]}, draws, {})
    with pytest.raises(ValueError, match="entry 'y'"):
        to_inference_data(model, {**data, "y": data["target"]}, draws, {})


def test_pointwise_false_skips_the_per_draw_passes_and_keeps_the_rest():
    model, data, _ = build_model("kernel", *xy())
    draws = sir_draws(model, data, chains=2, draws=5, proposals=20)
    idata = to_inference_data(model, data, draws, {"energy": np.zeros((2, 5))},
                              pointwise=False)
    assert set(idata.groups()) == {"posterior", "sample_stats", "observed_data",
                                   "constant_data"}
    assert set(idata.sample_stats.data_vars) == {"energy"}
    assert idata.attrs["pointwise"] == 0
    assert idata.observed_data["y"].dims == (OBS_DIM,)
    assert "x" in idata.observed_data.coords
    assert list(az.summary(idata, kind="stats").index) == ["bandwidth", "noise"]
