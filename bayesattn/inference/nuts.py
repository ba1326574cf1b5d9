"""NUTS (Hoffman & Gelman 2014, Pyro's multinomial variant) with per-draw statistics.

:class:`RecordingNUTS` is Pyro's :class:`pyro.infer.NUTS` that records, for every transition,
what ArviZ's ``sample_stats`` expects (Stan's names in brackets):

* ``lp`` [``lp__``]: log density of the draw in the unconstrained space (minus the potential
  energy; includes the log-Jacobian of the transforms, as Stan's ``lp__``).
* ``energy`` [``energy__``]: the Hamiltonian at the start of the transition (potential of the
  previous draw plus the kinetic energy of the fresh momentum). ``az.bfmi`` and
  ``az.plot_energy`` read it (Betancourt 2016, "Diagnosing suboptimal cotangent
  disintegrations in Hamiltonian Monte Carlo").
* ``tree_depth`` [``treedepth__``]: number of trajectory doublings (measured, not derived).
* ``n_steps`` [``n_leapfrog__``]: leapfrog steps; ``acceptance_rate`` [``accept_stat__``];
  ``diverging`` [``divergent__``]; ``step_size`` [``stepsize__``].

Pyro 1.9 exposes none of these per draw, so the subclass overrides the private
``NUTS._build_tree(z, r, z_grads, log_slice, direction, tree_depth, energy_current)`` (to see
each top-level doubling and the starting energy) and reads the private potential-energy cache
``HMC._fetch_from_cache()``; pyproject pins ``pyro-ppl>=1.9,<1.10`` for that reason.

The potential is wrapped so that a non-finite value, or a ``ValueError`` from distribution
validation / a failed Cholesky when a step leaves the support numerically (e.g. a positive
parameter underflows to 0), is ``+inf``: NUTS then rejects the step as divergent instead of
aborting the run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import warnings

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.mcmc.util import initialize_model
from tqdm.std import tqdm as std_tqdm

from ..interrupts import starting_workers

__all__ = ["RecordingNUTS", "potential_from_log_joint", "run_nuts", "safe_potential"]

STAT_NAMES = ("lp", "energy", "diverging", "step_size", "acceptance_rate", "n_steps",
              "tree_depth")


def safe_potential(potential_fn):
    """Wrap a potential ``U(z)`` so numerical failures become ``+inf`` (a rejected step).

    The returned ``+inf`` is tied to ``z`` by a zero-weight sum, so autograd gives zero
    gradients instead of failing. Caught: non-finite values, ``ValueError`` (Pyro's support
    validation) and ``torch.linalg.LinAlgError`` (a covariance that lost positive
    definiteness).
    """

    def wrapped(z):
        try:
            u = potential_fn(z)
        except (ValueError, torch.linalg.LinAlgError):
            u = None
        if u is None or not bool(torch.isfinite(u)):
            dtype = next(iter(z.values())).dtype if z else torch.get_default_dtype()
            tie = sum(((v * 0.0).nan_to_num(0.0, 0.0, 0.0).sum() for v in z.values()),
                      torch.zeros((), dtype=dtype))
            return tie + torch.tensor(float("inf"), dtype=dtype)
        return u

    return wrapped


class RecordingNUTS(NUTS):
    """:class:`pyro.infer.NUTS` that keeps per-transition statistics in :attr:`records`.

    Same arguments as :class:`pyro.infer.NUTS`. After :meth:`pyro.infer.MCMC.run`,
    ``records`` holds one dict per transition (warm-up included) with the keys of
    :data:`STAT_NAMES`; :meth:`stats` returns the last ``num_samples`` as arrays.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records: list[dict] = []
        self._nesting = 0
        self._current: dict | None = None

    def _initialize_model_properties(self, model_args, model_kwargs):
        super()._initialize_model_properties(model_args, model_kwargs)
        self.potential_fn = safe_potential(self.potential_fn)

    def _build_tree(self, z, r, z_grads, log_slice, direction, tree_depth, energy_current):
        top = self._nesting == 0 and self._current is not None
        self._nesting += 1
        try:
            tree = super()._build_tree(z, r, z_grads, log_slice, direction, tree_depth,
                                       energy_current)
        finally:
            self._nesting -= 1
        if top:
            rec = self._current
            if rec["energy"] is None:
                rec["energy"] = float(energy_current)
            rec["tree_depth"] += 1
            rec["n_steps"] += int(tree.num_proposals)
            rec["sum_accept"] += float(tree.sum_accept_probs)
            rec["diverging"] = rec["diverging"] or bool(tree.diverging)
        return tree

    def sample(self, params):
        """One transition (Pyro's), recording its statistics."""
        self._current = {"energy": None, "tree_depth": 0, "n_steps": 0, "sum_accept": 0.0,
                         "diverging": False, "step_size": float(self.step_size)}
        try:
            out = super().sample(params)
        finally:
            rec, self._current = self._current, None
        _, potential, _ = self._fetch_from_cache()
        n = max(rec["n_steps"], 1)
        energy = rec["energy"]
        self.records.append({
            "lp": -float(potential) if potential is not None else float("nan"),
            "energy": float("nan") if energy is None else energy,
            "diverging": rec["diverging"],
            "step_size": rec["step_size"],
            "acceptance_rate": min(rec["sum_accept"] / n, 1.0),
            "n_steps": rec["n_steps"],
            "tree_depth": rec["tree_depth"],
        })
        return out

    def stats(self, num_samples: int) -> dict:
        """The last ``num_samples`` transitions as arrays ``{name: (num_samples,)}``."""
        rows = self.records[len(self.records) - num_samples:]
        out = {k: np.array([r[k] for r in rows]) for k in STAT_NAMES}
        out["diverging"] = out["diverging"].astype(bool)
        out["n_steps"] = out["n_steps"].astype(np.int64)
        out["tree_depth"] = out["tree_depth"].astype(np.int64)
        return out


