"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018).

arXiv 1804.06788.

For each model and method: draw parameters ``theta*`` from the prior, simulate data from the
model, fit it, and record the rank of ``theta*`` among ``L`` (nearly) independent posterior
draws, per scalar parameter. If the fitted posterior is the true posterior, every rank is
uniform on ``0..L``. Deviation is measured by a chi-square test over ``B`` equal rank bins and
shown as ArviZ's ECDF-difference plot with simultaneous 95% bands (Saeilynoja, Buerkner &
Vehtari 2022). The fit's own verdict (``idata.attrs["converged"]``; Pareto k for SVI) is kept
per simulation, so the table shows whether the SVI cases that fail SBC are the ones the
verdict flags.

Models (small, so that a run fits a CPU budget; designs fixed, seeded):

* ``kernel``: Gaussian-kernel attention with a fixed memory of 12 keys/values, 24 queries on
  ``[0, 1]``; ``bandwidth ~ LogNormal(log 0.15, 0.5)``, ``noise ~ HalfNormal(0.5)``.
* ``gp``: GP attention (RBF) on 24 keys on ``[0, 1]``; ``lengthscale ~ LogNormal(log 0.3, 0.4)``,
  ``amplitude ~ HalfNormal(1)``, ``noise ~ HalfNormal(0.3)``.
* ``least_squares``: Bayesian linear regression on keys ``(1, x)``, 24 rows;
  ``W ~ N(0, 1)``, ``noise ~ HalfNormal(0.5)``.

Usage::

    python benchmarks/sbc.py --out benchmarks/results/sbc             # full run
    python benchmarks/sbc.py --quick --out /tmp/sbc                    # smoke run

