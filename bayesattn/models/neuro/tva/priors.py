"""Prior helpers of the TVA models: float64 defaults and values, a prior truncated above (the
support a fixed threshold leaves), and unchecked copies of priors for fast log joints."""

from __future__ import annotations

import copy
import math

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
