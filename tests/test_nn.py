"""Tests of the deterministic layers in bayesattn.nn (float64 where identities are checked)."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesattn import functional as BF
from bayesattn.nn import (
    ATTENTION_KINDS,
    AdditiveAttention,
    AttentionBN,
    AttentionBNSH,
    AttentionSH,
    HopfieldRetrieval,
    MultiheadAttention,
    SinusoidalPositionalEncoding,
    SlotAttention,
    TransformerClassifier,
    TransformerEncoderLayer,
)
from bayesattn.nn.training import predict_proba, train_classifier

D64 = torch.float64


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state (inputs drawn without a generator)."""
    torch.manual_seed(0)


def _mha(kind, E=8, H=2, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("batch_first", True)
    return MultiheadAttention(E, H, attention=kind, dtype=D64, **kw)


def _heads(layer, x, kv=None):
    """Independent in-projection and head split: (N, H, T, d) each."""
    kv = x if kv is None else kv
    E, H = layer.embed_dim, layer.num_heads
    W, b = layer.in_proj_weight, layer.in_proj_bias
    q = x @ W[:E].T + b[:E]
    k = kv @ W[E : 2 * E].T + b[E : 2 * E]
    v = kv @ W[2 * E :].T + b[2 * E :]

    def split(t):
        return t.view(t.shape[0], t.shape[1], H, E // H).transpose(1, 2)

    return split(q), split(k), split(v)


def _merge(layer, heads_out):
    N, H, L, d = heads_out.shape
    return layer.out_proj(heads_out.transpose(1, 2).reshape(N, L, H * d))


# ----------------------------------------------------------------------------- drop-in
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(
    "options",
    [{}, {"add_bias_kv": True}, {"add_zero_attn": True}, {"kdim": 5, "vdim": 7},
     {"bias": False}],
)
def test_softmax_is_a_dropin_for_torch(batch_first, options):
    torch.manual_seed(1)
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=D64, **options)
    mine = MultiheadAttention(8, 2, batch_first=batch_first, dtype=D64, **options)
    assert set(mine.state_dict()) == set(ref.state_dict())
    mine.load_state_dict(ref.state_dict())
    N, L, S = 3, 4, 6
    q = torch.randn(N, L, 8, dtype=D64)
    k = torch.randn(N, S, options.get("kdim", 8), dtype=D64)
    v = torch.randn(N, S, options.get("vdim", 8), dtype=D64)
    if not batch_first:
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    kpm = torch.zeros(N, S, dtype=torch.bool)
    kpm[0, -2:] = True
    float_mask = torch.randn(L, S, dtype=D64)
    bool_mask = torch.rand(N * 2, L, S) < 0.3
    bool_mask[..., 0] = False  # every query keeps a key
    for kwargs in (
        {},
        {"key_padding_mask": kpm},
        {"attn_mask": float_mask, "key_padding_mask": kpm.to(D64).masked_fill(kpm, -math.inf)},
        {"attn_mask": bool_mask},
        {"key_padding_mask": kpm, "average_attn_weights": False},
    ):
        out_ref, w_ref = ref(q, k, v, **kwargs)
        out, w = mine(q, k, v, **kwargs)
        assert torch.allclose(out, out_ref, atol=1e-9, rtol=0)
        assert torch.allclose(w, w_ref, atol=1e-9, rtol=0)
        out_nw, none = mine(q, k, v, need_weights=False, **kwargs)
        assert none is None and torch.allclose(out_nw, out_ref, atol=1e-9, rtol=0)


def test_dropin_unbatched_and_causal():
    torch.manual_seed(2)
    ref = torch.nn.MultiheadAttention(8, 4, dtype=D64)
    mine = MultiheadAttention(8, 4, dtype=D64)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(5, 8, dtype=D64)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=D64)
    out_ref, w_ref = ref(x, x, x, attn_mask=causal, is_causal=True)
    out, w = mine(x, x, x, is_causal=True)  # builds the causal mask itself
    assert out.shape == (5, 8) and w.shape == (5, 5)
    assert torch.allclose(out, out_ref, atol=1e-9) and torch.allclose(w, w_ref, atol=1e-9)


