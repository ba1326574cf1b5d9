"""Model comparison by PSIS-LOO (ArviZ), as a table."""

from __future__ import annotations

import arviz as az
import pandas as pd

__all__ = ["compare"]


def compare(idatas: dict[str, az.InferenceData], *, ic: str = "loo") -> pd.DataFrame:
    """ArviZ's comparison table of several fitted models (Vehtari, Gelman & Gabry 2017).

    Every InferenceData must have a ``log_likelihood`` group over the same observations
    (as :func:`bayesattn.inference.fit` builds it). Rows are sorted best first; columns as
    :func:`arviz.compare` (``elpd_loo``, ``p_loo``, ``elpd_diff``, ``weight``, ``se``,
    ``dse``, ``warning``). Plot it with :func:`bayesattn.plots.plot_compare`.

    Args:
        idatas: ``{model name: InferenceData}``, at least two.
        ic: ``"loo"`` (PSIS-LOO) or ``"waic"``.

    Raises:
        ValueError: fewer than two models, or a model without ``log_likelihood``.
    """
    if len(idatas) < 2:
        raise ValueError(f"compare needs at least two models, got {len(idatas)}")
    for name, idata in idatas.items():
        if "log_likelihood" not in idata.groups():
            raise ValueError(f"model {name!r} has no log_likelihood group")
    return az.compare(idatas, ic=ic)
