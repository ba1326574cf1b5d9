"""Fit a bayesattn model by exact posterior, MAP, SVI or NUTS and return ArviZ InferenceData.

Discrete key choices are marginalised exactly: NUTS enumerates them (``max_plate_nesting``),
SVI uses ``TraceEnum_ELBO`` with the autoguide over the continuous sites only.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

import arviz as az
import numpy as np
import pyro
import pyro.infer.autoguide as autoguide
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide.initialization import init_to_median
from tqdm.auto import tqdm

from ..models.base import BayesianModel
from .convert import enumerated_sites, to_inference_data

__all__ = ["fit", "METHODS", "GUIDES"]

METHODS = ("exact", "map", "svi", "nuts")
GUIDES = {
    "normal": autoguide.AutoNormal,
    "lowrank": autoguide.AutoLowRankMultivariateNormal,
    "mvn": autoguide.AutoMultivariateNormal,
    "delta": autoguide.AutoDelta,
}


def _continuous(model):
    """The model with its enumerated (discrete) sites hidden, for autoguides and init."""
    return poutine.block(model, hide_fn=lambda site: site.get("infer", {}).get("enumerate"))


def fit(
    model: BayesianModel,
    data: dict,
    *,
    method: str = "nuts",
    num_samples: int = 1000,
    warmup_steps: int = 1000,
    num_chains: int = 4,
    seed: int = 0,
    guide: str = "normal",
    num_steps: int = 2000,
    learning_rate: float = 0.02,
    target_accept_prob: float = 0.8,
    jit_compile: bool = False,
    chain_method: str = "sequential",
    progress_bar: bool = True,
) -> az.InferenceData:
    """Fit ``model`` to ``data`` and return an :class:`arviz.InferenceData`.

    Methods:

    * ``"nuts"``: Pyro's NUTS (Hoffman & Gelman 2014), ``num_chains`` chains of
      ``warmup_steps + num_samples`` iterations run one after the other, each with its own
      progress bar and seed ``seed + chain``. Per-draw ``sample_stats``: ``diverging``,
      ``step_size``, ``acceptance_rate``, ``n_steps`` (leapfrog steps) and ``tree_depth``.
    * ``"svi"``: stochastic variational inference with an autoguide (``guide``: ``"normal"``
      AutoNormal, ``"lowrank"`` AutoLowRankMultivariateNormal, ``"mvn"``,
      ``"delta"``), ``TraceEnum_ELBO`` when the model has enumerated discrete sites
      (``Trace_ELBO`` otherwise), Adam, ``num_steps`` steps
      with a tqdm bar; ``num_chains * num_samples`` draws from the guide. The ELBO loss trace
      is kept in ``idata.svi_loss``.
    * ``"map"``: SVI with ``AutoDelta``: one draw, the MAP estimate.
    * ``"exact"``: ``model.exact_posterior`` (closed form); for a model whose hyperparameters
      are all fixed, the closed-form posterior has nothing left to sample.

    Args:
        model: a :class:`bayesattn.models.base.BayesianModel`.
        data: keyword arguments of ``model.model``; ``data[model.obs_name]`` is observed.
        method: one of :data:`METHODS`.
        num_samples: draws per chain kept.
        warmup_steps: NUTS warm-up (adaptation) iterations per chain.
        num_chains: chains (NUTS) or groups of guide draws (SVI, exact).
        seed: seed of every random number used.
        guide: SVI autoguide name (keys of :data:`GUIDES`).
        num_steps: SVI optimisation steps.
        learning_rate: Adam learning rate for SVI/MAP.
        target_accept_prob: NUTS step-size adaptation target.
        chain_method: ``"sequential"`` (one process) or ``"parallel"`` (NUTS chains in
            separate processes, one per CPU core, each with one torch thread).
        jit_compile: trace the NUTS potential with the PyTorch JIT (about 2x faster on small
            models; the model must be traceable).
        progress_bar: show progress bars.

    Returns:
        InferenceData with groups ``posterior``, ``sample_stats``, ``log_likelihood``
        (pointwise, discrete latents marginalised), ``posterior_predictive``,
        ``observed_data`` and ``constant_data`` (built with ``az.from_dict``).

    Raises:
        ValueError: unknown ``method`` or ``guide``; ``data`` lacks the observation;
            non-positive ``num_samples``, ``num_chains``, ``num_steps``.
        NotImplementedError: ``method="exact"`` for a model without a closed form.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if chain_method not in ("sequential", "parallel"):
        raise ValueError(
            f"unknown chain_method {chain_method!r}; expected 'sequential' or 'parallel'"
        )
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}; expected one of {', '.join(GUIDES)}")
    if data.get(model.obs_name) is None:
        raise ValueError(f"data must contain the observation {model.obs_name!r}")
    for name, n in (("num_samples", num_samples), ("num_chains", num_chains),
                    ("num_steps", num_steps)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")
    pyro.clear_param_store()
    extra: dict = {}
    if method == "nuts":
        draws, stats = _nuts(model, data, num_samples, warmup_steps, num_chains, seed,
                             target_accept_prob, jit_compile, chain_method, progress_bar)
    elif method in ("svi", "map"):
        guide = "delta" if method == "map" else guide
        draws, losses = _svi(model, data, guide, num_steps, learning_rate, seed, progress_bar,
                             1 if method == "map" else num_chains,
                             1 if method == "map" else num_samples)
        stats, extra["svi_loss"] = {}, losses
    else:
        draws, stats = _exact(model, data, num_chains, num_samples, seed), {}
    return to_inference_data(model, data, draws, stats, seed=seed, method=method, **extra)


def _nuts(model, data, num_samples, warmup_steps, num_chains, seed, target, jit, chain_method,
          progress_bar):
    jobs = [(model, data, num_samples, warmup_steps, seed + c, target, jit, progress_bar)
            for c in range(num_chains)]
    workers = min(num_chains, os.cpu_count() or 1)
    if chain_method == "parallel" and workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=torch.set_num_threads,
                                 initargs=(1,)) as pool:
            results = list(pool.map(_run_chain, jobs))
    else:
        results = [_run_chain(job) for job in jobs]
    draws = {k: torch.stack([r[0][k] for r in results]) for k in results[0][0]}
    stats = {k: np.stack([r[1][k] for r in results]) for k in results[0][1]}
    return draws, stats


