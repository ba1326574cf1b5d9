"""``bayesattn tva fit``: TVA fitted to a study's trials, one fit per subject (or condition).

::

    bayesattn tva fit --data trials.csv --task partial|whole --k probit|free|fixed=VALUE
        --t0 gaussian|fixed=VALUE|exponential [--regions "1-3,4-6"] --by subject[,condition]
        [--condition-params C,alpha,w,K,t0] [--hierarchical [--deviation condition|subject]]
        --method map|nuts|svi [--nuts-start median|map]
        [--prior NAME=Family(args) ...] --out DIR [--backend process|ray|serial]
        [--address ADDR] [--workers N] [--seed N] [--force] [--quick]

The data are the field's long CSV (:mod:`.tva_data`); the model is
:class:`~bayesattn.models.neuro.tva.TVA` (Bundesen 1990; Dyrholm et al. 2011; probit ``K`` and
Gaussian ``t0`` as in StanTVA/RStanTVA, Tuennermann et al. 2021) with the options of
:mod:`.tva_options`. Fits:

* ``--by subject``: one fit per subject over all its trials (every condition shares the
  parameters, except those named in ``--condition-params``, which get one value per
  condition);
* ``--by subject,condition``: one fit per subject and condition; ``--by condition``: one per
  condition (subjects pooled);
* ``--hierarchical``: one fit of all subjects together
  (:class:`~bayesattn.models.neuro.tva.HierarchicalTVA`; with ``--by subject,condition`` one
  per condition). ``--deviation subject`` gives each subject one deviation from the
  population, shared by its conditions, in the ``--condition-params`` parameters (default
  ``condition``: an independent deviation per condition).

Fits are independent tasks run by :mod:`.backends` (process pool by default, Ray with
``--backend ray``), each seeded with ``--seed``, so every backend gives the same numbers. A fit
that fails is reported on stderr and in the summaries; the others go on, and the command then
exits with status 1.

Outputs in ``--out`` (atomic writes, listed in the manifest; see :mod:`bayesattn.io`):

* ``fit-<group>.nc``: the fit's InferenceData; parameters named as in
  :data:`.tva_options.OUTPUT_NAMES` (``C`` items/s; ``mu0``, ``sigma0`` ms);
* ``summary.csv``: one row per fit (per subject in a hierarchical fit, per condition when
  parameters vary by condition): ``subject``, ``condition``, then for each parameter its
  posterior mean in a column named after it and ``NAME_sd``, ``NAME_hdi_3%``,
  ``NAME_hdi_97%`` (94% HDI); vectors get one column per entry (``w[1]..w[R]``, ``pK[0]..``);
  then ``trials``, ``method``, ``converged``, ``seconds``, ``file``, ``error``;
* ``summary.md``: settings, the convergence verdict of each fit, failures;
* ``fits.png``: observed and predicted mean score (items reported per trial) by exposure
  (and number of distractors) for each fit; ``parameters.png``: each parameter's posterior
  mean and 94% HDI across fits;
* ``population.csv`` (hierarchical fits): posterior summary of the population parameters.
"""

from __future__ import annotations

import re
import time

import numpy as np

from ..errors import UsageError
from ..io import OutputDir
from .backends import run_tasks
from .tva_data import Trials, group_indices, natural_key, read_trials
from .tva_options import (
    check_priors,
    parse_by,
    parse_condition_params,
    parse_k,
    parse_prior,
    parse_t0,
)

__all__ = ["HDI_PROB", "plan_fits", "fit_one", "fit_rows", "run_tva_fit", "fit_settings"]

#: probability mass of the HDI columns of ``summary.csv``
HDI_PROB = 0.94
#: parameters of ``summary.csv``, in column order
PARAM_ORDER = ("C", "alpha", "w", "mu0", "sigma0", "mK", "sK", "pK", "K_mean")
#: output name -> the ``by_condition`` name that gives it a condition axis
_CONDITION_OF = {"C": "C", "alpha": "alpha", "w": "weights", "mu0": "t0", "sigma0": "t0",
                 "mK": "K", "sK": "K", "pK": "K", "K_mean": "K"}
_TRAILING = ("trials", "method", "converged", "seconds", "file", "error")
#: most panels drawn in ``fits.png``
MAX_PANELS = 48


