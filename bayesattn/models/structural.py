"""Attention as structural inference (Singh & Buckley 2023, arXiv 2304.04556, NeurIPS 2023):
the latent is a path or a distance in the token graph, not one key (docs/design.md,
"Reversed selection: slot attention, Hopfield retrieval, mixtures").

* :class:`MultihopAttentionModel`: a hop count ``h ~ Categorical(c)`` and a random walk
  ``z_1 ~ Cat(A[i])``, ``z_2 ~ Cat(A[z_1])``, ... on the one-step softmax attention matrix
  ``A``; the value read at the path's end. Its posterior-mean output is
  :func:`bayesattn.functional.multihop_attention`; ``c`` can be learned under a Dirichlet
  prior.
* :class:`ExpandingAttentionModel`: a distance ``delta = x + 1``, ``x ~ Geometric(p)``,
  ``p ~ Beta(alpha, beta)``; query ``i`` reads key ``i - delta``. Its exact posterior over the
  distance is a closed form (beta functions); :func:`bayesattn.functional.expanding_attention`
  is the authors' iterative approximation of it (see that function for what the loop is).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from .. import functional as Fn
from .._checks import check_tensor
from .base import BayesianModel, check_hyperparameter, fixed_params, hyperparameter, num_draws

__all__ = ["MultihopAttentionModel", "ExpandingAttentionModel"]


def _check_sequence(query, key, value):
    """Check one sequence ``query (T, E)``, ``key (T, E)``, ``value (T, Ev)`` (self-attention).

    Raises:
        TypeError: non-tensors or integer tensors.
        ValueError: wrong ranks or shapes, NaN/inf.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_tensor(name, t, min_dim=2)
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (one sequence), got shape {tuple(t.shape)}")
    if query.shape != key.shape or value.shape[0] != key.shape[0]:
        raise ValueError(
            "self-attention needs query (T, E), key (T, E) and value (T, Ev) of one sequence, "
            f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )


def _check_target(target, value):
    if target is None:
        return
    check_tensor("target", target, min_dim=2)
    if tuple(target.shape) != tuple(value.shape):
        raise ValueError(
            f"target must have the shape of value {tuple(value.shape)}, got {tuple(target.shape)}"
        )


