"""Further attention layers on :mod:`bayesattn.functional`.

* :class:`SlotAttention` (Locatello et al. 2020): reversed selection, the softmax runs over
  slots; an amortised EM (docs/design.md, "Reversed selection").
* :class:`HopfieldRetrieval` (Ramsauer et al. 2021): iterated posterior mean with keys =
  values = stored patterns.
* :class:`AdditiveAttention` (Bahdanau, Cho & Bengio 2015): key selection whose log-prior is
  an MLP score.
* :class:`SinusoidalPositionalEncoding` (Vaswani et al. 2017, section 3.5).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import functional as Fn

__all__ = [
    "SlotAttention",
    "HopfieldRetrieval",
    "AdditiveAttention",
    "SinusoidalPositionalEncoding",
]


def _check_padding(name: str, mask, shape: tuple[int, ...]):
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = padded)")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    return mask


class SlotAttention(nn.Module):
    """Slot attention (Locatello et al. 2020, "Object-centric learning with slot attention").

    ``K`` slots compete for ``N`` inputs. Each iteration: ``attn = softmax over slots of
    k(x_j) . q(slot_k) / sqrt(D)`` (inputs pick slots: the reversed key-selection model of
    docs/design.md, "Reversed selection", computed as
    :func:`bayesattn.functional.softmax_log_weights` with the inputs as queries and the slots as
    keys), ``attn += eps``, the update is the
    attention-weighted *mean* of ``v(x_j)`` per slot (the EM M-step), followed by a
    ``GRUCell`` and a residual MLP (the amortised update). Padded inputs get zero attention.

    Args:
        num_slots: ``K``.
        dim: slot dim ``D``.
        input_dim: input feature dim (default ``D``).
        iters: number of iterations.
        hidden_dim: hidden width of the residual MLP.
        eps: added to the attention before the weighted mean (paper: 1e-8).

    Raises:
        ValueError: non-positive sizes or ``iters``.
    """

    def __init__(
        self,
        num_slots: int,
        dim: int,
        *,
        input_dim: int | None = None,
        iters: int = 3,
        hidden_dim: int = 128,
        eps: float = 1e-8,
    ) -> None:
        for name, val in (("num_slots", num_slots), ("dim", dim), ("iters", iters),
                          ("hidden_dim", hidden_dim)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        super().__init__()
        input_dim = dim if input_dim is None else input_dim
        self.num_slots, self.dim, self.iters, self.eps = num_slots, dim, iters, eps
        self.norm_input = nn.LayerNorm(input_dim)
        self.norm_slots = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(input_dim, dim, bias=False)
        self.to_v = nn.Linear(input_dim, dim, bias=False)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim))
        self.slots_mu = nn.Parameter(torch.zeros(1, 1, dim))
        self.slots_log_sigma = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.xavier_uniform_(self.slots_mu)
        nn.init.xavier_uniform_(self.slots_log_sigma)

    def attention(self, inputs_k: torch.Tensor, slots: torch.Tensor, padding_mask=None):
        """Responsibilities ``(B, N, K)`` of slots for inputs (softmax over slots, padded 0).

        Args:
            inputs_k: projected inputs ``(B, N, D)``.
            slots: normalised slots ``(B, K, D)``.
            padding_mask: ``(B, N)`` bool, True at padded inputs.
        """
        q = self.to_q(slots)
        attn = Fn.softmax_log_weights(inputs_k, q, scale=1.0 / math.sqrt(self.dim)).exp()
        if padding_mask is not None:
            attn = attn.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        return attn

    def forward(
        self,
        inputs: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        slots: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        need_weights: bool = False,
    ):
        """Bind ``K`` slots to the inputs.

        Args:
            inputs: ``(B, N, input_dim)``.
            padding_mask: ``(B, N)`` bool, True at padded inputs.
            slots: initial slots ``(B, K, D)``; default a draw from ``N(mu, sigma^2)``.
            generator: random generator for the initial draw.
            need_weights: also return the last responsibilities ``(B, N, K)``.

        Returns:
            slots ``(B, K, D)`` (and the attention).

        Raises:
            ValueError: ``inputs`` not 3-d, wrong ``slots`` or ``padding_mask`` shape.
            TypeError: ``padding_mask`` not bool.
        """
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 3:
            raise ValueError("inputs must be a tensor of shape (B, N, input_dim)")
        B, N, _ = inputs.shape
        padding_mask = _check_padding("padding_mask", padding_mask, (B, N))
        if slots is None:
            noise = torch.randn(
                B, self.num_slots, self.dim, generator=generator, dtype=inputs.dtype,
                device=inputs.device,
            )
            slots = self.slots_mu + self.slots_log_sigma.exp() * noise
        elif tuple(slots.shape) != (B, self.num_slots, self.dim):
            raise ValueError(
                f"slots must have shape {(B, self.num_slots, self.dim)}, got {tuple(slots.shape)}"
            )
        x = self.norm_input(inputs)
        k, v = self.to_k(x), self.to_v(x)
        attn = None
        for _ in range(self.iters):
            prev = slots
            attn = self.attention(k, self.norm_slots(slots), padding_mask) + self.eps
            if padding_mask is not None:
                attn = attn.masked_fill(padding_mask.unsqueeze(-1), 0.0)
            weights = attn / attn.sum(1, keepdim=True)  # weighted mean over inputs
            updates = weights.transpose(1, 2) @ v  # (B, K, D)
            slots = self.gru(updates.reshape(-1, self.dim), prev.reshape(-1, self.dim))
            slots = slots.view(B, self.num_slots, self.dim)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return (slots, attn) if need_weights else slots


class HopfieldRetrieval(nn.Module):
    """Modern Hopfield retrieval (Ramsauer et al. 2021, "Hopfield networks is all you need").

    Update rule (their eq. 3): ``xi <- X^T softmax(beta X xi)`` with the stored patterns ``X``
    as rows, applied ``steps`` times to each state pattern. Each step is
    :func:`bayesattn.functional.softmax_attention` with keys = values = ``X`` and
    ``scale = beta``: the posterior mean of the key-selection model with ``sigma^2 = 1/beta``
    (docs/design.md, "Reversed selection"). Large ``beta`` retrieves single patterns; small ``beta``
    averages (metastable states).

    Args:
        beta: inverse temperature, positive (default ``1/sqrt(E)`` at call time).
        steps: number of update steps (1 = one attention layer).
        learn_beta: make ``log beta`` a parameter (needs ``beta``).

    Raises:
        ValueError: non-positive ``beta`` or ``steps``; ``learn_beta`` without ``beta``.
    """

    def __init__(self, beta: float | None = None, steps: int = 1, *, learn_beta: bool = False):
        if not (isinstance(steps, int) and steps > 0):
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if beta is not None and not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be positive, got {beta!r}")
        if learn_beta and beta is None:
            raise ValueError("learn_beta=True needs an initial beta")
        super().__init__()
        self.steps = steps
        if learn_beta:
            self.log_beta = nn.Parameter(torch.tensor(math.log(beta)))
        else:
            self.log_beta = None
            self._beta = beta

    def beta(self, E: int):
        """Inverse temperature: the parameter, the fixed value or ``1/sqrt(E)``."""
        if self.log_beta is not None:
            return self.log_beta.exp()
        return 1.0 / math.sqrt(E) if self._beta is None else self._beta

    def forward(
        self,
        state: torch.Tensor,
        patterns: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        need_weights: bool = False,
    ):
        """Retrieve: ``state (..., L, E)`` against ``patterns (..., S, E)``.

        Args:
            state: ``(..., L, E)`` state (query) patterns.
            patterns: ``(..., S, E)`` stored patterns.
            padding_mask: ``(..., S)`` bool, True at padded patterns.
            need_weights: also return the last step's weights ``(..., L, S)``.

        Returns:
            updated state ``(..., L, E)`` (and the weights).

        Raises:
            TypeError, ValueError: as :func:`bayesattn.functional.softmax_attention`.
        """
        mask = None
        if padding_mask is not None:
            if not isinstance(padding_mask, torch.Tensor) or padding_mask.dtype != torch.bool:
                raise TypeError("padding_mask must be a bool tensor (True = padded)")
            mask = (~padding_mask).unsqueeze(-2)
        beta = self.beta(state.shape[-1])
        weights = None
        for _ in range(self.steps):
            if need_weights:
                state, weights = Fn.softmax_attention(
                    state, patterns, patterns, mask, scale=beta, need_weights=True
                )
            else:
                state = Fn.softmax_attention(state, patterns, patterns, mask, scale=beta)
        return (state, weights) if need_weights else state


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention (Bahdanau, Cho & Bengio 2015, eq. 6; D2L section 11.3).

    ``score(q_i, k_j) = w_v^T tanh(W_q q_i + W_k k_j)``, weights ``softmax_j(score)`` over the
    allowed keys, output ``sum_j w_ij v_j``. As inference: key selection whose log-prior is the
    score (computed by :func:`bayesattn.functional.softmax_log_weights` with the float
    ``attn_mask = score`` and zero-dimensional dot products).

    Args:
        query_dim: ``Eq``.
        key_dim: ``Ek``.
        hidden_dim: width of the score MLP.
        dropout: dropout on the attention weights.

    Raises:
        ValueError: non-positive sizes, ``dropout`` outside ``[0, 1)``.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int, dropout: float = 0.0):
        for name, val in (("query_dim", query_dim), ("key_dim", key_dim),
                          ("hidden_dim", hidden_dim)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__()
        self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
        self.W_k = nn.Linear(key_dim, hidden_dim, bias=False)
        self.w_v = nn.Linear(hidden_dim, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def scores(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Unnormalised scores ``(B, L, S)`` from ``query (B, L, Eq)`` and ``key (B, S, Ek)``."""
        feats = torch.tanh(self.W_q(query).unsqueeze(-2) + self.W_k(key).unsqueeze(-3))
        return self.w_v(feats).squeeze(-1)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend.

        Args:
            query: ``(B, L, Eq)``.
            key: ``(B, S, Ek)``.
            value: ``(B, S, Ev)``.
            key_padding_mask: ``(B, S)`` bool, True at padded keys.

        Returns:
            ``(output (B, L, Ev), weights (B, L, S))``.

        Raises:
            TypeError, ValueError: bad tensors or mask (as
                :func:`bayesattn.functional.softmax_attention`).
        """
        if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
            raise ValueError("query, key and value must be 3-d (B, T, features)")
        B, S = key.shape[:2]
        key_padding_mask = _check_padding("key_padding_mask", key_padding_mask, (B, S))
        scores = self.scores(query, key)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask.unsqueeze(-2), -math.inf)
        zq = scores.new_zeros(*query.shape[:-1], 1)
        zk = scores.new_zeros(*key.shape[:-1], 1)
        weights = Fn.softmax_log_weights(zq, zk, scores).exp()
        return self.dropout(weights) @ value, weights


class SinusoidalPositionalEncoding(nn.Module):
    """Sinusoidal positional encoding (Vaswani et al. 2017, section 3.5).

    ``PE[t, 2i] = sin(t / 10000^(2i / D))``, ``PE[t, 2i + 1] = cos(t / 10000^(2i / D))``;
    the forward adds ``PE[:T]`` to the input and applies dropout.

    Args:
        d_model: ``D``.
        max_len: longest sequence supported.
        dropout: dropout after the addition.
        batch_first: inputs ``(B, T, D)`` (True) or ``(T, B, D)`` (False).

    Raises:
        ValueError: non-positive ``d_model`` / ``max_len``.
    """

    def __init__(
        self, d_model: int, max_len: int = 5000, dropout: float = 0.0, batch_first: bool = True
    ):
        for name, val in (("d_model", d_model), ("max_len", max_len)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        super().__init__()
        self.d_model, self.max_len, self.batch_first = d_model, max_len, batch_first
        self.dropout = nn.Dropout(dropout)
        t = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64)
                         / d_model)
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(t * freq)
        pe[:, 1::2] = torch.cos(t * freq)[:, : d_model // 2]
        self.register_buffer("pe", pe, persistent=False)

    def encoding(self, length: int) -> torch.Tensor:
        """The table ``(length, D)``.

        Raises:
            ValueError: ``length > max_len``.
        """
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={self.max_len}")
        return self.pe[:length]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the encoding to ``x`` (``(B, T, D)`` or ``(T, B, D)``, see ``batch_first``).

        Raises:
            ValueError: last dim not ``D``, or ``T > max_len``.
        """
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must have {self.d_model} features, got {x.shape[-1]}")
        T = x.shape[1] if self.batch_first else x.shape[0]
        pe = self.encoding(T).to(x.dtype)
        pe = pe if self.batch_first else pe.unsqueeze(1)
        return self.dropout(x + pe)