def fit_settings(method: str, quick: bool, nuts_start: str = "median") -> dict:
    """Keyword arguments of :func:`bayesattn.inference.fit` for ``method``.

    MAP: 4 x 250 Laplace draws; SVI: 2000 steps and 4 x 250 draws; NUTS: 4 chains of 1000
    warm-up + 1000 draws with a dense mass matrix (a third fewer leapfrog steps than a diagonal
    one on a partial-report subject, ``benchmarks/bench_tva.py``), run in lockstep in the fit's
    process (``chain_method="vectorized"``: the backend already runs one fit per core) through
    the JIT; 500 prior draws. ``quick``: 1 x 100 draws, 200 SVI steps, 2 NUTS chains of
    100 + 100, 50 prior draws. ``nuts_start="map"``: NUTS chains start at draws of a
    MAP-Laplace fit, its variances the starting metric (``fit(init_values="map")``: a
    cheaper start of warm-up, a saving over the whole run that depends on the seed);
    ``"median"``: at prior medians.
    """
    if method == "nuts":
        lockstep = {"chain_method": "vectorized", "jit_compile": True,
                    "init_values": "map" if nuts_start == "map" else None}
        return ({"num_chains": 2, "num_samples": 100, "warmup_steps": 100,
                 "num_prior_draws": 50, **lockstep} if quick else
                {"num_chains": 4, "num_samples": 1000, "warmup_steps": 1000, "full_mass": True,
                 **lockstep})
    base = ({"num_chains": 1, "num_samples": 100, "num_prior_draws": 50} if quick else
            {"num_chains": 4, "num_samples": 250})
    if method == "svi":
        base["num_steps"] = 200 if quick else 2000
    return base


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "x"


def _labels(values) -> list[str]:
    return sorted(set(values), key=natural_key)


def plan_fits(trials: Trials, *, by: tuple, hierarchical: bool,
              condition_params: tuple) -> list[dict]:
    """The fits of a study: ``[{"key", "index", "file", "subjects", "conditions"}, ...]``.

    ``key``: ``{"subject": label, "condition": label}`` (``"all"`` where the fit pools);
    ``index``: the trials; ``subjects``/``conditions``: the labels coded ``0..`` in the fit's
    ``subject``/``condition`` data (None when the fit has no such axis).
    """
    split = tuple(c for c in by if not (hierarchical and c == "subject"))
    plans, used = [], set()
    for key, index in group_indices(trials, split):
        sub = trials.subset(index)
        conds = _labels(sub.condition)
        subs = _labels(sub.subject)
        pooled = (conds[0] or "all") if len(conds) == 1 else "all"
        full = {"subject": key.get("subject", "all" if len(subs) > 1 else subs[0]),
                "condition": key.get("condition", pooled)}
        parts = ["hierarchical"] if hierarchical else []
        parts += [f"{c}-{_safe(key[c])}" for c in split]
        name = "fit-" + ("-".join(parts) or "all")
        stem, i = name, 2
        while name in used:
            name, i = f"{stem}-{i}", i + 1
        used.add(name)
        plans.append({"key": full, "index": index, "file": name + ".nc",
                      "subjects": subs if hierarchical else None,
                      "conditions": conds if condition_params and "condition" not in by
                      else None})
    return plans


def _payload(trials: Trials, plan: dict, spec: dict, method: str, seed: int, quick: bool,
             nuts_start: str = "median"):
    sub = trials.subset(plan["index"])
    data = {"exposure": sub.exposure.astype(np.float64), "reported": sub.reported}
    if spec["task"] == "partial" or spec["empty_slots"]:
        data["targets"] = sub.targets
        data["distractors"] = sub.distractors
    spec = dict(spec)
    if plan["subjects"] is not None:
        data["subject"] = np.array([plan["subjects"].index(s) for s in sub.subject])
        spec["num_subjects"] = len(plan["subjects"])
    if plan["conditions"] is not None:
        data["condition"] = np.array([plan["conditions"].index(c) for c in sub.condition])
        spec["conditions"] = len(plan["conditions"])
    return {"spec": spec, "data": data, "method": method, "seed": seed,
            "settings": fit_settings(method, quick, nuts_start)}


def fit_one(payload: dict):
    """Fit one group (runs in a worker): returns its InferenceData, parameters renamed.

    ``payload``: ``{"spec", "data" (numpy arrays), "method", "seed", "settings"}`` (see
    :func:`.tva_options.build_model`, :func:`fit_settings`).

    Raises:
        ValueError, FloatingPointError: the fit failed (reported by the backend).
    """
    import torch

    from ..inference import fit
    from .tva_options import build_model, rename_parameters

    model = build_model(payload["spec"])
    data = {k: torch.as_tensor(v) for k, v in payload["data"].items()}
    idata = fit(model, data, method=payload["method"], seed=payload["seed"],
                progress_bar=False, **payload["settings"])
    return rename_parameters(idata)


