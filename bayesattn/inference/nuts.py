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

import math
import multiprocessing
import os
import warnings
from typing import NamedTuple

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad
from torch.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    ExpTransform,
    StickBreakingTransform,
    _InverseTransform,
)
from tqdm.std import tqdm as std_tqdm

from ..interrupts import init_worker, starting_workers
from .lockstep import Lockstep, batched_value_and_grad

__all__ = ["RecordingNUTS", "flat_potential", "potential_from_log_joint", "run_nuts",
           "safe_potential"]

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

    if hasattr(potential_fn, "value_and_grad"):  # a chain in lockstep: already safe
        wrapped.value_and_grad = potential_fn.value_and_grad
    return wrapped


class RecordingNUTS(NUTS):
    """:class:`pyro.infer.NUTS` that keeps per-transition statistics in :attr:`records`.

    Same arguments as :class:`pyro.infer.NUTS`. After :meth:`pyro.infer.MCMC.run`,
    ``records`` holds one dict per transition (warm-up included) with the keys of
    :data:`STAT_NAMES`; :meth:`stats` returns the last ``num_samples`` as arrays.

    ``initial_inverse_mass`` (``{site: unconstrained variances, shaped as the site}``; sites
    left out keep Pyro's 1) replaces the starting diagonal of the inverse mass matrix (Stan's
    ``inv_metric``); the step size is then searched again, and warm-up adapts from there.
    """

    def __init__(self, *args, initial_inverse_mass: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_inverse_mass = initial_inverse_mass
        self.records: list[dict] = []
        self._nesting = 0
        self._current: dict | None = None

    def _initialize_model_properties(self, model_args, model_kwargs):
        super()._initialize_model_properties(model_args, model_kwargs)
        self.potential_fn = safe_potential(self.potential_fn)

    def setup(self, warmup_steps, *args, **kwargs):
        super().setup(warmup_steps, *args, **kwargs)
        given = self.initial_inverse_mass
        if not given or not self.initial_params:
            return
        (key, current), = self.inverse_mass_matrix.items()  # one block: every site
        params = self.initial_params
        diag = torch.cat([torch.as_tensor(given[k], dtype=current.dtype).reshape(-1) if k in given
                          else torch.ones(params[k].numel(), dtype=current.dtype)
                          for k in key])  # Pyro's block order: the key's (sorted) sites
        self.mass_matrix_adapter.inverse_mass_matrix = {key: diag if current.dim() == 1
                                                        else torch.diag(diag)}
        self._adapter.reset_step_size_adaptation(params)

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
             max_tree_depth, jit_compile, chain_method, progress_bar, full_mass=False,
             init_values=None, inverse_mass_matrix=None):
    """Run ``num_chains`` NUTS chains of ``model`` on ``data``.

    Chain ``c`` uses seed ``seed + c``. ``chain_method="parallel"`` runs the chains in spawned
    worker processes (one torch thread each). Workers ignore SIGINT; on Ctrl-C the parent
    terminates the pool at once and re-raises :class:`KeyboardInterrupt`.

    A model whose fast log joint takes a batch of parameter vectors (``log_joint_batched``)
    runs several chains in one process in lockstep (:mod:`.lockstep`), one batched potential
    evaluation per leapfrog step: all of them with ``"vectorized"``, and with ``"parallel"``
    the chains shared out over as many processes as there are cores. A chain's draws are the
    same whichever way it runs (its own seed and random state; up to the rounding of the
    batched evaluation). Other models run ``"vectorized"`` chains one after another.
    ``init_values``: None (every chain starts at the prior median) or one ``{site: value}``
    per chain (sites left out start at the prior median). ``inverse_mass_matrix``: None or
    the starting diagonal ``{site: unconstrained variances}`` (:class:`RecordingNUTS`).

    Returns:
        ``(draws {name: tensor (chain, draw, ...)}, stats {name: array (chain, draw)},
        settings dict)``.

    Raises:
        KeyboardInterrupt: interrupted (the worker processes are gone when it propagates).
    """
    jobs = [_Job(model, data, num_samples, warmup_steps, seed + c, target_accept_prob,
                 max_tree_depth, jit_compile, progress_bar, full_mass, c,
                 None if init_values is None else init_values[c], inverse_mass_matrix)
            for c in range(num_chains)]
    workers = min(num_chains, os.cpu_count() or 1)
    batched = getattr(model, "log_joint_batched", False)
    if chain_method == "vectorized" and batched:
        groups = [jobs]
    elif chain_method == "parallel" and batched:  # as many processes as cores, chains shared
        groups = [jobs[g::workers] for g in range(workers)]
    else:
        groups = [[job] for job in jobs]
    if chain_method == "parallel" and len(groups) > 1:
        grouped = _run_parallel(groups, min(workers, len(groups)))
    else:
        grouped = [_run_group(group) for group in groups]
    by_chain = dict(pair for group in grouped for pair in group)
    results = [by_chain[c] for c in range(num_chains)]
    draws = {k: torch.stack([r[0][k] for r in results]) for k in results[0][0]}
    stats = {k: np.stack([r[1][k] for r in results]) for k in results[0][1]}
    settings = {"num_chains": num_chains, "warmup_steps": warmup_steps,
                "num_samples": num_samples, "target_accept_prob": target_accept_prob,
                "max_tree_depth": max_tree_depth, "chain_method": chain_method,
                "full_mass": full_mass}
    return draws, stats, settings


