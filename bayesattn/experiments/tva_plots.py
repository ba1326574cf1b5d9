"""Figures of ``bayesattn tva fit``: observed vs predicted scores, parameters across fits."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["score_table", "plot_fits", "plot_parameters"]


def score_table(idata, index=None) -> list[dict]:
    """Observed and predicted mean score (items reported per trial) per exposure and number of
    distractors.

    Args:
        idata: a fit with ``observed_data.reported (obs_id, N)``,
            ``posterior_predictive.reported (chain, draw, obs_id, N)`` and
            ``constant_data.exposure`` (and ``distractors`` in partial report).
        index: the trials to use (default all).

    Returns:
        ``[{"exposure", "distractors", "trials", "observed", "predicted", "lo", "hi"}]``,
        ``lo``/``hi`` the 3% and 97% quantiles of the predicted mean over posterior draws.
    """
    obs = np.asarray(idata.observed_data["reported"].values).sum(-1)
    rep = idata.posterior_predictive["reported"].values
    pred = rep.reshape(-1, *rep.shape[2:]).sum(-1)  # (S, T)
    exposure = np.asarray(idata.constant_data["exposure"].values)
    nd = (np.asarray(idata.constant_data["distractors"].values).sum(-1)
          if "distractors" in idata.constant_data else np.zeros_like(exposure, dtype=int))
    if index is None:
        index = np.arange(len(exposure))
    rows = []
    for t, d in sorted({(float(exposure[i]), int(nd[i])) for i in index}):
        sel = index[(exposure[index] == t) & (nd[index] == d)]
        means = pred[:, sel].mean(1)
        rows.append({"exposure": t, "distractors": d, "trials": len(sel),
                     "observed": float(obs[sel].mean()), "predicted": float(means.mean()),
                     "lo": float(np.quantile(means, 0.03)),
                     "hi": float(np.quantile(means, 0.97))})
    return rows


def _panels(plans, idatas):
    for i, plan in enumerate(plans):
        idata = idatas.get(i)
        if idata is None or "posterior_predictive" not in idata.groups():
            continue
        if plan["subjects"] and "subject" in idata.constant_data:
            codes = np.asarray(idata.constant_data["subject"].values)
            for s, label in enumerate(plan["subjects"]):
                yield f"subject {label}", idata, np.flatnonzero(codes == s)
        else:
            title = ", ".join(f"{k} {v}" for k, v in plan["key"].items())
            yield title, idata, None


def plot_fits(out, name: str, plans, idatas: dict, *, max_panels: int = 48) -> None:
    """``name``: one panel per fit (per subject of a hierarchical fit), at most
    ``max_panels``: observed mean score (dots) and the posterior predictive mean with its 94%
    band (line, error bars) against exposure, one colour per number of distractors."""
    from matplotlib.figure import Figure

    panels = list(_panels(plans, idatas))
    shown = panels[:max_panels]
    cols = max(1, min(6, math.ceil(math.sqrt(len(shown) or 1))))
    nrows = max(1, math.ceil(len(shown) / cols))
    fig = Figure(figsize=(3.0 * cols, 2.5 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, sharex=True, sharey=True, squeeze=False)
                         ).ravel()
    for ax, (title, idata, index) in zip(axes, shown, strict=False):
        table = score_table(idata, index)
        for c, d in enumerate(sorted({r["distractors"] for r in table})):
            rs = [r for r in table if r["distractors"] == d]
            x = np.array([r["exposure"] for r in rs])
            pred = np.array([r["predicted"] for r in rs])
            err = np.array([[r["predicted"] - r["lo"] for r in rs],
                            [r["hi"] - r["predicted"] for r in rs]])
            label = f"{d} distractors" if d else "no distractors"
            ax.errorbar(x, pred, yerr=err, color=f"C{c}", lw=1, capsize=2, label=label)
            ax.plot(x, [r["observed"] for r in rs], "o", color=f"C{c}", ms=3.5)
        ax.set_title(title, fontsize=8)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    if shown:
        axes[0].legend(fontsize=6, loc="upper left")
    more = f" (first {max_panels} of {len(panels)})" if len(panels) > max_panels else ""
    fig.supxlabel("exposure (ms)")
    fig.supylabel("mean score (items reported)")
    fig.suptitle("observed (dots) vs posterior predictive mean, 94% band" + more, fontsize=10)
    out.savefig(name, fig, dpi=100)


def plot_parameters(out, name: str, frame) -> None:
    """``name``: each scalar parameter's posterior mean and 94% HDI across the rows of
    ``summary.csv`` (``frame``)."""
    from matplotlib.figure import Figure

    params = [p for p in ("C", "alpha", "mu0", "sigma0", "mK", "sK", "K_mean")
              if p in frame.columns and frame[p].notna().any()]
    units = {"C": "items/s", "mu0": "ms", "sigma0": "ms"}
    cols = max(1, min(4, len(params)))
    nrows = max(1, math.ceil(len(params) / cols))
    height = min(12.0, max(2.4, 0.16 * len(frame) + 1.0))
    fig = Figure(figsize=(3.4 * cols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    labels = [f"{s}/{c}" for s, c in zip(frame["subject"], frame["condition"], strict=True)]
    y = np.arange(len(frame))
    for ax, p in zip(axes, params, strict=False):
        lo, hi = frame[f"{p}_hdi_3%"].to_numpy(), frame[f"{p}_hdi_97%"].to_numpy()
        mean = frame[p].to_numpy()
        ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="o", ms=3, lw=1, capsize=2)
        ax.set_title(p + (f" ({units[p]})" if p in units else ""), fontsize=9)
        ax.set_yticks(y, labels if len(y) <= 40 else [""] * len(y), fontsize=6)
        ax.invert_yaxis()
    for ax in axes[len(params):]:
        ax.set_visible(False)
    if not params:
        axes[0].text(0.5, 0.5, "no fitted parameters", ha="center", va="center")
    fig.suptitle("posterior mean and 94% HDI per fit (subject/condition)", fontsize=10)
    out.savefig(name, fig, dpi=100)