def test_encoder_layer_loads_torch_state_dict():
    torch.manual_seed(3)
    for norm_first in (False, True):
        ref = torch.nn.TransformerEncoderLayer(16, 4, 32, 0.1, batch_first=True,
                                               norm_first=norm_first, dtype=D64).eval()
        mine = TransformerEncoderLayer(16, 4, 32, 0.1, batch_first=True, norm_first=norm_first,
                                       dtype=D64).eval()
        mine.load_state_dict(ref.state_dict())
        x = torch.randn(3, 5, 16, dtype=D64)
        kpm = torch.zeros(3, 5, dtype=torch.bool)
        kpm[0, 3:] = True
        with torch.no_grad():
            expect = ref(x, src_key_padding_mask=kpm)
            got = mine(x, src_key_padding_mask=kpm)
        keep = ~kpm  # torch's fast path may zero padded rows
        assert torch.allclose(got[keep], expect[keep], atol=1e-9)


# ----------------------------------------------------------------------------- inside torch's
def _torch_encoder_with(kind, seed=0, num_layers=2):
    """torch's TransformerEncoder (float32, the fast path's dtype) with our self-attention."""
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    layer.self_attn = MultiheadAttention(8, 2, batch_first=True, attention=kind)
    with pytest.warns(UserWarning, match="_qkv_same_embed_dim"):  # declines nested tensors
        encoder = torch.nn.TransformerEncoder(layer, num_layers)
    return encoder


def _eager_encoder(encoder, x, kpm):
    """The same encoder (post-norm, relu) computed layer by layer from its submodules."""
    for mod in encoder.layers:
        a = mod.self_attn(x, x, x, key_padding_mask=kpm, need_weights=False)[0]
        x = mod.norm1(x + a)
        x = mod.norm2(x + mod.linear2(torch.relu(mod.linear1(x))))
    return x


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_inside_torch_encoder_our_kind_is_computed(kind):
    encoder = _torch_encoder_with(kind)
    torch.manual_seed(1)
    x = torch.randn(3, 5, 8)
    kpm = torch.zeros(3, 5, dtype=torch.bool)
    kpm[0, 3:] = True  # left-aligned padding: what torch's nested-tensor path would take
    encoder.eval()
    with torch.no_grad():
        expect = _eager_encoder(encoder, x, kpm)
    with torch.inference_mode():
        got_inference = encoder(x, src_key_padding_mask=kpm)
        got_unpadded = encoder(x)
    with torch.no_grad():
        got_no_grad = encoder(x, src_key_padding_mask=kpm)
        expect_unpadded = _eager_encoder(encoder, x, None)
    encoder.train()
    got_train = encoder(x, src_key_padding_mask=kpm)
    for got in (got_inference, got_no_grad, got_train):
        assert torch.allclose(got, expect, atol=1e-5, rtol=0)
    assert torch.allclose(got_unpadded, expect_unpadded, atol=1e-5, rtol=0)
    if kind != "softmax":  # torch's fused softmax kernel would have given a different answer
        softmax = _torch_encoder_with("softmax")
        softmax.load_state_dict(encoder.state_dict(), strict=False)
        softmax.eval()
        with torch.inference_mode():
            other = softmax(x, src_key_padding_mask=kpm)
        assert (other - got_inference)[~kpm].abs().max() > 1e-3


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_inside_torch_decoder_layer(kind):
    torch.manual_seed(2)
    layer = torch.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    layer.self_attn = MultiheadAttention(8, 2, batch_first=True, attention=kind)
    layer.multihead_attn = MultiheadAttention(8, 2, batch_first=True, attention=kind)
    tgt, memory = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4)
    mpm = torch.zeros(3, 6, dtype=torch.bool)
    mpm[1, 4:] = True
    layer.eval()
    with torch.inference_mode():
        got = layer(tgt, memory, tgt_mask=causal, tgt_is_causal=True,
                    memory_key_padding_mask=mpm)
    with torch.no_grad():
        x = tgt
        sa = layer.self_attn(x, x, x, attn_mask=causal, need_weights=False)[0]
        x = layer.norm1(x + sa)
        ca = layer.multihead_attn(x, memory, memory, key_padding_mask=mpm, need_weights=False)[0]
        x = layer.norm2(x + ca)
        expect = layer.norm3(x + layer.linear2(torch.relu(layer.linear1(x))))
    assert torch.allclose(got, expect, atol=1e-5, rtol=0)
    layer.train()
    assert torch.allclose(layer(tgt, memory, tgt_mask=causal, memory_key_padding_mask=mpm),
                          expect, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_strict_load_from_torch_mha(kind):
    torch.manual_seed(3)
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=D64)
    mine = MultiheadAttention(8, 2, batch_first=True, attention=kind, dtype=D64,
                              bandwidth=1.5, ridge=0.5)
    result = mine.load_state_dict(ref.state_dict())  # strict
    assert not result.missing_keys and not result.unexpected_keys
    for name, p in ref.state_dict().items():
        assert torch.equal(mine.state_dict()[name], p)
    if kind == "kernel":  # the extra parameters keep the constructor's values
        assert math.isclose(mine.bandwidth.item(), 1.5, rel_tol=1e-12)
    if kind == "least_squares":
        assert math.isclose(mine.ridge.item(), 0.5, rel_tol=1e-12)
    # a genuinely missing torch key is still an error
    partial = dict(ref.state_dict())
    del partial["in_proj_weight"]
    with pytest.raises(RuntimeError, match="in_proj_weight"):
        mine.load_state_dict(partial)


