"""MAP estimation and the Laplace approximation at the mode (``method="map"``).

Everything happens in Pyro's unconstrained space (each latent ``theta = T(u)`` with
``T = biject_to(support)``), on the potential ``U(u) = -log p(T(u), y) - log |det J_T(u)|``
that NUTS also uses (``pyro.infer.mcmc.util.initialize_model``; discrete sites marked for
enumeration are summed out). The mode ``u*`` of ``exp(-U)`` is found by L-BFGS with a strong
Wolfe line search (full data, deterministic) or by Adam with a decaying learning rate (minibatch
data, stochastic). The Laplace approximation is ``u ~ N(u*, H^{-1})``, ``H`` the Hessian of
``U`` at ``u*`` (Bishop 2006, section 4.4; Pyro's ``AutoLaplaceApproximation`` makes the same
choice of space), sampled through the Cholesky factor ``H = L L^T`` as ``u* + L^{-T} eps``.

Verdict: converged when ``H`` is positive definite and the Newton decrement
``g^T H^{-1} g / 2`` (the predicted further decrease of ``U``, in nats; Boyd & Vandenberghe
2004, section 9.5.1) is at most :data:`NEWTON_TOL`. With minibatches the gradient and Hessian
are averages over ``max(10, N / B)`` minibatch estimates, and the test is instead that no
gradient component is more than :data:`GRAD_Z_MAX` standard errors from zero.
A Hessian that is not positive definite (a saddle, a flat direction, or a boundary mode)
gives a FAILED verdict and a point estimate only: one draw at the mode, no sds.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median
from pyro.infer.mcmc.util import initialize_model

from .nuts import potential_from_log_joint, safe_potential

__all__ = ["GRAD_Z_MAX", "NEWTON_TOL", "Potential", "find_mode", "fit_map", "laplace_draws"]

#: largest Newton decrement (nats) at which an optimum counts as found
NEWTON_TOL = 1e-3
#: minibatch fits: largest |gradient| / standard error at which an optimum counts as found
GRAD_Z_MAX = 4.0


class Potential:
    """A model's potential ``U`` as a function of one flat unconstrained vector ``u (P,)``.

    Args:
        program: the Pyro program.
        data: its keyword arguments.
        max_plate_nesting: as for NUTS (enumeration).
        log_joint: None, or the model's fast log joint on ``data``
            (:meth:`~bayesattn.models.base.BayesianModel.log_joint_fn`, full data only): the
            same density without Pyro's tracing, used by :meth:`first_order` (the optimiser);
            the curvature still comes from the traced program, since a fast log joint may be
            differentiable only once (TVA's compiled race kernel).

    The initialisation is ``init_to_median`` over 15 prior draws (seeded by the caller).
    """

    def __init__(self, program, data: dict, max_plate_nesting: int, log_joint=None):
        if data.get("subsample_size") is None:
            init, potential, transforms, _ = initialize_model(
                program, model_kwargs=data, max_plate_nesting=max_plate_nesting,
                init_strategy=init_to_median(num_samples=15))
        else:  # Pyro's initialize_model refuses subsampled plates: the same potential by hand
            init, potential, transforms = _subsampled_potential(program, data)
            log_joint = None
        self._fn = safe_potential(potential)
        self._first = self._fn if log_joint is None else safe_potential(
            potential_from_log_joint(log_joint, transforms))
        self.transforms = transforms
        self.names = sorted(init)
        self.shapes = {k: init[k].shape for k in self.names}
        self.init = torch.cat([init[k].detach().reshape(-1) for k in self.names])

    def unflatten(self, u: torch.Tensor) -> dict:
        """``{name: unconstrained tensor}`` from ``u (..., P)`` (leading batch dims kept)."""
        out, start = {}, 0
        for k in self.names:
            n = math.prod(self.shapes[k])
            out[k] = u[..., start:start + n].reshape((*u.shape[:-1], *self.shapes[k]))
            start += n
        return out

    def constrained(self, u: torch.Tensor) -> dict:
        """``{name: T(u)}`` for ``u (..., P)``."""
        return {k: self.transforms[k].inv(v) for k, v in self.unflatten(u).items()}

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return self._fn(self.unflatten(u))

    def first_order(self, u: torch.Tensor) -> torch.Tensor:
        """``U(u)`` for an optimiser (value and gradient only): from the fast log joint when
        the potential has one, else the same as calling the potential."""
        return self._first(self.unflatten(u))


def _subsampled_potential(program, data):
    """``(init, potential, transforms)`` as ``initialize_model`` for a minibatch program.

    ``potential(z) = -(log p(T(z), y_batch) scaled by the plates) - log |det J_T(z)|``, an
    unbiased estimate of the full-data potential (no enumeration).
    """
    proto = poutine.trace(InitMessenger(init_to_median(num_samples=15))(program)).get_trace(
        **data)
    transforms, init = {}, {}
    for name, site in proto.iter_stochastic_nodes():
        if site["is_observed"] or type(site["fn"]).__name__ == "_Subsample":
            continue
        transforms[name] = biject_to(site["fn"].support).inv
        init[name] = transforms[name](site["value"].detach())

    def potential(z):
        values = {k: transforms[k].inv(v) for k, v in z.items()}
        trace = poutine.trace(poutine.condition(program, data=values)).get_trace(**data)
        logdet = sum(transforms[k].inv.log_abs_det_jacobian(z[k], values[k]).sum() for k in z)
        return -(trace.log_prob_sum() + logdet)

    return init, potential, transforms


def find_mode(pot: Potential, *, num_steps: int, learning_rate: float, stochastic: bool,
              num_evals: int = 1):
    """Minimise ``pot`` from its initial point (through :meth:`Potential.first_order`).

    Deterministic potentials: L-BFGS (strong Wolfe) for at most ``num_steps`` iterations.
    Stochastic (minibatch) ones: Adam, learning rate decaying geometrically to 1/10 over
    ``num_steps``.

    Returns:
        ``(u (P,), info)``: the mode and ``{"optimizer", "iterations", "value"}``.

    Raises:
        FloatingPointError: the potential is not finite at the end.
    """
    u = pot.init.clone().requires_grad_(True)
    if stochastic:
        opt = torch.optim.Adam([u], lr=learning_rate)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.1 ** (1 / num_steps))
        for _ in range(num_steps):
            opt.zero_grad()
            loss = pot.first_order(u)
            if torch.isfinite(loss):
                loss.backward()
                opt.step()
            sched.step()
        optimizer = "adam"
        iterations = num_steps
    else:
        opt = torch.optim.LBFGS([u], lr=1.0, max_iter=num_steps, tolerance_grad=1e-10,
                                tolerance_change=1e-14, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = pot.first_order(u)
            loss.backward()
            return loss

        opt.step(closure)
        optimizer = "lbfgs"
        iterations = int(opt.state[u].get("n_iter", 0))
    u = u.detach()
    value = float(np.mean([float(pot(u)) for _ in range(num_evals)]))
    if not math.isfinite(value):
        raise FloatingPointError(
            "the optimiser ended where the log density is not finite; lower learning_rate")
    return u, {"optimizer": optimizer, "iterations": iterations, "value": value}


def curvature(pot: Potential, u: torch.Tensor, num_evals: int = 1):
    """Gradient ``g (P,)``, symmetrised Hessian ``H (P, P)`` of ``pot`` at ``u``, and the
    standard error of ``g`` (``None`` for one evaluation).

    With a stochastic (minibatch) potential all are averaged over ``num_evals`` evaluations
    (each an unbiased estimate of the full-data value).
    """
    grads = []
    H = torch.zeros(u.numel(), u.numel(), dtype=u.dtype)
    for _ in range(num_evals):
        x = u.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(pot(x), x)[0])
        H += torch.autograd.functional.hessian(pot, u)
    g = torch.stack(grads)
    se = g.std(0) / num_evals**0.5 if num_evals > 1 else None
    H = H / num_evals
    return g.mean(0), 0.5 * (H + H.T), se


#: Laplace draws at which the (full-data) density is checked to be defined
LAPLACE_CHECKED = 100


def laplace_draws(pot: Potential, u: torch.Tensor, num_draws: int, generator, *,
                  num_evals: int = 1):
    """Laplace approximation at the mode ``u``: draws and figures.

    Returns:
        ``(draws {name: (num_draws, ...)} or None when H is not positive definite, figures)``
        with figures ``grad_norm`` (Euclidean, unconstrained space), ``newton_decrement``
        (nats), ``min_eigenvalue``/``max_eigenvalue`` of ``H``.
    """
    g, H, se = curvature(pot, u, num_evals)
    figures = {"grad_norm": float(g.norm())}
    finite = bool(torch.isfinite(H).all())
    try:
        eig = torch.linalg.eigvalsh(H) if finite else None
    except torch.linalg.LinAlgError:  # eigensolver failed on an ill-conditioned Hessian
        eig = None
    if eig is not None:
        figures.update(min_eigenvalue=float(eig[0]), max_eigenvalue=float(eig[-1]))
    else:  # a non-finite or degenerate Hessian: no curvature to report
        figures.update(min_eigenvalue=float("nan"), max_eigenvalue=float("nan"))
    if se is not None:  # minibatch: is the gradient distinguishable from zero?
        figures["max_grad_z"] = float((g.abs() / se.clamp_min(1e-300)).max())
    chol, info = torch.linalg.cholesky_ex(H) if finite else (None, 1)
    if int(info) != 0:
        figures["newton_decrement"] = float("nan")
        return None, figures
    step = torch.cholesky_solve(g[:, None], chol)[:, 0]
    figures["newton_decrement"] = float(0.5 * g @ step)
    eps = torch.randn(u.numel(), num_draws, dtype=u.dtype, generator=generator)
    # H = L L^T  =>  L^{-T} eps ~ N(0, H^{-1})
    noise = torch.linalg.solve_triangular(chol.T, eps, upper=True).T
    draws = {k: v.detach() for k, v in pot.constrained(u + noise).items()}
    # a wide Laplace approximation can put draws on the boundary of the support (exp
    # underflows to 0 for a positive parameter): the round trip through the transform shows it
    back = [pot.transforms[k](v) for k, v in draws.items()]
    outside = sum(int((~torch.isfinite(b)).reshape(num_draws, -1).any(-1).sum()) for b in back)
    if not outside and num_evals == 1:
        # the density must be defined at the draws (e.g. a GP covariance still positive
        # definite): check the first LAPLACE_CHECKED draws (they are independent)
        for i in range(min(num_draws, LAPLACE_CHECKED)):
            try:
                ok = bool(torch.isfinite(pot((u + noise[i]).detach())))
            except (ValueError, RuntimeError):  # NotPositiveDefiniteError, LinAlgError
                ok = False
            outside += not ok
    figures["draws_outside_support"] = outside
    if outside:
        return None, figures
    return draws, figures


def fit_map(model, data, *, num_chains, num_samples, seed, num_steps, learning_rate,
            subsample_size=None):
    """``method="map"``: the mode and ``num_chains * num_samples`` Laplace draws.

    Returns:
        ``(draws {name: (chain, draw, ...)}, verdict dict)``; when the Hessian is not positive
        definite the draws are the single mode ``(1, 1, ...)``.
    """
    from .diagnostics import make_verdict

    latents = model.latent_names()
    stochastic = subsample_size is not None
    run_data = {**data, "subsample_size": subsample_size} if stochastic else data
    settings = {"optimizer": "adam" if stochastic else "lbfgs", "num_steps": num_steps,
                "learning_rate": learning_rate if stochastic else None,
                "num_draws": num_chains * num_samples, "subsample_size": subsample_size}
    if not latents:
        return {}, make_verdict("map", [], {}, settings)
    torch.manual_seed(seed)
    pot = Potential(model.model, run_data, model.max_plate_nesting,
                    log_joint=None if stochastic else model.log_joint_fn(data))
    evals = _num_evals(model, data, subsample_size)
    u, info = find_mode(pot, num_steps=num_steps, learning_rate=learning_rate,
                        stochastic=stochastic, num_evals=evals)
    gen = torch.Generator().manual_seed(seed)
    draws, figures = laplace_draws(pot, u, num_chains * num_samples, gen, num_evals=evals)
    figures.update(iterations=info["iterations"], neg_log_density=info["value"])
    reasons = mode_reasons(figures)
    if draws is None:
        point = pot.constrained(u)
        draws = {k: point[k].detach().reshape(1, 1, *point[k].shape) for k in latents}
        figures["point_estimate"] = True
    else:
        draws = {k: draws[k].reshape(num_chains, num_samples, *draws[k].shape[1:])
                 for k in latents}
    return draws, make_verdict("map", reasons, figures, settings)


def mode_reasons(figures: dict) -> list[str]:
    """Failure reasons of an optimum from its :func:`laplace_draws` figures (an empty list
    when the mode is usable): draws outside the support, a Hessian that is not positive
    definite, or an optimiser that has not converged (Newton decrement, minibatch gradient).

    Raises:
        KeyError: ``figures`` lacks ``min_eigenvalue`` or ``newton_decrement``.
    """
    reasons = []
    if figures.get("draws_outside_support"):
        reasons.append(
            f"Laplace approximation too wide: {figures['draws_outside_support']} draws fall on "
            "the boundary of a parameter's support: point estimate only, no posterior sd")
    elif not figures["min_eigenvalue"] > 0 or math.isnan(figures["newton_decrement"]):
        reasons.append(
            f"Hessian at the mode not positive definite (min eigenvalue "
            f"{figures['min_eigenvalue']:.3g}): point estimate only, no posterior sd")
    elif "max_grad_z" in figures:
        if figures["max_grad_z"] > GRAD_Z_MAX:
            reasons.append(
                f"optimiser not converged: a minibatch gradient {figures['max_grad_z']:.3g} "
                f"standard errors from zero (> {GRAD_Z_MAX}); raise num_steps or learning_rate")
    elif figures["newton_decrement"] > NEWTON_TOL:
        reasons.append(
            f"optimiser not converged: Newton decrement {figures['newton_decrement']:.3g} nats "
            f"> {NEWTON_TOL} (gradient norm {figures['grad_norm']:.3g}); raise num_steps")
    return reasons


def _num_evals(model, data, subsample_size):
    if subsample_size is None:
        return 1
    n = int(data[model.obs_name].shape[0])
    return max(10, math.ceil(n / subsample_size))