def _run_chain(job):
    """One NUTS chain: ``(draws {name: (num_samples, ...)}, per-draw stats)``."""
    model, data, num_samples, warmup_steps, seed, target, jit, progress_bar = job
    pyro.set_rng_seed(seed)
    kernel = NUTS(model.model, max_plate_nesting=model.max_plate_nesting,
                  target_accept_prob=target, init_strategy=init_to_median(num_samples=15),
                  jit_compile=jit, ignore_jit_warnings=True)
    recorder = _StatsRecorder(warmup_steps)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=1,
                disable_progbar=not progress_bar, hook_fn=recorder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        mcmc.run(**data)
    samples = mcmc.get_samples()
    return {k: samples[k] for k in model.latent_names()}, recorder.as_arrays()


class _StatsRecorder:
    """``hook_fn`` of :class:`pyro.infer.MCMC` that records per-draw NUTS statistics.

    Pyro keeps running summaries only: the per-draw acceptance probability is recovered from
    consecutive running means, divergences from the kernel's divergence list, and the number
    of leapfrog steps by counting potential-energy gradient evaluations.
    """

    def __init__(self, warmup_steps):
        self.warmup_steps = warmup_steps
        self.rows = []
        self._calls = 0
        self._last_calls = 0
        self._last_mean = 0.0
        self._last_div = 0
        self._wrapped = False

    def _wrap(self, kernel):
        inner = kernel.potential_fn

        def counting(params):
            self._calls += 1
            return inner(params)

        kernel.potential_fn = counting
        self._wrapped = True

    def __call__(self, kernel, samples, stage, i):
        if not self._wrapped:
            self._wrap(kernel)
            self._last_calls = self._calls
            return
        steps = self._calls - self._last_calls
        self._last_calls = self._calls
        if stage != "Sample":
            return
        n = i + 1
        mean = kernel._mean_accept_prob
        accept = n * mean - (n - 1) * self._last_mean
        self._last_mean = mean
        div = len(kernel._divergences)
        self.rows.append((div > self._last_div, float(kernel.step_size), accept, steps))
        self._last_div = div

    def as_arrays(self):
        """Per-draw arrays: diverging, step_size, acceptance_rate, n_steps, tree_depth."""
        div, step, acc, steps = (np.array(c) for c in zip(*self.rows, strict=True))
        return {
            "diverging": div.astype(bool),
            "step_size": step,
            "acceptance_rate": np.clip(acc, 0.0, 1.0),
            "n_steps": steps.astype(int),
            "tree_depth": np.ceil(np.log2(np.maximum(steps, 1) + 1)).astype(int),
        }


def _svi(model, data, guide_name, num_steps, lr, seed, progress_bar, num_chains, num_samples):
    pyro.set_rng_seed(seed)
    latents = model.latent_names()
    if not latents:
        return {}, np.zeros(0)
    guide = GUIDES[guide_name](_continuous(model.model))
    # discrete latents are summed out exactly by TraceEnum_ELBO; without any, plain Trace_ELBO
    if enumerated_sites(model, data):
        loss = TraceEnum_ELBO(max_plate_nesting=model.max_plate_nesting)
    else:
        loss = Trace_ELBO()
    svi = SVI(model.model, guide, pyro.optim.Adam({"lr": lr}), loss)
    losses = np.empty(num_steps)
    bar = tqdm(range(num_steps), desc=f"SVI ({guide_name})", disable=not progress_bar)
    for step in bar:
        losses[step] = svi.step(**data)
        if step % 50 == 0 or step == num_steps - 1:
            bar.set_postfix(loss=f"{losses[step]:.3f}")
    if not np.isfinite(losses[-1]):
        raise FloatingPointError("SVI diverged (non-finite ELBO); lower learning_rate")
    with torch.no_grad():
        pred = Predictive(_continuous(model.model), guide=guide,
                          num_samples=num_chains * num_samples, return_sites=latents)
        samples = pred(**data)
    shapes = _site_shapes(model, data)
    draws = {k: samples[k].reshape(num_chains, num_samples, *shapes[k]) for k in latents}
    return draws, losses


def _site_shapes(model, data):
    trace = poutine.trace(_continuous(model.model)).get_trace(**data)
    return {k: site["value"].shape for k, site in trace.nodes.items() if site["type"] == "sample"}


def _exact(model, data, num_chains, num_samples, seed):
    if not model.latent_names():
        return {}
    gen = torch.Generator().manual_seed(seed)
    flat = model.exact_posterior(data, num_chains * num_samples, gen)
    return {k: v.reshape(num_chains, num_samples, *v.shape[1:]) for k, v in flat.items()}

