"""Key-selection models: softmax and kernel attention as Pyro programs (docs/design.md section 1).

A query ``q_i`` picks one stored key, ``z_i in {1..S}``. Two programs per model:

* :meth:`KeySelectionModel.selection_model` ``(query)``: the generative key-selection model,
  ``z_i ~ Categorical(pi_i)`` and ``q_i | z_i = j ~`` the kernel centred on ``k_j``. Its exact
  posterior ``p(z_i = j | q_i)`` is the attention weight (Pyro's enumeration finds it; the
  tests check it against :mod:`bayesattn.functional`).
* :meth:`KeySelectionModel.model` ``(query, target=None)``: the regression model. Given the
  query, ``z_i ~ Categorical(w_i)`` with ``w_i`` that posterior, and
  ``y_i | z_i = j ~ N(v_j, noise^2 I)``. ``E[y_i | q_i] = sum_j w_ij v_j`` is the attention
  output, and ``log p(y_i | q_i) = logsumexp_j(log w_ij + log N(y_i; v_j, noise^2))`` is the
  pointwise log-likelihood. The query is conditioned on (a design variable, as in
  regression), so hyperparameters are learned from the targets. ``z`` is summed out in
  closed form (a mixture over keys), exactly.

With ``leave_one_out=True`` (query ``i`` is memory item ``i``) the mask excludes ``j = i``, so a
data set can be its own memory without the bandwidth collapsing to zero (leave-one-out
likelihood; the fitted log-density is then a pseudo-likelihood, Silverman 1986 section 3.4.4).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from .. import functional as Fn
from .._checks import check_choice, check_mask, check_tensor
from ._mixture import KeyMixture, rows_per_chunk
from .base import (
    BayesianModel,
    check_hyperparameter,
    check_memory,
    fixed_params,
    hyperparameter,
    hyperparameter_log_prior,
    hyperparameter_prior_draws,
    num_draws,
    single_input_column,
)

__all__ = ["KeySelectionModel", "KernelAttentionModel", "SoftmaxAttentionModel"]


class KeySelectionModel(BayesianModel):
    """Shared machinery of :class:`KernelAttentionModel` and :class:`SoftmaxAttentionModel`.

    Subclasses define :meth:`log_weights` (the closed-form posterior of ``z``) and
    :meth:`_selection_terms` (prior logits and query log-likelihood per key).

    Scale: the regression likelihood is evaluated :attr:`chunk_bytes` of ``(rows, S)``
    weights at a time (recomputed in the backward pass), so memory does not grow as
    ``L * S``; ``model(query, target, subsample_size=B)`` evaluates ``B`` random queries only
    (against all ``S`` keys), scaled by ``L / B``, for minibatch SVI
    (:attr:`supports_subsampling`). The time of one full evaluation still grows as ``L * S``
    (:meth:`likelihood_cost`).

    Args:
        key: ``(S, E)`` stored keys (the memory).
        value: ``(S, Ev)`` stored values, or ``None`` (selection model only).
        noise: value noise ``tau`` (standard deviation, units of the values): a positive
            number or a Pyro distribution used as its prior.
        mask: bool ``(L, S)``, True where a query may attend.
        log_prior: ``(L, S)`` additive log-prior over keys.
        leave_one_out: exclude ``j = i`` (needs ``L == S``: query i is memory item i).

    Raises:
        TypeError, ValueError: bad ``key``/``value``/``mask``/``log_prior``; ``noise`` neither
            positive nor a distribution.
    """

    obs_name = "target"
    idata_obs_name = "y"
    supports_subsampling = True
    log_likelihood_sums_to_joint = True
    #: bytes of one ``(rows, S)`` matrix of the chunked likelihood (a chunk holds about
    #: ``Ev + 8`` of them). Above glibc's largest dynamic mmap threshold (32 MiB), so that
    #: every chunk's matrices are mapped and unmapped whole: smaller ones are carved up by the
    #: small tensors each chunk keeps, and the heap then grows with the number of chunks.
    chunk_bytes: int = 40 * 2**20

    def __init__(self, key, value=None, *, noise=1.0, mask=None, log_prior=None,
                 leave_one_out=False):
        check_memory(key, value)
        self.key, self.value = key, value
        self.noise = check_hyperparameter("noise", noise)
        self.mask, self.log_prior, self.leave_one_out = mask, log_prior, leave_one_out

    # -- pieces shared by both programs
    def _mask(self, L: int):
        S = self.key.shape[0]
        check_mask(self.mask, self.log_prior, (), L, S)
        mask = self.mask
        if self.leave_one_out:
            if L != S:
                raise ValueError(
                    f"leave_one_out needs one query per memory item (L == S), got L={L}, S={S}"
                )
            loo = ~torch.eye(S, dtype=torch.bool, device=self.key.device)
            mask = loo if mask is None else mask & loo
        return mask

    def _check_query(self, query):
        check_tensor("query", query, min_dim=2)
        if query.dim() != 2 or query.shape[1] != self.key.shape[1]:
            raise ValueError(
                f"query must have shape (L, E) with E = {self.key.shape[1]}, got "
                f"{tuple(query.shape)}"
            )

    def _check_target(self, target, L):
        if self.value is None:
            raise ValueError("this model was built without value: give value= to the model")
        if target is None:
            return
        check_tensor("target", target, min_dim=2)
        if tuple(target.shape) != (L, self.value.shape[1]):
            raise ValueError(
                f"target must have shape (L, Ev) = ({L}, {self.value.shape[1]}), got "
                f"{tuple(target.shape)}"
            )

    def _hyperparameters(self) -> dict:
        raise NotImplementedError

    def latent_names(self) -> list[str]:
        """Names of the hyperparameters given priors."""
        return [n for n, v in self._priors().items() if isinstance(v, dist.Distribution)]

    def _priors(self) -> dict:
        return {**self._hyperparameters(), "noise": self.noise}

    def _sample_hyperparameters(self) -> dict:
        return {n: hyperparameter(n, v, dtype=self.key.dtype) for n, v in self._priors().items()}

    # -- the closed-form posterior
    def log_weights(self, query, params: dict) -> torch.Tensor:
        """Log attention weights ``log p(z_i = j | q_i)``, ``(L, S)``, with the model's mask."""
        return self._log_weights(query, params, self._mask(query.shape[0]), self.log_prior)

    def _log_weights(self, query, params, mask, log_prior):
        raise NotImplementedError

    def attention_weights(self, query, params: dict | None = None) -> torch.Tensor:
        """Weights ``(L, S)`` of new queries ``(L, E)`` over all keys (no mask, no
        leave-one-out) for one draw of the hyperparameters ``params``."""
        self._check_query(query)
        return self._log_weights(query, self._fixed(params), None, None).exp()

    def predict(self, query, params: dict, data: dict | None = None):
        """Predictive ``(mean (L, Ev), variance (L, Ev))`` of a target at new queries ``(L, E)``.

        New queries attend to every key (no mask, no log-prior, no leave-one-out); ``params``
        holds one draw of the hyperparameters.
        """
        self._check_target(None, query.shape[0])
        w = self.attention_weights(query, params)
        mean = w @ self.value
        return mean, self._fixed(params)["noise"] ** 2 + w @ self.value**2 - mean**2

    def predictive_sample(self, query, params: dict, data: dict | None, generator,
                          num_samples: int | None = None):
        """One draw ``(L, Ev)`` from the mixture ``sum_j w_ij N(v_j, noise^2 I)`` at new
        queries, or ``num_samples`` independent draws ``(num_samples, L, Ev)`` (the weights
        computed once: keys drawn with replacement)."""
        self._check_target(None, query.shape[0])
        w = self.attention_weights(query, params)
        params = self._fixed(params)
        n = 1 if num_samples is None else num_samples
        z = torch.multinomial(w, n, replacement=True, generator=generator).T  # (n, L)
        eps = torch.randn(*z.shape, self.value.shape[1], dtype=w.dtype, generator=generator)
        y = self.value[z] + params["noise"] * eps
        return y[0] if num_samples is None else y

    def posterior(self, query, params: dict | None = None) -> dict:
        """Exact posterior given fixed hyperparameters ``params`` (default: the fixed values).

        Returns a dict with ``weights (L, S)``, ``mean (L, Ev)`` (the attention output,
        ``E[y_i | q_i]``) and ``variance (L, Ev)``: the predictive variance
        ``noise^2 + sum_j w_ij v_j^2 - (sum_j w_ij v_j)^2`` (docs/design.md section 1).

        Raises:
            ValueError: a hyperparameter has a prior and no value is given in ``params``.
        """
        params = self._fixed(params)
        self._check_query(query)
        self._check_target(None, query.shape[0])
        w = self.log_weights(query, params).exp()
        mean = w @ self.value
        var = params["noise"] ** 2 + w @ self.value**2 - mean**2
        return {"weights": w, "mean": mean, "variance": var}

    def _fixed(self, params):
        return fixed_params(self._priors(), params, self.key.dtype)

    # -- the regression likelihood, in row chunks (memory O(rows * S), not O(L * S))
    def _check_rows(self, L: int):
        """Check mask/log_prior/leave-one-out for ``L`` queries; the (L, S) views they give.

        Raises:
            ValueError: a mask/log_prior with batch dims, ``leave_one_out`` with ``L != S``, or
                a query with no key it may attend to.
        """
        S = self.key.shape[0]
        check_mask(self.mask, self.log_prior, (), L, S)
        if self.leave_one_out and L != S:
            raise ValueError(
                f"leave_one_out needs one query per memory item (L == S), got L={L}, S={S}"
            )
        views = []
        for name, t in (("mask", self.mask), ("log_prior", self.log_prior)):
            if t is not None and t.dim() > 2:
                if t.shape[:-2].numel() != 1:
                    raise ValueError(f"{name} must broadcast to (L, S) = ({L}, {S}), got "
                                     f"{tuple(t.shape)}")
                t = t.reshape(t.shape[-2:])
            views.append(None if t is None else t.expand(L, S))
        mask, log_prior = views
        allowed = None
        if mask is not None:
            allowed = mask
        if log_prior is not None:
            finite = ~torch.isneginf(log_prior)
            allowed = finite if allowed is None else allowed & finite
        if allowed is not None or self.leave_one_out:
            count = (torch.full((L,), S, device=self.key.device) if allowed is None
                     else allowed.sum(-1))
            if self.leave_one_out:
                own = (torch.ones(L, dtype=torch.bool, device=self.key.device)
                       if allowed is None else allowed.diagonal())
                count = count - own.long()
            if bool((count == 0).any()):
                raise ValueError("a query has no key it may attend to (mask/log_prior exclude all)")
        return mask, log_prior

    def _row_log_weights(self, query, params, rows, views):
        """``rows -> (len(rows), S)`` log weights of those queries, mask and prior applied."""
        mask, log_prior = views
        S = self.key.shape[0]

        def log_weights(r):
            m = None if mask is None else mask[r]
            if self.leave_one_out:
                loo = torch.arange(S, device=self.key.device) != r.unsqueeze(-1)
                m = loo if m is None else m & loo
            lp = None if log_prior is None else log_prior[r]
            return self._log_weights(query[r], params, m, lp)

        return log_weights

    def _chunk_rows(self, dtype) -> int:
        return rows_per_chunk(self.key.shape[0], torch.finfo(dtype).bits // 8,
                              self.chunk_bytes)

    def _mixture(self, query, params, rows=None, views=None) -> KeyMixture:
        """The likelihood of the queries ``rows`` (all when None) as a :class:`KeyMixture`."""
        L = query.shape[0]
        views = self._check_rows(L) if views is None else views
        rows = torch.arange(L, device=query.device) if rows is None else rows
        fn = self._row_log_weights(query, params, rows, views)
        return KeyMixture(lambda sl: fn(rows[sl]), self.value, params["noise"], rows.shape[0],
                          self._chunk_rows(query.dtype))

    # -- the Pyro programs
    def model(self, query, target=None, *, subsample_size=None):
        """Regression program: ``target_i ~ sum_j w_ij N(v_j, noise^2 I)``.

        The key choice ``z_i ~ Cat(w_i)`` is marginalised in closed form (a mixture over keys),
        which is exact and much faster under NUTS than enumerating it. The weights are computed
        ``rows`` queries at a time (:class:`bayesattn.models._mixture.KeyMixture`, ``rows * S``
        numbers in :attr:`chunk_bytes`), so memory stays ``O(rows * S)``; the attention output is
        :meth:`per_observation_deterministics`, not a site of this program.

        Args:
            query: ``(L, E)``.
            target: ``(L, Ev)`` observed targets, or None to simulate them.
            subsample_size: evaluate ``B`` random queries only (``pyro.plate`` subsampling; the
                log-likelihood is scaled by ``L / B``): only ``(B, S)`` weights are built.

        Raises:
            ValueError: bad shapes; a query with no key it may attend to.
        """
        self._check_query(query)
        self._check_target(target, query.shape[0])
        params = self._sample_hyperparameters()
        L = query.shape[0]
        views = self._check_rows(L)
        # the likelihood is evaluated lazily (at log_prob): check the hyperparameters now, on
        # one query, so that a bad bandwidth/scale fails at the call
        self._log_weights(query[:1], params, None, None)
        with pyro.plate("queries", L, subsample_size=subsample_size, dim=-1) as rows:
            full = rows.shape[0] == L
            pyro.sample(
                "target", self._mixture(query, params, None if full else rows, views),
                obs=target if target is None or full else target[rows],
            )

    def selection_model(self, query):
        """Generative key-selection program: ``z_i ~ Cat(pi_i)``, ``q_i | z_i`` ~ kernel at ``k_z``.

        The exact posterior of ``z`` (Pyro's ``TraceEnum_ELBO().compute_marginals``) equals
        :meth:`log_weights`. A hyperparameter with a prior needs a normalisable kernel. With a
        compact kernel, a query outside the support of every key has zero evidence
        (log-density ``-inf``) and no posterior; :func:`bayesattn.functional.kernel_attention`
        falls back to the nearest key there, which is a limit, not this model's posterior.
        (Pyro 1.9's ``compute_marginals`` fails on a plate of size 1, pyro-ppl/pyro#3102:
        enumerate at least two queries.)

        Args:
            query: ``(L, E)``, observed.
        """
        self._check_query(query)
        params = self._sample_hyperparameters()
        prior_logits, query_loglik = self._selection_terms(query, params)
        mask = self._mask(query.shape[0])
        if mask is not None:
            prior_logits = prior_logits.masked_fill(~mask, -math.inf)
        with pyro.plate("queries", query.shape[0], dim=-1):
            z = pyro.sample(
                "z", dist.Categorical(logits=prior_logits), infer={"enumerate": "parallel"}
            )
            query_loglik(z)

    def _draw_params(self, draws, d):
        return self._fixed({k: v[d] for k, v in draws.items()})

    def log_likelihood(self, draws: dict, data: dict) -> torch.Tensor:
        """``log p(target_i | query_i, theta)`` with ``z`` marginalised, ``(D, L)``.

        One draw at a time, ``rows`` queries at a time: memory ``O(rows * S + D L)``.
        """
        query, target = data["query"], data["target"]
        self._check_query(query)
        self._check_target(target, query.shape[0])
        views = self._check_rows(query.shape[0])
        return torch.stack([
            self._mixture(query, self._draw_params(draws, d), None, views).log_prob(target)
            for d in range(num_draws(draws))
        ])

    def _draw_passes(self, draws, data):
        """For each draw: ``(params, mixture)`` over all queries in ``data``."""
        query = data["query"]
        self._check_query(query)
        self._check_target(None, query.shape[0])
        views = self._check_rows(query.shape[0])
        for d in range(num_draws(draws)):
            params = self._draw_params(draws, d)
            yield params, self._mixture(query, params, None, views)

    @torch.no_grad()
    def per_observation_deterministics(self, draws: dict, data: dict) -> dict:
        """``{"attention_output": (D, L, Ev)}``: ``sum_j w_ij v_j`` per draw (chunked)."""
        out = []
        for _, mix in self._draw_passes(draws, data):
            out.append(torch.cat([mix.log_weights(sl).exp() @ self.value
                                  for sl in mix.chunks()]))
        return {"attention_output": torch.stack(out)}

    @torch.no_grad()
    def posterior_predictive(self, draws: dict, data: dict, generator) -> torch.Tensor:
        """Replicated targets ``(D, L, Ev)``: ``z_i ~ Cat(w_i)``, ``v_z + noise * eps``."""
        out = []
        for params, mix in self._draw_passes(draws, data):
            rows = []
            for sl in mix.chunks():
                z = torch.multinomial(mix.log_weights(sl).exp(), 1,
                                      generator=generator).squeeze(-1)
                eps = torch.randn(z.shape[0], self.value.shape[1], dtype=self.value.dtype,
                                  generator=generator)
                rows.append(self.value[z] + params["noise"] * eps)
            out.append(torch.cat(rows))
        return torch.stack(out)

    def prior_log_density(self, draws: dict) -> torch.Tensor:
        """``log p(theta_d)`` ``(D,)``: the hyperparameters' priors at each draw."""
        return hyperparameter_log_prior(self._priors(), draws)

    def prior_draws(self, num: int, data: dict) -> dict:
        """``num`` draws of each hyperparameter given a prior, ``{name: (num, ...)}``
        (vectorised; the latent sites are independent draws from fixed priors, and
        :meth:`posterior_predictive` depends on the data only through the queries)."""
        return hyperparameter_prior_draws(self._priors(), num)

    def full_data_bytes(self, data: dict) -> int:
        """Peak bytes of one likelihood + gradient evaluation over all ``L`` queries.

        ``rows * S * (Ev + 8)`` numbers for the chunk being evaluated (``rows * S`` numbers
        fill :attr:`chunk_bytes`; at most ``L`` rows) plus ``O((L + S) (E + Ev))`` for the data, the
        per-query results and their gradients.
        """
        query = data["query"]
        L, E = query.shape
        S, Ev = self.value.shape
        item = torch.finfo(query.dtype).bits // 8
        rows = min(L, self._chunk_rows(query.dtype))
        return int(item * (rows * S * (Ev + 8) + 4 * (L + S) * (E + Ev)))

    def likelihood_cost(self, data: dict) -> int:
        """``L * S * (E + Ev)``: every query against every key."""
        L, E = data["query"].shape
        S, Ev = self.key.shape[0], (1 if self.value is None else self.value.shape[1])
        return int(L * S * (E + Ev))

    def input_coordinate(self, data: dict):
        """The single non-constant column of ``query`` (None with several)."""
        return single_input_column(data.get("query"))

    def _selection_terms(self, query, params):
        raise NotImplementedError