class _Job(NamedTuple):
    """One chain's settings (picklable: sent to worker processes)."""

    model: object
    data: dict
    num_samples: int
    warmup_steps: int
    seed: int
    target_accept_prob: float
    max_tree_depth: int
    jit: bool
    progress_bar: bool
    full_mass: bool
    chain: int
    init: dict | None = None
    inverse_mass: dict | None = None


def _worker_init(parent: int):
    init_worker(parent)
    torch.set_num_threads(1)


def _run_parallel(groups, workers):
    ctx = multiprocessing.get_context("spawn")
    pool = None
    try:
        with starting_workers():  # a Ctrl-C while the workers start is raised after it
            pool = ctx.Pool(workers, initializer=_worker_init, initargs=(os.getpid(),))
        pending = pool.map_async(_run_group, groups)
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


def potential_from_log_joint(log_joint, transforms, site_ndims: dict | None = None):
    """The potential ``U(z) = -(log p(x, data) + sum_k log|det dx_k/dz_k|)``, ``x_k =
    T_k^{-1}(z_k)``, of a log joint density of constrained values: the potential Pyro builds
    from a traced model, with the model's transforms ``T_k`` (constrained -> unconstrained, as
    :func:`pyro.infer.mcmc.util.initialize_model` returns them).

    ``site_ndims`` (``{site: dims of one value}``) makes the potential batched: values
    ``(*B, *site)`` give ``U (*B,)`` (the log joint must accept leading dims, as
    :meth:`~bayesattn.models.neuro.tva.TVA.log_joint_fn` does); without it ``U`` is a scalar.
    """

    def potential(z):
        x = {k: transforms[k].inv(v) for k, v in z.items()}
        lp = log_joint(x)
        for k, v in z.items():
            ladj = transforms[k].log_abs_det_jacobian(x[k], v)
            if site_ndims is None:
                ladj = ladj.sum()
            else:
                ladj = ladj.reshape(*v.shape[: v.dim() - site_ndims[k]], -1).sum(-1)
            lp = lp - ladj
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


