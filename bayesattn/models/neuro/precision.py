r"""Precision weighting (Feldman & Friston 2010): attention sets the precision of sensory evidence.

In predictive coding, a percept updates a prediction by a precision-weighted prediction error;
attention is the optimisation of that precision (Feldman & Friston 2010). The reduced model
here is the one-step Gaussian version of that update, for a perceptual estimation task:

* the stimulus feature on trial ``t`` is ``s_t`` (known to the experimenter); the observer
  predicts ``mu_0`` with prior precision ``pi_0``;
* the sensory sample is ``x_t ~ N(s_t, 1 / pi_c)``, with a precision ``pi_c`` set by the
  attention condition ``c`` of the trial (e.g. cued / uncued);
* the percept is the posterior mean ``mu_0 + kappa_c (x_t - mu_0)`` with the gain on the
  prediction error ``kappa_c = pi_c / (pi_0 + pi_c)``;
* the report adds response noise: ``y_t ~ N(percept, sigma_r^2)``.

Marginally ``y_t ~ N(mu_0 + kappa_c (s_t - mu_0), kappa_c^2 / pi_c + sigma_r^2)``: attention
(higher ``pi_c``) both pulls reports towards the stimulus (less central-tendency bias) and
changes their variability. The normalised precisions ``(pi_0, pi_c) / (pi_0 + pi_c) =
softmax(log pi_0, log pi_c)`` are the weights given to prediction and evidence -- the softmax of
attention; ``kappa_c`` is the second of them.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ..base import BayesianModel, hyperparameter
from ._common import as_float_tensor, draws_slices, fixed_or_draw

__all__ = [
    "precision_weights",
    "posterior_estimate",
    "report_distribution_params",
    "simulate_estimation",
    "PrecisionWeighting",
]


def precision_weights(log_precisions) -> torch.Tensor:
    """Normalised precisions ``pi_i / sum_j pi_j = softmax(log pi)_i`` over the last dim.

    Feldman & Friston (2010): the relative weight of each source of prediction error.
    Shape ``(..., M) -> (..., M)``.

    Raises:
        ValueError: NaN/inf log-precisions or a scalar input.
    """
    lp = as_float_tensor("log_precisions", log_precisions)
    if lp.dim() < 1:
        raise ValueError("log_precisions must have shape (..., M)")
    return torch.softmax(lp, -1)


def posterior_estimate(x, *, prior_mean, log_prior_precision, log_sensory_precision):
    """Precision-weighted update ``mu_0 + kappa (x - mu_0)``, ``kappa = pi_s / (pi_0 + pi_s)``.

    The posterior mean of a Gaussian prior ``N(mu_0, 1/pi_0)`` and a Gaussian sample ``x`` of
    precision ``pi_s`` (all arguments broadcast).

    Raises:
        ValueError: NaN/inf inputs.
    """
    x = as_float_tensor("x", x)
    lp0 = as_float_tensor("log_prior_precision", log_prior_precision)
    lps = as_float_tensor("log_sensory_precision", log_sensory_precision)
    kappa = torch.sigmoid(lps - lp0)  # = softmax([lp0, lps])[1]
    return prior_mean + kappa * (x - prior_mean)


def report_distribution_params(
    stimulus, condition, *, prior_mean, log_prior_precision, log_sensory_precision, response_sd
):
    """Mean and sd ``(..., T)`` of the reports under the reduced model (module docstring).

    Args:
        stimulus: ``s (T,)``. condition: int ``(T,)`` in ``0..C-1``.
        prior_mean, log_prior_precision, response_sd: broadcasting to the batch ``(...)``
            (use a trailing dim 1, e.g. ``(D, 1)``, for draws).
        log_sensory_precision: ``(..., C)`` one per attention condition.

    Raises:
        ValueError: a condition index out of range; non-positive ``response_sd``.
    """
    lps = as_float_tensor("log_sensory_precision", log_sensory_precision)
    num_cond = lps.shape[-1] if lps.dim() else 1
    if lps.dim() == 0:
        lps = lps[None]
    cond = torch.as_tensor(condition)
    if cond.is_floating_point() or (cond.numel() and (cond.min() < 0 or cond.max() >= num_cond)):
        raise ValueError(f"condition must hold integer indices 0..{num_cond - 1}")
    sd_r = as_float_tensor("response_sd", response_sd)
    if bool((sd_r.detach() <= 0).any()):
        raise ValueError("response_sd must be positive")
    lp0 = as_float_tensor("log_prior_precision", log_prior_precision)
    lps_t = lps[..., cond]  # (..., T)
    kappa = torch.sigmoid(lps_t - lp0)
    mean = prior_mean + kappa * (as_float_tensor("stimulus", stimulus) - prior_mean)
    var = kappa**2 * torch.exp(-lps_t) + sd_r**2
    return mean, torch.sqrt(var)


def simulate_estimation(
    stimulus,
    condition,
    *,
    prior_mean,
    log_prior_precision,
    log_sensory_precision,
    response_sd,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simulate reports ``(T,)`` step by step: sample ``x``, update, add response noise.

    Arguments as :func:`report_distribution_params`.

    Raises:
        ValueError: as :func:`report_distribution_params`.
    """
    s = as_float_tensor("stimulus", stimulus)
    report_distribution_params(  # validates
        s,
        condition,
        prior_mean=prior_mean,
        log_prior_precision=log_prior_precision,
        log_sensory_precision=log_sensory_precision,
        response_sd=response_sd,
    )
    lps = torch.as_tensor(log_sensory_precision, dtype=s.dtype).reshape(-1)[condition]
    x = s + torch.exp(-0.5 * lps) * torch.randn(s.shape, generator=generator, dtype=s.dtype)
    percept = posterior_estimate(
        x,
        prior_mean=prior_mean,
        log_prior_precision=log_prior_precision,
        log_sensory_precision=lps,
    )
    return percept + response_sd * torch.randn(s.shape, generator=generator, dtype=s.dtype)


