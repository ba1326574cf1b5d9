"""The protocol every bayesattn Pyro model follows, so :func:`bayesattn.inference.fit` can fit it.

A model is an object with

* ``model(**data)``: the Pyro program (also ``__call__``). ``data`` is a dict of tensors; the
  entry named :attr:`BayesianModel.obs_name` is the observation (``None`` = simulate it).
* :attr:`obs_name`: the observed sample site (its batch dims index observations ``N``).
* :meth:`log_likelihood`: pointwise ``log p(y_n | theta)`` for each posterior draw, with any
  discrete latent marginalised; this is what LOO/WAIC need (docs/design.md section 1).
* optionally :meth:`exact_posterior`: draws from a closed-form posterior (``method="exact"``).

What :func:`bayesattn.inference.to_inference_data` and the fitting code read besides:

* :attr:`idata_obs_name`: the observed variable's name in InferenceData (``"y"`` for every
  regression model; ``None`` = :attr:`obs_name`).
* :attr:`supports_subsampling`: ``model(**data, subsample_size=B)`` evaluates the likelihood on
  ``B`` random observations, scaled by ``N / B`` (``pyro.plate`` subsampling), for minibatch SVI.
* :attr:`log_likelihood_sums_to_joint`: ``log_likelihood(...).sum(-1)`` is the observed site's
  log-density (not true for GP attention, whose pointwise terms are leave-one-out predictives).
* :meth:`full_data_bytes`, :meth:`likelihood_cost`: size of one full-data likelihood evaluation.
* :meth:`prior_log_density`: vectorised ``log p(theta)`` of draws (for ``sample_stats.lp``).
* :meth:`posterior_predictive`, :meth:`deterministics`, :meth:`prior_draws`: vectorised
  replicated observations, deterministic sites and prior draws (instead of Pyro's
  ``Predictive`` and one trace per draw).
* :meth:`input_coordinate`, :meth:`per_observation_deterministics`,
  :meth:`observation_from_site`: the observation's input, per-observation outputs and the
  observed site's layout.
"""

from __future__ import annotations

import numbers

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from .._checks import check_tensor

__all__ = ["BayesianModel", "hyperparameter"]


def hyperparameter(name: str, value, *, dtype=torch.float64):
    """Sample ``name`` from ``value`` if it is a distribution, else return it as a tensor.

    Every hyperparameter of a model (bandwidth, scale, noise, ...) is either a fixed positive
    number or a Pyro distribution used as its prior. Call inside a Pyro model.
    """
    if isinstance(value, dist.Distribution):
        return pyro.sample(name, value)
    return torch.as_tensor(value, dtype=dtype)


def check_hyperparameter(name: str, value, *, allow_tensor: bool = True):
    """Validate a hyperparameter: a positive finite number/tensor or a Pyro distribution.

    Raises:
        TypeError: ``value`` is neither a number, a tensor nor a distribution.
        ValueError: a fixed value that is not positive and finite.
    """
    if isinstance(value, dist.Distribution):
        return value
    if isinstance(value, torch.Tensor) and allow_tensor:
        if not bool(torch.isfinite(value).all() & (value > 0).all()):
            raise ValueError(f"{name} must be positive and finite, got {value}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a positive number or a pyro distribution (its prior), "
            f"got {type(value).__name__}"
        )
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return float(value)


def check_memory(key, value=None) -> None:
    """Check a model's memory: ``key (S, E)`` with ``S >= 1`` and ``value (S, Ev)`` or None.

    Raises:
        TypeError: non-tensors or integer tensors.
        ValueError: wrong shapes, NaN/inf.
    """
    check_tensor("key", key, min_dim=2)
    if key.dim() != 2 or key.shape[0] == 0:
        raise ValueError(f"key must have shape (S, E) with S >= 1, got {tuple(key.shape)}")
    if value is not None:
        check_tensor("value", value, min_dim=2)
        if value.dim() != 2 or value.shape[0] != key.shape[0]:
            raise ValueError(
                f"value must have shape (S, Ev) = ({key.shape[0]}, Ev), got {tuple(value.shape)}"
            )


