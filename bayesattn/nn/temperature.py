"""Softmax attention with a variational posterior over each head's temperature.

The smallest Bayesian attention: only the per-head attention temperature ``T_h`` (the
bandwidth of the key-selection model, docs/design.md "Key-selection models": softmax
attention with scale ``1 / (T_h sqrt d)`` is the posterior over keys of a Gaussian
key-selection model with variance ``T_h sqrt d``) gets a posterior; everything else is a point
estimate. Bayes by backprop (Blundell et al., ICML 2015): ``q(log T_h) = N(mu_h, s_h^2)``,
prior ``N(0, s_0^2)``, reparameterised draws, objective ``E_q[-log p(y | x, T)] + KL / N``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import functional as Fn
from .._checks import check_positive
from .attention import MultiheadAttention
from .masks import sdpa_mask

__all__ = ["TemperaturePosteriorAttention"]


class TemperaturePosteriorAttention(MultiheadAttention):
    """Multi-head softmax attention with a Gaussian posterior over each head's log-temperature.

    Head ``h`` attends with ``softmax(q . k / (T_h sqrt d))``, ``log T_h ~ q = N(mu_h, s_h^2)``
    (learned ``temperature_loc = mu`` and ``temperature_log_scale = log s``), prior
    ``N(0, prior_scale^2)``. With :attr:`sample` True each forward draws one ``log T`` per
    example and head (a valid Monte-Carlo estimate of the expected log-likelihood, with lower
    variance than one draw per batch); with ``sample`` False it uses ``T_h = exp(mu_h)``.
    :meth:`kl` gives ``KL(q || prior)`` summed over heads. Same constructor and forward as
    :class:`bayesattn.nn.MultiheadAttention` (``attention`` fixed to ``"softmax"``).

    Args:
        embed_dim, num_heads, dropout, bias, batch_first, device, dtype: as
            :class:`bayesattn.nn.MultiheadAttention`.
        prior_scale: ``s_0``, the prior sd of ``log T`` (nats of log-temperature).
        init_scale: initial posterior sd ``s_h``.

    Raises:
        ValueError: non-positive ``prior_scale`` / ``init_scale``; the errors of
            :class:`bayesattn.nn.MultiheadAttention`.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, device=None, dtype=None, *,
                 prior_scale: float = 0.5, init_scale: float = 0.05) -> None:
        super().__init__(embed_dim, num_heads, dropout, bias, batch_first=batch_first,
                         device=device, dtype=dtype, attention="softmax")
        self.prior_scale = check_positive("prior_scale", prior_scale)
        init_scale = check_positive("init_scale", init_scale)
        factory = {"device": device, "dtype": dtype}
        self.temperature_loc = nn.Parameter(torch.zeros(num_heads, **factory))
        self.temperature_log_scale = nn.Parameter(
            torch.full((num_heads,), math.log(init_scale), **factory))
        self.sample = True

    def kl(self) -> torch.Tensor:
        """``KL(N(mu, s^2) || N(0, prior_scale^2))`` summed over heads (0-dim, nats)."""
        D = torch.distributions
        q = D.Normal(self.temperature_loc, self.temperature_log_scale.exp())
        p = D.Normal(torch.zeros_like(self.temperature_loc), self.prior_scale)
        return D.kl_divergence(q, p).sum()

    def attend(self, q, k, v, allowed, log_prior, key_valid, need_weights):
        """Softmax attention with a drawn (or mean) temperature per example and head.

        Shapes as :meth:`bayesattn.nn.MultiheadAttention.attend`.
        """
        N, H = q.shape[:2]
        log_t = self.temperature_loc.expand(N, H)
        if self.sample:
            log_t = log_t + self.temperature_log_scale.exp() * torch.randn_like(log_t)
        q = q * torch.exp(-log_t).view(N, H, 1, 1)
        drop = self.dropout if self.training else 0.0
        res = Fn.softmax_attention(q, k, v, sdpa_mask(allowed, log_prior), drop,
                                   need_weights=need_weights)
        return res if need_weights else (res, None)
