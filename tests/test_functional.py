"""Tests of the closed-form fast path :mod:`bayesattn.functional`.

Every identity is checked against a slow reference written here (explicit loops, numpy,
``torch.cdist``, PyTorch's own SDPA), never against another function of the module under test.
Everything runs in float64 unless the test is about float32.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesattn import functional as Fn
from bayesattn.functional import (
    GP_KERNELS,
    KERNELS,
    IllConditionedError,
    NotPositiveDefiniteError,
    gp_attention,
    gp_kernel,
    kernel_attention,
    kernel_log_weights,
    least_squares_attention,
    linear_attention,
    softmax_attention,
    softmax_least_squares_attention,
    softmax_log_weights,
)

DT = torch.float64
COMPACT = ("epanechnikov", "boxcar")
DISTANCE_KERNELS = tuple(k for k in KERNELS if k != "von_mises_fisher")
PROPERTY = settings(max_examples=10, deadline=None)


def randn(gen: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=DT) * scale


def gen_(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def close(actual, expected, tol: float, rtol: float = 0.0) -> None:
    """Assert ``|actual - expected| <= tol + rtol |expected|`` elementwise (numpy or torch)."""
    actual = np.asarray(actual.detach() if isinstance(actual, torch.Tensor) else actual)
    expected = np.asarray(expected.detach() if isinstance(expected, torch.Tensor) else expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, atol=tol, rtol=rtol)


# ----------------------------------------------------------------------------- references
def ref_kernel_matrix(kernel: str, q, k, bandwidth) -> np.ndarray:
    """Unnormalised kernel ``K(q_i, k_j)`` ``(L, S)`` by a loop over pairs (and features)."""
    q, k = np.asarray(q, dtype=float), np.asarray(k, dtype=float)
    (L, E), S = q.shape, k.shape[0]
    bw = np.broadcast_to(np.asarray(bandwidth, dtype=float), (E,))
    out = np.zeros((L, S))
    for i in range(L):
        for j in range(S):
            if kernel == "von_mises_fisher":
                cos = float(q[i] @ k[j]) / (np.linalg.norm(q[i]) * np.linalg.norm(k[j]))
                out[i, j] = math.exp(cos / bw[0])
                continue
            r = math.sqrt(sum(((q[i, e] - k[j, e]) / bw[e]) ** 2 for e in range(E)))
            out[i, j] = {
                "gaussian": lambda r: math.exp(-r * r / 2),
                "laplace": lambda r: math.exp(-r),
                "cauchy": lambda r: 1.0 / (1.0 + r * r),
                "epanechnikov": lambda r: max(0.0, 1.0 - r * r),
                "boxcar": lambda r: 1.0 if r <= 1.0 else 0.0,
            }[kernel](r)
    return out


def normalise_rows(w: np.ndarray) -> np.ndarray:
    total = w.sum(-1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def ref_gp_cov(kernel: str, a, b, lengthscale) -> np.ndarray:
    """Unit-amplitude stationary covariance by a loop (Rasmussen & Williams 2006, 4.9, 4.17)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ls = np.broadcast_to(np.asarray(lengthscale, dtype=float), (a.shape[1],))
    out = np.zeros((a.shape[0], b.shape[0]))
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            r = math.sqrt(float(np.sum(((a[i] - b[j]) / ls) ** 2)))
            out[i, j] = {
                "rbf": math.exp(-r * r / 2),
                "matern12": math.exp(-r),
                "matern32": (1 + math.sqrt(3) * r) * math.exp(-math.sqrt(3) * r),
                "matern52": (1 + math.sqrt(5) * r + 5 * r * r / 3) * math.exp(-math.sqrt(5) * r),
            }[kernel]
    return out


def ref_ridge(q, k, v, ridge, noise=1.0):
    """Ridge regression from the normal equations in numpy: mean ``(L, Ev)``, variance ``(L,)``
    (``noise`` is the observation-noise sd)."""
    q, k, v = (np.asarray(t, dtype=float) for t in (q, k, v))
    a = k.T @ k + ridge * np.eye(k.shape[1])
    mean = q @ np.linalg.solve(a, k.T @ v)
    var = noise**2 * (1.0 + np.einsum("le,el->l", q, np.linalg.solve(a, q.T)))
    return mean, var


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------- mechanisms
def _kernel_bw(kernel: str) -> float:
    return 0.9 if kernel == "von_mises_fisher" else 1.7


#: Every mechanism as ``f(q, k, v) -> tensor or tuple``; used by the invariance tests.
MECHANISMS = {
    "softmax": partial(softmax_attention, scale=0.7),
    "softmax_weights": partial(softmax_attention, scale=0.7, need_weights=True),
    **{
        f"kernel_{name}": partial(kernel_attention, kernel=name, bandwidth=_kernel_bw(name))
        for name in KERNELS
    },
    **{
        f"kernel_{name}_weights": partial(
            kernel_attention, kernel=name, bandwidth=_kernel_bw(name), need_weights=True
        )
        for name in KERNELS
    },
    "least_squares": partial(least_squares_attention, ridge=0.5, noise=0.3, return_variance=True),
    "softmax_least_squares": partial(softmax_least_squares_attention, ridge=0.5),
    **{
        f"gp_{name}": partial(gp_attention, kernel=name, lengthscale=1.3, return_variance=True)
        for name in GP_KERNELS
    },
    "linear": linear_attention,
    "linear_elu_normalized": partial(linear_attention, feature_map="elu", normalize=True),
}
MASKABLE = ["softmax"] + list(KERNELS)


def masked_call(name: str, q, k, v, *, need_weights=False, **kw):
    """softmax_attention (name "softmax") or kernel_attention with kernel ``name``."""
    if name == "softmax":
        return softmax_attention(q, k, v, scale=0.7, need_weights=need_weights, **kw)
    return kernel_attention(
        q, k, v, kernel=name, bandwidth=_kernel_bw(name), need_weights=need_weights, **kw
    )


def log_weights_call(name: str, q, k, **kw):
    if name == "softmax":
        return softmax_log_weights(q, k, scale=0.7, **kw)
    return kernel_log_weights(q, k, kernel=name, bandwidth=_kernel_bw(name), **kw)


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


# ============================================================================ identities
@pytest.mark.parametrize(
    "bandwidth",
    [0.7, torch.tensor(1.3, dtype=DT), torch.tensor([0.5, 1.0, 2.0], dtype=DT)],
    ids=["float", "0-dim", "ARD"],
)
def test_gaussian_kernel_sdpa_path_is_naive_nadaraya_watson(bandwidth):
    g = gen_(1)
    q, k, v = randn(g, 2, 3, 6, 3), randn(g, 2, 3, 9, 3), randn(g, 2, 3, 9, 4)
    out = kernel_attention(q, k, v, kernel="gaussian", bandwidth=bandwidth)
    d = torch.cdist(q / bandwidth, k / bandwidth, compute_mode="donot_use_mm_for_euclid_dist")
    expected = torch.softmax(-0.5 * d**2, dim=-1) @ v
    close(out, expected, 1e-10)


def _queries_near_keys(g, L, S, E, spread=0.3):
    """Keys, and queries each placed near one key (so compact kernels have a key in range)."""
    k = randn(g, S, E)
    q = k[torch.arange(L) % S] + randn(g, L, E, scale=spread)
    return q, k


