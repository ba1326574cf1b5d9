"""Plots (Matplotlib; ArviZ where it already has the plot).

Every function draws into a new or given Matplotlib figure and returns the figure; save it
with ``fig.savefig(path)``.
"""

from __future__ import annotations

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = [
    "posterior_draws",
    "predictive_draws",
    "plot_predictive_band",
    "plot_attention_weights",
    "plot_posteriors",
    "plot_compare",
]


def posterior_draws(idata, names, *, max_draws=400, seed=0):
    """A random subset of at most ``max_draws`` posterior draws, chains pooled.

    Returns ``({name: tensor (D, ...)}, D)``.
    """
    post = idata.posterior
    total = post.sizes["chain"] * post.sizes["draw"]
    idx = np.random.default_rng(seed).choice(total, size=min(max_draws, total), replace=False)
    out = {}
    for name in names:
        arr = post[name].values.reshape(total, *post[name].shape[2:])
        out[name] = torch.as_tensor(arr[idx])
    return out, len(idx)


def predictive_draws(model, idata, query, data, *, max_draws=400, seed=0):
    """Posterior predictive draws of new observations at ``query (G, E)``: ``(D, G, Ev)``.

    One draw of ``model.predictive_sample`` per posterior draw (at most ``max_draws``, chosen
    at random), so the draws mix parameter uncertainty and observation noise.
    """
    draws, num = posterior_draws(idata, model.latent_names(), max_draws=max_draws, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return torch.stack([
            model.predictive_sample(query, {k: v[d] for k, v in draws.items()}, data, gen)
            for d in range(num)
        ])


def plot_predictive_band(x, y, grid, draws, *, ax=None, title="", xlabel="x", ylabel="y"):
    """Posterior predictive band over the data: median, 50% and 94% central intervals.

    Args:
        x, y: the observed data ``(N,)``.
        grid: ``(G,)`` input points of the band.
        draws: ``(D, G)`` posterior predictive draws at ``grid``.
    """
    draws = np.asarray(draws)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    lo94, lo50, med, hi50, hi94 = np.quantile(draws, [0.03, 0.25, 0.5, 0.75, 0.97], axis=0)
    ax.fill_between(grid, lo94, hi94, color="C0", alpha=0.2, label="94% interval")
    ax.fill_between(grid, lo50, hi50, color="C0", alpha=0.4, label="50% interval")
    ax.plot(grid, med, color="C0", lw=1.5, label="median")
    ax.scatter(x, y, s=8, color="k", label="data", zorder=3)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="best", fontsize=8)
    return fig


def plot_attention_weights(mean, sd, *, query_coords=None, key_coords=None, title="",
                           xlabel="key", ylabel="query"):
    """Attention weights ``(L, S)``: posterior mean beside posterior standard deviation."""
    mean, sd = np.asarray(mean), np.asarray(sd)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    xs = np.arange(mean.shape[1]) if key_coords is None else np.asarray(key_coords)
    ys = np.arange(mean.shape[0]) if query_coords is None else np.asarray(query_coords)
    for ax, arr, name in ((axes[0], mean, "posterior mean"), (axes[1], sd, "posterior sd")):
        # pcolormesh: keys need not be evenly spaced
        im = ax.pcolormesh(xs, ys, arr, shading="nearest", cmap="viridis")
        ax.invert_yaxis()
        ax.set(title=f"{title} weights: {name}", xlabel=xlabel, ylabel=ylabel)
        fig.colorbar(im, ax=ax)
    return fig


def plot_posteriors(idata, var_names, *, title=""):
    """Marginal posteriors of ``var_names`` with 94% HDI (``arviz.plot_posterior``)."""
    axes = az.plot_posterior(idata, var_names=var_names, hdi_prob=0.94,
                             figsize=(3.2 * len(var_names), 2.8))
    fig = np.atleast_1d(axes).ravel()[0].figure
    if title:
        fig.suptitle(title, y=1.04)
    return fig


def plot_compare(table):
    """The LOO comparison table as ArviZ's compare plot (elpd with standard errors)."""
    ax = az.plot_compare(table, figsize=(6, 1 + 0.6 * len(table)))
    return ax.figure
