"""Convergence verdicts of fits: the figures, the thresholds, and where they are stored.

:func:`bayesattn.inference.fit` stores on every InferenceData

* ``idata.attrs["converged"]``: int 1 or 0 (netCDF attributes cannot hold bool), and
* ``idata.attrs["diagnostics"]``: a JSON string ``{"method", "converged", "reasons",
  "figures", "settings"}``: ``reasons`` is a list of one-line failure reasons (empty when
  converged), ``figures`` the method's diagnostic numbers, ``settings`` the method's own
  settings (NUTS: chains, warm-up, draws, target acceptance, max tree depth; SVI: steps,
  learning rate, guide; MAP/exact: optimiser, steps). ``figures["point_estimate"]`` is true
  when the posterior group holds one draw at an optimum (no sds).

and warns :class:`bayesattn.errors.ConvergenceWarning` when not converged. Checks:

* NUTS (Vehtari, Gelman, Simpson, Carpenter & Buerkner 2021, "Rank-normalization, folding,
  and localization"; Betancourt 2016): rank-normalised split ``r_hat`` <= :data:`RHAT_MAX`;
  bulk and tail ESS >= :data:`ESS_PER_CHAIN` per chain (Vehtari et al. recommend 400 for 4
  chains); no divergent transition; no transition at the maximum tree depth; E-BFMI >=
  :data:`BFMI_MIN` in every chain. A single chain is split in two halves for ``r_hat``.
* SVI: the ELBO plateau test of :func:`elbo_plateau` and the Pareto ``k`` of the importance
  ratios ``p(theta, y) / q(theta)`` over guide draws (Yao, Vehtari, Simpson & Gelman 2018,
  "Yes, but did it work?: Evaluating variational inference"): ``k`` > :data:`PARETO_K_MAX`
  means the approximation is unreliable. ``r_hat``/ESS are not computed for independent
  guide draws.
* MAP / exact: see :mod:`bayesattn.inference.laplace` and :mod:`bayesattn.inference.exact`
  (positive-definite Hessian, Newton decrement).
"""

from __future__ import annotations

import json
import math
import warnings

import arviz as az
import numpy as np

from ..errors import ConvergenceWarning

__all__ = ["BFMI_MIN", "ESS_PER_CHAIN", "PARETO_K_MAX", "RHAT_MAX", "elbo_plateau",
           "make_verdict", "nuts_figures", "nuts_reasons", "pareto_k", "store_verdict",
           "verdict_line"]

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
BFMI_MIN = 0.3
PARETO_K_MAX = 0.7


def make_verdict(method: str, reasons: list[str], figures: dict, settings: dict) -> dict:
    """The verdict dict stored in ``idata.attrs`` (``converged`` is ``not reasons``)."""
    return {"method": method, "converged": not reasons, "reasons": list(reasons),
            "figures": figures, "settings": settings}


def store_verdict(idata, verdict: dict, *, warn: bool = True) -> None:
    """Write ``verdict`` into ``idata.attrs`` and warn when it failed.

    Warns:
        ConvergenceWarning: ``verdict["converged"]`` is false (the message is
        :func:`verdict_line`).
    """
    idata.attrs["converged"] = int(bool(verdict["converged"]))
    idata.attrs["diagnostics"] = json.dumps(_jsonable(verdict))
    if warn and not verdict["converged"]:
        warnings.warn(verdict_line(idata), ConvergenceWarning, stacklevel=3)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def verdict_line(idata) -> str:
    """One line starting with ``convergence:`` that states a fit's verdict and its figures.

    E.g. ``convergence: OK (nuts: max r_hat 1.004, min ESS bulk 812 / tail 640,
    0 divergences, 0 at max tree depth, min E-BFMI 0.91)`` or ``convergence: FAILED (svi:
    Pareto k 1.3 > 0.7: ...)``. An InferenceData without a verdict gives
    ``convergence: unknown (no diagnostics stored)``.
    """
    if "diagnostics" not in idata.attrs:
        return "convergence: unknown (no diagnostics stored)"
    info = json.loads(idata.attrs["diagnostics"])
    ok = bool(int(idata.attrs.get("converged", 0)))
    method = info.get("method", "")
    figures = _figures_text(method, info.get("figures", {}))
    reasons = "; ".join(info.get("reasons", []))
    body = ", ".join(x for x in (figures,) if x)
    if not ok and reasons:
        body = f"{reasons}" + (f" | {figures}" if figures else "")
    head = f"{method}: " if method else ""
    return f"convergence: {'OK' if ok else 'FAILED'}" + (f" ({head}{body})" if body else "")


def _fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def _figures_text(method: str, f: dict) -> str:
    if not f:
        return ""
    if method == "nuts":
        bulk, tail = _fmt(f.get("min_ess_bulk"), ".0f"), _fmt(f.get("min_ess_tail"), ".0f")
        return (f"max r_hat {_fmt(f.get('max_r_hat'), '.3f')}, min ESS bulk {bulk} / tail "
                f"{tail}, "
                f"{f.get('divergences', 0)} divergences, {f.get('max_tree_depth_hits', 0)} at max "
                f"tree depth, min E-BFMI {_fmt(f.get('min_bfmi'), '.2f')}")
    if method == "svi":
        return (f"Pareto k {_fmt(f.get('pareto_k'), '.2f')}, ELBO change over the last window "
                f"{_fmt(f.get('elbo_drop'), '.3g')} +- {_fmt(f.get('elbo_drop_se'), '.2g')}")
    if "newton_decrement" in f or "grad_norm" in f:
        text = (f"gradient norm {_fmt(f.get('grad_norm'), '.2g')}, Newton decrement "
                f"{_fmt(f.get('newton_decrement'), '.2g')}, Hessian eigenvalues "
                f"{_fmt(f.get('min_eigenvalue'), '.3g')}..{_fmt(f.get('max_eigenvalue'), '.3g')}")
        return text + (", point estimate only" if f.get("point_estimate") else "")
    return ", ".join(f"{k} {v}" for k, v in f.items())


