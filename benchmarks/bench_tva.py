"""Benchmark of the TVA likelihood: log-likelihood + gradient of a partial-report session.

The design of issue 12 (one subject, one condition): six locations, 13 trials at each of 16.6,
33.3, 50, 100, 150 and 200 ms with six targets and no distractors, and 13 trials each with 2, 3
and 4 distractors (the other locations targets) at 150 ms: 117 trials. Parameters: ``C`` items/s,
spatial weights, distractor weight ``alpha``, Gaussian ``t0`` (``mu0``, ``sigma0``, ms) and a
free distribution of ``K``. Timed on one thread: the median of repeated evaluations of the
log-likelihood and its gradient with respect to every parameter. Optionally (``--nuts``) times
NUTS (through :func:`bayesattn.inference.fit`) on the :class:`~bayesattn.models.neuro.tva.TVA`
model for one subject of the study: the design twice, 234 trials, probit ``K``.

``--potential`` times the NUTS potential and its gradient with the compiled race kernel
(``bayesattn/models/neuro/tva/compiled.py``) and with the torch path, alternately.

Run: ``python benchmarks/bench_tva.py [--repeats 30] [--nuts CHAINSxDRAWS [--jit]
[--chain-method sequential|parallel|vectorized]] [--potential]``; writes
``benchmarks/results/tva/results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _reference_probs(rates, k_probs):
    """``tau ->`` the ``2^N`` encoded-set probabilities by the textbook formulas (NumPy): the
    product form when VSTM is not filled and ``sum_A (-1)^(|A|+1) v_A/(v_A+V_out)
    (1 - e^{-(v_A+V_out) tau})`` when it is (Kyllingsbaek 2006), mixed over ``K = 0..N``."""
    import numpy as np

    n = len(rates)
    codes = np.arange(2**n)
    masks = (codes[:, None] >> np.arange(n)) & 1
    sizes = masks.sum(1)
    v_set = masks @ rates
    v_out = rates.sum() - v_set
    inside = (codes[None, :] & ~codes[:, None]) == 0
    sign = np.where(sizes % 2 == 1, 1.0, -1.0)[None, :] * (inside & (codes[None, :] > 0))
    rate_sum = v_set[None, :] + v_out[:, None]
    ratio = np.divide(v_set[None, :], rate_sum, out=np.zeros_like(rate_sum), where=rate_sum > 0)
    p_gt = np.array([k_probs[r + 1 :].sum() for r in sizes])
    p_eq = k_probs[sizes]

    def f(tau):
        tau = max(tau, 0.0)
        small = np.prod(np.where(masks == 1, -np.expm1(-rates * tau), 1.0), 1)
        small = small * np.exp(-v_out * tau)
        full = (sign * ratio * -np.expm1(-rate_sum * tau)).sum(1)
        full[0] = 1.0
        return p_gt * small + p_eq * full

    return f


def accuracy_table(exposures=(5.0, 10.0, 16.6, 33.3, 50.0, 100.0, 150.0, 200.0, 500.0)):
    """Max abs error over all 64 whole-report sets of the closed-form Gaussian-``t0``
    likelihood against adaptive quadrature (``scipy.integrate.quad_vec``, split at the kink
    ``t0 = exposure``), three parameter settings, six locations; also the old 32-node
    Gauss-Hermite error where given (``gh_error``)."""
    import numpy as np
    from scipy import integrate, stats

    from bayesattn.models.neuro.tva import report_log_prob, report_sets

    settings = [  # C, mu0, sigma0, K probabilities over 0..6
        (40.0, 15.0, 8.0, [0, 0.05, 0.2, 0.4, 0.25, 0.1, 0]),
        (120.0, 5.0, 20.0, [0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05]),
        (25.0, 20.0, 3.0, [0, 0, 0, 1.0, 0, 0, 0]),
    ]
    w = torch.tensor([1.2, 1.0, 0.9, 1.1, 0.8, 1.0], dtype=F64)
    rows = []
    for e in exposures:
        worst = 0.0
        for C, mu0, sd0, kp in settings:
            kp = np.asarray(kp, dtype=float)
            probs = _reference_probs((C * w / w.sum() / 1000).numpy(), kp)

            def f(t0, probs=probs, e=e, mu0=mu0, sd0=sd0):
                return probs(e - t0) * stats.norm.pdf(t0, mu0, sd0)

            ref = np.zeros(64)
            for a, b in ((mu0 - 40 * sd0, e), (e, mu0 + 40 * sd0)):
                ref += integrate.quad_vec(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=400)[0]
            lp = report_log_prob(
                report_sets(6),
                torch.tensor(e, dtype=F64),
                C=C,
                weights=w,
                t0=mu0,
                t0_sd=sd0,
                k_probs=torch.as_tensor(kp, dtype=F64),
            )
            worst = max(worst, float(np.abs(torch.exp(lp).numpy() - ref).max()))
        rows.append({"exposure_ms": e, "max_abs_error": worst})
    return rows


def subject_design(seed: int = 0):
    """One subject of the issue-12 study: the 117-trial design twice (234 trials), simulated
    from the fixed parameters of :func:`design` with a probit ``K`` (mK 3.4, sK 0.6)."""
    from bayesattn.models.neuro.tva import (
        k_probit_probabilities,
        partial_report_design,
        simulate_partial_report,
    )

    g = torch.Generator().manual_seed(seed)
    parts = [partial_report_design(generator=g) for _ in range(2)]
    exposure, targets, distractors = (torch.cat([p[i] for p in parts]) for i in range(3))
    _, _, _, _, truth = design()
    truth = {k: v for k, v in truth.items() if k != "k_probs"}
    reported = simulate_partial_report(
        exposure,
        targets=targets,
        distractors=distractors,
        k_probs=k_probit_probabilities(3.4, 0.6, 6),
        generator=g,
        **truth,
    )
    return dict(exposure=exposure, reported=reported, targets=targets, distractors=distractors)


def time_nuts(chains: int, draws: int, jit: bool = False, chain_method: str = "sequential",
              full_mass: bool = False, start: str = "median", warmup: int | None = None) -> dict:
    """Wall and CPU time (s) of NUTS (``bayesattn.inference.fit``, ``warmup`` (default
    ``draws``) warm-up + ``draws`` draws per chain) on one subject's 234 partial-report
    trials: probit ``K``, Gaussian ``t0``
    (latent ``mu0``, ``sigma0``), free weights, ``alpha``. ``chain_method`` as
    :func:`bayesattn.inference.fit` (``"parallel"``: one process per core, each running its
    share of the chains in lockstep); ``full_mass``: a dense mass matrix. CPU time counts this
    process and its finished children (the chain workers): ``cpu_s / chains`` is one chain's
    cost on a free core. ``start="map"``: ``fit(init_values="map")``, the chains starting at
    draws of a MAP-Laplace fit with its variances as the starting metric (its time
    included)."""
    import arviz as az
    import pyro.distributions as dist

    from bayesattn.inference import fit
    from bayesattn.models.neuro.tva import TVA

    data = subject_design()
    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    t, cpu = time.perf_counter(), os.times()
    idata = fit(
        model,
        data,
        method="nuts",
        num_chains=chains,
        num_samples=draws,
        warmup_steps=draws if warmup is None else warmup,
        jit_compile=jit,
        full_mass=full_mass,
        chain_method=chain_method,
        progress_bar=False,
        init_values="map" if start == "map" else None,
    )
    wall, end = time.perf_counter() - t, os.times()
    cpu_s = sum(getattr(end, k) - getattr(cpu, k)
                for k in ("user", "system", "children_user", "children_system"))
    steps = idata.sample_stats["n_steps"].values
    return {
        "trials": int(data["exposure"].shape[0]),
        "chains": chains,
        "draws": draws,
        "warmup": draws if warmup is None else warmup,
        "wall_s": wall,
        "cpu_s": cpu_s,
        "full_mass": full_mass,
        "verdict": idata.attrs.get("converged"),
        "max_r_hat": float(az.rhat(idata).to_array().max()),
        "min_ess_bulk": float(az.ess(idata).to_array().min()),
        "jit": jit,
        "chain_method": chain_method,
        "start": json.loads(idata.attrs["diagnostics"])["settings"]["start"],
        "mean_leapfrog_steps": float(steps.mean()),
        "divergences": int(idata.sample_stats["diverging"].values.sum()),
        "load_average": os.getloadavg()[0],
    }


def time_conversion(chains: int = 4, draws: int = 1000, seed: int = 1) -> dict:
    """Wall time (s) of ``to_inference_data`` for ``chains x draws`` draws of the one-subject
    NUTS model (234 trials; draws scattered around the prior medians on the unconstrained
    scale): replicated reports, deterministic sites, pointwise log-likelihood, ``lp`` and the
    prior groups, one thread."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer.autoguide.initialization import init_to_median
    from pyro.infer.mcmc.util import initialize_model

    from bayesattn.inference.convert import to_inference_data
    from bayesattn.models.neuro.tva import TVA

    data = subject_design()
    model = TVA(6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0))
    pyro.set_rng_seed(0)
    init, _, transforms, _ = initialize_model(model.model, model_kwargs=data,
                                              init_strategy=init_to_median(num_samples=31))
    g = torch.Generator().manual_seed(seed)
    total = chains * draws
    posterior = {k: transforms[k].inv(v + 0.05 * torch.randn((total, *v.shape), generator=g,
                                                            dtype=v.dtype))
                 for k, v in init.items()}
    posterior = {k: v.reshape(chains, draws, *v.shape[1:]) for k, v in posterior.items()}
    t = time.perf_counter()
    to_inference_data(model, data, posterior, {})
    return {"chains": chains, "draws": draws, "trials": int(data["exposure"].shape[0]),
            "wall_s": time.perf_counter() - t}


