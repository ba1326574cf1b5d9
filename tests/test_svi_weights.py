"""SVI's importance weights ``log p(theta, y) - log q(theta)`` drawn in one vectorised pass
(:func:`bayesattn.inference.svi.vectorised_log_weights`) against independent computations:
the Pyro program's traced density and the guide's Gaussian density written out here (exact,
per draw), and the single-particle ELBO terms the loop computes (same distribution)."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from scipy.stats import ks_2samp
from torch.distributions import biject_to

from bayesattn.experiments.regression import build_model
from bayesattn.inference import svi
from bayesattn.models.base import BayesianModel
from bayesattn.models.neuro.tva import TVA

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _regression(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0.0, 5.0, 40, dtype=DT)
    return build_model(kind, x, torch.sin(x) + 0.3 * torch.randn(40, dtype=DT, generator=g))[:2]


def _guide(model, data, name, seed=0):
    """A guide with its parameters initialised and moved off the prior median, so that the
    weights vary."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = svi.GUIDES[name](svi.continuous(model.model))
    guide(**data)
    with torch.no_grad():
        for _, p in guide.named_parameters():
            p.add_(0.1 * torch.randn(p.shape, dtype=p.dtype))
    return guide


@pytest.mark.parametrize("kind", ["kernel", "least_squares"])
def test_each_weight_is_the_programs_density_minus_the_guides(kind):
    model, data = _regression(kind)
    guide = _guide(model, data, "normal")
    pyro.set_rng_seed(1)
    lw, draws = svi.vectorised_log_weights(model, guide, data, 300)
    assert lw.shape == (300,) and bool(torch.isfinite(lw).all())
    trace = poutine.trace(model.model).get_trace(**data)
    for i in (0, 7, 299):
        one = {k: v[i] for k, v in draws.items()}
        log_p = poutine.trace(poutine.condition(model.model, data=one)).get_trace(**data)
        # AutoNormal: independent normals on each site's unconstrained scale, written out
        log_q = 0.0
        for name, value in one.items():
            transform = biject_to(trace.nodes[name]["fn"].support)
            z = transform.inv(value)
            loc = getattr(guide.locs, name).detach()
            scale = getattr(guide.scales, name).detach()
            log_q += float(dist.Normal(loc, scale).log_prob(z).sum()
                           - transform.log_abs_det_jacobian(z, value).sum())
        expected = float(log_p.log_prob_sum()) - log_q
        assert abs(float(lw[i]) - expected) < 1e-8 * (1 + abs(expected)), (i, lw[i], expected)


@pytest.mark.parametrize("kind,guide_name", [("kernel", "mvn"), ("softmax", "lowrank"),
                                             ("least_squares", "mvn")])
def test_weights_have_the_single_particle_elbo_distribution(kind, guide_name):
    """Two-sample KS against the loop of ``-Trace_ELBO().loss`` (one particle each), seeded."""
    model, data = _regression(kind)
    guide = _guide(model, data, guide_name)
    pyro.set_rng_seed(2)
    fast, _ = svi.vectorised_log_weights(model, guide, data, 400)
    with torch.no_grad():
        loop = np.array([-Trace_ELBO().loss(model.model, guide, **data) for _ in range(400)])
    assert ks_2samp(fast.numpy(), loop).pvalue > 1e-3


def test_tva_weights_come_from_its_batched_log_joint():
    exposure = torch.tensor([10.0, 40.0, 150.0], dtype=DT).repeat(10)
    model = TVA(4, paradigm="whole", K="probit")
    with poutine.seed(rng_seed=4):
        reported = poutine.uncondition(model.model)(exposure)
    data = {"exposure": exposure, "reported": reported}
    guide = _guide(model, data, "normal", seed=3)
    pyro.set_rng_seed(5)
    fast, draws = svi.vectorised_log_weights(model, guide, data, 300)
    with torch.no_grad():
        loop = np.array([-Trace_ELBO().loss(model.model, guide, **data) for _ in range(300)])
    assert set(draws) == set(model.latent_names())
    assert ks_2samp(fast.numpy(), loop).pvalue > 1e-3


def test_models_without_a_vectorised_density_take_the_loop():
    """The GP's pointwise terms are leave-one-out predictives (they do not sum to the joint):
    no vectorised density, so None, and ``_log_weights`` replays the program per draw."""
    model, data = _regression("gp")
    guide = _guide(model, data, "mvn")
    assert svi.vectorised_log_weights(model, guide, data, 10) is None
    pyro.set_rng_seed(6)
    lw = svi._log_weights(model, guide, data, 10, enum=False)
    assert lw.shape == (10,) and np.isfinite(lw).all()


class _HiddenLatent(BayesianModel):
    """``a, b ~ N(0, 1)``, ``y_i ~ N(a + b, 1)``, whose hooks know ``a`` only (``b`` is a
    latent the vectorised density would not see)."""

    log_likelihood_sums_to_joint = True

    def model(self, y=None):
        a = pyro.sample("a", dist.Normal(torch.zeros((), dtype=DT), 1.0))
        b = pyro.sample("b", dist.Normal(torch.zeros((), dtype=DT), 1.0))
        with pyro.plate("obs", 3):
            pyro.sample("y", dist.Normal(a + b, 1.0), obs=y)

    def latent_names(self):
        return ["a"]

    def prior_log_density(self, draws):
        return dist.Normal(0.0, 1.0).log_prob(draws["a"])

    def log_likelihood(self, draws, data):
        return dist.Normal(draws["a"][:, None], 1.0).log_prob(data["y"])


def test_a_guide_site_the_models_density_does_not_know_takes_the_loop():
    model, data = _HiddenLatent(), {"y": torch.tensor([0.1, -0.4, 0.3], dtype=DT)}
    guide = _guide(model, data, "normal")
    assert svi.vectorised_log_weights(model, guide, data, 10) is None
