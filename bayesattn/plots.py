"""Plots (Matplotlib; ArviZ where it already has the plot).

Every function draws into a new or given Matplotlib figure and returns the figure; save it
with ``fig.savefig(path)``. The functions only draw: the quantities they show (predictive
draws and moments, attention-weight moments) come from :mod:`bayesattn.inference.predictive`.
Text that comes from data (column names) should pass through :func:`literal` so a ``$`` in it
is not read as Matplotlib mathtext.
"""

from __future__ import annotations

from statistics import NormalDist

import arviz as az
import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "literal",
    "plot_predictive_band",
    "plot_attention_weights",
    "plot_posteriors",
    "plot_compare",
]


def literal(text: str) -> str:
    """``text`` shown as typed in Matplotlib labels: every ``$`` escaped (no mathtext)."""
    return str(text).replace("$", r"\$")


def plot_predictive_band(x, y, grid, draws=None, *, mean=None, sd=None, ax=None, title="",
                         xlabel="x", ylabel="y"):
    """Posterior predictive band over the data: the predictive mean, 50% and 94% intervals.

    Two forms:

    * ``draws`` (``D >= 2`` predictive draws): central intervals are the draws' quantiles
      (3-97% and 25-75%); the line is ``mean`` when given, else the draws' mean.
    * ``mean`` and ``sd`` (e.g. a point estimate's plug-in predictive): intervals
      ``mean +- z sd`` with normal quantiles ``z`` = 1.881 (94%) and 0.674 (50%).

    Args:
        x, y: the observed data ``(N,)``.
        grid: ``(G,)`` input points of the band.
        draws: ``(D, G)`` posterior predictive draws at ``grid``.
        mean, sd: ``(G,)`` predictive mean and standard deviation at ``grid`` (data units).
        ax: draw into this Axes instead of a new figure.
        title, xlabel, ylabel: texts (mathtext allowed; see :func:`literal`).

    Returns:
        The figure.

    Raises:
        ValueError: neither ``draws`` nor both ``mean`` and ``sd``; fewer than 2 draws without
            ``sd``; shapes that do not match ``grid``.
    """
    grid = np.asarray(grid)
    if draws is not None and np.asarray(draws).shape[0] >= 2:
        draws = np.asarray(draws)
        if draws.ndim != 2 or draws.shape[1] != grid.shape[0]:
            raise ValueError(f"draws must have shape (D, {grid.shape[0]}), got {draws.shape}")
        lo94, lo50, hi50, hi94 = np.quantile(draws, [0.03, 0.25, 0.75, 0.97], axis=0)
        line = draws.mean(0) if mean is None else np.asarray(mean)
        kind = ""
    elif mean is not None and sd is not None:
        line, sd = np.asarray(mean), np.asarray(sd)
        z94, z50 = NormalDist().inv_cdf(0.97), NormalDist().inv_cdf(0.75)
        lo94, hi94, lo50, hi50 = line - z94 * sd, line + z94 * sd, line - z50 * sd, line + z50 * sd
        kind = " (mean \u00b1 z sd)"
    else:
        raise ValueError("need draws (at least 2) or both mean and sd")
    if line.shape != grid.shape:
        raise ValueError(f"mean must have shape {grid.shape}, got {line.shape}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    ax.fill_between(grid, lo94, hi94, color="C0", alpha=0.2, label="94% interval" + kind)
    ax.fill_between(grid, lo50, hi50, color="C0", alpha=0.4, label="50% interval" + kind)
    ax.plot(grid, line, color="C0", lw=1.5, label="predictive mean")
    ax.scatter(x, y, s=8, color="k", label="data", zorder=3)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="best", fontsize=8)
    return fig


def plot_attention_weights(mean, sd=None, *, query_coords=None, key_coords=None, title="",
                           xlabel="key", ylabel="query"):
    """Attention weights ``(L, S)``: posterior mean beside posterior standard deviation.

    With ``sd=None`` (a point estimate) only the weights are drawn.

    Returns:
        The figure (one or two heat maps with colour bars).
    """
    panels = [(np.asarray(mean), "posterior mean" if sd is not None else "point estimate")]
    if sd is not None:
        panels.append((np.asarray(sd), "posterior sd"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4),
                             constrained_layout=True, squeeze=False)
    arr0 = panels[0][0]
    xs = np.arange(arr0.shape[1]) if key_coords is None else np.asarray(key_coords)
    ys = np.arange(arr0.shape[0]) if query_coords is None else np.asarray(query_coords)
    for ax, (arr, name) in zip(axes[0], panels, strict=True):
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