def _kernel_log_normaliser(kernel: str, bandwidth, E: int):
    """``log Z`` of the kernel density (:func:`bayesattn.functional.kernel_log_normaliser`)."""
    return Fn.kernel_log_normaliser(kernel, bandwidth, E)


class KernelAttentionModel(KeySelectionModel):
    """Nadaraya-Watson (kernel) attention as a key-selection model (docs/design.md section 1).

    Weights ``w_ij`` proportional to ``K(q_i, k_j) pi_ij``: the posterior of ``z_i`` when
    ``q_i | z_i = j`` has a density proportional to the kernel around ``k_j``; the posterior
    mean :func:`bayesattn.functional.kernel_attention` is the fast path.

    Args:
        key: ``(S, E)``.
        value: ``(S, Ev)`` or None.
        kernel: one of :data:`bayesattn.functional.KERNELS`.
        bandwidth: positive number, ``(E,)`` tensor, or a Pyro distribution (prior), in the
            units of the keys.
        noise: value noise standard deviation (units of the values), number or distribution.
        mask, log_prior, leave_one_out: see :class:`KeySelectionModel`.

    Raises:
        ValueError: unknown ``kernel``; bad hyperparameters (see :class:`KeySelectionModel`).
    """

    def __init__(self, key, value=None, *, kernel="gaussian", bandwidth=1.0, noise=1.0,
                 mask=None, log_prior=None, leave_one_out=False):
        super().__init__(key, value, noise=noise, mask=mask, log_prior=log_prior,
                         leave_one_out=leave_one_out)
        self.kernel = check_choice("kernel", kernel, Fn.KERNELS)
        self.bandwidth = check_hyperparameter("bandwidth", bandwidth)

    def _hyperparameters(self):
        return {"bandwidth": self.bandwidth}

    def _log_weights(self, query, params, mask, log_prior):
        if mask is not None and log_prior is not None:
            log_prior, mask = log_prior.masked_fill(~mask, -math.inf), None
        return Fn.kernel_log_weights(
            query, self.key, log_prior if mask is None else mask, kernel=self.kernel,
            bandwidth=params["bandwidth"],
        )

    def _selection_terms(self, query, params):
        bw = params["bandwidth"]
        E = query.shape[1]
        log_z = _kernel_log_normaliser(self.kernel, bw, E)
        if log_z is None:
            if isinstance(self.bandwidth, dist.Distribution):
                raise ValueError(
                    f"the {self.kernel} kernel has no normalisable density in E={E} dims: "
                    "selection_model needs a fixed bandwidth"
                )
            log_z = torch.zeros((), dtype=query.dtype)  # constant in z: cancels
        prior = torch.zeros(query.shape[0], self.key.shape[0], dtype=query.dtype)
        if self.log_prior is not None:
            prior = prior + self.log_prior
        def query_loglik(z):
            if self.kernel == "gaussian":
                pyro.sample("query", dist.Normal(self.key[z], bw).to_event(1), obs=query)
                return
            log_k = Fn.kernel_log_density(query, self.key[z], kernel=self.kernel,
                                          bandwidth=bw, normalized=False)
            pyro.factor("query", log_k - log_z)

        return prior, query_loglik


