"""Fit a bayesattn model by exact posterior, MAP, SVI or NUTS and return ArviZ InferenceData.

:func:`fit` validates the arguments, picks torch's thread count (:mod:`.threads`), guards
memory, dispatches to one module per method (:mod:`.nuts`, :mod:`.svi`, :mod:`.laplace`,
:mod:`.exact`), converts the draws (:func:`bayesattn.inference.to_inference_data`) and stores
the convergence verdict (:mod:`.diagnostics`) in ``idata.attrs``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import arviz as az
import pyro
import torch
from torch.distributions import biject_to

from ..models.base import BayesianModel
from .convert import to_inference_data
from .diagnostics import make_verdict, nuts_figures, nuts_reasons, store_verdict
from .exact import fit_exact
from .laplace import fit_map
from .nuts import run_nuts
from .svi import GUIDES, fit_svi
from .threads import auto_num_threads, torch_threads

__all__ = ["fit", "METHODS", "GUIDES", "MAX_MEMORY", "MINIBATCH_ROWS", "MINIBATCH_SIZE"]

METHODS = ("exact", "map", "svi", "nuts")
#: default ``max_memory`` of :func:`fit`: 4 GiB
MAX_MEMORY = 4 * 2**30
#: SVI/MAP switch to minibatches above this many observations (when the model supports it)
MINIBATCH_ROWS = 2000
#: minibatch size of minibatch SVI/MAP
MINIBATCH_SIZE = 512


def fit(
    model: BayesianModel,
    data: dict,
    *,
    method: str = "nuts",
    num_samples: int = 1000,
    warmup_steps: int = 1000,
    num_chains: int = 4,
    seed: int = 0,
    guide: str = "mvn",
    num_steps: int = 2000,
    learning_rate: float = 0.02,
    init: str = "map",
    init_values: dict | Sequence[dict] | str | None = None,
    inverse_mass_matrix: dict | None = None,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    jit_compile: bool = False,
    full_mass: bool = False,
    chain_method: str = "sequential",
    progress_bar: bool = True,
    num_threads: int | None = None,
    max_memory: int = MAX_MEMORY,
    num_prior_draws: int | None = None,
) -> az.InferenceData:
    """Fit ``model`` to ``data`` and return an :class:`arviz.InferenceData` with a verdict.

    Methods:

    * ``"nuts"``: Pyro's NUTS (Hoffman & Gelman 2014), ``num_chains`` chains of
      ``warmup_steps + num_samples`` iterations, chain ``c`` seeded ``seed + c``. Per-draw
      ``sample_stats``: ``lp``, ``energy``, ``diverging``, ``step_size``,
      ``acceptance_rate``, ``n_steps``, ``tree_depth`` (see :mod:`.nuts`). Numerical
      failures inside a trajectory are rejected (divergent) steps, not errors.
    * ``"svi"``: an autoguide (``guide``; default full-rank ``"mvn"``) started at the MAP
      (``init="map"``; ``"median"`` = prior median), ClippedAdam with the learning rate
      decaying to a tenth, ``num_steps`` steps; ``num_chains * num_samples`` guide draws. The
      ELBO loss trace is kept in ``idata.svi_loss``. See :mod:`.svi`.
    * ``"map"``: the posterior mode (L-BFGS in the unconstrained space) and a Laplace
      approximation there: ``num_chains * num_samples`` draws, or one draw at the mode (a
      point estimate, verdict FAILED) when the Hessian is not positive definite. See
      :mod:`.laplace`.
    * ``"exact"``: closed-form posteriors; hyperparameters with priors by type-II MAP first.
      See :mod:`.exact` for exactly what each model gets.

    Every result carries ``idata.attrs["converged"]`` (1/0) and ``idata.attrs["diagnostics"]``
    (JSON; :mod:`.diagnostics`); one line: :func:`bayesattn.inference.diagnostics.verdict_line`.

    Size: ``model.full_data_bytes(data)`` (when the model defines it; 0 = unknown) estimates
    the memory of one full-data likelihood. Above ``max_memory`` NUTS and exact refuse; SVI and
    MAP run on minibatches when the model has ``supports_subsampling = True`` (it then accepts
    ``subsample_size`` in ``model.model``). SVI/MAP also use minibatches of
    :data:`MINIBATCH_SIZE` rows whenever the data have more than :data:`MINIBATCH_ROWS`
    observations and the model supports it.

    Threads: ``num_threads=None`` runs small models (``N * S`` <= 250,000; see
    :func:`.threads.auto_num_threads`) on one torch thread, others with torch's setting; the
    previous setting is restored afterwards, also on errors. Parallel NUTS chains use one
    thread per worker process.

    Args:
        model: a :class:`bayesattn.models.base.BayesianModel`.
        data: keyword arguments of ``model.model``; ``data[model.obs_name]`` is observed.
        method: one of :data:`METHODS`.
        num_samples: draws per chain kept.
        warmup_steps: NUTS warm-up (adaptation) iterations per chain, >= 0.
        num_chains: chains (NUTS) or groups of draws (SVI, MAP, exact).
        seed: seed of every random number, ``0 <= seed < 2**32 - num_chains``.
        guide: SVI autoguide name (keys of :data:`GUIDES`).
        num_steps: SVI steps; MAP/exact optimiser iterations.
        learning_rate: initial ClippedAdam learning rate (SVI, minibatch MAP).
        init: SVI start, ``"map"`` or ``"median"``.
        init_values: NUTS start (Stan's ``init``): ``{site: constrained value}`` for some or
            all of ``model.latent_names()`` (the rest start at the prior median), or a list of
            such dicts, one per chain (dispersed starts keep R-hat meaningful), or ``"map"``:
            a MAP-Laplace fit first (``num_steps`` optimiser iterations), each chain starting
            at its own draw of the Laplace approximation and, unless ``inverse_mass_matrix``
            is given, warm-up starting from the Laplace variances as the metric (fewer
            leapfrog steps early in warm-up; all chains begin near one mode, so R-hat cannot
            reveal another). If the Laplace approximation fails (a point estimate), the chains
            start at the default; ``settings["start"]`` in the verdict says which start was
            used. Default: every site at the median of 15 prior draws.
        inverse_mass_matrix: NUTS's starting diagonal inverse mass matrix (Stan's
            ``inv_metric``): ``{site: variances}`` on the site's unconstrained scale and shape
            (e.g. ``(N-1,)`` for a simplex of N), such as posterior variances from an earlier
            fit; sites left out start at 1. Warm-up adapts from it. Default: all 1.
        target_accept_prob: NUTS step-size adaptation target, in (0, 1).
        max_tree_depth: NUTS maximum number of trajectory doublings.
        jit_compile: trace the NUTS potential with the PyTorch JIT.
        full_mass: NUTS adapts a dense mass matrix (the posterior covariance) instead of a
            diagonal one: fewer leapfrog steps when parameters are correlated, at ``O(D^2)``
            memory and ``O(D^3)`` per adaptation window for ``D`` unconstrained dims.
        chain_method: ``"sequential"``, ``"parallel"`` (NUTS chains in worker processes, as
            many as cores) or ``"vectorized"`` (chains in lockstep in this process, one batched
            potential per leapfrog step, for models with a batched fast log joint such as TVA;
            other models run the chains one after another). With a batched log joint,
            ``"parallel"`` shares the chains out over the processes and vectorises each
            share. The draws are the same either way.
        progress_bar: show progress bars.
        num_threads: torch threads during the fit; ``None`` = the rule above.
        max_memory: bytes a full-data likelihood may take.
        num_prior_draws: draws of the ``prior`` and ``prior_predictive`` groups; None = the
            default of :func:`bayesattn.inference.to_inference_data` (500, fewer for an
            expensive likelihood); 0 = no prior groups.

    Returns:
        InferenceData with ``posterior``, ``sample_stats`` (NUTS), ``log_likelihood``,
        ``posterior_predictive``, ``observed_data``, ``constant_data`` (and ``svi_loss``).

    Raises:
        ValueError: unknown ``method``, ``guide``, ``chain_method`` or ``init``; ``method``
            ``"map"`` (or ``"svi"`` started at the MAP) for a model whose density has no
            maximum (``model.map_degenerate()`` gives the reason); ``data`` lacks the
            observation; non-positive ``num_samples``, ``num_chains``,
            ``num_steps``, ``max_tree_depth``; negative or non-integer ``warmup_steps``;
            ``seed`` out of range; ``target_accept_prob`` outside (0, 1); the data exceed
            ``max_memory`` for the method (the message names the limit and the alternative);
            ``init_values`` a string other than ``"map"``, ``"map"`` for a model whose
            density has no mode, or a start that is not a latent site's value (see
            ``init_values``).
        FloatingPointError: SVI/MAP ended at a non-finite log density.
        KeyboardInterrupt: interrupted (parallel workers are terminated first).

    Warns:
        bayesattn.errors.ConvergenceWarning: the verdict is FAILED.
    """
    _check_args(method, chain_method, guide, init, data, model, num_samples, num_chains,
                num_steps, warmup_steps, seed, target_accept_prob, max_tree_depth,
                max_memory)
    map_start = isinstance(init_values, str)
    if map_start:
        _check_map_start(init_values, model)
        init_values = None
    init_values, inverse_mass_matrix = _check_nuts_start(init_values, inverse_mass_matrix,
                                                         model, data, num_chains)
    subsample, full_ok = _plan_memory(model, data, method, max_memory)
    threads = auto_num_threads(model, data) if num_threads is None else num_threads
    with torch_threads(threads):
        pyro.clear_param_store()
        extra: dict = {}
        stats: dict = {}
        start = "prior median" if init_values is None else "init_values"
        if method == "nuts" and map_start:
            init_values, laplace_mass, start = _map_start(model, data, num_chains, seed,
                                                          num_steps, learning_rate)
            if inverse_mass_matrix is None:
                inverse_mass_matrix = laplace_mass
        if method == "nuts":
            draws, stats, settings = run_nuts(
                model, data, num_samples=num_samples, warmup_steps=warmup_steps,
                num_chains=num_chains, seed=seed, target_accept_prob=target_accept_prob,
                max_tree_depth=max_tree_depth, jit_compile=jit_compile, full_mass=full_mass,
                chain_method=chain_method, progress_bar=progress_bar,
                init_values=init_values, inverse_mass_matrix=inverse_mass_matrix)
        elif method == "svi":
            draws, extra["svi_loss"], verdict = fit_svi(
                model, data, guide=guide, num_steps=num_steps, learning_rate=learning_rate,
                num_chains=num_chains, num_samples=num_samples, seed=seed,
                progress_bar=progress_bar, init=init, subsample_size=subsample,
                full_data_ok=full_ok)
        elif method == "map":
            draws, verdict = fit_map(model, data, num_chains=num_chains,
                                     num_samples=num_samples, seed=seed, num_steps=num_steps,
                                     learning_rate=learning_rate, subsample_size=subsample)
        else:
            draws, verdict = fit_exact(model, data, num_chains=num_chains,
                                       num_samples=num_samples, seed=seed,
                                       num_steps=num_steps)
        pointwise = _pointwise_affordable(model, data, draws, subsample)
        idata = to_inference_data(model, data, draws, stats, seed=seed, method=method,
                                  pointwise=pointwise, num_prior_draws=num_prior_draws,
                                  **extra)
        if method == "nuts":
            figures = nuts_figures(idata, model.latent_names(), max_tree_depth)
            settings["jit_compile"] = jit_compile
            settings["start"] = start
            verdict = make_verdict("nuts", nuts_reasons(figures), figures, settings)
        settings = verdict["settings"]
        settings["num_threads"] = threads
        if not pointwise:
            settings["pointwise"] = ("left out: log_likelihood and predictive groups would "
                                     f"cost over {POINTWISE_BUDGET:.0e} multiply-adds")
    store_verdict(idata, verdict)
    return idata


#: multiply-adds the pointwise groups (log_likelihood, predictive) may cost after a minibatch
#: fit; above it they are left out (``idata.attrs["pointwise"] == 0``)
POINTWISE_BUDGET = 2e10


def _pointwise_affordable(model, data, draws, subsample) -> bool:
    """Whether to build the per-draw full-data groups: always after a full-data fit; after a
    minibatch fit only when ``draws x model.likelihood_cost(data)`` is within the budget."""
    if subsample is None:
        return True
    total = max((int(v.shape[0]) * int(v.shape[1]) for v in draws.values()), default=1)
    cost = getattr(model, "likelihood_cost", lambda d: 0)(data)
    return total * cost <= POINTWISE_BUDGET


def _check_args(method, chain_method, guide, init, data, model, num_samples, num_chains,
                num_steps, warmup_steps, seed, target_accept_prob, max_tree_depth, max_memory):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if chain_method not in ("sequential", "parallel", "vectorized"):
        raise ValueError(
            f"unknown chain_method {chain_method!r}; expected 'sequential', 'parallel' or "
            "'vectorized'"
        )
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}; expected one of {', '.join(GUIDES)}")
    if init not in ("map", "median"):
        raise ValueError(f"unknown init {init!r}; expected 'map' or 'median'")
    if method == "map" or (method == "svi" and init == "map"):
        reason = model.map_degenerate()
        if reason:
            what = "method='map'" if method == "map" else "method='svi' with init='map'"
            raise ValueError(f"{what}: this model has no posterior mode ({reason}); use "
                             "method='nuts', or method='svi' with init='median'")
    if data.get(model.obs_name) is None:
        raise ValueError(f"data must contain the observation {model.obs_name!r}")
    for name, n in (("num_samples", num_samples), ("num_chains", num_chains),
                    ("num_steps", num_steps), ("max_tree_depth", max_tree_depth),
                    ("max_memory", max_memory)):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral) \
            or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not 0 <= seed < 2**32 - num_chains:
        raise ValueError(f"seed must be an integer in [0, 2**32 - num_chains), got {seed!r}")
    if not (isinstance(target_accept_prob, numbers.Real) and 0 < target_accept_prob < 1):
        raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob!r}")


def _check_nuts_start(init_values, inverse_mass, model, data, num_chains):
    """``(init_values as one {site: float64 tensor} per chain or None, inverse_mass as
    {site: float64 tensor} or None)``.

    Raises:
        ValueError: ``init_values`` not a dict or a list of ``num_chains`` dicts; a site that is
            not latent; a value that is not finite or not of the site's shape; an
            ``inverse_mass_matrix`` entry not positive and finite, or not of the site's
            unconstrained shape.
    """
    if init_values is None and inverse_mass is None:
        return None, None
    latent = set(model.latent_names())
    trace = _prior_trace(model, data)

    def checked(values, what, unconstrained=False):
        unknown = sorted(set(values) - latent)
        if unknown:
            raise ValueError(f"{what} names {', '.join(map(repr, unknown))}, not latent "
                             f"sites of {type(model).__name__} ({', '.join(sorted(latent))})")
        out = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in values.items()}
        for k, v in out.items():
            node = trace.nodes[k]
            ref = node["value"]
            if unconstrained:
                ref = _unconstrained(trace, k, ref)
            if tuple(v.shape) != tuple(ref.shape):
                raise ValueError(f"{what}[{k!r}] has shape {tuple(v.shape)}; the site has "
                                 f"shape {tuple(ref.shape)}"
                                 + (" (unconstrained)" if unconstrained else ""))
            if not bool(torch.isfinite(v).all()) or unconstrained and not bool((v > 0).all()):
                raise ValueError(f"{what}[{k!r}] must be finite"
                                 + (" and positive (variances)" if unconstrained else ""))
        return out

    per_chain = None
    if init_values is not None:
        per_chain = [init_values] * num_chains if isinstance(init_values, Mapping) \
            else list(init_values)
        if len(per_chain) != num_chains or not all(isinstance(v, Mapping) for v in per_chain):
            raise ValueError(f"init_values must be a dict of site values or a list of "
                             f"{num_chains} such dicts (one per chain)")
        per_chain = [checked(values, "init_values") for values in per_chain]
    if inverse_mass is not None:
        if not isinstance(inverse_mass, Mapping):
            raise ValueError("inverse_mass_matrix must be a dict {site: variances}")
        inverse_mass = checked(inverse_mass, "inverse_mass_matrix", unconstrained=True)
    return per_chain, inverse_mass


def _check_map_start(init_values: str, model) -> None:
    """
    Raises:
        ValueError: ``init_values`` is a string other than ``"map"``, or the model's density
            has no mode (``model.map_degenerate()``).
    """
    if init_values != "map":
        raise ValueError(f"init_values must be a dict, a list of dicts or 'map', got "
                         f"{init_values!r}")
    reason = model.map_degenerate()
    if reason:
        raise ValueError(f"init_values='map': this model has no posterior mode ({reason}); "
                         "leave init_values at its default")


def _map_start(model, data, num_chains, seed, num_steps, learning_rate):
    """``(one {site: value} per chain, {site: unconstrained variance}, start label)`` from a
    MAP-Laplace fit (:func:`.laplace.fit_map`, 400 draws or one per chain if more): chain
    ``c`` starts at draw ``c``, and the draws' variances on each site's unconstrained scale
    are the starting metric. ``(None, None, label)`` when the approximation gave only the
    mode."""
    num = max(400, num_chains)
    draws, verdict = fit_map(model, data, num_chains=1, num_samples=num, seed=seed,
                             num_steps=num_steps, learning_rate=learning_rate)
    if verdict["figures"].get("point_estimate"):
        return None, None, "prior median (the MAP-Laplace start gave a point estimate)"
    trace = _prior_trace(model, data)
    flat = {k: v.reshape(num, *v.shape[2:]).to(torch.float64) for k, v in draws.items()}
    inits = [{k: v[c] for k, v in flat.items()} for c in range(num_chains)]
    mass = {k: _unconstrained(trace, k, v).var(0) for k, v in flat.items()}
    return inits, mass, "map-laplace"


def _prior_trace(model, data):
    """One trace of the program (a prior draw) for the sites' shapes and supports, leaving
    Pyro's handlers and torch's random stream as they were."""
    with pyro.poutine.block(), torch.random.fork_rng():
        return pyro.poutine.trace(model.model).get_trace(**data)


def _unconstrained(trace, site: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` of ``site`` mapped to the unconstrained space NUTS samples (Pyro's
    ``biject_to(support).inv``)."""
    return biject_to(trace.nodes[site]["fn"].support).inv(value)


