"""Prior helpers of the TVA models: float64 defaults and values, a prior truncated above (the
support a fixed threshold leaves), unchecked copies of priors for fast log joints, and the sum
of their log densities by family (:class:`_PriorSum`)."""

from __future__ import annotations

import copy
import math
from functools import reduce
from operator import add

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution


def _f64(x: float) -> torch.Tensor:
    """A float64 scalar: default priors in float64 so that their draws (and NUTS) are too."""
    return torch.tensor(x, dtype=torch.float64)


def _as64(x):
    """A parameter value as float64 (a user's float32 prior would otherwise lower the
    precision of the whole likelihood)."""
    return x.to(torch.float64) if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _sum_batch(log_prob: torch.Tensor, prior) -> torch.Tensor:
    """``prior.log_prob(value)`` summed over the prior's batch dims: ``(*B,)`` for values with
    leading dims ``B`` before the site's own."""
    nb = len(prior.batch_shape)
    return log_prob.sum(tuple(range(-nb, 0))) if nb else log_prob


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


def _unchecked(prior):
    """A shallow copy of a distribution (and of the distributions inside it) that does not
    validate its arguments: for a potential whose values come from bijections onto the
    support, where the checks would cost more than the density itself."""
    if not isinstance(prior, torch.distributions.Distribution):
        return prior
    prior = copy.copy(prior)
    prior._validate_args = False
    for name in ("base_dist", "base"):
        inner = getattr(prior, name, None)
        if isinstance(inner, torch.distributions.Distribution):
            setattr(prior, name, _unchecked(inner))
    return prior


#: Families whose parameters are exactly their ``arg_constraints`` (keyword arguments of the
#: constructor) and whose log density is elementwise, so that several of them are one instance
#: with the parameters concatenated (:class:`_PriorSum`).
_FAMILIES = ("Normal", "LogNormal", "HalfNormal", "Cauchy", "HalfCauchy", "Laplace", "StudentT",
             "Gamma", "Exponential", "Beta", "Uniform")
_FAMILY_TYPES = frozenset(getattr(m, n) for n in _FAMILIES for m in (torch.distributions, dist))
#: The Gaussian families: one normal density of ``x``, ``log x`` (LogNormal, minus ``log x``)
#: or ``x >= 0`` with loc 0 (HalfNormal, plus ``log 2``).
_GAUSSIAN = {getattr(m, n): n for n in ("Normal", "LogNormal", "HalfNormal")
             for m in (torch.distributions, dist)}
_DIRICHLET = frozenset((torch.distributions.Dirichlet, dist.Dirichlet))
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))  # as torch's Normal.log_prob writes it


def _flat_param(base, key) -> torch.Tensor:
    return torch.broadcast_to(getattr(base, key), base.batch_shape).reshape(-1)


def _concat(values: dict, members) -> torch.Tensor:
    """The values of ``members`` ``[(site, number of the site's dims)]``, each ``(*B, *site)``,
    side by side: ``(*B, total size)`` (one ``stack`` when every site is a scalar)."""
    if all(nd == 0 for _, nd in members):
        return torch.stack([values[name] for name, _ in members], -1)
    return torch.cat([values[name].flatten(-nd) if nd else values[name].unsqueeze(-1)
                      for name, nd in members], -1)


class _Gaussian:
    """The Normal, LogNormal and HalfNormal priors ``[(site, prior)]`` as one normal density
    over the concatenated values (``log`` of the LogNormal ones): Normal's ``log_prob``
    formula, its constants (``2 scale^2``, ``log scale``) computed once in each prior's own
    precision, so that the sum equals each prior's ``log_prob`` in float64 to rounding."""

    def __init__(self, members):
        members = sorted(members, key=lambda m: _GAUSSIAN[type(m[1])] != "LogNormal")
        self.members = [(name, len(base.batch_shape)) for name, base in members]
        self.num_log = sum(_GAUSSIAN[type(b)] == "LogNormal" for _, b in members)
        loc, two_var, const, half = [], [], [], []
        for _, base in members:
            family, scale = _GAUSSIAN[type(base)], _flat_param(base, "scale")
            zero = torch.zeros_like(scale)
            loc.append(zero if family == "HalfNormal" else _flat_param(base, "loc"))
            two_var.append(2 * scale**2)
            shift = math.log(2) if family == "HalfNormal" else 0.0
            const.append(-scale.log().double() - _LOG_SQRT_2PI + shift)
            half.append(torch.full_like(scale, family == "HalfNormal", dtype=torch.bool))
        f64 = torch.float64
        self.loc, self.two_var = torch.cat([x.to(f64) for x in loc]), torch.cat(two_var).to(f64)
        self.const, self.half = torch.cat(const), torch.cat(half)
        self.any_half = bool(self.half.any())

    def __call__(self, values: dict) -> torch.Tensor:
        n, parts = self.num_log, []
        if n:
            logs = _concat(values, self.members[:n]).log()
            parts.append(logs)
        if n < len(self.members):
            parts.append(_concat(values, self.members[n:]))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
        lp = -((x - self.loc) ** 2) / self.two_var + self.const
        if self.any_half:  # HalfNormal: no mass below 0
            lp = torch.where(self.half & (x < 0), -math.inf, lp)
        # LogNormal: minus log|d exp(y)/dy| = y
        return lp.sum(-1) - logs.sum(-1) if n else lp.sum(-1)