# ----------------------------------------------------------------------------- functional forms
def _sh_reference(q, k, v, ratios, lengths):
    """Attention-SH by explicit loops: per head, window means of real keys, softmax over them."""
    N, H, L, d = q.shape
    out = torch.zeros_like(q)
    for n in range(N):
        n_real = lengths[n]
        for h in range(H):
            r = ratios[h]
            means_k, means_v = [], []
            for start in range(0, n_real, r):
                means_k.append(k[n, h, start : min(start + r, n_real)].mean(0))
                means_v.append(v[n, h, start : min(start + r, n_real)].mean(0))
            kp, vp = torch.stack(means_k), torch.stack(means_v)
            w = torch.softmax(q[n, h] @ kp.T / math.sqrt(d), dim=-1)
            out[n, h] = w @ vp
    return out


def _bn_reference(q, k, v, lengths, eps):
    """Attention-BN by explicit standardisation of queries and keys with the real keys' stats."""
    N, H, L, d = q.shape
    out = torch.zeros_like(q)
    for n in range(N):
        kr, vr = k[n, :, : lengths[n]], v[n, :, : lengths[n]]
        mu = kr.mean(-2, keepdim=True)
        sd = torch.sqrt(kr.var(-2, unbiased=False, keepdim=True) + eps)
        qs, ks = (q[n] - mu) / sd, (kr - mu) / sd
        out[n] = torch.softmax(qs @ ks.transpose(-1, -2) / math.sqrt(d), dim=-1) @ vr
    return out


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_layer_equals_its_functional_form(kind):
    layer = _mha(kind, E=8, H=2, head_ratios=(1, 3) if "sh" in kind else None)
    N, T = 3, 7
    x = torch.randn(N, T, 8, dtype=D64)
    lengths = [7, 5, 2]
    kpm = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    out, _ = layer(x, x, x, key_padding_mask=kpm, need_weights=False)
    q, k, v = _heads(layer, x)
    mask = (~kpm)[:, None, None, :]
    keep = mask.transpose(-1, -2).to(D64)  # (N, 1, S, 1)
    if kind == "softmax":
        heads = BF.softmax_attention(q, k, v, attn_mask=mask)
    elif kind == "kernel":
        heads = BF.kernel_attention(q, k, v, attn_mask=mask, bandwidth=layer.bandwidth)
    elif kind == "least_squares":
        heads = BF.least_squares_attention(q, k * keep, v * keep, ridge=layer.ridge)
    elif kind == "linear":
        phi_k = (torch.nn.functional.elu(k) + 1) * keep  # only the real keys
        phi_q = torch.nn.functional.elu(q) + 1
        heads = (phi_q @ (phi_k.transpose(-1, -2) @ v)) / (phi_q @ phi_k.sum(-2, keepdim=True)
                                                           .transpose(-1, -2))
        assert torch.allclose(
            heads[0], BF.linear_attention(q[0], k[0], v[0], feature_map="elu", normalize=True)
        )
    elif kind == "bn":
        heads = _bn_reference(q, k, v, lengths, layer.bn_eps)
    elif kind == "sh":
        heads = _sh_reference(q, k, v, (1, 3), lengths)
    else:  # bn_sh: SH on the BN-standardised queries and keys
        heads = torch.zeros_like(q)
        for n in range(N):
            kr = k[n, :, : lengths[n]]
            mu = kr.mean(-2, keepdim=True)
            sd = torch.sqrt(kr.var(-2, unbiased=False, keepdim=True) + layer.bn_eps)
            heads[n : n + 1] = _sh_reference(((q[n] - mu) / sd)[None], ((k[n] - mu) / sd)[None],
                                             v[n : n + 1], (1, 3), [lengths[n]])
    assert torch.allclose(out, _merge(layer, heads), atol=1e-10)


