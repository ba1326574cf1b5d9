"""Least-squares and GP attention as Bayesian regression from keys to values.

See docs/design.md section 3.

Both models observe the memory itself: ``value_j`` given ``key_j``. Their posterior predictive
mean at a query is :func:`bayesattn.functional.least_squares_attention` (Garnelo & Czarnecki
2023, "Intention") and :func:`bayesattn.functional.gp_attention` respectively.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from .. import functional as Fn
from .._checks import check_choice
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

__all__ = ["LeastSquaresAttentionModel", "GPAttentionModel"]


class _RegressionModel(BayesianModel):
    obs_name = "value"
    idata_obs_name = "y"

    def input_coordinate(self, data: dict):
        """The single non-constant column of ``key`` (``x`` of features ``(1, x)``), or None."""
        return single_input_column(data.get("key"))

    def _priors(self) -> dict:
        raise NotImplementedError

    def latent_names(self) -> list[str]:
        """Continuous latent sites: hyperparameters given priors (and ``W`` for least squares)."""
        return [n for n, v in self._priors().items() if isinstance(v, dist.Distribution)]

    def _fixed(self, params, dtype):
        return fixed_params(self._priors(), params, dtype)

    def _sample_hyperparameters(self, dtype):
        return {n: hyperparameter(n, v, dtype=dtype) for n, v in self._priors().items()}


class LeastSquaresAttentionModel(_RegressionModel):
    """Bayesian linear regression from keys to values; least-squares attention is its mean.

    ``W[:, c] ~ N(0, prior_scale^2 I)``, ``value_j ~ N(W^T key_j, noise^2 I)``. The posterior of
    each column of ``W`` is ``N(A^{-1} K^T V, noise^2 A^{-1})`` with
    ``A = K^T K + ridge I``, ``ridge = noise^2 / prior_scale^2``, and the predictive mean at
    ``q`` is ``q^T A^{-1} K^T V`` (Garnelo & Czarnecki 2023; Bishop 2006, eqs. 3.53-3.59).

    Data: ``{"key": (S, E), "value": (S, Ev)}``; ``value`` is observed. The likelihood
    factorises over items, so ``model(key, value, subsample_size=B)`` evaluates ``B`` random
    items scaled by ``S / B`` (minibatch SVI).

    Args:
        prior_scale: prior standard deviation of ``W`` (value units per key unit), a positive
            number or a Pyro distribution.
        noise: observation noise standard deviation (value units), number or distribution.

    Raises:
        TypeError, ValueError: hyperparameters neither positive numbers nor distributions.
    """

    supports_subsampling = True
    log_likelihood_sums_to_joint = True

    def __init__(self, *, prior_scale=1.0, noise=1.0):
        self.prior_scale = check_hyperparameter("prior_scale", prior_scale)
        self.noise = check_hyperparameter("noise", noise)

    def _priors(self):
        return {"prior_scale": self.prior_scale, "noise": self.noise}

    def latent_names(self):
        """``W`` and the hyperparameters given priors."""
        return ["W", *super().latent_names()]

    def model(self, key, value=None, *, subsample_size=None):
        """``W ~ N(0, prior_scale^2)``, ``value ~ N(key @ W, noise^2)``; key ``(S, E)``.

        ``subsample_size=B``: the items plate draws ``B`` random items per call and scales
        their log-likelihood by ``S / B`` (``pyro.plate`` subsampling).
        """
        check_memory(key, value)
        ev = 1 if value is None else value.shape[1]
        p = self._sample_hyperparameters(key.dtype)
        W = pyro.sample(
            "W", dist.Normal(torch.zeros(key.shape[1], ev, dtype=key.dtype), p["prior_scale"])
            .to_event(2),
        )
        with pyro.plate("items", key.shape[0], subsample_size=subsample_size, dim=-1) as idx:
            if idx.shape[0] != key.shape[0]:
                key, value = key[idx], None if value is None else value[idx]
            pyro.sample("value", dist.Normal(key @ W, p["noise"]).to_event(1), obs=value)

    def prior_log_density(self, draws: dict) -> torch.Tensor:
        """``log p(theta_d)`` ``(D,)``: hyperparameter priors + ``log N(W; 0, prior_scale^2)``."""
        W = draws["W"]
        num = W.shape[0]
        scale = (draws["prior_scale"].reshape(num, 1, 1) if "prior_scale" in draws
                 else torch.as_tensor(self.prior_scale, dtype=W.dtype))
        w_term = dist.Normal(torch.zeros((), dtype=W.dtype), scale).log_prob(W)
        return (hyperparameter_log_prior(self._priors(), draws)
                + w_term.reshape(num, -1).sum(-1).to(torch.float64))

    def full_data_bytes(self, data: dict) -> int:
        """About ``8 S (E + Ev)`` numbers: keys, means, residuals and their gradients."""
        key = data["key"]
        value = data.get("value")
        ev = 1 if value is None else value.shape[1]
        return int(torch.finfo(key.dtype).bits // 8 * 8 * key.shape[0] * (key.shape[1] + ev))

    def likelihood_cost(self, data: dict) -> int:
        """``S * E * Ev`` (the product ``key @ W``)."""
        key, value = data["key"], data.get("value")
        return int(key.shape[0] * key.shape[1] * (1 if value is None else value.shape[1]))

    def per_observation_deterministics(self, draws: dict, data: dict) -> dict:
        """``{"attention_output": key @ W}``, ``(D, S, Ev)``: the mean of each value."""
        return {"attention_output": data["key"] @ draws["W"]}

    def posterior(self, query, key, value, params=None) -> dict:
        """Closed-form predictive at ``query (L, E)``: ``mean (L, Ev)``, ``variance (L,)``.

        ``variance`` is ``noise^2 (1 + q^T A^{-1} q)``, the predictive variance of a new value
        with ``W`` integrated out, from :func:`bayesattn.functional.least_squares_attention`.

        Raises:
            ValueError: a hyperparameter has a prior and ``params`` does not give it.
        """
        check_memory(key, value)
        p = self._fixed(params, key.dtype)
        mean, var = Fn.least_squares_attention(
            query, key, value, ridge=p["noise"] ** 2 / p["prior_scale"] ** 2,
            noise=p["noise"], return_variance=True,
        )
        return {"mean": mean, "variance": var}

    def predict(self, query, params: dict, data: dict):
        """Predictive ``(mean (L, Ev), variance (L, Ev))`` of a new value given a draw of ``W``."""
        mean = query @ params["W"]
        p = self._fixed(params, query.dtype)
        return mean, (p["noise"] ** 2).expand_as(mean)

    def _noise_draws(self, draws, num, dtype):
        if "noise" in draws:
            return draws["noise"].reshape(num, 1, 1)
        return torch.as_tensor(self.noise, dtype=dtype).expand(num, 1, 1)

    def log_likelihood(self, draws, data):
        """``log N(value_j; W^T key_j, noise^2 I)`` per item, ``(D, S)`` (vectorised)."""
        key, value = data["key"], data["value"]
        check_memory(key, value)
        W = draws["W"]
        noise = self._noise_draws(draws, W.shape[0], key.dtype)
        return dist.Normal(key @ W, noise).log_prob(value).sum(-1)

    def posterior_predictive(self, draws, data, generator):
        """Replicated values ``(D, S, Ev)``: ``key @ W + noise * eps`` per draw."""
        W = draws["W"]
        mean = data["key"] @ W
        noise = self._noise_draws(draws, W.shape[0], mean.dtype)
        return mean + noise * torch.randn(mean.shape, dtype=mean.dtype, generator=generator)

    def exact_posterior(self, data, num_samples, generator):
        """Draws of ``W`` from ``N(A^{-1} K^T V, noise^2 A^{-1})`` (fixed hyperparameters only).

        Raises:
            NotImplementedError: a hyperparameter has a prior (no closed form then).
        """
        if self.latent_names() != ["W"]:
            raise NotImplementedError("exact needs fixed prior_scale and noise")
        key, value = data["key"], data["value"]
        p = self._fixed(None, key.dtype)
        gram = key.T @ key
        gram.diagonal().add_(p["noise"] ** 2 / p["prior_scale"] ** 2)
        chol = torch.linalg.cholesky(gram)
        mean = torch.cholesky_solve(key.T @ value, chol)
        eps = torch.randn(num_samples, *mean.shape, dtype=key.dtype, generator=generator)
        # A = L L^T  =>  L^{-T} eps has covariance A^{-1}
        noise = torch.linalg.solve_triangular(chol.T, eps, upper=True)
        return {"W": mean + p["noise"] * noise}


class GPAttentionModel(_RegressionModel):
    """Gaussian-process regression from keys to values; GP attention is its posterior mean.

    ``f ~ GP(0, amplitude^2 k_lengthscale)``, ``value_j = f(key_j) + N(0, noise^2)``, with ``f``
    integrated out: each value column ``~ N(0, amplitude^2 K + noise^2 I)`` (Rasmussen &
    Williams 2006, eq. 2.30). The predictive mean at ``q`` is
    :func:`bayesattn.functional.gp_attention` with ``ridge = noise^2 / amplitude^2``.

    The pointwise log-likelihood is the leave-one-out predictive ``log p(y_i | y_{-i}, theta)``
    (``-log(2 pi)/2 + log cbar_ii / 2 - g_i^2 / (2 cbar_ii)``, ``g = C^{-1} y``,
    ``cbar = diag C^{-1}``; Sundararajan & Keerthi 2001; Buerkner, Gabry & Vehtari 2020): the
    model does not factorise over points, and PSIS-LOO over these terms is the method of
    Buerkner et al.

    Data: ``{"key": (S, E), "value": (S, Ev)}``. The likelihood does not factorise, so there
    is no subsampling (:attr:`supports_subsampling` is False) and one evaluation holds
    several ``(S, S)`` matrices (:meth:`full_data_bytes`).

    Args:
        kernel: one of :data:`bayesattn.functional.GP_KERNELS`.
        lengthscale: key units; positive number, ``(E,)`` tensor or distribution.
        amplitude: standard deviation of ``f`` (value units); number or distribution.
        noise: observation noise standard deviation (value units); number or distribution.

    Raises:
        ValueError, TypeError: unknown kernel; bad hyperparameters.
    """

    def __init__(self, *, kernel="rbf", lengthscale=1.0, amplitude=1.0, noise=0.1):
        self.kernel = check_choice("kernel", kernel, Fn.GP_KERNELS)
        self.lengthscale = check_hyperparameter("lengthscale", lengthscale)
        self.amplitude = check_hyperparameter("amplitude", amplitude)
        self.noise = check_hyperparameter("noise", noise)

    def _priors(self):
        return {"lengthscale": self.lengthscale, "amplitude": self.amplitude,
                "noise": self.noise}

    supports_subsampling = False
    log_likelihood_sums_to_joint = False

    def full_data_bytes(self, data: dict) -> int:
        """About six ``(S, S)`` matrices (kernel, covariance, Cholesky factor, their gradients)."""
        key = data["key"]
        S = key.shape[0]
        return int(torch.finfo(key.dtype).bits // 8 * (6 * S * S + 8 * S * key.shape[1]))

    def likelihood_cost(self, data: dict) -> int:
        """``S^3 / 3 + S^2 E`` (the Cholesky factorisation and the kernel matrix)."""
        S, E = data["key"].shape
        return int(S**3 // 3 + S * S * E)

    def observation_from_site(self, value):
        """The site holds the values as ``(Ev, S)`` rows: back to ``(S, Ev)``."""
        return value.transpose(-1, -2)

    def per_observation_deterministics(self, draws: dict, data: dict) -> dict:
        """``{"attention_output": (D, S, Ev)}``: GP attention at the keys, ``E[f(key_j) | y]``."""
        key = data["key"]
        out = [self.posterior(key, key, data["value"], {k: v[d] for k, v in draws.items()})
               ["mean"] for d in range(num_draws(draws))]
        return {"attention_output": torch.stack(out)}

    def prior_draws(self, num: int, data: dict) -> dict:
        """``num`` draws of each hyperparameter given a prior, ``{name: (num, ...)}``
        (vectorised; the GP's latents are exactly these hyperparameters)."""
        return hyperparameter_prior_draws(self._priors(), num)

    def prior_predictive(self, draws, data, generator):
        """Values ``(D, S, Ev)`` from the program's ``MVN(0, amplitude^2 K + noise^2 I)`` per
        column, for each draw (``chol @ eps``, the factor of :meth:`model`'s covariance)."""
        key = data["key"]
        value = data.get("value")
        ev = 1 if value is None else value.shape[1]
        out = []
        for d in range(num_draws(draws)):
            chol = self._chol(key, self._fixed({k: v[d] for k, v in draws.items()}, key.dtype))
            eps = torch.randn(key.shape[0], ev, dtype=key.dtype, generator=generator)
            out.append(chol @ eps)
        return torch.stack(out)

    def _chol(self, key, p):
        cov = p["amplitude"] ** 2 * Fn.gp_kernel(
            key, key, kernel=self.kernel, lengthscale=p["lengthscale"]
        )
        cov = cov + p["noise"] ** 2 * torch.eye(key.shape[0], dtype=key.dtype)
        return _jittered_cholesky(cov)

    def model(self, key, value=None):
        """Each value column ``~ MVN(0, amplitude^2 K + noise^2 I)``; key ``(S, E)``."""
        check_memory(key, value)
        p = self._sample_hyperparameters(key.dtype)
        chol = self._chol(key, p)
        ev = 1 if value is None else value.shape[1]
        mvn = dist.MultivariateNormal(torch.zeros(key.shape[0], dtype=key.dtype), scale_tril=chol)
        pyro.sample("value", mvn.expand([ev]).to_event(1),
                    obs=None if value is None else value.T)

    def posterior(self, query, key, value, params=None) -> dict:
        """Closed-form predictive of ``f`` at ``query (L, E)``: ``mean (L, Ev)``,
        ``variance (L,)`` (latent, without noise; add ``noise^2`` for a new observation).

        Raises:
            ValueError: a hyperparameter has a prior and ``params`` does not give it.
            bayesattn.functional.NotPositiveDefiniteError: ``K + ridge I`` is not positive
                definite even with the largest jitter.
        """
        check_memory(key, value)
        p = self._fixed(params, key.dtype)
        ridge = p["noise"] ** 2 / p["amplitude"] ** 2
        # the same diagonal jitter as _jittered_cholesky when rounding makes K + ridge I
        # indefinite (duplicate keys, tiny noise); in ridge units, 10^e (1 + ridge)
        for exponent in (None, *range(-10, -5)):
            jitter = 0.0 if exponent is None else 10.0**exponent * (1 + ridge)
            try:
                mean, var = Fn.gp_attention(
                    query, key, value, kernel=self.kernel, lengthscale=p["lengthscale"],
                    ridge=ridge + jitter, return_variance=True,
                )
                break
            except Fn.NotPositiveDefiniteError:
                if exponent == -6:
                    raise
        return {"mean": mean, "variance": p["amplitude"] ** 2 * var}

    def predict(self, query, params: dict, data: dict):
        """Predictive ``(mean (L, Ev), variance (L, Ev))`` of a new value given one draw."""
        post = self.posterior(query, data["key"], data["value"], params)
        p = self._fixed(params, query.dtype)
        var = (post["variance"] + p["noise"] ** 2).unsqueeze(-1).expand_as(post["mean"])
        return post["mean"], var

    def log_likelihood(self, draws, data):
        """Leave-one-out predictive ``log p(y_i | y_{-i}, theta)``, summed over columns: (D, S)."""
        key, value = data["key"], data["value"]
        num = num_draws(draws)
        out = []
        for d in range(num):
            p = self._fixed({k: v[d] for k, v in draws.items()}, key.dtype)
            chol = self._chol(key, p)
            g = torch.cholesky_solve(value, chol)  # C^{-1} y, (S, Ev)
            # diag(C^{-1}) from the Cholesky factor: the LOO formula needs these entries.
            cbar = torch.cholesky_inverse(chol).diagonal().unsqueeze(-1)
            ll = -0.5 * math.log(2 * math.pi) + 0.5 * cbar.log() - 0.5 * g**2 / cbar
            out.append(ll.sum(-1))
        return torch.stack(out)

    def posterior_predictive(self, draws, data, generator):
        """Replicated values ``(D, S, Ev)`` from ``p(y_rep | y, theta)`` for each draw."""
        key = data["key"]
        num = num_draws(draws)
        reps = []
        for d in range(num):
            mean, var = self.predict(key, {k: v[d] for k, v in draws.items()}, data)
            eps = torch.randn(mean.shape, dtype=mean.dtype, generator=generator)
            reps.append(mean + var.sqrt() * eps)
        return torch.stack(reps)


def _jittered_cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of a GP covariance ``(S, S)``, with diagonal jitter when rounding makes
    it numerically indefinite (duplicate keys and a tiny noise): ``1e-10, 1e-9, ..., 1e-6``
    times the mean diagonal are tried in turn, as GP libraries do (e.g. GPyTorch's
    ``psd_safe_cholesky``).

    Raises:
        bayesattn.functional.NotPositiveDefiniteError: still not positive definite with the
            largest jitter (a ValueError: NUTS then rejects the step).
    """
    chol, info = torch.linalg.cholesky_ex(cov)
    if not bool(info):
        return chol
    scale = cov.diagonal().mean().detach()
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    for exponent in range(-10, -5):
        chol, info = torch.linalg.cholesky_ex(cov + (10.0**exponent) * scale * eye)
        if not bool(info):
            return chol
    return Fn.cholesky(cov, "the GP covariance amplitude^2 K + noise^2 I")