def _nuts_potential(model, data, batch: int):
    """The JIT-traced NUTS potential ``z (batch, D) -> U (batch,)`` of ``model`` on ``data``
    (``inference.nuts``: the fast log joint, the program's transforms, one flat site) and a
    starting point near the prior medians."""
    import pyro
    from pyro.infer.autoguide.initialization import init_to_median
    from pyro.infer.mcmc.util import initialize_model

    from bayesattn.inference import nuts

    pyro.set_rng_seed(0)
    init, _, transforms, _ = initialize_model(model.model, model_kwargs=data,
                                              max_plate_nesting=model.max_plate_nesting,
                                              init_strategy=init_to_median(num_samples=15))
    flat, potential = nuts.flat_potential(model.log_joint_fn(data), init, transforms)
    g = torch.Generator().manual_seed(1)
    z = flat.pack(init).expand(batch, flat.size)
    z = z + 0.05 * torch.randn(z.shape, generator=g, dtype=z.dtype)
    return nuts._jit_traced(potential, {nuts._FLAT: z}), z


def time_potentials(repeats: int = 200) -> dict:
    """Potential + gradient of NUTS, with the compiled race kernel and with the torch path
    (``BAYESATTN_NO_KERNEL`` semantics), timed alternately on one thread: one subject (234
    trials, 2 parameter vectors: two chains in lockstep) and the 50-subject, 2-condition study
    (11,700 trials, hierarchical, centred, one vector). Median and 10th percentile in ms."""
    import pyro.distributions as dist
    import tva_recovery

    from bayesattn.inference import nuts
    from bayesattn.models.neuro.tva import TVA, HierarchicalTVA, compiled

    if not compiled.kernel_available():
        raise SystemExit("no compiled kernel (no C compiler?): nothing to compare")
    study = tva_recovery.study_data(
        tva_recovery.simulate(tva_recovery.population_truth(50, 0), 0))
    cases = {
        "one subject, 2 chains": (TVA(6, paradigm="partial", K="probit",
                                      t0_sd=dist.HalfNormal(10.0)), subject_design(), 2),
        "50 subjects, hierarchical": (HierarchicalTVA(
            50, 6, paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0), conditions=2,
            by_condition=("C",), centered=True, deviation="subject"), study, 1),
    }
    out = {}
    for name, (model, data, batch) in cases.items():
        lib = compiled._LIB[0]
        kernel, z = _nuts_potential(model, data, batch)
        compiled._LIB[0] = None
        try:
            torch_path, _ = _nuts_potential(model, data, batch)
        finally:
            compiled._LIB[0] = lib
        times = {"kernel": [], "torch": []}
        values = {}
        reps = repeats if batch > 1 else max(10, repeats // 10)
        for _ in range(reps):
            for label, fn in (("kernel", kernel), ("torch", torch_path)):
                x = z.clone().requires_grad_()
                t = time.perf_counter()
                u = fn({nuts._FLAT: x})
                (grad,) = torch.autograd.grad(u.sum(), [x])
                times[label].append(time.perf_counter() - t)
                values[label] = (u.detach(), grad)
        row = {"repeats": reps, "potential_rel_diff": float(
            ((values["kernel"][0] - values["torch"][0]).abs() / values["torch"][0].abs()).max()),
            "grad_rel_diff": float((values["kernel"][1] - values["torch"][1]).abs().max()
                                   / values["torch"][1].abs().max())}
        for label, ts in times.items():
            ts.sort()
            row[f"{label}_median_ms"] = 1e3 * ts[len(ts) // 2]
            row[f"{label}_p10_ms"] = 1e3 * ts[len(ts) // 10]
        out[name] = row
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--nuts", default=None, help="CHAINSxDRAWS, e.g. 1x200")
    parser.add_argument("--jit", action="store_true", help="NUTS with jit_compile=True")
    parser.add_argument("--chain-method", choices=["sequential", "parallel", "vectorized"],
                        default="sequential", help="how the NUTS chains run (inference.fit)")
    parser.add_argument("--full-mass", action="store_true", help="NUTS with a dense mass matrix")
    parser.add_argument("--start", choices=["median", "map"], default="median",
                        help="NUTS start: prior medians, or draws and metric of a MAP-Laplace fit")
    parser.add_argument("--warmup", type=int, default=None,
                        help="NUTS warm-up iterations per chain (default: as many as draws)")
    parser.add_argument("--conversion", action="store_true",
                        help="time to_inference_data for 4 x 1000 draws of the NUTS model")
    parser.add_argument("--potential", action="store_true",
                        help="time the NUTS potential with the compiled race kernel and without")
    parser.add_argument("--label", default="current")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the quadrature table")
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
        res["nuts"] = time_nuts(chains, draws, jit=args.jit, chain_method=args.chain_method,
                                full_mass=args.full_mass, start=args.start,
                                warmup=args.warmup)
        n = res["nuts"]
        print(
            f"[{args.label}] NUTS {chains} x {draws} (+{n['warmup']} warm-up), "
            f"{n['trials']} trials: "
            f"{n['wall_s']:.1f} s wall, {n['cpu_s']:.1f} s CPU, "
            f"{n['mean_leapfrog_steps']:.1f} leapfrog steps a draw, "
            f"load {n['load_average']:.1f}; verdict converged={n['verdict']}, max r_hat "
            f"{n['max_r_hat']:.3f}, min bulk ESS {n['min_ess_bulk']:.0f}, "
            f"{n['divergences']} divergences"
        )
    if args.conversion:
        res["conversion"] = time_conversion()
        c = res["conversion"]
        print(f"[{args.label}] to_inference_data, {c['chains']} x {c['draws']} draws, "
              f"{c['trials']} trials: {c['wall_s']:.1f} s")
    if args.potential:
        res["potential"] = time_potentials()
        for name, row in res["potential"].items():
            print(f"[{args.label}] NUTS potential + gradient, {name}: kernel "
                  f"{row['kernel_median_ms']:.2f} ms (p10 {row['kernel_p10_ms']:.2f}), torch "
                  f"{row['torch_median_ms']:.2f} ms (p10 {row['torch_p10_ms']:.2f}); "
                  f"max relative difference {row['potential_rel_diff']:.1e} (potential), "
                  f"{row['grad_rel_diff']:.1e} (gradient)")
    if not args.no_accuracy:
        res["accuracy"] = accuracy_table()
        for row in res["accuracy"]:
            print(
                f"exposure {row['exposure_ms']:6.1f} ms: max abs error {row['max_abs_error']:.1e}"
            )
    if not args.no_write:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "results.json").write_text(json.dumps(res, indent=2) + "\n")
        (OUT / "results.md").write_text(_markdown(res))
    return res


def _markdown(res: dict) -> str:
    lik = res["likelihood"]
    lines = [
        "# TVA likelihood benchmark (`benchmarks/bench_tva.py`)",
        "",
        f"One thread, {res['machine']}. 117-trial six-location partial-report session "
        "(issue 12 design), Gaussian t0, free K: log-likelihood + gradient of every parameter.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| median over {lik['repeats']} repeats | {lik['median_ms']:.2f} ms |",
        f"| per trial | {1000 * lik['median_ms'] / lik['trials']:.1f} us |",
        f"| fastest repeat | {lik['min_ms']:.2f} ms |",
        f"| log-likelihood | {lik['log_likelihood']:.6f} |",
    ]
    if "nuts" in res:
        n = res["nuts"]
        lines.append(
            f"| NUTS {n['chains']} chain(s) x {n['draws']} draws (+{n['warmup']} warm-up), "
            f"{n['trials']} trials, jit={n['jit']}, full_mass={n.get('full_mass', False)}, "
            f"chain_method={n.get('chain_method', 'sequential')}, load {n['load_average']:.1f} "
            f"| {n['wall_s']:.1f} s wall, {n.get('cpu_s', float('nan')):.1f} s CPU "
            f"({n['mean_leapfrog_steps']:.1f} leapfrog steps a draw) |"
        )
        if "max_r_hat" in n:
            lines.append(
                f"| that fit's verdict | converged={n['verdict']}, max r_hat "
                f"{n['max_r_hat']:.3f}, min bulk ESS {n['min_ess_bulk']:.0f}, "
                f"{n['divergences']} divergences |"
            )
    if "accuracy" in res:
        lines += [
            "",
            "Closed-form Gaussian-t0 likelihood against adaptive quadrature (scipy quad_vec,",
            "split at t0 = exposure), max abs error over all 64 report sets and 3 settings:",
            "",
            "| exposure (ms) | max abs error |",
            "|---|---|",
        ]
        lines += [f"| {r['exposure_ms']:.1f} | {r['max_abs_error']:.1e} |" for r in res["accuracy"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
