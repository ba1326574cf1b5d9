"""Multihop attention: the value read at the end of a random walk on the attention graph
(docs/design.md, "Reversed selection: slot attention, Hopfield retrieval, mixtures", the
structural-inference paragraph; Singh & Buckley 2023, arXiv 2304.04556)."""

from __future__ import annotations

import math

import torch

from .._checks import check_tensor
from ._core import _check_call, is_validating
from .softmax import _default_scale, softmax_attention, softmax_log_weights

__all__ = ["multihop_attention", "DEFAULT_HOP_WEIGHTS"]

#: The authors' hop weights: paths of length 0, 1 and 2, equal weight, ``M = (I + A + A^2)/3``.
DEFAULT_HOP_WEIGHTS = (1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0)


def _check_hop_weights(hop_weights, like: torch.Tensor, validate: bool) -> torch.Tensor:
    """``hop_weights`` as a 1-D tensor ``(H + 1,)`` of ``like``'s dtype and device.

    Raises:
        TypeError: not a sequence of numbers or a floating-point tensor.
        ValueError: not 1-D, empty, NaN/inf, or (with ``validate``) negative entries.
    """
    if hop_weights is None:
        hop_weights = DEFAULT_HOP_WEIGHTS
    if isinstance(hop_weights, torch.Tensor):
        c = check_tensor("hop_weights", hop_weights, check_values=validate)
    else:
        try:
            values = [float(x) for x in hop_weights]
        except (TypeError, ValueError) as err:
            raise TypeError(
                "hop_weights must be a sequence of numbers or a 1-D float tensor, got "
                f"{type(hop_weights).__name__}"
            ) from err
        if any(isinstance(x, bool) for x in hop_weights):
            raise TypeError("hop_weights must hold numbers, not bools")
        if not all(math.isfinite(x) for x in values):
            raise ValueError(f"hop_weights contains NaN or inf: {values}")
        if any(x < 0 for x in values):
            raise ValueError("hop_weights must be non-negative (a distribution over hop counts)")
        if not values:
            raise ValueError("hop_weights must be 1-D with one weight per hop count 0..H, got ()")
        return torch.tensor(values, dtype=like.dtype, device=like.device)
    if c.dim() != 1 or c.shape[0] == 0:
        raise ValueError(
            f"hop_weights must be 1-D with one weight per hop count 0..H, got shape "
            f"{tuple(c.shape)}"
        )
    if validate and bool((c.detach() < 0).any()):
        raise ValueError("hop_weights must be non-negative (a distribution over hop counts)")
    return c.to(dtype=like.dtype, device=like.device)


def multihop_attention(
    query,
    key,
    value,
    *,
    hop_weights=None,
    scale=None,
    attn_mask=None,
    need_weights=False,
    validate_args=None,
):
    """Multihop self-attention ``sum_h c_h A^h V`` (Singh & Buckley 2023, arXiv 2304.04556).

    ``A = softmax(scale * Q K^T + b)`` is the one-step attention matrix of
    :func:`softmax_log_weights` (``b`` from ``attn_mask``), read as the transition matrix of a
    random walk on the tokens: ``A[i, j]`` is the posterior probability that token ``i``
    points to token ``j``. The output for query ``i`` is the expected value read at the end of
    a path of random length: a hop count ``h ~ Categorical(c)``, then ``h`` steps
    ``z_1 ~ A[i]``, ``z_2 ~ A[z_1]``, ...; ``h = 0`` reads the query's own value ``v_i``
    (the Pyro program is :class:`bayesattn.models.MultihopAttentionModel`). The default
    ``c = (1/3, 1/3, 1/3)`` is the authors' layer ``M = (I + A + A^2) / 3`` (their code writes
    it with the roles of queries and keys swapped, i.e. a softmax over queries, transposed).

    Without ``need_weights`` no ``A^h`` and no ``L x S`` matrix is formed by this code: ``A``
    is applied to the running value ``A^(h-1) V`` by one
    :func:`torch.nn.functional.scaled_dot_product_attention` call per hop (SDPA with the
    running value as its value), so memory is ``O(L Ev)`` beyond SDPA's own workspace and the
    cost ``H`` softmax-attention calls. With ``need_weights`` the matrix ``M = sum_h c_h A^h``
    ``(..., L, S)`` is formed (``H - 1`` matrix products) and returned.

    Equivalent to::

        A = softmax_log_weights(query, key, attn_mask, scale=scale).exp()   # (..., L, L)
        M = sum(c[h] * torch.linalg.matrix_power(A, h) for h in range(len(c)))
        out = M @ value                                                     # (out, M)

    Args:
        query: ``(..., L, E)``.
        key: ``(..., S, E)`` with ``S == L`` (self-attention: token ``j`` is both a key and,
            after a hop, the next query).
        value: ``(..., S, Ev)``. Batch dims broadcast; one float dtype.
        hop_weights: ``c``, the prior over hop counts ``0..H``: a sequence of non-negative
            numbers or a 1-D tensor (gradients flow through it); default ``(1/3, 1/3, 1/3)``.
            A probability vector in the model's reading (the output is then a convex
            combination of values); other non-negative weights scale the output.
        scale: logit multiplier (inverse variance ``1/sigma^2`` of the key-selection model),
            positive number or 0-dim tensor; default ``1/sqrt(E)``.
        attn_mask: bool ``(..., L, S)`` (True = takes part) or a float mask added to the
            logits (an additive log-prior over keys), as SDPA. The same mask governs every
            hop (token ``z`` attends with row ``z`` of the mask).
        need_weights: also return ``M = sum_h c_h A^h``, ``(..., L, S)``.
        validate_args: check values (see :func:`set_validation`); default the global switch.

    Returns:
        ``(..., L, Ev)``, or ``(output, M)``. A token whose mask allows no key is an empty
        posterior (its row of ``A`` is 0): a path that reaches it contributes nothing, so
        its own output is ``c_0 v_i`` and rows of ``M`` may sum to less than ``sum_h c_h``.

    Raises:
        TypeError: non-tensors, integer tensors, mixed dtypes, a mask neither bool nor float,
            ``hop_weights`` that are not numbers or a float tensor.
        ValueError: ``L != S`` (not self-attention); NaN/inf inputs; mismatched ``E`` or
            ``S``; masks or batch dims that do not broadcast; non-positive ``scale``;
            ``hop_weights`` not 1-D, empty, non-finite or negative; logits that overflow.
    """
    validate = is_validating(validate_args)
    _check_call(query, key, value, attn_mask, False, 0.0, validate)
    L, S = query.shape[-2], key.shape[-2]
    if L != S:
        raise ValueError(
            "multihop_attention is self-attention: query length L and key length S must be "
            f"equal (a hop moves from a key to that token's query), got L={L}, S={S}"
        )
    c = _check_hop_weights(hop_weights, query, validate)
    scale = _default_scale(scale, query.shape[-1], validate)
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    if need_weights:
        A = softmax_log_weights(query, key, attn_mask, scale=scale,
                                validate_args=validate).exp()
        A = A.expand(*batch, L, S) if A.shape[:-2] != batch else A
        eye = torch.eye(L, dtype=A.dtype, device=A.device)
        power = eye.expand_as(A)
        M = c[0] * power
        for h in range(1, c.shape[0]):
            power = power @ A
            M = M + c[h] * power
        return M @ value, M
    running = value.expand(*batch, S, value.shape[-1])
    out = c[0] * running
    for h in range(1, c.shape[0]):
        running = softmax_attention(query, key, running, attn_mask, scale=scale,
                                    validate_args=validate and h == 1)
        out = out + c[h] * running
    return out
