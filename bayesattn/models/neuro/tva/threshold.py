r"""The perception threshold ``t0`` of TVA: fixed, Gaussian or exponential across trials.

Every term of the race likelihood (:mod:`.race`) is, as a function of the threshold, a decay
``exp(-u max(0, tau_exp - t0))`` with ``u >= 0`` a sum of processing rates (1/ms) and
``tau_exp`` the exposure (ms): ``exp(-u (tau_exp - t0))`` while ``t0 < tau_exp`` and ``1`` once
``t0 >= tau_exp`` (the effective exposure is 0, nothing is encoded). With ``t0`` random across
trials the likelihood is linear in these decays, so it only needs their expectations
``G(u) = E[exp(-u max(0, tau_exp - t0))]``, in closed form here (no quadrature).

* Fixed ``t0``: ``G(u) = exp(-u max(0, tau_exp - t0))``.
* Gaussian ``t0 ~ N(mu0, sigma0^2)`` on the whole real line (Dyrholm et al. 2011; the StanTVA
  convention: the mass ``P(t0 >= tau_exp)`` is the "nothing encoded" term, and a negative
  ``t0`` simply lengthens the effective exposure). With ``d = tau_exp - mu0``,

  .. math:: G(u) = \Phi(-d / \sigma_0)
            + \exp\bigl(-u d + u^2 \sigma_0^2 / 2\bigr)\,
              \Phi\bigl((d - u \sigma_0^2) / \sigma_0\bigr),

  the second term being ``E[exp(-u (tau_exp - t0)); t0 < tau_exp]`` (complete the square in
  the normal density). Each term is formed as a logarithm (``log_ndtr``) before it is
  exponentiated, so ``exp(u^2 sigma0^2 / 2)`` never overflows; each term is ``<= 1``.
* Exponential ``t0 ~ Exp(mean mu0)`` (``t0 >= 0``, rate ``lam = 1 / mu0``): for
  ``tau_exp > 0``

  .. math:: G(u) = e^{-\lambda \tau} + \lambda \tau\, e^{-\min(\lambda, u) \tau}\,
            \varphi_1(|u - \lambda| \tau), \qquad \varphi_1(y) = (1 - e^{-y}) / y,

  (the integral ``int_0^tau lam e^{-lam t} e^{-u (tau - t)} dt``, written so that it is stable
  at ``u = lam`` and never forms a growing exponential), and ``G = 1`` for ``tau_exp = 0``.

Units: times in ms, ``u`` in 1/ms.
"""

from __future__ import annotations

import torch

from .._common import log_ndtr

__all__ = ["T0_KINDS"]

#: The threshold distributions across trials: ``"fixed"``, ``"normal"``, ``"exponential"``.
T0_KINDS = ("fixed", "normal", "exponential")


def _expected_decay(u, exposure, t0, t0_sd, kind: str) -> torch.Tensor:
    """``G(u) = E[exp(-u max(0, exposure - t0))]`` (module docstring); arguments broadcast.

    ``u (...)`` 1/ms ``>= 0``; ``exposure (...)`` ms; ``t0 (...)`` ms, the fixed threshold, the
    mean of the Gaussian or the mean of the exponential; ``t0_sd (...)`` ms (Gaussian only; a
    zero sd falls back to the fixed threshold).
    """
    if kind == "fixed" or t0_sd is None and kind == "normal":
        tau = torch.clamp(exposure - t0, min=0.0)
        return torch.exp(-u * tau)
    if kind == "normal":
        pos = t0_sd > 0
        all_pos = bool(pos.all())
        s = t0_sd if all_pos else torch.where(pos, t0_sd, torch.ones_like(t0_sd))
        d = exposure - t0
        log_none = log_ndtr(-d / s)  # P(t0 >= exposure)
        log_some = -u * d + 0.5 * (u * s) ** 2 + log_ndtr((d - u * s * s) / s)
        g = torch.exp(log_none) + torch.exp(log_some)  # both terms <= 1: no overflow
        if all_pos:
            return g
        return torch.where(pos, g, torch.exp(-u * torch.clamp(d, min=0.0)))  # sd 0: fixed
    if kind == "exponential":
        lam = 1.0 / t0
        tau = torch.clamp(exposure, min=0.0)
        y = (u - lam).abs() * tau
        small = y < 1e-8
        y_safe = torch.where(small, torch.ones_like(y), y)
        phi1 = torch.where(small, 1.0 - 0.5 * y, -torch.expm1(-y_safe) / y_safe)
        return torch.exp(-lam * tau) + lam * tau * torch.exp(-torch.minimum(lam, u) * tau) * phi1
    raise ValueError(f"t0_dist must be one of {', '.join(T0_KINDS)}, got {kind!r}")