class _PriorSum:
    """``values -> sum_k log p_k(values[k])`` over independent priors ``{site: p_k}``, each
    summed over its batch and event dims: ``(*B,)`` for values ``(*B, *site)``.

    The same density as summing ``p_k.log_prob`` site by site, in fewer tensor operations (a
    fast log joint's priors cost a dozen or two instead of one or two hundred):

    - the Normal, LogNormal and HalfNormal priors (also inside ``.to_event``) are one normal
      density over the concatenated values (:class:`_Gaussian`), when every value is float64;
    - the priors of each other scalar family of :data:`_FAMILIES` are one distribution over the
      concatenated values, one per dtype (a float32 prior is computed in float32, as the
      program computes it);
    - a Dirichlet's normalising constant is computed once;
    - other priors (e.g. a truncated prior) are evaluated alone.
    """

    def __init__(self, priors: dict):
        families: dict = {}
        gaussian = []
        self.alone = []  # (site, prior)
        self.dirichlets = []  # (site, concentration - 1, log normaliser, the Dirichlet)
        for name, prior in priors.items():
            base = prior
            while isinstance(base, torch.distributions.Independent):
                base = base.base_dist
            if type(base) in _DIRICHLET:
                a = base.concentration
                self.dirichlets.append((name, a - 1.0, torch.lgamma(a.sum(-1))
                                        - torch.lgamma(a).sum(-1), base))
                continue
            if type(base) in _FAMILY_TYPES and base.event_shape == ():
                if type(base) in _GAUSSIAN:
                    gaussian.append((name, base))
                    continue
                dtypes = {getattr(base, key).dtype for key in base.arg_constraints}
                if len(dtypes) == 1:  # computed in the prior's own precision, as the program does
                    families.setdefault((type(base), *dtypes), []).append((name, base))
                    continue
            self.alone.append((name, prior))
        self.gaussian = _Gaussian(gaussian) if gaussian else None
        self.gaussian_priors = [(name, priors[name]) for name, _ in gaussian]
        self.groups = []  # ([(site, number of the site's dims)], one distribution of the family)
        for (family, _), members in families.items():
            if len(members) == 1:
                self.alone.append((members[0][0], priors[members[0][0]]))
                continue
            params = {key: torch.cat([_flat_param(b, key) for _, b in members])
                      for key in members[0][1].arg_constraints}
            self.groups.append(([(name, len(b.batch_shape)) for name, b in members],
                                family(**params, validate_args=False)))

    def __call__(self, values: dict) -> torch.Tensor:
        terms = []
        alone = self.alone
        if self.gaussian is not None:
            if all(values[name].dtype == torch.float64 for name, _ in self.gaussian_priors):
                terms.append(self.gaussian(values))
            else:  # a float32 value: each prior in its own precision, as the program
                alone = alone + self.gaussian_priors
        for name, prior in alone:
            terms.append(_sum_batch(prior.log_prob(values[name]), prior))
        for name, am1, log_norm, base in self.dirichlets:
            lp = torch.xlogy(am1, values[name]).sum(-1) + log_norm
            terms.append(_sum_batch(lp, base))
        for members, joint in self.groups:
            x = _concat(values, members)
            terms.append(joint.log_prob(x).sum(-1))  # (*B, total size) -> (*B,)
        return reduce(add, terms) if terms else torch.zeros((), dtype=torch.float64)
