"""TVA as a Pyro model with priors for whole or partial report, as the field fits it.

Dyrholm et al. (2011, LibTVA); the probit ``K`` and Gaussian ``t0`` of StanTVA/RStanTVA
(Tuennermann, Krueger & Scharlau 2021).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import biject_to

from ...base import BayesianModel, hyperparameter
from .._common import draws_slices, fixed_or_draw
from ._checks import _check_exposure, _check_report, _check_t0, _check_weights, _threshold
from .capacity import _check_k_probs, _with_k0, k_probabilities, k_probit_probabilities
from .conditions import (
    CONDITION_GROUPS,
    _check_conditions,
    _condition_index,
    _gather,
    _index,
    _per_condition,
)
from .distribution import TVAReport
from .priors import _as64, _f64, _PriorSum, _unchecked, _UpperTruncated
from .race import _plan, _race_log_prob
from .rates import _partial_weights, _rates
from .regions import _parse_regions
from .sets import _check_num_items
from .simulate import simulate_report

__all__ = ["TVA"]


class TVA(BayesianModel):
    """TVA as a Pyro model for whole or partial report (Bundesen 1990; Dyrholm et al. 2011).

    Data (tensors over ``T`` trials, display of ``N`` locations)::

        exposure (T,) ms, reported (T, N) bool [obs; None = simulate]
        partial report only: targets (T, N) bool, distractors (T, N) bool
        condition (T,) int64 in 0..conditions-1 [None only with one condition]

    Each parameter is a fixed value or a Pyro prior (:func:`bayesattn.models.base.hyperparameter`):

    * ``C``: processing capacity (items/s). Default prior ``LogNormal(log 40, 0.6)``.
    * ``K``: VSTM capacity, as the field fits it:

      - fixed: an int in ``1..N``, or a probability tensor ``(N,)`` over ``1..N`` /
        ``(N+1,)`` over ``0..N``;
      - ``"free"``: a free distribution over ``K = 0..N`` (latent ``K_probs``, default prior
        ``Dirichlet(ones(N+1))``; LibTVA's free ``K``). Any distribution with event shape
        ``(N+1,)`` (over ``0..N``) or ``(N,)`` (over ``1..N``) on the simplex is the same;
      - ``"probit"``: ``K = floor(X)`` clipped to ``0..N``, ``X ~ N(mK, sK^2)`` (the
        StanTVA/RStanTVA convention, :func:`k_probit_probabilities`): latent ``mK`` (default
        ``Normal(N/2 + 0.5, 1.5)``) and ``sK`` (default ``HalfNormal(1)``), each overridable
        (``mK=``, ``sK=``: a prior or a fixed value);
      - a distribution over reals in ``[1, N]`` (latent ``K``, the two-point mixture of
        :func:`k_probabilities`; the default ``Uniform(1, N)``, kept for old callers).
    * ``t0``: perception threshold (ms): fixed or with a prior (default ``Normal(15, 15)``);
      with ``t0_sd`` it is the mean ``mu0`` of a Gaussian threshold; with
      ``t0_dist="exponential"`` it is the mean of an exponential threshold (default prior
      ``LogNormal(log 15, 0.75)``). Integrated in closed form (:mod:`.threshold`).
    * ``t0_sd``: trial-to-trial sd ``sigma0`` of a Gaussian ``t0`` (ms): 0 (default, fixed
      ``t0``), a positive value or a prior (e.g. ``HalfNormal(10)``).
    * ``weights``: spatial attentional weights: a distribution on the simplex (default
      ``Dirichlet(2 * ones(R))``), a fixed tensor, or None for equal weights; ``R = N`` or, with
      ``regions``, the number of regions.
    * ``regions``: None (a free weight per location) or a partition of the locations into
      regions that share one weight: a sequence of sequences of 0-based location indices, or a
      string of 1-based ranges such as ``"1-3,4-6"`` (locations 1-3 share a weight, 4-6
      another). Location ``j`` then has weight ``weights[region of j]``.
    * ``alpha``: distractor weight (partial report only). Default ``LogNormal(log 0.5, 0.75)``.
    * ``num_nodes``: ignored (kept so that old calls work; ``t0`` is integrated exactly).
    * ``conditions``: the number of experimental conditions (data ``condition (T,)`` int64 in
      ``0..conditions-1``; default 1, no condition data needed).
    * ``by_condition``: the parameters that differ between conditions, among ``"C"``,
      ``"alpha"``, ``"weights"``, ``"K"`` (every latent ``K`` parameter: ``mK`` and ``sK``, or
      ``K_probs``/``K``) and ``"t0"`` (the latent ones of ``t0`` and ``t0_sd``). Each such site
      gets a condition axis just before its event dims (a scalar ``(conditions,)``, the weights
      ``(conditions, R)``; ArviZ dim ``"condition"``), with independent copies of its prior;
      the others are shared by all conditions.

    Data masks may be bool or 0/1 integer tensors. Sites: ``C``, ``t0`` (``mu0`` of a Gaussian
    threshold), ``t0_sd`` (``sigma0``), ``mK``, ``sK``, ``K`` / ``K_probs``, ``weights``
    (per region when ``regions`` is given), ``alpha``.

    Deterministic site ``attention_weights (N,)``: the normalised location weights
    ``w / sum w = softmax(log w)``, the share of ``C`` each location gets in whole report (and
    ``K_mean``, the mean VSTM capacity, when ``K`` is latent).

    Raises:
        ValueError: ``paradigm`` not ``"whole"``/``"partial"``; ``num_locations`` outside
            ``1..MAX_ITEMS``; a fixed ``K`` outside ``1..N``; fixed weights not of shape ``(R,)``;
            ``regions`` not a partition of ``0..N-1``; ``t0_dist`` unknown; ``conditions`` not a
            positive int; ``by_condition`` naming an unknown parameter, a fixed one, or
            ``"alpha"`` in whole report.
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
        num_nodes: int | None = None,
        mK=None,
        sK=None,
        regions=None,
        t0_dist: str = "normal",
        conditions: int = 1,
        by_condition: Sequence[str] = (),
    ):
        self.num_locations = _check_num_items(num_locations)
        n = self.num_locations
        if paradigm not in ("whole", "partial"):
            raise ValueError(f"paradigm must be 'whole' or 'partial', got {paradigm!r}")
        if t0_dist not in ("normal", "exponential"):
            raise ValueError(f"t0_dist must be 'normal' or 'exponential', got {t0_dist!r}")
        self.paradigm = paradigm
        self.t0_dist = t0_dist
        self.C = dist.LogNormal(_f64(math.log(40.0)), 0.6) if C is None else C
        self.mK = self.sK = None
        self._probit = isinstance(K, str) and K == "probit"
        if isinstance(K, str):
            if K == "free":
                K = dist.Dirichlet(torch.ones(n + 1, dtype=torch.float64))
            elif K == "probit":
                self.mK = dist.Normal(_f64(n / 2 + 0.5), 1.5) if mK is None else mK
                self.sK = dist.HalfNormal(_f64(1.0)) if sK is None else sK
            else:
                raise ValueError(f"K must be an int, 'free', 'probit' or a prior, got {K!r}")
        self.K = dist.Uniform(_f64(1.0), float(n)) if K is None else K
        if n == 1 and K is None:
            self.K = 1
        if not isinstance(self.K, dist.Distribution | str):
            self._fixed_k_probs()  # validates
        if t0 is None:
            t0 = (
                dist.LogNormal(_f64(math.log(15.0)), 0.75)
                if t0_dist == "exponential"
                else dist.Normal(_f64(15.0), 15.0)
            )
        self.t0 = t0
        self.t0_sd = t0_sd
        self.regions, self._region_index = _parse_regions(regions, n)
        r = len(self.regions)
        if isinstance(weights, str) and weights == "prior":
            weights = dist.Dirichlet(torch.full((r,), 2.0, dtype=torch.float64))
        if weights is None:
            weights = torch.ones(r, dtype=torch.float64)
        if not isinstance(weights, dist.Distribution):
            weights = _check_weights(torch.as_tensor(weights, dtype=torch.float64))
            if weights.shape != (r,):
                what = "(N,)" if r == n and regions is None else "(number of regions,)"
                raise ValueError(f"fixed weights must have shape {what} = ({r},)")
        self.weights = weights
        self.alpha = dist.LogNormal(_f64(math.log(0.5)), 0.75) if alpha is None else alpha
        self.num_nodes = num_nodes
        self.conditions, self.by_condition = _check_conditions(conditions, by_condition)
        for group in self.by_condition:
            if group == "alpha" and paradigm != "partial":
                raise ValueError("by_condition names 'alpha', which only partial report has")
            if not any(self._is_latent(name) for name in CONDITION_GROUPS[group]):
                raise ValueError(
                    f"by_condition names {group!r}, but it is fixed: give it a prior to let it "
                    "differ between conditions"
                )

    # -- helpers
    def _is_latent(self, name: str) -> bool:
        """Whether site ``name`` is sampled (has a prior) in this model."""
        if name == "alpha" and self.paradigm != "partial":
            return False
        if name in ("K", "K_probs"):
            return self._k_site() == name
        return isinstance(getattr(self, name, None), dist.Distribution)

    def _varies(self, name: str) -> bool:
        """Whether site ``name`` (or ``k_probs``) carries a condition axis."""
        if name == "k_probs":
            return "K" in self.by_condition
        return self._is_latent(name) and any(name in CONDITION_GROUPS[g] for g in self.by_condition)

    def _prior(self, name: str, prior):
        """``prior`` with independent copies per condition when ``name`` varies."""
        if not (isinstance(prior, dist.Distribution) and self._varies(name)):
            return prior
        return prior.expand(torch.Size([self.conditions]) + prior.batch_shape).to_event(1)

    def param_dims(self) -> dict[str, list[str]]:
        """ArviZ dims of the sites with a condition axis (the leading ``"condition"``)."""
        out = {}
        names = ["C", "t0", "t0_sd", "mK", "sK", "K", "K_probs", "weights", "alpha"]
        for name in names:
            if self._varies(name):
                out[name] = ["condition"]
        if "weights" in self.by_condition:
            out["attention_weights"] = ["condition"]
        if "K" in self.by_condition:
            out["K_mean"] = ["condition"]
        return out

    def _fixed_k_probs(self) -> torch.Tensor:
        n = self.num_locations
        K = self.K
        if isinstance(K, torch.Tensor) and K.dim() >= 1:
            return _check_k_probs(K.to(torch.float64), n)
        return k_probabilities(K, n)

    def _k_site(self):
        if isinstance(self.K, dist.Distribution):
            n = self.num_locations
            return "K_probs" if self.K.event_shape in ((n,), (n + 1,)) else "K"
        return None

    def _k_probs_of(self, value) -> torch.Tensor:
        """``(..., N+1)`` probabilities of ``K = 0..N`` from the K site's value(s)."""
        n = self.num_locations
        if self._k_site() == "K_probs":
            return _with_k0(torch.as_tensor(value, dtype=torch.float64), n)
        return _with_k0(k_probabilities(torch.as_tensor(value, dtype=torch.float64), n), n)

    def _location_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Weights per location ``(..., N)`` from the weights per region ``(..., R)``."""
        if self._region_index is None:
            return weights
        return weights[..., self._region_index]

    def latent_names(self) -> list[str]:
        names = []
        for name in ("C", "t0", "t0_sd", "mK", "sK"):
            if isinstance(getattr(self, name), dist.Distribution):
                names.append(name)
        if self._k_site():
            names.append(self._k_site())
        if isinstance(self.weights, dist.Distribution):
            names.append("weights")
        if self.paradigm == "partial" and isinstance(self.alpha, dist.Distribution):
            names.append("alpha")
        return names

    def _support_bounds(self, exposure, reported, condition):
        """Priors restricted to where the likelihood of ``reported`` is positive.

        With a fixed ``t0`` (``t0_sd = 0``) nothing can be reported when ``exposure <= t0``, so
        ``t0`` must lie below the shortest exposure with a report (in each condition, when
        ``t0`` varies by condition); with a real-valued ``K``, a report of ``r`` items needs
        ``K > r - 1``. Truncating the priors there leaves the posterior unchanged (the
        likelihood is 0 outside) but keeps NUTS and SVI guides out of the impossible region (an
        SVI guide on the untruncated prior would put mass there and give an infinite loss).
        Returns the priors of ``t0`` and of the ``K`` site, with their condition axes.
        """
        t0_prior = self._prior("t0", self.t0)
        k_prior = self._prior(self._k_site() or "K", self.K)  # "K_probs" for a free K
        if reported is None or not bool(reported.any()):
            return t0_prior, k_prior
        c = self.conditions
        fixed_sd = (
            self.t0_dist == "normal"
            and not isinstance(self.t0_sd, dist.Distribution)
            and float(self.t0_sd) == 0.0
        )
        if fixed_sd and isinstance(self.t0, dist.Distribution) and self.t0.event_shape == ():
            some = reported.any(-1)
            if self._varies("t0"):
                bound = _per_condition(exposure[some], condition[some], c, "amin", math.inf)
                t0_prior = _UpperTruncated(self.t0.expand([c]), bound).to_event(1)
            else:
                t0_prior = _UpperTruncated(self.t0, exposure[some].min())
        k = self.K
        if isinstance(k, dist.Uniform) and k.event_shape == () and k.batch_shape == ():
            if self._varies("K"):
                r_max = _per_condition(reported.sum(-1), condition, c, "amax", 0.0)
            else:
                r_max = reported.sum(-1).max().to(torch.float64)
            low = torch.clamp(torch.as_tensor(k.low, dtype=torch.float64), min=r_max - 1)
            high = torch.as_tensor(k.high, dtype=torch.float64).expand(low.shape)
            if bool((low < high).all()):
                k_prior = dist.Uniform(low, high)
                if self._varies("K"):
                    k_prior = k_prior.to_event(1)
        return t0_prior, k_prior

    def _params(self, t0_prior, k_prior, draw=None) -> dict:
        """Every parameter, condition axes kept: a fixed one as a float64 tensor, a sampled
        one as ``draw(name, prior)`` gives it (default: ``pyro.sample`` in the program)."""

        def site(name, value):
            if draw is None or not isinstance(value, dist.Distribution):
                return hyperparameter(name, value)
            return draw(name, value)

        n = self.num_locations
        C = site("C", self._prior("C", self.C))
        t0 = site("t0", t0_prior)
        t0_sd = site("t0_sd", self._prior("t0_sd", self.t0_sd))
        k_site = self._k_site()
        if self._probit:
            mK = site("mK", self._prior("mK", self.mK))
            sK = site("sK", self._prior("sK", self.sK))
            k_probs = k_probit_probabilities(mK, sK, n)
        elif k_site is None:
            k_probs = _with_k0(self._fixed_k_probs(), n)
        else:
            k_probs = self._k_probs_of(site(k_site, k_prior))
        weights = self._location_weights(site("weights", self._prior("weights", self.weights)))
        alpha = None
        if self.paradigm == "partial":
            alpha = site("alpha", self._prior("alpha", self.alpha))
        values = {"C": C, "t0": t0, "t0_sd": t0_sd, "k_probs": k_probs, "weights": weights}
        return {**{k: _as64(v) for k, v in values.items()}, "alpha": _as64(alpha)}

    def _per_trial(self, params: dict, condition: torch.Tensor) -> dict:
        """Each parameter ``(..., T|1, *event)`` for the trials of ``condition (T,)``."""
        events = {"k_probs": 1, "weights": 1}
        return {
            k: _gather(v, condition, events.get(k, 0), self._varies(k)) for k, v in params.items()
        }

    def _item_weights(self, weights, alpha, targets, distractors):
        if self.paradigm == "whole":
            return weights, None
        if targets is None or distractors is None:
            raise ValueError("partial report needs data 'targets' and 'distractors' (T, N) bool")
        return _partial_weights(weights, alpha, targets, distractors)

    def _check_data(self, exposure, reported, targets, distractors):
        exposure = _check_exposure(exposure)
        n = self.num_locations
        if reported is not None:
            reported = _check_report(reported, n)
            if isinstance(self.K, numbers.Integral) and bool((reported.sum(-1) > self.K).any()):
                raise ValueError(
                    f"a trial reports more than K={self.K} items, impossible with a fixed K; "
                    "raise K or give K a prior"
                )
        if targets is not None:
            targets = _check_report(targets, n, name="targets")
        if distractors is not None:
            distractors = _check_report(distractors, n, name="distractors")
        return exposure, reported, targets, distractors

    def _observe(self, exposure, reported, targets, distractors, p):
        """The observed report site given per-trial parameters ``p`` (:meth:`_per_trial`)."""
        item_weights, reportable = self._item_weights(
            p["weights"], p["alpha"], targets, distractors
        )
        if reported is not None:
            if bool((reported & (item_weights.detach() <= 0)).any()):
                raise ValueError("reported contains an item at an empty location (weight 0)")
            if reportable is not None and bool((reported & ~reportable).any()):
                raise ValueError("reported contains an item that is not a target")
        num_trials = exposure.shape[0]
        with pyro.plate("trials", num_trials):
            d = TVAReport(exposure, **self._race_kwargs(p, item_weights, reportable),
                          validate_args=False)
            return pyro.sample(self.obs_name, d.expand([num_trials]), obs=reported)

    def _race_kwargs(self, p: dict, item_weights, reportable) -> dict:
        """The race's parameters for :class:`TVAReport` and :func:`simulate_report`."""
        return dict(C=p["C"], weights=item_weights, t0=p["t0"], k_probs=p["k_probs"],
                    t0_sd=p["t0_sd"], reportable=reportable, t0_dist=self.t0_dist)

    def model(self, exposure, reported=None, targets=None, distractors=None, condition=None):
        """The Pyro program; see the class docstring for the data.

        ``condition`` is an int64 tensor ``(T,)`` in ``0..conditions-1`` (None only when the
        model has one condition).

        Raises:
            ValueError: bad data (see :func:`.likelihood.report_log_prob`); with a fixed
                integer ``K``, a trial reporting more than ``K`` items (impossible under the model);
                ``condition`` missing (several conditions), of the wrong shape or out of range.
            TypeError: ``condition`` is not an integer tensor.
        """
        exposure, reported, targets, distractors = self._check_data(
            exposure, reported, targets, distractors
        )
        condition = _condition_index(condition, exposure.shape[0], self.conditions)
        params = self._params(*self._support_bounds(exposure, reported, condition))
        for name, value in self._deterministic_values(params).items():
            pyro.deterministic(name, value)
        params["t0"], params["t0_sd"] = _check_t0(params["t0"], params["t0_sd"])
        p = self._per_trial(params, condition)
        return self._observe(exposure, reported, targets, distractors, p)

    log_joint_batched = True

    def log_joint_fn(self, data: dict):
        """``values -> log p(values, reported)``, the Pyro program's log joint, fast (for NUTS).

        The same density as :meth:`model` (the priors, their truncation by
        :meth:`_support_bounds`, and the report likelihood; deterministic sites add nothing),
        computed without Pyro's tracing, with the data checked once, and with the trials grouped
        by display -- (condition, exposure, targets, distractors) -- so that each display's
        ``2^N`` decays are computed once however many trials repeat it (:func:`.race._plan`).

        Args:
            data: as :meth:`model`, with the observed ``reported``.

        Returns:
            A function of ``{site: value}`` (every :meth:`latent_names` site, constrained, with
            its condition axis) returning a float64 scalar; None when ``data`` has no reports,
            or when a prior has no bijection onto its support (a discrete prior: NUTS cannot
            sample it, and MAP then optimises through the traced program).
            Values with leading batch dims ``(*B, *site)`` (e.g. several chains) give
            ``(*B,)``.

        Raises:
            ValueError, TypeError: bad data, as :meth:`model`.
        """
        displays = self._displays(data)
        if displays is None:
            return None
        condition = displays["condition"]
        t0_prior, k_prior = self._support_bounds(
            displays["trial_exposure"], displays["reported"], condition
        )
        cond_u = condition[displays["first"]]
        priors = {}

        def record(name, prior):  # a point of each prior's support: no random draws
            priors[name] = _unchecked(prior)
            to_support = biject_to(prior.support)
            return to_support(torch.zeros(to_support.inverse_shape(prior.shape()),
                                          dtype=torch.float64))

        try:
            self._params(t0_prior, k_prior, record)  # the sampled sites and their priors, once
        except NotImplementedError:  # a prior with no bijection onto its support (discrete)
            return None
        prior_sum = _PriorSum(priors) if priors else None

        def log_joint(values: dict) -> torch.Tensor:
            params = self._params(t0_prior, k_prior, lambda name, _: values[name])
            params["t0"], params["t0_sd"] = _check_t0(params["t0"], params["t0_sd"])
            lp = self._displays_log_lik(displays, self._per_trial(params, cond_u))
            return lp if prior_sum is None else prior_sum(values) + lp

        return log_joint

    def _displays(self, data: dict, indices: Sequence[tuple[str, int]] = ()) -> dict | None:
        """The observed trials of ``data`` (checked) grouped by display, for
        :meth:`_displays_log_lik`: trials with equal condition, ``indices`` (names of further
        int64 ``(T,)`` data columns and their sizes, e.g. ``(("subject", S),)``), exposure and
        (partial report) targets and distractors share one display row ``U``.

        Returns None when ``data`` has no reports; else a dict: ``first (U,)`` (a trial of
        each display row), the rows' ``exposure (U,)`` and
        ``targets``/``distractors (U, N)`` (None in whole report); the distinct (display,
        report) pairs ``W <= T`` as ``row_display (W,)``, ``row_reported (W, N)`` and
        ``row_counts (W,)`` (float64 number of trials) and each trial's row ``trial_row (T,)``,
        with the race ``plan`` over them
        (:func:`.race._plan`); and per trial the observed ``reported (T, N)``,
        ``trial_exposure (T,)``, ``condition (T,)`` and each of ``indices``.

        Raises:
            ValueError, TypeError: bad data, as :meth:`model`; partial report without targets
                and distractors, or a reported item that is not a target.
        """
        exposure, reported, targets, distractors = self._check_data(
            data["exposure"], data.get(self.obs_name), data.get("targets"), data.get("distractors")
        )
        if reported is None:
            return None
        num_trials = exposure.shape[0]
        index = {name: _index(name, data.get(name), num_trials, size) for name, size in indices}
        index["condition"] = _condition_index(data.get("condition"), num_trials, self.conditions)
        columns = [k[:, None].to(torch.float64) for k in index.values()] + [exposure[:, None]]
        if self.paradigm == "partial":
            if targets is None or distractors is None:
                raise ValueError(
                    "partial report needs data 'targets' and 'distractors' (T, N) bool"
                )
            if bool((reported & ~targets).any()):
                raise ValueError("reported contains an item that is not a target")
            columns += [targets.to(torch.float64), distractors.to(torch.float64)]
        _, display = torch.unique(torch.cat(columns, -1), dim=0, return_inverse=True)
        num_displays = int(display.max()) + 1
        first = torch.full((num_displays,), num_trials, dtype=torch.long).scatter_reduce(
            0, display, torch.arange(num_trials), reduce="amin"
        )
        # trials with the same display and the same report have the same probability: the
        # race sums run once per such (display, report) row, weighted by its count of trials
        rows, row, counts = torch.unique(
            torch.cat([display[:, None], reported.long()], -1), dim=0, return_inverse=True,
            return_counts=True)
        row_display, row_reported = rows[:, 0], rows[:, 1:].bool()
        hidden = (torch.zeros_like(row_reported) if distractors is None
                  else distractors[first][row_display])
        return {
            "first": first,
            "exposure": exposure[first],
            "targets": None if targets is None else targets[first],
            "distractors": None if distractors is None else distractors[first],
            "row_display": row_display,
            "row_reported": row_reported,
            "row_counts": counts.to(torch.float64),
            "trial_row": row,
            "plan": _plan(row_reported, hidden, row_display),
            "reported": reported,
            "trial_exposure": exposure,
            **index,
        }

    def _displays_log_lik(self, displays: dict, p: dict) -> torch.Tensor:
        """``log p(reports)`` ``(...)``, summed over the trials of :meth:`_displays`, from
        per-display parameters ``p`` ``(..., U|1, ...)`` (:meth:`_per_trial` on the rows'
        conditions).

        Raises:
            ValueError: a reported item at a location of weight 0.
        """
        return (self._displays_row_log_prob(displays, p) * displays["row_counts"]).sum(-1)

    def _displays_row_log_prob(self, displays: dict, p: dict) -> torch.Tensor:
        """``log P(report)`` ``(..., W)`` of each distinct (display, report) row of
        :meth:`_displays` (arguments and errors as :meth:`_displays_log_lik`)."""
        display, reported = displays["row_display"], displays["row_reported"]
        item_weights, _ = self._item_weights(
            p["weights"], p["alpha"], displays["targets"], displays["distractors"]
        )
        num_displays = displays["first"].shape[0]
        item_weights = item_weights.expand(
            *item_weights.shape[:-2], num_displays, item_weights.shape[-1]
        )
        if bool((reported & (item_weights.detach() <= 0).index_select(-2, display)).any()):
            raise ValueError("reported contains an item at an empty location (weight 0)")
        rates = _rates(p["C"], item_weights)
        k_probs = p["k_probs"]
        if k_probs.shape[-2] > 1:
            k_probs = k_probs.index_select(-2, display)
        t0_sd = p["t0_sd"]
        kind = "fixed" if t0_sd is None and self.t0_dist == "normal" else self.t0_dist
        rows = rates.shape[:-1]
        log_prob = _race_log_prob(
            displays["plan"],
            reported,
            rates,
            k_probs,
            displays["exposure"].expand(rows),
            p["t0"].expand(rows),
            None if t0_sd is None else t0_sd.expand(rows),
            kind,
            compiled=True,  # once differentiable: NUTS and the pointwise log-likelihood
        )
        return log_prob

    def _draw_params(self, chunk: dict, num: int) -> dict:
        """The parameters of ``num`` draws ``(D, [conditions,] ...)`` (fixed ones repeated)."""
        n = self.num_locations
        if self._probit:
            k_probs = k_probit_probabilities(
                fixed_or_draw(chunk, "mK", self.mK, num),
                fixed_or_draw(chunk, "sK", self.sK, num),
                n,
            )
        elif self._k_site() is None:
            k_probs = _with_k0(self._fixed_k_probs(), n).expand(num, n + 1)
        else:
            k_probs = self._k_probs_of(chunk[self._k_site()])
        return {
            "C": fixed_or_draw(chunk, "C", self.C, num),
            "t0": fixed_or_draw(chunk, "t0", self.t0, num),
            "t0_sd": fixed_or_draw(chunk, "t0_sd", self.t0_sd, num),
            "k_probs": k_probs,
            "weights": self._location_weights(fixed_or_draw(chunk, "weights", self.weights, num)),
            "alpha": fixed_or_draw(chunk, "alpha", self.alpha, num)
            if self.paradigm == "partial"
            else None,
        }

    def _deterministic_values(self, params: dict) -> dict:
        """The program's deterministic sites from its parameters (:meth:`_params`, or
        :meth:`_draw_params` with a leading draw dim): ``K_mean`` (a latent ``K``; ``E[K]``
        over ``0..N``) and the normalised ``attention_weights``."""
        out = {}
        if self._probit or self._k_site() is not None:
            k_probs = params["k_probs"]
            out["K_mean"] = (k_probs * torch.arange(k_probs.shape[-1], dtype=k_probs.dtype)).sum(-1)
        weights = params["weights"]
        out["attention_weights"] = weights / weights.sum(-1, keepdim=True)
        return out

    @torch.no_grad()
    def prior_draws(self, num: int, data: dict) -> dict:
        """``num`` draws of every latent site from the program's priors, ``{name: (num,
        ...)}``, vectorised (torch's global random state): with reports in ``data``, ``t0``
        and a real-valued ``K`` come from the priors that :meth:`_support_bounds` truncates, as
        in the program.

        Raises:
            ValueError, TypeError: bad data, as :meth:`model`.
        """
        exposure, reported, _, _ = self._check_data(
            data["exposure"], data.get(self.obs_name), data.get("targets"),
            data.get("distractors"))
        condition = _condition_index(data.get("condition"), exposure.shape[0], self.conditions)
        draws = {}

        def draw(name, prior):
            draws[name] = prior.sample((num,))
            return draws[name]

        self._params(*self._support_bounds(exposure, reported, condition), draw)
        return draws

    def _index_columns(self) -> tuple:
        """Data columns besides ``condition`` that select a trial's parameters, with their
        sizes (``(("subject", S),)`` for a hierarchical model)."""
        return ()

    def _trial_index(self, data: dict, num_trials: int) -> dict:
        """The checked index columns of ``data`` that :meth:`_draw_trial_params` needs."""
        index = {name: _index(name, data.get(name), num_trials, size)
                 for name, size in self._index_columns()}
        index["condition"] = _condition_index(data.get("condition"), num_trials, self.conditions)
        return index

    def _draw_trial_params(self, chunk: dict, num: int, index: dict) -> dict:
        """Per-trial parameters ``(D, T|1, ...)`` of ``num`` draws (as :meth:`_per_trial`;
        ``t0_sd`` None for a fixed threshold, :func:`_threshold`)."""
        return _threshold(self._per_trial(self._draw_params(chunk, num), index["condition"]))

    def _draw_deterministics(self, chunk: dict, num: int) -> dict:
        """:meth:`_deterministic_values` of ``num`` draws, ``{site: (D, ...)}``."""
        return self._deterministic_values(self._draw_params(chunk, num))

    def _chunk(self, num_trials: int) -> int:
        """Draws per vectorised pass over ``num_trials`` trials (about 30,000 trial-draws)."""
        return max(1, min(64, 30_000 // max(num_trials, 1)))

    @torch.no_grad()
    def deterministics(self, draws: dict, data: dict) -> dict:
        """The deterministic sites of each draw, ``{site: (D, ...)}``, vectorised (what
        Pyro's ``Predictive`` records one draw at a time): ``K_mean`` and
        ``attention_weights`` (and, hierarchical, each subject-level parameter)."""
        parts = [self._draw_deterministics(chunk, num)
                 for chunk, num in draws_slices(draws, self._chunk(1))]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}

    @torch.no_grad()
    def posterior_predictive(self, draws: dict, data: dict, generator) -> torch.Tensor | None:
        """Replicated reports ``(D, T, N)`` bool, one data set per draw, vectorised over draws
        (:func:`simulate_report` with each draw's per-trial parameters; the same distribution
        as the program's observed site). None without draws.

        Raises:
            ValueError: bad ``exposure``, ``condition`` (or ``subject``), targets or
                distractors, as :meth:`model`.
        """
        exposure = _check_exposure(data["exposure"])
        num_trials = exposure.shape[0]
        index = self._trial_index(data, num_trials)
        out = []
        for chunk, num in draws_slices(draws, self._chunk(num_trials)):
            p = self._draw_trial_params(chunk, num, index)
            item_weights, reportable = self._item_weights(
                p["weights"], p["alpha"], data.get("targets"), data.get("distractors"))
            out.append(simulate_report(exposure, **self._race_kwargs(p, item_weights, reportable),
                                       generator=generator))
        return torch.cat(out) if out else None

    def log_likelihood(self, draws: dict[str, torch.Tensor], data: dict) -> torch.Tensor:
        """Pointwise log-likelihood ``(D, T)``, vectorised over draws (in chunks of at most 64).

        Trials are grouped as in :meth:`log_joint_fn`: each distinct (display, report) row is
        evaluated once per draw and copied to its trials.

        Raises:
            ValueError: ``data`` lacks the observed reports, or is bad as for :meth:`model`.
        """
        displays = self._displays(data, self._index_columns())
        if displays is None:
            raise ValueError("log_likelihood needs the observed 'reported' in data")
        first = displays["first"]
        index = {k: displays[k][first] for k in ("condition", *dict(self._index_columns()))}
        out = []
        for chunk, num in draws_slices(draws, self._chunk(first.shape[0])):
            lp = self._displays_row_log_prob(displays, self._draw_trial_params(chunk, num, index))
            lp = lp.expand(num, lp.shape[-1]) if lp.dim() == 1 else lp
            out.append(lp.index_select(-1, displays["trial_row"]))
        return torch.cat(out, 0)
