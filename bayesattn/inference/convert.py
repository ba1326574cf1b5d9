"""Build ArviZ InferenceData from posterior draws (``az.from_dict``, not ``az.from_pyro``).

``az.from_pyro`` drops the log-likelihood of models with enumerated sites, cannot take SVI,
and is gone from ArviZ 1.x (docs/design.md, "Inference"); this module builds every group
itself, with the layout ArviZ's functions expect (``az.loo``, ``az.loo_pit``, ``az.plot_ppc``,
``az.plot_lm``, ``az.compare``, ``az.bfmi``):

* one observed variable, named ``model.idata_obs_name`` (``"y"`` for every regression model;
  the Pyro site's own name is in ``attrs["observed_site"]``), with the dim ``obs_id``
  (coordinate ``0..N-1``) and, when it has several columns, ``y_dim``; a single column is
  dropped so that ``y`` is ``(obs_id,)``;
* the same name and dims in ``observed_data``, ``log_likelihood``, ``posterior_predictive``
  and ``prior_predictive``; the model's input as the non-index coordinate ``x`` along
  ``obs_id`` when it is one column;
* per-observation outputs (``attention_output``) in ``posterior_predictive``, so that
  ``posterior`` holds parameters only;
* ``sample_stats.lp``, the log joint density of each draw, always.
"""

from __future__ import annotations

import inspect
import warnings

import arviz as az
import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Predictive, TraceEnum_ELBO

from ..models.base import BayesianModel

__all__ = ["to_inference_data", "check_loo_ready", "vectorised_log_joint", "OBS_DIM"]

#: the dim that indexes observations in every group
OBS_DIM = "obs_id"
#: default number of prior draws, and the work budget (multiply-adds) that caps it
NUM_PRIOR_DRAWS = 500
PRIOR_WORK = 2e10


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _from_dict(groups: dict, dims: dict, coords: dict, attrs: dict) -> az.InferenceData:
    """``az.from_dict`` across ArviZ 0.x (one keyword per group) and 1.x (one dict of groups)."""
    groups = {k: v for k, v in groups.items() if v}
    if "posterior" in inspect.signature(az.from_dict).parameters:
        return az.from_dict(**groups, dims=dims, coords=coords, attrs=attrs)
    return az.from_dict(groups, dims=dims, coords=coords,  # pragma: no cover - ArviZ >= 1.0
                        attrs=attrs)