# ----------------------------------------------------------------------------- multihop
class MultihopAttentionModel(BayesianModel):
    """Multihop attention as a random walk of random length (Singh & Buckley 2023).

    For token ``i`` of one sequence: ``A = softmax(scale Q K^T + b)``
    (:func:`bayesattn.functional.softmax_log_weights`), a hop count ``h ~ Categorical(c)``
    over ``0..H``, a path ``z_0 = i``, ``z_k ~ Categorical(A[z_(k-1)])``, and a target
    ``y_i ~ N(v_(z_h), noise^2 I)``. Summing the discrete latents out,
    ``p(y_i) = sum_j M_ij N(y_i; v_j, noise^2 I)`` with ``M = sum_h c_h A^h``, so
    ``E[y_i] = (M V)_i`` is :func:`bayesattn.functional.multihop_attention`.

    Two programs: :meth:`model` (the regression, discrete latents summed out in closed form;
    for NUTS / SVI / MAP on ``c``, ``scale``, ``noise``) and :meth:`path_model` (every hop
    and step an enumerated ``pyro.sample`` site, with a site ``read`` for the token whose
    value is read), on which Pyro's ``TraceEnum_ELBO().compute_marginals`` computes the exact
    posterior of ``h`` and ``read``: the tests check it against the fast path.

    Args:
        key: ``(T, E)`` keys of the sequence.
        value: ``(T, Ev)`` values.
        hop_weights: ``c``: a sequence of ``H + 1`` probabilities, or a
            :class:`pyro.distributions.Dirichlet` prior (its ``concentration`` has ``H + 1``
            entries; the site is ``hop_weights``).
        scale: logit multiplier ``1 / sigma^2`` (default ``1/sqrt(E)``), number or prior.
        noise: target noise standard deviation (value units), number or prior.
        attn_mask: bool ``(T, T)``, True where token ``i`` may point to token ``j``.

    Raises:
        TypeError, ValueError: bad shapes, a mask that is not bool ``(T, T)``, hop weights
            that are not a probability vector or a Dirichlet, bad hyperparameters.
    """

    obs_name = "target"

    def __init__(self, key, value, *, hop_weights=Fn.DEFAULT_HOP_WEIGHTS, scale=None,
                 noise=1.0, attn_mask=None):
        _check_sequence(key, key, value)
        self.key, self.value = key, value
        T = key.shape[0]
        if isinstance(hop_weights, dist.Dirichlet):
            if hop_weights.event_shape[0] < 1 or hop_weights.batch_shape != ():
                raise ValueError("the Dirichlet prior of hop_weights must have batch shape ()")
        else:
            c = torch.as_tensor(hop_weights, dtype=key.dtype)
            if c.dim() != 1 or c.numel() == 0 or not bool(torch.isfinite(c).all()) or bool(
                (c < 0).any()
            ) or abs(float(c.sum()) - 1.0) > 1e-6:
                raise ValueError(
                    f"hop_weights must be a probability vector over hop counts 0..H or a "
                    f"Dirichlet prior, got {hop_weights!r}"
                )
            hop_weights = c
        self.hop_weights = hop_weights
        scale = 1.0 / math.sqrt(key.shape[1]) if scale is None else scale
        self.scale = check_hyperparameter("scale", scale)
        self.noise = check_hyperparameter("noise", noise)
        if attn_mask is not None:
            if not isinstance(attn_mask, torch.Tensor) or attn_mask.dtype != torch.bool:
                raise TypeError("attn_mask must be a bool tensor (True = takes part)")
            if tuple(attn_mask.shape) != (T, T) or not bool(attn_mask.any(-1).all()):
                raise ValueError(
                    f"attn_mask must have shape (T, T) = ({T}, {T}) and allow every token a key"
                )
        self.attn_mask = attn_mask

    @property
    def num_hops(self) -> int:
        """``H``, the largest hop count."""
        c = self.hop_weights
        return (c.event_shape[0] if isinstance(c, dist.Distribution) else c.shape[0]) - 1

    def _priors(self) -> dict:
        return {"hop_weights": self.hop_weights, "scale": self.scale, "noise": self.noise}

    def latent_names(self) -> list[str]:
        """Names of the hyperparameters given priors (``hop_weights``, ``scale``, ``noise``)."""
        return [n for n, v in self._priors().items() if isinstance(v, dist.Distribution)]

    def _sample(self) -> dict:
        return {n: hyperparameter(n, v, dtype=self.key.dtype) for n, v in self._priors().items()}

    def _fixed(self, params) -> dict:
        return fixed_params(self._priors(), params, self.key.dtype)

    def _check_query(self, query):
        _check_sequence(query, self.key, self.value)

    # -- closed forms (the fast path)
    def transition(self, query, params: dict | None = None) -> torch.Tensor:
        """One-step attention matrix ``A (T, T)``: the walk's transition probabilities."""
        self._check_query(query)
        params = self._fixed(params)
        return Fn.softmax_log_weights(query, self.key, self.attn_mask,
                                      scale=params["scale"]).exp()

    def read_weights(self, query, params: dict | None = None) -> torch.Tensor:
        """``M = sum_h c_h A^h (T, T)``: ``p(read = j)`` for token ``i`` (the prior of the read)."""
        self._check_query(query)
        params = self._fixed(params)
        return Fn.multihop_attention(query, self.key, self.value,
                                     hop_weights=params["hop_weights"], scale=params["scale"],
                                     attn_mask=self.attn_mask, need_weights=True)[1]

    def posterior(self, query, target=None, params: dict | None = None) -> dict:
        """Exact posterior given fixed hyperparameters: ``read (T, T)`` = ``p(read = j | y_i)``,
        ``hops (T, H + 1)`` = ``p(h | y_i)`` and ``mean (T, Ev)`` = ``E[v_read | y_i]``;
        without ``target`` the prior (``mean`` is then the multihop output).

        Raises:
            ValueError: a hyperparameter has a prior and no value in ``params``; bad shapes.
        """
        self._check_query(query)
        _check_target(target, self.value)
        params = self._fixed(params)
        A = self.transition(query, params)
        c = params["hop_weights"]
        powers = [torch.eye(A.shape[0], dtype=A.dtype)]
        for _ in range(self.num_hops):
            powers.append(powers[-1] @ A)
        per_hop = c[:, None, None] * torch.stack(powers)  # (H+1, T, T): p(h, read = j)
        if target is not None:
            comp = dist.Normal(self.value.unsqueeze(0), params["noise"]).log_prob(
                target.unsqueeze(1)).sum(-1)  # (T, T): log N(y_i; v_j)
            per_hop = per_hop * (comp - comp.amax(-1, keepdim=True)).exp()
        per_hop = per_hop / per_hop.sum((0, 2), keepdim=True)
        read = per_hop.sum(0)
        return {"read": read, "hops": per_hop.sum(-1).T, "mean": read @ self.value}

    # -- Pyro programs
    def model(self, query, target=None):
        """Regression program: ``target_i ~ sum_j M_ij N(v_j, noise^2 I)`` (discrete latents
        summed out exactly); deterministic site ``attention_output`` = ``M V``.

        Args:
            query: ``(T, E)``.
            target: ``(T, Ev)`` or None (simulate).
        """
        self._check_query(query)
        _check_target(target, self.value)
        params = self._sample()
        out, M = Fn.multihop_attention(query, self.key, self.value,
                                       hop_weights=params["hop_weights"], scale=params["scale"],
                                       attn_mask=self.attn_mask, need_weights=True)
        pyro.deterministic("attention_output", out)
        T = query.shape[0]
        values = self.value.expand(T, *self.value.shape)
        with pyro.plate("queries", T, dim=-1):
            pyro.sample(
                "target",
                dist.MixtureSameFamily(dist.Categorical(probs=M),
                                       dist.Normal(values, params["noise"]).to_event(1)),
                obs=target,
            )

    def path_model(self, query, target=None):
        """Generative path program, every discrete latent an enumerated site.

        ``hops ~ Cat(c)``; ``z_k ~ Cat(A[z_(k-1)])`` for ``k = 1..H`` with ``z_0 = i``;
        ``read ~ Cat(onehot(z_hops))`` (the token whose value is read, a deterministic
        function of the path written as a site so that Pyro reports its marginal);
        ``target ~ N(v_read, noise^2 I)`` when given. ``TraceEnum_ELBO().compute_marginals``
        on it gives ``p(read | target)`` and ``p(hops | target)`` exactly (enumerate at least
        two tokens: pyro-ppl/pyro#3102).
        """
        self._check_query(query)
        _check_target(target, self.value)
        params = self._sample()
        A = Fn.softmax_log_weights(query, self.key, self.attn_mask,
                                   scale=params["scale"]).exp()
        T = query.shape[0]
        with pyro.plate("queries", T, dim=-1):
            hops = pyro.sample("hops", dist.Categorical(probs=params["hop_weights"]),
                               infer={"enumerate": "parallel"})
            z = torch.arange(T)
            end = z * (hops == 0)
            for k in range(1, self.num_hops + 1):
                z = pyro.sample(f"z_{k}", dist.Categorical(probs=A[z]),
                                infer={"enumerate": "parallel"})
                end = end + z * (hops == k)
            onehot = torch.nn.functional.one_hot(end, T).to(A.dtype)
            read = pyro.sample("read", dist.Categorical(probs=onehot),
                               infer={"enumerate": "parallel"})
            if target is not None:
                pyro.sample("target", dist.Normal(self.value[read], params["noise"]).to_event(1),
                            obs=target)

    def log_likelihood(self, draws: dict, data: dict) -> torch.Tensor:
        """``log p(target_i | query, theta)`` with hops and path summed out, ``(D, T)``."""
        query, target = data["query"], data["target"]
        self._check_query(query)
        _check_target(target, self.value)
        out = []
        for d in range(num_draws(draws)):
            params = self._fixed({k: v[d] for k, v in draws.items()})
            M = self.read_weights(query, params)
            comp = dist.Normal(self.value.unsqueeze(0), params["noise"]).log_prob(
                target.unsqueeze(1)).sum(-1)
            out.append(torch.logsumexp(M.log() + comp, dim=-1))
        return torch.stack(out)