def _run_group(jobs) -> list:
    """``[(chain, chain result)]`` of chains run together: one alone (:func:`_run_chain`), or
    several in lockstep through the model's batched log joint (:class:`.lockstep.Lockstep`)."""
    if len(jobs) == 1:
        return [(jobs[0].chain, _run_chain(jobs[0]))]
    model, data = jobs[0].model, jobs[0].data
    log_joint = model.log_joint_fn(data)
    if log_joint is None:
        return [(job.chain, _run_chain(job)) for job in jobs]
    with torch.random.fork_rng():  # the transforms and site shapes; the chains' seeds untouched
        pyro.set_rng_seed(jobs[0].seed)
        initial, _, transforms, _ = initialize_model(
            model.model, model_kwargs=data, max_plate_nesting=model.max_plate_nesting)
    size = len(jobs)
    flat, batched = flat_potential(log_joint, initial, transforms)
    if jobs[0].jit:
        batched = _jit_traced(batched, {_FLAT: flat.pack(initial).expand(size, flat.size)})
    single = safe_potential(flat_potential(log_joint, initial, transforms)[1])

    def fallback(z):
        grads, u = potential_grad(single, dict(z))
        return u, [grads[_FLAT]]

    def evaluate(requests):
        return batched_value_and_grad(batched, [_FLAT], requests, size, fallback)

    def chain(job):
        return lambda potential: _run_chain(job, potential)

    states = []
    with torch.random.fork_rng():
        for job in jobs:
            torch.manual_seed(job.seed)
            states.append(torch.get_rng_state())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        results = Lockstep(evaluate, [_FLAT], [chain(job) for job in jobs], states).run()
    return [(job.chain, r) for job, r in zip(jobs, results, strict=True)]


#: The one site NUTS sees when it samples a fast log joint (:class:`_Flat`).
_FLAT = "_flat"


def flat_potential(log_joint, initial: dict, transforms: dict):
    """``(flat, U)``: the :class:`_Flat` layout of the sites of ``initial`` (``{site:
    unconstrained value}``) and the potential of ``log_joint``
    (:func:`potential_from_log_joint` with ``transforms``) as a function of the one flat
    site: ``{_FLAT: (D,)} -> U`` or, batched (the log joint must accept leading dims),
    ``{_FLAT: (B, D)} -> U (B,)``.

    Sites on ``(lb, inf)`` (Pyro's ``biject_to(positive)`` / ``biject_to(greater_than(lb))``,
    ``x = lb + exp(z)``, ``log|dx/dz| = z``) and on the real line are mapped together, a few
    operations on the whole vector instead of a dozen per site through
    :class:`~torch.distributions.transforms.ComposeTransform` (which recomputes each part for
    its Jacobian); other sites (e.g. a simplex) go through their own transform. The density
    is the same as :func:`potential_from_log_joint`'s, summed in another order. A simplex
    (Pyro's ``biject_to(simplex)``, stick-breaking) skips recomputing its offsets
    (:class:`_StickBreaking`)."""
    flat = _Flat(initial)
    shifts, other = [], {}
    for k, shape in zip(flat.names, flat.shapes, strict=True):
        kind = _elementwise(transforms[k])
        if kind is None:
            other[k] = transforms[k]
            shifts.append(torch.full(shape, math.nan, dtype=initial[k].dtype).reshape(-1))
        else:
            lb = torch.as_tensor(kind, dtype=initial[k].dtype)
            shifts.append(torch.broadcast_to(lb, shape).reshape(-1))
    simplex = {k: _StickBreaking(flat.shapes[flat.names.index(k)][-1], initial[k].dtype)
               for k, t in other.items() if _is_stick_breaking(t)}
    shift = torch.cat(shifts)  # lb per element: -inf for the real line, NaN for other sites
    shifted = torch.isfinite(shift)
    lb = torch.where(shifted, shift, torch.zeros_like(shift))

    def potential(z):
        z = z[_FLAT]
        safe = torch.where(shifted, z, torch.zeros_like(z))  # exp only where it is used
        values = flat.unpack(torch.where(shifted, safe.exp() + lb, z))
        log_jac = (safe * shifted).sum(-1)  # log|dx/dz| = z on the (lb, inf) elements
        if other:
            lead, unconstrained = tuple(z.shape[:-1]), flat.unpack(z)
            for k, t in other.items():
                if k in simplex:
                    values[k], ladj = simplex[k](unconstrained[k])
                else:
                    values[k] = t.inv(unconstrained[k])
                    ladj = -t.log_abs_det_jacobian(values[k], unconstrained[k])
                log_jac = log_jac + ladj.reshape(*lead, -1).sum(-1)
        return -(log_joint(values) + log_jac)

    return flat, potential