def test_named_subclasses_equal_the_kind_option():
    x = torch.randn(2, 7, 8, dtype=D64)
    for cls, kind in ((AttentionBN, "bn"), (AttentionSH, "sh"), (AttentionBNSH, "bn_sh")):
        named = cls(8, 2, batch_first=True, dtype=D64, head_ratios=(1, 3))
        generic = MultiheadAttention(8, 2, batch_first=True, dtype=D64, head_ratios=(1, 3),
                                     attention=kind)
        generic.load_state_dict(named.state_dict())
        assert named.attention == kind
        assert torch.equal(named(x, x, x)[0], generic(x, x, x)[0])


def test_returned_weights_reproduce_the_output():
    """For every kind, out_head = weights_head @ V_head (implied weights for LS and linear)."""
    x = torch.randn(2, 6, 8, dtype=D64)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[1, 4:] = True
    for kind in ATTENTION_KINDS:
        layer = _mha(kind)
        out, w = layer(x, x, x, key_padding_mask=kpm, average_attn_weights=False)
        _, _, v = _heads(layer, x)
        assert torch.allclose(out, _merge(layer, w @ v), atol=1e-10), kind
        assert w[1, :, :, 4:].abs().max() == 0, kind
        if kind not in ("least_squares", "linear"):
            assert torch.allclose(w.sum(-1), torch.ones((), dtype=D64)), kind


# ----------------------------------------------------------------------------- masks
@settings(max_examples=8, deadline=None)
@given(
    kind=st.sampled_from(ATTENTION_KINDS),
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    seed=st.integers(0, 10_000),
)
def test_padding_is_invisible(kind, lengths, seed):
    """Output on the real steps equals the output on the truncated sequence; pad content is moot."""
    torch.manual_seed(seed)
    layer = _mha(kind, seed=seed)
    T = max(lengths)
    x = torch.randn(len(lengths), T, 8, dtype=D64)
    kpm = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    out, _ = layer(x, x, x, key_padding_mask=kpm)
    junk = x.masked_fill(~kpm.unsqueeze(-1), 0.0) * 1e3 + x
    out_junk, _ = layer(junk, junk, junk, key_padding_mask=kpm)
    for n, length in enumerate(lengths):
        alone, _ = layer(x[n : n + 1, :length], x[n : n + 1, :length], x[n : n + 1, :length])
        assert torch.allclose(out[n, :length], alone[0], atol=1e-9)
        assert torch.allclose(out_junk[n, :length], alone[0], atol=1e-9)


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_causal_mask_blocks_the_future(kind):
    layer = _mha(kind)
    x = torch.randn(2, 6, 8, dtype=D64)
    out, w = layer(x, x, x, is_causal=True, average_attn_weights=False)
    assert w.triu(1).abs().max() == 0
    future = x.clone()
    future[:, 4:] = torch.randn(2, 2, 8, dtype=D64) * 10
    out_f, _ = layer(future, future, future, is_causal=True)
    assert torch.allclose(out[:, :4], out_f[:, :4], atol=1e-10)
    bool_mask = torch.ones(6, 6, dtype=torch.bool).triu(1)
    out_m, _ = layer(x, x, x, attn_mask=bool_mask)
    assert torch.allclose(out, out_m, atol=1e-12)
    if kind not in ("sh", "bn_sh"):  # pooled windows straddling i are masked as a whole
        for i in (0, 3):
            prefix, _ = layer(x[:, : i + 1], x[:, : i + 1], x[:, : i + 1])
            assert torch.allclose(out[:, i], prefix[:, i], atol=1e-9)


