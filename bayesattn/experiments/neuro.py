"""``bayesattn demo neuro``: simulate -> fit -> recover -> compare, for models of attention.

Two studies (issue 5; docs/design.md section 5):

1. **TVA whole-report parameter recovery.** Simulated subjects, each seen in a standard
   whole-report design (6 display locations, exposures 16.6-200 ms, 234 trials): true
   ``C`` (items/s), ``K``, ``t0`` (ms) and spatial weights are drawn, reports simulated with
   the race, and the :class:`~bayesattn.models.neuro.tva.TVA` model fitted (NUTS; SVI with a
   full-rank Gaussian guide in ``--quick``). The recovery table lists each true value beside
   its posterior mean and 94% HDI; the coverage is the share of true values inside their
   intervals.
2. **Cueing-model comparison.** A cued localisation task (4 locations, cue validity 0.7, three
   signal levels, 600 trials) simulated from the Bayesian observer; the Bayesian,
   weighted-linear and limited-capacity switching observers
   (:class:`~bayesattn.models.neuro.cueing.CueingObserver`) are fitted to the same data and
   ranked by PSIS-LOO. The full demo also repeats the comparison on data sets simulated from
   each of the three observers and reports how often LOO picks the generating one.

Outputs in ``out``: ``tva_recovery.png`` (true vs posterior), ``tva_recovery.csv``,
``cueing_loo.png`` (LOO comparison), ``cueing_loo.csv``, ``summary.md``.
"""

from __future__ import annotations

import time

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..inference import compare, fit
from ..inference.threads import torch_threads
from ..io import OutputDir
from ..models.neuro.cueing import (
    OBSERVERS,
    CueingObserver,
    simulate_cueing_design,
    simulate_cueing_responses,
)
from ..models.neuro.tva import TVA, simulate_whole_report, whole_report_design

__all__ = [
    "run_neuro_demo",
    "simulate_tva_subjects",
    "tva_recovery",
    "recovery_rows",
    "simulate_cueing_data",
    "cueing_comparison",
    "model_selection_rate",
    "CUEING_DESIGN",
    "CUEING_TRUTH",
    "PLANNED_FILES",
]

#: the files :func:`run_neuro_demo` writes
PLANNED_FILES = ("tva_recovery.png", "tva_recovery.csv", "cueing_loo.png", "cueing_loo.csv",
                 "summary.md")

#: The cued localisation design of the comparison.
CUEING_DESIGN = {"num_locations": 4, "validity": 0.7, "num_levels": 3, "num_trials": 600}
#: d' per signal level and each observer's parameters when it generates the data.
CUEING_TRUTH = {
    "d_prime": (0.8, 1.5, 2.5),
    "bayesian": {"believed_validity": 0.7},
    "weighted_linear": {"cue_weight": 0.5},
    "switching": {"attend_cued": 0.8, "criterion": 0.5},
}


# ----------------------------------------------------------------------------- TVA recovery
def simulate_tva_subjects(
    num_subjects: int, *, seed: int = 0, trials_per_exposure: int = 39
) -> list[dict]:
    """Simulated whole-report subjects: ``[{"truth": {...}, "data": {...}}, ...]``.

    True parameters per subject: ``C ~ U(25, 65)`` items/s, ``K`` uniform on ``{2, 3, 4, 5}``,
    ``t0 ~ U(5, 25)`` ms, spatial weights ``~ Dirichlet(8, ..., 8)`` over 6 locations. Data:
    :func:`~bayesattn.models.neuro.tva.whole_report_design` (6 exposures 16.6-200 ms,
    ``trials_per_exposure`` each) and reports from the race.

    Raises:
        ValueError: ``num_subjects < 1``.
    """
    if num_subjects < 1:
        raise ValueError(f"num_subjects must be >= 1, got {num_subjects}")
    g = torch.Generator().manual_seed(seed)
    exposure = whole_report_design(trials_per_exposure=trials_per_exposure)
    out = []
    for _ in range(num_subjects):
        u = torch.rand(3, generator=g, dtype=torch.float64)
        truth = {
            "C": float(25 + 40 * u[0]),
            "K": int(torch.randint(2, 6, (1,), generator=g)),
            "t0": float(5 + 20 * u[1]),
        }
        gam = -torch.log(torch.rand(6, 8, generator=g, dtype=torch.float64)).sum(-1)  # Gamma(8)
        weights = gam / gam.sum()
        truth["weights"] = weights.tolist()
        reported = simulate_whole_report(
            exposure, C=truth["C"], weights=weights, t0=truth["t0"], K=truth["K"], generator=g
        )
        out.append({"truth": truth, "data": {"exposure": exposure, "reported": reported}})
    return out


