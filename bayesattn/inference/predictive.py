"""Posterior and posterior predictive quantities at new inputs, from a fit's InferenceData.

These are the computations behind the plots (:mod:`bayesattn.plots` only draws): draws of the
parameters, predictive draws and moments at new queries, and the attention weights' posterior
mean and spread. The predictive moments use the law of total variance over posterior draws
``theta_d`` (Gelman et al. 2013, *Bayesian Data Analysis*, 3rd ed., section 2.5)::

    E[y* | y]   = mean_d m(theta_d)
    Var[y* | y] = mean_d v(theta_d) + var_d m(theta_d)

where ``m, v = model.predict(query, theta_d, data)``. With one draw (a point estimate) this is
the plug-in predictive ``m, v`` of that draw.

Each function runs on the thread count :func:`.threads.auto_num_threads` picks for the queries
(one thread for a small model; the caller's setting is restored after).
"""

from __future__ import annotations

import numpy as np
import torch

from .threads import auto_num_threads, torch_threads

__all__ = ["attention_weight_moments", "num_posterior_draws", "posterior_draws",
           "predictive_draws", "predictive_moments"]


def num_posterior_draws(idata) -> int:
    """Number of posterior draws, chains pooled (1 when there is no posterior group)."""
    if "posterior" not in idata.groups():
        return 1
    post = idata.posterior
    return int(post.sizes.get("chain", 1) * post.sizes.get("draw", 1))


def posterior_draws(idata, names, *, max_draws: int = 400, seed: int = 0):
    """A random subset of at most ``max_draws`` posterior draws, chains pooled.

    Args:
        idata: InferenceData with a ``posterior`` group holding ``names``.
        names: variable names.
        max_draws: most draws returned (chosen without replacement, seeded).
        seed: seed of the subset.

    Returns:
        ``({name: tensor (D, ...)}, D)``; ``({}, 1)`` when ``names`` is empty (a model with
        every parameter fixed has one "draw" of nothing).

    Raises:
        ValueError: ``max_draws < 1``.
        KeyError: a name is not in the posterior.
    """
    if max_draws < 1:
        raise ValueError(f"max_draws must be >= 1, got {max_draws}")
    names = list(names)
    if not names:
        return {}, 1
    post = idata.posterior
    total = post.sizes["chain"] * post.sizes["draw"]
    idx = np.random.default_rng(seed).choice(total, size=min(max_draws, total), replace=False)
    out = {}
    for name in names:
        arr = post[name].values.reshape(total, *post[name].shape[2:])
        out[name] = torch.as_tensor(arr[idx])
    return out, len(idx)


def predictive_draws(model, idata, query, data, *, max_draws: int = 400, seed: int = 0):
    """Posterior predictive draws of new observations at ``query (G, E)``: ``(D, G, Ev)``.

    One draw of ``model.predictive_sample`` per posterior draw (at most ``max_draws``, chosen
    at random), so the draws mix parameter uncertainty and observation noise.

    Raises:
        NotImplementedError: the model does not predict at new queries.
    """
    draws, num = posterior_draws(idata, model.latent_names(), max_draws=max_draws, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch_threads(auto_num_threads(model, data, query.shape[0])), torch.no_grad():
        return torch.stack([
            model.predictive_sample(query, {k: v[d] for k, v in draws.items()}, data, gen)
            for d in range(num)
        ])


def predictive_moments(model, idata, query, data, *, max_draws: int = 400, seed: int = 0):
    """Posterior predictive mean and sd of a new observation at ``query (G, E)``.

    Law of total variance over at most ``max_draws`` posterior draws (module docstring), from
    ``model.predict``; for a point estimate (one draw) the model's own predictive mean and sd.

    Returns:
        ``(mean (G, Ev), sd (G, Ev))`` tensors in the units of the observation.

    Raises:
        NotImplementedError: the model does not predict at new queries.
    """
    draws, num = posterior_draws(idata, model.latent_names(), max_draws=max_draws, seed=seed)
    with torch_threads(auto_num_threads(model, data, query.shape[0])), torch.no_grad():
        moments = [model.predict(query, {k: v[d] for k, v in draws.items()}, data)
                   for d in range(num)]
    means = torch.stack([m for m, _ in moments])
    variances = torch.stack([v for _, v in moments])
    mean = means.mean(0)
    var = variances.mean(0) + means.var(0, unbiased=False)
    return mean, var.clamp_min(0).sqrt()


def attention_weight_moments(model, idata, query, *, max_draws: int = 200, seed: int = 0):
    """Posterior mean and sd of the attention weights of ``query (L, E)`` over the keys.

    Uses ``model.attention_weights(query, params)`` per posterior draw (at most
    ``max_draws``).

    Returns:
        ``(mean (L, S), sd (L, S), D)``; the sd is 0 for a point estimate (``D = 1``).
    """
    draws, num = posterior_draws(idata, model.latent_names(), max_draws=max_draws, seed=seed)
    # the size rule needs the memory's rows: a model that keeps no ``key`` leaves threads alone
    known = isinstance(getattr(model, "key", None), torch.Tensor)
    threads = auto_num_threads(model, {}, query.shape[0]) if known else None
    with torch_threads(threads), torch.no_grad():
        w = torch.stack([model.attention_weights(query, {k: v[d] for k, v in draws.items()})
                         for d in range(num)])
    return w.mean(0), w.std(0, unbiased=False), num