def test_float_masks_rejected_where_undefined():
    x = torch.randn(1, 4, 8, dtype=D64)
    soft = torch.randn(4, 4, dtype=D64)
    for kind in ("least_squares", "linear", "sh"):
        with pytest.raises(ValueError, match="log-prior"):
            _mha(kind)(x, x, x, attn_mask=soft)
    hard = torch.zeros(4, 4, dtype=D64).masked_fill(torch.ones(4, 4).triu(1).bool(), -math.inf)
    layer = _mha("least_squares")
    assert torch.allclose(layer(x, x, x, attn_mask=hard)[0], layer(x, x, x, is_causal=True)[0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="attention"):
        MultiheadAttention(8, 2, attention="cosine")
    with pytest.raises(ValueError, match="num_heads"):
        MultiheadAttention(8, 3)
    with pytest.raises(ValueError, match="head_ratios"):
        MultiheadAttention(8, 2, attention="sh", head_ratios=(1, 0))
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiheadAttention(8, 2, attention="bn", add_bias_kv=True)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        MultiheadAttention(8, 2, attention="kernel", bandwidth=0.0)
    with pytest.raises(ValueError, match="ridge must be positive and finite"):
        MultiheadAttention(8, 2, attention="least_squares", ridge=math.inf)
    with pytest.raises(TypeError, match="ridge must be a positive number"):
        MultiheadAttention(8, 2, attention="least_squares", ridge=torch.tensor(1.0))
    layer = _mha("softmax")
    x = torch.randn(2, 4, 8, dtype=D64)
    with pytest.raises(ValueError, match="key_padding_mask"):
        layer(x, x, x, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        layer(x, x, x, attn_mask=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask"):
        layer(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="features"):
        layer(x[..., :7], x, x)
    with pytest.raises(ValueError, match="NaN"):
        layer(x.masked_fill(torch.rand(2, 4, 1) < 2, math.nan), x, x)


# ----------------------------------------------------------------------------- shapes, grads
@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_shapes_batch_first_and_not(kind):
    x = torch.randn(3, 5, 8, dtype=D64)
    kv = torch.randn(3, 7, 8, dtype=D64)
    first = _mha(kind, batch_first=True)
    second = _mha(kind, batch_first=False)
    second.load_state_dict(first.state_dict())
    out1, w1 = first(x, kv, kv)
    out2, w2 = second(x.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1),
                      average_attn_weights=False)
    assert out1.shape == (3, 5, 8) and w1.shape == (3, 5, 7)
    assert out2.shape == (5, 3, 8) and w2.shape == (3, 2, 5, 7)
    assert torch.allclose(out1, out2.transpose(0, 1), atol=1e-12)
    out_u, w_u = first(x[0], kv[0], kv[0])
    assert out_u.shape == (5, 8) and w_u.shape == (5, 7)
    assert torch.allclose(out_u, out1[0], atol=1e-12)


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_gradcheck(kind):
    """Gradients in the inputs and in the learnable bandwidth / ridge, with padding."""
    layer = _mha(kind, E=4, H=2)
    x = torch.randn(2, 4, 4, dtype=D64, requires_grad=True)
    kpm = torch.tensor([[False, False, False, True], [False] * 4])
    extra = {n: p.detach().clone().requires_grad_(True) for n, p in layer.named_parameters()
             if n in MultiheadAttention._EXTRA_PARAMETERS}

    def f(inp, *values):
        params = dict(zip(extra, values, strict=True))
        out, _ = torch.func.functional_call(
            layer, params, (inp, inp, inp), {"key_padding_mask": kpm, "need_weights": False}
        )
        return out

    assert torch.autograd.gradcheck(f, (x, *extra.values()))


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_state_dict_round_trip(kind):
    layer = _mha(kind, seed=0)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh = _mha(kind, seed=1)
    fresh.load_state_dict(torch.load(buf))
    x = torch.randn(2, 5, 8, dtype=D64)
    assert torch.equal(layer(x, x, x)[0], fresh(x, x, x)[0])


# ----------------------------------------------------------------------------- other layers
def test_slot_attention_one_iteration_by_hand():
    torch.manual_seed(4)
    layer = SlotAttention(3, 8, input_dim=5, iters=1, hidden_dim=16).double()
    x = torch.randn(2, 6, 5, dtype=D64)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[1, 4:] = True
    slots0 = torch.randn(2, 3, 8, dtype=D64)
    got, attn = layer(x, kpm, slots0, need_weights=True)
    xn = layer.norm_input(x)
    k, v = layer.to_k(xn), layer.to_v(xn)
    q = layer.to_q(layer.norm_slots(slots0))
    logits = k @ q.transpose(1, 2) / math.sqrt(8)  # (B, N, K)
    a = torch.softmax(logits, dim=-1) + layer.eps  # softmax over slots
    a = a * (~kpm).unsqueeze(-1)
    w = a / a.sum(1, keepdim=True)
    upd = w.transpose(1, 2) @ v
    s = layer.gru(upd.reshape(-1, 8), slots0.reshape(-1, 8)).view(2, 3, 8)
    s = s + layer.mlp(layer.norm_mlp(s))
    assert torch.allclose(got, s, atol=1e-12)
    assert torch.allclose(attn, a, atol=1e-12)
    # padded inputs are invisible; inputs are an unordered set
    alone = layer(x[1:, :4], None, slots0[1:])
    assert torch.allclose(got[1], alone[0], atol=1e-12)
    perm = torch.randperm(6)
    assert torch.allclose(layer(x[:1, perm], None, slots0[:1]), got[:1], atol=1e-12)


def test_hopfield_retrieval():
    torch.manual_seed(5)
    patterns = torch.nn.functional.normalize(torch.randn(10, 32, dtype=D64), dim=-1) * 4
    noisy = patterns[3:4] + 0.3 * torch.randn(1, 32, dtype=D64)
    one = HopfieldRetrieval(beta=0.25)
    assert torch.allclose(one(noisy, patterns),
                          BF.softmax_attention(noisy, patterns, patterns, scale=0.25))
    out, w = HopfieldRetrieval(beta=8.0, steps=3)(noisy, patterns, need_weights=True)
    assert torch.allclose(out, patterns[3:4], atol=1e-6) and w.argmax() == 3
    # beta -> 0: every pattern weighs the same, the state becomes the mean pattern
    assert torch.allclose(HopfieldRetrieval(beta=1e-12)(noisy, patterns), patterns.mean(0),
                          atol=1e-9)
    pad = torch.zeros(10, dtype=torch.bool)
    pad[7:] = True
    assert torch.allclose(one(noisy, patterns, pad), one(noisy, patterns[:7]), atol=1e-12)


def test_additive_attention_by_hand():
    torch.manual_seed(6)
    layer = AdditiveAttention(4, 3, 5).double()
    q, k = torch.randn(2, 3, 4, dtype=D64), torch.randn(2, 6, 3, dtype=D64)
    v = torch.randn(2, 6, 2, dtype=D64)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[0, 2:] = True
    out, w = layer(q, k, v, kpm)
    for n in range(2):
        for i in range(3):
            scores = torch.stack([
                layer.w_v.weight[0] @ torch.tanh(layer.W_q.weight @ q[n, i] + layer.W_k.weight
                                                 @ k[n, j])
                for j in range(6)
            ])
            scores = scores.masked_fill(kpm[n], -math.inf)
            ref_w = torch.softmax(scores, 0)
            assert torch.allclose(w[n, i], ref_w, atol=1e-12)
            assert torch.allclose(out[n, i], ref_w @ v[n], atol=1e-12)


def test_sinusoidal_positional_encoding():
    pe = SinusoidalPositionalEncoding(6, max_len=50)
    table = pe.encoding(50)
    for t in (0, 7, 49):
        for i in range(3):
            w = 1 / 10000 ** (2 * i / 6)
            assert math.isclose(table[t, 2 * i].item(), math.sin(t * w), abs_tol=1e-12)
            assert math.isclose(table[t, 2 * i + 1].item(), math.cos(t * w), abs_tol=1e-12)
    # PE(t + k) is a rotation of PE(t) in each (sin, cos) pair (Vaswani et al. 2017, sec. 3.5)
    k = 5
    for i in range(3):
        w = 1 / 10000 ** (2 * i / 6)
        c, s = math.cos(k * w), math.sin(k * w)
        rot = torch.tensor([[c, -s], [s, c]], dtype=D64)
        pair = table[:, 2 * i : 2 * i + 2]
        assert torch.allclose(pair[:-k] @ rot, pair[k:], atol=1e-10)
    x = torch.zeros(2, 4, 6, dtype=D64)
    assert torch.allclose(pe(x), table[:4].expand(2, 4, 6))
    with pytest.raises(ValueError, match="max_len"):
        pe(torch.zeros(1, 51, 6))


# ----------------------------------------------------------------------------- training
def _toy_sequences(n=48, T=8, seed=0):
    """Class = sign of the mean of feature 0 over the real steps (needs pooling over time)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, 3, generator=g)
    lengths = torch.randint(3, T + 1, (n,), generator=g)
    pm = torch.arange(T)[None, :] >= lengths[:, None]
    x = x.masked_fill(pm.unsqueeze(-1), 0.0)
    y = ((x[..., 0].sum(1) / lengths) > 0).long()
    return x, pm, y


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["softmax", "least_squares"])
def test_training_reduces_the_loss(kind):
    torch.manual_seed(0)
    x, pm, y = _toy_sequences()
    model = TransformerClassifier(3, 2, d_model=16, nhead=2, num_layers=1, dim_feedforward=16,
                                  dropout=0.0, attention=kind)
    losses = train_classifier(model, x, pm, y, epochs=12, batch_size=16, lr=1e-2, seed=0,
                              progress=False)
    assert losses[-1] < 0.7 * losses[0]
    probs = predict_proba(model, x, pm)
    assert probs.shape == (48, 2) and torch.allclose(probs.sum(-1), torch.ones(48))


def test_linear_kind_survives_extreme_padded_queries():
    """The counterexample Hypothesis found for the padding test: padded steps holding huge
    values make ``elu(q) + 1`` underflow to 0 for a padded query; the layer must not fail (the
    positive floor of the feature map keeps the normaliser positive) and the real steps keep
    the truncated sequence's output."""
    layer = _mha("linear", seed=1)  # seeds torch with 1, then draws the layer's weights
    x = torch.randn(2, 2, 8, dtype=D64)
    kpm = torch.tensor([[False, False], [False, True]])
    junk = x.masked_fill(~kpm.unsqueeze(-1), 0.0) * 1e3 + x
    out, _ = layer(junk, junk, junk, key_padding_mask=kpm)
    alone, _ = layer(x[1:, :1], x[1:, :1], x[1:, :1])
    assert torch.isfinite(out).all()
    assert torch.allclose(out[1, :1], alone[0], atol=1e-9)