def recovery_rows(idata, truth: dict, subject: int, *, hdi_prob: float = 0.94) -> list[dict]:
    """Rows ``subject, parameter, true, mean, hdi_low, hdi_high, covered`` for one fit."""
    rows = []
    post = idata.posterior
    for name in ("C", "K", "t0", "weights"):
        values = np.atleast_1d(np.asarray(truth[name], dtype=float))
        draws = post[name].values.reshape(-1, *post[name].shape[2:])
        draws = draws.reshape(draws.shape[0], -1)
        for j, true in enumerate(values):
            lo, hi = az.hdi(draws[:, j], hdi_prob=hdi_prob)
            label = name if values.size == 1 else f"{name}[{j}]"
            rows.append(
                {
                    "subject": subject,
                    "parameter": label,
                    "true": true,
                    "mean": float(draws[:, j].mean()),
                    "hdi_low": float(lo),
                    "hdi_high": float(hi),
                    "covered": bool(lo <= true <= hi),
                }
            )
    return rows


def tva_recovery(subjects: list[dict], fit_kwargs: dict, *, progress: bool = True):
    """Fit :class:`TVA` to each simulated subject; returns ``(table, idatas)``.

    ``fit_kwargs`` go to :func:`bayesattn.inference.fit` (method, chains, ...). The table has one
    row per subject and parameter (:func:`recovery_rows`).
    """
    rows, idatas = [], []
    for i, subj in enumerate(subjects):
        if progress:
            t = subj["truth"]
            print(
                f"TVA subject {i + 1}/{len(subjects)}: C={t['C']:.1f} K={t['K']} t0={t['t0']:.1f}",
                flush=True,
            )
        idata = fit(TVA(6), subj["data"], seed=i, progress_bar=progress, **fit_kwargs)
        rows += recovery_rows(idata, subj["truth"], i)
        idatas.append(idata)
    return pd.DataFrame(rows), idatas


# ----------------------------------------------------------------------------- cueing
def simulate_cueing_data(observer: str, *, seed: int = 0, num_trials: int | None = None) -> dict:
    """A cued localisation data set (:data:`CUEING_DESIGN`) simulated from ``observer``.

    Raises:
        ValueError: unknown observer.
    """
    if observer not in OBSERVERS:
        raise ValueError(f"unknown observer {observer!r}; expected one of {', '.join(OBSERVERS)}")
    d = CUEING_DESIGN
    g = torch.Generator().manual_seed(seed)
    des = simulate_cueing_design(
        num_trials or d["num_trials"],
        num_locations=d["num_locations"],
        validity=d["validity"],
        num_levels=d["num_levels"],
        generator=g,
    )
    dp = torch.tensor(CUEING_TRUTH["d_prime"], dtype=torch.float64)
    resp = simulate_cueing_responses(
        observer,
        "localisation",
        cue=des["cue"],
        target=des["target"],
        d_prime=dp[des["level"]],
        num_locations=d["num_locations"],
        generator=g,
        **CUEING_TRUTH[observer],
    )
    return {**des, "response": resp}


def cueing_comparison(data: dict, fit_kwargs: dict, *, seed: int = 0, progress: bool = True):
    """Fit the three observers to ``data`` and compare them by PSIS-LOO.

    Returns ``(table, idatas)``: the :func:`bayesattn.inference.compare` table (best first) and
    ``{observer: InferenceData}``.
    """
    d = CUEING_DESIGN
    idatas = {}
    for obs in OBSERVERS:
        model = CueingObserver(
            obs,
            num_locations=d["num_locations"],
            validity=d["validity"],
            num_levels=d["num_levels"],
        )
        if progress:
            print(f"cueing: fitting the {obs} observer", flush=True)
        idatas[obs] = fit(model, data, seed=seed, progress_bar=progress, **fit_kwargs)
    return compare(idatas), idatas


