"""Held-out accuracy and calibration of AttentionRegressor beside standard regressors.

Data: real data sets that ship inside installed packages (no download):

* ``diabetes``: scikit-learn's diabetes set, 442 rows, 10 (already scaled) features, target a
  disease-progression score (Efron et al. 2004, "Least angle regression").
* ``mcycle``: head acceleration (g) against time (ms) after a simulated motorcycle impact,
  133 rows, 1 feature, sharply non-linear with noise that changes with time (Silverman 1985;
  shipped with bayesattn).
* ``engel``: household food expenditure against income, 235 Belgian households, 1 feature,
  noise growing with income (Koenker & Bassett 1982; ``statsmodels.datasets.engel``).
* ``star98``: share of a California school district's students above the national median in
  maths, 303 districts, the 12 main covariates (no interaction columns)
  (Jeff Gill 2001, "Generalized Linear Models"; ``statsmodels.datasets.star98``).
* California housing (scikit-learn) is a download, not a shipped file: it is used only when
  ``fetch_california_housing(download_if_missing=False)`` finds it cached, and otherwise
  recorded as unavailable offline.

Protocol: for each seed a random 75 / 25 train / test split (``train_test_split``); every
method sees the same split, and every hyperparameter (bandwidths, lengthscales, penalties,
neighbours, noise) is chosen from the training rows alone (posterior, marginal likelihood or
cross-validation within the training rows). Metrics on the test rows:

* RMSE of the predictive mean (units of the target);
* coverage of the central 94% predictive interval (fraction of test targets inside);
* CRPS, the continuous ranked probability score (lower is better; Gneiting & Raftery 2007,
  "Strictly proper scoring rules, prediction, and estimation", JASA 102, eq. 21): closed form
  for a Gaussian predictive, ``E|Y - y| - E|Y - Y'| / 2`` over predictive draws otherwise;
* MLPD: mean log predictive density of the test targets (higher is better; Gelman, Hwang &
  Vehtari 2014, "Understanding predictive information criteria", eq. 1).

Methods:

* ``AttentionRegressor`` with Gaussian-kernel, GP and least-squares attention (default priors,
  inputs and targets standardised), fitted by ``method="map"``: the posterior mode and a
  Laplace approximation there, 400 posterior draws. (The estimator's default is NUTS; on the
  2-core machine shared by 8 sessions where this ran, NUTS or 2000-step SVI over 4 data sets
  x 3 splits x 3 models would not fit the 30-minute budget.) Intervals and CRPS from 2000
  posterior predictive draws (``sample_y``), MLPD from the model's own predictive density
  (``log_predictive_density``: a mixture over the training rows for kernel attention).
* scikit-learn ``GaussianProcessRegressor``: constant x ARD RBF + white noise, marginal
  likelihood with 3 restarts, ``normalize_y``; Gaussian predictive (noise included).
* scikit-learn ``KernelRidge`` (RBF) and k-NN (``KNeighborsRegressor``, distance weights),
  tuned by 5-fold ``GridSearchCV`` on the training rows. They give no predictive
  distribution: each is given a Gaussian one with the standard deviation of its 5-fold
  cross-validated residuals on the training rows (a homoscedastic plug-in).
* statsmodels ``KernelReg``: local-linear kernel regression, Gaussian kernel, bandwidth chosen
  by least-squares cross-validation on the training rows (``bw="cv_ls"``). Run on the
  one-feature sets only (mcycle, engel): with 10 features statsmodels' bandwidth searches do
  not fit this machine's budget (on one diabetes split, 331 x 10: ``bw="aic"`` took 474 s
  and returned a negative bandwidth; ``bw="cv_ls"``, also with the subsampled
  ``efficient=True`` search, did not finish within 400 s; even ``bw="normal_reference"``
  took 563 s for fit and variance and gave RMSE 145 against ~57 for every other method,
  with non-finite predictive variances). KernelReg gives no predictive variance: it is
  given a Gaussian
  predictive whose variance is a local estimate, the local-constant kernel smooth (same
  bandwidths) of the squared 5-fold cross-validated residuals of the training rows (the
  residual-smoothing estimator of Fan & Yao 1998, "Efficient estimation of conditional
  variance functions in stochastic regression", Biometrika 85, with local-constant
  smoothing), floored at 1e-6 of the residual variance.

All inputs are standardised with the training rows' mean and sd for every method.

Usage (from the repository root)::

    python benchmarks/regression.py                      # full run, 3 seeds (~35 min)
    python benchmarks/regression.py --quick               # 1 seed, smaller fits (a check)
    python benchmarks/regression.py --datasets mcycle --methods "sklearn k-NN (CV)"

Writes, under ``--out`` (default ``benchmarks/results/regression``): ``results.json`` (every
per-split number, the settings, versions; updated after each fit, so an interrupted run
resumes where it stopped unless ``--force``), ``results.md`` (mean and sd over splits) and
``regression.png`` (MLPD and coverage per data set and method).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from scipy.stats import norm
from sklearn.datasets import fetch_california_housing, load_diabetes
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict, train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler

import bayesattn
from bayesattn import AttentionRegressor
from bayesattn.data.mcycle import load_mcycle
from bayesattn.inference.threads import torch_threads

PROB = 0.94
Z = float(norm.ppf(0.5 + PROB / 2))
ATTENTION = {"method": "map", "num_samples": 400, "num_chains": 1}
PREDICTIVE_DRAWS = 2000


# ---------------------------------------------------------------------------- data sets
def _diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X, y, "scikit-learn diabetes (442 x 10)"


def _mcycle():
    d = load_mcycle()
    return d["times"][:, None], d["accel"], "mcycle (133 x 1), acceleration in g"


def _engel():
    import statsmodels.api as sm

    d = sm.datasets.engel.load_pandas().data
    return (d[["income"]].to_numpy(float), d["foodexp"].to_numpy(float),
            "statsmodels engel (235 x 1), food expenditure")


STAR98_FEATURES = ["LOWINC", "PERASIAN", "PERBLACK", "PERHISP", "PERMINTE", "AVYRSEXP",
                   "AVSALK", "PERSPENK", "PTRATIO", "PCTAF", "PCTCHRT", "PCTYRRND"]


def _star98():
    import statsmodels.api as sm

    d = sm.datasets.star98.load_pandas().data
    share = d["NABOVE"] / (d["NABOVE"] + d["NBELOW"])
    return (d[STAR98_FEATURES].to_numpy(float), share.to_numpy(float),
            "statsmodels star98 (303 x 12), share above the maths median")


def _california():
    X, y = fetch_california_housing(download_if_missing=False, return_X_y=True)
    return X, y, f"scikit-learn California housing ({X.shape[0]} x {X.shape[1]})"


DATASETS = {"mcycle": _mcycle, "engel": _engel, "diabetes": _diabetes, "star98": _star98,
            "california": _california}


# ---------------------------------------------------------------------------- metrics
def gaussian_metrics(y, mean, sd):
    """RMSE, 94% coverage, CRPS (closed form) and MLPD of a Gaussian predictive ``N(mean, sd^2)``.

    CRPS of a Gaussian: ``sd (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))``, ``z = (y - mean)
    / sd`` (Gneiting & Raftery 2007, eq. 21 evaluated for the normal).
    """
    z = (y - mean) / sd
    crps = sd * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))
    return {"rmse": float(np.sqrt(np.mean((y - mean) ** 2))),
            "coverage": float(np.mean(np.abs(z) <= Z)),
            "crps": float(np.mean(crps)),
            "mlpd": float(np.mean(norm.logpdf(y, mean, sd)))}


def sample_crps(y, draws):
    """Mean CRPS of ``y (m,)`` under predictive draws ``(m, d)``: ``E|Y - y| - E|Y - Y'| / 2``.

    ``E|Y - Y'|`` from the sorted draws, ``2 / (d (d - 1)) sum_i (2 i - d - 1) x_(i)`` (the
    unbiased pairwise mean; Gneiting & Raftery 2007, eq. 21).
    """
    d = draws.shape[1]
    first = np.abs(draws - y[:, None]).mean(1)
    s = np.sort(draws, axis=1)
    weights = 2 * np.arange(1, d + 1) - d - 1
    pair = 2 * (s * weights).sum(1) / (d * (d - 1))
    return float(np.mean(first - pair / 2))


# ---------------------------------------------------------------------------- methods
def run_attention(name, settings, seed, Xtr, ytr, Xte, yte):
    est = AttentionRegressor(name, random_state=seed, **settings).fit(Xtr, ytr)
    mean = est.predict(Xte)
    draws = est.sample_y(Xte, PREDICTIVE_DRAWS, random_state=seed)  # (m, d)
    lo, hi = np.quantile(draws, [(1 - PROB) / 2, (1 + PROB) / 2], axis=1)
    return {"rmse": float(np.sqrt(np.mean((yte - mean) ** 2))),
            "coverage": float(np.mean((yte >= lo) & (yte <= hi))),
            "crps": sample_crps(yte, draws),
            "mlpd": float(np.mean(est.log_predictive_density(Xte, yte))),
            "converged": est.converged_}


def run_gp(seed, Xtr, ytr, Xte, yte):
    kernel = ConstantKernel() * RBF(np.ones(Xtr.shape[1])) + WhiteKernel()
    gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=3,
                                  random_state=seed).fit(Xtr, ytr)
    mean, sd = gp.predict(Xte, return_std=True)
    return gaussian_metrics(yte, mean, sd)


def run_tuned(estimator, grid, seed, Xtr, ytr, Xte, yte):
    cv = KFold(5, shuffle=True, random_state=seed)
    search = GridSearchCV(estimator, grid, cv=cv).fit(Xtr, ytr)
    resid = ytr - cross_val_predict(search.best_estimator_, Xtr, ytr, cv=cv)
    sd = float(np.sqrt(np.mean(resid**2)))
    return gaussian_metrics(yte, search.predict(Xte), np.full(len(yte), sd))


def run_kernelreg(seed, Xtr, ytr, Xte, yte):
    from statsmodels.nonparametric.api import EstimatorSettings
    from statsmodels.nonparametric.kernel_regression import KernelReg

    p = Xtr.shape[1]
    if p > 1:
        return None  # not run: see the module docstring
    var_type = "c" * p
    rule = "cv_ls"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kr = KernelReg(ytr, Xtr, var_type, reg_type="ll", bw=rule,
                       defaults=EstimatorSettings())
        bw = np.asarray(kr.bw, dtype=float)
        mean = kr.fit(Xte)[0]
        resid = np.empty_like(ytr)
        for tr, va in KFold(5, shuffle=True, random_state=seed).split(Xtr):
            fold = KernelReg(ytr[tr], Xtr[tr], var_type, reg_type="ll", bw=bw)
            resid[va] = ytr[va] - fold.fit(Xtr[va])[0]
        smooth = KernelReg(resid**2, Xtr, var_type, reg_type="lc", bw=bw)
        var = smooth.fit(Xte)[0]
    var = np.maximum(var, 1e-6 * np.mean(resid**2))
    out = gaussian_metrics(yte, mean, np.sqrt(var))
    out["bandwidth"] = bw.tolist()
    out["bw_rule"] = rule
    return out


def methods(quick: bool):
    settings = dict(ATTENTION, **({"num_samples": 100} if quick else {}))
    return {
        "bayesattn kernel (MAP-Laplace)": lambda *a: run_attention("kernel", settings, *a),
        "bayesattn GP (MAP-Laplace)": lambda *a: run_attention("gp", settings, *a),
        "bayesattn least squares (MAP-Laplace)": lambda *a: run_attention("least_squares", settings,
                                                                  *a),
        "sklearn GaussianProcessRegressor": run_gp,
        "sklearn KernelRidge (RBF, CV)": lambda *a: run_tuned(
            KernelRidge(kernel="rbf"), {"alpha": [0.01, 0.1, 1, 10],
                                        "gamma": [0.003, 0.01, 0.03, 0.1, 0.3, 1]}, *a),
        "sklearn k-NN (CV)": lambda *a: run_tuned(
            KNeighborsRegressor(weights="distance"),
            {"n_neighbors": [3, 5, 10, 20, 40]}, *a),
        "statsmodels KernelReg (ll)": run_kernelreg,
    }


# ---------------------------------------------------------------------------- reporting
def _ordered(per: dict) -> list[str]:
    """The methods with results, in the order of :func:`methods` (the same in every table)."""
    order = list(methods(False))
    return sorted((n for n, rows in per.items() if rows),
                  key=lambda n: order.index(n) if n in order else len(order))


METRICS = (("rmse", "RMSE", "{:.3g}"), ("coverage", "94% coverage", "{:.3f}"),
           ("crps", "CRPS", "{:.3g}"), ("mlpd", "MLPD", "{:.3f}"), ("seconds", "seconds", "{:.1f}"))


def table(results: dict, meta: dict) -> str:
    lines = [f"Held-out rows of real data sets, random 75/25 train/test splits (seeds "
             f"{', '.join(map(str, meta['seeds']))}); mean (sd) over splits. 94% coverage: "
             "fraction of test targets inside the central 94% predictive interval (goal "
             "0.90-0.97); CRPS lower is better; MLPD = mean log predictive density of the test "
             "targets, higher is better (best per data set in bold). RMSE and CRPS are in the "
             "target's units.", ""]
    for ds, info in meta["datasets"].items():
        if "unavailable" in info:
            lines += [f"**{ds}**: {info['unavailable']}", ""]
            continue
        per = results.get(ds, {})
        lines += [f"**{ds}**: {info['description']}", "",
                  "| method | " + " | ".join(m[1] for m in METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        names = _ordered(per)
        means = {name: np.mean([r["mlpd"] for r in per[name].values()]) for name in names}
        best = max(means.values()) if means else None
        for name in names:
            rows = per[name]
            cells = []
            for key, _, fmt in METRICS:
                vals = np.array([r[key] for r in rows.values()])
                cell = f"{fmt.format(vals.mean())} ({fmt.format(vals.std())})"
                if key == "mlpd" and means[name] == best:
                    cell = f"**{cell}**"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path):
    import matplotlib.pyplot as plt

    sets = [ds for ds in results if _ordered(results[ds])]
    every = _ordered({n: True for ds in sets for n in _ordered(results[ds])})
    fig, axes = plt.subplots(2, len(sets), figsize=(4.2 * len(sets), 6.5), squeeze=False,
                             sharey=True)
    for j, ds in enumerate(sets):
        names = _ordered(results[ds])
        where = [every.index(n) for n in names]  # one row per method in every panel
        for i, key in enumerate(("mlpd", "coverage")):
            ax = axes[i, j]
            vals = [np.array([r[key] for r in results[ds][n].values()]) for n in names]
            ax.errorbar([v.mean() for v in vals], where,
                        xerr=[v.std() for v in vals], fmt="o", capsize=3)
            ax.set_yticks(range(len(every)))
            ax.set_yticklabels(every, fontsize=8)
            if j == 0 and i == 0:
                ax.invert_yaxis()  # shared y: once
            if key == "coverage":
                ax.axvspan(0.90, 0.97, color="tab:green", alpha=0.15)
                ax.axvline(PROB, color="k", lw=0.8, ls="--")
                ax.set_xlabel("coverage of the 94% interval")
            else:
                ax.set_xlabel("mean log predictive density (higher is better)")
                ax.set_title(ds)
    fig.suptitle("Held-out predictive performance, mean and sd over splits")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of random splits")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=None, help="method names (all)")
    parser.add_argument("--quick", action="store_true", help="1 seed, short fits (a check)")
    parser.add_argument("--force", action="store_true", help="recompute saved results")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite results.md and the plot from results.json")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "regression"))
    args = parser.parse_args(argv)
    seeds = list(range(1 if args.quick else args.seeds))
    table_of = methods(args.quick)
    chosen = args.methods or list(table_of)
    unknown = sorted(set(chosen) - set(table_of))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; expected some of {list(table_of)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.json"
    saved = {} if args.force or not store.exists() else json.loads(store.read_text())
    results = saved.get("results", {})
    if args.report:
        seeds = saved["meta"]["seeds"]
    meta = {"seeds": seeds, "split": "75/25 train_test_split", "interval": PROB,
            "attention_settings": ATTENTION, "predictive_draws": PREDICTIVE_DRAWS,
            "quick": args.quick, "datasets": saved.get("meta", {}).get("datasets", {}),
            "versions": {"bayesattn": bayesattn.__version__, "sklearn": sklearn.__version__,
                         "torch": torch.__version__, "python": platform.python_version()}}

    def save():
        tmp = store.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        os.replace(tmp, store)

    with torch_threads(1):
        for ds in [] if args.report else args.datasets:
            try:
                X, y, description = DATASETS[ds]()
            except OSError as err:
                meta["datasets"][ds] = {"unavailable": f"unavailable offline ({err})"}
                print(f"{ds}: unavailable offline ({err})", flush=True)
                save()
                continue
            meta["datasets"][ds] = {"description": description, "shape": list(X.shape)}
            per = results.setdefault(ds, {})
            for seed in seeds:
                Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed)
                scaler = StandardScaler().fit(Xtr)
                Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
                for name in chosen:
                    rows = per.setdefault(name, {})
                    if str(seed) in rows:
                        continue
                    start = time.perf_counter()
                    result = table_of[name](seed, Xtr, ytr, Xte, yte)
                    if result is None:
                        continue
                    result["seconds"] = time.perf_counter() - start
                    rows[str(seed)] = result
                    save()
                    print(f"{ds} seed {seed} {name}: " + ", ".join(
                        f"{k} {v:.3f}" for k, v in result.items()
                        if isinstance(v, float)), flush=True)
    save()
    text = table(results, meta)
    (out / "results.md").write_text(text + "\n")
    plot(results, out / "regression.png")
    print(text)


if __name__ == "__main__":
    main()