# ----------------------------------------------------------------------------- NUTS
def _split_single(x: np.ndarray) -> np.ndarray:
    """``(1, D, ...)`` -> ``(2, D // 2, ...)``: one chain as two halves (for r_hat)."""
    if x.shape[0] != 1:
        return x
    half = x.shape[1] // 2
    return np.stack([x[0, :half], x[0, half:2 * half]])


def nuts_figures(idata, var_names: list[str], max_tree_depth: int) -> dict:
    """NUTS figures from ``idata.posterior[var_names]`` and ``idata.sample_stats``.

    Returns:
        ``{"max_r_hat", "min_ess_bulk", "min_ess_tail", "num_chains", "num_draws",
        "divergences", "max_tree_depth_hits", "min_bfmi", "bfmi" (per chain)}``; r_hat and
        ESS are the worst over every element of every variable (ArviZ's rank-normalised
        estimators).
    """
    post = idata.posterior
    chains, draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    rhats, bulk, tail = [], [], []
    for name in var_names:
        x = post[name].values.reshape(chains, draws, -1)
        for j in range(x.shape[-1]):
            xj = x[..., j]
            if np.ptp(xj) == 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rhats.append(float(az.rhat(_split_single(xj))))
                bulk.append(float(az.ess(xj, method="bulk")))
                tail.append(float(az.ess(xj, method="tail")))
    stats = idata.sample_stats
    energy = stats["energy"].values if "energy" in stats else None
    bfmi = [float(v) for v in az.bfmi(energy)] if energy is not None and draws > 1 else []
    return {
        "max_r_hat": max(rhats) if rhats else None,
        "min_ess_bulk": min(bulk) if bulk else None,
        "min_ess_tail": min(tail) if tail else None,
        "num_chains": chains, "num_draws": draws,
        "divergences": int(stats["diverging"].values.sum()),
        "max_tree_depth_hits": int((stats["tree_depth"].values >= max_tree_depth).sum()),
        "min_bfmi": min(bfmi) if bfmi else None,
        "bfmi": bfmi,
    }


def nuts_reasons(f: dict) -> list[str]:
    """Failure reasons from :func:`nuts_figures` (thresholds in the module docstring)."""
    reasons = []
    need = ESS_PER_CHAIN * f["num_chains"]
    if f["max_r_hat"] is not None and not f["max_r_hat"] <= RHAT_MAX:
        reasons.append(f"max r_hat {f['max_r_hat']:.3f} > {RHAT_MAX}")
    for kind in ("bulk", "tail"):
        ess = f[f"min_ess_{kind}"]
        if ess is not None and not ess >= need:
            reasons.append(f"min ESS {kind} {ess:.0f} < {need} ({ESS_PER_CHAIN} per chain)")
    if f["divergences"]:
        reasons.append(f"{f['divergences']} divergent transitions")
    if f["max_tree_depth_hits"]:
        reasons.append(f"{f['max_tree_depth_hits']} transitions at the maximum tree depth")
    if f["min_bfmi"] is not None and not f["min_bfmi"] >= BFMI_MIN:
        reasons.append(f"min E-BFMI {f['min_bfmi']:.2f} < {BFMI_MIN}")
    return reasons


# ----------------------------------------------------------------------------- SVI
def elbo_plateau(losses: np.ndarray, window: int | None = None) -> dict:
    """Has the ELBO loss stopped falling? Compare the means of the last two windows.

    With ``m1``, ``m2`` the means of the second-to-last and the last ``window`` losses and
    ``se = sqrt((s1^2 + s2^2) / window)`` their Monte-Carlo standard error (``s`` the window
    sds), the trace is still falling when ``drop = m1 - m2 > max(2 se, 0.05 nats)``, i.e. the
    loss fell significantly and by more than a twentieth of a nat in one window.

    Args:
        losses: ``(num_steps,)`` ELBO losses (negative ELBO, nats).
        window: default ``max(20, num_steps // 10)``.

    Returns:
        ``{"elbo_drop", "elbo_drop_se", "window", "plateau": bool}``.
    """
    losses = np.asarray(losses, dtype=float)
    window = window or max(20, len(losses) // 10)
    if len(losses) < 2 * window:
        return {"elbo_drop": None, "elbo_drop_se": None, "window": window, "plateau": False}
    a, b = losses[-2 * window:-window], losses[-window:]
    drop = float(a.mean() - b.mean())
    se = float(math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / window))
    plateau = bool(np.isfinite(drop) and drop <= max(2 * se, 0.05))
    return {"elbo_drop": drop, "elbo_drop_se": se, "window": window, "plateau": plateau}


def pareto_k(log_weights: np.ndarray) -> float:
    """Pareto-smoothed importance sampling shape ``k`` of ``log_weights (S,)`` (``az.psislw``).

    ``k`` <= 0.5: the importance ratios have finite variance; 0.5-0.7: usable; > 0.7: the
    approximation ``q`` is unreliable (Yao et al. 2018; Vehtari et al. 2024, "Pareto smoothed
    importance sampling").
    """
    lw = np.asarray(log_weights, dtype=float)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    if not np.isfinite(lw).any():
        return float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, k = az.psislw(lw)
    return float(k)