@pytest.mark.parametrize("ard", [False, True], ids=["scalar", "ARD"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_weights_match_per_pair_formula(kernel, ard):
    if ard and kernel == "von_mises_fisher":
        pytest.skip("von_mises_fisher takes a scalar bandwidth only (tested in the errors)")
    g = gen_(2)
    q, k = _queries_near_keys(g, 5, 7, 3)
    v = randn(g, 7, 2)
    bandwidth = torch.tensor([0.8, 1.5, 1.1], dtype=DT) if ard else _kernel_bw(kernel)
    ref_w = normalise_rows(ref_kernel_matrix(kernel, q, k, bandwidth))
    assert np.allclose(ref_w.sum(-1), 1.0)  # every query has a key in the support
    if kernel in COMPACT:
        assert (ref_w == 0).any()  # ... and some key outside it: the support matters
    out, w = kernel_attention(q, k, v, kernel=kernel, bandwidth=bandwidth, need_weights=True)
    close(w, ref_w, 1e-12)
    close(out, ref_w @ v.numpy(), 1e-12)
    close(kernel_attention(q, k, v, kernel=kernel, bandwidth=bandwidth), ref_w @ v.numpy(), 1e-12)
    log_w = kernel_log_weights(q, k, kernel=kernel, bandwidth=bandwidth)
    close(log_w.exp(), ref_w, 1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_log_prior_multiplies_the_kernel(kernel):
    g = gen_(3)
    q, k = _queries_near_keys(g, 4, 6, 2)
    v = randn(g, 6, 3)
    log_prior = randn(g, 4, 6)
    bw = _kernel_bw(kernel)
    ref_w = normalise_rows(ref_kernel_matrix(kernel, q, k, bw) * np.exp(log_prior.numpy()))
    out, w = kernel_attention(q, k, v, log_prior, kernel=kernel, bandwidth=bw,
                              need_weights=True)
    close(w, ref_w, 1e-12)
    close(kernel_attention(q, k, v, log_prior, kernel=kernel, bandwidth=bw),
          ref_w @ v.numpy(), 1e-12)


@pytest.mark.parametrize(
    "scale", [None, 0.3, torch.tensor(2.0, dtype=DT)], ids=["default", "float", "0-dim"]
)
def test_softmax_attention_is_manual_softmax_and_torch_sdpa(scale):
    g = gen_(4)
    q, k, v = randn(g, 2, 5, 4), randn(g, 2, 7, 4), randn(g, 2, 7, 3)
    s = 1 / math.sqrt(4) if scale is None else float(scale)
    w_ref = np_softmax(np.einsum("ble,bse->bls", q.numpy(), k.numpy()) * s)
    out_ref = w_ref @ v.numpy()
    close(softmax_attention(q, k, v, scale=scale), out_ref, 1e-12)
    out, w = softmax_attention(q, k, v, scale=scale, need_weights=True)
    close(out, out_ref, 1e-12)
    close(w, w_ref, 1e-12)
    close(softmax_log_weights(q, k, scale=scale).exp(), w_ref, 1e-12)
    close(softmax_attention(q, k, v, scale=scale), F.scaled_dot_product_attention(q, k, v, scale=s),
          1e-12)


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "weights"])
@pytest.mark.parametrize("scale", [0.2, 0.5, 2.0])
def test_softmax_is_gaussian_kernel_with_key_norm_prior(scale, need_weights):
    """docs/design.md section 1: sigma = 1/sqrt(scale), log prior |k|^2 scale / 2."""
    g = gen_(5)
    q, k, v = randn(g, 3, 5, 4), randn(g, 3, 8, 4), randn(g, 3, 8, 2)
    log_prior = ((k * k).sum(-1) * scale / 2).unsqueeze(-2).expand(3, 5, 8)
    sm = as_tuple(softmax_attention(q, k, v, scale=scale, need_weights=need_weights))
    ka = as_tuple(kernel_attention(q, k, v, kernel="gaussian", bandwidth=1 / math.sqrt(scale),
                                   attn_mask=log_prior, need_weights=need_weights))
    for a, b in zip(sm, ka, strict=True):
        close(a, b, 1e-10)
    close(softmax_log_weights(q, k, scale=scale).exp(),
          kernel_log_weights(q, k, bandwidth=1 / math.sqrt(scale), attn_mask=log_prior).exp(),
          1e-10)


@pytest.mark.parametrize("ridge", [1e-3, 0.5, 10.0])
@pytest.mark.parametrize("S,E", [(9, 3), (3, 6)], ids=["primal", "dual"])
def test_least_squares_is_numpy_ridge_regression(S, E, ridge):
    g = gen_(6)
    q, k, v = randn(g, 4, E), randn(g, S, E), randn(g, S, 2)
    mean_ref, var_ref = ref_ridge(q, k, v, ridge, noise=0.7)
    close(least_squares_attention(q, k, v, ridge=ridge), mean_ref, 1e-9, 1e-9)
    mean, var = least_squares_attention(q, k, v, ridge=ridge, noise=0.7, return_variance=True)
    close(mean, mean_ref, 1e-9, 1e-9)
    close(var, var_ref, 1e-9, 1e-9)


def test_least_squares_primal_and_dual_paths_agree():
    """Zero key/query features leave ridge regression unchanged; padding E=3 -> 8 with S=5
    switches from the primal (S >= E) to the dual (S < E) solver."""
    g = gen_(7)
    q, k, v = randn(g, 2, 4, 3), randn(g, 2, 5, 3), randn(g, 2, 5, 2)
    pad = (0, 5)
    primal = least_squares_attention(q, k, v, ridge=0.3, noise=2.0, return_variance=True)
    dual = least_squares_attention(F.pad(q, pad), F.pad(k, pad), v, ridge=0.3, noise=2.0,
                                   return_variance=True)
    for a, b in zip(primal, dual, strict=True):
        close(a, b, 1e-10, 1e-10)
    for b in range(2):
        mean_ref, var_ref = ref_ridge(q[b], k[b], v[b], 0.3, noise=2.0)
        close(dual[0][b], mean_ref, 1e-10, 1e-10)
        close(dual[1][b], var_ref, 1e-10, 1e-10)


def test_least_squares_ridge_zero_is_ordinary_least_squares_and_min_norm_interpolant():
    g = gen_(8)
    q = randn(g, 3, 4)
    k, v = randn(g, 10, 4), randn(g, 10, 2)  # S > E: OLS
    ols = np.linalg.lstsq(k.numpy(), v.numpy(), rcond=None)[0]
    close(least_squares_attention(q, k, v, ridge=0), q.numpy() @ ols, 1e-10, 1e-10)
    k, v = randn(g, 2, 4), randn(g, 2, 2)  # S < E: minimum-norm interpolant pinv(K) V
    close(least_squares_attention(q, k, v, ridge=0),
          q.numpy() @ np.linalg.pinv(k.numpy()) @ v.numpy(), 1e-10, 1e-10)
    close(least_squares_attention(k, k, v, ridge=0), v, 1e-10)  # it interpolates


def _rel_errors(fn, target, ridges):
    return np.array([float((r * fn(r) - target).norm() / target.norm()) for r in ridges])


def _assert_one_over_ridge(errors, ridges):
    scaled = errors * np.asarray(ridges)
    assert np.all(np.diff(errors) < 0), errors
    assert scaled.max() / scaled.min() < 1.5, scaled  # error ~ c / ridge
    assert errors[-1] < 1e-4, errors


@pytest.mark.parametrize("S,E", [(8, 3), (2, 5)], ids=["primal", "dual"])
def test_least_squares_strong_prior_limit_is_linear_attention(S, E):
    g = gen_(9)
    q, k, v = randn(g, 4, E), randn(g, S, E), randn(g, S, 3)
    target = linear_attention(q, k, v)
    close(target, q.numpy() @ k.numpy().T @ v.numpy(), 1e-12)
    ridges = [1e2, 1e3, 1e4, 1e5, 1e6]
    errors = _rel_errors(lambda r: least_squares_attention(q, k, v, ridge=r), target, ridges)
    _assert_one_over_ridge(errors, ridges)


def test_softmax_least_squares_strong_prior_limit_is_softmax_attention():
    g = gen_(10)
    q, k, v = randn(g, 2, 4, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 3)
    target = softmax_attention(q, k, v, scale=0.8)
    ridges = [1e1, 1e2, 1e3, 1e4, 1e5]
    errors = _rel_errors(
        lambda r: softmax_least_squares_attention(q, k, v, scale=0.8, ridge=r), target, ridges
    )
    _assert_one_over_ridge(errors, ridges)


@pytest.mark.parametrize("scale", [None, 1.5])
def test_softmax_least_squares_matches_numpy(scale):
    g = gen_(11)
    q, k, v = randn(g, 4, 3), randn(g, 6, 3), randn(g, 6, 2)
    s = 1 / math.sqrt(3) if scale is None else scale
    a_qk = np_softmax(q.numpy() @ k.numpy().T * s)
    a_kk = np_softmax(k.numpy() @ k.numpy().T * s)
    ref = a_qk @ np.linalg.solve(a_kk + 0.2 * np.eye(6), v.numpy())
    close(softmax_least_squares_attention(q, k, v, scale=scale, ridge=0.2), ref, 1e-10, 1e-10)


@pytest.mark.parametrize("ard", [False, True], ids=["scalar", "ARD"])
@pytest.mark.parametrize("kernel", GP_KERNELS)
def test_gp_attention_is_textbook_gp_regression(kernel, ard):
    """Rasmussen & Williams (2006) eqs. 2.25-2.26 with unit amplitude and noise ``ridge``."""
    g = gen_(12)
    q, k, v = randn(g, 5, 2), randn(g, 7, 2), randn(g, 7, 3)
    ls = torch.tensor([0.7, 1.9], dtype=DT) if ard else 1.2
    ridge = 0.05
    k_kk = ref_gp_cov(kernel, k, k, ls) + ridge * np.eye(7)
    k_qk = ref_gp_cov(kernel, q, k, ls)
    mean_ref = k_qk @ np.linalg.solve(k_kk, v.numpy())
    var_ref = np.diag(ref_gp_cov(kernel, q, q, ls)) - np.einsum(
        "ls,sl->l", k_qk, np.linalg.solve(k_kk, k_qk.T)
    )
    close(gp_kernel(q, k, kernel=kernel, lengthscale=ls), k_qk, 1e-12)
    close(gp_attention(q, k, v, kernel=kernel, lengthscale=ls, ridge=ridge), mean_ref, 1e-10)
    mean, var = gp_attention(q, k, v, kernel=kernel, lengthscale=ls, ridge=ridge,
                             return_variance=True)
    close(mean, mean_ref, 1e-10)
    close(var, var_ref, 1e-10)
    assert (var_ref > 1e-3).all()  # the variance check is not vacuous


def _np_elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


@pytest.mark.parametrize(
    "feature_map,normalize",
    [(None, False), ("elu", False), ("elu", True), (torch.exp, True)],
    ids=["identity", "elu", "elu-normalized", "callable-normalized"],
)
def test_linear_attention_matches_loop(feature_map, normalize):
    g = gen_(13)
    q, k, v = randn(g, 4, 3), randn(g, 6, 3), randn(g, 6, 2)
    phi = {None: lambda x: x, "elu": _np_elu1}.get(feature_map, np.exp)
    pq, pk, vv = phi(q.numpy()), phi(k.numpy()), v.numpy()
    ref = np.zeros((4, 2))
    for i in range(4):
        num, den = np.zeros(2), 0.0
        for j in range(6):
            s = float(pq[i] @ pk[j])
            num += s * vv[j]
            den += s
        ref[i] = num / den if normalize else num
    close(linear_attention(q, k, v, feature_map=feature_map, normalize=normalize), ref, 1e-12)


# ============================================================================ invariances
@pytest.mark.parametrize("name", [n for n in MECHANISMS if not n.endswith("weights")])
@PROPERTY
@given(seed=st.integers(0, 2**31 - 1), data=st.data())
def test_permuting_keys_with_values_changes_nothing(name, seed, data):
    """Weights permute with the keys: checked with masks in the next test."""
    S = data.draw(st.integers(1, 7), label="S")  # E = 3: LS covers the dual and primal solvers
    perm = torch.tensor(data.draw(st.permutations(range(S)), label="perm"))
    g = gen_(seed)
    q, k, v = randn(g, 2, 4, 3), randn(g, 2, S, 3), randn(g, 2, S, 2)
    fn = MECHANISMS[name]
    ref = as_tuple(fn(q, k, v))
    got = as_tuple(fn(q, k[:, perm], v[:, perm]))
    for a, b in zip(got, ref, strict=True):  # output (and predictive variance)
        close(a, b, 1e-10)


@pytest.mark.parametrize("name", MASKABLE)
@PROPERTY
@given(seed=st.integers(0, 2**31 - 1), data=st.data())
def test_permuting_keys_with_values_and_mask_columns_changes_nothing(name, seed, data):
    perm = torch.tensor(data.draw(st.permutations(range(6)), label="perm"))
    g = gen_(seed)
    q, k, v = randn(g, 4, 3), randn(g, 6, 3), randn(g, 6, 2)
    mask = torch.rand(4, 6, generator=g) < 0.6
    log_prior = randn(g, 4, 6)
    prior = log_prior.masked_fill(~mask, -math.inf)
    out, w = masked_call(name, q, k, v, attn_mask=prior, need_weights=True)
    out_p, w_p = masked_call(name, q, k[perm], v[perm], attn_mask=prior[:, perm],
                             need_weights=True)
    close(out_p, out, 1e-10)
    close(w_p, w[:, perm], 1e-12)


def _broadcast_case(case: str, g):
    B, H, L, S, E, Ev = 2, 3, 4, 5, 3, 2
    shapes = {
        "key_shared_over_heads": ((B, H, L, E), (B, 1, S, E), (B, H, S, Ev)),
        "key_value_shared": ((B, H, L, E), (S, E), (S, Ev)),
        "query_shared": ((L, E), (B, H, S, E), (B, H, S, Ev)),
    }[case]
    q, k, v = (randn(g, *shape) for shape in shapes)
    return (q, k, v), tuple(t.expand(B, H, *t.shape[-2:]).contiguous() for t in (q, k, v))


BROADCAST_PARAMS = [
    pytest.param(name, case)
    for name in MECHANISMS
    for case in ("key_shared_over_heads", "key_value_shared", "query_shared")
]


@pytest.mark.parametrize("name,case", BROADCAST_PARAMS)
def test_batch_broadcasting_equals_expanded_inputs(name, case):
    shared, expanded = _broadcast_case(case, gen_(14))
    got, ref = as_tuple(MECHANISMS[name](*shared)), as_tuple(MECHANISMS[name](*expanded))
    for a, b in zip(got, ref, strict=True):
        close(a, b, 1e-12)


# ============================================================================ masks
def _mask_with_empty_row(g, L=5, S=6):
    mask = torch.rand(L, S, generator=g) < 0.5
    mask[0] = False  # no allowed key
    mask[1] = True  # every key allowed
    mask[2] = False
    mask[2, 3] = True  # exactly one allowed key
    mask[3:, -1] = True  # the other rows: random, at least one allowed key
    return mask


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "weights"])
@pytest.mark.parametrize("scale", [None, 0.4])
def test_bool_mask_agrees_with_torch_sdpa(scale, need_weights):
    g = gen_(15)
    q, k, v = randn(g, 2, 5, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 4)
    mask = _mask_with_empty_row(g)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    out = as_tuple(softmax_attention(q, k, v, scale=scale, attn_mask=mask,
                                     need_weights=need_weights))[0]
    close(out, expected, 1e-12)
    # and with a manual masked softmax (empty rows: output 0)
    s = 1 / math.sqrt(3) if scale is None else scale
    logits = np.where(mask.numpy(), np.einsum("ble,bse->bls", q.numpy(), k.numpy()) * s, -np.inf)
    w = np.zeros_like(logits)
    rows = mask.numpy().any(-1)
    w[:, rows] = np_softmax(logits[:, rows])
    close(out, w @ v.numpy(), 1e-12)


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "weights"])
@pytest.mark.parametrize("name", MASKABLE)
def test_bool_mask_equals_neg_inf_float_mask(name, need_weights):
    g = gen_(16)
    q, k, v = randn(g, 2, 5, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 4)
    mask = _mask_with_empty_row(g)
    by_mask = as_tuple(masked_call(name, q, k, v, attn_mask=mask, need_weights=need_weights))
    float_mask = torch.zeros(5, 6, dtype=DT).masked_fill(~mask, -math.inf)
    by_prior = as_tuple(masked_call(name, q, k, v, attn_mask=float_mask,
                                    need_weights=need_weights))
    for a, b in zip(by_mask, by_prior, strict=True):
        close(a, b, 1e-12)


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "weights"])
@pytest.mark.parametrize("name", MASKABLE)
def test_query_with_no_allowed_key_gets_zero_output_and_weights(name, need_weights):
    g = gen_(17)
    q, k, v = randn(g, 2, 5, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 4, scale=5.0) + 3.0
    mask = _mask_with_empty_row(g)
    for kw in ({"attn_mask": mask},
               {"attn_mask": torch.zeros(5, 6, dtype=DT).masked_fill(~mask, -math.inf)}):
        res = as_tuple(masked_call(name, q, k, v, need_weights=need_weights, **kw))
        out = res[0]
        assert torch.isfinite(out).all()
        assert (out[:, 0] == 0).all()
        assert (out[:, 1:].abs() > 0).all()  # the other rows are not zeroed
        if need_weights:
            w = res[1]
            assert torch.isfinite(w).all()
            assert (w[:, 0] == 0).all()
            close(w[:, 1:].sum(-1), torch.ones(2, 4, dtype=DT), 1e-12)
            assert (w[:, 2, 3] == 1).all()  # the only allowed key
            assert (w.masked_fill(mask, 0) == 0).all()
        log_w = log_weights_call(name, q, k, **kw)
        assert torch.isneginf(log_w[:, 0]).all()
        assert not torch.isnan(log_w).any()


