"""The shortcuts of the NUTS potential for fast log joints give torch's own densities.

``flat_potential`` maps the sites on ``(lb, inf)`` and on the real line together, on the flat
vector, instead of through each site's ``ComposeTransform``; ``_PriorSum`` evaluates priors of
one family as one distribution. The references are the site-by-site computations with torch's
transforms (:func:`potential_from_log_joint`) and each prior's own ``log_prob``.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import biject_to, constraints

from bayesattn.inference.nuts import _FLAT, _elementwise, flat_potential, potential_from_log_joint
from bayesattn.models.neuro.tva.priors import _FAMILIES, _PriorSum

F64 = torch.float64

#: One site per kind of support: (constraint, site shape).
SITES = {
    "positive": (constraints.positive, (2,)),
    "shifted": (constraints.greater_than(2.5), ()),
    "bounds": (constraints.greater_than(torch.tensor([-1.0, 0.5, 3.0], dtype=F64)), (3,)),
    "real": (constraints.real, (2,)),
    "simplex": (constraints.simplex, (4,)),
    "simplices": (constraints.simplex, (2, 3)),  # one per condition
    "unit": (constraints.unit_interval, ()),
}


def _log_joint(values):
    """A density that couples every site (so each gradient entry is exercised), accepting
    leading batch dims."""
    x = [values[k].reshape(*values[k].shape[:values[k].dim() - len(SITES[k][1])], -1)
         for k in SITES]
    x = torch.cat(x, -1)
    w = torch.linspace(-1.0, 1.0, x.shape[-1], dtype=F64)
    return -0.5 * ((x * w).sum(-1) - 1.0) ** 2 - 0.1 * (x**2).sum(-1)


@pytest.mark.parametrize("batch", [(), (3,)])
def test_flat_potential_is_the_site_by_site_potential(batch):
    transforms = {k: biject_to(c).inv for k, (c, _) in SITES.items()}
    initial = {k: transforms[k](biject_to(c)(torch.zeros(biject_to(c).inverse_shape(shape),
                                                         dtype=F64)))
               for k, (c, shape) in SITES.items()}
    kinds = {k: _elementwise(t) for k, t in transforms.items()}
    assert kinds["positive"] == 0.0 and kinds["shifted"] == 2.5
    assert torch.equal(kinds["bounds"], torch.tensor([-1.0, 0.5, 3.0], dtype=F64))
    assert kinds["real"] == -float("inf")
    assert kinds["simplex"] is None and kinds["unit"] is None
    flat, potential = flat_potential(_log_joint, initial, transforms)
    ndims = {k: v.dim() for k, v in initial.items()} if batch else None
    reference = potential_from_log_joint(_log_joint, transforms, ndims)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        z = 1.5 * torch.randn(*batch, flat.size, generator=g, dtype=F64)
        z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
        got = potential({_FLAT: z1})
        want = reference(flat.unpack(z2))
        assert got.shape == batch
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-12)
        torch.testing.assert_close(torch.autograd.grad(got.sum(), z1)[0],
                                   torch.autograd.grad(want.sum(), z2)[0], rtol=1e-12, atol=1e-12)


def test_elementwise_shortcut_only_for_a_unit_scale_shift():
    assert _elementwise(biject_to(constraints.interval(0.0, 2.0)).inv) is None
    scaled = torch.distributions.transforms.ComposeTransform(
        [torch.distributions.transforms.ExpTransform(),
         torch.distributions.transforms.AffineTransform(1.0, 2.0)]).inv
    assert _elementwise(scaled) is None
    assert _elementwise(biject_to(constraints.less_than(1.0)).inv) is None


def _family(name, g):
    """A prior of family ``name`` with random parameters of batch shape (2,)."""
    u = lambda: 0.5 + torch.rand(2, generator=g, dtype=F64)  # noqa: E731
    args = {"Normal": (u() - 1.0, u()), "LogNormal": (u() - 1.0, u()), "HalfNormal": (u(),),
            "Cauchy": (u(), u()), "HalfCauchy": (u(),), "Laplace": (u(), u()),
            "StudentT": (3.0 * u(), u(), u()), "Gamma": (u(), u()), "Exponential": (u(),),
            "Beta": (u(), u()), "Uniform": (-u(), u())}[name]
    return getattr(dist, name)(*args)


def test_prior_sum_is_the_sum_of_each_priors_log_density():
    g = torch.Generator().manual_seed(1)
    priors = {}
    for name in _FAMILIES:  # each family twice: plain scalar, and per condition (to_event)
        p = _family(name, g)
        priors[f"{name}_a"] = getattr(dist, name)(*(getattr(p, k)[0] for k in p.arg_constraints))
        priors[f"{name}_b"] = p.to_event(1)
    priors["weights"] = dist.Dirichlet(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    prior_sum = _PriorSum(priors)
    gaussian = {"Normal", "LogNormal", "HalfNormal"}
    assert len(prior_sum.groups) == len(_FAMILIES) - 3  # every other family batched
    assert {name.split("_")[0] for name, _ in prior_sum.gaussian.members} == gaussian
    assert not prior_sum.alone and len(prior_sum.dirichlets) == 1
    torch.manual_seed(2)
    values = {k: p.sample((5,)).requires_grad_() for k, p in priors.items()}
    got = prior_sum(values)
    want = sum(p.log_prob(values[k]).reshape(5, -1).sum(-1) for k, p in priors.items())
    assert got.shape == (5,)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-10)
    leaves = list(values.values())  # (a Uniform's density has no gradient in its value)
    grads = [torch.autograd.grad(u.sum(), leaves, allow_unused=True) for u in (got, want)]
    for k, g_got, g_want in zip(values, *grads, strict=True):
        assert (g_got is None) == (g_want is None), k
        if g_got is not None:
            torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-10, msg=k)


def test_prior_sum_keeps_each_priors_precision():
    """A float32 prior's constants are its own (``log 2.0`` in float32, as Pyro's program
    computes it; in float64 the density would move by ~1e-7): float64 values give each prior's
    ``log_prob`` to 1e-12. Other float32 families are batched apart from float64 ones and
    computed in float32; with a float32 value the Gaussian priors are evaluated one by one."""
    priors = {"a": dist.Normal(torch.tensor(0.5), torch.tensor(2.0)),
              "b": dist.Normal(torch.tensor([0.1, 0.2]), torch.tensor(1.1)).to_event(1),
              "h": dist.HalfNormal(torch.tensor(10.0)),
              "l": dist.LogNormal(torch.tensor(0.3), torch.tensor(0.6)),
              "c": dist.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64)),
              "g1": dist.Gamma(torch.tensor(2.0), torch.tensor(3.0)),
              "g2": dist.Gamma(torch.tensor(2.5), torch.tensor(1.5)),
              "g3": dist.Gamma(torch.tensor(2.0, dtype=F64), torch.tensor(3.0, dtype=F64))}
    prior_sum = _PriorSum(priors)
    (members, joint), = prior_sum.groups
    assert [m[0] for m in members] == ["g1", "g2"] and joint.concentration.dtype == torch.float32
    values = {"a": 0.3, "b": [1.0, -1.0], "h": 4.2, "l": 1.7, "c": 0.7, "g1": 0.4, "g2": 1.3,
              "g3": 0.9}
    values = {k: torch.tensor(v, dtype=F64) for k, v in values.items()}
    want = sum(p.log_prob(values[k]).sum() for k, p in priors.items())
    torch.testing.assert_close(prior_sum(values), want, rtol=1e-13, atol=1e-12)
    values32 = {**values, "a": values["a"].float()}
    want32 = sum(p.log_prob(values32[k]).sum() for k, p in priors.items())
    torch.testing.assert_close(prior_sum(values32).double(), want32.double(), rtol=0, atol=1e-6)


def test_prior_sum_gives_no_mass_outside_a_half_normals_support():
    priors = {"h": dist.HalfNormal(torch.tensor([1.0, 2.0], dtype=F64)).to_event(1),
              "n": dist.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))}
    got = _PriorSum(priors)({"h": torch.tensor([[0.5, 1.0], [0.5, -1e-9]], dtype=F64),
                             "n": torch.tensor([-3.0, -3.0], dtype=F64)})
    assert torch.isfinite(got[0]) and got[1] == -math.inf


def test_prior_sum_of_no_priors_is_zero():
    assert float(_PriorSum({})({})) == 0.0


@pytest.mark.parametrize("families", [("LogNormal",), ("Normal", "HalfNormal"),
                                      ("LogNormal", "Normal")])
def test_prior_sum_of_scalar_gaussian_priors_alone(families):
    """Scalar sites only (stacked, not concatenated), with and without LogNormal members."""
    g = torch.Generator().manual_seed(3)
    priors = {f"{name}_{i}": getattr(dist, name)(*(getattr(p, k)[i]
                                                    for k in p.arg_constraints))
              for name in families for p in [_family(name, g)] for i in range(2)}
    torch.manual_seed(4)
    values = {k: p.sample((3,)).requires_grad_() for k, p in priors.items()}
    got = _PriorSum(priors)(values)
    want = sum(p.log_prob(values[k]) for k, p in priors.items())
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got.sum(), list(values.values())),
                    torch.autograd.grad(want.sum(), list(values.values())), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
