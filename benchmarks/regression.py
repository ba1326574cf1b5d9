"""Held-out accuracy and calibration of AttentionRegressor beside scikit-learn regressors.

Data: scikit-learn's diabetes set (442 rows, 10 standardised features, ships with the
package). For each seed, a random 75 / 25 train / test split (``train_test_split``); every
method sees the same split. Metrics on the test rows:

* RMSE of the predictive mean (units of the target: disease progression score);
* coverage of the central 94% predictive interval (fraction of test targets inside);
* MLPD: mean log predictive density of the test targets (higher is better; Gelman, Hwang &
  Vehtari 2014, eq. 1).

Methods: ``AttentionRegressor`` (Gaussian-kernel, GP and least-squares attention; SVI with a
mean-field normal guide, posterior draws; inputs and targets standardised); scikit-learn's
``GaussianProcessRegressor`` (constant x ARD RBF + white noise, marginal likelihood with 3
restarts, ``normalize_y``); ``KernelRidge`` (RBF) and k-NN (``KNeighborsRegressor``, distance
weights), both tuned by 5-fold ``GridSearchCV`` on the training rows. Kernel ridge and k-NN
give no predictive distribution: they are given a Gaussian one with the standard deviation of
their 5-fold cross-validated residuals on the training rows (so their coverage and MLPD rest
on that homoscedastic plug-in). statsmodels' ``KernelReg`` is not installed here: not run.

Usage (from the repository root)::

    python benchmarks/regression.py                 # 3 seeds, ~5 min on 2 cores
    python benchmarks/regression.py --seeds 5 --out /tmp/reg

Writes ``diabetes.json`` (every per-seed number, settings, versions) and ``diabetes.md`` (mean
and standard deviation over seeds) under ``--out`` (default
``benchmarks/results/regression``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
from scipy.stats import norm
from sklearn.datasets import load_diabetes
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, cross_val_predict, train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import bayesattn
from bayesattn import AttentionRegressor

PROB = 0.94
Z = float(norm.ppf(0.5 + PROB / 2))
SVI = {"method": "svi", "num_steps": 1500, "num_samples": 200, "num_chains": 1,
       "learning_rate": 0.02}


def gaussian_metrics(y, mean, sd):
    return {"rmse": float(np.sqrt(np.mean((y - mean) ** 2))),
            "coverage": float(np.mean(np.abs(y - mean) <= Z * sd)),
            "mlpd": float(np.mean(norm.logpdf(y, mean, sd)))}


def run_attention(name, seed, Xtr, ytr, Xte, yte):
    est = AttentionRegressor(name, random_state=seed, **SVI).fit(Xtr, ytr)
    mean = est.predict(Xte)
    lo, hi = est.predict_interval(Xte, prob=PROB, n_samples=4000)
    return {"rmse": float(np.sqrt(np.mean((yte - mean) ** 2))),
            "coverage": float(np.mean((yte >= lo) & (yte <= hi))),
            "mlpd": float(np.mean(est.log_predictive_density(Xte, yte)))}


def run_gp(seed, Xtr, ytr, Xte, yte):
    kernel = ConstantKernel() * RBF(np.ones(Xtr.shape[1])) + WhiteKernel()
    gp = make_pipeline(StandardScaler(), GaussianProcessRegressor(
        kernel, normalize_y=True, n_restarts_optimizer=3, random_state=seed)).fit(Xtr, ytr)
    mean, sd = gp.predict(Xte, return_std=True)
    return gaussian_metrics(yte, mean, sd)


def run_tuned(estimator, grid, seed, Xtr, ytr, Xte, yte):
    search = GridSearchCV(make_pipeline(StandardScaler(), estimator), grid, cv=5)
    search.fit(Xtr, ytr)
    resid = ytr - cross_val_predict(search.best_estimator_, Xtr, ytr, cv=5)
    sd = float(np.sqrt(np.mean(resid**2)))
    return gaussian_metrics(yte, search.predict(Xte), np.full(len(yte), sd))


METHODS = {
    "bayesattn kernel (SVI)": lambda *a: run_attention("kernel", *a),
    "bayesattn GP (SVI)": lambda *a: run_attention("gp", *a),
    "bayesattn least squares (SVI)": lambda *a: run_attention("least_squares", *a),
    "sklearn GaussianProcessRegressor": run_gp,
    "sklearn KernelRidge (RBF, CV)": lambda *a: run_tuned(
        KernelRidge(kernel="rbf"), {"kernelridge__alpha": [0.01, 0.1, 1, 10],
                                    "kernelridge__gamma": [0.001, 0.01, 0.03, 0.1]}, *a),
    "sklearn k-NN (CV)": lambda *a: run_tuned(
        KNeighborsRegressor(weights="distance"),
        {"kneighborsregressor__n_neighbors": [5, 10, 20, 40]}, *a),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "regression"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    X, y = load_diabetes(return_X_y=True)
    rows = {name: [] for name in METHODS}
    for seed in range(args.seeds):
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed)
        for name, run in METHODS.items():
            start = time.perf_counter()
            result = run(seed, Xtr, ytr, Xte, yte)
            result["seconds"] = time.perf_counter() - start
            result["seed"] = seed
            rows[name].append(result)
            print(f"seed {seed} {name}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in result.items() if k != "seed"), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"data": "sklearn diabetes (442 x 10)", "split": "75/25 train_test_split",
            "seeds": args.seeds, "interval": PROB, "attention_settings": SVI,
            "versions": {"bayesattn": bayesattn.__version__, "sklearn": sklearn.__version__,
                         "torch": torch.__version__, "python": platform.python_version()}}
    (out / "diabetes.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    lines = [f"Diabetes (442 rows, 10 features), {args.seeds} random 75/25 splits; mean (sd) "
             "over splits. Coverage of the central 94% interval; MLPD = mean log predictive "
             "density of the test targets (higher is better).", "",
             "| method | RMSE | 94% coverage | MLPD | seconds |", "|---|---|---|---|---|"]
    for name, res in rows.items():
        cells = []
        for key, fmt in (("rmse", "{:.1f}"), ("coverage", "{:.3f}"), ("mlpd", "{:.3f}"),
                         ("seconds", "{:.1f}")):
            vals = np.array([r[key] for r in res])
            cells.append(f"{fmt.format(vals.mean())} ({fmt.format(vals.std())})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "diabetes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
