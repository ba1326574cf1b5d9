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


class _PriorSum:
    """``values -> sum_k log p_k(values[k])`` over independent priors ``{site: p_k}``, each
    summed over its batch and event dims: ``(*B,)`` for values ``(*B, *site)``.

    The same density as summing ``p_k.log_prob`` site by site, but the priors of one scalar
    family (:data:`_FAMILIES`, also inside ``.to_event``) are evaluated as one distribution over
    the concatenated values: a fast log joint's priors then cost a few dozen tensor operations
    instead of one or two hundred (each ``LogNormal`` alone runs its transform and Jacobian).
    Other priors (e.g. a ``Dirichlet``, a truncated prior) are evaluated alone.
    """

    def __init__(self, priors: dict):
        families: dict = {}
        self.alone = []  # (site, prior)
        for name, prior in priors.items():
            base = prior
            while isinstance(base, torch.distributions.Independent):
                base = base.base_dist
            if type(base) in _FAMILY_TYPES and base.event_shape == ():
                dtypes = {getattr(base, key).dtype for key in base.arg_constraints}
                if len(dtypes) == 1:  # computed in the prior's own precision, as the program does
                    families.setdefault((type(base), *dtypes), []).append((name, base))
                    continue
            self.alone.append((name, prior))
        self.groups = []  # ([(site, number of the site's dims)], one distribution of the family)
        for (family, _), members in families.items():
            if len(members) == 1:
                self.alone.append((members[0][0], priors[members[0][0]]))
                continue
            params = {key: torch.cat([torch.broadcast_to(getattr(b, key), b.batch_shape).reshape(-1)
                                      for _, b in members])
                      for key in members[0][1].arg_constraints}
            self.groups.append(([(name, len(b.batch_shape)) for name, b in members],
                                family(**params, validate_args=False)))

    def __call__(self, values: dict) -> torch.Tensor:
        terms = []
        for name, prior in self.alone:
            terms.append(_sum_batch(prior.log_prob(values[name]), prior))
        for members, joint in self.groups:
            x = torch.cat([values[name].flatten(-nd) if nd else values[name].unsqueeze(-1)
                           for name, nd in members], -1)  # (*B, total size)
            terms.append(joint.log_prob(x).sum(-1))
        return reduce(add, terms) if terms else torch.zeros((), dtype=torch.float64)