@pytest.mark.parametrize("need_weights", [False, True], ids=["output", "weights"])
@pytest.mark.parametrize("kernel", COMPACT)
def test_compact_kernel_falls_back_to_nearest_allowed_key(kernel, need_weights):
    g = gen_(18)
    k = randn(g, 6, 2)
    v = randn(g, 6, 3)
    q = torch.cat([randn(g, 3, 2) * 10 + 20.0, k[:2] + 0.01])  # 3 far queries, 2 near keys
    mask = torch.ones(5, 6, dtype=torch.bool)
    d2 = torch.cdist(q, k) ** 2
    nearest = d2.argmin(-1)
    mask[1, nearest[1]] = False  # query 1: nearest key masked out -> next nearest allowed
    allowed_d2 = d2.masked_fill(~mask, math.inf)
    expected_key = allowed_d2.argmin(-1)
    assert expected_key[1] != nearest[1]
    assert (allowed_d2[:3].min(-1).values > 1.0).all()  # nothing in range for the far queries
    res = as_tuple(kernel_attention(q, k, v, kernel=kernel, bandwidth=1.0, attn_mask=mask,
                                    need_weights=need_weights))
    ref_near = normalise_rows(ref_kernel_matrix(kernel, q[3:], k, 1.0))
    close(res[0][:3], v[expected_key[:3]], 1e-12)
    close(res[0][3:], ref_near @ v.numpy(), 1e-12)  # queries with keys in range: unaffected
    if need_weights:
        close(res[1][:3], F.one_hot(expected_key[:3], 6).to(DT), 0.0)
        close(res[1][3:], ref_near, 1e-12)


