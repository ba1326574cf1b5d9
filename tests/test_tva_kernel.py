"""The compiled TVA race kernel (``tva/compiled.py``, ``race_kernel.c``) against the torch path.

The reference is :func:`bayesattn.models.neuro.tva.race._race_prob` in torch, its gradient by
autograd; the kernel's gradient is written by hand in C, so :func:`torch.autograd.gradcheck`
(finite differences) checks it too. The kernel's place in the NUTS potential is covered by
``test_tva_log_joint.py`` (the fast log joint against Pyro's traced density).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.mcmc.util import initialize_model

from bayesattn.inference.nuts import _jit_traced, potential_from_log_joint
from bayesattn.models.neuro.tva import (
    TVA,
    HierarchicalTVA,
    compiled,
    k_probit_probabilities,
    partial_report_design,
)
from bayesattn.models.neuro.tva.race import _plan, _race_prob

F64 = torch.float64

needs_kernel = pytest.mark.skipif(not compiled.kernel_available(),
                                  reason="no C compiler: the torch path is used")


def _design(num, rows, displays, seed, empty=0.2):
    """Random (display, report) rows: per display a set of present locations (some empty),
    targets among them (the rest distractors); per row a report among its display's targets."""
    g = torch.Generator().manual_seed(seed)
    present = torch.rand(displays, num, generator=g) > empty
    present[:, 0] = True
    targets = present & (torch.rand(displays, num, generator=g) < 0.6)
    targets[:, 0] = True
    display = torch.randint(0, displays, (rows,), generator=g)
    display[:displays] = torch.arange(displays)  # every display has a row
    reported = targets[display] & (torch.rand(rows, num, generator=g) < 0.5)
    hidden = present[display] & ~targets[display]
    return _plan(reported, hidden, display), present


def _params(present, batch, rows, seed, *, t0_low=0.0, sd=5.0):
    g = torch.Generator().manual_seed(seed)
    displays, num = present.shape
    rates = (0.005 + 0.05 * torch.rand(*batch, displays, num, generator=g, dtype=F64)) * present
    m_k = 0.5 + (num + 1) * torch.rand(*batch, 1, generator=g, dtype=F64)
    k_probs = k_probit_probabilities(m_k, 0.3 + torch.rand(*batch, 1, generator=g, dtype=F64),
                                     num)  # (*batch, 1, N + 1), K = 0 included
    exposure = torch.tensor([5.0, 16.6, 50.0, 150.0], dtype=F64)[
        torch.arange(displays) % 4].expand(*batch, displays).clone()
    t0 = t0_low + 30.0 * torch.rand(*batch, displays, generator=g, dtype=F64)
    t0_sd = sd * (0.2 + torch.rand(*batch, displays, generator=g, dtype=F64))
    return rates, k_probs, exposure, t0, t0_sd


def _value_and_grads(plan, params, kind, compiled_):
    leaves = [p.clone().requires_grad_() for p in params if p is not None]
    args = list(leaves) + ([None] if len(leaves) == 4 else [])
    prob = _race_prob(plan, *args, kind, compiled=compiled_)
    weights = torch.randn(prob.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    return prob.detach(), torch.autograd.grad((prob * weights).sum(), leaves)


@needs_kernel
@pytest.mark.parametrize("num, rows, displays, batch", [(4, 40, 6, (3,)), (6, 60, 9, (2,)),
                                                        (5, 25, 5, (2, 2)), (3, 8, 2, ())])
@pytest.mark.parametrize("kind", ["normal", "fixed"])
def test_kernel_equals_torch_path(num, rows, displays, batch, kind):
    """Probabilities to 1e-13 absolute and every gradient to 1e-11 relative of the largest,
    for Gaussian and fixed thresholds, batch dims, empty locations and K = 0; the fixed
    thresholds reach above the exposure (nothing encoded) on some displays."""
    plan, present = _design(num, rows, displays, seed=num + rows)
    params = list(_params(present, batch, rows, seed=rows, t0_low=-5.0))
    if kind == "fixed":
        params[4] = None
    want, grads_want = _value_and_grads(plan, params, kind, False)
    got, grads_got = _value_and_grads(plan, params, kind, True)
    assert got.shape == want.shape == (*batch, rows)
    assert bool((want > 0).any())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    for a, b in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11 * float(b.abs().max()))