def to_inference_data(model, data: dict, draws: dict, stats: dict, *, seed: int = 0,
                      method: str = "", svi_loss=None, num_prior_draws: int | None = None,
                      pointwise: bool = True, attrs: dict | None = None) -> az.InferenceData:
    """InferenceData from draws ``{name: (chain, draw, ...)}`` of ``model``'s latent sites.

    Groups (``y`` stands for ``model.idata_obs_name``, ``N`` observations, ``C`` chains,
    ``D`` draws; a trailing ``y_dim`` only when the observation has several columns):

    * ``posterior``: the draws ``(chain, draw, ...)`` (parameters only; leading dims named
      by ``model.param_dims()``, e.g. ``condition``, ``subject``);
    * ``sample_stats``: every entry of ``stats`` ``(chain, draw)`` as given, plus ``lp`` (the
      log joint density ``log p(theta, y)`` of each draw, constrained space, discrete
      latents marginalised) when ``stats`` has none;
    * ``log_likelihood``: ``y (chain, draw, obs_id)``, ``model.log_likelihood`` (pointwise,
      discrete latents marginalised; with several columns, the sum over ``y_dim``);
    * ``posterior_predictive``: ``y (chain, draw, obs_id[, y_dim])`` replicated, and the
      model's per-observation outputs (``attention_output``, same dims);
    * ``observed_data``: ``y (obs_id[, y_dim])``;
    * ``constant_data``: the other tensors of ``data`` (first dim ``obs_id`` when it has
      ``N`` rows, then ``<name>_dim``);
    * ``prior`` ``(chain=1, draw=P, ...)`` and ``prior_predictive`` ``y (1, P, obs_id[, y_dim])``
      (``P = num_prior_draws``; ``prior`` only when the model has latents);
    * ``svi_loss`` (``loss (step,)``) when ``svi_loss`` is given.

    ``pointwise=False`` leaves out ``log_likelihood``, ``posterior_predictive``, the prior
    groups and the computed ``lp`` (see below). Every group with ``obs_id`` carries the
    coordinate ``x (obs_id)`` when the model's input is one column
    (``model.input_coordinate``). Attributes: ``inference_library``,
    ``inference_library_version``, ``method``, ``model`` (class name), ``observed_site`` (the
    Pyro site, e.g. ``target`` or ``value``), ``observed_variable`` (``y``), ``num_draws``
    (``C * D``), ``pointwise`` (1 or 0) and ``attrs``.

    Args:
        model: a :class:`bayesattn.models.base.BayesianModel`.
        data: the model's data dict.
        draws: ``{name: tensor (chain, draw, ...)}``; may be empty (all parameters fixed).
        stats: ``{name: array (chain, draw)}``, kept as given (any names).
        seed: seed of the predictive and prior simulations (the global RNG is left alone).
        method: recorded in the attributes.
        svi_loss: optional ``(num_steps,)`` array.
        num_prior_draws: prior draws; None = 500, fewer when the model's likelihood is
            expensive (``500 * model.likelihood_cost(data)`` capped at ``2e10``, at least
            10); 0 = no prior groups.
        pointwise: False skips everything that costs one full-data likelihood pass per draw
            (``D * model.likelihood_cost(data)``): ``log_likelihood``,
            ``posterior_predictive``, the prior groups and the computed ``lp`` (a given ``lp``
            is kept). For data too large for that (``attrs["pointwise"]`` is then 0).
        attrs: extra attributes (netCDF-compatible values: str, int, float).

    Raises:
        ValueError: draws with inconsistent chain/draw dims; ``stats`` not ``(chain, draw)``;
            ``data`` lacks the observation; a data entry named like the observed variable;
            negative ``num_prior_draws``.
    """
    obs_site = model.obs_name
    name = model.idata_obs_name or obs_site
    if data.get(obs_site) is None:
        raise ValueError(f"data must contain the observation {obs_site!r}")
    if name != obs_site and name in data:
        raise ValueError(f"data has an entry {name!r}, the observed variable's name in "
                         f"InferenceData: rename it")
    if num_prior_draws is not None and (not isinstance(num_prior_draws, int)
                                        or num_prior_draws < 0):
        raise ValueError(f"num_prior_draws must be a non-negative integer, got "
                         f"{num_prior_draws!r}")
    shapes = {tuple(v.shape[:2]) for v in draws.values()}
    if len(shapes) > 1:
        raise ValueError(f"draws must share their (chain, draw) dims, got {sorted(shapes)}")
    chains, ndraw = shapes.pop() if shapes else (1, 1)
    total = chains * ndraw
    for key, v in stats.items():
        if tuple(np.shape(v)[:2]) != (chains, ndraw):
            raise ValueError(f"stats[{key!r}] must have (chain, draw) = ({chains}, {ndraw}) "
                             f"leading dims, got {np.shape(v)}")
    flat = {k: v.reshape(total, *v.shape[2:]) for k, v in draws.items()}

    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stats = dict(stats)
        post_extra, per_obs, num_prior, prior = {}, {}, 0, {}
        observed = data[obs_site]
        num_obs = int(observed.shape[0]) if observed.dim() else 1
        if pointwise:
            log_lik = model.log_likelihood(flat, data)
            if log_lik.shape[0] == 1 and total > 1:
                log_lik = log_lik.expand(total, -1)
            num_obs = log_lik.shape[1]
            post_extra, replicated = _predictive(model, data, flat, total, seed)
            per_obs = model.per_observation_deterministics(flat, data)
            if "lp" not in stats:
                stats["lp"] = _numpy(_log_joint(model, data, flat, log_lik)).reshape(chains,
                                                                                    ndraw)
            num_prior = _num_prior_draws(model, data, num_prior_draws)
            if num_prior:
                prior, prior_pred = _prior(model, data, num_prior, seed)

    observed = _numpy(data[obs_site])
    squeeze = observed.ndim == 2 and observed.shape[0] == num_obs and observed.shape[1] == 1

    def obs_layout(x, lead):  # x: (*lead, N, ...) -> numpy, one column dropped
        x = _numpy(x)
        return x.reshape(*x.shape[:lead], num_obs) if squeeze else x

    def shaped(x):  # (C * D, ...) -> (C, D, ...)
        x = _numpy(x)
        return x.reshape(chains, ndraw, *x.shape[1:])

    posterior = {k: shaped(v) for k, v in flat.items()}
    posterior.update({k: shaped(v) for k, v in post_extra.items()})
    observed = obs_layout(observed, 0)
    dims = {name: _obs_dims(name, observed.shape, num_obs)}
    for k, v in model.param_dims().items():  # e.g. "condition", "subject"
        if k in posterior and posterior[k].ndim - 2 >= len(v):
            dims[k] = list(v)
    pp = {name: shaped(obs_layout(replicated, 1))} if pointwise else {}
    for k, v in per_obs.items():
        pp[k] = shaped(obs_layout(v, 1))
        dims[k] = _obs_dims(name, pp[k].shape[2:], num_obs)
    constant = {}
    for k, v in data.items():
        if k != obs_site and isinstance(v, torch.Tensor | np.ndarray):
            constant[k] = _numpy(v)
            dims[k] = _obs_dims(k, constant[k].shape, num_obs)
    groups = {
        "posterior": posterior,
        "sample_stats": {k: np.asarray(v) for k, v in stats.items()},
        "log_likelihood": {name: shaped(log_lik)} if pointwise else {},
        "posterior_predictive": pp,
        "observed_data": {name: observed},
        "constant_data": constant,
    }
    if num_prior:  # (model.latent_names() empty: prior is {} and from_dict drops it)
        groups["prior"] = {k: v[None] for k, v in prior.items()}
        groups["prior_predictive"] = {name: obs_layout(prior_pred, 1)[None]}
    all_attrs = {
        "inference_library": "pyro", "inference_library_version": pyro.__version__,
        "method": method, "model": type(model).__name__, "observed_site": obs_site,
        "observed_variable": name, "num_draws": int(total), "pointwise": int(pointwise),
        **(attrs or {}),
    }
    idata = _from_dict(groups, dims, {OBS_DIM: np.arange(num_obs)}, all_attrs)
    x = model.input_coordinate(data)
    if x is not None and x.shape == (num_obs,):
        _add_input_coordinate(idata, _numpy(x))
    if svi_loss is not None and len(svi_loss):
        import xarray as xr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            idata.add_groups(svi_loss=xr.Dataset({"loss": ("step", np.asarray(svi_loss))}))
    return idata


