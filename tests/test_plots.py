"""Plots draw what they are given (artists checked against independent computations), text
from data is shown literally, and the predictive computations behind them
(:mod:`bayesattn.inference.predictive`) agree with Monte Carlo."""

from __future__ import annotations

import io

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection, QuadMesh
from scipy import stats

from bayesattn import plots
from bayesattn.experiments.regression import build_model
from bayesattn.inference.predictive import (
    attention_weight_moments,
    num_posterior_draws,
    posterior_draws,
    predictive_draws,
    predictive_moments,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _band_edges(coll: PolyCollection, grid: np.ndarray):
    """Lower and upper edge of a fill_between polygon at each grid point."""
    verts = coll.get_paths()[0].vertices
    lo = np.array([verts[np.isclose(verts[:, 0], g), 1].min() for g in grid])
    hi = np.array([verts[np.isclose(verts[:, 0], g), 1].max() for g in grid])
    return lo, hi


def _quantile(sorted_draws: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolation quantile (Hyndman & Fan type 7), written out."""
    h = (sorted_draws.shape[0] - 1) * q
    lo = int(np.floor(h))
    hi = min(lo + 1, sorted_draws.shape[0] - 1)
    return sorted_draws[lo] + (h - lo) * (sorted_draws[hi] - sorted_draws[lo])


def test_band_from_draws_has_two_intervals_and_the_given_mean():
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 15)
    draws = rng.normal(np.sin(grid), 0.2 + grid, size=(301, grid.size))
    mean = np.sin(grid)
    fig = plots.plot_predictive_band(grid, np.cos(grid), grid, draws, mean=mean)
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    srt = np.sort(draws, axis=0)
    for band, (ql, qh) in zip(bands, [(0.03, 0.97), (0.25, 0.75)], strict=True):
        lo, hi = _band_edges(band, grid)
        np.testing.assert_allclose(lo, _quantile(srt, ql), rtol=1e-12)
        np.testing.assert_allclose(hi, _quantile(srt, qh), rtol=1e-12)
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_ydata(), mean)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "predictive mean" in labels and "median" not in labels


def test_band_without_mean_draws_the_mean_of_the_draws():
    rng = np.random.default_rng(1)
    grid = np.linspace(0, 1, 5)
    draws = rng.exponential(size=(200, 5))  # skewed: mean and median differ
    ax = plots.plot_predictive_band(grid, grid, grid, draws).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), draws.sum(0) / 200, rtol=1e-12)


def test_band_from_mean_and_sd_uses_normal_quantiles():
    grid = np.linspace(-1, 1, 9)
    mean, sd = grid**2, 0.1 + 0.05 * np.abs(grid)
    fig = plots.plot_predictive_band(grid, mean, grid, mean=mean, sd=sd)
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    for band, level in zip(bands, (0.94, 0.50), strict=True):
        z = stats.norm.ppf(0.5 + level / 2)
        lo, hi = _band_edges(band, grid)
        np.testing.assert_allclose(lo, mean - z * sd, rtol=1e-9)
        np.testing.assert_allclose(hi, mean + z * sd, rtol=1e-9)


def test_band_needs_draws_or_both_moments():
    grid = np.arange(3.0)
    with pytest.raises(ValueError, match="draws"):
        plots.plot_predictive_band(grid, grid, grid)
    with pytest.raises(ValueError, match="draws"):
        plots.plot_predictive_band(grid, grid, grid, np.ones((1, 3)))  # one draw, no sd
    with pytest.raises(ValueError, match="shape"):
        plots.plot_predictive_band(grid, grid, grid, np.ones((4, 2)))


def test_literal_keeps_dollar_signs_out_of_mathtext():
    raw = r"y $\frac$"
    fig, ax = plt.subplots()
    ax.set_xlabel(raw)
    with pytest.raises(ValueError):  # unescaped: Matplotlib's mathtext parser fails
        fig.savefig(io.BytesIO(), format="png")
    ax.set_xlabel(plots.literal(raw))
    fig.savefig(io.BytesIO(), format="png")
    assert plots.literal("a $b$ c") == r"a \$b\$ c"


@pytest.mark.parametrize("with_sd", [True, False])
def test_attention_weights_draws_one_panel_per_statistic(with_sd):
    w = np.full((4, 6), 1 / 6)
    fig = plots.plot_attention_weights(w, w * 0.1 if with_sd else None,
                                       key_coords=np.arange(6.0) ** 2)
    panels = [ax for ax in fig.axes if ax.get_title()]  # colour bars have no title
    assert len(panels) == (2 if with_sd else 1)
    meshes = [c for ax in panels for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == len(panels)
    assert panels[-1].get_title().endswith("posterior sd" if with_sd else "point estimate")
    np.testing.assert_allclose(np.asarray(meshes[0].get_array()).reshape(4, 6), w)


# ----------------------------------------------------------------------------- predictive
def _data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 6, n, dtype=torch.float64)
    y = torch.sin(x) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def _idata(post: dict, chains: int) -> az.InferenceData:
    return az.from_dict(posterior={k: v.reshape(chains, -1, *v.shape[1:]).numpy()
                                   for k, v in post.items()})


def _lognormal(g, num, loc, scale):
    return torch.exp(loc + scale * torch.randn(num, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("name", ["least_squares", "kernel"])
def test_predictive_moments_match_monte_carlo_predictive_draws(name):
    """Law of total variance vs. the sample mean and sd of one predictive draw per posterior
    draw (1500 draws): within 4 Monte Carlo standard errors."""
    x, y = _data()
    model, data, features = build_model(name, x, y)
    g = torch.Generator().manual_seed(3)
    num = 1500
    if name == "kernel":
        post = {"bandwidth": _lognormal(g, num, np.log(0.4), 0.3),
                "noise": _lognormal(g, num, np.log(0.3), 0.2)}
    else:
        post = {"W": torch.tensor([[0.5], [-0.1]], dtype=torch.float64)
                + 0.1 * torch.randn(num, 2, 1, generator=g, dtype=torch.float64),
                "prior_scale": _lognormal(g, num, 0.0, 0.1),
                "noise": _lognormal(g, num, np.log(0.3), 0.2)}
    idata = _idata(post, chains=4)
    query = features(torch.tensor([0.3, 2.0, 5.5], dtype=torch.float64))
    mean, sd = predictive_moments(model, idata, query, data, max_draws=num)
    draws = predictive_draws(model, idata, query, data, max_draws=num, seed=5)
    assert draws.shape == (num, 3, 1)
    mc_mean, mc_sd = draws.mean(0), draws.std(0)
    assert torch.all((mc_mean - mean).abs() < 4 * sd / num**0.5)
    # sd of the sample sd ~ sd * sqrt((kurtosis - 1) / (4 n)); kurtosis <= 9 here
    assert torch.all((mc_sd - sd).abs() < 4 * sd * (8 / (4 * num)) ** 0.5)


def test_point_estimate_moments_are_the_models_own_predictive():
    x, y = _data()
    model, data, features = build_model("gp", x, y)
    point = {"lengthscale": torch.tensor([0.8], dtype=torch.float64),
             "amplitude": torch.tensor([1.1], dtype=torch.float64),
             "noise": torch.tensor([0.25], dtype=torch.float64)}
    idata = _idata(point, chains=1)
    assert num_posterior_draws(idata) == 1
    query = features(torch.linspace(0, 6, 7, dtype=torch.float64))
    mean, sd = predictive_moments(model, idata, query, data)
    # an independent GP posterior (Rasmussen & Williams 2006, eq. 2.25-2.26) with an RBF kernel
    def k(a, b):
        return 1.1**2 * torch.exp(-0.5 * (a[:, None] - b[None, :]) ** 2 / 0.8**2)

    q = query[:, 0]
    K = k(x, x) + 0.25**2 * torch.eye(len(x), dtype=torch.float64)
    ks = k(q, x)
    ref_mean = ks @ torch.linalg.solve(K, y)
    ref_var = 1.1**2 - (ks * torch.linalg.solve(K, ks.T).T).sum(1) + 0.25**2
    torch.testing.assert_close(mean[:, 0], ref_mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(sd[:, 0], ref_var.sqrt(), rtol=1e-8, atol=1e-10)


def test_posterior_draws_subset_without_replacement():
    vals = torch.arange(12, dtype=torch.float64)
    idata = _idata({"a": vals, "b": 10 * vals}, chains=3)
    draws, num = posterior_draws(idata, ["a", "b"], max_draws=5, seed=2)
    assert num == 5 and len(set(draws["a"].tolist())) == 5
    assert set(draws["a"].tolist()) <= set(vals.tolist())
    torch.testing.assert_close(draws["b"], 10 * draws["a"])
    assert posterior_draws(idata, [], max_draws=5) == ({}, 1)
    with pytest.raises(ValueError, match="max_draws"):
        posterior_draws(idata, ["a"], max_draws=0)


def test_attention_weight_moments_are_distributions_with_spread():
    x, y = _data(12)
    model, _, _ = build_model("kernel", x, y)
    g = torch.Generator().manual_seed(0)
    idata = _idata({"bandwidth": _lognormal(g, 50, np.log(0.5), 0.5),
                    "noise": _lognormal(g, 50, np.log(0.3), 0.1)}, chains=2)
    query = torch.tensor([[1.0], [3.3]], dtype=torch.float64)
    mean, sd, num = attention_weight_moments(model, idata, query)
    assert num == 50 and mean.shape == sd.shape == (2, 12)
    torch.testing.assert_close(mean.sum(1), torch.ones(2, dtype=torch.float64))
    assert float(sd.max()) > 0.01
    one = _idata({"bandwidth": torch.tensor([0.5], dtype=torch.float64),
                  "noise": torch.tensor([0.3], dtype=torch.float64)}, chains=1)
    mean1, sd1, num1 = attention_weight_moments(model, one, query)
    assert num1 == 1 and float(sd1.abs().max()) == 0.0
    # the weights of a Gaussian kernel, written out
    d2 = (query - x[None, :]) ** 2
    ref = torch.softmax(-0.5 * d2 / 0.5**2, dim=1)
    torch.testing.assert_close(mean1, ref)
