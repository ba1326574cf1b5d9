"""Uncertainty-aware (Bayesian) attention as PyroModules, trained by SVI.

:class:`BayesianMultiheadAttention` puts priors on the projection weights and on a per-head
attention temperature, and makes the attention weights themselves stochastic in the manner of
Bayesian Attention Modules (Fan, Zhang, Chen & Zhou, NeurIPS 2020, arXiv 2010.10604):
reparameterised positive random weights normalised over keys, with a KL term to a
key-dependent ("contextual") prior. :class:`BayesianTransformerClassifier` is the sequence
classifier of :class:`bayesattn.nn.TransformerClassifier` with these layers;
:func:`train_svi` fits it with Pyro's SVI and :func:`predict_bayesian` returns the Monte-Carlo
predictive mean with its predictive entropy and mutual information.

Variational family (what :func:`train_svi` optimises):

* global latents (projection weights ``W_in``, ``W_out``, log-temperatures and, optionally,
  the read-out weights): mean-field Gaussian posterior
  (:class:`pyro.infer.autoguide.AutoNormal`), or MAP point masses for the projections with
  ``projection_posterior="map"`` (:meth:`BayesianTransformerClassifier.make_guide`);
* local latents (unnormalised attention weights ``S_ij`` per example, head, query and key):
  the amortised posterior ``q(S_ij | q_i, K)`` of BAM, sampled by reparameterisation inside
  the model; its KL to the contextual prior ``p(S_ij | K)`` is closed form and enters the model
  as ``pyro.factor`` (inside the data plate, so minibatch scaling applies);
* everything else (embedding, feed-forward blocks, norms, biases, the prior network) is a
  point estimate (a ``pyro.param``).

The objective is ``E_q[log p(y | x, W, S)] - beta (KL_global + lambda KL_local)``, the ELBO
when ``beta = kl_weight = 1`` and ``lambda = attention_kl_weight = 1``. ``beta < 1`` tempers
the posterior (implemented by scaling the likelihood by ``1 / beta``); ``lambda`` is BAM's KL
coefficient on the attention latents, which outnumber the labels by ``H L S`` per example
per layer. Defaults: ``beta = 1``, ``lambda = 0.01``.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoGuideList, AutoNormal
from pyro.infer.autoguide.initialization import init_to_sample, init_to_value
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_
from torch import nn

from .. import functional as Fn
from .._checks import check_choice
from ..functional._core import _log_normalise
from .masks import merge_masks, sdpa_mask
from .metrics import predictive_uncertainty
from .projection import in_projection, split_heads
from .training import check_sequence_data, iterate_minibatches, minibatch_descent
from .transformer import TransformerClassifier

__all__ = [
    "ATTENTION_DISTRIBUTIONS",
    "BayesianMultiheadAttention",
    "BayesianTransformerClassifier",
    "lognormal_kl",
    "weibull_gamma_kl",
    "train_svi",
    "predict_bayesian",
]

#: Reparameterisable families of the unnormalised attention weights (BAM section 3).
ATTENTION_DISTRIBUTIONS = ("lognormal", "weibull")
_EULER_GAMMA = 0.5772156649015329
_names = itertools.count()


def lognormal_kl(mu_q, sigma_q, mu_p, sigma_p):
    """``KL(LogNormal(mu_q, sigma_q) || LogNormal(mu_p, sigma_p))``, elementwise.

    Computed by :func:`torch.distributions.kl_divergence` (the KL is invariant under the
    shared ``exp`` transform, so it equals the KL of the underlying normals:
    ``log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2``).
    ``mu_*`` tensors, ``sigma_*`` positive numbers or tensors.
    """
    D = torch.distributions
    sigma_q = torch.as_tensor(sigma_q, dtype=mu_q.dtype)
    sigma_p = torch.as_tensor(sigma_p, dtype=mu_q.dtype)
    return D.kl_divergence(D.LogNormal(mu_q, sigma_q), D.LogNormal(mu_p, sigma_p))


def weibull_gamma_kl(k, log_lam, alpha, log_beta):
    """``KL(Weibull(shape k, scale lam) || Gamma(concentration alpha, rate beta))``, closed form.

    ``gamma_E alpha / k - alpha log lam + log k + beta lam Gamma(1 + 1/k) - gamma_E - 1
    - alpha log beta + log Gamma(alpha)`` (Zhang et al. 2018, WHAI, eq. 7; used by BAM).
    ``k`` and ``alpha`` are positive numbers; ``log_lam`` and ``log_beta`` tensors.
    """
    return (
        _EULER_GAMMA * alpha / k
        - alpha * log_lam
        + math.log(k)
        + torch.exp(log_beta + log_lam + math.lgamma(1 + 1 / k))
        - _EULER_GAMMA
        - 1
        - alpha * log_beta
        + math.lgamma(alpha)
    )


class BayesianMultiheadAttention(PyroModule):
    """Bayesian multi-head self-/cross-attention with stochastic attention weights (a PyroModule).

    Generative model, per head ``h`` (``d = E / H``)::

        W_in  ~ N(0, s_w^2)  (3E x E),   W_out ~ N(0, s_w^2)  (E x E),   s_w = weight_prior_scale
        log T_h ~ N(0, s_T^2)                     (attention temperature; scale_h = 1/(T_h sqrt d))
        phi_ij  = log softmax_j(scale_h q_i . k_j)          (the deterministic attention, log)
        theta_ij = log softmax_j(g(k_j))                    (contextual prior: keys only)
        S_ij | K ~ LogNormal(theta_ij - s_p^2/2, s_p)       or Gamma(alpha, alpha e^-theta_ij)
        q(S_ij)  = LogNormal(phi_ij - s_q^2/2, s_q)         or Weibull(k, e^phi_ij / G(1+1/k))
        w_ij = S_ij / sum_l S_il,   head_i = sum_j w_ij v_j

    ``g`` is a small MLP on the head's keys (shared by the heads). Both ``q`` and the prior have
    mean ``exp(phi)`` / ``exp(theta)`` on the simplex, so the normalisation-invariant part of
    the attention is what the KL compares (our normalised reading of BAM; Fan et al. 2020,
    section 3, with the contextual prior of their section 3.3). Masked keys (padding, causal,
    boolean ``attn_mask``) get no weight and no KL.

    After each forward, :attr:`kl` holds the local KL ``(N, L)`` (summed over heads and keys)
    and, with :attr:`record_weights` True, :attr:`last_weights` the sampled ``(N, H, L, S)``
    weights. With :attr:`stochastic` False the weights are their mean ``exp(phi)``.

    Args:
        embed_dim: ``E``.
        num_heads: ``H``.
        batch_first: ``(N, L, E)`` inputs (else ``(L, N, E)``).
        bias: deterministic input/output biases.
        weight_prior_scale: ``s_w`` (default ``3 / sqrt(E)``: weakly informative, three times
            the scale that keeps unit-variance inputs at unit variance).
        temperature_prior_scale: ``s_T``.
        attention_distribution: ``"lognormal"`` or ``"weibull"``.
        posterior_sigma: ``s_q`` (lognormal).
        prior_sigma: ``s_p`` (lognormal).
        weibull_shape: ``k`` (weibull; larger = less noise).
        gamma_concentration: ``alpha`` (weibull prior).
        prior_hidden: width of ``g`` (default ``d``).

    Raises:
        ValueError: bad sizes; unknown ``attention_distribution``; non-positive scales.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        batch_first: bool = True,
        bias: bool = True,
        weight_prior_scale: float | None = None,
        temperature_prior_scale: float = 0.5,
        attention_distribution: str = "lognormal",
        posterior_sigma: float = 0.2,
        prior_sigma: float = 1.0,
        weibull_shape: float = 10.0,
        gamma_concentration: float = 1.0,
        prior_hidden: int | None = None,
    ) -> None:
        if not (isinstance(embed_dim, int) and embed_dim > 0):
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if not (isinstance(num_heads, int) and num_heads > 0) or embed_dim % num_heads:
            raise ValueError(f"num_heads must be a positive int dividing {embed_dim}")
        check_choice("attention_distribution", attention_distribution, ATTENTION_DISTRIBUTIONS)
        s_w = 3.0 / math.sqrt(embed_dim) if weight_prior_scale is None else weight_prior_scale
        for name, val in (("weight_prior_scale", s_w),
                          ("temperature_prior_scale", temperature_prior_scale),
                          ("posterior_sigma", posterior_sigma), ("prior_sigma", prior_sigma),
                          ("weibull_shape", weibull_shape),
                          ("gamma_concentration", gamma_concentration)):
            if not (isinstance(val, int | float) and math.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a positive number, got {val!r}")
        super().__init__()
        E, H = embed_dim, num_heads
        self.embed_dim, self.num_heads, self.head_dim = E, H, E // H
        self.batch_first = batch_first
        self.attention_distribution = attention_distribution
        self.posterior_sigma, self.prior_sigma = float(posterior_sigma), float(prior_sigma)
        self.weibull_shape, self.gamma_concentration = float(weibull_shape), float(
            gamma_concentration
        )
        self.in_proj_weight = PyroSample(dist.Normal(0.0, s_w).expand([3 * E, E]).to_event(2))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * E)) if bias else None
        self.out_proj_weight = PyroSample(dist.Normal(0.0, s_w).expand([E, E]).to_event(2))
        self.out_proj_bias = nn.Parameter(torch.zeros(E)) if bias else None
        self.log_temperature = PyroSample(
            dist.Normal(0.0, float(temperature_prior_scale)).expand([H]).to_event(1)
        )
        hidden = self.head_dim if prior_hidden is None else prior_hidden
        self.prior_net = PyroModule[nn.Sequential](
            PyroModule[nn.Linear](self.head_dim, hidden),
            PyroModule[nn.ReLU](),
            PyroModule[nn.Linear](hidden, 1),
        )
        self.stochastic = True
        self.record_weights = False
        self.kl: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None

    def initial_values(self) -> dict[str, torch.Tensor]:
        """Starting values of the weight sites: PyTorch's initialisation of the same layer.

        ``in_proj_weight`` Xavier-uniform and ``out_proj_weight`` Kaiming-uniform (as in
        :class:`torch.nn.MultiheadAttention`), ``log_temperature`` 0 (temperature 1, i.e.
        scaled dot-product attention). :func:`train_svi` starts the posterior means here, so
        the Bayesian and deterministic models start from the same kind of network.
        """
        E = self.embed_dim
        w_in = nn.init.xavier_uniform_(torch.empty(3 * E, E))
        w_out = nn.init.kaiming_uniform_(torch.empty(E, E), a=math.sqrt(5))
        return {"in_proj_weight": w_in, "out_proj_weight": w_out,
                "log_temperature": torch.zeros(self.num_heads)}

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        """Attend; the signature of :meth:`bayesattn.nn.MultiheadAttention.forward`.

        Args:
            query: ``(N, L, E)`` (``(L, N, E)`` unless ``batch_first``).
            key, value: ``(N, S, E)``.
            key_padding_mask: ``(N, S)``, True (or ``-inf``) at padded keys.
            need_weights: also return the sampled weights.
            attn_mask: ``(L, S)`` or ``(N * H, L, S)``; bool (True = not allowed) or float
                (added to the logits of ``phi``).
            average_attn_weights: average returned weights over heads.
            is_causal: without ``attn_mask``, attend only to ``j <= i``.

        Returns:
            ``(output, weights or None)`` as :class:`bayesattn.nn.MultiheadAttention`.

        Raises:
            ValueError: wrong shapes (from the mask and tensor checks).
        """
        if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
            raise ValueError("query, key and value must be 3-d")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        N, L, E = query.shape
        S = key.shape[1]
        if E != self.embed_dim or key.shape[-1] != E or value.shape[-1] != E:
            raise ValueError(f"query, key and value must have {self.embed_dim} features")
        H, d = self.num_heads, self.head_dim
        q, k, v = (split_heads(t, H) for t in in_projection(
            query, key, value, E, self.in_proj_weight, self.in_proj_bias))
        allowed, log_prior = merge_masks(
            attn_mask, key_padding_mask, is_causal=is_causal, batch=N, num_heads=H, L=L, S=S,
            dtype=q.dtype,
        )
        scale = torch.exp(-self.log_temperature).view(1, H, 1, 1) / math.sqrt(d)
        phi = Fn.softmax_log_weights(q * scale, k, sdpa_mask(allowed, log_prior), scale=1.0)
        prior_logits = self.prior_net(k).squeeze(-1).unsqueeze(-2)  # (N, H, 1, S)
        theta = Fn.softmax_log_weights(
            q.new_zeros(N, H, L, 1), q.new_zeros(N, H, S, 1),
            sdpa_mask(allowed, prior_logits if log_prior is None else prior_logits + log_prior),
        )
        keep = torch.isfinite(phi)  # allowed entries (N, H, L, S)
        phi0 = torch.where(keep, phi, torch.zeros_like(phi))
        theta0 = torch.where(keep, theta, torch.zeros_like(theta))
        log_s, kl = self._sample_and_kl(phi0, theta0)
        self.kl = torch.where(keep, kl, torch.zeros_like(kl)).sum((1, 3))  # (N, L)
        weights = _log_normalise(log_s.masked_fill(~keep, -math.inf)).exp()
        if self.record_weights:
            self.last_weights = weights.detach()
        out = (weights @ v).transpose(1, 2).reshape(N, L, E)
        out = nn.functional.linear(out, self.out_proj_weight, self.out_proj_bias)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, (weights.mean(1) if average_attn_weights else weights)

    def _sample_and_kl(self, phi, theta):
        """Sampled ``log S`` and the elementwise ``KL(q || p)``; ``phi``/``theta`` finite."""
        if self.attention_distribution == "lognormal":
            s_q, s_p = self.posterior_sigma, self.prior_sigma
            mu_q, mu_p = phi - 0.5 * s_q**2, theta - 0.5 * s_p**2
            kl = lognormal_kl(mu_q, s_q, mu_p, s_p)
            if not self.stochastic:
                return phi, kl
            return mu_q + s_q * torch.randn_like(phi), kl
        k, alpha = self.weibull_shape, self.gamma_concentration
        log_lam = phi - math.lgamma(1 + 1 / k)
        kl = weibull_gamma_kl(k, log_lam, alpha, math.log(alpha) - theta)
        if not self.stochastic:
            return phi, kl
        u = torch.rand_like(phi).clamp(1e-7, 1 - 1e-7)
        return log_lam + torch.log(-torch.log1p(-u)) / k, kl


