"""Parameter recovery of a simulated TVA study: per-subject and hierarchical fits (issue 12).

Design (issue 12): ``S`` subjects, 2 conditions, per condition 13 trials at each of 16.6, 33.3,
50, 100, 150, 200 ms with six targets and 13 trials each with 2, 3, 4 distractors at 150 ms
(:func:`~bayesattn.models.neuro.tva.partial_report_design`): 234 trials per subject. Subjects
are drawn from a population in the form of :class:`~bayesattn.models.neuro.tva.HierarchicalTVA`
(log-normal ``C`` with a condition effect, logistic-normal weights, log-normal ``alpha``,
normal ``mu0``, log-normal ``sigma0``, normal ``mK``, log-normal ``sK``); reports are
simulated with the probit ``K`` and a Gaussian ``t0``.

Fits (all through :func:`bayesattn.inference.fit`, one torch thread):

* per subject: :class:`~bayesattn.models.neuro.tva.TVA` with ``C`` per condition, probit ``K``,
  Gaussian ``t0`` -- MAP + Laplace draws (``--method map``) or NUTS;
* per subject, free ``K`` (Dirichlet over 0..6), for PSIS-LOO against the probit ``K``
  (``--loo-subjects`` of them);
* hierarchical: :class:`~bayesattn.models.neuro.tva.HierarchicalTVA` over the first
  ``--hier-subjects`` subjects, SVI with a low-rank multivariate normal guide started at the MAP.

Reported: 94% HDI coverage of every subject-level parameter (the share of true values inside
their interval), the RMSE of the posterior means, the shrinkage of the hierarchical estimates
(sd of the hierarchical posterior means over the sd of the per-subject ones), LOO probit-K vs
free-K per subject, and an analysis of the spatial-weight misses (are missed weights further
from uniform than the truth?).

Order: the per-subject fits of the first ``--hier-subjects`` subjects, the hierarchical fit,
the free-K fits, then the other subjects. Resumable: every fit's summary is written to
``OUT/fits/*.json`` as it finishes; a rerun skips finished fits. Run:
``python benchmarks/tva_recovery.py [--subjects 50] [--hier-subjects 20] [--loo-subjects 10]
[--out benchmarks/results/tva/recovery]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

F64 = torch.float64
OUT = Path(__file__).resolve().parent / "results" / "tva" / "recovery"
PARAMS = ("C[0]", "C[1]", "alpha", "t0", "t0_sd", "mK", "sK") + tuple(
    f"w[{j}]" for j in range(6)
)
HDI = 0.94


def population_truth(num_subjects: int, seed: int = 0) -> list[dict]:
    """Subject parameters drawn from the population (module docstring); ``w`` sums to 1."""
    rng = np.random.default_rng(seed)
    subjects = []
    for _ in range(num_subjects):
        log_c = math.log(45.0) + 0.25 * rng.standard_normal()
        logits = np.append(0.25 * rng.standard_normal(5), 0.0)
        w = np.exp(logits) / np.exp(logits).sum()
        subjects.append(
            {
                "C": [math.exp(log_c), math.exp(log_c - 0.25)],  # condition 1: C lower
                "alpha": math.exp(math.log(0.4) + 0.3 * rng.standard_normal()),
                "t0": 15.0 + 5.0 * rng.standard_normal(),
                "t0_sd": math.exp(math.log(6.0) + 0.3 * rng.standard_normal()),
                "mK": 3.3 + 0.5 * rng.standard_normal(),
                "sK": math.exp(math.log(0.6) + 0.25 * rng.standard_normal()),
                "w": w.tolist(),
            }
        )
    return subjects


def simulate(truth: list[dict], seed: int = 0) -> list[dict]:
    """Per-subject data dicts (234 trials, ``condition`` 0/1) from ``truth``."""
    from bayesattn.models.neuro.tva import (
        k_probit_probabilities,
        partial_report_design,
        simulate_partial_report,
    )

    g = torch.Generator().manual_seed(seed)
    out = []
    for p in truth:
        parts = []
        for c in range(2):
            exposure, targets, distractors = partial_report_design(generator=g)
            reported = simulate_partial_report(
                exposure,
                targets=targets,
                distractors=distractors,
                C=p["C"][c],
                weights=torch.tensor(p["w"], dtype=F64),
                alpha=p["alpha"],
                t0=p["t0"],
                t0_sd=p["t0_sd"],
                k_probs=k_probit_probabilities(p["mK"], p["sK"], 6),
                generator=g,
            )
            cond = torch.full((len(exposure),), c, dtype=torch.long)
            parts.append((exposure, targets, distractors, reported, cond))
        keys = ("exposure", "targets", "distractors", "reported", "condition")
        out.append({k: torch.cat([x[i] for x in parts]) for i, k in enumerate(keys)})
    return out


def truth_vector(p: dict) -> dict:
    row = {"C[0]": p["C"][0], "C[1]": p["C"][1]}
    row.update({k: p[k] for k in ("alpha", "t0", "t0_sd", "mK", "sK")})
    row.update({f"w[{j}]": p["w"][j] for j in range(6)})
    return row


def _hdi(x: np.ndarray) -> tuple[float, float]:
    import arviz as az

    lo, hi = az.hdi(np.asarray(x, dtype=float), hdi_prob=HDI)
    return float(lo), float(hi)


def summarise(draws: dict) -> dict:
    """``{param: {mean, sd, lo, hi}}`` from subject-level draws ``{param: (D,)}``."""
    return {
        k: dict(zip(("lo", "hi"), _hdi(v), strict=True))
        | {"mean": float(np.mean(v)), "sd": float(np.std(v))}
        for k, v in draws.items()
    }


def subject_draws(post, s: int | None = None) -> dict:
    """Flattened draws of the subject-level parameters (``s``: index of a hierarchical fit)."""

    def get(name):
        x = post[name].values
        x = x.reshape(-1, *x.shape[2:])
        return x if s is None else x[:, s]

    out = {}
    C = get("C")
    out["C[0]"], out["C[1]"] = C[:, 0], C[:, 1]
    for k in ("alpha", "t0", "t0_sd", "mK", "sK"):
        if k in post:  # (a free-K fit has no mK, sK)
            out[k] = get(k)
    w = get("attention_weights")
    for j in range(6):
        out[f"w[{j}]"] = w[:, j]
    return out


def fit_subject(data: dict, kind: str, method: str, seed: int, *, chains: int = 2,
                draws: int = 500, chain_method: str = "parallel"):
    """One subject's fit: MAP + Laplace, or NUTS with ``chains`` x (``draws`` warm-up +
    ``draws``) (dense mass matrix, JIT)."""
    import pyro.distributions as dist

    from bayesattn.inference import fit
    from bayesattn.models.neuro.tva import TVA

    model = TVA(
        6,
        paradigm="partial",
        K=kind,
        t0_sd=dist.HalfNormal(10.0),
        conditions=2,
        by_condition=("C",),
    )
    kw = (dict(num_steps=300) if method == "map" else
          dict(num_samples=draws, warmup_steps=draws, full_mass=True, jit_compile=True,
               chain_method=chain_method))
    return fit(
        model,
        data,
        method=method,
        num_chains=1 if method == "map" else chains,
        num_samples=kw.pop("num_samples", 400),
        seed=seed,
        progress_bar=False,
        **kw,
    )


#: parameters the hierarchical NUTS fit samples centred (``--hier-centered``): those that 234
#: trials pin down better than the population spreads them (per-subject posterior sd below
#: the population sd); sigma0 (t0_sd) is weakly informed per subject and stays non-centred
CENTRED = ("C", "alpha", "weights", "t0", "mK", "sK")


def hier_init(summaries: list[dict], chains: int, seed: int,
              centered=CENTRED, deviation: str = "condition") -> tuple[list[dict], dict]:
    """NUTS starting points of :class:`HierarchicalTVA` (one per chain) and a starting
    diagonal inverse mass matrix, from per-subject posterior summaries (mean, sd).

    Each chain starts every subject's unconstrained values at its posterior mean plus half a
    posterior sd of noise (delta method; a different draw per chain, so that R-hat still
    compares dispersed starts), the population means and sds those values imply, and
    ``z = (x - mean) / sd`` for a non-centred parameter. The inverse mass holds the
    per-subject posterior variances (centred ``x``), 1 (``z``), ``sd^2 / S`` (population
    means and effects) and ``1 / (2 S)`` (log population sds). With ``deviation="subject"``
    a subject's one ``C`` value (condition 0's) is the precision-weighted mean of its two
    conditions' values, the second shifted back by the mean effect. Both only set where NUTS
    starts and how it first scales its steps; the posterior is the model's."""
    rng = np.random.default_rng(seed)
    num = len(summaries)

    def col(k, part="mean"):
        return np.array([s[k][part] for s in summaries])

    w, w_sd = (np.stack([col(f"w[{j}]", part) for j in range(6)], 1) for part in ("mean", "sd"))
    mean = {  # unconstrained posterior means and sds per subject
        "C": (np.log(np.stack([col(f"C[{c}]") for c in range(2)], 1)),
              np.stack([col(f"C[{c}]", "sd") / col(f"C[{c}]") for c in range(2)], 1)),
        "alpha": (np.log(col("alpha")), col("alpha", "sd") / col("alpha")),
        "weights": (np.log(w[:, :5] / w[:, 5:]),
                    np.hypot(w_sd[:, :5] / w[:, :5], w_sd[:, 5:] / w[:, 5:])),
        "t0": (col("t0"), col("t0", "sd")),
        "t0_sd": (np.log(col("t0_sd")), col("t0_sd", "sd") / col("t0_sd")),
        "mK": (col("mK"), col("mK", "sd")),
        "sK": (np.log(col("sK")), col("sK", "sd") / col("sK")),
    }
    inits = []
    for _ in range(chains):
        values = {}
        for name, (m, sd) in mean.items():
            x = m + 0.5 * sd * rng.standard_normal(m.shape)
            base = x[:, 0] if name == "C" else x
            mu, sigma = base.mean(0), np.maximum(base.std(0), 0.05)
            values[f"{name}_mu"] = torch.tensor(mu, dtype=F64)
            values[f"{name}_sigma"] = torch.tensor(sigma, dtype=F64)
            if name == "C":
                effect = float((x[:, 1] - x[:, 0]).mean())
                values["C_effect"] = torch.tensor([effect], dtype=F64)
                if deviation == "subject":
                    x = _pooled(x - [0.0, effect], sd)
                else:
                    mu = np.array([mu, mu + effect])
            values[f"{name}_x" if name in centered else f"{name}_z"] = torch.tensor(
                x if name in centered else (x - mu) / sigma, dtype=F64)
        inits.append(values)
    inverse_mass = {}
    for name, (m, sd) in mean.items():
        base = m[:, 0] if name == "C" else m
        inverse_mass[f"{name}_mu"] = torch.tensor(np.maximum(base.var(0), 1e-4) / num, dtype=F64)
        inverse_mass[f"{name}_sigma"] = torch.full(base.shape[1:], 1 / (2 * num), dtype=F64)
        if name == "C":
            inverse_mass["C_effect"] = torch.tensor([np.var(m[:, 1] - m[:, 0]) / num],
                                                    dtype=F64)
        if name == "C" and deviation == "subject":
            sd = 1 / np.sqrt((sd**-2).sum(1))
        inverse_mass[f"{name}_x" if name in centered else f"{name}_z"] = (
            torch.tensor(sd**2, dtype=F64) if name in centered
            else torch.ones(sd.shape, dtype=F64))
    return inits, inverse_mass


