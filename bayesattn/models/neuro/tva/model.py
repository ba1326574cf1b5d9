"""TVA as a Pyro model with priors for whole or partial report (Dyrholm et al. 2011)."""

from __future__ import annotations

import math
import numbers

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from ...base import BayesianModel, hyperparameter
from .._common import draws_slices, fixed_or_draw
from ._checks import _check_exposure, _check_report, _check_t0, _check_weights
from .capacity import _check_k_probs, k_probabilities
from .distribution import TVAReport
from .likelihood import report_log_prob
from .rates import _partial_weights
from .sets import _check_num_items

__all__ = ["TVA"]


class _UpperTruncated(TorchDistribution):
    """A univariate distribution truncated to ``x < upper`` (needs ``cdf``/``icdf``)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base, upper, validate_args=None):
        self.base = base
        self.upper = torch.as_tensor(upper, dtype=torch.float64)
        self._log_mass = torch.log(base.cdf(self.upper))
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self):
        return constraints.less_than(self.upper)

    def log_prob(self, value):
        lp = self.base.log_prob(value) - self._log_mass
        return torch.where(value < self.upper, lp, -math.inf)

    def sample(self, sample_shape=()):
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.batch_shape
            u = torch.rand(shape, dtype=torch.float64) * torch.exp(self._log_mass)
            return torch.minimum(self.base.icdf(u), self.upper - 1e-9)

    def expand(self, batch_shape, _instance=None):
        return _UpperTruncated(self.base.expand(batch_shape), self.upper)


class TVA(BayesianModel):
    """TVA as a Pyro model for whole or partial report (Bundesen 1990; Dyrholm et al. 2011).

    Data (tensors over ``T`` trials, display of ``N`` locations)::

        exposure (T,) ms, reported (T, N) bool [obs; None = simulate]
        partial report only: targets (T, N) bool, distractors (T, N) bool

    Each parameter is a fixed value or a Pyro prior (:func:`bayesattn.models.base.hyperparameter`):

    * ``C``: processing capacity (items/s). Default prior ``LogNormal(log 40, 0.6)``.
    * ``K``: VSTM capacity: an int in ``1..N`` (fixed); a probability tensor ``(N,)``; a
      distribution over reals in ``[1, N]`` (latent ``K``, read by :func:`k_probabilities` as a
      mixture of ``floor K`` and ``floor K + 1``; default ``Uniform(1, N)``); or a distribution
      with event shape ``(N,)`` on the simplex (latent ``K_probs``, a free distribution over
      ``1..N`` as in LibTVA).
    * ``t0``: perception threshold (ms). Default prior ``Normal(15, 15)``.
    * ``t0_sd``: trial-to-trial sd of ``t0`` (ms); default 0 (fixed ``t0``).
    * ``weights``: spatial attentional weights ``(N,)``: a distribution on the simplex (default
      ``Dirichlet(2 * ones(N))``), a fixed tensor, or None for equal weights.
    * ``alpha``: distractor weight (partial report only). Default ``LogNormal(log 0.5, 0.75)``.

    Deterministic site ``attention_weights (N,)``: the normalised spatial weights
    ``w / sum w = softmax(log w)``, the share of ``C`` each location gets in whole report (and
    ``K_mean``, the mean VSTM capacity, when ``K`` is latent).

    Raises:
        ValueError: ``paradigm`` not ``"whole"``/``"partial"``; ``num_locations`` outside
            ``1..MAX_ITEMS``; a fixed ``K`` outside ``1..N``; fixed weights not of shape ``(N,)``.
    """

    obs_name = "reported"

    def __init__(
        self,
        num_locations: int = 6,
        *,
        paradigm: str = "whole",
        C=None,
        K=None,
        t0=None,
        t0_sd=0.0,
        weights="prior",
        alpha=None,
        num_nodes: int = 32,
    ):
        self.num_locations = _check_num_items(num_locations)
        n = self.num_locations
        if paradigm not in ("whole", "partial"):
            raise ValueError(f"paradigm must be 'whole' or 'partial', got {paradigm!r}")
        self.paradigm = paradigm
        self.C = dist.LogNormal(math.log(40.0), 0.6) if C is None else C
        self.K = dist.Uniform(1.0, float(n)) if K is None else K
        if n == 1 and K is None:
            self.K = 1
        if not isinstance(self.K, dist.Distribution):
            self._fixed_k_probs()  # validates
        self.t0 = dist.Normal(15.0, 15.0) if t0 is None else t0
        self.t0_sd = t0_sd
        if isinstance(weights, str) and weights == "prior":
            weights = dist.Dirichlet(torch.full((n,), 2.0, dtype=torch.float64))
        if weights is None:
            weights = torch.ones(n, dtype=torch.float64)
        if not isinstance(weights, dist.Distribution):
            weights = _check_weights(torch.as_tensor(weights, dtype=torch.float64))
            if weights.shape != (n,):
                raise ValueError(f"fixed weights must have shape (N,) = ({n},)")
        self.weights = weights
        self.alpha = dist.LogNormal(math.log(0.5), 0.75) if alpha is None else alpha
        self.num_nodes = num_nodes

    # -- helpers
    def _fixed_k_probs(self) -> torch.Tensor:
        n = self.num_locations
        K = self.K
        if isinstance(K, torch.Tensor) and K.dim() >= 1:
            return _check_k_probs(K.to(torch.float64), n)
        return k_probabilities(K, n)

    def _k_site(self):
        if isinstance(self.K, dist.Distribution):
            return "K_probs" if self.K.event_shape == (self.num_locations,) else "K"
        return None

    def latent_names(self) -> list[str]:
        names = []
        for name in ("C", "t0", "t0_sd"):
            if isinstance(getattr(self, name), dist.Distribution):
                names.append(name)
        if self._k_site():
            names.append(self._k_site())
        if isinstance(self.weights, dist.Distribution):
            names.append("weights")
        if self.paradigm == "partial" and isinstance(self.alpha, dist.Distribution):
            names.append("alpha")
        return names

    def _support_bounds(self, exposure, reported):
        """Priors restricted to where the likelihood of ``reported`` is positive.

        With a fixed ``t0`` (``t0_sd = 0``) nothing can be reported when ``exposure <= t0``, so
        ``t0`` must lie below the shortest exposure with a report; with a real-valued ``K``, a
        report of ``r`` items needs ``K > r - 1``. Truncating the priors there leaves the
        posterior unchanged (the likelihood is 0 outside) but keeps NUTS and SVI guides out of
        the impossible region (an SVI guide on the untruncated prior would put mass there and
        give an infinite loss).
        """
        t0_prior, k_prior = self.t0, self.K
        if reported is None or not bool(reported.any()):
            return t0_prior, k_prior
        fixed_sd = not isinstance(self.t0_sd, dist.Distribution) and float(self.t0_sd) == 0.0
        if fixed_sd and isinstance(t0_prior, dist.Distribution) and t0_prior.event_shape == ():
            bound = exposure[reported.any(-1)].min()
            t0_prior = _UpperTruncated(t0_prior, bound)
        if isinstance(k_prior, dist.Uniform) and k_prior.event_shape == ():
            r_max = float(reported.sum(-1).max())
            low = torch.clamp(torch.as_tensor(k_prior.low, dtype=torch.float64), min=r_max - 1)
            if bool((low < k_prior.high).all()):
                k_prior = dist.Uniform(low, k_prior.high)
        return t0_prior, k_prior

    def _params(self, t0_prior=None, k_prior=None):
        """Sample or fix every parameter (inside the Pyro program)."""
        n = self.num_locations
        C = hyperparameter("C", self.C)
        t0 = hyperparameter("t0", self.t0 if t0_prior is None else t0_prior)
        t0_sd = hyperparameter("t0_sd", self.t0_sd)
        site = self._k_site()
        if site is None:
            k_probs = self._fixed_k_probs()
        else:
            k = pyro.sample(site, self.K if k_prior is None else k_prior)
            k_probs = k if site == "K_probs" else k_probabilities(k, n)
            pyro.deterministic(
                "K_mean", (k_probs * torch.arange(1, n + 1, dtype=k_probs.dtype)).sum(-1)
            )
        weights = (
            pyro.sample("weights", self.weights)
            if isinstance(self.weights, dist.Distribution)
            else self.weights
        )
        alpha = hyperparameter("alpha", self.alpha) if self.paradigm == "partial" else None
        return C, t0, t0_sd, k_probs, weights, alpha

    def _item_weights(self, weights, alpha, targets, distractors):
        if self.paradigm == "whole":
            return weights, None
        if targets is None or distractors is None:
            raise ValueError("partial report needs data 'targets' and 'distractors' (T, N) bool")
        return _partial_weights(weights, alpha, targets, distractors)

    def model(self, exposure, reported=None, targets=None, distractors=None):
        """The Pyro program; see the class docstring for the data.

        Raises:
            ValueError: bad data (see :func:`report_log_prob`), or, with a fixed integer ``K``,
                a trial reporting more than ``K`` items (impossible under the model).
        """
        exposure = _check_exposure(exposure)
        n = self.num_locations
        if reported is not None:
            _check_report(reported, n)
            if isinstance(self.K, numbers.Integral) and bool((reported.sum(-1) > self.K).any()):
                raise ValueError(
                    f"a trial reports more than K={self.K} items, impossible with a fixed K; "
                    "raise K or give K a prior"
                )
        C, t0, t0_sd, k_probs, weights, alpha = self._params(
            *self._support_bounds(exposure, reported)
        )
        pyro.deterministic("attention_weights", weights / weights.sum(-1, keepdim=True))
        item_weights, reportable = self._item_weights(weights, alpha, targets, distractors)
        if reported is not None:
            if bool((reported & (item_weights.detach() <= 0)).any()):
                raise ValueError("reported contains an item at an empty location (weight 0)")
            if reportable is not None and bool((reported & ~reportable).any()):
                raise ValueError("reported contains an item that is not a target")
        t0, t0_sd = _check_t0(t0, t0_sd)
        num_trials = exposure.shape[0]
        with pyro.plate("trials", num_trials):
            d = TVAReport(
                exposure,
                C=C,
                weights=item_weights,
                t0=t0,
                k_probs=k_probs,
                t0_sd=t0_sd,
                reportable=reportable,
                num_nodes=self.num_nodes,
                validate_args=False,
            )
            return pyro.sample(self.obs_name, d.expand([num_trials]), obs=reported)

    def log_likelihood(self, draws: dict[str, torch.Tensor], data: dict) -> torch.Tensor:
        """Pointwise log-likelihood ``(D, T)``, vectorised over draws (in chunks of 64).

        Raises:
            ValueError: ``data`` lacks the observed reports.
        """
        reported = data.get(self.obs_name)
        if reported is None:
            raise ValueError("log_likelihood needs the observed 'reported' in data")
        n = self.num_locations
        exposure = _check_exposure(data["exposure"])
        out = []
        for chunk, num in draws_slices(draws, 64):
            C = fixed_or_draw(chunk, "C", self.C, num)[:, None]
            t0 = fixed_or_draw(chunk, "t0", self.t0, num)[:, None]
            t0_sd = fixed_or_draw(chunk, "t0_sd", self.t0_sd, num)[:, None]
            site = self._k_site()
            if site is None:
                k_probs = self._fixed_k_probs().expand(num, n)
            elif site == "K_probs":
                k_probs = torch.as_tensor(chunk["K_probs"], dtype=torch.float64)
            else:
                k_probs = k_probabilities(torch.as_tensor(chunk["K"], dtype=torch.float64), n)
            weights = fixed_or_draw(chunk, "weights", self.weights, num)
            alpha = (
                fixed_or_draw(chunk, "alpha", self.alpha, num)[:, None]
                if self.paradigm == "partial"
                else None
            )
            item_weights, reportable = self._item_weights(
                weights[:, None, :], alpha, data.get("targets"), data.get("distractors")
            )
            out.append(
                report_log_prob(
                    reported,
                    exposure,
                    C=C,
                    weights=item_weights,
                    t0=t0,
                    k_probs=k_probs[:, None, :],
                    t0_sd=None if not bool((t0_sd > 0).any()) else t0_sd,
                    reportable=reportable,
                    num_nodes=self.num_nodes,
                )
            )
        return torch.cat(out, 0)