def _is_stick_breaking(transform) -> bool:
    """Whether ``transform`` (constrained -> unconstrained) inverts torch's stick-breaking."""
    return (isinstance(transform, _InverseTransform)
            and type(transform._inv) is StickBreakingTransform)


class _StickBreaking:
    """torch's :class:`~torch.distributions.transforms.StickBreakingTransform`, ``(*B, K - 1)``
    unconstrained -> ``(*B, K)`` on the simplex, and its ``log|det J|`` ``(*B,)``: the same
    formulas (Stan's stick-breaking, offsets ``log(K - i)``, ``i = 1..K-1``), the offsets
    computed once instead of twice a call."""

    def __init__(self, size: int, dtype):  # size: K - 1, the unconstrained length
        self.log_offset = (size + 1 - torch.ones(size, dtype=dtype).cumsum(-1)).log()
        finfo = torch.finfo(dtype)
        self.tiny, self.top = finfo.tiny, 1.0 - finfo.eps

    def __call__(self, u):
        x = u - self.log_offset
        z = torch.clamp(torch.sigmoid(x), min=self.tiny, max=self.top)
        y = F.pad(z, [0, 1], value=1) * F.pad((1 - z).cumprod(-1), [1, 0], value=1)
        # 1 - sigmoid(x) = exp(-x) sigmoid(x), as torch writes the Jacobian
        return y, (-x + F.logsigmoid(x) + y[..., :-1].log()).sum(-1)


def _elementwise(transform):
    """For ``transform`` (constrained -> unconstrained, as Pyro's ``initialize_model`` gives):
    ``-inf`` for the identity (the real line), ``lb`` (number or tensor) for ``x -> log(x -
    lb)`` (``biject_to(greater_than(lb)).inv``, ``lb = 0``: ``positive``), else None."""
    parts = list(transform.parts) if isinstance(transform, ComposeTransform) else [transform]
    if not parts:
        return -math.inf
    last = parts[-1]
    if not (isinstance(last, _InverseTransform) and type(last._inv) is ExpTransform):
        return None
    if len(parts) == 1:
        return 0.0
    first = parts[0]
    if (len(parts) == 2 and isinstance(first, _InverseTransform)
            and type(first._inv) is AffineTransform and first._inv.event_dim == 0):
        loc, scale = first._inv.loc, first._inv.scale
        if bool(torch.all(torch.as_tensor(scale) == 1)):
            return loc
    return None


class _Flat:
    """The unconstrained sites ``{name: (*site)}`` as one vector ``(D,)`` (sorted names, each
    flattened), so that Pyro's NUTS updates, concatenates and splits one tensor a leapfrog
    step instead of one per site (a third of its own time on an 11-parameter TVA)."""

    def __init__(self, example: dict):
        self.names = sorted(example)
        self.shapes = [tuple(example[k].shape) for k in self.names]
        self.sizes = [int(example[k].numel()) for k in self.names]
        self.size = sum(self.sizes)

    def pack(self, values: dict) -> torch.Tensor:
        """``{name: (*B, *site)}`` -> ``(*B, D)``."""
        lead = values[self.names[0]].shape[: values[self.names[0]].dim() - len(self.shapes[0])]
        return torch.cat([values[k].reshape(*lead, n) for k, n in zip(self.names, self.sizes,
                                                                       strict=True)], -1)

    def unpack(self, flat: torch.Tensor) -> dict:
        """``(*B, D)`` -> ``{name: (*B, *site)}``."""
        lead = tuple(flat.shape[:-1])
        parts = torch.split(flat, self.sizes, -1)
        return {k: v.reshape(lead + shape)
                for k, v, shape in zip(self.names, parts, self.shapes, strict=True)}

    def potential(self, potential):
        """``{_FLAT: (*B, D)} -> U``: ``potential`` of the unpacked sites."""
        return lambda z: potential(self.unpack(z[_FLAT]))


