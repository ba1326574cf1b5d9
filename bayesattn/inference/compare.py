"""Model comparison by PSIS-LOO (ArviZ), as a table."""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd

__all__ = ["compare"]


def compare(idatas: dict[str, az.InferenceData], *, ic: str = "loo") -> pd.DataFrame:
    """ArviZ's comparison table of several fitted models (Vehtari, Gelman & Gabry 2017).

    Every InferenceData must have a ``log_likelihood`` group with at least two draws, over
    the same observations: their ``observed_data`` must hold the same values (LOO scores of
    models fitted to different data are not comparable). Rows are sorted best first; columns
    as :func:`arviz.compare` (``elpd_loo``, ``p_loo``, ``elpd_diff``, ``weight``, ``se``,
    ``dse``, ``warning``). Plot it with :func:`bayesattn.plots.plot_compare`.

    Args:
        idatas: ``{model name: InferenceData}``, at least two.
        ic: ``"loo"`` (PSIS-LOO) or ``"waic"``.

    Raises:
        ValueError: fewer than two models; a model without ``log_likelihood``; a point
            estimate (one draw: a MAP/exact fit without a posterior spread); models fitted to
            different observed data (the message names them).
    """
    if len(idatas) < 2:
        raise ValueError(f"compare needs at least two models, got {len(idatas)}")
    for name, idata in idatas.items():
        if "log_likelihood" not in idata.groups():
            raise ValueError(f"model {name!r} has no log_likelihood group")
    for name, idata in idatas.items():
        ll = idata.log_likelihood
        if int(ll.sizes.get("chain", 1)) * int(ll.sizes.get("draw", 1)) < 2:
            raise ValueError(
                f"model {name!r} is a point estimate (one draw): PSIS-LOO needs posterior "
                f"draws; refit it with method='nuts', 'svi' or a 'map' whose Laplace "
                f"approximation succeeded")
    _check_same_observations(idatas)
    return az.compare(idatas, ic=ic)


def _check_same_observations(idatas):
    names = list(idatas)
    ref_name = names[0]
    ref = _observed(idatas[ref_name])
    for name in names[1:]:
        obs = _observed(idatas[name])
        if ref is None or obs is None:
            continue
        same = len(ref) == len(obs) and all(
            a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
            for a, b in zip(ref, obs, strict=True))
        if not same:
            raise ValueError(
                f"models {ref_name!r} and {name!r} were fitted to different observed data; "
                f"compare only models fitted to the same observations")


def _observed(idata):
    if "observed_data" not in idata.groups():
        return None
    ds = idata.observed_data
    return [np.asarray(ds[k].values) for k in sorted(ds.data_vars)]
