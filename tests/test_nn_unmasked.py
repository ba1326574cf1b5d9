"""The ``gp`` and ``softmax_least_squares`` kinds of :class:`bayesattn.nn.MultiheadAttention`
(:data:`bayesattn.nn.UNMASKED_KINDS`) against a dense reference written here."""

from __future__ import annotations

import math

import pytest
import torch

from bayesattn.nn import UNMASKED_KINDS, MultiheadAttention

D64 = torch.float64


def _reference(mha, query, key, value):
    """Per-head dense solves with the module's projections (batch-first inputs)."""
    E, H = mha.embed_dim, mha.num_heads
    d = E // H
    w_q, w_k, w_v = mha.in_proj_weight.split(E)
    b_q, b_k, b_v = mha.in_proj_bias.split(E)
    q = (query @ w_q.T + b_q).unflatten(-1, (H, d)).transpose(1, 2)
    k = (key @ w_k.T + b_k).unflatten(-1, (H, d)).transpose(1, 2)
    v = (value @ w_v.T + b_v).unflatten(-1, (H, d)).transpose(1, 2)
    S = k.shape[-2]
    eye = torch.eye(S, dtype=D64)
    if mha.attention == "gp":
        ls, r = mha.lengthscale.item(), mha.ridge.item()

        def kern(a, b):
            return torch.exp(-0.5 * ((a[..., :, None, :] - b[..., None, :, :]) ** 2).sum(-1)
                             / ls**2)

        weights = kern(q, k) @ torch.linalg.inv(kern(k, k) + r * eye)
    else:
        r = mha.ridge.item()
        a_qk = torch.softmax(q @ k.mT / math.sqrt(d), -1)
        a_kk = torch.softmax(k @ k.mT / math.sqrt(d), -1)
        weights = a_qk @ torch.linalg.inv(a_kk + r * eye)
    heads = weights @ v
    out = heads.transpose(1, 2).flatten(-2) @ mha.out_proj.weight.T + mha.out_proj.bias
    return out, weights


@pytest.mark.parametrize("kind", UNMASKED_KINDS)
def test_unmasked_kinds_match_dense_reference_and_weights(kind):
    torch.manual_seed(0)
    mha = MultiheadAttention(8, 2, batch_first=True, attention=kind, dtype=D64, ridge=0.3,
                             lengthscale=1.7)
    x, mem = torch.randn(3, 4, 8, dtype=D64), torch.randn(3, 6, 8, dtype=D64)
    out, w = mha(x, mem, mem, need_weights=True, average_attn_weights=False)
    ref_out, ref_w = _reference(mha, x, mem, mem)
    assert torch.allclose(out, ref_out, atol=1e-9, rtol=0)
    assert w.shape == (3, 2, 4, 6) and torch.allclose(w, ref_w, atol=1e-9, rtol=0)
    out2, none = mha(x, mem, mem, need_weights=False)
    assert none is None and torch.allclose(out2, out, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a: mha(a, mem[:1], mem[:1], need_weights=False)[0],
                                    (x[:1, :2].clone().requires_grad_(),))
    loss = mha(x, mem, mem)[0].square().sum()
    loss.backward()
    extras = [mha.log_ridge] + ([mha.log_lengthscale] if kind == "gp" else [])
    assert all(p.grad is not None and torch.isfinite(p.grad) and p.grad != 0 for p in extras)


@pytest.mark.parametrize("kind", UNMASKED_KINDS)
def test_unmasked_kinds_refuse_masks_dropout_and_load_torch_state(kind):
    mha = MultiheadAttention(8, 2, batch_first=True, attention=kind)
    x = torch.randn(2, 5, 8)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    if kind == "gp":  # padding and causal masks are exact for gp (tests/test_gp_causal.py)
        general = torch.eye(5, dtype=torch.bool)
        with pytest.raises(ValueError, match="causal mask only"):
            mha(x, x, x, attn_mask=general)
    else:
        with pytest.raises(ValueError, match="takes no attn_mask"):
            mha(x, x, x, key_padding_mask=kpm)
        with pytest.raises(ValueError, match="takes no attn_mask"):
            mha(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="dropout is not defined"):
        MultiheadAttention(8, 2, dropout=0.1, attention=kind)
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiheadAttention(8, 2, add_bias_kv=True, attention=kind)
    with pytest.raises(ValueError, match="lengthscale"):
        MultiheadAttention(8, 2, attention="gp", lengthscale=-1.0)
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    result = mha.load_state_dict(ref.state_dict())  # strict: extras keep their initial values
    assert not result.missing_keys and not result.unexpected_keys
    assert math.isclose(mha.ridge.item(), 1.0, rel_tol=1e-6)
    if kind == "gp":
        assert math.isclose(mha.lengthscale.item(), 2.0, rel_tol=1e-6)  # sqrt(head_dim = 4)