@needs_kernel
def test_kernel_takes_the_extreme_thresholds_as_the_torch_path():
    """A Gaussian threshold far above and far below the exposure, with a tiny and a large sd:
    the tails of log Phi (its asymptotic series below -37.5) give the torch path's values."""
    plan, present = _design(5, 30, 4, seed=3, empty=0.0)
    rates, k_probs, exposure, _, _ = _params(present, (4,), 30, seed=4)
    t0 = torch.tensor([-400.0, 400.0, 10.0, 149.9], dtype=F64)[:, None].expand(4, 4).clone()
    t0_sd = torch.tensor([0.5, 3.0, 0.01, 200.0], dtype=F64)[:, None].expand(4, 4).clone()
    params = [rates, k_probs, exposure, t0, t0_sd]
    want, grads_want = _value_and_grads(plan, params, "normal", False)
    got, grads_got = _value_and_grads(plan, params, "normal", True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    for a, b in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10 * max(1.0, float(b.abs().max())))


@needs_kernel
@pytest.mark.parametrize("kind", ["normal", "fixed"])
def test_kernel_gradient_matches_finite_differences(kind):
    """``gradcheck``: the hand-written gradient of every input (rates, P(K), exposure, t0,
    sd) against central differences (every location filled: a zero rate sits on the kink of
    ``max(0, V - v_B)``, where differences are one-sided)."""
    plan, present = _design(4, 12, 3, seed=11, empty=0.0)
    rates, k_probs, exposure, t0, t0_sd = _params(present, (2,), 12, seed=12)
    k_probs = k_probs.expand(2, 12, 5).clone()  # a free P(K) per row
    inputs = [rates, k_probs, exposure, t0] + ([t0_sd] if kind == "normal" else [])
    inputs = [x.clone().requires_grad_() for x in inputs]

    def f(*xs):
        args = list(xs) + ([None] if kind == "fixed" else [])
        return compiled.race_prob(plan, *args, kind)

    assert f(*inputs) is not None
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@needs_kernel
def test_kernel_refuses_a_second_derivative():
    """The gradient is computed in C, so a Hessian through the kernel must fail loudly, not
    return zeros (MAP-Laplace and SVI use the torch path)."""
    plan, present = _design(4, 10, 3, seed=5)
    rates, k_probs, exposure, t0, t0_sd = _params(present, (), 10, seed=6)
    rates.requires_grad_()
    prob = compiled.race_prob(plan, rates, k_probs, exposure, t0, t0_sd, "normal")
    (grad,) = torch.autograd.grad(prob.sum(), rates, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(grad.sum(), rates)


def test_kernel_declines_what_it_does_not_compute():
    """None (so the caller uses the torch path) for float32, an exponential threshold and a
    Gaussian one with a zero sd; ``_race_prob(compiled=True)`` then gives the torch values."""
    plan, present = _design(4, 10, 3, seed=8)
    rates, k_probs, exposure, t0, t0_sd = _params(present, (), 10, seed=9)
    f32 = [x.float() for x in (rates, k_probs, exposure, t0, t0_sd)]
    assert compiled.race_prob(plan, *f32, "normal") is None
    assert compiled.race_prob(plan, rates, k_probs, exposure, t0 + 40.0, None,
                              "exponential") is None
    zero_sd = t0_sd.clone()
    zero_sd[1] = 0.0
    assert compiled.race_prob(plan, rates, k_probs, exposure, t0, zero_sd, "normal") is None
    want = _race_prob(plan, rates, k_probs, exposure, t0, zero_sd, "normal")
    got = _race_prob(plan, rates, k_probs, exposure, t0, zero_sd, "normal", compiled=True)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_build_without_a_compiler_falls_back(monkeypatch, tmp_path):
    """No compiler, or ``BAYESATTN_NO_KERNEL``: no kernel, nothing written."""
    monkeypatch.setenv("BAYESATTN_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-bayesattn")
    assert compiled._build() is None
    monkeypatch.delenv("CC")
    monkeypatch.setenv("BAYESATTN_NO_KERNEL", "1")
    assert compiled._build() is None
    assert list(tmp_path.iterdir()) == []


@needs_kernel
def test_build_writes_one_library_atomically(monkeypatch, tmp_path):
    """A fresh cache gets exactly one shared library (the temporary file is renamed into
    place), which loads and exports both entry points; a second build reuses it."""
    monkeypatch.setenv("BAYESATTN_CACHE", str(tmp_path / "cache"))
    lib = compiled._build()
    assert lib is not None and hasattr(lib, "tva_race_backward")
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].name.startswith("tva_race_") and files[0].suffix == ".so"
    stamp = files[0].stat().st_mtime_ns
    assert compiled._build() is not None
    assert [f.stat().st_mtime_ns for f in (tmp_path / "cache").iterdir()] == [stamp]