# ----------------------------------------------------------------------------- expanding
class ExpandingAttentionModel(BayesianModel):
    """Expanding attention's generative model: a geometric distance with a Beta rate.

    For token ``i >= 1`` of one sequence: a rate ``p_i ~ Beta(alpha, beta)`` (site ``rate``),
    a distance ``delta_i = x_i + 1`` with ``x_i ~ Geometric(p_i)`` on ``0, 1, ...`` (site
    ``distance`` holds ``x_i``, enumerated over ``0..T-1`` plus one category for "beyond
    ``T``"), the key ``j = i - delta_i``, the query's evidence for that key
    ``exp(scale q_i . k_j)`` (the softmax key-selection likelihood with the key-norm prior,
    docs/design.md, "Key selection: softmax and kernel attention"), which is zero when no
    token lies at that distance (``delta_i > i``, or beyond ``max_distance``), and a target
    ``y_i ~ N(v_j, noise^2 I)``. Token 0 has no past and is left out.

    The exact posterior of the distance integrates the rate in closed form (Bayes with the
    beta-geometric marginal, ``int p (1-p)^(delta-1) Beta(p; alpha, beta) dp =
    B(alpha + 1, beta + delta - 1) / B(alpha, beta)``)::

        p(delta | q_i) ~ exp(s_(i, i - delta)) B(alpha + 1, beta + delta - 1),  1 <= delta <= i

    (:meth:`posterior`), and the rate's posterior is the mixture
    ``sum_delta p(delta | q_i) Beta(alpha + 1, beta + delta - 1)``. Given the rate, the
    distance's posterior is ``softmax(s - delta log(1/(1 - p)))``; the authors' loop
    (:func:`bayesattn.functional.expanding_attention`) iterates that with a tempered rate and
    a growing window.

    Args:
        key: ``(T, E)``; value: ``(T, Ev)``.
        alpha, beta: the Beta prior of the rate (positive numbers; the authors' 0.1, 0.9).
        scale: logit multiplier (default ``1/sqrt(E)``), positive number.
        noise: target noise standard deviation (value units), number or prior.

    Raises:
        TypeError, ValueError: bad shapes; non-positive hyperparameters; ``T < 3``.
    """

    obs_name = "target"

    def __init__(self, key, value, *, alpha=0.1, beta=0.9, scale=None, noise=1.0):
        _check_sequence(key, key, value)
        if key.shape[0] < 3:
            raise ValueError(f"the sequence needs T >= 3 tokens, got T={key.shape[0]}")
        self.key, self.value = key, value
        self.alpha = check_hyperparameter("alpha", alpha, allow_tensor=False)
        self.beta = check_hyperparameter("beta", beta, allow_tensor=False)
        if isinstance(self.alpha, dist.Distribution) or isinstance(self.beta, dist.Distribution):
            raise TypeError("alpha and beta must be fixed positive numbers")
        scale = 1.0 / math.sqrt(key.shape[1]) if scale is None else scale
        self.scale = check_hyperparameter("scale", scale, allow_tensor=False)
        if isinstance(self.scale, dist.Distribution):
            raise TypeError("scale must be a fixed positive number")
        self.noise = check_hyperparameter("noise", noise)

    def latent_names(self) -> list[str]:
        """The per-token rates ``rate`` and, with a prior, ``noise``."""
        return ["rate"] + (["noise"] if isinstance(self.noise, dist.Distribution) else [])

    def _max_distance(self, max_distance):
        T = self.key.shape[0]
        own = torch.arange(1, T)
        if max_distance is None:
            return own
        if not isinstance(max_distance, torch.Tensor) or max_distance.shape != (T - 1,) or (
            max_distance.is_floating_point()
        ):
            raise ValueError(f"max_distance must be an integer tensor of shape ({T - 1},)")
        if bool((max_distance < 1).any()):
            raise ValueError("max_distance must be >= 1 for every token")
        return torch.minimum(max_distance.long(), own)

    def scores(self, query) -> torch.Tensor:
        """``s (T, T)``: ``scale q_i . k_j``."""
        _check_sequence(query, self.key, self.value)
        return self.scale * query @ self.key.T

    def posterior(self, query, max_distance=None) -> dict:
        """Exact posterior (rate integrated out) for tokens ``1..T-1``.

        Returns ``weights (T, T)`` (``p(j = i - delta | q_i)``, row 0 zero), ``mean (T, Ev)``
        (the attention output ``E[v_j | q_i]``, row 0 zero) and ``rate_mean (T,)``
        (``E[p_i | q_i]``, the prior mean for token 0).

        Raises:
            ValueError: bad shapes or ``max_distance``.
        """
        s = self.scores(query)
        T = s.shape[0]
        maxd = torch.cat([torch.zeros(1, dtype=torch.long), self._max_distance(max_distance)])
        idx = torch.arange(T)
        delta = (idx[:, None] - idx[None, :]).to(s.dtype)
        ok = (delta >= 1) & (delta <= maxd[:, None])
        a, b = self.alpha, self.beta
        log_bg = (torch.lgamma(torch.tensor(a + 1.0, dtype=s.dtype))
                  + torch.lgamma(b + delta.clamp_min(1) - 1) - torch.lgamma(a + b + delta))
        logits = (s + log_bg).masked_fill(~ok, -math.inf)
        w = torch.cat([torch.zeros_like(s[:1]), torch.softmax(logits[1:], dim=-1)])
        rate_mean = (w * (a + 1) / (a + b + delta.clamp_min(1))).sum(-1)
        rate_mean[0] = a / (a + b)
        return {"weights": w, "mean": w @ self.value, "rate_mean": rate_mean}

    def distance_posterior(self, query, rate, max_distance=None) -> torch.Tensor:
        """``p(j = i - delta | q_i, p_i) (T - 1, T)`` for tokens ``1..T-1`` given their rates
        ``rate (T - 1,)``: ``softmax_delta(s_(i, i - delta) + (delta - 1) log(1 - p_i))`` over
        ``1 <= delta <= max_distance_i``."""
        s = self.scores(query)
        T = s.shape[0]
        maxd = self._max_distance(max_distance)
        idx = torch.arange(T)
        delta = (idx[1:, None] - idx[None, :]).to(s.dtype)
        ok = (delta >= 1) & (delta <= maxd[:, None])
        logits = s[1:] + (delta - 1) * torch.log1p(-rate).unsqueeze(-1)
        return torch.softmax(logits.masked_fill(~ok, -math.inf), dim=-1)

    def log_likelihood(self, draws: dict, data: dict) -> torch.Tensor:
        """``log p(target_i | query, rate_i, noise)`` with the distance summed out,
        ``(D, T - 1)`` (tokens ``1..T-1``); ``draws["rate"]`` is ``(D, T - 1)``."""
        query, target = data["query"], data["target"]
        _check_target(target, self.value)
        out = []
        for d in range(num_draws(draws)):
            noise = draws["noise"][d] if "noise" in draws else torch.as_tensor(
                self.noise, dtype=self.key.dtype)
            w = self.distance_posterior(query, draws["rate"][d], data.get("max_distance"))
            comp = dist.Normal(self.value.unsqueeze(0), noise).log_prob(
                target[1:].unsqueeze(1)).sum(-1)  # (T - 1, T)
            out.append(torch.logsumexp(w.log() + comp, dim=-1))
        return torch.stack(out)

    def model(self, query, target=None, max_distance=None):
        """The Pyro program over tokens ``1..T-1`` (see the class docstring).

        Args:
            query: ``(T, E)``.
            target: ``(T, Ev)`` or None; row 0 is ignored.
            max_distance: optional integer ``(T - 1,)``: the largest distance token ``i``
                may read (a window); default ``i`` (its whole past).
        """
        s = self.scores(query)
        _check_target(target, self.value)
        maxd = self._max_distance(max_distance)
        noise = hyperparameter("noise", self.noise, dtype=s.dtype)
        T = s.shape[0]
        i = torch.arange(1, T)
        x_support = torch.arange(T + 1, dtype=s.dtype)  # x = 0..T-1, and T = "beyond"
        with pyro.plate("queries", T - 1, dim=-1):
            rate = pyro.sample("rate", dist.Beta(torch.tensor(self.alpha, dtype=s.dtype),
                                                 torch.tensor(self.beta, dtype=s.dtype)))
            log_fail = torch.log1p(-rate).unsqueeze(-1)
            logits = torch.where(x_support < T, rate.log().unsqueeze(-1), 0.0) + (
                x_support * log_fail)
            x = pyro.sample("distance", dist.Categorical(logits=logits),
                            infer={"enumerate": "parallel"})
            d = x + 1
            exists = d <= maxd
            j = (i - d).clamp(min=0)
            pyro.factor("query", torch.where(exists, s[i, j], -math.inf))
            if target is not None:
                pyro.sample("target", dist.Normal(self.value[j], noise).to_event(1),
                            obs=target[1:])