Writes ``results.json`` (every rank and verdict), ``results.md`` (the table) and ``sbc.png``.
Progress goes to stderr. Runs one torch thread per worker process (``--workers``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

MODELS = ("kernel", "gp", "least_squares")
METHODS = ("nuts", "svi")


def build(name: str):
    """``(model, data without the observation, observed site name)`` for SBC model ``name``."""
    import pyro.distributions as dist
    import torch

    from bayesattn.models import GPAttentionModel, KernelAttentionModel, LeastSquaresAttentionModel

    t = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
    gen = torch.Generator().manual_seed(1234)
    if name == "kernel":
        keys = torch.linspace(0, 1, 12, dtype=torch.float64)[:, None]
        values = torch.randn(12, 1, dtype=torch.float64, generator=gen)
        model = KernelAttentionModel(keys, values,
                                     bandwidth=dist.LogNormal(t(math.log(0.15)), t(0.5)),
                                     noise=dist.HalfNormal(t(0.5)))
        query = torch.rand(24, 1, dtype=torch.float64, generator=gen)
        return model, {"query": query}, "target"
    x = torch.rand(24, dtype=torch.float64, generator=gen)
    if name == "gp":
        model = GPAttentionModel(lengthscale=dist.LogNormal(t(math.log(0.3)), t(0.4)),
                                 amplitude=dist.HalfNormal(t(1.0)), noise=dist.HalfNormal(t(0.3)))
        return model, {"key": x[:, None]}, "value"
    model = LeastSquaresAttentionModel(prior_scale=1.0, noise=dist.HalfNormal(t(0.5)))
    return model, {"key": torch.stack([torch.ones_like(x), x], -1)}, "value"


def simulate(model, data: dict, obs: str, seed: int):
    """One prior draw: ``({latent: value}, data with the simulated observation)``."""
    import pyro
    from pyro import poutine

    pyro.set_rng_seed(seed)
    trace = poutine.trace(model.model).get_trace(**data, **{obs: None})
    truth = {k: trace.nodes[k]["value"].detach() for k in model.latent_names()}
    y = trace.nodes[obs]["value"].detach()
    if obs == "value" and type(model).__name__ == "GPAttentionModel":
        y = y.T  # the GP samples each value column as one MVN: (Ev, S) -> (S, Ev)
    return truth, {**data, obs: y}


def scalar_params(draws: dict) -> dict:
    """Flatten ``{name: (D, ...)}`` into scalar parameters ``{"name[i,j]": (D,)}``."""
    out = {}
    for name, v in draws.items():
        v = np.asarray(v)
        flat = v.reshape(v.shape[0], -1)
        if flat.shape[1] == 1:
            out[name] = flat[:, 0]
        else:
            for i, idx in enumerate(np.ndindex(*v.shape[1:])):
                out[f"{name}[{','.join(map(str, idx))}]"] = flat[:, i]
    return out


def one_simulation(job) -> dict:
    """Fit one simulated data set; return ranks per scalar parameter and the verdict."""
    name, method, sim, num_ranks = job
    import torch

    from bayesattn.inference import fit

    torch.set_num_threads(1)
    model, data, obs = build(name)
    truth, data = simulate(model, data, obs, seed=10_000 + sim)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "nuts":
            idata = fit(model, data, method="nuts", num_chains=2, warmup_steps=200,
                        num_samples=150, seed=sim, progress_bar=False, jit_compile=True)
        else:
            idata = fit(model, data, method="svi", num_chains=1, num_samples=num_ranks,
                        seed=sim, progress_bar=False)
    seconds = time.perf_counter() - start
    post = idata.posterior
    draws = {k: post[k].values.reshape(-1, *post[k].shape[2:]) for k in truth}
    flat_draws = scalar_params(draws)
    flat_truth = {k: float(v[0]) for k, v in
                  scalar_params({k: v.numpy()[None] for k, v in truth.items()}).items()}
    # thin to num_ranks draws spread over the chains (NUTS draws are autocorrelated)
    ranks = {}
    for k, d in flat_draws.items():
        idx = np.linspace(0, len(d) - 1, num_ranks).round().astype(int)
        ranks[k] = int((d[idx] < flat_truth[k]).sum())
    diag = json.loads(idata.attrs.get("diagnostics", "{}") or "{}")
    if "converged" in idata.attrs:
        converged = bool(int(idata.attrs["converged"]))
    else:  # a fit without a stored verdict: the NUTS rule of thumb
        converged = _nuts_rule(idata)
    return {"model": name, "method": method, "sim": sim, "ranks": ranks, "seconds": seconds,
            "converged": converged,
            "pareto_k": diag.get("figures", {}).get("pareto_k"),
            "reasons": diag.get("reasons", [])}


def _nuts_rule(idata) -> bool:
    """r_hat <= 1.01, bulk and tail ESS >= 100 and no divergence (Vehtari et al. 2021)."""
    import arviz as az

    summ = az.summary(idata, var_names=list(idata.posterior.data_vars), kind="diagnostics")
    div = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
    return bool((summ["r_hat"] <= 1.01).all() and (summ["ess_bulk"] >= 100).all()
                and (summ["ess_tail"] >= 100).all() and div == 0)


def chi_square(ranks: np.ndarray, num_ranks: int, bins: int) -> tuple[float, float]:
    """Chi-square statistic and p-value of ``ranks`` in ``0..num_ranks`` against uniform."""
    from scipy import stats

    edges = np.linspace(0, num_ranks + 1, bins + 1)
    counts, _ = np.histogram(ranks, bins=edges)
    res = stats.chisquare(counts)
    return float(res.statistic), float(res.pvalue)


def summarise(results: list[dict], num_ranks: int, bins: int) -> list[dict]:
    """One row per (model, method, parameter)."""
    rows = []
    for name in MODELS:
        for method in METHODS:
            rs = [r for r in results if r["model"] == name and r["method"] == method]
            if not rs:
                continue
            for p in rs[0]["ranks"]:
                ranks = np.array([r["ranks"][p] for r in rs])
                stat, pval = chi_square(ranks, num_ranks, bins)
                flagged = [r for r in rs if not r["converged"]]
                rows.append({
                    "model": name, "method": method, "parameter": p, "sims": len(rs),
                    "chi2": stat, "df": bins - 1, "p_value": pval,
                    "flagged": len(flagged),
                    "mean_seconds": float(np.mean([r["seconds"] for r in rs])),
                })
    return rows


def write_outputs(out: Path, results, rows, num_ranks, bins, args):
    import arviz as az
    import matplotlib.pyplot as plt
    from scipy import stats

    out.mkdir(parents=True, exist_ok=True)
    payload = {"num_ranks": num_ranks, "bins": bins, "num_simulations": args.sims,
               "rows": rows, "simulations": results}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, out / "results.json")
    lines = [
        "| model | method | parameter | sims | chi2 (df) | p | flagged by verdict | s / fit |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {r['parameter']} | {r['sims']} | "
                     f"{r['chi2']:.1f} ({r['df']}) | {r['p_value']:.3f} | {r['flagged']} | "
                     f"{r['mean_seconds']:.1f} |")
    tmp = out / "results.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "results.md")

    panels = [(m, meth) for m in MODELS for meth in METHODS
              if any(r["model"] == m and r["method"] == meth for r in results)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, 2.6 * len(panels)), squeeze=False)
    for ax, (m, meth) in zip(axes[:, 0], panels, strict=True):
        rs = [r for r in results if r["model"] == m and r["method"] == meth]
        for i, p in enumerate(rs[0]["ranks"]):
            # fractional ranks on (0, 1): uniform under calibration
            u = (np.array([r["ranks"][p] for r in rs]) + 0.5) / (num_ranks + 1)
            az.plot_ecdf(u, cdf=stats.uniform(0, 1).cdf, difference=True,
                         confidence_bands=i == 0, ax=ax, rvs=stats.uniform(0, 1).rvs,
                         random_state=0, plot_kwargs={"color": f"C{i}", "label": p},
                         fill_kwargs={"alpha": 0.15})
        ax.set_title(f"{m}: {meth} (ECDF difference of rank fractions, 95% band)")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    tmp = out / "sbc.png.tmp"
    fig.savefig(tmp, dpi=100, format="png")
    os.replace(tmp, out / "sbc.png")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/sbc")
    parser.add_argument("--sims", type=int, default=100, help="simulations per model and method")
    parser.add_argument("--ranks", type=int, default=99, help="posterior draws per rank (L)")
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10 simulations (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sims = 10
    models = [m for m in args.models.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    for m in models:
        if m not in MODELS:
            parser.error(f"--models: unknown model {m!r}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown method {m!r}")
    out = Path(args.out)
    cache = out / "simulations.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    if cache.exists():  # resume: keep finished simulations
        for line in cache.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupt
            done[(r["model"], r["method"], r["sim"])] = r
    # simulation-major order: an interrupted run leaves every configuration with ~equal sims
    jobs = [(m, meth, s, args.ranks) for s in range(args.sims) for m in models
            for meth in methods if (m, meth, s) not in done]
    start = time.perf_counter()
    try:
        with open(cache, "a") as fh, ProcessPoolExecutor(args.workers) as pool:
            for i, r in enumerate(pool.map(one_simulation, jobs), 1):
                fh.write(json.dumps(r) + "\n")
                fh.flush()
                done[(r["model"], r["method"], r["sim"])] = r
                print(f"[{i}/{len(jobs)}] {r['model']} {r['method']} sim {r['sim']}: "
                      f"{r['seconds']:.1f} s, converged={r['converged']}, "
                      f"elapsed {time.perf_counter() - start:.0f} s", file=sys.stderr,
                      flush=True)
    except KeyboardInterrupt:  # summarise what finished; rerun the command to resume
        print("interrupted: summarising the finished simulations", file=sys.stderr)
    results = [done[k] for k in sorted(done) if k[0] in models and k[1] in methods
               and k[2] < args.sims]
    rows = summarise(results, args.ranks, args.bins)
    write_outputs(out, results, rows, args.ranks, args.bins, args)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
