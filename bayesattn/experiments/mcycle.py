"""``bayesattn demo``: uncertainty-aware attention on the motorcycle-impact data.

Fits, with NUTS, Gaussian-kernel (Nadaraya-Watson) attention, softmax (key-selection)
attention and GP attention to ``accel`` (g) against ``times`` (ms); prints and writes the
ArviZ summaries (r_hat, ESS) and the PSIS-LOO comparison; plots the posterior predictive bands,
the kernel model's attention weights with their posterior spread, the parameter posteriors and
the comparison; saves one InferenceData (``.nc``) per model.
"""

from __future__ import annotations

import time
from pathlib import Path

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import plots
from ..data import load_mcycle
from ..inference import compare, fit
from .regression import build_model

__all__ = ["run_demo", "fit_and_report", "DEMO_MODELS"]

DEMO_MODELS = ("kernel", "softmax", "gp")
LABELS = {"kernel": "Gaussian-kernel attention", "softmax": "softmax attention",
          "gp": "GP attention", "least_squares": "least-squares attention"}


def _settings(quick: bool) -> dict:
    if quick:
        return {"num_chains": 2, "warmup_steps": 100, "num_samples": 100}
    return {"num_chains": 4, "warmup_steps": 300, "num_samples": 300, "chain_method": "parallel"}


def fit_and_report(x, y, names, out: Path, *, method="nuts", quick=False, seed=0,
                   xlabel="x", ylabel="y", progress_bar=True) -> dict:
    """Fit each model in ``names`` to ``(x, y)``, write plots, ``.nc`` files and ``summary.md``.

    Args:
        x, y: ``(N,)`` inputs (queries/keys) and targets (values), data units.
        names: model names of :data:`bayesattn.experiments.regression.MODELS`.
        out: existing output folder.
        method: a :func:`bayesattn.inference.fit` method.
        quick: short chains.
        seed: seed of every random number.

    Returns:
        ``{"summaries": {name: DataFrame}, "compare": DataFrame | None, "seconds": {...}}``.
    """
    settings = _settings(quick)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on 2 cores
    x_t, y_t = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    grid = torch.linspace(float(x_t.min()), float(x_t.max()), 200, dtype=torch.float64)
    idatas, summaries, seconds, built = {}, {}, {}, {}
    for name in names:
        model, data, features = build_model(name, x_t, y_t)
        print(f"\n== {LABELS[name]}: {method} ==", flush=True)
        start = time.perf_counter()
        idata = fit(model, data, method=method, seed=seed, jit_compile=True,
                    progress_bar=progress_bar, **settings)
        seconds[name] = time.perf_counter() - start
        idata.to_netcdf(out / f"{name}.nc")
        idatas[name], built[name] = idata, (model, data, features)
        var_names = model.latent_names()
        if var_names:
            summaries[name] = az.summary(idata, var_names=var_names)
            print(summaries[name].to_string(), flush=True)
            fig = plots.plot_posteriors(idata, var_names, title=LABELS[name])
            fig.savefig(out / f"posterior_{name}.png", dpi=110)
            plt.close(fig)
        draws = plots.predictive_draws(model, idata, features(grid), data, seed=seed)
        fig = plots.plot_predictive_band(
            x_t.numpy(), y_t.numpy(), grid.numpy(), draws[..., 0].numpy(),
            title=f"{LABELS[name]}: posterior predictive", xlabel=xlabel, ylabel=ylabel)
        fig.savefig(out / f"predictive_{name}.png", dpi=110)
        plt.close(fig)
    if "kernel" in built:
        _plot_kernel_weights(*built["kernel"], idatas["kernel"], grid, out, seed, xlabel)
    table = None
    if len(idatas) > 1:
        table = compare(idatas)
        print("\n== PSIS-LOO comparison ==\n" + table.to_string(), flush=True)
        fig = plots.plot_compare(table)
        fig.savefig(out / "compare.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    _write_summary(out, summaries, table, seconds, idatas, method, settings)
    return {"summaries": summaries, "compare": table, "seconds": seconds, "idatas": idatas}


def _plot_kernel_weights(model, data, features, idata, grid, out, seed, xlabel):
    """Attention weights of grid queries over the keys: posterior mean and sd over draws."""
    draws, num = plots.posterior_draws(idata, model.latent_names(), max_draws=200, seed=seed)
    query = features(grid[::4])
    with torch.no_grad():
        w = torch.stack([
            model.attention_weights(query, {k: v[d] for k, v in draws.items()})
            for d in range(num)
        ])
    keys = data["query"][:, 0].numpy()
    fig = plots.plot_attention_weights(
        w.mean(0).numpy(), w.std(0).numpy(), query_coords=grid[::4].numpy(),
        key_coords=keys, title="kernel attention", xlabel=f"key ({xlabel})",
        ylabel=f"query ({xlabel})")
    fig.savefig(out / "attention_weights_kernel.png", dpi=110)
    plt.close(fig)


def _write_summary(out, summaries, table, seconds, idatas, method, settings):
    lines = ["# bayesattn report", "",
             f"Method: {method}; settings: {settings}.", "", "## Parameters", ""]
    for name, summary in summaries.items():
        stats = idatas[name].get("sample_stats")
        div = int(stats["diverging"].sum()) if stats is not None and "diverging" in stats else 0
        lines += [f"### {LABELS[name]} ({seconds[name]:.1f} s, {div} divergences)", "",
                  summary.to_markdown(), ""]
    if table is not None:
        lines += ["## PSIS-LOO comparison (best first)", "",
                  table.to_markdown(), ""]
    lines += ["## Files", "",
              "`NAME.nc` InferenceData per model; `predictive_NAME.png` posterior predictive "
              "bands; `posterior_NAME.png` parameter posteriors; "
              "`attention_weights_kernel.png`; `compare.png`.", ""]
    (out / "summary.md").write_text("\n".join(lines))


def run_demo(out: Path, *, quick: bool = False, seed: int = 0) -> dict:
    """The package's main job on the shipped mcycle data (see the module docstring).

    Args:
        out: existing, empty output folder.
        quick: 2 chains x 100 draws (CI smoke run) instead of 4 x 300.
        seed: seed of every random number.
    """
    data = load_mcycle()
    start = time.perf_counter()
    result = fit_and_report(data["times"], data["accel"], DEMO_MODELS, Path(out), quick=quick,
                            seed=seed, xlabel="time after impact (ms)",
                            ylabel="head acceleration (g)")
    total = time.perf_counter() - start
    _report_convergence(result)
    print(f"\nwrote {out}/summary.md, plots and .nc files in {total:.0f} s", flush=True)
    result["total_seconds"] = total
    return result


def _report_convergence(result):
    worst_rhat = max(float(s["r_hat"].max()) for s in result["summaries"].values())
    min_ess = min(float(s["ess_bulk"].min()) for s in result["summaries"].values())
    divs = sum(int(i.sample_stats["diverging"].sum()) for i in result["idatas"].values()
               if "sample_stats" in i.groups() and "diverging" in i.sample_stats)
    ok = worst_rhat <= 1.01 and min_ess >= 400 and divs == 0
    print(f"\nconvergence: max r_hat {worst_rhat:.3f}, min ESS bulk {min_ess:.0f}, "
          f"divergences {divs} -> {'OK' if ok else 'check the chains'}", flush=True)
    result["convergence"] = {"max_r_hat": worst_rhat, "min_ess_bulk": min_ess,
                             "divergences": divs, "ok": bool(np.all(ok))}