def _pooled(x: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Precision-weighted mean over the last axis of ``x`` ``(S, 2)`` with sds ``sd``."""
    weight = sd**-2
    return (x * weight).sum(1) / weight.sum(1)


def study_data(datas: list[dict]) -> dict:
    """The subjects' data sets as one study: trials concatenated, with a ``subject`` index."""
    keys = ("exposure", "targets", "distractors", "reported", "condition")
    data = {k: torch.cat([d[k] for d in datas]) for k in keys}
    data["subject"] = torch.cat(
        [torch.full((len(d["exposure"]),), s, dtype=torch.long) for s, d in enumerate(datas)]
    )
    return data


def fit_hierarchical(datas: list[dict], steps: int, seed: int, method: str = "svi",
                     chains: int = 2, centered=False, init_values=None,
                     inverse_mass_matrix=None, deviation: str = "condition"):
    """The hierarchical fit: SVI (``steps`` steps, low-rank guide) or NUTS (``chains`` chains
    in parallel, ``steps`` warm-up and ``steps`` draws each, from ``init_values`` with that
    starting ``inverse_mass_matrix``); ``deviation`` as in :class:`HierarchicalTVA`."""
    import pyro.distributions as dist

    from bayesattn.inference import fit
    from bayesattn.models.neuro.tva import HierarchicalTVA

    data = study_data(datas)
    model = HierarchicalTVA(
        len(datas),
        6,
        paradigm="partial",
        K="probit",
        t0_sd=dist.HalfNormal(10.0),
        conditions=2,
        by_condition=("C",),
        centered=centered,
        deviation=deviation,
    )
    if method == "nuts":
        return fit(model, data, method="nuts", num_chains=chains, num_samples=steps,
                   warmup_steps=steps, max_tree_depth=8, chain_method="parallel", seed=seed,
                   progress_bar=True, init_values=init_values,
                   inverse_mass_matrix=inverse_mass_matrix)
    return fit(
        model,
        data,
        method="svi",
        guide="lowrank",
        num_steps=steps,
        learning_rate=0.02,
        num_chains=1,
        num_samples=300,
        seed=seed,
        progress_bar=False,
    )


def coverage_rows(truths: list[dict], summaries: list[dict]) -> list[dict]:
    rows = []
    for s, (p, summ) in enumerate(zip(truths, summaries, strict=True)):
        t = truth_vector(p)
        for k in PARAMS:
            if k not in summ:
                continue
            r = summ[k]
            rows.append(
                {
                    "subject": s,
                    "parameter": k,
                    "true": t[k],
                    **r,
                    "covered": bool(r["lo"] <= t[k] <= r["hi"]),
                }
            )
    return rows


def table(rows: list[dict]) -> dict:
    """Per parameter: coverage, RMSE of the posterior mean, mean HDI width; ``z_sd``, the sd
    over subjects of ``(posterior mean - truth) / posterior sd`` (about 1 when the posterior
    sds are right, > 1 when too narrow); ``p_low``, the binomial probability of covering at
    most as many truths as observed if each 94% interval covered with probability 0.94 (a
    small value: fewer covered than chance explains)."""
    from scipy.stats import binom

    out = {}
    for k in PARAMS:
        rs = [r for r in rows if r["parameter"] == k and "mean" in r]
        if not rs:
            continue
        err = np.array([r["mean"] - r["true"] for r in rs])
        out[k] = {
            "n": len(rs),
            "coverage": float(np.mean([r["covered"] for r in rs])),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "hdi_width": float(np.mean([r["hi"] - r["lo"] for r in rs])),
            "sd_of_means": float(np.std([r["mean"] for r in rs])),
            "sd_of_truth": float(np.std([r["true"] for r in rs])),
            "z_sd": float(np.std([(r["mean"] - r["true"]) / r["sd"] for r in rs])),
            "p_low": float(binom.cdf(sum(r["covered"] for r in rs), len(rs), HDI)),
        }
    return out


def weight_misses(rows: list[dict]) -> dict:
    """The missed weights: how many lie further from uniform (1/6) than the truth, and the
    slope of (estimate - 1/6) on (truth - 1/6) over all weights (1 = unbiased spread)."""
    ws = [r for r in rows if r["parameter"].startswith("w[")]
    misses = [r for r in ws if not r["covered"]]
    further = [r for r in misses if abs(r["mean"] - 1 / 6) > abs(r["true"] - 1 / 6)]
    x = np.array([r["true"] - 1 / 6 for r in ws])
    y = np.array([r["mean"] - 1 / 6 for r in ws])
    slope = float((x * y).sum() / (x * x).sum()) if len(ws) else float("nan")
    return {
        "weights": len(ws),
        "misses": len(misses),
        "further_from_uniform": len(further),
        "slope_estimate_on_truth": slope,
        "mean_sd_over_abs_error_of_misses": float(
            np.mean([r["sd"] / abs(r["mean"] - r["true"]) for r in misses])
        )
        if misses
        else None,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=50)
    parser.add_argument("--hier-subjects", type=int, default=50)
    parser.add_argument("--loo-subjects", type=int, default=10)
    parser.add_argument("--method", choices=["map", "nuts"], default="map")
    parser.add_argument("--hier-steps", type=int, default=400,
                        help="SVI steps, or NUTS warm-up and draws per chain")
    parser.add_argument("--hier-method", choices=["svi", "nuts"], default="svi")
    parser.add_argument("--hier-chains", type=int, default=2, help="NUTS chains (parallel)")
    parser.add_argument("--hier-centered", action="store_true",
                        help="hierarchical NUTS centred in CENTRED's parameters, started "
                             "from the per-subject fits (hier_init)")
    parser.add_argument("--hier-deviation", choices=["condition", "subject"],
                        default="condition",
                        help="HierarchicalTVA's deviation: one per subject and condition "
                             "(independent) or one per subject shared across conditions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    fits = args.out / "fits"
    fits.mkdir(parents=True, exist_ok=True)
    truths = population_truth(args.subjects, args.seed)
    datas = simulate(truths, args.seed)
    started = time.time()

    def cached(name, make):
        path = fits / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        t = time.perf_counter()
        value = make()
        value["wall_s"] = time.perf_counter() - t
        path.write_text(json.dumps(value) + "\n")
        print(f"{name}: {value['wall_s']:.1f} s", flush=True)
        return value

    def one(s, kind):
        import arviz as az

        idata = fit_subject(datas[s], kind, args.method, seed=args.seed + s)
        out = {"converged": int(idata.attrs.get("converged", 0))}
        if idata.posterior.sizes["draw"] * idata.posterior.sizes["chain"] < 2:
            out["failed"] = "point estimate only (Hessian not positive definite)"
            return out
        out["summary"] = summarise(subject_draws(idata.posterior))
        with np.errstate(all="ignore"):
            loo = az.loo(idata)
        out["elpd_loo"], out["se"] = float(loo.elpd_loo), float(loo.se)
        out["pareto_k_max"] = float(np.max(loo.pareto_k.values))
        return out

    suffix = "" if args.method == "map" else f"_{args.method}"  # MAP keeps its old names

    def probit(s):
        return cached(f"subject{s:02d}_probit{suffix}", lambda: one(s, "probit"))

    # the subjects of the hierarchical fit first, then it, the free-K fits and the rest, so
    # that an interrupted run can be summarised with a smaller --subjects from the cache
    # (the first k simulated subjects do not depend on --subjects)
    indiv = [probit(s) for s in range(min(args.hier_subjects, args.subjects))]

    def hier():
        init, metric, centred = None, None, False
        if args.hier_centered:
            centred = CENTRED
            init, metric = hier_init([f["summary"] for f in indiv[: args.hier_subjects]],
                                     args.hier_chains, args.seed, centred,
                                     args.hier_deviation)
        idata = fit_hierarchical(datas[: args.hier_subjects], args.hier_steps, args.seed,
                                 args.hier_method, args.hier_chains, centred, init, metric,
                                 args.hier_deviation)
        import arviz as az

        post = idata.posterior
        hyper = [k for k in post.data_vars if k.split("_")[-1] in ("mu", "sigma", "effect")]
        diagnostics = {
            "max_r_hat": float(az.rhat(post).to_array().max()),
            "min_ess_bulk": float(az.ess(post).to_array().min()),
            "min_ess_bulk_hyper": float(az.ess(post[hyper]).to_array().min()),
        }
        if "diverging" in idata.sample_stats:
            stats = idata.sample_stats
            diagnostics.update(divergences=int(stats["diverging"].values.sum()),
                               mean_leapfrog_steps=float(stats["n_steps"].values.mean()),
                               min_bfmi=float(np.min(az.bfmi(idata))))
        return {
            "summaries": [summarise(subject_draws(post, s)) for s in range(args.hier_subjects)],
            "diagnostics": diagnostics,
            "converged": int(idata.attrs.get("converged", 0)),
            "population": {k: float(post[k].mean()) for k in
                           ("C_mu", "C_effect", "C_sigma", "t0_sigma", "mK_mu", "mK_sigma")},
        }

    key = f"hierarchical{args.hier_subjects:02d}_{args.hier_method}{args.hier_steps}"
    tag = ("_centred" if args.hier_centered else "") + (
        "_shared" if args.hier_deviation == "subject" else "")
    key += tag
    h = cached(key, hier) if args.hier_subjects else None
    free = [cached(f"subject{s:02d}_free{suffix}", lambda s=s: one(s, "free"))
            for s in range(min(args.loo_subjects, args.subjects))]
    indiv += [probit(s) for s in range(len(indiv), args.subjects)]

    res = {
        "design": "2 conditions x 117 trials (6 exposures x 13 + 3 distractor counts x 13)",
        "subjects": args.subjects,
        "method": args.method,
        "machine": platform.processor() or platform.machine(),
        "wall_s_this_run": time.time() - started,
    }
    ok = [s for s, f in enumerate(indiv) if "summary" in f]
    rows = coverage_rows([truths[s] for s in ok], [indiv[s]["summary"] for s in ok])
    res["per_subject"] = {"table": table(rows), "weights": weight_misses(rows),
                          "fit_s_mean": float(np.mean([f["wall_s"] for f in indiv])),
                          "converged": int(sum(f["converged"] for f in indiv)),
                          "failed": [s for s, f in enumerate(indiv) if "summary" not in f]}
    if h:
        both = [s for s in ok if s < args.hier_subjects]
        hrows = coverage_rows([truths[s] for s in both], [h["summaries"][s] for s in both])
        prow = coverage_rows([truths[s] for s in both], [indiv[s]["summary"] for s in both])
        ht, pt = table(hrows), table(prow)
        res["hierarchical"] = {
            "subjects": args.hier_subjects,
            "table": ht,
            "weights": weight_misses(hrows),
            "fit_s": h["wall_s"],
            "method": args.hier_method,
            "steps": args.hier_steps,
            "chains": args.hier_chains,
            "centered": args.hier_centered,
            "deviation": args.hier_deviation,
            "diagnostics": h.get("diagnostics"),
            "converged": h["converged"],
            "population": h["population"],
            "shrinkage": {k: ht[k]["sd_of_means"] / pt[k]["sd_of_means"] for k in PARAMS},
        }
    if free:
        pairs = [(p, f) for p, f in zip(indiv, free, strict=False) if "summary" in p
                 and "summary" in f]
        diffs = [(p["elpd_loo"] - f["elpd_loo"]) for p, f in pairs]
        res["loo"] = {
            "subjects": len(pairs),
            "elpd_probit_minus_free": diffs,
            "probit_preferred": int(sum(d > 0 for d in diffs)),
            "total_probit_minus_free": float(sum(diffs)),
            "max_pareto_k": float(max(max(f["pareto_k_max"], p["pareto_k_max"])
                                      for p, f in pairs)),
        }
    name = f"results{suffix}{tag}"
    (args.out / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(with_notes(markdown(res), args.out))
    print(markdown(res))
    return res


def markdown(res: dict) -> str:
    lines = [
        "# TVA recovery at study scale (`benchmarks/tva_recovery.py`)",
        "",
        f"{res['subjects']} simulated subjects, {res['design']}; probit K, Gaussian t0, C per "
        f"condition. Per-subject fits: {res['method']} "
        f"(mean {res['per_subject']['fit_s_mean']:.0f} s a fit on the shared 2-core machine, "
        f"{res['per_subject']['converged']} of {res['subjects']} verdicts converged; "
        f"failed, left out: subjects {res['per_subject']['failed']}).",
        "",
    ]
    hier = res.get("hierarchical")
    head = "| parameter | per-subject coverage | P(<= by chance) | z sd | RMSE | HDI width |"
    sep = "|---|---|---|---|---|---|"
    if hier:
        head += (" hierarchical coverage | P(<= by chance) | z sd | RMSE | HDI width |"
                 " shrinkage (sd ratio) |")
        sep += "---|---|---|---|---|---|"
    how = ""
    if hier:
        how = (f"NUTS, {hier['chains']} chains x ({hier['steps']} warm-up + {hier['steps']} "
               "draws)" if hier["method"] == "nuts"
               else f"SVI, low-rank guide, {hier['steps']} steps")
        if hier.get("centered"):
            how += (f"; centred in {', '.join(CENTRED)}, started from the per-subject "
                    "fits")
        if hier.get("deviation") == "subject":
            how += "; one deviation per subject, shared by its two conditions"
    lines += ["94% HDI coverage (goal >= 0.90 each). `P(<= by chance)`: the binomial "
              "probability of so few covered truths if every interval covered with "
              "probability 0.94; `z sd`: sd of (posterior mean - truth) / posterior sd over "
              "subjects (1 = calibrated sds, > 1 = too narrow).", "",
              f"Hierarchical over the first "
              f"{hier['subjects']} subjects ({how})."
              if hier else "", "",
              head, sep]
    for k, r in res["per_subject"]["table"].items():
        line = (f"| {k} | {r['coverage']:.2f} | {r['p_low']:.3f} | {r['z_sd']:.2f} | "
                f"{r['rmse']:.3g} | {r['hdi_width']:.3g} |")
        if hier:
            q = hier["table"][k]
            line += (f" {q['coverage']:.2f} | {q['p_low']:.3f} | {q['z_sd']:.2f} | "
                     f"{q['rmse']:.3g} | {q['hdi_width']:.3g} | {hier['shrinkage'][k]:.2f} |")
        lines.append(line)
    w = res["per_subject"]["weights"]
    lines += [
        "",
        f"Spatial weights, per subject: {w['misses']} of {w['weights']} true weights outside "
        f"their HDI, {w['further_from_uniform']} of those misses further from uniform than the "
        f"truth; slope of (estimate - 1/6) on (truth - 1/6): {w['slope_estimate_on_truth']:.2f}.",
    ]
    if hier:
        hw = hier["weights"]
        lines.append(
            f"Hierarchical: {hw['misses']} of {hw['weights']} missed, "
            f"{hw['further_from_uniform']} further from uniform; slope "
            f"{hw['slope_estimate_on_truth']:.2f}. Fit {hier['fit_s']:.0f} s, verdict "
            f"converged={hier['converged']}; population posterior means {hier['population']}."
        )
        if hier.get("diagnostics"):
            lines.append(f"Hierarchical fit diagnostics: {hier['diagnostics']}.")
    if "loo" in res:
        lo = res["loo"]
        lines.append(
            f"\nPSIS-LOO, probit K vs free K (Dirichlet over 0..6), first {lo['subjects']} "
            f"subjects: probit preferred on {lo['probit_preferred']}, total elpd difference "
            f"{lo['total_probit_minus_free']:.1f} (probit - free); max Pareto k "
            f"{lo['max_pareto_k']:.2f}."
        )
    return "\n".join(lines) + "\n"


def with_notes(text: str, out: Path) -> str:
    """``text`` followed by the hand-written ``OUT/notes.md`` (how the run was sized and what
    it shows), when there is one, so that a rerun of the summary keeps it."""
    notes = out / "notes.md"
    return text + ("\n" + notes.read_text() if notes.exists() else "")


if __name__ == "__main__":
    main()