# ---------------------------------------------------------------------- summaries
def _hdi(x: np.ndarray) -> tuple[float, float]:
    import arviz as az

    if x.size < 2 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    lo, hi = az.hdi(x, hdi_prob=HDI_PROB)
    return float(lo), float(hi)


def _component_names(name: str, shape: tuple) -> list[tuple[str, tuple]]:
    if not shape:
        return [(name, ())]
    first = 0 if name == "pK" and shape[-1] > 1 else 1
    out = []
    for idx in np.ndindex(*shape):
        label = ",".join(str(i + first) for i in idx)
        out.append((f"{name}[{label}]", idx))
    return out


def fit_rows(idata, plan: dict, *, hierarchical: bool, by_condition: tuple) -> list[dict]:
    """Rows of ``summary.csv`` from one fit (see the module docstring).

    A variable's axis is read as the subject axis when its dim is named ``subject`` (or, in a
    hierarchical fit, when its first axis has one entry per subject); as the condition axis
    when its dim is named ``condition`` (or the next axis has one entry per condition and
    the parameter is in ``by_condition``). Parameters without that axis repeat on each row.
    """
    lo_name, hi_name = (f"hdi_{round(50 * (1 - HDI_PROB))}%",
                        f"hdi_{round(100 - 50 * (1 - HDI_PROB))}%")
    post = idata.posterior
    subs = plan["subjects"] if hierarchical and plan["subjects"] else [plan["key"]["subject"]]
    conds = plan["conditions"] or [plan["key"]["condition"]]
    stats: dict[tuple, dict] = {}
    split_conditions = False
    for name in PARAM_ORDER:
        if name not in post.data_vars:
            continue
        da = post[name]
        arr = da.values.reshape(-1, *da.shape[2:])
        dims = list(da.dims[2:])
        s_ax = c_ax = None
        if "subject" in dims:
            s_ax = dims.index("subject")
        elif hierarchical and arr.ndim > 1 and arr.shape[1] == len(subs):
            s_ax = 0
        if "condition" in dims:
            c_ax = dims.index("condition")
        elif plan["conditions"] and _CONDITION_OF[name] in by_condition:
            nxt = 0 if s_ax is None else s_ax + 1
            if arr.ndim > nxt + 1 and arr.shape[nxt + 1] == len(conds):
                c_ax = nxt
        split_conditions |= c_ax is not None
        for si in range(len(subs)):
            for ci in range(len(conds)):
                sel: list = [slice(None)] * (arr.ndim - 1)
                if s_ax is not None:
                    sel[s_ax] = si
                if c_ax is not None:
                    sel[c_ax] = ci
                part = arr[(slice(None), *sel)]
                row = stats.setdefault((si, ci), {})
                for col, idx in _component_names(name, part.shape[1:]):
                    x = part[(slice(None), *idx)].astype(np.float64)
                    lo, hi = _hdi(x)
                    row[col] = float(x.mean())
                    row[f"{col}_sd"] = float(x.std(ddof=1)) if x.size > 1 else 0.0
                    row[f"{col}_{lo_name}"] = lo
                    row[f"{col}_{hi_name}"] = hi
    rows = []
    for (si, ci), values in stats.items():
        if not split_conditions and ci > 0:
            continue
        cond = conds[ci] if split_conditions else plan["key"]["condition"]
        rows.append({"subject": subs[si], "condition": cond, **values})
    return rows or [{"subject": plan["key"]["subject"], "condition": plan["key"]["condition"]}]


def _frame(rows: list[dict]):
    import pandas as pd

    params = []
    for r in rows:
        for c in r:
            if c not in ("subject", "condition", *_TRAILING) and c not in params:
                params.append(c)
    return pd.DataFrame(rows, columns=["subject", "condition", *params, *_TRAILING])


# ---------------------------------------------------------------------- the command
def _check_args(args) -> dict:
    """Options checked before the data are read; returns the parsed ones."""
    if args.task not in ("partial", "whole"):
        raise UsageError(f"--task {args.task!r}: expected partial or whole")
    if args.method not in ("map", "nuts", "svi"):
        raise UsageError(f"--method {args.method!r}: expected map, nuts or svi")
    opts = {"k": parse_k(args.k), "t0": parse_t0(args.t0), "by": parse_by(args.by),
            "condition_params": parse_condition_params(args.condition_params, task=args.task)}
    for text in args.prior or []:
        parse_prior(text)
    if args.address is not None and args.backend != "ray":
        raise UsageError("--address needs --backend ray")
    if opts["condition_params"] and "condition" in opts["by"]:
        raise UsageError("--condition-params with --by ...,condition: each fit has one "
                         "condition already; use --by subject for parameters per condition")
    if args.deviation is not None and not args.hierarchical:
        raise UsageError("--deviation needs --hierarchical (it sets how subjects depart from "
                         "the population)")
    if args.nuts_start != "median" and args.method != "nuts":
        raise UsageError("--nuts-start needs --method nuts (it sets where the chains start)")
    if args.hierarchical and "subject" not in opts["by"]:
        raise UsageError("--hierarchical fits all subjects together: give --by subject (one "
                         "fit) or --by subject,condition (one fit per condition)")
    return opts


