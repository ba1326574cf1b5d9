"""``method="exact"``: closed-form posteriors, with type-II MAP for hyperparameters.

What is exact and what is optimised, per model:

* Every hyperparameter fixed (no prior): the model's ``exact_posterior`` (closed form; e.g.
  ``W`` of least squares), nothing optimised.
* :class:`~bayesattn.models.LeastSquaresAttentionModel` with priors on ``prior_scale`` /
  ``noise``: type-II maximum a posteriori of the hyperparameters, i.e. the mode of
  ``p(h) p(y | h)`` with ``W`` integrated out, ``y_c ~ N(0, prior_scale^2 K K^T + noise^2 I)``
  per value column (the evidence of Bayesian linear regression; Bishop 2006, eq. 3.86;
  MacKay 1992), then ``W`` drawn from its exact conditional posterior
  ``p(W | y, h*)`` (Bishop eqs. 3.53-3.54). The hyperparameter draws are the point ``h*``.
* Any other model with priors (GP, kernel and softmax attention): its program already
  integrates every other latent (GP: ``f``; kernel/softmax: the key choice ``z``), so the
  type-II MAP is the mode of its hyperparameters' posterior; nothing is left to sample and
  the result is one draw at ``h*`` (a point estimate).

Modes are taken in Pyro's unconstrained space (as :mod:`bayesattn.inference.laplace`, whose
L-BFGS optimiser this uses). Verdict: converged when the Hessian of the negative log
marginal density is positive definite at ``h*`` and the Newton decrement is at most
:data:`bayesattn.inference.laplace.NEWTON_TOL` nats; the figures report the gradient norm.
"""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import torch

from ..models import LeastSquaresAttentionModel
from ..models.base import check_memory, hyperparameter
from .diagnostics import make_verdict
from .laplace import Potential, find_mode, laplace_draws, mode_reasons

__all__ = ["fit_exact", "least_squares_evidence_model"]


def least_squares_evidence_model(model: LeastSquaresAttentionModel):
    """The least-squares program with ``W`` integrated out (a Pyro program ``(key, value)``).

    ``value[:, c] ~ N(0, prior_scale^2 K K^T + noise^2 I_S)`` independently per column ``c``,
    as a low-rank-plus-diagonal Gaussian (Woodbury identity inside
    ``LowRankMultivariateNormal``); key ``(S, E)``, value ``(S, Ev)``.
    """

    def program(key, value=None):
        check_memory(key, value)
        ps = hyperparameter("prior_scale", model.prior_scale, dtype=key.dtype)
        noise = hyperparameter("noise", model.noise, dtype=key.dtype)
        S = key.shape[0]
        ev = 1 if value is None else value.shape[1]
        evidence = dist.LowRankMultivariateNormal(
            torch.zeros(S, dtype=key.dtype), key * ps, (noise**2).expand(S))
        pyro.sample("value", evidence.expand([ev]).to_event(1),
                    obs=None if value is None else value.T)

    return program


def fit_exact(model, data, *, num_chains, num_samples, seed, num_steps=500):
    """Draws ``{name: (chain, draw, ...)}`` and the verdict for ``method="exact"``.

    See the module docstring for what each model gets. A model outside the package with
    priors and no ``exact_posterior`` is treated like GP/kernel/softmax: the mode of all its
    latents in one draw (verdict figures mark it ``point_estimate``).

    Raises:
        FloatingPointError: the optimiser ended at a non-finite log density.
    """
    latents = model.latent_names()
    total = num_chains * num_samples
    gen = torch.Generator().manual_seed(seed)
    settings = {"num_draws": total}
    if not latents:
        return {}, make_verdict("exact", [], {}, {**settings, "type": "fixed hyperparameters"})
    try:
        flat = model.exact_posterior(data, total, gen)
    except NotImplementedError:
        flat = None
    if flat is not None:
        draws = {k: v.reshape(num_chains, num_samples, *v.shape[1:]) for k, v in flat.items()}
        return draws, make_verdict("exact", [], {}, {**settings, "type": "closed form"})

    if isinstance(model, LeastSquaresAttentionModel):
        program, integrated = least_squares_evidence_model(model), ["W"]
    else:
        program, integrated = model.model, []
    hyper = [k for k in latents if k not in integrated]
    settings.update(type="type-II MAP of " + ", ".join(hyper)
                    + (f", exact {', '.join(integrated)}" if integrated else ""),
                    optimizer="lbfgs", num_steps=num_steps)
    torch.manual_seed(seed)
    pot = Potential(program, data, model.max_plate_nesting)
    u, info = find_mode(pot, num_steps=num_steps, learning_rate=1.0, stochastic=False)
    _, figures = laplace_draws(pot, u, 1, gen)
    figures.pop("draws_outside_support", None)  # no Laplace draws are used here
    figures.update(iterations=info["iterations"], neg_log_density=info["value"])
    reasons = [r.replace(": point estimate only, no posterior sd", "")
               for r in mode_reasons(figures)]
    point = {k: v.detach() for k, v in pot.constrained(u).items()}
    if not integrated:
        figures["point_estimate"] = True
        draws = {k: point[k].reshape(1, 1, *point[k].shape) for k in hyper}
        return draws, make_verdict("exact", reasons, figures, settings)
    fixed = copy.copy(model)
    for k in hyper:
        setattr(fixed, k, float(point[k]))
    flat = fixed.exact_posterior(data, total, gen)
    draws = {k: v.reshape(num_chains, num_samples, *v.shape[1:]) for k, v in flat.items()}
    for k in hyper:
        draws[k] = point[k].expand(num_chains, num_samples, *point[k].shape).clone()
    return {k: draws[k] for k in latents}, make_verdict("exact", reasons, figures, settings)