class SoftmaxAttentionModel(KeySelectionModel):
    """Scaled dot-product softmax attention as a key-selection model (docs/design.md section 1).

    ``q_i | z_i = j ~ N(k_j, I / scale)`` with prior
    ``log p(z_i = j) = log_prior_ij + scale |k_j|^2 / 2 + const`` (the key-norm prior) gives
    ``p(z_i = j | q_i) = softmax_j(scale q_i . k_j + log_prior_ij)``: the weights of
    :func:`bayesattn.functional.softmax_attention` (Vaswani et al. 2017, eq. 1).

    Args:
        key: ``(S, E)``.
        value: ``(S, Ev)`` or None.
        scale: inverse variance ``1 / sigma^2`` (units: 1 / key units squared): a positive
            number (default ``1/sqrt(E)``) or a Pyro distribution (prior).
        noise, mask, log_prior, leave_one_out: see :class:`KeySelectionModel`.

    Raises:
        ValueError, TypeError: bad hyperparameters (see :class:`KeySelectionModel`).
    """

    def __init__(self, key, value=None, *, scale=None, noise=1.0, mask=None, log_prior=None,
                 leave_one_out=False):
        super().__init__(key, value, noise=noise, mask=mask, log_prior=log_prior,
                         leave_one_out=leave_one_out)
        scale = 1.0 / math.sqrt(key.shape[1]) if scale is None else scale
        self.scale = check_hyperparameter("scale", scale)

    def _hyperparameters(self):
        return {"scale": self.scale}

    def _log_weights(self, query, params, mask, log_prior):
        if mask is not None and log_prior is not None:
            log_prior, mask = log_prior.masked_fill(~mask, -math.inf), None
        return Fn.softmax_log_weights(
            query, self.key, log_prior if mask is None else mask, scale=params["scale"]
        )

    def _selection_terms(self, query, params):
        scale = params["scale"]
        prior = (0.5 * scale * (self.key**2).sum(-1)).expand(query.shape[0], -1)
        if self.log_prior is not None:
            prior = prior + self.log_prior

        def query_loglik(z):
            pyro.sample(
                "query", dist.Normal(self.key[z], scale.rsqrt()).to_event(1), obs=query
            )

        return prior, query_loglik