@pytest.mark.parametrize("kernel", COMPACT)
def test_compact_kernel_fallback_ties_share_weight_equally(kernel):
    k = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 5.0], [0.0, 3.0]], dtype=DT)
    v = torch.tensor([[1.0], [2.0], [40.0], [80.0]], dtype=DT)
    q = torch.zeros(1, 2, dtype=DT)
    mask = torch.tensor([[True, True, True, False]])  # the 4th key also ties, but is masked
    out, w = kernel_attention(q, k, v, kernel=kernel, bandwidth=1.0, attn_mask=mask,
                              need_weights=True)
    close(w, [[0.5, 0.5, 0.0, 0.0]], 0.0)
    close(out, [[1.5]], 1e-15)
    out, w = kernel_attention(q, k, v, kernel=kernel, bandwidth=1.0, need_weights=True)
    close(w, [[1 / 3, 1 / 3, 0.0, 1 / 3]], 1e-15)


MASK_BATCH_PARAMS = [
    pytest.param(name, rw)
    for name in MASKABLE
    for rw in (False, True)
]


@pytest.mark.parametrize("name,need_weights", MASK_BATCH_PARAMS)
def test_mask_with_extra_batch_dims_broadcasts(name, need_weights):
    """A mask ``(B, L, S)`` with unbatched q/k/v joins the batch: the result is the per-mask
    results stacked (decided behaviour: masks broadcast like SDPA's)."""
    g = gen_(19)
    q, k, v = randn(g, 4, 2), randn(g, 6, 2), randn(g, 6, 3)
    mask = torch.rand(2, 4, 6, generator=g) < 0.6
    mask[..., 0] = True
    res = as_tuple(masked_call(name, q, k, v, attn_mask=mask, need_weights=need_weights))
    assert res[0].shape == (2, 4, 3)
    for b in range(2):
        ref = as_tuple(masked_call(name, q, k, v, attn_mask=mask[b], need_weights=need_weights))
        for a, r in zip(res, ref, strict=True):
            close(a[b], r, 1e-12)


# ============================================================================ weights
@pytest.mark.parametrize("name", MASKABLE)
def test_weights_are_a_distribution_and_do_not_change_the_output(name):
    g = gen_(20)
    q, k, v = randn(g, 2, 5, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 4)
    prior = randn(g, 2, 5, 6).masked_fill(~_mask_with_empty_row(g), -math.inf)
    for kw in ({}, {"attn_mask": prior}):
        out, w = masked_call(name, q, k, v, need_weights=True, **kw)
        assert (w >= 0).all()
        expected_sums = torch.ones(2, 5, dtype=DT)
        if kw:
            expected_sums[:, 0] = 0.0  # the query with no allowed key
        close(w.sum(-1), expected_sums, 1e-12)
        close(out, w @ v, 1e-12)
        close(masked_call(name, q, k, v, **kw), out, 1e-12)
        close(log_weights_call(name, q, k, **kw).exp(), w, 1e-12)


