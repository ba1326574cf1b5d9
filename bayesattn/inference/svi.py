"""Stochastic variational inference with an autoguide, and its verdict (``method="svi"``).

Defaults chosen so SVI usually works on models with few latents: a full-rank Gaussian guide
(``AutoMultivariateNormal``) whose mean starts at the MAP (found first by
:func:`bayesattn.inference.laplace.find_mode`), ``ClippedAdam`` whose learning rate decays
geometrically to a tenth of ``learning_rate`` over ``num_steps`` (so the iterates settle
instead of jittering at the end), ``Trace_ELBO`` (``TraceEnum_ELBO`` when the model has
enumerated discrete sites, which are then summed out exactly; the guide covers the continuous
sites only). ``init="median"`` starts from the prior median instead (Pyro's usual start).

Verdict (:mod:`bayesattn.inference.diagnostics`): the ELBO plateau test over the loss trace,
and the Pareto ``k`` of ``log p(theta, y) - log q(theta)`` over ``theta ~ q`` (Yao et al.
2018). The weights come from one vectorised pass when the model's density is vectorised
(:func:`vectorised_log_weights`); otherwise each is one single-particle ELBO term, computed by
the same ELBO class as the fit, so enumerated discrete sites are marginalised as in training.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.infer.autoguide as autoguide
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from .convert import enumerated_sites, vectorised_log_joint
from .diagnostics import PARETO_K_MAX, elbo_plateau, make_verdict, pareto_k
from .laplace import Potential, find_mode

__all__ = ["GUIDES", "PARETO_DRAWS", "fit_svi", "vectorised_log_weights"]

GUIDES = {
    "normal": autoguide.AutoNormal,
    "lowrank": autoguide.AutoLowRankMultivariateNormal,
    "mvn": autoguide.AutoMultivariateNormal,
    "delta": autoguide.AutoDelta,
}
#: guide draws used for the Pareto k (at most; fewer when fewer draws are asked for)
PARETO_DRAWS = 1000
#: L-BFGS iterations of the MAP that initialises the guide
INIT_STEPS = 200


def continuous(program):
    """``program`` with its enumerated (discrete) sites hidden, for autoguides."""
    return poutine.block(program, hide_fn=lambda site: site.get("infer", {}).get("enumerate"))


def fit_svi(model, data, *, guide, num_steps, learning_rate, num_chains, num_samples, seed,
            progress_bar, init="map", subsample_size=None, full_data_ok=True):
    """Fit ``model`` by SVI; return draws, the loss trace and the verdict.

    Args:
        guide: a key of :data:`GUIDES`.
        init: ``"map"`` (the guide's mean starts at the MAP) or ``"median"`` (prior median).
        subsample_size: minibatch size passed to ``model.model`` (``None``: full data).
        full_data_ok: whether a full-data evaluation fits in memory (the Pareto k needs it).

    Returns:
        ``(draws {name: (num_chains, num_samples, ...)}, losses (num_steps,), verdict)``.

    Raises:
        ValueError: unknown ``init``.
        FloatingPointError: the ELBO is not finite at the end.
    """
    if init not in ("map", "median"):
        raise ValueError(f"unknown init {init!r}; expected 'map' or 'median'")
    pyro.set_rng_seed(seed)
    latents = model.latent_names()
    settings = {"guide": guide, "num_steps": num_steps, "learning_rate": learning_rate,
                "lr_decay": "geometric to 0.1 x", "init": init,
                "num_draws": num_chains * num_samples, "subsample_size": subsample_size}
    if not latents:
        return {}, np.zeros(0), make_verdict("svi", [], {}, settings)
    run_data = dict(data) if subsample_size is None else {**data,
                                                          "subsample_size": subsample_size}
    program = continuous(model.model)
    if init == "map":
        pot = Potential(model.model, run_data, model.max_plate_nesting,
                        log_joint=model.log_joint_fn(data) if subsample_size is None else None)
        u, _ = find_mode(pot, num_steps=INIT_STEPS if subsample_size is None else num_steps,
                         learning_rate=learning_rate, stochastic=subsample_size is not None)
        start = {k: v.detach() for k, v in pot.constrained(u).items()}
        init_loc = init_to_value(values=start)
    else:
        init_loc = init_to_median(num_samples=15)
    q = GUIDES[guide](program, init_loc_fn=init_loc)
    enum = bool(enumerated_sites(model, data))
    loss_cls = TraceEnum_ELBO if enum else Trace_ELBO
    loss = loss_cls(max_plate_nesting=model.max_plate_nesting) if enum else Trace_ELBO()
    optim = pyro.optim.ClippedAdam({"lr": learning_rate, "lrd": 0.1 ** (1 / num_steps),
                                    "clip_norm": 10.0})
    svi = SVI(model.model, q, optim, loss)
    losses = np.empty(num_steps)
    bar = tqdm(range(num_steps), desc=f"SVI ({guide})", disable=not progress_bar)
    for step in bar:
        losses[step] = svi.step(**run_data)
        if step % 50 == 0 or step == num_steps - 1:
            bar.set_postfix(loss=f"{losses[step]:.3f}")
    if not np.isfinite(losses[-1]):
        raise FloatingPointError("SVI diverged (non-finite ELBO); lower learning_rate")
    total = num_chains * num_samples
    with torch.no_grad():
        samples = Predictive(q, num_samples=total, return_sites=latents)(**run_data)
    draws = {k: samples[k].reshape(num_chains, num_samples, *samples[k].shape[1:])
             for k in latents}

    plateau = elbo_plateau(losses)
    figures = {**plateau, "final_loss": float(losses[-max(1, plateau["window"]):].mean())}
    reasons = []
    if not plateau["plateau"]:
        if plateau["elbo_drop"] is None:
            reasons.append(f"too few steps ({num_steps}) to test the ELBO plateau")
        else:
            reasons.append(
                f"ELBO still falling: {plateau['elbo_drop']:.3g} nats over the last "
                f"{plateau['window']} steps (+- {plateau['elbo_drop_se']:.2g}); raise num_steps")
    if guide == "delta":
        figures["pareto_k"] = None
        figures["point_estimate"] = True
    elif full_data_ok:
        lw = _log_weights(model, q, data, min(total, PARETO_DRAWS), enum)
        k = pareto_k(lw)
        figures.update(pareto_k=k, pareto_draws=len(lw))
        if not k <= PARETO_K_MAX:
            reasons.append(
                f"Pareto k {k:.2f} > {PARETO_K_MAX}: the {guide} guide is an unreliable "
                f"approximation of the posterior (Yao et al. 2018); use method='nuts'")
    else:
        figures["pareto_k"] = None
    return draws, losses, make_verdict("svi", reasons, figures, settings)


def _log_weights(model, guide, data, num, enum):
    """``log p(theta_s, y) - log q(theta_s)`` for ``num`` guide draws ``theta_s``: all at once
    when the model's density is vectorised (:func:`vectorised_log_weights`), else one
    single-particle ELBO term a draw (the same ELBO class as the fit)."""
    if not enum:
        fast = vectorised_log_weights(model, guide, data, num)
        if fast is not None:
            return fast[0].numpy()
    elbo = (TraceEnum_ELBO(max_plate_nesting=model.max_plate_nesting) if enum
            else Trace_ELBO())
    with torch.no_grad():
        return np.array([-elbo.loss(model.model, guide, **data) for _ in range(num)])


def vectorised_log_weights(model, guide, data: dict, num: int):
    """``(log p(theta_s, y) - log q(theta_s) (num,), {name: theta (num, ...)})`` for ``num``
    draws of ``guide`` taken in one pass, or None when that is not possible.

    The guide (an autoguide of the model's continuous sites; Pyro's autoguides vectorise over
    a particle plate, as ``Trace_ELBO(vectorize_particles=True)`` relies on) runs once inside
    a plate of ``num`` at dim ``-(max_plate_nesting + 1)``: its trace gives the draws and each
    draw's ``log q`` (every guide site's log density, its Jacobian terms included, summed over
    all but the draw dim). ``log p`` comes from the model's own vectorised density
    (:func:`~bayesattn.inference.convert.vectorised_log_joint`), never from running the Pyro
    program on a batch of draws, which a model need not support. None when the model has no
    vectorised density, the guide samples other sites than ``model.latent_names()``, or a
    guide site's shape does not lead with the draw dim.
    """
    names = model.latent_names()
    dim = -(model.max_plate_nesting + 1)

    def particles():
        with pyro.plate("_guide_draws", num, dim=dim):
            guide(**data)

    with torch.no_grad():
        one = poutine.trace(guide).get_trace(**data)  # each site's shape in one draw
        trace = poutine.trace(particles).get_trace()
        trace.compute_log_prob()
        log_q = torch.zeros(num, dtype=torch.float64)
        sampled = set()  # the guide's non-auxiliary sites: the latents it draws
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            lp = site["log_prob"]
            if lp.dim() != -dim or lp.shape[0] != num:
                return None
            log_q = log_q + lp.reshape(num, -1).sum(-1).to(log_q.dtype)
            if not site["infer"].get("is_auxiliary"):
                sampled.add(name)
        if sampled != set(names):  # a latent the model's density would not see
            return None
        draws = {}
        for name in names:
            value, shape = trace.nodes[name]["value"], one.nodes[name]["value"].shape
            if value.shape[0] != num or value.numel() != num * shape.numel():
                return None
            draws[name] = value.reshape(num, *shape)
        log_p = vectorised_log_joint(model, data, draws)
    if log_p is None:
        return None
    return log_p.to(torch.float64) - log_q, draws
