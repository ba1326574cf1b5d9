"""Benchmark of the TVA likelihood: log-likelihood + gradient of a partial-report session.

The design of issue 12 (one subject, one condition): six locations, 13 trials at each of 16.6,
33.3, 50, 100, 150 and 200 ms with six targets and no distractors, and 13 trials each with 2, 3
and 4 distractors (the other locations targets) at 150 ms: 117 trials. Parameters: ``C`` items/s,
spatial weights, distractor weight ``alpha``, Gaussian ``t0`` (``mu0``, ``sigma0``, ms) and a
free distribution of ``K``. Timed on one thread: the median of repeated evaluations of the
log-likelihood and its gradient with respect to every parameter. Optionally (``--nuts``) times
NUTS on the :class:`~bayesattn.models.neuro.tva.TVA` model for this session.

Run: ``python benchmarks/bench_tva.py [--repeats 30] [--nuts CHAINSxDRAWS]``; writes
``benchmarks/results/tva/results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

F64 = torch.float64
OUT = Path(__file__).resolve().parent / "results" / "tva"


def design(seed: int = 0):
    """The 117-trial partial-report design and reports simulated from fixed parameters."""
    from bayesattn.models.neuro.tva import simulate_partial_report

    g = torch.Generator().manual_seed(seed)
    exposure, targets, distractors = [], [], []
    for e in (16.6, 33.3, 50.0, 100.0, 150.0, 200.0):
        for _ in range(13):
            exposure.append(e)
            targets.append(torch.ones(6, dtype=torch.bool))
            distractors.append(torch.zeros(6, dtype=torch.bool))
    for nd in (2, 3, 4):
        for _ in range(13):
            d = torch.zeros(6, dtype=torch.bool)
            d[torch.randperm(6, generator=g)[:nd]] = True
            exposure.append(150.0)
            targets.append(~d)
            distractors.append(d)
    exposure = torch.tensor(exposure, dtype=F64)
    targets, distractors = torch.stack(targets), torch.stack(distractors)
    truth = dict(
        C=45.0,
        weights=torch.tensor([1.2, 1.0, 0.9, 1.1, 0.8, 1.0], dtype=F64),
        alpha=0.4,
        t0=15.0,
        t0_sd=5.0,
        k_probs=torch.tensor([0.0, 0.05, 0.25, 0.45, 0.2, 0.05], dtype=F64),  # K = 1..6
    )
    reported = simulate_partial_report(
        exposure, targets=targets, distractors=distractors, generator=g, **truth
    )
    return exposure, targets, distractors, reported, truth


def time_likelihood(repeats: int) -> dict:
    """Median wall time (ms) of log-likelihood + gradient over the 117 trials."""
    from bayesattn.models.neuro.tva import partial_report_log_prob

    exposure, targets, distractors, reported, truth = design()
    params = {k: torch.as_tensor(v, dtype=F64).clone().requires_grad_() for k, v in truth.items()}

    def once():
        lp = partial_report_log_prob(
            reported, exposure, targets=targets, distractors=distractors, **params
        ).sum()
        lp.backward()
        return lp

    value = float(once().detach())  # warm-up (and caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    return {
        "trials": int(exposure.shape[0]),
        "log_likelihood": value,
        "median_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "repeats": repeats,
    }


def time_nuts(chains: int, draws: int) -> dict:
    """Wall time (s) of NUTS on the TVA partial-report model for the session (sequential)."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS

    from bayesattn.models.neuro.tva import TVA

    exposure, targets, distractors, reported, _ = design()
    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    data = dict(exposure=exposure, reported=reported, targets=targets, distractors=distractors)
    t = time.perf_counter()
    for c in range(chains):
        pyro.set_rng_seed(c)
        mcmc = MCMC(
            NUTS(model.model, target_accept_prob=0.8),
            num_samples=draws,
            warmup_steps=draws,
            disable_progbar=True,
        )
        mcmc.run(**data)
    wall = time.perf_counter() - t
    return {"chains": chains, "draws": draws, "warmup": draws, "wall_s": wall}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--nuts", default=None, help="CHAINSxDRAWS, e.g. 1x200")
    parser.add_argument("--label", default="current")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    res = {"label": args.label, "machine": platform.processor() or platform.machine()}
    res["likelihood"] = time_likelihood(args.repeats)
    print(
        f"[{args.label}] 117-trial partial report, log-lik + grad: "
        f"median {res['likelihood']['median_ms']:.2f} ms (min {res['likelihood']['min_ms']:.2f})"
    )
    if args.nuts:
        chains, draws = (int(x) for x in args.nuts.lower().split("x"))
        res["nuts"] = time_nuts(chains, draws)
        wall = res["nuts"]["wall_s"]
        print(f"[{args.label}] NUTS {chains} x {draws} (+{draws} warm-up): {wall:.1f} s")
    if not args.no_write:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
