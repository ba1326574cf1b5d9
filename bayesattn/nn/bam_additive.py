"""Additive (Bahdanau) attention with stochastic alignment weights, in the manner of BAM.

Bayesian Attention Modules (Fan, Zhang, Chen & Zhou, NeurIPS 2020, arXiv 2010.10604, section 3)
make the unnormalised attention weights ``S_ij`` random, with a reparameterisable amortised
posterior and a KL term to a key-dependent ("contextual") prior, and normalise them over keys.
:class:`BayesianAdditiveAttention` puts that construction on Bahdanau's score (the same
lognormal family and normalised reading as :class:`bayesattn.nn.BayesianMultiheadAttention`,
whose KL :func:`bayesattn.nn.bayesian.lognormal_kl` it uses)::

    phi_ij   = log softmax_j(w_v^T tanh(W_q q_i + W_k k_j))      (Bahdanau's alignment, log)
    theta_ij = log softmax_j(g(k_j))                              (contextual prior: keys only)
    sigma_i  = exp(a^T q_i + b)                                   (posterior sd per query)
    q(S_ij)  = LogNormal(phi_ij - sigma_i^2 / 2, sigma_i)         (mean exp(phi_ij))
    p(S_ij)  = LogNormal(theta_ij - s_p^2 / 2, s_p)
    w_ij = S_ij / sum_l S_il,   output_i = sum_j w_ij v_j

Difference from BAM, stated: BAM fixes the posterior sd as a hyperparameter; here it is a
function of the query (a linear map of the decoder state), so the model can be surer of some
alignments than of others, and the KL coefficient (chosen on validation data) decides how far
the sd may shrink below the prior's. With ``sigma -> 0`` the alignment is Bahdanau's
``softmax(phi)`` exactly (tested).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_positive
from ..functional._core import _log_normalise
from .bayesian import lognormal_kl
from .layers import AdditiveAttention, _check_padding

__all__ = ["BayesianAdditiveAttention"]


class BayesianAdditiveAttention(AdditiveAttention):
    """Bahdanau attention whose alignment weights are drawn from a lognormal posterior (BAM).

    See the module docstring for the model. With :attr:`sample` True each forward draws one
    set of unnormalised weights ``S`` per query (reparameterised, so gradients flow); with
    ``sample`` False the weights are the posterior's mean direction ``softmax(phi)``, i.e.
    deterministic Bahdanau attention with the same parameters. After each forward
    :attr:`local_kl` holds ``KL(q || p)`` per query ``(B, L)`` (nats, summed over the real
    keys; padded keys get no weight and no KL).

    Args:
        query_dim, key_dim, hidden_dim: as :class:`bayesattn.nn.AdditiveAttention`.
        prior_sigma: ``s_p``, the prior's sd of ``log S``.
        init_sigma: initial posterior sd ``sigma`` (the map ``a`` starts at 0, ``b`` at
            ``log init_sigma``).
        max_log_sigma: ``log sigma`` is clipped to ``[-12, max_log_sigma]`` (numerical
            safety only).

    Raises:
        ValueError: non-positive sizes or ``prior_sigma`` / ``init_sigma``.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int, *,
                 prior_sigma: float = 1.0, init_sigma: float = 0.3,
                 max_log_sigma: float = 2.0) -> None:
        super().__init__(query_dim, key_dim, hidden_dim)
        self.prior_sigma = check_positive("prior_sigma", prior_sigma)
        init_sigma = check_positive("init_sigma", init_sigma)
        self.max_log_sigma = float(max_log_sigma)
        self.sigma_net = nn.Linear(query_dim, 1)
        nn.init.zeros_(self.sigma_net.weight)
        nn.init.constant_(self.sigma_net.bias, math.log(init_sigma))
        self.prior_net = nn.Linear(key_dim, 1)
        self.sample = True
        self.local_kl: torch.Tensor | None = None

    def posterior(self, query: torch.Tensor, key: torch.Tensor,
                  key_padding_mask: torch.Tensor | None = None):
        """Log mean weights ``phi``, prior ``theta`` (both ``(B, L, S)``, ``-inf`` at padded
        keys) and posterior sd ``sigma (B, L, 1)``.

        Raises:
            ValueError: a padding mask of the wrong shape.
        """
        B, S = key.shape[:2]
        key_padding_mask = _check_padding("key_padding_mask", key_padding_mask, (B, S))
        scores = self.scores(query, key)
        prior = self.prior_net(key).squeeze(-1).unsqueeze(-2).expand_as(scores)
        if key_padding_mask is not None:
            pad = key_padding_mask.unsqueeze(-2)
            scores = scores.masked_fill(pad, -math.inf)
            prior = prior.masked_fill(pad, -math.inf)
        log_sigma = self.sigma_net(query).clamp(-12.0, self.max_log_sigma)
        return _log_normalise(scores), _log_normalise(prior), log_sigma.exp()

    def forward(self, query, key, value, key_padding_mask=None):
        """Attend with one draw of the alignment.

        Args:
            query: ``(B, L, Eq)``.
            key: ``(B, S, Ek)``.
            value: ``(B, S, Ev)``.
            key_padding_mask: ``(B, S)`` bool, True at padded keys.

        Returns:
            ``(output (B, L, Ev), weights (B, L, S))``; sets :attr:`local_kl` ``(B, L)``.

        Raises:
            ValueError: tensors that are not 3-d; a padding mask of the wrong shape.
        """
        if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
            raise ValueError("query, key and value must be 3-d (B, T, features)")
        phi, theta, sigma = self.posterior(query, key, key_padding_mask)
        keep = torch.isfinite(phi)
        phi0 = phi.masked_fill(~keep, 0.0)
        theta0 = theta.masked_fill(~keep, 0.0)
        mu_q = phi0 - 0.5 * sigma**2
        mu_p = theta0 - 0.5 * self.prior_sigma**2
        kl = lognormal_kl(mu_q, sigma.expand_as(mu_q), mu_p, self.prior_sigma)
        self.local_kl = kl.masked_fill(~keep, 0.0).sum(-1)
        log_s = mu_q + sigma * torch.randn_like(mu_q) if self.sample else phi0
        weights = _log_normalise(log_s.masked_fill(~keep, -math.inf)).exp()
        return weights @ value, weights
