"""The package's own exception and warning types (a leaf module: it imports nothing of ours).

* :class:`UsageError`: a user error in the command line or a file given to it; ``bayesattn``
  prints it as one line ``bayesattn: error: ...`` and exits with status 2.
* :class:`ConvergenceWarning`: a fit whose diagnostics say it did not work (see
  :func:`bayesattn.inference.fit`); the verdict is also stored in ``idata.attrs``.
"""

from __future__ import annotations

__all__ = ["ConvergenceWarning", "UsageError"]


class UsageError(Exception):
    """A user error: printed as one line by :func:`bayesattn.cli.main`, exit status 2."""


class ConvergenceWarning(UserWarning):
    """Raised (as a warning) when a fit's diagnostics fail: r_hat, ESS, divergences, tree
    depth, E-BFMI (NUTS); ELBO plateau, Pareto k (SVI); a singular Hessian (MAP)."""