def _obs_dims(name, shape, num_obs) -> list[str]:
    """``obs_id`` for a leading dim of ``num_obs``, then ``<name>_dim`` (or ``_dim_i``)."""
    if not shape or shape[0] != num_obs:
        return [f"{name}_dim_{i}" for i in range(len(shape))]
    rest = len(shape) - 1
    return [OBS_DIM] + ([f"{name}_dim"] if rest == 1 else [f"{name}_dim_{i}" for i in
                                                            range(rest)])


def _add_input_coordinate(idata, x) -> None:
    """The input ``x (N,)`` as a non-index coordinate along ``obs_id`` in every group."""
    for group in idata.groups():
        ds = idata[group]
        if OBS_DIM in ds.dims and "x" not in ds.variables:
            setattr(idata, group, ds.assign_coords(x=(OBS_DIM, x)))


def _num_prior_draws(model, data, requested) -> int:
    if requested is not None:
        return requested
    cost = max(1, model.likelihood_cost(data))
    return int(max(10, min(NUM_PRIOR_DRAWS, PRIOR_WORK // cost)))


def _prior(model, data, num, seed):
    """``num`` draws of the latents ``{name: (num, ...)}`` and of the observation, in the
    layout of ``data[obs_name]`` (the observed site unconditioned)."""
    torch.manual_seed(seed + 1)
    draws = model.prior_draws(num, data)
    if draws is not None:
        replicated = model.prior_predictive(draws, data, torch.Generator().manual_seed(seed + 2))
        if replicated is not None:
            return {k: _numpy(v) for k, v in draws.items()}, replicated
    names = model.latent_names()
    latents = {k: [] for k in names}
    obs = []
    unconditioned = poutine.uncondition(model.model)
    for _ in range(num):
        trace = poutine.trace(unconditioned).get_trace(**data)
        for k in names:
            latents[k].append(_numpy(trace.nodes[k]["value"]))
        obs.append(model.observation_from_site(trace.nodes[model.obs_name]["value"]))
    return {k: np.stack(v) for k, v in latents.items()}, torch.stack(obs)


def _predictive(model, data, flat, num, seed):
    """Deterministic (non per-observation) sites and the replicated observation, ``(D, ...)``."""
    gen = torch.Generator().manual_seed(seed)
    replicated = model.posterior_predictive(flat, data, gen)
    if replicated is not None:
        return model.deterministics(flat, data), replicated
    pred_data = {**data, model.obs_name: None}
    if flat:
        pred = Predictive(model.model, posterior_samples=flat)
    else:
        pred = Predictive(model.model, num_samples=num)
    out = pred(**pred_data)
    replicated = out.pop(model.obs_name)
    trace = poutine.trace(model.model).get_trace(**data)
    discrete = enumerated_sites(model, data, trace)
    # Predictive may pad sites with plate dims of size 1: restore each site's own shape
    return {k: v.reshape(v.shape[0], *trace.nodes[k]["value"].shape)
            for k, v in out.items() if k not in flat and k not in discrete}, replicated


#: draws per call of a model's batched fast log joint when ``lp`` is computed
_LP_CHUNK = 64


def _log_joint(model, data, flat, log_lik) -> torch.Tensor:
    """``log p(theta_d, y)`` for each draw, ``(D,)``: prior + likelihood, discrete latents summed.

    When the model says ``log_likelihood_sums_to_joint`` and has a vectorised
    ``prior_log_density``: that plus ``log_lik.sum(-1)``. Else, when it has a batched fast
    log joint (``log_joint_batched``, :meth:`~bayesattn.models.base.BayesianModel.log_joint_fn`):
    that, on chunks of draws. Otherwise the prior terms come from a
    trace of the model conditioned on each draw, and the likelihood is ``log_lik.sum(-1)``
    (when the model says so) or the observed site's log-density (or, with enumerated sites,
    ``-TraceEnum_ELBO`` with an empty
    guide, which sums them out).
    """
    num = log_lik.shape[0]
    if model.log_likelihood_sums_to_joint:
        prior = model.prior_log_density(flat) if flat else torch.zeros(1, dtype=torch.float64)
        if prior is not None:
            return prior.expand(num) + log_lik.sum(-1)
    batched = _batched_log_joint(model, data, flat)
    if batched is not None:
        return batched
    discrete = enumerated_sites(model, data)
    out = []
    for d in range(num):
        one = {k: v[d] for k, v in flat.items()}
        conditioned = poutine.condition(model.model, data=one)
        if discrete:
            elbo = TraceEnum_ELBO(max_plate_nesting=model.max_plate_nesting)
            out.append(-torch.as_tensor(elbo.loss(conditioned, _empty_guide, **data)))
            continue
        trace = poutine.trace(conditioned).get_trace(**data)
        lp = torch.zeros((), dtype=torch.float64)
        for site_name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site_name == model.obs_name and model.log_likelihood_sums_to_joint:
                lp = lp + log_lik[d].sum()
            else:
                lp = lp + site["fn"].log_prob(site["value"]).sum()
        out.append(lp)
    return torch.stack(out)


def _batched_log_joint(model, data, flat) -> torch.Tensor | None:
    """``log p(theta_d, y)`` ``(D,)`` from the model's batched fast log joint, on chunks of
    draws; None when it has none (or ``flat`` lacks a latent)."""
    names = model.latent_names()
    if not (model.log_joint_batched and flat and set(names) <= set(flat)):
        return None
    fast = model.log_joint_fn(data)  # tested equal to the traced density; batched
    if fast is None:
        return None
    num = next(iter(flat.values())).shape[0]
    with torch.no_grad():
        return torch.cat([fast({k: torch.as_tensor(flat[k][i:i + _LP_CHUNK]) for k in names})
                          for i in range(0, num, _LP_CHUNK)])


def vectorised_log_joint(model, data: dict, draws: dict) -> torch.Tensor | None:
    """``log p(theta_d, y)`` ``(D,)`` of draws ``{name: (D, ...)}`` of every latent, from the
    model's vectorised densities only: its ``prior_log_density`` plus its own
    ``log_likelihood`` summed (models whose pointwise terms sum to the joint), or its batched
    fast log joint. None when it has neither (the Pyro program would have to be traced once
    per draw) or has enumerated discrete sites."""
    if not set(model.latent_names()) <= set(draws) or enumerated_sites(model, data):
        return None
    own_log_lik = type(model).log_likelihood is not BayesianModel.log_likelihood
    if model.log_likelihood_sums_to_joint and own_log_lik:
        prior = model.prior_log_density(draws)
        if prior is not None:
            return prior + model.log_likelihood(draws, data).sum(-1).to(prior.dtype)
    return _batched_log_joint(model, data, draws)


def _empty_guide(*args, **kwargs):
    """A guide with no sites (every continuous latent is conditioned on)."""


def enumerated_sites(model, data, trace=None) -> set:
    """Names of the model's sample sites marked for enumeration (discrete latents)."""
    trace = trace or poutine.trace(model.model).get_trace(**data)
    return {name for name, site in trace.nodes.items()
            if site["type"] == "sample" and site.get("infer", {}).get("enumerate")}


def check_loo_ready(idata, name: str = "model") -> None:
    """Check that PSIS-LOO (``az.loo``, ``az.compare``) can run on ``idata``.

    Raises:
        ValueError: no ``log_likelihood`` group; a single posterior draw (a point estimate
            such as MAP: PSIS needs many draws; refit with NUTS, SVI or a Laplace
            approximation); non-finite pointwise log-likelihoods.
    """
    if "log_likelihood" not in idata.groups():
        raise ValueError(f"{name}: no log_likelihood group, so no PSIS-LOO")
    ll = idata.log_likelihood
    total = ll.sizes.get("chain", 1) * ll.sizes.get("draw", 1)
    if total < 2:
        raise ValueError(
            f"{name}: one posterior draw (a point estimate, method "
            f"{idata.attrs.get('method', '?')!r}); PSIS-LOO needs many posterior draws: fit "
            "with NUTS, SVI or a Laplace approximation"
        )
    for var, arr in ll.data_vars.items():
        if not np.isfinite(arr.values).all():
            raise ValueError(f"{name}: log_likelihood[{var!r}] has non-finite values")