def _plan_memory(model, data, method, max_memory):
    """``(subsample_size or None, full-data evaluation fits in memory)`` for this fit.

    Raises:
        ValueError: the full-data likelihood exceeds ``max_memory`` and the method cannot
            use minibatches for this model.
    """
    sizer = getattr(model, "full_data_bytes", None)
    need = int(sizer(data)) if callable(sizer) else 0
    n = int(data[model.obs_name].shape[0]) if getattr(data[model.obs_name], "ndim", 0) else 1
    can_batch = bool(getattr(model, "supports_subsampling", False)) and method in ("svi", "map")
    fits = need <= max_memory
    batch = MINIBATCH_SIZE if can_batch and (n > MINIBATCH_ROWS or not fits) else None
    if batch is not None and batch >= n:
        batch = None
    if not fits and batch is None:
        alt = ("method='svi' (minibatch SVI)" if getattr(model, "supports_subsampling", False)
               else "fewer rows (this model does not support minibatches)")
        raise ValueError(
            f"a full-data likelihood of {type(model).__name__} on {n} rows needs about "
            f"{need / 2**30:.1f} GiB, over max_memory={max_memory / 2**30:.1f} GiB for "
            f"method={method!r}; use {alt} or raise max_memory")
    if batch is not None and need * batch / max(n, 1) > max_memory:
        raise ValueError(
            f"even a minibatch of {batch} rows needs about {need * batch / n / 2**30:.1f} GiB, "
            f"over max_memory={max_memory / 2**30:.1f} GiB; use fewer rows or raise max_memory")
    return batch, fits
