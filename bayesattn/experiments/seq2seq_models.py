"""Encoder-decoder models of D2L chapters 10-11 on :mod:`bayesattn.nn` layers.

* :class:`GRUSeq2Seq` without attention (Sutskever et al. 2014; Cho et al. 2014; D2L 10.7):
  the decoder sees the encoder's final state as a fixed context at every step.
* :class:`GRUSeq2Seq` with ``attention=True``: Bahdanau attention (Bahdanau, Cho & Bengio
  2015; D2L 11.4): at step ``t`` the previous decoder state queries the encoder outputs with
  :class:`bayesattn.nn.AdditiveAttention`, and the context is fed with the previous token.
* :class:`BayesianGRUSeq2Seq`: the Bahdanau model with a Bayesian alignment
  (:class:`bayesattn.nn.bam_additive.BayesianAdditiveAttention`, BAM-style lognormal weights;
  Fan et al. 2020), trained on ``cross-entropy + kl_weight * KL / tokens`` and decoded with
  the Monte-Carlo predictive over ``num_samples`` alignment paths.
* :class:`TransformerSeq2Seq` (Vaswani et al. 2017; D2L 11.7): pre-norm encoder layers
  (:class:`bayesattn.nn.TransformerEncoderLayer`) and decoder layers
  (:class:`TransformerDecoderLayer`: causal self-attention, cross-attention, feed-forward),
  every attention of one kind of :class:`bayesattn.nn.MultiheadAttention`. With ``gp``
  (GP attention) the decoder's causal self-attention is exact (each query its own GP
  regression on its prefix, :func:`bayesattn.functional.gp_attention` with ``is_causal``) and
  the encoder and cross-attention drop padded keys exactly; the regression kinds
  (:data:`bayesattn.nn.UNMASKED_KINDS`) have no attention dropout (dropout stays elsewhere).

All models take source tokens ``(N, S)`` with a padding mask ``(N, S)`` (True at padding) and
targets ``(N, T)``; ``forward`` uses teacher forcing (inputs ``<bos> y_1 .. y_{T-1}``) and
returns logits ``(N, T, V)``; ``greedy`` decodes ``T`` steps and returns the tokens and the
cross-attention weights ``(N, T, S)`` (None without attention).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.attention import UNMASKED_KINDS, MultiheadAttention
from ..nn.bam_additive import BayesianAdditiveAttention
from ..nn.layers import AdditiveAttention, SinusoidalPositionalEncoding
from ..nn.transformer import TransformerEncoderLayer

__all__ = ["GRUSeq2Seq", "BayesianGRUSeq2Seq", "TransformerDecoderLayer", "TransformerSeq2Seq"]

BOS = 1


def _shift_right(target: torch.Tensor) -> torch.Tensor:
    """Decoder inputs ``<bos> y_1 .. y_{T-1}`` from targets ``(N, T)``."""
    return torch.cat([torch.full_like(target[:, :1], BOS), target[:, :-1]], dim=1)


class GRUSeq2Seq(nn.Module):
    """GRU encoder-decoder, with or without Bahdanau attention.

    Args:
        source_vocab, target_vocab: vocabulary sizes (index 0 is padding).
        embed_dim: token embedding width.
        hidden: GRU state width.
        attention: use Bahdanau (additive) attention over the encoder outputs.

    Raises:
        ValueError: non-positive sizes.
    """

    def __init__(self, source_vocab: int, target_vocab: int, *, embed_dim: int = 32,
                 hidden: int = 64, attention: bool = False) -> None:
        for name, val in (("source_vocab", source_vocab), ("target_vocab", target_vocab),
                          ("embed_dim", embed_dim), ("hidden", hidden)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        super().__init__()
        self.attention = attention
        self.src_embed = nn.Embedding(source_vocab, embed_dim, padding_idx=0)
        self.encoder = nn.GRU(embed_dim, hidden, batch_first=True)
        self.tgt_embed = nn.Embedding(target_vocab, embed_dim, padding_idx=0)
        self.decoder = nn.GRUCell(embed_dim + hidden, hidden)
        self.additive = AdditiveAttention(hidden, hidden, hidden) if attention else None
        self.out = nn.Linear(hidden, target_vocab)

    def encode(self, source, padding_mask):
        """Encoder outputs ``(N, S, H)`` (zero at padding) and final state ``(N, H)``."""
        lengths = (~padding_mask).sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.src_embed(source), lengths,
                                                   batch_first=True, enforce_sorted=False)
        out, h = self.encoder(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=source.shape[1])
        return out, h[0]

    def _decode(self, memory, padding_mask, h, inputs_or_steps, *, greedy: bool):
        N = memory.shape[0]
        steps = inputs_or_steps if greedy else inputs_or_steps.shape[1]
        fixed = h  # the context of the model without attention (D2L 10.7)
        token = torch.full((N,), BOS, dtype=torch.int64, device=memory.device)
        logits, weights, kls = [], [], []
        for t in range(steps):
            if not greedy:
                token = inputs_or_steps[:, t]
            if self.additive is not None:
                ctx, w = self.additive(h.unsqueeze(1), memory, memory, padding_mask)
                ctx = ctx[:, 0]
                weights.append(w[:, 0])
                kls.append(getattr(self.additive, "local_kl", None))
            else:
                ctx = fixed
            h = self.decoder(torch.cat([self.tgt_embed(token), ctx], -1), h)
            logits.append(self.out(h))
            if greedy:
                token = logits[-1].argmax(-1)
        attn = torch.stack(weights, 1) if weights else None
        if kls and kls[0] is not None:
            self.attention_kl = torch.stack(kls, 1).sum()  # summed over examples and steps
        return torch.stack(logits, 1), attn

    def forward(self, source, padding_mask, target):
        """Teacher-forced logits ``(N, T, V)``."""
        memory, h = self.encode(source, padding_mask)
        return self._decode(memory, padding_mask, h, _shift_right(target), greedy=False)[0]

    @torch.no_grad()
    def greedy(self, source, padding_mask, steps: int):
        """Greedy tokens ``(N, steps)`` and attention weights ``(N, steps, S)`` (or None)."""
        memory, h = self.encode(source, padding_mask)
        logits, attn = self._decode(memory, padding_mask, h, steps, greedy=True)
        return logits.argmax(-1), attn


class BayesianGRUSeq2Seq(GRUSeq2Seq):
    """GRU encoder-decoder with a Bayesian Bahdanau alignment (BAM-style, lognormal weights).

    The additive attention of :class:`GRUSeq2Seq` is a
    :class:`bayesattn.nn.bam_additive.BayesianAdditiveAttention`: at every decoder step the
    alignment ``w_t (S,)`` is a draw from its variational posterior. Training objective per
    target token: ``cross-entropy + kl_weight * KL / (N T)``, where ``KL`` is the sum over
    the batch's steps of the alignment KL (:attr:`attention_kl`, set by every forward);
    ``kl_weight = 1`` is the negative ELBO per token (Fan et al. 2020, eq. 3, with their KL
    coefficient ``lambda = kl_weight``).

    Prediction (:meth:`greedy`): ``num_samples`` alignment paths are run side by side; at
    each step the next token is the argmax of the Monte-Carlo predictive
    ``(1/M) sum_m p(y_t | y_<t, x, w^(m)_1..t)`` and is fed to every path (with ``sample``
    False or ``num_samples = 1`` a single path). :meth:`alignment_posterior` also returns the
    posterior mean and sd of the alignment per (output step, source position).

    Args:
        source_vocab, target_vocab, embed_dim, hidden: as :class:`GRUSeq2Seq`.
        kl_weight: ``lambda >= 0``.
        num_samples: ``M``, alignment paths at prediction.
        prior_sigma, init_sigma: of :class:`~bayesattn.nn.bam_additive.BayesianAdditiveAttention`.

    Raises:
        ValueError: non-positive sizes, ``kl_weight < 0``, ``num_samples < 1``.
    """

    def __init__(self, source_vocab: int, target_vocab: int, *, embed_dim: int = 32,
                 hidden: int = 64, kl_weight: float = 0.1, num_samples: int = 32,
                 prior_sigma: float = 1.0, init_sigma: float = 0.3) -> None:
        super().__init__(source_vocab, target_vocab, embed_dim=embed_dim, hidden=hidden,
                         attention=True)
        if not (kl_weight >= 0 and math.isfinite(kl_weight)):
            raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight!r}")
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        self.additive = BayesianAdditiveAttention(hidden, hidden, hidden,
                                                  prior_sigma=prior_sigma,
                                                  init_sigma=init_sigma)
        self.kl_weight = float(kl_weight)
        self.num_samples = num_samples
        self.attention_kl = torch.zeros(())

    @property
    def sample(self) -> bool:
        """Whether the alignment is drawn (True) or Bahdanau's mean direction (False)."""
        return self.additive.sample

    @sample.setter
    def sample(self, value: bool) -> None:
        self.additive.sample = bool(value)

    def regularizer(self, tokens: int) -> torch.Tensor:
        """``kl_weight * KL / tokens`` of the last forward (added to the mean cross-entropy)."""
        return self.kl_weight * self.attention_kl / tokens

    @torch.no_grad()
    def alignment_posterior(self, source, padding_mask, steps: int, num_samples=None):
        """Monte-Carlo greedy decoding with the alignment's posterior summaries.

        Args:
            source: ``(N, S)`` tokens; padding_mask: ``(N, S)`` bool, True at padding.
            steps: ``T`` output steps.
            num_samples: ``M`` paths (default :attr:`num_samples`; 1 without sampling).

        Returns:
            ``(tokens (N, T), mean (N, T, S), sd (N, T, S), probs (N, T, V))``: the tokens
            of the Monte-Carlo predictive, the posterior mean and sample sd (over the ``M``
            draws) of the alignment weights, and the predictive probabilities.

        Raises:
            ValueError: ``num_samples < 1``.
        """
        M = self.num_samples if num_samples is None else num_samples
        if not (isinstance(M, int) and M >= 1):
            raise ValueError(f"num_samples must be a positive int, got {M!r}")
        if not self.sample:
            M = 1
        N = source.shape[0]
        memory, h = self.encode(source, padding_mask)
        memory, h, pm = memory.repeat(M, 1, 1), h.repeat(M, 1), padding_mask.repeat(M, 1)
        token = torch.full((M * N,), BOS, dtype=torch.int64, device=source.device)
        tokens, weights, probs = [], [], []
        for _ in range(steps):
            ctx, w = self.additive(h.unsqueeze(1), memory, memory, pm)
            h = self.decoder(torch.cat([self.tgt_embed(token), ctx[:, 0]], -1), h)
            p = self.out(h).softmax(-1).view(M, N, -1).mean(0)
            probs.append(p)
            weights.append(w[:, 0].view(M, N, -1))
            tokens.append(p.argmax(-1))
            token = tokens[-1].repeat(M)
        w = torch.stack(weights, 2)  # (M, N, T, S)
        sd = w.std(0) if M > 1 else torch.zeros_like(w[0])
        return torch.stack(tokens, 1), w.mean(0), sd, torch.stack(probs, 1)

    @torch.no_grad()
    def greedy(self, source, padding_mask, steps: int):
        """Tokens ``(N, steps)`` of the Monte-Carlo predictive and the posterior mean
        alignment ``(N, steps, S)``."""
        tokens, mean, _, _ = self.alignment_posterior(source, padding_mask, steps)
        return tokens, mean