def run_nuts(model, data, *, num_samples, warmup_steps, num_chains, seed, target_accept_prob,
             max_tree_depth, jit_compile, chain_method, progress_bar, full_mass=False):
    """Run ``num_chains`` NUTS chains of ``model`` on ``data``.

    Chain ``c`` uses seed ``seed + c``. ``chain_method="parallel"`` runs the chains in spawned
    worker processes (one torch thread each). Workers ignore SIGINT; on Ctrl-C the parent
    terminates the pool at once and re-raises :class:`KeyboardInterrupt`.

    Returns:
        ``(draws {name: tensor (chain, draw, ...)}, stats {name: array (chain, draw)},
        settings dict)``.

    Raises:
        KeyboardInterrupt: interrupted (the worker processes are gone when it propagates).
    """
    jobs = [(model, data, num_samples, warmup_steps, seed + c, target_accept_prob,
             max_tree_depth, jit_compile, progress_bar, full_mass) for c in range(num_chains)]
    workers = min(num_chains, os.cpu_count() or 1)
    if chain_method == "parallel" and workers > 1:
        results = _run_parallel(jobs, workers)
    else:
        results = [_run_chain(job) for job in jobs]
    draws = {k: torch.stack([r[0][k] for r in results]) for k in results[0][0]}
    stats = {k: np.stack([r[1][k] for r in results]) for k in results[0][1]}
    settings = {"num_chains": num_chains, "warmup_steps": warmup_steps,
                "num_samples": num_samples, "target_accept_prob": target_accept_prob,
                "max_tree_depth": max_tree_depth, "chain_method": chain_method,
                "full_mass": full_mass}
    return draws, stats, settings


def _worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    # tqdm's default lock is a multiprocessing semaphore; a worker terminated on Ctrl-C would
    # leak it (a resource-tracker warning after exit): one process, one thread lock suffices
    std_tqdm.set_lock(threading.RLock())


def _run_parallel(jobs, workers):
    ctx = multiprocessing.get_context("spawn")
    pool = None
    try:
        with starting_workers():  # a Ctrl-C while the workers start is raised after it
            pool = ctx.Pool(workers, initializer=_worker_init)
        pending = pool.map_async(_run_chain, jobs)
        while True:  # a timed wait keeps the parent responsive to KeyboardInterrupt
            try:
                results = pending.get(timeout=0.2)
                break
            except multiprocessing.TimeoutError:
                continue
        pool.close()
        pool.join()
        return results
    except BaseException:
        if pool is not None:
            pool.terminate()  # kills the workers and joins them
            pool.join()
        raise


def potential_from_log_joint(log_joint, transforms):
    """The potential ``U(z) = -(log p(x, data) + sum_k log|det dx_k/dz_k|)``, ``x_k =
    T_k^{-1}(z_k)``, of a log joint density of constrained values: the potential Pyro builds
    from a traced model, with the model's transforms ``T_k`` (constrained -> unconstrained, as
    :func:`pyro.infer.mcmc.util.initialize_model` returns them)."""

    def potential(z):
        x = {k: transforms[k].inv(v) for k, v in z.items()}
        lp = log_joint(x)
        for k, v in z.items():
            lp = lp - transforms[k].log_abs_det_jacobian(x[k], v).sum()
        return -lp

    return potential


def _jit_traced(potential, example: dict):
    """``potential`` compiled by ``torch.jit.trace`` at ``example`` (fixed data and shapes, as
    Pyro's ``jit_compile``)."""
    names = sorted(example)
    args = tuple(example[k].detach().clone().requires_grad_() for k in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(lambda *vals: potential(dict(zip(names, vals, strict=True))),
                                 args,
                                 check_trace=False)
    return lambda z: traced(*(z[k] for k in names))


def _run_chain(job):
    """One NUTS chain: ``(draws {name: (num_samples, ...)}, per-draw stats)``.

    A model whose :meth:`~bayesattn.models.base.BayesianModel.log_joint_fn` gives a fast log
    joint is sampled through it (same density, same transforms and initial point as the traced
    program); other models through Pyro's trace of :meth:`model`.
    """
    (model, data, num_samples, warmup_steps, seed, target, max_tree_depth, jit,
     progress_bar, full_mass) = job
    pyro.set_rng_seed(seed)
    init_strategy = init_to_median(num_samples=15)
    log_joint = model.log_joint_fn(data)
    run_kwargs = data
    if log_joint is None:
        kernel = RecordingNUTS(model.model, max_plate_nesting=model.max_plate_nesting,
                               target_accept_prob=target, max_tree_depth=max_tree_depth,
                               init_strategy=init_strategy, jit_compile=jit,
                               ignore_jit_warnings=True, full_mass=full_mass)
        initial = None
    else:
        initial, _, transforms, _ = initialize_model(
            model.model, model_kwargs=data, max_plate_nesting=model.max_plate_nesting,
            init_strategy=init_strategy)
        potential = potential_from_log_joint(log_joint, transforms)
        if jit:
            potential = _jit_traced(potential, initial)
        kernel = RecordingNUTS(potential_fn=safe_potential(potential), transforms=transforms,
                               target_accept_prob=target, max_tree_depth=max_tree_depth,
                               full_mass=full_mass)
        run_kwargs = {}
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=1,
                initial_params=initial, disable_progbar=not progress_bar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        mcmc.run(**run_kwargs)
    samples = mcmc.get_samples()
    return {k: samples[k] for k in model.latent_names()}, kernel.stats(num_samples)
