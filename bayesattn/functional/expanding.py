"""Expanding attention: a window over past tokens that grows with the evidence (Singh &
Buckley 2023, arXiv 2304.04556; docs/design.md, "Reversed selection: slot attention, Hopfield
retrieval, mixtures", the structural-inference paragraph)."""

from __future__ import annotations

import math

import torch

from .._checks import check_positive
from ._core import _check_call, _check_magnitude, _log_normalise, _max_norm, is_validating
from .softmax import _default_scale

__all__ = ["expanding_attention"]


def _check_fraction(name: str, x) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not 0.0 < float(x) < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {x!r}")
    return float(x)


def _check_prior(name: str, x, validate: bool):
    """A positive number / 0-dim tensor (:func:`check_positive`) or a positive tensor with
    batch dimensions (checked against the batch shape by :func:`_expand_prior`)."""
    if isinstance(x, torch.Tensor) and x.dim() > 0:
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if validate:
            d = x.detach()
            if not bool((torch.isfinite(d) & (d > 0)).all()):
                raise ValueError(f"{name} must be positive and finite")
        return x
    return check_positive(name, x, check_values=validate)


def _expand_prior(name: str, x, batch, T: int, dtype, device) -> torch.Tensor:
    """``x`` as ``(*batch, T)`` (one value per sequence, repeated over its queries)."""
    t = torch.as_tensor(x, dtype=dtype, device=device)
    if t.dim() == 0:
        return t.expand(*batch, T)
    try:
        return t.broadcast_to(batch).unsqueeze(-1).expand(*batch, T)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} does not broadcast to the batch shape "
            f"{tuple(batch)}"
        ) from None