# ============================================================================ float32
def _float32_and_reference(x: torch.Tensor):
    """The float32 copy of ``x`` and that copy in float64 (the same numbers, exactly)."""
    x32 = x.float()
    return x32, x32.double()


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "weights"])
@pytest.mark.parametrize("magnitude", [1e3, 1e4])
@pytest.mark.parametrize("name", MASKABLE)
def test_float32_huge_scores_stay_finite_and_match_float64(name, magnitude, need_weights):
    g = gen_(21)
    q = (torch.rand(2, 5, 4, generator=g, dtype=DT) * 2 - 1) * magnitude
    k = (torch.rand(2, 7, 4, generator=g, dtype=DT) * 2 - 1) * magnitude
    v = randn(g, 2, 7, 3)
    (q32, q64), (k32, k64), (v32, v64) = map(_float32_and_reference, (q, k, v))
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[3] = False  # an empty row
    mask[4, :3] = False
    if name == "softmax":
        call = partial(softmax_attention, scale=1.0, attn_mask=mask)
    else:  # bandwidth 1: every compact-kernel query falls back to its nearest key
        bw = 1e-2 if name == "von_mises_fisher" else 1.0  # vMF: logits cos / 1e-2
        call = partial(kernel_attention, kernel=name, bandwidth=bw, attn_mask=mask)
    ref_out, ref_w = call(q64, k64, v64, need_weights=True)
    res = as_tuple(call(q32, k32, v32, need_weights=need_weights))
    assert all(r.dtype == torch.float32 and torch.isfinite(r).all() for r in res)
    close(res[0].double(), ref_out, 1e-5)
    if need_weights:
        close(res[1].double(), ref_w, 1e-5)
    if name not in ("cauchy", "von_mises_fisher"):  # heavy-tailed / bounded logits
        # (near) one-hot, or empty: a well-conditioned answer
        assert ((ref_w.amax(-1) > 1 - 1e-9) | (ref_w.sum(-1) == 0)).all()


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "weights"])
@pytest.mark.parametrize("kernel", DISTANCE_KERNELS)
def test_float32_distance_kernels_are_translation_invariant(kernel, need_weights):
    """Distance kernels depend on q - k only: a common offset of 1e3 must not change the float32
    answer beyond float32 rounding of the inputs (which the reference shares, exactly)."""
    g = gen_(22)
    q, k, v = randn(g, 6, 4), randn(g, 9, 4), randn(g, 9, 3)
    offset = 1e3
    (q32, q64), (k32, k64), (v32, v64) = map(_float32_and_reference, (q + offset, k + offset, v))
    bw = 3.0 if kernel in COMPACT else 1.0  # compact kernels: keys in range
    ref = kernel_attention(q64 - offset, k64 - offset, v64, kernel=kernel, bandwidth=bw)
    out = as_tuple(kernel_attention(q32, k32, v32, kernel=kernel, bandwidth=bw,
                                    need_weights=need_weights))[0]
    close(out.double(), ref, 1e-3)


# ============================================================================ gradients
@pytest.mark.parametrize("kernel", GP_KERNELS)
def test_gp_attention_gradcheck(kernel):
    g = gen_(23)
    q, k, v = randn(g, 3, 2), randn(g, 4, 2), randn(g, 4, 2)
    lengthscale = torch.tensor(1.2, dtype=DT)
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v, lengthscale))

    def fn(q, k, v, ls):
        mean, var = gp_attention(q, k, v, kernel=kernel, lengthscale=ls, ridge=0.1,
                                 return_variance=True)
        return mean, var

    assert torch.autograd.gradcheck(fn, inputs)


#: Kernels smooth in the query where a query equals a key (Laplace has a kink there).
SMOOTH_AT_ZERO = ("gaussian", "cauchy", "epanechnikov", "von_mises_fisher")


@pytest.mark.parametrize("kernel", ["gaussian", "laplace", "cauchy", "epanechnikov",
                                    "von_mises_fisher"])
def test_kernel_attention_gradcheck_when_a_query_equals_a_key(kernel):
    """Where a query equals a key: gradcheck in the bandwidth and the values (and the query
    for kernels smooth there); Laplace's gradient in the query is the finite one-sided 0 of
    the safe sqrt, so only finiteness is checked for it."""
    g = gen_(24)
    k, v = randn(g, 5, 2), randn(g, 5, 2)
    q = k[:3].clone()
    bandwidth = torch.tensor(_kernel_bw(kernel), dtype=DT, requires_grad=True)
    v.requires_grad_(True)
    if kernel in SMOOTH_AT_ZERO:
        q.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda q, v, h: kernel_attention(q, k, v, kernel=kernel, bandwidth=h), (q, v, bandwidth)
        )
        return
    assert torch.autograd.gradcheck(
        lambda v, h: kernel_attention(q, k, v, kernel=kernel, bandwidth=h), (v, bandwidth)
    )
    q.requires_grad_(True)
    kernel_attention(q, k, v, kernel=kernel, bandwidth=bandwidth).sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("kernel", COMPACT)
def test_compact_kernel_gradient_at_the_support_edge(kernel):
    """Integer grid, bandwidth 1: key 2 lies exactly at r = 1 from the query (weight 0 for
    Epanechnikov, the edge of the boxcar). The gradient is finite and equals the gradient with
    that key treated as outside (the one-sided derivative from outside the support)."""
    k = torch.tensor([[0.0], [0.5], [1.0]], dtype=DT)
    v = torch.tensor([[1.0], [2.0], [4.0]], dtype=DT, requires_grad=True)
    q = torch.zeros(1, 1, dtype=DT, requires_grad=True)
    h = torch.tensor(1.0, dtype=DT, requires_grad=True)
    out = kernel_attention(q, k, v, kernel=kernel, bandwidth=h)
    grads = torch.autograd.grad(out.sum(), (q, h), allow_unused=True)
    gq, gh = (torch.zeros_like(t) if g is None else g for g, t in zip(grads, (q, h), strict=True))
    assert torch.isfinite(gq).all() and torch.isfinite(gh).all()
    if kernel == "epanechnikov":  # the edge key has weight 0: same as masking it out
        q2 = q.detach().clone().requires_grad_(True)
        h2 = h.detach().clone().requires_grad_(True)
        ref = kernel_attention(q2, k[:2], v[:2].detach(), kernel=kernel, bandwidth=h2)
        close(out, ref, 1e-15)
        rq, rh = torch.autograd.grad(ref.sum(), (q2, h2))
        close(gq, rq, 1e-12)
        close(gh, rh, 1e-12)
    else:  # boxcar: piecewise constant weights, gradient 0
        close(gq, torch.zeros(1, 1, dtype=DT), 0.0)


def test_least_squares_and_linear_gradcheck():
    g = gen_(26)
    q, k, v = randn(g, 3, 2), randn(g, 5, 2), randn(g, 5, 2)
    ridge = torch.tensor(0.4, dtype=DT)
    mask = torch.ones(3, 5, dtype=torch.bool).tril(1)
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v, ridge))
    assert torch.autograd.gradcheck(
        lambda q, k, v, r: least_squares_attention(q, k, v, mask, ridge=r, return_variance=True),
        inputs)
    assert torch.autograd.gradcheck(
        lambda q, k, v, r: least_squares_attention(q, k[:1], v[:1], ridge=r), inputs)  # dual
    assert torch.autograd.gradcheck(
        lambda q, k, v: linear_attention(q, k, v, mask, feature_map="elu", normalize=True),
        inputs[:3])


# ============================================================================ kernel densities
def test_kernel_log_density_matches_torch_distributions():
    g = gen_(27)
    x, loc = randn(g, 7, 1), randn(g, 7, 1)
    h = torch.tensor(0.8, dtype=DT)
    D = torch.distributions
    expected = {
        "gaussian": D.Normal(loc, h).log_prob(x)[:, 0],
        "laplace": D.Laplace(loc, h).log_prob(x)[:, 0],
        "cauchy": D.Cauchy(loc, h).log_prob(x)[:, 0],
    }
    for kernel, ref in expected.items():
        close(Fn.kernel_log_density(x, loc, kernel=kernel, bandwidth=h), ref, 1e-12)
    x3, loc3 = randn(g, 7, 3), randn(g, 7, 3)
    h3 = torch.tensor([0.5, 1.0, 2.0], dtype=DT)
    close(Fn.kernel_log_density(x3, loc3, kernel="gaussian", bandwidth=h3),
          D.Normal(loc3, h3).log_prob(x3).sum(-1), 1e-12)
    inside = torch.tensor([[0.3], [-0.7]], dtype=DT)  # boxcar in 1-D: Uniform(loc - h, loc + h)
    close(Fn.kernel_log_density(inside, torch.zeros(2, 1, dtype=DT), kernel="boxcar",
                                bandwidth=h),
          D.Uniform(-h, h).log_prob(inside)[:, 0], 1e-12)