class TransformerDecoderLayer(nn.Module):
    """Pre-norm Transformer decoder layer (Vaswani et al. 2017, section 3.1) with any kind.

    ``x = x + SelfAttn(LN(x), causal); x = x + CrossAttn(LN(x), memory); x = x + FF(LN(x))``.

    Args:
        d_model, nhead, dim_feedforward, dropout: sizes.
        attention: a kind of :class:`bayesattn.nn.MultiheadAttention` (both attentions).

    Raises:
        ValueError: the errors of :class:`bayesattn.nn.MultiheadAttention`.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1,
                 *, attention: str = "softmax") -> None:
        super().__init__()
        attn_dropout = 0.0 if attention in UNMASKED_KINDS else dropout  # none defined there
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=attn_dropout,
                                            batch_first=True, attention=attention)
        self.cross_attn = MultiheadAttention(d_model, nhead, dropout=attn_dropout,
                                             batch_first=True, attention=attention)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.ff = nn.Sequential(nn.Linear(d_model, dim_feedforward), nn.GELU(),
                                nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, memory, memory_padding_mask=None, *, need_weights: bool = False):
        """Decode ``x (N, T, E)`` against ``memory (N, S, E)``.

        Returns:
            ``(output (N, T, E), cross-attention weights (N, T, S) averaged over heads or
            None)``.
        """
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, need_weights=False, is_causal=True)[0])
        out, w = self.cross_attn(self.norm2(x), memory, memory,
                                 key_padding_mask=memory_padding_mask, need_weights=need_weights)
        x = x + self.dropout(out)
        return x + self.dropout(self.ff(self.norm3(x))), w


class TransformerSeq2Seq(nn.Module):
    """Transformer encoder-decoder with one attention kind throughout.

    Token embeddings (initialised ``N(0, 1 / d_model)``) scaled by ``sqrt(d_model)``, so that
    their entries are on the scale of the sinusoidal positions added to them (with torch's
    ``N(0, 1)`` initialisation the positions are ``sqrt(d_model)`` times weaker and the
    decoder loses track of where it is); ``num_layers``
    pre-norm encoder and decoder layers; final LayerNorms; a linear read-out.

    Args:
        source_vocab, target_vocab: vocabulary sizes (index 0 is padding).
        d_model, nhead, num_layers, dim_feedforward, dropout: sizes.
        attention: a kind of :class:`bayesattn.nn.MultiheadAttention`.
        max_len: longest sequence.

    Raises:
        ValueError: non-positive sizes; the errors of :class:`bayesattn.nn.MultiheadAttention`.
    """

    def __init__(self, source_vocab: int, target_vocab: int, *, d_model: int = 32,
                 nhead: int = 4, num_layers: int = 2, dim_feedforward: int = 64,
                 dropout: float = 0.1, attention: str = "softmax", max_len: int = 64) -> None:
        for name, val in (("source_vocab", source_vocab), ("target_vocab", target_vocab),
                          ("num_layers", num_layers)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        super().__init__()
        self.attention = attention
        self.scale = math.sqrt(d_model)
        self.src_embed = nn.Embedding(source_vocab, d_model, padding_idx=0)
        self.tgt_embed = nn.Embedding(target_vocab, d_model, padding_idx=0)
        for emb in (self.src_embed, self.tgt_embed):  # sqrt(d) * N(0, 1/d): unit entries,
            nn.init.normal_(emb.weight, std=d_model**-0.5)  # on the scale of the positions
            with torch.no_grad():
                emb.weight[0].zero_()
        self.pos = SinusoidalPositionalEncoding(d_model, max_len, dropout, batch_first=True)
        self.encoder = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation="gelu",
                                    batch_first=True, norm_first=True,
                                    attention="softmax" if attention in UNMASKED_KINDS
                                    else attention)
            for _ in range(num_layers))
        if attention in UNMASKED_KINDS:  # these kinds define no attention dropout
            for layer in self.encoder:
                layer.self_attn = MultiheadAttention(d_model, nhead, dropout=0.0,
                                                     batch_first=True, attention=attention)
        self.decoder = nn.ModuleList(
            TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, attention=attention)
            for _ in range(num_layers))
        self.enc_norm = nn.LayerNorm(d_model)
        self.dec_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, target_vocab)

    def encode(self, source, padding_mask):
        """Encoder output ``(N, S, E)``."""
        x = self.pos(self.src_embed(source) * self.scale)
        for layer in self.encoder:
            x = layer(x, src_key_padding_mask=padding_mask)
        return self.enc_norm(x)

    def decode(self, memory, padding_mask, inputs, *, need_weights: bool = False):
        """Logits ``(N, T, V)`` for decoder inputs ``(N, T)``, and the last layer's
        cross-attention weights ``(N, T, S)`` (or None)."""
        x = self.pos(self.tgt_embed(inputs) * self.scale)
        w = None
        for i, layer in enumerate(self.decoder):
            last = i == len(self.decoder) - 1
            x, w = layer(x, memory, padding_mask, need_weights=need_weights and last)
        return self.out(self.dec_norm(x)), w

    def forward(self, source, padding_mask, target):
        """Teacher-forced logits ``(N, T, V)``."""
        memory = self.encode(source, padding_mask)
        return self.decode(memory, padding_mask, _shift_right(target))[0]

    @torch.no_grad()
    def greedy(self, source, padding_mask, steps: int):
        """Greedy tokens ``(N, steps)`` and the last step's cross-attention ``(N, steps, S)``."""
        memory = self.encode(source, padding_mask)
        inputs = torch.full((source.shape[0], 1), BOS, dtype=torch.int64, device=source.device)
        w = None
        for t in range(steps):
            logits, w = self.decode(memory, padding_mask, inputs, need_weights=t == steps - 1)
            inputs = torch.cat([inputs, logits[:, -1:].argmax(-1)], dim=1)
        return inputs[:, 1:], w