def _run_chain(job, potential=None):
    """One NUTS chain: ``(draws {name: (num_samples, ...)}, per-draw stats)``.

    A model whose :meth:`~bayesattn.models.base.BayesianModel.log_joint_fn` gives a fast log
    joint is sampled through it (same density, same transforms and initial point as the traced
    program); other models through Pyro's trace of :meth:`model`. ``potential`` (``z -> U``)
    replaces the fast log joint's (a chain in lockstep).
    """
    (model, data, num_samples, warmup_steps, seed, target, max_tree_depth, jit,
     progress_bar, full_mass, chain, init, inverse_mass) = job
    pyro.set_rng_seed(seed)
    init_strategy = init_to_median(num_samples=15)
    if init:
        init_strategy = init_to_value(values=init, fallback=init_strategy)
    log_joint = model.log_joint_fn(data) if potential is None else None
    if log_joint is None and potential is None:
        kernel = RecordingNUTS(model.model, max_plate_nesting=model.max_plate_nesting,
                               target_accept_prob=target, max_tree_depth=max_tree_depth,
                               init_strategy=init_strategy, jit_compile=jit,
                               ignore_jit_warnings=True, full_mass=full_mass,
                               initial_inverse_mass=inverse_mass)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=1,
                    disable_progbar=not progress_bar)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            mcmc.run(**data)
        samples = mcmc.get_samples()
        return {k: samples[k] for k in model.latent_names()}, kernel.stats(num_samples)
    initial, _, transforms, _ = initialize_model(
        model.model, model_kwargs=data, max_plate_nesting=model.max_plate_nesting,
        init_strategy=init_strategy)
    flat, own = flat_potential(log_joint, initial, transforms)
    if potential is None:
        potential = own
        if jit:
            potential = _jit_traced(potential, {_FLAT: flat.pack(initial)})
    if inverse_mass:
        inverse_mass = {_FLAT: flat.pack({k: torch.as_tensor(inverse_mass[k], dtype=v.dtype)
                                          if k in inverse_mass else torch.ones_like(v)
                                          for k, v in initial.items()})}
    kernel = RecordingNUTS(potential_fn=safe_potential(potential),
                           transforms={_FLAT: torch.distributions.transforms.identity_transform},
                           target_accept_prob=target, max_tree_depth=max_tree_depth,
                           full_mass=full_mass, initial_inverse_mass=inverse_mass)
    kernel.initial_params = {_FLAT: flat.pack(initial)}
    samples = flat.unpack(_sample_potential(kernel, warmup_steps, num_samples,
                                            f"chain {chain}" if progress_bar else None)[_FLAT])
    return ({k: transforms[k].inv(samples[k]) for k in model.latent_names()},
            kernel.stats(num_samples))


def _sample_potential(kernel, warmup_steps: int, num_samples: int, bar: str | None) -> dict:
    """Constrained draws ``{site: (num_samples, ...)}`` of a kernel built on a potential, by
    Pyro's own loop (``pyro.infer.mcmc.api._gen_samples``: ``setup``, ``sample`` per
    iteration, ``cleanup``) but without :class:`~pyro.infer.MCMC`'s ``poutine.block``, whose
    one handler instance cannot be entered by two chains in lockstep. ``bar``: the progress
    bar's label (None = no bar). Distribution arguments are not validated meanwhile: the
    potential builds no distribution, and Pyro's sampler builds a Bernoulli and a Uniform a
    leapfrog step."""
    with pyro.validation_enabled(False):
        return _sample_loop(kernel, warmup_steps, num_samples, bar)


def _sample_loop(kernel, warmup_steps: int, num_samples: int, bar: str | None) -> dict:
    kernel.setup(warmup_steps)
    params = kernel.initial_params
    kept = []
    with std_tqdm(total=warmup_steps + num_samples, desc=bar, disable=bar is None,
                  mininterval=0.5) as progress:
        for i in range(warmup_steps + num_samples):
            params = kernel.sample(params)
            if i >= warmup_steps:
                kept.append(params)
            if bar is not None:
                progress.set_postfix(kernel.logging(), refresh=False)
                progress.update()
    kernel.cleanup()
    return {k: kernel.transforms[k].inv(torch.stack([p[k] for p in kept])) for k in params}