@pytest.mark.parametrize("kernel", ["gaussian", "laplace", "epanechnikov", "boxcar"])
def test_kernel_log_density_integrates_to_one_in_two_dims(kernel):
    """Riemann sum of exp(log-density) over a grid covering the (effective) support."""
    h = 0.7
    t = torch.linspace(-12 * h, 12 * h, 1201, dtype=DT)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    x = torch.stack([xx, yy], -1).reshape(-1, 2)
    dens = Fn.kernel_log_density(x, torch.zeros(2, dtype=DT), kernel=kernel, bandwidth=h).exp()
    total = float(dens.sum()) * float(t[1] - t[0]) ** 2
    assert abs(total - 1.0) < (5e-3 if kernel == "boxcar" else 1e-3)


def test_kernel_log_density_bandwidth_gradient_where_x_equals_loc():
    """The Laplace density at x = loc: d/dh of -log Z(h) = -E / h, finite (no raw sqrt)."""
    x = torch.zeros(1, 3, dtype=DT)
    h = torch.tensor(0.9, dtype=DT, requires_grad=True)
    for kernel in DISTANCE_KERNELS:
        fn = partial(Fn.kernel_log_density, x, x, kernel=kernel,
                     normalized=kernel != "cauchy")
        assert torch.autograd.gradcheck(lambda h, fn=fn: fn(bandwidth=h), (h,))
    (grad,) = torch.autograd.grad(
        Fn.kernel_log_density(x, x, kernel="laplace", bandwidth=h).sum(), h)
    close(grad, torch.tensor(-3 / 0.9, dtype=DT), 1e-12)


# ============================================================================ SDPA conventions
def test_is_causal_equals_the_explicit_top_left_mask():
    g = gen_(28)
    q, k, v = randn(g, 2, 4, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 2)  # L < S: top-left
    tril = torch.ones(4, 6, dtype=torch.bool).tril()
    calls = [
        partial(softmax_attention, scale=0.7),
        partial(kernel_attention, bandwidth=1.3),
        partial(kernel_attention, kernel="laplace", bandwidth=1.3),
        partial(least_squares_attention, ridge=0.5),
        partial(linear_attention, feature_map="elu", normalize=True),
    ]
    for fn in calls:
        close(fn(q, k, v, is_causal=True), fn(q, k, v, attn_mask=tril), 1e-12)
    # and the reference: each query by hand on its visible keys (softmax)
    ref = torch.stack([softmax_attention(q[:, i : i + 1], k[:, : i + 1], v[:, : i + 1],
                                         scale=0.7)[:, 0] for i in range(4)], 1)
    close(softmax_attention(q, k, v, is_causal=True, scale=0.7), ref, 1e-12)


@pytest.mark.parametrize("name", ["softmax", "gaussian", "laplace"])
def test_dropout_is_unbiased_within_monte_carlo_error(name):
    """SDPA's dropout rescales kept weights by 1 / (1 - p): the mean output over draws is the
    output without dropout, within 5 standard errors per entry.

    The 4000 draws are 4 calls on a batch of 1000 copies of one (q, k, v) (each batch element
    gets its own dropout mask, each call fresh ones): the same n as 4000 single calls, in a
    fraction of the time. Power: without the 1 / (1 - p) rescaling the mean would be 0.7 x the
    output, 22-26 standard errors away on its most affected entry (measured; the test fails
    above 5); the unbiased draws sit within 1.6 standard errors (measured, all three)."""
    torch.manual_seed(29)
    g = gen_(29)
    q, k, v = randn(g, 3, 2), randn(g, 5, 2), randn(g, 5, 2)
    fn = partial(masked_call, name)
    calls, batch = 4, 1000
    qb, kb, vb = (t.expand(batch, *t.shape) for t in (q, k, v))
    draws = torch.cat([fn(qb, kb, vb, dropout_p=0.3) for _ in range(calls)])
    n = calls * batch
    assert draws.shape == (n, 3, 2)
    # independent masks across the batch and across calls, not one mask broadcast
    assert len(torch.unique(draws[:batch], dim=0)) > batch // 2
    assert not torch.equal(draws[:batch], draws[batch : 2 * batch])
    se = draws.std(0) / math.sqrt(n)
    assert ((draws.mean(0) - fn(q, k, v)).abs() <= 5 * se).all()
    assert (draws.std(0) > 0).all()  # dropout did something


