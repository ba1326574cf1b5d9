"""Wall time of ``bayesattn tva fit`` on the process pool vs Ray, for a batch of subjects.

Simulates a partial-report study (issue 12's design: 13 trials at each of 16.6, 33.3, 50,
100, 150, 200 ms without distractors and 13 each with 2, 3, 4 distractors at 150 ms; 6
locations; 117 trials per subject), writes it as the field's CSV, then runs the same command
(MAP, probit K, Gaussian t0) with ``--backend process`` and ``--backend ray`` (local, the same
number of workers) and records each wall time (interpreter start and Ray start-up included)
and whether the two ``summary.csv`` agree to the last digit. Results:
``benchmarks/results/tva_backends/results.json`` and ``results.md``.

Usage: ``python benchmarks/tva_backends.py [--subjects 16] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bayesattn.experiments.tva_data import Trials, write_trials
from bayesattn.models.neuro.tva import simulate_partial_report

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "tva_backends"


def simulate_study(num_subjects: int, seed: int = 0, reps: int = 13) -> Trials:
    """Partial-report trials of ``num_subjects`` simulated subjects (design in the docstring)."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = 6
    cols = {k: [] for k in ("subject", "exposure", "shown", "distractors", "reported")}
    for s in range(1, num_subjects + 1):
        exposure = [t for t in (16.6, 33.3, 50.0, 100.0, 150.0, 200.0) for _ in range(reps)]
        dis = [np.zeros(n, bool) for _ in exposure]
        for nd in (2, 3, 4):
            for _ in range(reps):
                d = np.zeros(n, bool)
                d[rng.choice(n, nd, replace=False)] = True
                exposure.append(150.0)
                dis.append(d)
        e = torch.tensor(exposure, dtype=torch.float64)
        d = torch.tensor(np.array(dis))
        k_probs = torch.tensor([0, 0.05, 0.15, 0.4, 0.3, 0.1, 0.0], dtype=torch.float64)
        rep = simulate_partial_report(
            e, targets=~d, distractors=d, C=float(rng.uniform(25, 65)),
            weights=torch.tensor(rng.dirichlet(8 * np.ones(n))), alpha=0.4,
            t0=float(rng.uniform(5, 25)), k_probs=k_probs, generator=gen)
        cols["subject"] += [str(s)] * len(exposure)
        cols["exposure"] += exposure
        cols["shown"].append(np.ones((len(exposure), n), bool))
        cols["distractors"].append(d.numpy())
        cols["reported"].append(rep.numpy())
    m = len(cols["exposure"])
    return Trials(np.array(cols["subject"]), np.full(m, "A"), np.array(cols["exposure"]),
                  *(np.concatenate(cols[k]) for k in ("shown", "distractors", "reported")),
                  np.arange(1, m + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / "study.csv"
    write_trials(data, simulate_study(args.subjects))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    records = []
    for backend in ("process", "ray"):
        out = OUT / f"run-{backend}"
        cmd = [sys.executable, "-m", "bayesattn", "tva", "fit", "--data", str(data),
               "--task", "partial", "--k", "probit", "--t0", "gaussian", "--by", "subject",
               "--method", "map", "--backend", backend, "--workers", str(args.workers),
               "--out", str(out), "--force"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        records.append({"backend": backend, "workers": args.workers, "fits": args.subjects,
                        "wall_seconds": wall, "exit_status": proc.returncode,
                        "stderr_tail": proc.stderr[-500:]})
        print(backend, f"{wall:.1f} s", proc.returncode, flush=True)
        (OUT / "results.json").write_text(json.dumps(records, indent=1) + "\n")
    import pandas as pd

    a, b = (pd.read_csv(OUT / f"run-{k}" / "summary.csv").drop(columns=["seconds"])
            for k in ("process", "ray"))
    same = bool(a.equals(b))
    lines = ["# tva fit: process pool vs Ray (local)", "",
             f"{args.subjects} subjects x 117 partial-report trials, MAP (4 x 250 Laplace "
             f"draws), probit K, Gaussian t0; {args.workers} workers on {os.cpu_count()} CPUs "
             f"({platform.machine()}, shared with other jobs); wall time of the whole command.",
             "", "| backend | wall s | exit |", "|---|---|---|"]
    lines += [f"| {r['backend']} | {r['wall_seconds']:.1f} | {r['exit_status']} |"
              for r in records]
    lines += ["", f"summary.csv identical across backends (all but the seconds column): {same}",
              ""]
    (OUT / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