class PrecisionWeighting(BayesianModel):
    """Precision weighting of prediction errors as a Pyro model (module docstring).

    Data (``T`` trials)::

        stimulus (T,) float, condition (T,) int in 0..C-1, response (T,) float [obs]

    Parameters (fixed or Pyro priors): ``prior_mean`` (default ``Normal(0, 10)``: put the
    stimuli on a scale where that is vague), ``log_prior_precision`` (``Normal(0, 1.5)``),
    ``log_sensory_precision`` per condition ``(C,)`` (``Normal(0, 1.5)`` each), ``response_sd``
    (``HalfNormal(1)``).

    Deterministic ``attention_weights (C, 2)``: row ``c`` is ``softmax(log pi_0, log pi_c)``,
    the weights on prediction and sensory evidence in condition ``c``.

    Raises:
        ValueError: ``num_conditions < 1``.
    """

    obs_name = "response"

    def __init__(
        self,
        num_conditions: int = 2,
        *,
        prior_mean=None,
        log_prior_precision=None,
        log_sensory_precision=None,
        response_sd=None,
    ):
        if isinstance(num_conditions, bool) or not isinstance(num_conditions, int):
            raise ValueError(f"num_conditions must be a positive int, got {num_conditions!r}")
        if num_conditions < 1:
            raise ValueError(f"num_conditions must be a positive int, got {num_conditions!r}")
        c = num_conditions
        self.num_conditions = c
        self.prior_mean = dist.Normal(0.0, 10.0) if prior_mean is None else prior_mean
        self.log_prior_precision = (
            dist.Normal(0.0, 1.5) if log_prior_precision is None else log_prior_precision
        )
        self.log_sensory_precision = (
            dist.Normal(torch.zeros(c, dtype=torch.float64), 1.5).to_event(1)
            if log_sensory_precision is None
            else log_sensory_precision
        )
        self.response_sd = dist.HalfNormal(1.0) if response_sd is None else response_sd

    _names = ("prior_mean", "log_prior_precision", "log_sensory_precision", "response_sd")

    def latent_names(self) -> list[str]:
        return [k for k in self._names if isinstance(getattr(self, k), dist.Distribution)]

    def _params(self, params, stimulus, condition):
        return report_distribution_params(stimulus, condition, **params)

    def model(self, stimulus, condition, response=None):
        """The Pyro program; see the class docstring for the data.

        Raises:
            ValueError: ``condition`` out of range (see :func:`report_distribution_params`).
        """
        params = {k: hyperparameter(k, getattr(self, k)) for k in self._names}
        lps = params["log_sensory_precision"].expand(self.num_conditions)
        params["log_sensory_precision"] = lps
        lp0 = params["log_prior_precision"].expand(self.num_conditions)
        pyro.deterministic("attention_weights", precision_weights(torch.stack([lp0, lps], -1)))
        mean, sd = self._params(params, stimulus, condition)
        with pyro.plate("trials", stimulus.shape[0]):
            return pyro.sample(self.obs_name, dist.Normal(mean, sd), obs=response)

    def log_likelihood(self, draws, data):
        """Pointwise log-likelihood ``(D, T)``, vectorised over draws.

        Raises:
            ValueError: ``data`` lacks the observed responses.
        """
        y = data.get(self.obs_name)
        if y is None:
            raise ValueError("log_likelihood needs the observed 'response' in data")
        out = []
        for chunk, num in draws_slices(draws, 1024):
            params = {}
            for k in self._names:
                v = fixed_or_draw(chunk, k, getattr(self, k), num)
                if k == "log_sensory_precision":
                    params[k] = v.reshape(num, -1).expand(num, self.num_conditions)
                else:
                    params[k] = v.reshape(num, 1)
            mean, sd = self._params(params, data["stimulus"], data["condition"])
            out.append(dist.Normal(mean, sd).log_prob(y))
        return torch.cat(out, 0)