def expanding_attention(
    query,
    key,
    value,
    *,
    alpha=0.1,
    beta=0.9,
    scale=None,
    coverage=0.95,
    max_iter=100,
    tol=0.01,
    need_weights=False,
    need_window=False,
    validate_args=None,
):
    """Causal expanding attention: the authors' iterated Beta-geometric window, every query.

    Query ``i`` (0-based) attends to the earlier tokens ``j = i - delta``, ``delta >= 1``
    (itself excluded), under a geometric prior over the distance ``delta`` whose rate ``p``
    has a ``Beta(alpha, beta)`` prior (the Pyro program is
    :class:`bayesattn.models.ExpandingAttentionModel`). The loop, per query (the authors' code,
    github ryan-sussex/AttentionAsStructuralInference, ``ExpandingAttention``), starting from
    ``a = alpha``, ``b = beta``, ``m_old = 0``, repeated at most ``max_iter`` times::

        p = a / (a + b)
        m = log(1 - coverage) / log(1 - p)          # the window holding 95% of Geometric(p)
        w = softmax_delta(s_delta - delta / m)      # over delta = 1 .. min(ceil(m), i)
        a = a + 1;  b = b + sum_delta w_delta delta # conjugate Beta update
        stop if m > i + 1  or  m - m_old < tol;  m_old = m

    with ``s_delta = scale * q_i . k_(i - delta)``; the output is ``sum_delta w_delta v_(i -
    delta)`` with the weights of the last pass. For the last token of a length-``T``
    sequence the stop rule ``m > i + 1`` is the authors' ``m > T``; ``m - m_old < tol`` also
    stops when the window shrinks. The window is the ``ceil(m)`` tokens before the query, so
    it holds exactly the prior mass ``coverage`` of ``delta``: ``P(delta > m) = (1 - p)^m =
    1 - coverage``. (The authors' slice of ``ceil(m)`` positions counts the query's own,
    excluded, position, so it holds one key fewer.)

    What the loop is. Each pass is an E-step over the key choice and a conjugate M-step for
    ``p``. The E-step is *exactly* the model's conditional posterior of the distance,
    ``p(delta | q_i, p~, delta <= ceil(m))``, at the tempered rate
    ``p~ = 1 - (1 - p)^(1 / log(1 / (1 - coverage)))``: the penalty ``delta / m`` is the
    geometric log-prior ``-delta log(1 - p)`` divided by ``log 20 ~ 3.0``, and the support is
    cut to the window (both tested against Pyro's enumeration). The M-step adds one
    pseudo-observation of the expected distance per pass without removing the previous one,
    so after ``n`` passes the Beta holds ``n`` observations: it is an incremental
    (online-EM-like) scheme, not the fixed point of one observation's mean-field
    posterior, and the exact posterior of the model (beta functions, enumerated) is what it
    approximates. It agrees with the exact posterior when one key's score dominates inside
    the first window; ``bayesattn.models.ExpandingAttentionModel.posterior`` gives the exact
    one for comparison.

    Gradients flow to ``query``, ``key``, ``value`` and through ``p`` to tensor ``alpha`` /
    ``beta`` (the penalty ``delta / m``; the window size and the stopping decision are
    piecewise constant). In the authors' code alpha and beta are parameters that receive no
    gradient; here they do. Cost: the ``L x S`` scores once (``O(L S E)``), then
    ``O(L S)`` per pass; each pass syncs with the host once (the stopping test).

    Equivalent to (one query ``i``; plain Python)::

        a, b, m_old = alpha, beta, 0.0
        for _ in range(max_iter):
            m = log(1 - coverage) / log(1 - a / (a + b))
            d = range(1, min(ceil(m), i) + 1)
            w = softmax([s[i, i - t] - t / m for t in d])
            a, b = a + 1, b + sum(wt * t for wt, t in zip(w, d))
            if m > i + 1 or m - m_old < tol: break
            m_old = m
        out_i = sum(wt * v[i - t] for wt, t in zip(w, d))

    Args:
        query: ``(..., L, E)``: the queries of the last ``L`` tokens (``L = T`` for every
            token; ``L = 1`` when only the last token's output is needed).
        key: ``(..., T, E)`` (self-attention: the sequence's ``T = S >= L`` tokens).
        value: ``(..., T, Ev)``. Batch dims broadcast; one float dtype.
        alpha, beta: the Beta prior of ``p`` (positive numbers or 0-dim tensors; the
            authors' 0.1 and 0.9, a prior mean ``p = 0.1``, window ``m = 28.4``), or
            tensors of the batch shape ``(...)`` (broadcastable), one prior per sequence
            (e.g. independent runs stacked in one batch).
        scale: logit multiplier, default ``1/sqrt(E)``.
        coverage: prior mass of ``delta`` the window holds (the authors' 0.95).
        max_iter: most passes (the authors' 100).
        tol: stop when the window grows by less than this (the authors' 0.01).
        need_weights: also return the last pass's weights ``(..., L, T)`` (zero outside the
            window, on the query itself and in the future).
        need_window: also return ``(m (..., L), passes (..., L))``: the last window size
            ``m`` (real; ``ceil(m)`` tokens) and the number of passes per query.
        validate_args: check values (see :func:`set_validation`).

    Returns:
        ``output (..., L, Ev)``; with ``need_weights`` and / or ``need_window`` a tuple
        ``(output, weights?, (m, passes)?)`` in that order. Query 0 has no earlier token: its
        output and weights are 0 (an empty posterior).

    Raises:
        TypeError: non-tensors, integer tensors, mixed dtypes, an integer ``alpha`` /
            ``beta`` tensor.
        ValueError: ``L > S``; NaN/inf inputs; mismatched ``E``; non-positive ``alpha``,
            ``beta`` or ``scale``; ``alpha`` / ``beta`` tensors that do not broadcast to the
            batch shape; ``coverage`` outside ``(0, 1)``; ``max_iter`` not a
            positive int; negative ``tol``; logits that overflow.
    """
    validate = is_validating(validate_args)
    _check_call(query, key, value, None, False, 0.0, validate)
    T, S = query.shape[-2], key.shape[-2]
    if T > S:
        raise ValueError(
            f"expanding_attention is causal self-attention: the L queries are the last L of "
            f"the S tokens, so L <= S is needed, got L={T}, S={S}"
        )
    alpha = _check_prior("alpha", alpha, validate)
    beta = _check_prior("beta", beta, validate)
    scale = _default_scale(scale, query.shape[-1], validate)
    coverage = _check_fraction("coverage", coverage)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    if validate:
        _check_magnitude(float(scale) * _max_norm(query) * _max_norm(key), query.dtype,
                         "expanding logits scale * q.k")
    dtype, device = query.dtype, query.device
    scores = (query @ key.mT) * scale  # (..., L, S)
    idx = torch.arange(S - T, S, device=device)  # the queries' positions
    delta = (idx[:, None] - torch.arange(S, device=device)[None, :]).to(dtype)  # (L, S): i - j
    past = delta >= 1
    log_mass = math.log1p(-coverage)
    batch = scores.shape[:-2]
    a = _expand_prior("alpha", alpha, batch, T, dtype, device)
    b = _expand_prior("beta", beta, batch, T, dtype, device)
    m_old = torch.zeros(*batch, T, dtype=dtype, device=device)
    m_last = m_old
    weights = torch.zeros_like(scores)
    passes = torch.zeros(*batch, T, dtype=torch.long, device=device)
    active = (idx >= 1).expand(*batch, T)  # query 0 has nothing to attend to
    limit = (idx + 1).to(dtype)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        p = a / (a + b)
        m = log_mass / torch.log1p(-p)
        window = torch.ceil(m.detach()).unsqueeze(-1)
        allowed = past & (delta <= window)
        logits = (scores - delta / m.unsqueeze(-1)).masked_fill(~allowed, -math.inf)
        w = _log_normalise(logits).exp()
        on = active.unsqueeze(-1)
        weights = torch.where(on, w, weights)
        m_last = torch.where(active, m, m_last)
        a = torch.where(active, a + 1, a)
        b = torch.where(active, b + (w * delta).sum(-1), b)
        passes = passes + active.long()
        stop = (m.detach() > limit) | (m.detach() - m_old < tol)
        m_old = torch.where(active, m.detach(), m_old)
        active = active & ~stop
    out = weights @ value
    extra = ()
    if need_weights:
        extra += (weights,)
    if need_window:
        extra += ((m_last, passes),)
    return (out, *extra) if extra else out