def _check_data(trials: Trials, opts: dict, args) -> None:
    from .fit_csv import _rows

    n = trials.num_locations
    k, t0 = opts["k"], opts["t0"]
    if k[0] == "fixed":
        if k[1] > n:
            raise UsageError(f"--k {args.k}: more than the N={n} display locations")
        bad = trials.rows[trials.reported.sum(1) > k[1]]
        if len(bad):
            raise UsageError(f"--k {args.k}: rows {_rows(list(bad))} report more than "
                             f"{k[1]} items, impossible with a fixed K; use --k probit or free")
    if t0[0] == "fixed":
        bad = trials.rows[trials.reported.any(1) & (trials.exposure <= t0[1])]
        if len(bad):
            raise UsageError(f"--t0 {args.t0}: rows {_rows(list(bad))} report items at an "
                             f"exposure <= t0 = {t0[1]:g} ms, impossible with a fixed t0; "
                             "lower it or use --t0 gaussian")
    if args.regions is not None:
        from ..models.neuro.tva.regions import _parse_regions

        try:
            _parse_regions(args.regions, n)
        except ValueError as err:
            raise UsageError(f"--regions {args.regions!r}: {err} (locations are 1..{n})"
                             ) from None


def run_tva_fit(args, *, command: list[str] | None = None) -> int:
    """Run ``bayesattn tva fit`` (module docstring); returns the exit status.

    Everything is checked before the first fit: the options, the file and its values
    (:func:`.tva_data.read_trials`), the priors against the model
    (:func:`.tva_options.check_priors`), the model itself (built once here), the output
    folder.

    Returns:
        0 when every fit succeeded, 1 when some failed (each reported on stderr and in the
        summaries).

    Raises:
        UsageError: a bad option, file, value or prior (one line naming it); an unusable
            output folder; every fit failed.
    """
    from .tva_options import build_model

    opts = _check_args(args)
    need_condition = "condition" in opts["by"] or bool(opts["condition_params"])
    trials = read_trials(args.data, task=args.task, need_condition=need_condition)
    _check_data(trials, opts, args)
    n = trials.num_locations
    regions = None if args.regions is None else args.regions
    num_weights = n if regions is None else len(regions.split(","))
    priors = check_priors(args.prior or [], num_weights=num_weights, num_locations=n,
                          k=opts["k"], t0=opts["t0"], task=args.task)
    empty_slots = args.task == "whole" and not bool(trials.shown.all())
    spec = {"num_locations": n, "task": args.task, "k": opts["k"], "t0": opts["t0"],
            "regions": regions, "priors": priors, "empty_slots": empty_slots,
            "conditions": 1, "by_condition": opts["condition_params"],
            "hierarchical": bool(args.hierarchical), "num_subjects": 1,
            "deviation": args.deviation or "condition"}
    plans = plan_fits(trials, by=opts["by"], hierarchical=bool(args.hierarchical),
                      condition_params=opts["condition_params"])
    payloads = [_payload(trials, p, spec, args.method, args.seed, args.quick,
                         args.nuts_start) for p in plans]
    build_model(payloads[0]["spec"])  # the model accepts the options (else a UsageError)
    if args.backend == "ray":
        from .backends import import_ray

        import_ray()
    planned = ["summary.csv", "summary.md", "fits.png", "parameters.png",
               *(["population.csv"] if args.hierarchical else []), *(p["file"] for p in plans)]
    out = OutputDir.prepare(args.out, force=args.force, planned=planned, command=command)
    try:
        status = _run(args, out, plans, payloads, spec)
    except BaseException:
        out.abandon()
        raise
    out.finish()
    return status


