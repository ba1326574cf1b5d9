r"""Hierarchical TVA over subjects: population model (non-centred or centred), per-condition
effects.

A TVA study fits many subjects at once (the hierarchical models of StanTVA/RStanTVA,
Tuennermann, Krueger & Scharlau 2021; ``docs/design.md``, "Neuroscience-style models"). Each
latent TVA parameter ``p`` of subject ``s`` in condition ``c`` is a transform ``g`` of an
unconstrained value

.. math:: x_{s,c} = \mu_p + \beta_{p,c} + \sigma_p\, z_{p,s,c}, \qquad z \sim N(0, 1),

with ``beta_{p,0} = 0`` (condition 0 is the baseline; ``beta_{p,c}`` the effect of condition
``c``; without ``p`` in ``by_condition`` there is no ``beta`` and one ``z`` per subject).
``deviation`` says how a subject departs from the population across conditions:
``"condition"`` (default) draws an independent ``z_{p,s,c}`` for every subject and condition
(lme4's ``(1 | subject:condition)``: each condition's value is its own draw, so the effect of a
condition varies between subjects with sd ``sqrt(2) sigma_p``); ``"subject"`` draws one
``z_{p,s}`` shared by the subject's conditions (``(1 | subject)``: every subject shifts by the
same ``beta_{p,c}``, and the trials of all conditions inform the subject's one deviation). This is
the non-centred parametrisation (Papaspiliopoulos, Roberts & Skoeld 2007; Betancourt &
Girolami 2015), which NUTS samples without the funnel of the centred one when the data say
little about each subject. With many trials per subject the data pin each ``x`` down and the
centred form ``x_{s,c} ~ N(mu_p + beta_{p,c}, sigma_p^2)`` mixes better (the population sd is
then informed by nearly independent ``x``; in the non-centred form ``sigma_p`` and ``z`` are
tightly coupled by the data): ``centered=True``, or the names of the parameters to centre
(e.g. ``centered=("C", "mK")``: centre those the data pin down, keep the weakly informed ones
non-centred). The transforms:

=========== ==================== ===============================================
parameter   unconstrained ``x``  ``g(x)``
=========== ==================== ===============================================
``C``       ``log C``            ``exp``
``alpha``   ``log alpha``        ``exp``
``weights`` ``R - 1`` logits     ``softmax([x, 0])`` (the last region is the reference)
``t0``      ``mu0`` (ms)         identity (Gaussian ``t0``); ``exp`` (exponential)
``t0_sd``   ``log sigma0``       ``exp``
``mK``      ``mK``               identity
``sK``      ``log sK``           ``exp``
``K_probs`` ``k - 1`` logits     ``softmax([x, 0])``
=========== ==================== ===============================================

Latent sites per parameter ``p``: ``p_mu`` (population mean of ``x``), ``p_sigma`` (population
sd), ``p_effect`` (``(conditions - 1, ...)``, only when ``p`` varies by condition) and ``p_z``
(``(S, [conditions,] ...)``; centred: ``p_x``, the unconstrained subject values themselves).
The subject-level values ``g(x)`` are deterministic sites named as in
:class:`~bayesattn.models.neuro.tva.TVA` (``C``, ``alpha``, ``weights``, ``t0``, ``t0_sd``,
``mK``, ``sK``, ``K_probs``) with a leading subject axis.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch

from ._checks import _check_t0, _threshold
from .capacity import _with_k0, k_probit_probabilities
from .conditions import _condition_index, _index
from .model import TVA
from .priors import _as64, _f64, _PriorSum, _unchecked

__all__ = ["HierarchicalTVA"]

_ORDER = ("C", "alpha", "weights", "t0", "t0_sd", "mK", "sK", "K_probs")


class HierarchicalTVA(TVA):
    """TVA fitted to many subjects at once, with per-condition effects.

    Data (tensors over ``T`` trials of all subjects)::

        exposure (T,) ms, reported (T, N) bool [obs; None = simulate]
        partial report: targets (T, N), distractors (T, N) bool
        subject (T,) int64 in 0..num_subjects-1 [None only with one subject]
        condition (T,) int64 in 0..conditions-1 [None only with one condition]

    Args:
        num_subjects: ``S``, the number of subjects.
        num_locations: display size ``N``.
        paradigm, K, t0, t0_sd, weights, alpha, mK, sK, regions, t0_dist, conditions,
            by_condition: as in :class:`~bayesattn.models.neuro.tva.TVA`. A parameter given a
            prior there (a distribution, or the default) is hierarchical here (the prior's own
            form is not used: see ``priors``); a fixed value is shared by every subject.
            ``K`` is ``"probit"`` (default here), ``"free"`` or fixed.
        priors: overrides of the hyperpriors, ``{site: distribution}``, for the sites
            ``<p>_mu``, ``<p>_sigma`` and ``<p>_effect`` (module docstring). A scalar
            distribution is expanded to the site's shape; defaults (unconstrained scale):
            ``C_mu ~ N(log 40, 0.5)``, ``alpha_mu ~ N(log 0.5, 0.75)``, ``weights_mu ~
            N(0, 0.5)``, ``t0_mu ~ N(15, 10)`` (exponential ``t0``: ``N(log 15, 0.75)``),
            ``t0_sd_mu ~ N(log 8, 0.75)``, ``mK_mu ~ N(N/2 + 0.5, 1.5)``, ``sK_mu ~
            N(log 0.6, 0.75)``, ``K_probs_mu ~ N(0, 1.5)``; every ``<p>_sigma ~ HalfNormal(0.5)``
            except ``t0_sigma ~ HalfNormal(10)`` (ms) and ``mK_sigma ~ HalfNormal(1)``; every
            ``<p>_effect ~ N(0, 0.5)`` except ``t0_effect ~ N(0, 10)`` and
            ``mK_effect ~ N(0, 1)``.
        centered: False (default): the non-centred population model, latent ``<p>_z``; True:
            the centred one, latent ``<p>_x`` (module docstring); or a collection of parameter
            names (``"C"``, ``"mK"``, ...) to centre, the others non-centred. Every choice
            defines the same posterior of the subject-level parameters; they differ in how
            well NUTS samples it. MAP is degenerate for a centred parameter (the density grows
            without bound as its population sd goes to 0; :func:`~bayesattn.inference.fit`
            refuses it, see :meth:`map_degenerate`): use centring with NUTS. With
            ``deviation="subject"`` a centred ``<p>_x`` is the subject's value in condition 0.
        deviation: ``"condition"`` (default; one deviation ``z`` per subject and condition,
            independent) or ``"subject"`` (one per subject, shared across conditions; the
            subject-level sites ``<p>_z``/``<p>_x`` then have shape ``(S, *u)``): module
            docstring. Only matters for the parameters in ``by_condition``.

    Works with :func:`bayesattn.inference.fit` (``"nuts"``, ``"map"``, ``"svi"``): the
    latents are the hyper-sites; :meth:`log_likelihood` is pointwise per trial.

    Raises:
        ValueError: ``num_subjects`` not a positive int; ``centered`` not a bool or names of
            this model's hierarchical parameters; ``deviation`` not ``"condition"`` or
            ``"subject"``; ``K`` a prior over real capacities
            (the two-point ``K``: use ``"probit"`` or ``"free"``); ``priors`` naming an unknown
            site or with a shape that does not fit; and the errors of
            :class:`~bayesattn.models.neuro.tva.TVA`.
    """

    def __init__(
        self,
        num_subjects: int,
        num_locations: int = 6,
        *,
        paradigm: str = "whole",
        C=None,
        K="probit",
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
        priors: Mapping | None = None,
        centered: bool | Sequence[str] = False,
        deviation: str = "condition",
    ):
        super().__init__(
            num_locations,
            paradigm=paradigm,
            C=C,
            K=K,
            t0=t0,
            t0_sd=t0_sd,
            weights=weights,
            alpha=alpha,
            num_nodes=num_nodes,
            mK=mK,
            sK=sK,
            regions=regions,
            t0_dist=t0_dist,
            conditions=conditions,
            by_condition=by_condition,
        )
        if isinstance(num_subjects, bool) or not isinstance(num_subjects, numbers.Integral):
            raise ValueError(f"num_subjects must be a positive int, got {num_subjects!r}")
        if num_subjects < 1:
            raise ValueError(f"num_subjects must be a positive int, got {num_subjects}")
        if self._k_site() == "K":
            raise ValueError(
                "HierarchicalTVA takes K as 'probit', 'free' or fixed, not a prior over real "
                "capacities"
            )
        self.num_subjects = int(num_subjects)
        if deviation not in ("condition", "subject"):
            raise ValueError(f"deviation must be 'condition' or 'subject', got {deviation!r}")
        #: ``"condition"``: a subject deviation per condition; ``"subject"``: one, shared
        self.deviation = deviation
        self._shapes = self._unconstrained_shapes()
        if isinstance(centered, bool):
            centered = list(self._shapes) if centered else []
        elif isinstance(centered, str) or not isinstance(centered, Sequence | set | frozenset):
            raise ValueError(f"centered must be True, False or a collection of parameter "
                             f"names, got {centered!r}")
        unknown = sorted(set(centered) - set(self._shapes))
        if unknown:
            raise ValueError(f"centered names {', '.join(map(repr, unknown))}, not hierarchical "
                             f"parameters of this model ({', '.join(self._shapes)})")
        #: the parameters sampled centred (sites ``<p>_x``); the others non-centred (``<p>_z``)
        self.centered = frozenset(centered)
        self._priors = self._hyperpriors(dict(priors or {}))

    # -- structure
    def _unconstrained_shapes(self) -> dict[str, tuple]:
        """The hierarchical parameters and the shape of their unconstrained value."""
        shapes = {}
        for name in _ORDER:
            if not self._is_latent(name):
                continue
            if name == "weights":
                r = len(self.regions)
                if r > 1:
                    shapes[name] = (r - 1,)
            elif name == "K_probs":
                shapes[name] = (self.K.event_shape[-1] - 1,)
            else:
                shapes[name] = ()
        return shapes

    def _hyperpriors(self, overrides: dict) -> dict:
        n = self.num_locations
        log_t0 = self.t0_dist == "exponential"
        mean = {
            "C": dist.Normal(_f64(math.log(40.0)), 0.5),
            "alpha": dist.Normal(_f64(math.log(0.5)), 0.75),
            "weights": dist.Normal(_f64(0.0), 0.5),
            "t0": dist.Normal(_f64(math.log(15.0)), 0.75)
            if log_t0
            else dist.Normal(_f64(15.0), 10.0),
            "t0_sd": dist.Normal(_f64(math.log(8.0)), 0.75),
            "mK": dist.Normal(_f64(n / 2 + 0.5), 1.5),
            "sK": dist.Normal(_f64(math.log(0.6)), 0.75),
            "K_probs": dist.Normal(_f64(0.0), 1.5),
        }
        out = {}
        for name, shape in self._shapes.items():
            linear_t0 = name == "t0" and not log_t0
            out[f"{name}_mu"] = (mean[name], shape)
            sd = 10.0 if linear_t0 else 1.0 if name == "mK" else 0.5
            out[f"{name}_sigma"] = (dist.HalfNormal(_f64(sd)), shape)
            if self._has_effect(name):
                eff = 10.0 if linear_t0 else 1.0 if name == "mK" else 0.5
                out[f"{name}_effect"] = (dist.Normal(_f64(0.0), eff), (self.conditions - 1, *shape))
        for key, prior in overrides.items():
            if key not in out:
                raise ValueError(
                    f"priors names unknown site {key!r}; this model's hyper-sites are "
                    f"{', '.join(out)}"
                )
            if not isinstance(prior, dist.Distribution):
                raise ValueError(f"priors[{key!r}] must be a pyro distribution, got {prior!r}")
            out[key] = (prior, out[key][1])
        return {k: _shaped(k, p, s) for k, (p, s) in out.items()}

    def _has_effect(self, name: str) -> bool:
        return self.conditions > 1 and self._varies(name)

    def latent_names(self) -> list[str]:
        names = []
        for name in self._shapes:
            names += [f"{name}_mu", f"{name}_sigma"]
            if self._has_effect(name):
                names.append(f"{name}_effect")
            names.append(self._subject_site(name))
        return names

    def map_degenerate(self) -> str | None:
        """Why this model's posterior density has no maximum, or None: a centred parameter's
        density grows without bound as its population sd goes to 0 with every subject at the
        population mean (the centred funnel). :func:`~bayesattn.inference.fit` refuses MAP
        (and SVI started at the MAP) when this is not None."""
        if not self.centered:
            return None
        names = ", ".join(sorted(self.centered))
        return (f"centered={names}: the density is unbounded as a population sd goes to 0; "
                "the non-centred parametrisation (centered=False) has a mode")

    def _subject_site(self, name: str) -> str:
        """The latent subject-level site of ``name``: ``<name>_x`` (centred) or ``_z``."""
        return f"{name}_x" if name in self.centered else f"{name}_z"

    def param_dims(self) -> dict[str, list[str]]:
        """ArviZ dims: ``subject`` (and ``condition``) for the subject-level sites and ``z``;
        ``contrast`` (condition ``j + 1`` against condition 0) for the effects."""
        out = {}
        for name in list(self._shapes) + ["attention_weights", "K_mean"]:
            varies = (
                "weights" in self.by_condition
                if name == "attention_weights"
                else "K" in self.by_condition
                if name == "K_mean"
                else self._varies(name)
            )
            dims = ["subject", "condition"] if varies else ["subject"]
            out[name] = dims
            if name in self._shapes:
                out[self._subject_site(name)] = (
                    dims if self._per_condition(name) else ["subject"])
                if self._has_effect(name):
                    out[f"{name}_effect"] = ["contrast"]
        return out

    def _per_condition(self, name: str) -> bool:
        """Whether ``name``'s subject-level site has a condition axis (a deviation per
        subject and condition)."""
        return self._varies(name) and self.deviation == "condition"

    def _z_shape(self, name: str) -> tuple:
        cond = (self.conditions,) if self._per_condition(name) else ()
        return (self.num_subjects, *cond, *self._shapes[name])

    # -- transforms (vectorised over leading draw dims)
    def _offsets(self, name: str, values: dict):
        """The condition effects ``(..., 1, C, *u)`` of ``name`` with the baseline's 0 in
        front (a subject axis of 1); None without effects."""
        if not self._has_effect(name):
            return None
        ue = len(self._shapes[name])
        effect = values[f"{name}_effect"]  # (..., C - 1, *u)
        zero = torch.zeros_like(effect.narrow(effect.dim() - 1 - ue, 0, 1))
        offsets = torch.cat([zero, effect], -1 - ue)
        return offsets.unsqueeze(offsets.dim() - 1 - ue)

    def _population(self, name: str, values: dict):
        """Population mean ``(..., 1, C|1, *u)`` and sd ``(..., 1, 1, *u)`` of ``x`` of
        ``name`` (a subject axis of 1, the condition axis 1 unless ``name`` has effects)."""
        ue = len(self._shapes[name])
        mu, sigma = values[f"{name}_mu"], values[f"{name}_sigma"]
        mean = mu.unsqueeze(mu.dim() - ue).unsqueeze(mu.dim() - ue)  # (..., 1, 1, *u)
        offsets = self._offsets(name, values)
        if offsets is not None:
            mean = mean + offsets
        scale = sigma.unsqueeze(sigma.dim() - ue).unsqueeze(sigma.dim() - ue)
        return mean, scale

    def _site_prior(self, name: str, values: dict):
        """Mean and sd of a centred site ``<name>_x``, broadcastable to its shape
        (:meth:`_z_shape`): per condition ``(..., 1, C|1, *u)``; shared, the population
        mean of condition 0 and its sd, ``(..., 1, *u)``."""
        if self._per_condition(name):
            return self._population(name, values)
        ue = len(self._shapes[name])
        mu, sigma = values[f"{name}_mu"], values[f"{name}_sigma"]
        return mu.unsqueeze(mu.dim() - ue), sigma.unsqueeze(sigma.dim() - ue)

    def _subject_x(self, name: str, values: dict) -> torch.Tensor:
        """Unconstrained subject values ``x (..., S, C|1, *u)`` from hyper-site values."""
        ue = len(self._shapes[name])
        site = values[self._subject_site(name)]
        if not self._per_condition(name):
            site = site.unsqueeze(site.dim() - ue)  # (..., S, 1, *u)
        if name in self.centered:
            offsets = None if self._per_condition(name) else self._offsets(name, values)
            # shared: the subject's condition-0 value, shifted per condition
            return site if offsets is None else site + offsets
        mean, scale = self._population(name, values)
        return mean + scale * site

    def _subject_values(self, values: dict) -> dict:
        """Subject-level parameters ``{p: (..., S, C|1, *event)}`` from hyper-site values."""
        return {name: _constrain(name, self._subject_x(name, values), self.t0_dist)
                for name in self._shapes}

    def _subject_log_prob(self, values: dict) -> torch.Tensor:
        """``log p`` of the subject-level sites given the population, summed: ``(*B,)`` (the
        standard normal ``z``, or centred ``N(x; mean, sd)``)."""
        total = torch.zeros((), dtype=torch.float64)
        for name in self._shapes:
            if name not in self.centered:
                total = total + _standard_normal_log_prob(values[f"{name}_z"],
                                                          len(self._z_shape(name)))
                continue
            x = values[f"{name}_x"]  # (..., S, [C,] *u)
            mean, scale = self._site_prior(name, values)
            dims = len(self._z_shape(name))
            log_scale = torch.log(scale).expand(x.shape).flatten(x.dim() - dims).sum(-1)
            total = total + _standard_normal_log_prob((x - mean) / scale, dims) - log_scale
        return total

    def _trial_params(self, subj: dict, subject, condition) -> dict:
        """Per-trial parameters ``(..., T|1, ...)`` as :meth:`TVA._per_trial` gives them."""
        events = {"weights": 1, "K_probs": 1}
        vals = {}
        for name in ("C", "alpha", "weights", "t0", "t0_sd", "mK", "sK", "K_probs"):
            e = events.get(name, 0)
            if name in subj:
                x = subj[name]
                c = x.shape[x.dim() - 1 - e]
                flat = x.reshape(*x.shape[: x.dim() - 2 - e], -1, *x.shape[x.dim() - e :])
                idx = subject * c + (condition if c > 1 else 0)
                vals[name] = flat.index_select(flat.dim() - 1 - e, idx)
            else:
                fixed = self._fixed_value(name)
                vals[name] = None if fixed is None else fixed.unsqueeze(fixed.dim() - e)
        if "t0_sd" not in subj and float(self.t0_sd) == 0.0:
            vals["t0_sd"] = None  # a fixed threshold
        n = self.num_locations
        if self._probit:
            k_probs = k_probit_probabilities(vals["mK"], vals["sK"], n)
        elif self._k_site() is None:
            k_probs = _with_k0(self._fixed_k_probs(), n)[None]
        else:
            k_probs = _with_k0(vals["K_probs"], n)
        return {
            "C": vals["C"],
            "t0": vals["t0"],
            "t0_sd": vals["t0_sd"],
            "k_probs": k_probs,
            "weights": self._location_weights(vals["weights"]),
            "alpha": vals["alpha"],
        }

    def _fixed_value(self, name: str):
        if name == "alpha" and self.paradigm != "partial":
            return None
        if name == "weights":
            w = self.weights
            if isinstance(w, dist.Distribution):  # one region: every weight 1
                return torch.ones(len(self.regions), dtype=torch.float64)
            return w
        value = getattr(self, name, None)
        if value is None or isinstance(value, dist.Distribution):
            return None  # not a parameter of this model (e.g. K_probs with a probit K)
        return torch.as_tensor(value, dtype=torch.float64)

    # -- the Pyro program
    def model(
        self,
        exposure,
        reported=None,
        targets=None,
        distractors=None,
        subject=None,
        condition=None,
    ):
        """The Pyro program; see the class docstring for the data.

        Raises:
            ValueError: bad data (see :meth:`TVA.model`); ``subject`` or ``condition`` missing
                (several subjects/conditions), of the wrong shape or out of range.
            TypeError: ``subject`` or ``condition`` is not an integer tensor.
        """
        exposure, reported, targets, distractors = self._check_data(
            exposure, reported, targets, distractors
        )
        num_trials = exposure.shape[0]
        subject = _index("subject", subject, num_trials, self.num_subjects)
        condition = _condition_index(condition, num_trials, self.conditions)
        values = {}
        for name in self._shapes:
            for part in ("mu", "sigma", "effect"):
                key = f"{name}_{part}"
                if key in self._priors:
                    values[key] = _as64(pyro.sample(key, self._priors[key]))
            shape = self._z_shape(name)
            if name in self.centered:
                mean, scale = self._site_prior(name, values)
                prior = dist.Normal(mean.expand(shape), scale.expand(shape))
            else:
                prior = dist.Normal(torch.zeros((), dtype=torch.float64), 1.0).expand(shape)
            site = self._subject_site(name)
            values[site] = pyro.sample(site, prior.to_event(len(shape)))
        subj = self._subject_values(values)
        for name, value in self._subject_deterministics(subj).items():
            pyro.deterministic(name, value)
        p = self._trial_params(subj, subject, condition)
        p["t0"], p["t0_sd"] = _check_t0(p["t0"], p["t0_sd"])
        return self._observe(exposure, reported, targets, distractors, p)

    def log_joint_fn(self, data: dict):
        """``values -> log p(values, reported)``, the Pyro program's log joint, fast (for NUTS).

        The density of :meth:`model` -- hyperpriors, the standard normal ``z`` and the report
        likelihood of every subject -- without Pyro's tracing; the data are checked once and
        the trials grouped by display (subject, condition, exposure, targets, distractors), so
        that each display's ``2^N`` decays are computed once (:meth:`TVA._displays`).

        Args:
            data: as :meth:`model`, with the observed ``reported``.

        Returns:
            A function of ``{site: value}`` (every :meth:`latent_names` site) returning a
            float64 scalar; None when ``data`` has no reports. Values with leading batch dims
            ``(*B, *site)`` give ``(*B,)``.

        Raises:
            ValueError, TypeError: bad data, as :meth:`model`.
        """
        displays = self._displays(data, self._index_columns())
        if displays is None:
            return None
        first = displays["first"]
        subject_u, cond_u = displays["subject"][first], displays["condition"][first]
        prior_sum = _PriorSum({key: _unchecked(prior) for key, prior in self._priors.items()})

        def log_joint(values: dict) -> torch.Tensor:
            p = self._trial_params(self._subject_values(values), subject_u, cond_u)
            p["t0"], p["t0_sd"] = _check_t0(p["t0"], p["t0_sd"])
            return (prior_sum(values) + self._subject_log_prob(values)
                    + self._displays_log_lik(displays, p))

        return log_joint

    def _subject_deterministics(self, subj: dict) -> dict:
        """The program's deterministic sites from the subject-level values (leading dims
        allowed): each parameter ``(S, [C,] *event)`` (the condition axis only when it
        varies), ``attention_weights (S, [C,] N)`` and ``K_mean (S, [C])``."""
        out = {}
        for name, x in subj.items():
            e = 1 if name in ("weights", "K_probs") else 0
            out[name] = x if self._varies(name) else x.squeeze(x.dim() - 1 - e)
        if "weights" in subj:
            w = self._location_weights(subj["weights"])
            w = w / w.sum(-1, keepdim=True)
            out["attention_weights"] = w if "weights" in self.by_condition else w.squeeze(-2)
        if self._probit and ("mK" in subj or "sK" in subj):
            mK = subj["mK"] if "mK" in subj else self._fixed_value("mK")
            sK = subj["sK"] if "sK" in subj else self._fixed_value("sK")
            kp = k_probit_probabilities(mK, sK, self.num_locations)
        elif "K_probs" in subj:
            kp = _with_k0(subj["K_probs"], self.num_locations)
        else:
            return out
        k_mean = (kp * torch.arange(kp.shape[-1], dtype=kp.dtype)).sum(-1)  # (S, C|1)
        out["K_mean"] = k_mean if "K" in self.by_condition else k_mean[..., 0]
        return out

    # -- vectorised evaluation of draws
    log_likelihood_sums_to_joint = True

    def prior_log_density(self, draws: dict) -> torch.Tensor:
        """``log p(theta_d)`` of the hyper-site draws, ``(D,)``."""
        total = 0.0
        for name in self._shapes:
            for part in ("mu", "sigma", "effect"):
                key = f"{name}_{part}"
                if key in self._priors:
                    total = total + self._priors[key].log_prob(draws[key])
        draws = {k: _as64(torch.as_tensor(v)) for k, v in draws.items()}
        total = total + self._subject_log_prob(draws)
        return torch.as_tensor(total, dtype=torch.float64)

    def prior_draws(self, num: int, data: dict) -> None:
        """None: the subject-level sites depend on the population's, so the prior group comes
        from tracing the program (not :meth:`TVA.prior_draws`, whose sites are independent)."""
        return None

    def _index_columns(self) -> tuple:
        return (("subject", self.num_subjects),)

    def _draw_trial_params(self, chunk: dict, num: int, index: dict) -> dict:
        chunk = {k: _as64(torch.as_tensor(v)) for k, v in chunk.items()}
        subj = self._subject_values(chunk)
        return _threshold(self._trial_params(subj, index["subject"], index["condition"]))

    def _draw_deterministics(self, chunk: dict, num: int) -> dict:
        chunk = {k: _as64(torch.as_tensor(v)) for k, v in chunk.items()}
        return self._subject_deterministics(self._subject_values(chunk))


def _standard_normal_log_prob(z: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last ``event_dims`` dims of ``z``: ``(*B,)``."""
    z = z.flatten(z.dim() - event_dims)
    return -0.5 * (z * z).sum(-1) - 0.5 * math.log(2 * math.pi) * z.shape[-1]


def _shaped(key: str, prior, shape: tuple):
    """``prior`` with batch shape ``shape`` moved to the event (one site of that shape).

    Raises:
        ValueError: ``prior`` has a batch or event shape that does not fit ``shape``.
    """
    shape = torch.Size(shape)
    full = prior.batch_shape + prior.event_shape
    if full == shape:
        return prior.to_event(len(prior.batch_shape)) if prior.batch_shape else prior
    if prior.event_shape == () and prior.batch_shape == ():
        return prior.expand(shape).to_event(len(shape)) if shape else prior
    raise ValueError(
        f"priors[{key!r}] has shape {tuple(full)}; the site has shape {tuple(shape)} "
        "(a scalar prior is expanded)"
    )


def _constrain(name: str, x: torch.Tensor, t0_dist: str) -> torch.Tensor:
    """The constrained parameter from its unconstrained value (module docstring)."""
    if name in ("weights", "K_probs"):
        return torch.softmax(torch.cat([x, torch.zeros_like(x[..., :1])], -1), -1)
    if name in ("t0", "mK") and not (name == "t0" and t0_dist == "exponential"):
        return x
    return torch.exp(x)
