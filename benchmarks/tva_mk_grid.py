"""Exact grid posterior of the probit ``K`` (``mK``, ``sK``) of simulated subjects.

A check of the recovery study's ``mK`` coverage (``tva_recovery.py``) that needs no sampler:
with every other parameter fixed at its true value, the posterior of ``(mK, sK)`` is computed
on a grid from the exact likelihood (``partial_report_log_prob``), under two priors:

* ``fit``: the priors the per-subject fits use (``mK ~ Normal(3.5, 1.5)``,
  ``sK ~ HalfNormal(1)``);
* ``population``: the distribution the study draws the subjects from
  (``mK ~ Normal(3.3, 0.5)``, ``sK ~ LogNormal(log 0.6, 0.25)``). Averaged over subjects drawn
  from it, a 94% posterior interval covers the truth 94% of the time (Bayesian calibration;
  Talts et al. 2018) if the likelihood is the simulator's, and the posterior CDF at the truth
  (PIT) is uniform.

The study's seed 0 gives its 50 subjects; further seeds give fresh studies of the same design.
The report probability is a mixture over ``K``, ``P(R) = sum_k P(K = k) P(R | K = k)``, so
each trial's ``P(R | K = k)`` is computed once and the grid only re-weights it.

Run: ``python benchmarks/tva_mk_grid.py [--subjects 50] [--seeds 0,1,2]``; writes
``results/tva/recovery/mk_grid.md``, ``mk_grid.json`` and ``mk_grid.png``.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
from tva_recovery import HDI, OUT, population_truth, simulate

F64 = torch.float64
PRIORS = {
    "fit": (lambda m: -0.5 * ((m - 3.5) / 1.5) ** 2, lambda s: -0.5 * s**2),
    "population": (lambda m: -0.5 * ((m - 3.3) / 0.5) ** 2,
                   lambda s: -0.5 * ((np.log(s) - math.log(0.6)) / 0.25) ** 2 - np.log(s)),
}
MK = torch.linspace(0.5, 6.5, 241, dtype=F64)  # cells of width 0.025
SK = torch.exp(torch.linspace(math.log(0.05), math.log(4.0), 120, dtype=F64))  # log-spaced


def grid_log_lik(data: dict, truth: dict, mk: torch.Tensor, sk: torch.Tensor) -> np.ndarray:
    """``log p(reports | mK, sK, other parameters = truth)`` on the grid ``(len(mk), len(sk))``."""
    from bayesattn.models.neuro.tva import k_probit_probabilities, partial_report_log_prob

    given_k = []
    for c in (0, 1):
        rows = data["condition"] == c
        lp = partial_report_log_prob(
            data["reported"][rows], data["exposure"][rows],
            targets=data["targets"][rows], distractors=data["distractors"][rows],
            C=truth["C"][c], weights=torch.tensor(truth["w"], dtype=F64),
            alpha=truth["alpha"], t0=truth["t0"], t0_sd=truth["t0_sd"],
            k_probs=torch.eye(7, dtype=F64)[:, None, :])  # (K = 0..6, trials)
        given_k.append(lp.exp())
    given_k = torch.cat(given_k, -1)  # (7, T)
    m, s = torch.meshgrid(mk, sk, indexing="ij")
    kp = k_probit_probabilities(m.reshape(-1), s.reshape(-1), 6)  # (G, 7)
    return torch.log(kp @ given_k).sum(-1).reshape(len(mk), len(sk)).numpy()


def marginal_mk(log_lik: np.ndarray, prior: str) -> np.ndarray:
    """Posterior mass of each ``mK`` cell (the ``sK`` cells summed; a log-spaced cell's width
    is proportional to ``sK``)."""
    prior_m, prior_s = PRIORS[prior]
    lp = log_lik + prior_m(MK.numpy())[:, None] + prior_s(SK.numpy())[None, :]
    post = np.exp(lp - lp.max()) * SK.numpy()[None, :]
    return post.sum(1) / post.sum()


def check(mass: np.ndarray, truth: float) -> dict:
    """Mean, sd, the 94% HDI (the densest cells holding 94%; cells are bins of width 0.025
    centred on the grid), whether its cells hold the truth's, and the PIT (posterior CDF at
    the truth, linear within a cell)."""
    x = MK.numpy()
    step = x[1] - x[0]
    order = np.argsort(mass)[::-1]
    keep = order[: int(np.searchsorted(np.cumsum(mass[order]), HDI)) + 1]
    cell = int(np.clip(np.round((truth - x[0]) / step), 0, len(x) - 1))
    edges = np.concatenate([[x[0] - step / 2], x + step / 2])
    mean = float((mass * x).sum())
    return {"mean": mean, "sd": float(np.sqrt((mass * (x - mean) ** 2).sum())),
            "lo": float(x[keep].min() - step / 2), "hi": float(x[keep].max() + step / 2),
            "covered": bool(cell in set(keep.tolist())),
            "pit": float(np.interp(truth, edges, np.concatenate([[0.0], np.cumsum(mass)])))}


def p_at_most(k: int, n: int, p: float = HDI) -> float:
    """Binomial ``P(X <= k)``, ``X ~ Bin(n, p)``."""
    return float(sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k + 1)))


def plot(res: dict, path) -> None:
    """``mk_grid.png``: coverage of mK's 94% HDI per simulated study (with the binomial 95%
    band around 0.94), and the PIT histogram under the population prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for offset, name in ((-0.12, "fit"), (0.12, "population")):
        keys = [k for k in res["summary"] if k.startswith(f"{name}/") and not k.endswith("/all")]
        seeds = [int(k.split("/")[1]) for k in keys]
        cov = [res["summary"][k]["covered"] / res["summary"][k]["n"] for k in keys]
        ax1.plot(np.array(seeds) + offset, cov, "o", label=f"{name} prior")
    n = res["summary"]["population/0"]["n"]
    band = 1.96 * math.sqrt(HDI * (1 - HDI) / n)
    ax1.axhspan(HDI - band, HDI + band, color="0.9", label=f"0.94 +- 1.96 binomial sd (n={n})")
    ax1.axhline(HDI, color="0.5", lw=0.8)
    ax1.set(xlabel="simulated study (seed; 0 = the recovery study)",
            ylabel="coverage of mK's 94% HDI", ylim=(0.75, 1.0))
    ax1.legend(fontsize=7, loc="lower right")
    pit = res["pit_deciles"]
    ax2.bar(np.arange(10) / 10 + 0.05, pit, width=0.09, color="C1")
    ax2.axhline(sum(pit) / 10, color="0.3", lw=0.8)
    ax2.set(xlabel="posterior CDF at the true mK (population prior)", ylabel="subjects",
            title="PIT: uniform if calibrated")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=50, help="subjects per seed")
    parser.add_argument("--seeds", default="0", help="comma-separated study seeds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        truths = population_truth(args.subjects, seed)
        for i, (truth, data) in enumerate(zip(truths, simulate(truths, seed), strict=True)):
            ll = grid_log_lik(data, truth, MK, SK)
            row = {"seed": seed, "subject": i, "mK": truth["mK"], "sK": truth["sK"]}
            row.update({name: check(marginal_mk(ll, name), truth["mK"]) for name in PRIORS})
            rows.append(row)
        print(f"seed {seed}: " + ", ".join(
            f"{name} {np.mean([r[name]['covered'] for r in rows if r['seed'] == seed]):.2f}"
            for name in PRIORS), flush=True)
    lines = ["# mK on an exact grid, the other parameters at their true values", "",
             "`benchmarks/tva_mk_grid.py --subjects "
             f"{args.subjects} --seeds {args.seeds}`: the posterior of (mK, sK) of each simulated"
             f" subject from the exact likelihood on a {len(MK)} x {len(SK)} grid; coverage of "
             "mK's 94% HDI. Seed 0 is the recovery study's subjects. P = binomial chance of at "
             "most this many covered at 0.94; z = (mean - truth) / sd.", "",
             "| prior | seed | covered | coverage | P | z sd |", "|---|---|---|---|---|---|"]
    summary = {}
    for name in PRIORS:
        for seed in [*seeds, "all"]:
            sel = [r for r in rows if seed == "all" or r["seed"] == seed]
            k, n = sum(r[name]["covered"] for r in sel), len(sel)
            z = [(r[name]["mean"] - r["mK"]) / r[name]["sd"] for r in sel]
            summary[f"{name}/{seed}"] = {"covered": k, "n": n, "p_at_most": p_at_most(k, n),
                                         "z_sd": float(np.std(z))}
            lines.append(f"| {name} | {seed} | {k}/{n} | {k / n:.3f} | {p_at_most(k, n):.3g} "
                         f"| {np.std(z):.2f} |")
    pit = np.histogram([r["population"]["pit"] for r in rows], 10, (0.0, 1.0))[0]
    lines += ["", "PIT (population prior), counts per tenth: " + ", ".join(map(str, pit)), ""]
    res = {"summary": summary, "pit_deciles": pit.tolist(), "subjects": rows}
    lines += ["![coverage per study and PIT](mk_grid.png)", ""]
    for suffix, text in (("json", json.dumps(res, indent=1) + "\n"), ("md", "\n".join(lines))):
        path = OUT / f"mk_grid.{suffix}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    plot(res, OUT / "mk_grid.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
