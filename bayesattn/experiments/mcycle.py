"""``bayesattn demo``: uncertainty-aware attention on the motorcycle-impact data.

Fits, with NUTS, Gaussian-kernel (Nadaraya-Watson) attention, softmax (key-selection)
attention and GP attention to ``accel`` (g) against ``times`` (ms); prints each fit's
convergence verdict (:func:`bayesattn.inference.diagnostics.verdict_line`) and writes the
ArviZ summaries and the PSIS-LOO comparison; plots the posterior predictive bands, the kernel
model's attention weights with their posterior spread, the parameter posteriors and the
comparison; saves one InferenceData (``.nc``) per model. :func:`fit_and_report` is the same
workflow for any data and method (``bayesattn fit``). This module only reports: the
quantities it plots come from :mod:`bayesattn.inference.predictive`.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import plots
from ..data import load_mcycle
from ..inference import compare, fit
from ..inference.diagnostics import verdict_line
from ..inference.predictive import (
    attention_weight_moments,
    num_posterior_draws,
    predictive_draws,
    predictive_moments,
)
from ..io import OutputDir
from .regression import build_model

__all__ = ["run_demo", "fit_and_report", "planned_files", "DEMO_MODELS"]

DEMO_MODELS = ("kernel", "softmax", "gp")
LABELS = {"kernel": "Gaussian-kernel attention", "softmax": "softmax attention",
          "gp": "GP attention", "least_squares": "least-squares attention"}


def _settings(quick: bool) -> dict:
    if quick:
        return {"num_chains": 2, "warmup_steps": 50, "num_samples": 50}
    return {"num_chains": 4, "warmup_steps": 300, "num_samples": 300, "chain_method": "parallel"}


def planned_files(names) -> list[str]:
    """Names of the files :func:`fit_and_report` may write for models ``names``."""
    files = ["summary.md"]
    for name in names:
        files += [f"{name}.nc", f"predictive_{name}.png", f"posterior_{name}.png"]
    if "kernel" in names:
        files.append("attention_weights_kernel.png")
    if len(names) > 1:
        files.append("compare.png")
    return files


def _method_settings(idata, method: str, settings: dict) -> dict:
    """The settings of the method that ran: the fit's own record when it has one, otherwise
    the arguments passed for that method (and ``fit``'s defaults)."""
    info = json.loads(idata.attrs.get("diagnostics", "{}") or "{}")
    if info.get("settings"):
        return info["settings"]
    defaults = {k: p.default for k, p in inspect.signature(fit).parameters.items()}
    draws = settings.get("num_chains", 1) * settings.get("num_samples", 1)
    steps = settings.get("num_steps", defaults.get("num_steps"))
    if method == "nuts":
        keys = ("num_chains", "warmup_steps", "num_samples", "chain_method",
                "target_accept_prob")
        return {k: settings.get(k, defaults.get(k)) for k in keys}
    if method == "svi":
        return {"guide": defaults["guide"], "num_steps": steps,
                "learning_rate": defaults["learning_rate"], "draws": draws}
    if method == "map":
        return {"num_steps": steps, "learning_rate": defaults["learning_rate"]}
    return {"draws": draws}


def _parameter_table(idata, var_names, method: str) -> pd.DataFrame:
    """Posterior summary of ``var_names``; an explicit point-estimate table for one draw.

    ``az.summary`` with r_hat and ESS for NUTS chains; mean, sd and HDI only for independent
    draws (SVI guide, Laplace, exact), where r_hat and ESS say nothing.
    """
    if num_posterior_draws(idata) == 1:
        rows = {}
        for name in var_names:
            arr = np.asarray(idata.posterior[name].values)[0, 0]  # the one (chain, draw)
            if arr.ndim == 0:
                rows[name] = float(arr)
                continue
            for idx in np.ndindex(arr.shape):
                rows[f"{name}[{', '.join(map(str, idx))}]"] = float(arr[idx])
        return pd.DataFrame({"point estimate": rows})
    kind = "all" if method == "nuts" else "stats"
    return az.summary(idata, var_names=var_names, kind=kind)


def fit_and_report(x, y, names, out, *, method="nuts", quick=False, seed=0,
                   xlabel="x", ylabel="y", progress_bar=True, num_steps=None) -> dict:
    """Fit each model in ``names`` to ``(x, y)``, write plots, ``.nc`` files and ``summary.md``.

    Every file is written atomically (:mod:`bayesattn.io`). ``summary.md`` starts, under its
    title, with the ``convergence:`` line of the fit (one per model, after an overall line,
    when there are several), then the method's own settings, the parameter tables (a
    point-estimate table when the fit has one draw), and the PSIS-LOO comparison (several
    models with posterior draws).

    Args:
        x, y: ``(N,)`` inputs (queries/keys) and targets (values), data units.
        names: model names of :data:`bayesattn.experiments.regression.MODELS`.
        out: output folder: a :class:`bayesattn.io.OutputDir` (the command line) or an
            existing folder path.
        method: a :func:`bayesattn.inference.fit` method.
        quick: short chains.
        seed: seed of every random number.
        xlabel, ylabel: axis texts shown literally (a ``$`` in a column name is not mathtext).
        progress_bar: show the fit's progress bars.
        num_steps: SVI / MAP optimisation steps (None: :func:`~bayesattn.inference.fit`'s
            default).

    Returns:
        ``{"summaries": {name: DataFrame}, "compare": DataFrame | None, "seconds": {...},
        "idatas": {...}, "convergence": {name: bool}, "verdicts": {name: str}}``.

    Raises:
        ValueError: unknown model name, data a model refuses (see
            :func:`bayesattn.experiments.regression.build_model`).
        NotImplementedError: ``method`` cannot fit a model (from :func:`bayesattn.inference.fit`).
    """
    out = out if isinstance(out, OutputDir) else OutputDir.plain(out)
    settings = _settings(quick)
    if num_steps is not None:
        settings["num_steps"] = num_steps
    xlabel, ylabel = plots.literal(xlabel), plots.literal(ylabel)
    x_t, y_t = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    grid = torch.linspace(float(x_t.min()), float(x_t.max()), 200, dtype=torch.float64)
    idatas, summaries, seconds, verdicts = {}, {}, {}, {}
    for name in names:
        model, data, features = build_model(name, x_t, y_t)
        print(f"\n== {LABELS[name]}: {method} ==", flush=True)
        start = time.perf_counter()
        idata = fit(model, data, method=method, seed=seed, jit_compile=True,
                    progress_bar=progress_bar, **settings)  # fit chooses its threads
        seconds[name] = time.perf_counter() - start
        verdicts[name] = verdict_line(idata)
        print(verdicts[name], flush=True)
        out.to_netcdf(f"{name}.nc", idata)
        idatas[name] = idata
        var_names = model.latent_names()
        one_draw = num_posterior_draws(idata) == 1
        if var_names:
            summaries[name] = _parameter_table(idata, var_names, method)
            print(summaries[name].to_string(), flush=True)
            if not one_draw:
                _save(out, f"posterior_{name}.png",
                      plots.plot_posteriors(idata, var_names, title=LABELS[name]))
        query = features(grid)
        mean, sd = predictive_moments(model, idata, query, data, seed=seed)
        title = LABELS[name] + (": predictive at the point estimate" if one_draw
                                else ": posterior predictive")
        if one_draw:
            fig = plots.plot_predictive_band(x_t.numpy(), y_t.numpy(), grid.numpy(),
                                             mean=mean[:, 0].numpy(), sd=sd[:, 0].numpy(),
                                             title=title, xlabel=xlabel, ylabel=ylabel)
        else:
            draws = predictive_draws(model, idata, query, data, seed=seed)
            fig = plots.plot_predictive_band(x_t.numpy(), y_t.numpy(), grid.numpy(),
                                             draws[..., 0].numpy(), mean=mean[:, 0].numpy(),
                                             title=title, xlabel=xlabel, ylabel=ylabel)
        _save(out, f"predictive_{name}.png", fig)
        if name == "kernel":
            _plot_kernel_weights(model, data, idata, grid, out, seed, xlabel)
    table = None
    with_draws = {k: v for k, v in idatas.items() if num_posterior_draws(v) > 1}
    if len(with_draws) > 1:
        table = compare(with_draws)
        print("\n== PSIS-LOO comparison ==\n" + table.to_string(), flush=True)
        _save(out, "compare.png", plots.plot_compare(table), bbox_inches="tight")
    _write_summary(out, summaries, table, seconds, idatas, verdicts, method, settings)
    converged = {k: bool(int(v.attrs.get("converged", 0))) for k, v in idatas.items()}
    return {"summaries": summaries, "compare": table, "seconds": seconds, "idatas": idatas,
            "convergence": converged, "verdicts": verdicts}


def _save(out: OutputDir, name: str, fig, **kwargs) -> None:
    try:
        out.savefig(name, fig, dpi=110, **kwargs)
    finally:
        plt.close(fig)


def _plot_kernel_weights(model, data, idata, grid, out, seed, xlabel):
    """Attention weights of grid queries over the keys: posterior mean and sd over draws."""
    query = grid[::4]
    mean, sd, num = attention_weight_moments(model, idata, query[:, None], seed=seed)
    keys = data["query"][:, 0].numpy()
    fig = plots.plot_attention_weights(
        mean.numpy(), sd.numpy() if num > 1 else None, query_coords=query.numpy(),
        key_coords=keys, title="kernel attention", xlabel=f"key ({xlabel})",
        ylabel=f"query ({xlabel})")
    _save(out, "attention_weights_kernel.png", fig)


def _convergence_lines(verdicts: dict, idatas: dict) -> list[str]:
    if len(verdicts) == 1:
        return [next(iter(verdicts.values()))]
    ok = [name for name, idata in idatas.items() if int(idata.attrs.get("converged", 0))]
    failed = [name for name in verdicts if name not in ok]
    head = (f"convergence: {'OK' if not failed else 'FAILED'} ({len(ok)} of {len(verdicts)} "
            "models passed" + (f"; failed: {', '.join(failed)}" if failed else "") + ")")
    return [head, ""] + [f"- {LABELS[name]}: {line}" for name, line in verdicts.items()]


def _write_summary(out, summaries, table, seconds, idatas, verdicts, method, settings):
    lines = ["# bayesattn report", "", *_convergence_lines(verdicts, idatas), "",
             f"Method: {method}.", ""]
    for name, idata in idatas.items():
        lines.append(f"- {LABELS[name]} settings: "
                     f"{json.dumps(_method_settings(idata, method, settings))}")
    lines += ["", "## Parameters", ""]
    for name, summary in summaries.items():
        head = f"### {LABELS[name]} ({seconds[name]:.1f} s"
        stats = idatas[name].get("sample_stats")
        if method == "nuts" and stats is not None and "diverging" in stats:
            head += f", {int(stats['diverging'].sum())} divergences"
        lines += [head + ")", ""]
        if "point estimate" in summary.columns:
            lines += ["Point estimate (one draw): no posterior spread is reported.", ""]
        lines += [summary.to_markdown(), ""]
    if table is not None:
        lines += ["## PSIS-LOO comparison (best first)", "", table.to_markdown(), ""]
    elif len(idatas) > 1:
        lines += ["## PSIS-LOO comparison", "",
                  "Skipped: PSIS-LOO needs posterior draws and these fits are point "
                  "estimates.", ""]
    written = list(out.written)
    lines += ["## Files", "", "`summary.md`; " + ", ".join(f"`{n}`" for n in written) + ".", ""]
    out.write_text("summary.md", "\n".join(lines))


def run_demo(out, *, quick: bool = False, seed: int = 0) -> dict:
    """The package's main job on the shipped mcycle data (see the module docstring).

    Args:
        out: output folder: a :class:`bayesattn.io.OutputDir` or an existing folder path.
        quick: 2 chains x (50 warm-up + 50 draws) (CI smoke run; too short to converge)
            instead of 4 x (300 + 300).
        seed: seed of every random number.

    Returns:
        :func:`fit_and_report`'s result plus ``"total_seconds"``.
    """
    data = load_mcycle()
    start = time.perf_counter()
    result = fit_and_report(data["times"], data["accel"], DEMO_MODELS, out, quick=quick,
                            seed=seed, xlabel="time after impact (ms)",
                            ylabel="head acceleration (g)")
    total = time.perf_counter() - start
    print("", *(f"{LABELS[k]}: {v}" for k, v in result["verdicts"].items()), sep="\n",
          flush=True)
    print(f"\nwrote {Path(out) / 'summary.md'}, plots and .nc files in {total:.0f} s",
          flush=True)
    result["total_seconds"] = total
    return result