def model_selection_rate(
    datasets_per_observer: int, fit_kwargs: dict, *, seed: int = 0, progress: bool = True
):
    """How often LOO ranks the generating observer first: ``(rate, confusion DataFrame)``.

    ``datasets_per_observer`` data sets are simulated from each observer (seeds
    ``seed + 1000 * k + i``) and the three observers fitted to each.
    """
    counts = pd.DataFrame(0, index=list(OBSERVERS), columns=list(OBSERVERS))
    for k, true in enumerate(OBSERVERS):
        for i in range(datasets_per_observer):
            s = seed + 1000 * (k + 1) + i
            table, _ = cueing_comparison(
                simulate_cueing_data(true, seed=s), fit_kwargs, seed=s, progress=False
            )
            counts.loc[true, table.index[0]] += 1
            if progress:
                print(f"  data from {true} #{i + 1}: LOO picks {table.index[0]}", flush=True)
    rate = float(np.trace(counts.values) / counts.values.sum())
    counts.index.name = "generating \\ selected"
    return rate, counts


# ----------------------------------------------------------------------------- plots
def plot_recovery(table: pd.DataFrame):
    """True value against posterior mean with 94% HDI, one panel per parameter group."""
    groups = {"C (items/s)": "C", "K": "K", "t0 (ms)": "t0", "spatial weights": "weights"}
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), constrained_layout=True)
    for ax, (title, prefix) in zip(axes, groups.items(), strict=True):
        sub = table[table.parameter.str.startswith(prefix)]
        err = np.vstack([sub["mean"] - sub.hdi_low, sub.hdi_high - sub["mean"]])
        colours = np.where(sub.covered, "C0", "C3")
        for x, y, e0, e1, c in zip(sub.true, sub["mean"], err[0], err[1], colours, strict=True):
            ax.errorbar(x, y, yerr=[[e0], [e1]], fmt="o", color=c, ms=4, capsize=2)
        lo = min(sub.true.min(), sub.hdi_low.min())
        hi = max(sub.true.max(), sub.hdi_high.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        cov = sub.covered.mean()
        ax.set(title=f"{title}: {cov:.0%} covered", xlabel="true", ylabel="posterior mean, 94% HDI")
    fig.suptitle("TVA whole report: parameter recovery (red = true value outside the HDI)")
    return fig


def plot_loo(table: pd.DataFrame):
    """LOO comparison: elpd_loo with its standard error per model (ArviZ compare plot)."""
    ax = az.plot_compare(table, figsize=(6, 1 + 0.6 * len(table)))
    ax.set_title("Cueing observers: PSIS-LOO (higher is better)")
    return ax.figure


# ----------------------------------------------------------------------------- demo
def _settings(quick: bool) -> dict:
    if quick:
        return {
            "subjects": 3,
            "tva_fit": {
                "method": "svi",
                "guide": "mvn",
                "num_steps": 400,
                "learning_rate": 0.05,
                "num_chains": 1,
                "num_samples": 300,
            },
            "cue_fit": {
                "method": "svi",
                "guide": "mvn",
                "num_steps": 300,
                "learning_rate": 0.05,
                "num_chains": 1,
                "num_samples": 300,
            },
            "selection_datasets": 0,
        }
    return {
        "subjects": 6,
        "tva_fit": {
            "method": "nuts",
            "num_chains": 2,
            "warmup_steps": 300,
            "num_samples": 300,
            "jit_compile": True,
            "chain_method": "parallel",
        },
        "cue_fit": {
            "method": "nuts",
            "num_chains": 2,
            "warmup_steps": 300,
            "num_samples": 300,
            "chain_method": "parallel",
        },
        "selection_datasets": 3,
        "selection_fit": {
            "method": "svi",
            "guide": "mvn",
            "num_steps": 400,
            "learning_rate": 0.05,
            "num_chains": 1,
            "num_samples": 300,
        },
    }


def _describe(kw: dict) -> str:
    if kw["method"] == "nuts":
        return (
            f"NUTS, {kw['num_chains']} chains x ({kw['warmup_steps']} warm-up + "
            f"{kw['num_samples']} draws)"
        )
    return (
        f"SVI ({kw['guide']} guide, {kw['num_steps']} steps), "
        f"{kw['num_chains'] * kw['num_samples']} guide draws"
    )


def run_neuro_demo(out, *, quick: bool, seed: int) -> dict:
    """Run both studies and write the plots, CSV tables and ``summary.md`` into ``out``.

    Every file is written atomically (:mod:`bayesattn.io`).

    Args:
        out: a :class:`bayesattn.io.OutputDir` (the command line) or an existing folder.
        quick: 3 subjects and SVI fits (a smoke run of about a minute) instead of 6 subjects,
            NUTS and the model-selection study.
        seed: seed of the simulations and fits.

    Returns:
        ``{"recovery": DataFrame, "coverage": float, "loo": DataFrame, "selection_rate":
        float | None, "seconds": float}``.
    """
    start = time.perf_counter()
    out = out if isinstance(out, OutputDir) else OutputDir.plain(out)
    s = _settings(quick)
    with torch_threads(1):  # small tensors: extra threads only add overhead
        print(
            f"== TVA whole-report recovery: {s['subjects']} subjects, {_describe(s['tva_fit'])} ==",
            flush=True,
        )
        subjects = simulate_tva_subjects(s["subjects"], seed=seed)
        recovery, _ = tva_recovery(subjects, s["tva_fit"])
        coverage = float(recovery.covered.mean())
        out.to_csv("tva_recovery.csv", recovery, index=False)
        _save(out, "tva_recovery.png", plot_recovery(recovery))

        print(f"== cueing-model comparison: {_describe(s['cue_fit'])} ==", flush=True)
        data = simulate_cueing_data("bayesian", seed=seed)
        loo, _ = cueing_comparison(data, s["cue_fit"], seed=seed)
        out.to_csv("cueing_loo.csv", loo)
        _save(out, "cueing_loo.png", plot_loo(loo), bbox_inches="tight")

        rate, confusion = None, None
        if s["selection_datasets"]:
            print(
                f"== model selection: {s['selection_datasets']} data sets per observer, "
                f"{_describe(s['selection_fit'])} ==",
                flush=True,
            )
            rate, confusion = model_selection_rate(
                s["selection_datasets"], s["selection_fit"], seed=seed
            )
    seconds = time.perf_counter() - start
    _write_summary(out, recovery, coverage, loo, rate, confusion, s, quick, seconds)
    print(f"TVA coverage of the 94% HDI: {coverage:.1%}; LOO ranks {loo.index[0]} first.")
    if rate is not None:
        print(f"LOO picks the generating observer on {rate:.0%} of the data sets.")
    print(f"wrote {out} in {seconds:.0f} s")
    return {
        "recovery": recovery,
        "coverage": coverage,
        "loo": loo,
        "selection_rate": rate,
        "seconds": seconds,
    }


def _save(out: OutputDir, name: str, fig, **kwargs) -> None:
    try:
        out.savefig(name, fig, dpi=120, **kwargs)
    finally:
        plt.close(fig)


def _md(df: pd.DataFrame, floatfmt: str = "{:.3g}") -> str:
    """A DataFrame as a GitHub-markdown table (no optional dependency)."""
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = [str(idx)]
        for v in row:
            if isinstance(v, float | np.floating):
                cells.append(floatfmt.format(v))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_summary(out, recovery, coverage, loo, rate, confusion, s, quick, seconds):
    by_param = (
        recovery.assign(group=recovery.parameter.str.replace(r"\[\d+\]", "", regex=True))
        .groupby("group")
        .covered.mean()
        .to_frame("coverage")
    )
    table = recovery.set_index("subject")[
        ["parameter", "true", "mean", "hdi_low", "hdi_high", "covered"]
    ]
    loo_cols = [
        c
        for c in ("rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse")
        if c in loo.columns
    ]
    lines = [
        "# bayesattn demo neuro" + (" (--quick)" if quick else ""),
        "",
        f"Run time: {seconds:.0f} s.",
        "",
        "## TVA whole-report parameter recovery",
        "",
        f"{s['subjects']} simulated subjects; 6 locations, exposures 16.6-200 ms, 234 trials "
        f"each; fitted with {_describe(s['tva_fit'])}. Coverage of the 94% HDI over all "
        f"parameters: **{coverage:.1%}** ({int(recovery.covered.sum())} of {len(recovery)}).",
        "",
        _md(by_param, "{:.0%}"),
        "",
        _md(table),
        "",
        "![recovery](tva_recovery.png)",
        "",
        "## Cueing-model comparison (PSIS-LOO)",
        "",
        "Cued localisation (4 locations, validity 0.7, 3 signal levels, 600 trials) simulated "
        f"from the Bayesian observer; each observer fitted with {_describe(s['cue_fit'])}.",
        "",
        _md(loo[loo_cols]),
        "",
        "![loo](cueing_loo.png)",
        "",
    ]
    if rate is not None:
        lines += [
            "## Model selection over simulated data sets",
            "",
            f"LOO ranks the generating observer first on **{rate:.0%}** of "
            f"{int(confusion.values.sum())} data sets ({_describe(s['selection_fit'])}).",
            "",
            _md(confusion),
            "",
        ]
    out.write_text("summary.md", "\n".join(lines))