def _run(args, out: OutputDir, plans, payloads, spec) -> int:
    from ..inference.diagnostics import verdict_line

    rows: dict[int, list[dict]] = {}
    verdicts: dict[int, str] = {}
    idatas: dict[int, object] = {}
    hierarchical = bool(args.hierarchical)

    def on_result(i, res):
        plan = plans[i]
        trailing = {"trials": len(plan["index"]), "method": args.method,
                    "seconds": round(res.seconds, 2)}
        if res.ok:
            idata = res.value
            out.to_netcdf(plan["file"], idata)
            idatas[i] = idata
            verdicts[i] = verdict_line(idata)
            rs = fit_rows(idata, plan, hierarchical=hierarchical,
                          by_condition=spec["by_condition"])
            for r in rs:
                r.update(trailing, converged=int(idata.attrs.get("converged", 0)),
                         file=plan["file"], error="")
        else:
            verdicts[i] = f"FAILED: {res.error}"
            rs = [{**plan["key"], **trailing, "converged": 0, "file": "", "error": res.error}]
        rows[i] = rs
        out.to_csv("summary.csv", _frame([r for j in sorted(rows) for r in rows[j]]),
                   index=False)

    start = time.perf_counter()
    tasks = [(_describe(p["key"]), pl) for p, pl in zip(plans, payloads, strict=True)]
    results = run_tasks(fit_one, tasks, backend=args.backend, workers=args.workers,
                        address=args.address, progress=True, desc="tva fit",
                        on_result=on_result)
    wall = time.perf_counter() - start
    failed = [r for r in results if not r.ok]
    if len(failed) == len(results):
        _write_summary(out, args, plans, verdicts, wall, idatas)
        raise UsageError(f"every fit failed; the first: {failed[0].key}: {failed[0].error}")
    frame = _frame([r for j in sorted(rows) for r in rows[j]])
    _write_summary(out, args, plans, verdicts, wall, idatas)
    from .tva_plots import plot_fits, plot_parameters

    plot_fits(out, "fits.png", plans, idatas, max_panels=MAX_PANELS)
    plot_parameters(out, "parameters.png", frame)
    if hierarchical:
        _population(out, idatas)
    print(f"\nwrote {out.path / 'summary.csv'} and {out.path / 'summary.md'} "
          f"({len(results) - len(failed)} of {len(results)} fits, {wall:.1f} s)", flush=True)
    if failed:
        import sys

        print(f"bayesattn: {len(failed)} of {len(results)} fits failed (listed in "
              f"{out.path / 'summary.md'})", file=sys.stderr, flush=True)
        return 1
    return 0


def _describe(key: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in key.items())


def _population(out: OutputDir, idatas: dict) -> None:
    import arviz as az
    import pandas as pd

    frames = []
    for idata in idatas.values():
        names = [v for v in idata.posterior.data_vars
                 if v not in PARAM_ORDER and v != "attention_weights"]
        if names:
            frames.append(az.summary(idata, var_names=names, hdi_prob=HDI_PROB, kind="stats"))
    if frames:
        out.to_csv("population.csv", pd.concat(frames))
    else:
        out.write_text("population.csv", "parameter\n")


def _write_summary(out: OutputDir, args, plans, verdicts, wall, idatas) -> None:
    lines = ["# bayesattn tva fit", "",
             f"Data: `{args.data}`; task: {args.task} report; K: {args.k}; t0: {args.t0}; "
             f"regions: {args.regions or 'none'}; fits by: {args.by}"
             + ("; hierarchical" if args.hierarchical else "")
             + (f"; per-condition parameters: {args.condition_params}"
                if args.condition_params else "") + ".",
             f"Method: {args.method}{' (quick)' if args.quick else ''}; seed {args.seed}; "
             f"backend {args.backend}; {len(plans)} fits in {wall:.1f} s wall time.",
             "Priors: " + (", ".join(f"`{p}`" for p in args.prior) if args.prior
                           else "the model's defaults") + ".", "",
             "Units: C in items/s; mu0, sigma0 in ms. `summary.csv`: posterior mean, sd and "
             f"{round(100 * HDI_PROB)}% HDI of every parameter, one row per fit.", "",
             "## Fits", "", "| fit | trials | file | verdict |", "|---|---|---|---|"]
    for i, p in enumerate(plans):
        file = f"`{p['file']}`" if i in idatas else "-"
        lines.append(f"| {_describe(p['key'])} | {len(p['index'])} | {file} | "
                     f"{verdicts.get(i, 'not run').replace('|', '/')} |")
    failed = [i for i in range(len(plans)) if i not in idatas]
    if failed:
        lines += ["", f"{len(failed)} fit(s) failed: "
                  + "; ".join(_describe(plans[i]["key"]) for i in failed) + "."]
    lines.append("")
    out.write_text("summary.md", "\n".join(lines))