class BayesianModel:
    """Base class: a Pyro model with pointwise log-likelihoods (see the module docstring)."""

    #: name of the observed sample site (and of its entry in ``data``)
    obs_name: str = "y"
    #: plates the model nests (for enumeration); 1 for a plate over observations
    max_plate_nesting: int = 1
    #: name of the observed variable in InferenceData (None: the same as ``obs_name``)
    idata_obs_name: str | None = None
    #: ``model(**data, subsample_size=B)`` subsamples the observations (minibatch SVI)
    supports_subsampling: bool = False
    #: ``log_likelihood(draws, data).sum(-1)`` equals the observed site's log-density
    log_likelihood_sums_to_joint: bool = False

    def model(self, **data):  # pragma: no cover - abstract
        """The Pyro program. Subclasses implement it."""
        raise NotImplementedError

    def __call__(self, **data):
        return self.model(**data)

    def latent_names(self) -> list[str]:
        """Names of the continuous latent sites (the posterior group)."""
        return []

    def log_likelihood(self, draws: dict[str, torch.Tensor], data: dict) -> torch.Tensor:
        """Pointwise log-likelihood ``(D, N)`` of the observation for each of ``D`` draws.

        The default replays the model conditioned on each draw and reads the observed site's
        ``log_prob``; models with discrete latents override it to marginalise them.
        """
        num = num_draws(draws)
        out = []
        for d in range(num):
            one = {k: v[d] for k, v in draws.items()}
            trace = poutine.trace(poutine.condition(self.model, data=one)).get_trace(**data)
            site = trace.nodes[self.obs_name]
            out.append(site["fn"].log_prob(site["value"]).reshape(-1))
        return torch.stack(out)

    def param_dims(self) -> dict[str, list[str]]:
        """ArviZ dim names of parameter sites, ``{name: [dim, ...]}`` (leading dims; the rest
        keep ArviZ's default names), e.g. ``{"C": ["condition"]}``. The default has none."""
        return {}

    def log_joint_fn(self, data: dict):
        """A fast ``log p(theta, data)`` for NUTS, or None (the default: NUTS traces
        :meth:`model`).

        A model may return a function of ``{site: constrained value}`` (every site of
        :meth:`latent_names`, as the Pyro program samples it) giving the same scalar log joint
        density as the traced program -- priors plus log-likelihood -- without Pyro's per-call
        tracing and data checks; :func:`bayesattn.inference.nuts.run_nuts` then builds the
        potential from it and the program's own transforms. Tests must show it equals the
        traced density.

        A model whose function also takes values with leading batch dims ``(*B, *site)`` and
        returns ``(*B,)`` sets :attr:`log_joint_batched`; NUTS then runs several chains in
        one process, in lockstep (:mod:`bayesattn.inference.lockstep`).
        """
        return None

    #: True when :meth:`log_joint_fn`'s function accepts a batch of parameter values.
    log_joint_batched: bool = False

    def map_degenerate(self) -> str | None:
        """Why this model's posterior density has no maximum (so that MAP, and SVI started at
        the MAP, cannot work), or None (the default). :func:`bayesattn.inference.fit` refuses
        those methods with this reason."""
        return None

    def prior_log_density(self, draws: dict) -> torch.Tensor | None:
        """``log p(theta_d)`` of each draw, ``(D,)``, vectorised; None = not available (the
        caller then traces the model once per draw). The default is None."""
        return None

    def full_data_bytes(self, data: dict) -> int:
        """Estimated peak memory (bytes) of one full-data likelihood + gradient evaluation.

        What the fitting code compares with the memory it may use before a full-batch method
        (NUTS, full-batch SVI/MAP) starts. ``0`` means unknown (the default).
        """
        return 0

    def likelihood_cost(self, data: dict) -> int:
        """Multiply-adds (order of magnitude) of one full-data likelihood evaluation.

        The default is the number of observed scalars; models with pairwise or cubic work
        override it. The cost of ``log_likelihood`` for ``D`` draws is ``D`` times this.
        """
        obs = data.get(self.obs_name)
        return int(obs.numel()) if isinstance(obs, torch.Tensor) else 0

    def input_coordinate(self, data: dict):
        """The observations' input as one ``(N,)`` tensor, or None (several input columns).

        InferenceData carries it as the coordinate ``x`` along ``obs_id`` (for ``az.plot_lm``).
        """
        return None

    def per_observation_deterministics(self, draws: dict, data: dict) -> dict:
        """Deterministic outputs with one entry per observation, ``{name: (D, N, ...)}``.

        They go to the ``posterior_predictive`` group (not ``posterior``, so that
        ``az.summary`` lists parameters only). The default has none.
        """
        return {}

    def posterior_predictive(self, draws: dict, data: dict, generator) -> torch.Tensor | None:
        """Replicated observations ``(D, ...)``, one data set per draw, vectorised: what Pyro's
        ``Predictive`` draws for the observed site one draw at a time. ``generator`` (a
        ``torch.Generator``) seeds them. None (the default) = not available: the caller runs
        ``Predictive``."""
        return None

    def prior_draws(self, num: int, data: dict) -> dict | None:
        """``num`` draws of every latent site from its prior, ``{name: (num, ...)}``,
        vectorised, from torch's global random state; with :meth:`prior_predictive` they
        give the ``prior`` and ``prior_predictive`` groups. None (the default) = not available:
        the caller traces the program once per draw. ``data`` is the program's (a prior the
        program restricts with the data, as TVA's truncations, must be drawn so). Only for
        models whose latent sites are independent draws from their priors."""
        return None

    def prior_predictive(self, draws: dict, data: dict, generator) -> torch.Tensor | None:
        """Observations ``(D, ...)`` drawn from the program's observed site given each draw of
        :meth:`prior_draws`, ignoring the observed values. The default is
        :meth:`posterior_predictive`, which is that for models whose observations are
        independent of each other given the latents; a model whose replicates condition on the
        observed data (a GP's ``p(y_rep | y, theta)``) overrides it."""
        return self.posterior_predictive(draws, data, generator)

    def deterministics(self, draws: dict, data: dict) -> dict:
        """The program's deterministic sites that are not per observation, ``{name: (D,
        ...)}``, vectorised; used with :meth:`posterior_predictive` (``Predictive`` records them
        otherwise). The default has none."""
        return {}

    def observation_from_site(self, value: torch.Tensor) -> torch.Tensor:
        """The observed site's value in the layout of ``data[obs_name]`` (default: as is)."""
        return value

    def predict(self, query, params: dict, data: dict):
        """Predictive ``(mean (L, Ev), variance (L, Ev))`` of a new observation at ``query``
        given one draw ``params`` (subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict at new queries")

    def predictive_sample(self, query, params: dict, data: dict, generator: torch.Generator,
                          num_samples: int | None = None):
        """One draw ``(L, Ev)`` of a new observation at ``query`` given ``params``, or
        ``num_samples`` independent draws ``(num_samples, L, Ev)`` (the predictive computed
        once for all of them).

        The default samples ``N(mean, variance)`` from :meth:`predict`; mixture models override.
        """
        mean, var = self.predict(query, params, data)
        shape = mean.shape if num_samples is None else (num_samples, *mean.shape)
        eps = torch.randn(shape, dtype=mean.dtype, generator=generator)
        return mean + var.sqrt() * eps

    def exact_posterior(self, data: dict, num_samples: int, generator: torch.Generator):
        """Draws ``{name: (num_samples, ...)}`` from a closed-form posterior.

        Raises:
            NotImplementedError: the model has no closed-form posterior.
        """
        raise NotImplementedError(f"{type(self).__name__} has no closed-form posterior")


def hyperparameter_log_prior(priors: dict, draws: dict) -> torch.Tensor:
    """``sum_k log p_k(draws[k])``, ``(D,)``, over the entries of ``priors`` that are
    distributions (global sites: every dim after the first is summed)."""
    num = num_draws(draws)
    out = torch.zeros(num, dtype=torch.float64)
    for name, prior in priors.items():
        if isinstance(prior, dist.Distribution):
            out = out + prior.log_prob(draws[name]).reshape(num, -1).sum(-1).to(out.dtype)
    return out


def hyperparameter_prior_draws(priors: dict, num: int) -> dict:
    """``num`` independent draws ``{name: (num, ...)}`` of each entry of ``priors`` that is a
    distribution (torch's global random state), vectorised: the ``prior_draws`` of a model
    whose latent sites are exactly these hyperparameters."""
    return {name: prior.sample((num,)) for name, prior in priors.items()
            if isinstance(prior, dist.Distribution)}


def single_input_column(x) -> torch.Tensor | None:
    """The one non-constant column of ``x (N, E)`` (e.g. ``x`` of features ``(1, x)``), or None.

    None when ``x`` is not a 2-D tensor, has no non-constant column (then a single-column ``x``
    is returned as is) or has several.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        return None
    if x.shape[1] == 1:
        return x[:, 0]
    varying = [c for c in range(x.shape[1]) if bool((x[:, c] != x[0, c]).any())]
    return x[:, varying[0]] if len(varying) == 1 else None


def fixed_params(priors: dict, params: dict | None, dtype) -> dict:
    """``params`` completed with the fixed hyperparameters of ``priors`` (as ``dtype`` tensors).

    Raises:
        ValueError: a hyperparameter has a prior (a distribution) and ``params`` lacks it.
    """
    params = dict(params or {})
    for name, v in priors.items():
        if name not in params:
            if isinstance(v, dist.Distribution):
                raise ValueError(f"{name} has a prior: pass its value in params")
            params[name] = torch.as_tensor(v, dtype=dtype)
    return params


def num_draws(draws: dict) -> int:
    """Number of posterior draws ``D`` in ``{name: (D, ...)}`` (1 when there are none).

    Raises:
        ValueError: the draws disagree on ``D``.
    """
    if not draws:  # every hyperparameter fixed: one 'draw' of nothing
        return 1
    sizes = {v.shape[0] for v in draws.values()}
    if len(sizes) != 1:
        raise ValueError(f"draws must share their first (draw) dim, got sizes {sorted(sizes)}")
    return sizes.pop()