def _study(paradigm, conditions, subjects, seed):
    """The field's partial-report design with 4 trials a cell (36 trials; whole report: its
    exposures, every location a target), conditions and subjects alternating over trials."""
    g = torch.Generator().manual_seed(seed)
    exposure, targets, distractors = partial_report_design(trials_per_cell=4, generator=g)
    data = {"exposure": exposure}
    if paradigm == "partial":
        data.update(targets=targets, distractors=distractors)
    trials = torch.arange(exposure.shape[0])
    if conditions > 1:
        data["condition"] = trials % conditions
    if subjects:
        data["subject"] = trials % subjects
    return data


MODELS = [
    dict(paradigm="partial", K="probit", t0_sd=dist.HalfNormal(10.0), conditions=2,
         by_condition=("C", "t0")),
    dict(paradigm="whole", K="free"),  # a fixed threshold
    dict(paradigm="partial", K="free", t0_dist="exponential"),  # the torch path throughout
    dict(paradigm="whole", K="probit", t0_sd=dist.HalfNormal(5.0), subjects=3),
]


@needs_kernel
@pytest.mark.parametrize("case", range(len(MODELS)))
def test_models_batched_potential_with_the_kernel_equals_the_torch_path(case, monkeypatch):
    """Through the model (``log_joint_fn``, the JIT-traced batched NUTS potential of 3 parameter
    vectors), the kernel gives the torch path's potential to 1e-10 relative and its gradient to
    1e-9 of its largest component (measured: 6e-15 and 1.3e-13). Both evaluate alternating
    sums, so on a report of tiny probability they differ by more (one of 3e-10 loses about 7
    digits: against 60-digit arithmetic the kernel was off by 1.3e-8 relative, the torch path by
    2.9e-7); these designs have none. The exponential threshold runs the torch path in both."""
    kwargs = dict(MODELS[case])
    subjects = kwargs.pop("subjects", 0)
    conditions = kwargs.get("conditions", 1)
    model = (HierarchicalTVA(subjects, 6, **kwargs) if subjects else TVA(6, **kwargs))
    data = _study(kwargs["paradigm"], conditions, subjects, seed=case)
    pyro.set_rng_seed(30 + case)
    data["reported"] = model.model(**data)
    init, _, transforms, _ = initialize_model(model.model, model_kwargs=data,
                                              init_strategy=init_to_median(num_samples=15))
    g = torch.Generator().manual_seed(40 + case)
    batch = {k: (v + 0.3 * torch.randn((3, *v.shape), generator=g, dtype=v.dtype))
             for k, v in init.items()}
    ndims = {k: v.dim() for k, v in init.items()}

    def potential_and_grads(kernel_on):
        if not kernel_on:
            monkeypatch.setattr(compiled, "_LIB", [None])
        potential = _jit_traced(potential_from_log_joint(model.log_joint_fn(data), transforms,
                                                         ndims), batch)
        monkeypatch.undo()
        z = {k: v.clone().requires_grad_() for k, v in batch.items()}
        u = potential(z)
        return u.detach(), torch.autograd.grad(u.sum(), list(z.values()))

    want, grads_want = potential_and_grads(False)
    got, grads_got = potential_and_grads(True)
    assert want.shape == (3,) and bool(torch.isfinite(want).all())
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9 * max(1.0, float(b.abs().max())))
