"""Build ArviZ InferenceData from posterior draws (``az.from_dict``, not ``az.from_pyro``).

``az.from_pyro`` drops the log-likelihood of models with enumerated sites, cannot take SVI,
and is gone from ArviZ 1.x (DESIGN.md section 6); this module builds every group itself.
"""

from __future__ import annotations

import inspect
import warnings

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import Predictive

__all__ = ["to_inference_data"]


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _from_dict(groups: dict, dims: dict, attrs: dict) -> az.InferenceData:
    """``az.from_dict`` across ArviZ 0.x (one keyword per group) and 1.x (one dict of groups)."""
    groups = {k: v for k, v in groups.items() if v}
    if "posterior" in inspect.signature(az.from_dict).parameters:
        return az.from_dict(**groups, dims=dims, attrs=attrs)
    return az.from_dict(groups, dims=dims, attrs=attrs)  # pragma: no cover - ArviZ >= 1.0


def to_inference_data(model, data: dict, draws: dict, stats: dict, *, seed: int = 0,
                      method: str = "", svi_loss=None) -> az.InferenceData:
    """InferenceData from draws ``{name: (chain, draw, ...)}`` of ``model``'s latent sites.

    Groups: ``posterior`` (the draws plus the model's deterministic sites, e.g.
    ``attention_output (chain, draw, L, Ev)``), ``sample_stats`` (``stats``, per draw),
    ``log_likelihood`` (``model.log_likelihood``: pointwise, discrete latents marginalised),
    ``posterior_predictive`` (the observation replicated per draw), ``observed_data`` and
    ``constant_data`` (the other entries of ``data``). ``svi_loss`` (the ELBO loss per step)
    becomes the extra group ``svi_loss``.

    Args:
        model: a :class:`bayesattn.models.base.BayesianModel`.
        data: the model's data dict.
        draws: ``{name: tensor (chain, draw, ...)}``; may be empty (all parameters fixed).
        stats: ``{name: array (chain, draw)}``.
        seed: seed of the posterior-predictive simulation.
        method: recorded in the attributes.
        svi_loss: optional ``(num_steps,)`` array.

    Raises:
        ValueError: draws with inconsistent chain/draw dims.
    """
    obs = model.obs_name
    shapes = {tuple(v.shape[:2]) for v in draws.values()}
    if len(shapes) > 1:
        raise ValueError(f"draws must share their (chain, draw) dims, got {sorted(shapes)}")
    chains, ndraw = shapes.pop() if shapes else (1, 1)
    flat = {k: v.reshape(chains * ndraw, *v.shape[2:]) for k, v in draws.items()}

    with torch.no_grad():
        log_lik = model.log_likelihood(flat, data)
        if log_lik.shape[0] == 1 and chains * ndraw > 1:
            log_lik = log_lik.expand(chains * ndraw, -1)
        extra_post, replicated = _predictive(model, data, flat, chains * ndraw, seed)

    def shaped(x):
        x = _numpy(x)
        return x.reshape(chains, ndraw, *x.shape[1:])

    posterior = {k: shaped(v) for k, v in flat.items()}
    posterior.update({k: shaped(v) for k, v in extra_post.items()})
    observed = _numpy(data[obs])
    obs_dims = [f"{obs}_dim_{i}" for i in range(observed.ndim)]
    dims = {obs: obs_dims, "attention_output": obs_dims}
    constant = {k: _numpy(v) for k, v in data.items()
                if k != obs and isinstance(v, torch.Tensor | np.ndarray)}
    groups = {
        "posterior": posterior,
        "sample_stats": {k: np.asarray(v) for k, v in stats.items()},
        "log_likelihood": {obs: shaped(log_lik)},
        "posterior_predictive": {obs: shaped(replicated)},
        "observed_data": {obs: observed},
        "constant_data": constant,
    }
    attrs = {"inference_library": "pyro", "inference_library_version": pyro.__version__,
             "method": method, "model": type(model).__name__}
    idata = _from_dict(groups, dims, attrs)
    if svi_loss is not None and len(svi_loss):
        import xarray as xr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            idata.add_groups(svi_loss=xr.Dataset({"loss": ("step", np.asarray(svi_loss))}))
    return idata


def _predictive(model, data, flat, num, seed):
    """Deterministic sites and the replicated observation, ``(D, ...)`` each."""
    gen = torch.Generator().manual_seed(seed)
    if hasattr(model, "posterior_predictive"):
        return {}, model.posterior_predictive(flat, data, gen)
    pyro.set_rng_seed(seed)
    pred_data = {**data, model.obs_name: None}
    if flat:
        pred = Predictive(model.model, posterior_samples=flat)
    else:
        pred = Predictive(model.model, num_samples=num)
    out = pred(**pred_data)
    replicated = out.pop(model.obs_name)
    trace = pyro.poutine.trace(model.model).get_trace(**data)
    discrete = enumerated_sites(model, data, trace)
    # Predictive may pad sites with plate dims of size 1: restore each site's own shape
    return {k: v.reshape(v.shape[0], *trace.nodes[k]["value"].shape)
            for k, v in out.items() if k not in flat and k not in discrete}, replicated


def enumerated_sites(model, data, trace=None) -> set:
    """Names of the model's sample sites marked for enumeration (discrete latents)."""
    trace = trace or pyro.poutine.trace(model.model).get_trace(**data)
    return {name for name, site in trace.nodes.items()
            if site["type"] == "sample" and site.get("infer", {}).get("enumerate")}
