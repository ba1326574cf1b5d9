"""Causal GP attention (each query regresses on its key prefix) against a slow per-query
reference written here, in the functional core and in ``MultiheadAttention(attention="gp")``."""

from __future__ import annotations

import pytest
import torch

from bayesattn import functional as Fn
from bayesattn.nn import MultiheadAttention

D64 = torch.float64


def _slow(query, key, value, lengthscale, ridge, kernel, key_mask=None):
    """One dense GP regression per query on the keys ``j <= i`` that ``key_mask`` keeps."""
    def k(a, b):
        r = torch.cdist(a / lengthscale, b / lengthscale)
        return torch.exp(-0.5 * r**2) if kernel == "rbf" else torch.exp(-r)

    B, L, _ = query.shape
    mean = torch.zeros(B, L, value.shape[-1], dtype=D64)
    var = torch.ones(B, L, dtype=D64)
    for b in range(B):
        for i in range(L):
            keep = [j for j in range(key.shape[1])
                    if j <= i and (key_mask is None or bool(key_mask[b, j]))]
            if not keep:
                continue
            kk, q = key[b, keep], query[b, i:i + 1]
            A = k(kk, kk) + ridge * torch.eye(len(keep), dtype=D64)
            kq = k(q, kk)
            mean[b, i] = (kq @ torch.linalg.solve(A, value[b, keep]))[0]
            var[b, i] = 1 - (kq @ torch.linalg.solve(A, kq.T))[0, 0]
    return mean, var


@pytest.mark.parametrize("kernel", ["rbf", "matern12"])
@pytest.mark.parametrize("L", [6, 4, 8])  # L == S, L < S, L > S
def test_causal_gp_attention_matches_per_query_regressions(kernel, L):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, L, 4, generator=g, dtype=D64)
    key = torch.randn(3, 6, 4, generator=g, dtype=D64)
    v = torch.randn(3, 6, 2, generator=g, dtype=D64)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[1, 4:] = False
    valid[2, 0] = False  # the first query of example 2 has no key: mean 0, variance 1
    for key_mask in (None, valid):
        km = None if key_mask is None else key_mask.unsqueeze(-2)
        mean, var = Fn.gp_attention(q, key, v, kernel=kernel, lengthscale=1.3, ridge=0.2,
                                    return_variance=True, key_mask=km, is_causal=True)
        ref_mean, ref_var = _slow(q, key, v, 1.3, 0.2, kernel, key_mask)
        assert torch.allclose(mean, ref_mean, atol=1e-10, rtol=0)
        assert torch.allclose(var, ref_var, atol=1e-10, rtol=0)
    assert mean[2, 0].abs().max() == 0 and var[2, 0] == 1


def test_causal_gp_attention_gradcheck_and_last_query_is_the_full_regression():
    g = torch.Generator().manual_seed(1)
    q, key, v = (torch.randn(2, 5, 3, generator=g, dtype=D64, requires_grad=True)
                 for _ in range(3))
    ls = torch.tensor(1.1, dtype=D64, requires_grad=True)

    def f(q, key, v, ls):
        return Fn.gp_attention(q, key, v, lengthscale=ls, ridge=0.3, is_causal=True,
                               return_variance=True)

    assert torch.autograd.gradcheck(f, (q, key, v, ls))
    full = Fn.gp_attention(q, key, v, lengthscale=1.1, ridge=0.3)
    causal = Fn.gp_attention(q, key, v, lengthscale=1.1, ridge=0.3, is_causal=True)
    assert torch.allclose(causal[:, -1], full[:, -1], atol=1e-12)  # the last query sees all
    assert not torch.allclose(causal[:, 0], full[:, 0], atol=1e-3)


def test_gp_multihead_attention_takes_padding_and_causal_masks_exactly():
    torch.manual_seed(2)
    mha = MultiheadAttention(8, 2, batch_first=True, attention="gp", dtype=D64, ridge=0.4)
    x = torch.randn(3, 5, 8, dtype=D64)
    kpm = torch.zeros(3, 5, dtype=torch.bool)
    kpm[1, 3:] = True
    out, w = mha(x, x, x, key_padding_mask=kpm, is_causal=True, need_weights=True)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # True = not allowed (torch's)
    out2, _ = mha(x, x, x, key_padding_mask=kpm, attn_mask=causal)
    assert torch.allclose(out, out2, atol=1e-12)
    assert torch.all(w.masked_select(causal.expand_as(w)) == 0)
    assert torch.all(w[1, :, 3:] == 0)  # no weight on padding
    for n in range(3):  # each query's output = the unmasked layer on its allowed keys only
        for i in range(5):
            keep = [j for j in range(i + 1) if not kpm[n, j]]
            ref, _ = mha(x[n:n + 1, i:i + 1], x[n:n + 1, keep], x[n:n + 1, keep])
            assert torch.allclose(out[n, i], ref[0, 0], atol=1e-10)
    # padding alone: the same as dropping the padded keys
    out3, _ = mha(x[1:2], x[1:2], x[1:2], key_padding_mask=kpm[1:2])
    ref, _ = mha(x[1:2], x[1:2, :3], x[1:2, :3])
    assert torch.allclose(out3, ref, atol=1e-10)
    general = torch.zeros(5, 5, dtype=torch.bool)
    general[0, 2] = True
    with pytest.raises(ValueError, match="causal mask only"):
        mha(x, x, x, attn_mask=general)
    with pytest.raises(ValueError, match="takes no attn_mask"):  # float masks: none
        mha(x, x, x, attn_mask=torch.zeros(5, 5, dtype=D64))
