"""Per-subject TVA refits with longer NUTS chains, for subjects whose 94% HDI missed a truth.

The recovery study (``tva_recovery.py --method nuts``) fits every subject with 2 chains x
(500 + 500) draws. This script refits chosen subjects of the same simulated study (same seed,
same model) with more and longer chains, and tabulates, per subject, the posterior of ``mK``
(or any parameter) at both lengths beside the truth: if a miss was a short-chain artefact it
goes away here; if it stays, it is the posterior's (the data's), not the sampler's.

Run: ``python benchmarks/tva_long_chains.py --subjects 3,8,10 [--chains 4 --draws 1000]``;
writes ``results/tva/recovery/fits/subjectNN_probit_nuts{C}x{D}.json`` (cached) and
``results/tva/recovery/long_chains.md``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tva_recovery import (
    OUT,
    fit_subject,
    population_truth,
    simulate,
    subject_draws,
    summarise,
    truth_vector,
)


def refit(data: dict, chains: int, draws: int, seed: int) -> dict:
    import arviz as az

    t = time.perf_counter()
    idata = fit_subject(data, "probit", "nuts", seed, chains=chains, draws=draws,
                        chain_method="vectorized")
    return {
        "wall_s": time.perf_counter() - t,
        "converged": int(idata.attrs.get("converged", 0)),
        "max_r_hat": float(az.rhat(idata).to_array().max()),
        "min_ess_bulk": float(az.ess(idata).to_array().min()),
        "divergences": int(idata.sample_stats["diverging"].values.sum()),
        "summary": summarise(subject_draws(idata.posterior)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", required=True, help="comma-separated subject indices")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000, help="draws and warm-up per chain")
    parser.add_argument("--param", default="mK")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    subjects = [int(s) for s in args.subjects.split(",")]
    truths = population_truth(max(subjects) + 1, args.seed)
    datas = simulate(truths, args.seed)
    fits = OUT / "fits"
    rows = []
    for s in subjects:
        path = fits / f"subject{s:02d}_probit_nuts{args.chains}x{args.draws}.json"
        if path.exists():
            long = json.loads(path.read_text())
        else:
            print(f"subject {s}: {args.chains} x ({args.draws} + {args.draws})", flush=True)
            long = refit(datas[s], args.chains, args.draws, seed=args.seed + s)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(long) + "\n")
            tmp.replace(path)
            print(f"subject {s}: {long['wall_s']:.0f} s, r_hat {long['max_r_hat']:.3f}", flush=True)
        short = json.loads((fits / f"subject{s:02d}_probit_nuts.json").read_text())
        truth = truth_vector(truths[s])[args.param]
        rows.append((s, truth, short["summary"][args.param], long, truth_vector(truths[s])))
    p = args.param
    lines = [f"# Longer per-subject NUTS chains: {p}", "",
             f"2 x (500 + 500) against {args.chains} x ({args.draws} + {args.draws}), same "
             "data and model. z = (mean - truth) / sd; in = the truth lies in the 94% HDI.", "",
             f"| subject | true {p} | true sK | short: mean (sd) | z | in | long: mean (sd) | z "
             "| in | long max r_hat | min ESS | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, truth, sh, long, tv in rows:
        lg = long["summary"][p]
        cells = []
        for x in (sh, lg):
            z = (x["mean"] - truth) / x["sd"]
            cells += [f"{x['mean']:.3f} ({x['sd']:.3f})", f"{z:+.2f}",
                      "yes" if x["lo"] <= truth <= x["hi"] else "no"]
        lines.append(f"| {s} | {truth:.3f} | {tv['sK']:.3f} | " + " | ".join(cells)
                     + f" | {long['max_r_hat']:.3f} | {long['min_ess_bulk']:.0f} "
                     f"| {long['wall_s']:.0f} |")
    covered = np.mean([r[3]["summary"][p]["lo"] <= r[1] <= r[3]["summary"][p]["hi"]
                       for r in rows])
    lines += ["", f"Covered with the longer chains: {covered:.2f} of these {len(rows)}.", ""]
    out = OUT / "long_chains.md"
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