@pytest.mark.parametrize("rank", [2, 3, 5])
@pytest.mark.parametrize("name", ["softmax", "gaussian", "von_mises_fisher"])
def test_sdpa_sees_exactly_four_dims_for_any_batch_rank(name, rank, monkeypatch):
    """SDPA's fused kernels (no L x S matrix) need 4-D inputs: every call reaches SDPA with
    4-D tensors, and the answer equals the per-element reference."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.dim(), k.dim(), v.dim(), None if kw.get("attn_mask") is None
                     else kw["attn_mask"].dim()))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    g = gen_(30)
    batch = {2: (), 3: (3,), 5: (2, 1, 3)}[rank]
    q, k, v = randn(g, *batch, 4, 3), randn(g, *batch, 6, 3), randn(g, *batch, 6, 2)
    out = masked_call(name, q, k, v)
    assert seen and all(d == 4 for dims in seen for d in dims if d is not None)
    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa)
    flat = (t.reshape(-1, *t.shape[-2:]) for t in (q, k, v))
    ref = torch.stack([masked_call(name, a, b, c, need_weights=True)[0]
                       for a, b, c in zip(*flat, strict=True)])
    close(out.reshape(-1, 4, 2), ref, 1e-12)


def test_validation_off_makes_no_host_sync(monkeypatch):
    """With validation off no function converts a tensor to a Python value (a host sync)."""
    g = gen_(31)
    q, k, v = randn(g, 2, 4, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 2)
    mask = torch.ones(4, 6, dtype=torch.bool).tril(2)
    bw, ridge = torch.tensor(1.2, dtype=DT), torch.tensor(0.5, dtype=DT)
    calls = [
        lambda: softmax_attention(q, k, v, mask, need_weights=True),
        lambda: softmax_attention(q, k, v, mask.to(DT).log()),
        lambda: kernel_attention(q, k, v, mask, bandwidth=bw),
        lambda: kernel_attention(q, k, v, kernel="epanechnikov", bandwidth=bw),
        lambda: least_squares_attention(q, k, v, mask, ridge=ridge, return_variance=True),
        lambda: least_squares_attention(q, k, v, ridge=0.0, need_weights=True),
        lambda: linear_attention(q, k, v, mask, feature_map="elu", normalize=True),
        lambda: gp_attention(q, k, v, lengthscale=bw, return_variance=True),
        lambda: softmax_least_squares_attention(q, k, v, ridge=0.5),
    ]
    expected = [fn() for fn in calls]

    def sync(*args, **kwargs):
        raise AssertionError("host sync")

    for name in ("__bool__", "item", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    Fn.set_validation(False)
    try:
        got = [fn() for fn in calls]
    finally:
        Fn.set_validation(True)
        monkeypatch.undo()
    for a, b in zip(got, expected, strict=True):
        for x, y in zip(as_tuple(a), as_tuple(b), strict=True):
            close(x, y, 1e-12)


def test_validation_switch_and_per_call_override():
    q, k, v = _qkv()
    bad = q.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="query contains NaN"):
        kernel_attention(bad, k, v)
    out = kernel_attention(bad, k, v, validate_args=False)  # documented: NaN propagates
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1:]).all()
    Fn.set_validation(False)
    try:
        assert not Fn.is_validating()
        with pytest.raises(ValueError, match="query contains NaN"):
            kernel_attention(bad, k, v, validate_args=True)
    finally:
        Fn.set_validation(True)
    with pytest.raises(TypeError, match="set_validation takes a bool"):
        Fn.set_validation(0)


def test_legacy_keywords_warn_and_agree():
    g = gen_(32)
    q, k, v = randn(g, 4, 3), randn(g, 6, 3), randn(g, 6, 2)
    mask = torch.rand(4, 6, generator=g) < 0.7
    mask[:, 0] = True
    prior = randn(g, 4, 6)
    with pytest.warns(FutureWarning, match="attn_mask"):
        old = kernel_attention(q, k, v, mask=mask, log_prior=prior, return_weights=True)
    new = kernel_attention(q, k, v, prior.masked_fill(~mask, -math.inf), need_weights=True)
    for a, b in zip(old, new, strict=True):
        close(a, b, 0.0)
    with pytest.raises(TypeError, match="not with mask"):
        softmax_attention(q, k, v, mask, log_prior=prior)


# ============================================================================ numerics
def test_least_squares_ridge_zero_is_stable_for_nearly_collinear_keys():
    """cond(K) ~ 2e8: the normal equations (cond^2 ~ 4e16) lose every digit in float64; the
    QR solve matches numpy's SVD-based lstsq. In float32 the system is numerically singular:
    a named error."""
    g = gen_(33)
    base = randn(g, 40, 1)
    k = torch.cat([base, base + 5e-9 * randn(g, 40, 1), randn(g, 40, 1)], 1)
    w_true = torch.tensor([[1.0], [-2.0], [0.5]], dtype=DT)
    v = k @ w_true + 1e-3 * randn(g, 40, 1)
    q = randn(g, 5, 3)
    assert np.linalg.cond(k.numpy()) > 1e8
    ref = q.numpy() @ np.linalg.lstsq(k.numpy(), v.numpy(), rcond=None)[0]
    close(least_squares_attention(q, k, v, ridge=0), ref, 0.0, 1e-6)
    with pytest.raises(IllConditionedError, match="rank deficient in torch.float32"):
        least_squares_attention(q.float(), k.float(), v.float(), ridge=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_solves_in_float32(dtype):
    g = gen_(34)
    q, k, v = (t.to(dtype) for t in (randn(g, 4, 3), randn(g, 8, 3), randn(g, 8, 2)))
    for fn in (partial(least_squares_attention, ridge=0.5),
               partial(gp_attention, lengthscale=1.5),
               partial(softmax_least_squares_attention, ridge=0.5)):
        out = fn(q, k, v)
        ref = fn(q.double(), k.double(), v.double())  # the same rounded inputs, exactly
        assert out.dtype == dtype
        close(out.double(), ref, 4 * torch.finfo(dtype).eps * float(ref.abs().max()) + 1e-3)


@pytest.mark.parametrize("fn_name", ["softmax", "kernel", "least_squares", "linear"])
def test_torch_compile_fullgraph(fn_name):
    torch._dynamo.reset()
    fn = {
        "softmax": partial(softmax_attention, scale=0.5),
        "kernel": partial(kernel_attention, bandwidth=1.3),
        "least_squares": partial(least_squares_attention, ridge=0.5),
        "linear": partial(linear_attention, feature_map="elu", normalize=True),
    }[fn_name]
    g = gen_(35)
    q, k, v = randn(g, 2, 4, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 2)
    mask = torch.ones(4, 6, dtype=torch.bool).tril(2)
    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    close(compiled(q, k, v, mask), fn(q, k, v, mask), 1e-12)


# ============================================================================ errors
def _qkv(L=3, S=4, E=2, Ev=5, dtype=DT):
    g = gen_(25)
    return (torch.randn(L, E, generator=g, dtype=dtype), torch.randn(S, E, generator=g,
            dtype=dtype), torch.randn(S, Ev, generator=g, dtype=dtype))


ATTENTION_FUNCTIONS = {
    "softmax_attention": softmax_attention,
    "kernel_attention": kernel_attention,
    "least_squares_attention": least_squares_attention,
    "softmax_least_squares_attention": softmax_least_squares_attention,
    "gp_attention": gp_attention,
    "linear_attention": linear_attention,
}


def _with(i, t):
    """The valid (q, k, v) with entry ``i`` replaced by ``t``."""
    qkv = list(_qkv())
    qkv[i] = t
    return tuple(qkv)


def _nan_at(t, value):
    t = t.clone()
    t[0, 0] = value
    return t


QKV_ERRORS = {
    "mismatched E": (lambda: _with(1, torch.randn(4, 3, dtype=DT)), ValueError,
                     r"query and key must share the feature dim E"),
    "key/value length": (lambda: _with(2, torch.randn(5, 5, dtype=DT)), ValueError,
                         r"key and value must have the same number of items S"),
    "S = 0": (lambda: (_qkv()[0], torch.zeros(0, 2, dtype=DT), torch.zeros(0, 5, dtype=DT)),
              ValueError, r"key is empty \(S = 0\)"),
    "non-tensor query": (lambda: _with(0, _qkv()[0].tolist()), TypeError,
                         r"query must be a torch\.Tensor, got list"),
    "numpy key": (lambda: _with(1, _qkv()[1].numpy()), TypeError,
                  r"key must be a torch\.Tensor, got ndarray"),
    "integer value": (lambda: _with(2, torch.ones(4, 5, dtype=torch.int64)), TypeError,
                      r"value must be a floating-point tensor, got dtype torch\.int64"),
    "mixed dtypes": (lambda: _with(1, _qkv()[1].float()), TypeError,
                     r"query, key and value must share a dtype"),
    "NaN query": (lambda: _with(0, _nan_at(_qkv()[0], math.nan)), ValueError,
                  r"query contains NaN or inf"),
    "inf key": (lambda: _with(1, _nan_at(_qkv()[1], math.inf)), ValueError,
                r"key contains NaN or inf"),
    "-inf value": (lambda: _with(2, _nan_at(_qkv()[2], -math.inf)), ValueError,
                   r"value contains NaN or inf"),
    "1-dim query": (lambda: _with(0, torch.randn(2, dtype=DT)), ValueError,
                    r"query must have at least 2 dims"),
    "batch dims": (lambda: (torch.randn(2, 3, 2, dtype=DT), torch.randn(3, 4, 2, dtype=DT),
                            torch.randn(4, 5, dtype=DT)), ValueError,
                   r"batch dims of query, key and value do not broadcast"),
}


@pytest.mark.parametrize("case", list(QKV_ERRORS))
@pytest.mark.parametrize("fn_name", list(ATTENTION_FUNCTIONS))
def test_bad_tensors_raise_naming_the_argument(fn_name, case):
    make, exc, match = QKV_ERRORS[case]
    with pytest.raises(exc, match=match):
        ATTENTION_FUNCTIONS[fn_name](*make())


def _mask(shape, dtype=torch.bool):
    return torch.ones(*shape, dtype=dtype)


BAD_ARGUMENTS = {
    # bandwidth
    "bandwidth 0": (kernel_attention, {"bandwidth": 0.0}, ValueError,
                    r"bandwidth must be positive and finite"),
    "bandwidth < 0": (kernel_attention, {"bandwidth": -1.0}, ValueError,
                      r"bandwidth must be positive"),
    "bandwidth NaN": (kernel_attention, {"bandwidth": math.nan}, ValueError,
                      r"bandwidth must be positive and finite"),
    "bandwidth inf": (kernel_attention, {"bandwidth": math.inf}, ValueError,
                      r"bandwidth must be positive and finite"),
    "bandwidth NaN tensor": (kernel_attention,
                             {"bandwidth": torch.tensor([1.0, math.nan], dtype=DT)},
                             ValueError, r"bandwidth must be positive and finite"),
    "bandwidth ARD entry 0": (kernel_attention, {"kernel": "laplace",
                              "bandwidth": torch.tensor([1.0, 0.0], dtype=DT)},
                              ValueError, r"bandwidth must be positive"),
    "bandwidth shape": (kernel_attention, {"bandwidth": torch.ones(3, dtype=DT)}, ValueError,
                        r"bandwidth must be a scalar or shape \(2,\), got shape \(3,\)"),
    "bandwidth 2-dim": (kernel_attention, {"bandwidth": torch.ones(1, 2, dtype=DT)}, ValueError,
                        r"bandwidth must be a scalar or shape \(2,\)"),
    "bandwidth str": (kernel_attention, {"bandwidth": "1"}, TypeError,
                      r"bandwidth must be a positive number or tensor, got str"),
    "bandwidth ARD vMF": (kernel_attention, {"kernel": "von_mises_fisher",
                          "bandwidth": torch.ones(2, dtype=DT)}, ValueError,
                          r"bandwidth must be a scalar for the von_mises_fisher kernel"),
    "log-weights bandwidth ARD vMF": (kernel_log_weights, {"kernel": "von_mises_fisher",
                                      "bandwidth": torch.ones(2, dtype=DT)}, ValueError,
                                      r"bandwidth must be a scalar for the von_mises_fisher"),
    # kernel names
    "unknown kernel": (kernel_attention, {"kernel": "gauss"}, ValueError,
                       r"unknown kernel 'gauss'; expected one of gaussian"),
    "unknown kernel (log weights)": (kernel_log_weights, {"kernel": "rbf"}, ValueError,
                                     r"unknown kernel 'rbf'"),
    "kernel not a str": (kernel_attention, {"kernel": None}, ValueError, r"unknown kernel None"),
    "unknown GP kernel": (gp_attention, {"kernel": "gaussian"}, ValueError,
                          r"unknown kernel 'gaussian'; expected one of rbf"),
    "GP lengthscale": (gp_attention, {"lengthscale": -2.0}, ValueError,
                       r"lengthscale must be positive"),
    "GP lengthscale shape": (gp_attention, {"lengthscale": torch.ones(5, dtype=DT)}, ValueError,
                             r"lengthscale must be a scalar or shape \(2,\)"),
    # scale, ridge, noise, feature map
    "scale 0": (softmax_attention, {"scale": 0.0}, ValueError, r"scale must be positive"),
    "scale NaN tensor": (softmax_attention, {"scale": torch.tensor(math.nan, dtype=DT)},
                         ValueError, r"scale must be positive and finite"),
    "SLS scale": (softmax_least_squares_attention, {"scale": -1.0}, ValueError,
                  r"scale must be positive"),
    "ridge < 0": (least_squares_attention, {"ridge": -1e-3}, ValueError,
                  r"ridge must be non-negative and finite"),
    "ridge inf": (least_squares_attention, {"ridge": math.inf}, ValueError,
                  r"ridge must be non-negative and finite"),
    "GP ridge < 0": (gp_attention, {"ridge": -1.0}, ValueError, r"ridge must be non-negative"),
    "SLS ridge 0": (softmax_least_squares_attention, {"ridge": 0.0}, ValueError,
                    r"ridge must be positive"),
    "noise 0": (least_squares_attention, {"noise": 0.0}, ValueError,
                r"noise must be positive and finite"),
    "noise < 0": (least_squares_attention, {"noise": -1.0, "return_variance": True}, ValueError,
                  r"noise must be positive"),
    "unknown feature_map": (linear_attention, {"feature_map": "relu"}, ValueError,
                            r"unknown feature_map 'relu'"),
    "feature_map number": (linear_attention, {"feature_map": 3}, ValueError,
                           r"unknown feature_map 3"),
    # masks (L = 3, S = 4)
    "int mask": (softmax_attention, {"attn_mask": _mask((3, 4), torch.int64)}, TypeError,
                 r"attn_mask must be bool \(True = takes part\) or floating point"),
    "int mask (kernel)": (kernel_attention, {"attn_mask": _mask((3, 4), torch.int64)},
                          TypeError, r"attn_mask must be bool"),
    "mask not a tensor": (softmax_attention, {"attn_mask": [[True] * 4] * 3}, TypeError,
                          r"attn_mask must be a torch\.Tensor"),
    "mask shape": (softmax_attention, {"attn_mask": _mask((4, 4))}, ValueError,
                   r"attn_mask of shape \(4, 4\) does not broadcast to \(\.\.\., L, S\)"),
    "mask shape (kernel)": (kernel_attention, {"attn_mask": _mask((3, 5))}, ValueError,
                            r"attn_mask of shape \(3, 5\) does not broadcast"),
    "mask (L, S, 1)": (softmax_log_weights, {"attn_mask": _mask((3, 4, 1))}, ValueError,
                       r"attn_mask of shape \(3, 4, 1\) does not broadcast"),
    "mask shape (log weights)": (kernel_log_weights, {"attn_mask": _mask((2, 4))}, ValueError,
                                 r"attn_mask of shape \(2, 4\)"),
    "float mask shape": (softmax_attention, {"attn_mask": torch.zeros(3, 3, dtype=DT)},
                         ValueError, r"attn_mask of shape \(3, 3\) does not broadcast"),
    "float mask NaN": (kernel_attention, {"attn_mask": torch.full((3, 4), math.nan, dtype=DT)},
                       ValueError, r"attn_mask contains NaN or \+inf"),
    "float mask +inf": (softmax_attention, {"attn_mask": torch.full((3, 4), math.inf, dtype=DT)},
                        ValueError, r"attn_mask contains NaN or \+inf"),
    "float mask (least squares)": (least_squares_attention,
                                   {"attn_mask": torch.zeros(3, 4, dtype=DT)}, TypeError,
                                   r"no additive log-prior over keys"),
    "float mask (linear)": (linear_attention, {"attn_mask": torch.zeros(3, 4, dtype=DT)},
                            TypeError, r"no additive log-prior over keys"),
    "mask and is_causal": (softmax_attention, {"attn_mask": _mask((3, 4)), "is_causal": True},
                           ValueError, r"either attn_mask or is_causal"),
    "dropout_p 1": (kernel_attention, {"dropout_p": 1.0}, ValueError, r"dropout_p must be"),
    "dropout_p < 0": (least_squares_attention, {"dropout_p": -0.1}, ValueError,
                      r"dropout_p must be"),
    "unknown keyword": (softmax_attention, {"masks": _mask((3, 4))}, TypeError,
                        r"unexpected keyword arguments \['masks'\]"),
    "E = 0": (lambda q, k, v, **kw: softmax_attention(q[:, :0], k[:, :0], v), {}, ValueError,
              r"E = 0"),
    "E = 0 (least squares)": (lambda q, k, v, **kw: least_squares_attention(q[:, :0], k[:, :0],
                                                                           v), {}, ValueError,
                              r"E = 0"),
    # float32 magnitudes that would overflow (named errors instead of NaN)
    "bandwidth 1e-30 float32": (lambda q, k, v, **kw: kernel_attention(
        q.float(), k.float(), v.float(), bandwidth=1e-30), {}, ValueError, r"overflow"),
    "softmax 1e19 float32": (lambda q, k, v, **kw: softmax_attention(
        q.float() * 1e19, k.float() * 1e19, v.float(), need_weights=True), {}, ValueError,
        r"overflow"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_raise_naming_the_argument(case):
    fn, kwargs, exc, match = BAD_ARGUMENTS[case]
    q, k, v = _qkv()
    args = (q, k) if fn in (softmax_log_weights, kernel_log_weights) else (q, k, v)
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_degenerate_systems_raise_typed_errors():
    q, k, v = _qkv(S=4, E=2)
    k_dup = torch.cat([k[:2], k[:2]])
    with pytest.raises(IllConditionedError, match=r"K is numerically rank deficient"):
        least_squares_attention(q, k[:, :1].expand(4, 2).contiguous(), v, ridge=0)
    with pytest.raises(NotPositiveDefiniteError,
                       match=r"k\(K, K\) \+ ridge I is not positive definite"):
        gp_attention(q, k_dup, v, ridge=0)
    with pytest.raises(ValueError, match=r"return_variance needs ridge > 0"):
        least_squares_attention(q, k[:1], v[:1], ridge=0, return_variance=True)
    with pytest.raises(ValueError, match=r"zero normaliser"):
        linear_attention(q, k, v, normalize=True, feature_map=lambda x: torch.zeros_like(x))
