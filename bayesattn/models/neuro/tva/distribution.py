"""The TVA report as a Pyro distribution (exact ``log_prob``, simulator as ``sample``)."""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from .._common import as_float_tensor
from ._checks import _check_exposure, _check_report, _check_t0, _check_weights
from .capacity import _check_k_probs
from .likelihood import _report_log_prob
from .rates import _rates, processing_rates
from .simulate import simulate_report

__all__ = ["TVAReport"]


class TVAReport(TorchDistribution):
    """Distribution of the report on TVA trials: batch ``(...)``, event ``(N,)`` bool.

    ``log_prob`` is :func:`report_log_prob` (exact, differentiable); ``sample`` runs
    :func:`simulate_report`. Parameters as there: ``exposure (...)`` ms, ``C`` items/s,
    ``weights (..., N)``, ``t0`` ms, ``k_probs (..., N)`` over ``K = 1..N`` or ``(..., N+1)``
    over ``K = 0..N``, ``t0_sd`` ms (None or 0 = fixed ``t0``), ``reportable (..., N)`` bool or
    None, ``t0_dist`` ``"normal"``/``"exponential"``; ``num_nodes`` is ignored. With
    ``validate_args=False`` the arguments are trusted (the Pyro model validates them once).

    Raises:
        ValueError: the argument errors of :func:`report_log_prob` (when validating).
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False

    def __init__(
        self,
        exposure,
        *,
        C,
        weights,
        t0,
        k_probs,
        t0_sd=None,
        reportable=None,
        num_nodes=None,
        t0_dist="normal",
        validate_args=None,
    ):
        check = validate_args is not False
        if check:
            weights = _check_weights(weights)
            exposure = _check_exposure(exposure)
            t0, t0_sd = _check_t0(t0, t0_sd)
            k_probs = _check_k_probs(k_probs, weights.shape[-1])
            C = as_float_tensor("C", C)
            if reportable is not None:
                reportable = _check_report(reportable, weights.shape[-1], name="reportable")
            rates = processing_rates(C, weights)
        else:
            rates = _rates(C, weights)
        self.exposure, self.C, self.weights, self.t0, self.t0_sd = exposure, C, weights, t0, t0_sd
        self.k_probs, self.reportable, self.num_nodes, self.rates = (
            k_probs,
            reportable,
            num_nodes,
            rates,
        )
        self.t0_dist = t0_dist
        shapes = [exposure.shape, t0.shape, rates.shape[:-1], k_probs.shape[:-1]]
        if t0_sd is not None:
            shapes.append(t0_sd.shape)
        if reportable is not None:
            shapes.append(reportable.shape[:-1])
        batch_shape = torch.broadcast_shapes(*shapes)
        super().__init__(batch_shape, torch.Size([weights.shape[-1]]), validate_args=check)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        num = self.event_shape[0]
        return TVAReport(
            self.exposure.expand(batch_shape),
            C=self.C.expand(batch_shape),
            weights=self.weights.expand(*batch_shape, num),
            t0=self.t0.expand(batch_shape),
            k_probs=self.k_probs.expand(*batch_shape, self.k_probs.shape[-1]),
            t0_sd=None if self.t0_sd is None else self.t0_sd.expand(batch_shape),
            reportable=None
            if self.reportable is None
            else self.reportable.expand(*batch_shape, num),
            num_nodes=self.num_nodes,
            t0_dist=self.t0_dist,
            validate_args=False,
        )

    def log_prob(self, value):
        if value.dtype != torch.bool:
            if bool(((value != 0) & (value != 1)).any()):
                raise ValueError("a TVA report must be 0/1 (or bool) per item")
            value = value != 0
        if self._validate_args:
            _check_report(value, self.event_shape[0])
            if bool((value & (self.rates.detach() <= 0)).any()):
                raise ValueError("reported contains an item at an empty location (weight 0)")
            if self.reportable is not None and bool((value & ~self.reportable).any()):
                raise ValueError("reported contains an item that is not reportable")
        return _report_log_prob(
            value,
            self.exposure,
            self.rates,
            self.k_probs,
            self.t0,
            self.t0_sd,
            self.reportable,
            self.num_nodes,
            self.t0_dist,
        )

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        return simulate_report(
            self.exposure.expand(shape),
            C=self.C,
            weights=self.weights,
            t0=self.t0,
            k_probs=self.k_probs,
            t0_sd=self.t0_sd,
            reportable=self.reportable,
            t0_dist=self.t0_dist,
        )