class BayesianTransformerClassifier(PyroModule):
    """:class:`bayesattn.nn.TransformerClassifier` with :class:`BayesianMultiheadAttention`.

    Model: ``y_n ~ Categorical(logits = f(x_n; W, S))`` with the attention layers' priors over
    ``W`` (weights, temperatures) and ``S`` (attention weights); the other parameters are
    point estimates. Calling the module runs the Pyro model (``y=None`` samples the labels).

    Each instance gets a unique Pyro name (``name`` or ``"bayes_clf_<n>"``) so that several
    models can live in Pyro's global parameter store side by side.

    Args:
        in_features, num_classes, d_model, nhead, num_layers, dim_feedforward, dropout,
            max_len: as :class:`bayesattn.nn.TransformerClassifier`.
        kl_weight: ``beta`` of the tempered ELBO (1 = exact; the likelihood is scaled by
            ``1 / beta``).
        attention_kl_weight: ``lambda``, the coefficient of the attention KL (1 = exact; the
            default 0.01 keeps the ``H L S`` attention latents per example from swamping the
            one label: with 1 the attention collapses onto the key-only prior).
        bayesian_head: also put a prior ``N(0, (head_prior_scale / sqrt(d_model))^2)`` on the
            read-out weights (a Bayesian last layer).
        head_prior_scale: see ``bayesian_head``.
        projection_posterior: ``"normal"`` (mean-field Gaussian) or ``"map"`` (point
            estimate under the prior) for the attention projections; see :meth:`make_guide`.
        name: Pyro name prefix.
        **attention_options: passed to :class:`BayesianMultiheadAttention`.

    Raises:
        ValueError: non-positive ``kl_weight`` or ``head_prior_scale``; negative
            ``attention_kl_weight``; the errors of the layers.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        max_len: int = 512,
        kl_weight: float = 1.0,
        attention_kl_weight: float = 0.01,
        bayesian_head: bool = False,
        head_prior_scale: float = 1.0,
        projection_posterior: str = "normal",
        name: str | None = None,
        **attention_options,
    ) -> None:
        if not (isinstance(kl_weight, int | float) and kl_weight > 0):
            raise ValueError(f"kl_weight must be positive, got {kl_weight!r}")
        if not (isinstance(attention_kl_weight, int | float) and attention_kl_weight >= 0):
            raise ValueError(
                f"attention_kl_weight must be non-negative, got {attention_kl_weight!r}"
            )
        check_choice("projection_posterior", projection_posterior, ("normal", "map"))
        if not (isinstance(head_prior_scale, int | float) and head_prior_scale > 0):
            raise ValueError(f"head_prior_scale must be positive, got {head_prior_scale!r}")
        super().__init__(name=name or f"bayes_clf_{next(_names)}")
        net = TransformerClassifier(
            in_features, num_classes, d_model=d_model, nhead=nhead, num_layers=num_layers,
            dim_feedforward=dim_feedforward, dropout=dropout, max_len=max_len,
        )
        for layer in net.layers:
            layer.self_attn = BayesianMultiheadAttention(
                d_model, nhead, batch_first=True, **attention_options
            )
        to_pyro_module_(net)
        if bayesian_head:
            net.head.weight = PyroSample(
                dist.Normal(0.0, head_prior_scale / math.sqrt(d_model))
                .expand([num_classes, d_model]).to_event(2)
            )
        self.net = net
        self.bayesian_head = bayesian_head
        self.projection_posterior = projection_posterior
        self.kl_weight = float(kl_weight)
        self.attention_kl_weight = float(attention_kl_weight)
        self.kl_anneal = 1.0  # multiplies kl_weight during a warm-up (see train_svi)
        self.num_classes = num_classes

    def initial_values(self) -> dict[str, torch.Tensor]:
        """Starting values of every weight site, keyed by Pyro site name.

        The attention layers' :meth:`BayesianMultiheadAttention.initial_values` and, with a
        Bayesian read-out, PyTorch's ``nn.Linear`` initialisation of the head weight.
        """
        values = {}
        for path, module in self.net.named_modules():
            if isinstance(module, BayesianMultiheadAttention):
                for site, value in module.initial_values().items():
                    values[f"{self._pyro_name}.net.{path}.{site}"] = value
        if self.bayesian_head:
            d_model = self.net.head.in_features
            w = nn.init.kaiming_uniform_(torch.empty(self.num_classes, d_model), a=math.sqrt(5))
            values[f"{self._pyro_name}.net.head.weight"] = w
        return values

    def make_guide(self, init_scale: float = 0.01):
        """The variational family used by :func:`train_svi`.

        ``projection_posterior="normal"``: :class:`~pyro.infer.autoguide.AutoNormal` over every
        weight site (mean-field Gaussian). ``"map"``: point masses
        (:class:`~pyro.infer.autoguide.AutoDelta`, i.e. MAP under the Gaussian prior) for the
        attention projection matrices and mean-field Gaussians for the temperatures and the
        read-out weights, a partially Bayesian network in the spirit of Kristiadi, Hein &
        Hennig (ICML 2020, "Being Bayesian, even just a bit, fixes overconfidence in ReLU
        networks"). Initial values: :meth:`initial_values`; initial scales ``init_scale``.
        """
        values = self.initial_values()
        init = init_to_value(values=values, fallback=init_to_sample)
        if self.projection_posterior == "normal":
            return AutoNormal(self, init_loc_fn=init, init_scale=init_scale)
        projections = [n for n in values if n.endswith("_proj_weight")]
        guide = AutoGuideList(self)
        guide.append(AutoDelta(poutine.block(self, expose=projections), init_loc_fn=init))
        guide.append(AutoNormal(poutine.block(self, hide=projections), init_loc_fn=init,
                                init_scale=init_scale))
        return guide

    @property
    def attention_layers(self) -> list[BayesianMultiheadAttention]:
        """The Bayesian attention layer of each encoder layer."""
        return [layer.self_attn for layer in self.net.layers]

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        num_data: int | None = None,
    ) -> torch.Tensor:
        """The Pyro model; returns the logits ``(N, C)`` of this draw.

        Args:
            x: ``(N, T, F)``.
            padding_mask: ``(N, T)`` bool, True at padded steps.
            y: ``(N,)`` observed labels, or None.
            num_data: size of the full data set when ``x`` is a minibatch (scales the
                likelihood and the local KL by ``num_data / N``).

        Raises:
            ValueError: malformed inputs (the layers' checks).
        """
        logits = self.net(x, padding_mask)
        N = x.shape[0]
        kl = sum(layer.kl for layer in self.attention_layers)  # (N, T)
        if padding_mask is not None:
            kl = kl.masked_fill(padding_mask, 0.0)
        with pyro.plate("data", num_data or N, subsample=torch.arange(N)):
            pyro.factor("attention_kl", -self.attention_kl_weight * kl.sum(-1))
            with poutine.scale(scale=1.0 / (self.kl_weight * self.kl_anneal)):
                pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits

    def set_stochastic(self, stochastic: bool) -> None:
        """Sample the attention weights (True) or use their mean (False) in every layer."""
        for layer in self.attention_layers:
            layer.stochastic = stochastic

    def record_attention(self, record: bool) -> None:
        """Keep each layer's last sampled weights in ``last_weights``."""
        for layer in self.attention_layers:
            layer.record_weights = record


def train_svi(
    model: BayesianTransformerClassifier,
    x: torch.Tensor,
    padding_mask: torch.Tensor | None,
    y: torch.Tensor,
    *,
    epochs: int = 60,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    num_particles: int = 1,
    init_scale: float = 0.01,
    kl_warmup: float = 0.0,
    clip_norm: float = 1.0,
    seed: int | None = None,
    progress: bool = True,
):
    """Fit ``model`` by stochastic variational inference with Pyro's ``Trace_ELBO``.

    Guide: a fresh ``model.make_guide(init_scale)`` when the model has that method
    (:meth:`BayesianTransformerClassifier.make_guide`), else an
    :class:`~pyro.infer.autoguide.AutoNormal` with means drawn from the prior; the local
    attention latents are amortised inside the model (see the module docstring). Each step
    minimises ``beta * (-ELBO_beta) / N`` on a shuffled minibatch, i.e. the per-example
    ``E_q[-log p(y | x, W, S)] + beta KL / N`` (:meth:`pyro.infer.Trace_ELBO.differentiable_loss`,
    scaled to the full data set through the model's data plate), with the optimiser of the
    deterministic models (:func:`bayesattn.nn.training.train_classifier`): AdamW with a
    one-cycle schedule and gradient-norm clipping. Weight decay applies only to the point
    estimates (a Gaussian prior on them, MAP), never to the guide's parameters. A tqdm bar
    over epochs shows the loss per example.

    Args:
        model: a :class:`BayesianTransformerClassifier` (or a PyroModule model with the same
            call signature, a ``kl_weight`` and a ``kl_anneal`` attribute).
        x: ``(N, T, F)``.
        padding_mask: ``(N, T)`` bool, True at padded steps.
        y: ``(N,)`` int64 labels.
        epochs, batch_size, lr, weight_decay, clip_norm: optimisation settings.
        num_particles: ELBO particles per step.
        init_scale: initial posterior standard deviation of the global latents.
        kl_warmup: fraction of the steps over which the KL weight rises linearly from
            ``kl_weight / steps`` to ``kl_weight`` (KL annealing; Bowman et al. 2016,
            Sonderby et al. 2016); 0 = none.
        seed: ``pyro.set_rng_seed(seed)`` first (torch, numpy and random).
        progress: show the progress bar.

    Returns:
        ``(guide, losses)``: the fitted guide and the mean loss per example and epoch (nats).

    Raises:
        TypeError, ValueError: malformed data; non-positive sizes or rates; ``kl_warmup``
            outside ``[0, 1]``.
    """
    check_sequence_data(x, padding_mask, y)
    for name, val in (("epochs", epochs), ("batch_size", batch_size),
                      ("num_particles", num_particles)):
        if not (isinstance(val, int) and val > 0):
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    if not (lr > 0 and init_scale > 0):
        raise ValueError("lr and init_scale must be positive")
    if not 0.0 <= kl_warmup <= 1.0:
        raise ValueError(f"kl_warmup must be in [0, 1], got {kl_warmup}")
    gen = None
    if seed is not None:
        pyro.set_rng_seed(seed)
        gen = torch.Generator().manual_seed(seed)
    N = x.shape[0]
    store = pyro.get_param_store()
    mine = f"{model._pyro_name}."
    tag = f".{model._pyro_name}."

    def is_guide_param(n: str) -> bool:
        return tag in n and not n.startswith(mine)

    for name in [n for n in store.keys() if is_guide_param(n)]:
        del store[name]  # a fresh guide for this model
    model.train()
    if hasattr(model, "make_guide"):
        guide = model.make_guide(init_scale=init_scale)
    else:
        guide = AutoNormal(model, init_loc_fn=init_to_sample, init_scale=init_scale)
    elbo = Trace_ELBO(num_particles=num_particles)

    def loss_fn(xb, pm, yb):
        scale = model.kl_weight * model.kl_anneal / N
        return elbo.differentiable_loss(model, guide, xb, pm, yb, num_data=N) * scale

    _, xb, pm, yb = next(iterate_minibatches(x, padding_mask, y, batch_size, shuffle=False))
    loss_fn(xb, pm, yb)  # creates the parameters
    own = [(n, p) for n, p in store.named_parameters() if n.startswith(mine) or is_guide_param(n)]
    point = [p for n, p in own if n.startswith(mine)]
    variational = [p for n, p in own if not n.startswith(mine)]
    warm_steps = kl_warmup * math.ceil(N / batch_size) * epochs

    def anneal(step, _):
        model.kl_anneal = min(1.0, step / warm_steps) if warm_steps else 1.0

    try:
        losses = minibatch_descent(
            [{"params": point, "weight_decay": weight_decay},
             {"params": variational, "weight_decay": 0.0}], loss_fn, x, padding_mask, y,
            epochs=epochs, batch_size=batch_size, lr=lr, clip_norm=clip_norm, generator=gen,
            progress=progress, desc="svi", before_step=anneal,
        )
    finally:
        model.kl_anneal = 1.0
    model.eval()
    return guide, losses


@torch.no_grad()
def predict_bayesian(
    model: BayesianTransformerClassifier,
    guide,
    x: torch.Tensor,
    padding_mask: torch.Tensor | None,
    *,
    num_samples: int = 32,
    record_attention: bool = False,
    batch_size: int = 512,
) -> dict[str, torch.Tensor]:
    """Monte-Carlo posterior predictive of a fitted model (dropout off, attention sampled).

    For ``s = 1..num_samples``: draw the global latents from ``guide``, run the model with
    them (which draws the attention weights from ``q``) and take ``softmax(logits)``. The
    predictive mean and its uncertainty decomposition come from
    :func:`bayesattn.nn.metrics.predictive_uncertainty`.

    Args:
        model: the fitted model.
        guide: the guide returned by :func:`train_svi`.
        x: ``(N, T, F)``.
        padding_mask: ``(N, T)`` bool.
        num_samples: Monte-Carlo draws ``S``.
        record_attention: also return the sampled attention weights per layer.
        batch_size: examples per forward pass.

    Returns:
        dict with ``probs (N, C)`` (the predictive mean), ``predictive_entropy``,
        ``expected_entropy``, ``mutual_information`` (``(N,)``, nats), ``prob_samples
        (S, N, C)`` and, with ``record_attention``, ``attention``: a list per layer of
        ``(S, N, H, T, T)`` weights.

    Raises:
        TypeError, ValueError: malformed data; ``num_samples < 1``.
    """
    check_sequence_data(x, padding_mask)
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    was_training = model.training
    model.eval()
    model.record_attention(record_attention)
    samples, maps = [], []
    try:
        for _ in range(num_samples):
            probs, layer_maps = [], None
            for _, xb, pm, _ in iterate_minibatches(x, padding_mask, None, batch_size,
                                                    shuffle=False):
                tr = poutine.trace(guide).get_trace(xb, pm)
                logits = poutine.replay(model, trace=tr)(xb, pm)
                probs.append(logits.softmax(-1))
                if record_attention:
                    w = [_pad_time(lay.last_weights, x.shape[1])
                         for lay in model.attention_layers]
                    layer_maps = w if layer_maps is None else [
                        torch.cat([a, b]) for a, b in zip(layer_maps, w, strict=True)
                    ]
            samples.append(torch.cat(probs))
            if record_attention:
                maps.append(layer_maps)
    finally:
        model.record_attention(False)
        model.train(was_training)
    out = predictive_uncertainty(torch.stack(samples))
    result = {
        "probs": out["mean"],
        "predictive_entropy": out["predictive_entropy"],
        "expected_entropy": out["expected_entropy"],
        "mutual_information": out["mutual_information"],
        "prob_samples": torch.stack(samples),
    }
    if record_attention:
        result["attention"] = [torch.stack([m[i] for m in maps]) for i in range(len(maps[0]))]
    return result


def _pad_time(w: torch.Tensor, T: int) -> torch.Tensor:
    """Zero-pad ``(N, H, t, t)`` weights of a trimmed minibatch to ``(N, H, T, T)``."""
    t = w.shape[-1]
    return nn.functional.pad(w, (0, T - t, 0, T - t))
