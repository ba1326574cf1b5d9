"""Neuroscience-style models of attention (``docs/design.md``, "Neuroscience-style models").

Each model normalises attention like a softmax and exposes that normalised weight as the
deterministic Pyro site ``attention_weights``:

* :mod:`~bayesattn.models.neuro.tva` -- Bundesen's Theory of Visual Attention (a package, one
  module per concept): exact whole- and partial-report likelihoods, simulator, :class:`TVA`
  Pyro model (weights ``w / sum w``), :class:`HierarchicalTVA` over subjects.
* :mod:`~bayesattn.models.neuro.normalization` -- the normalization model of attention
  (Reynolds & Heeger 2009), its reduced psychometric form (:class:`NormalizationPsychometric`)
  and biased competition (Reynolds, Chelazzi & Desimone 1999).
* :mod:`~bayesattn.models.neuro.cueing` -- Bayesian, weighted-linear and limited-capacity
  switching observers of the spatial cueing task (:class:`CueingObserver`).
* :mod:`~bayesattn.models.neuro.precision` -- precision weighting of prediction errors
  (Feldman & Friston 2010; :class:`PrecisionWeighting`).
* :mod:`~bayesattn.models.neuro.pcn` -- attention in a predictive-coding network (Singh &
  Buckley 2023, AttentionPCN): the soft-minimum free energy over options, whose gradient
  weights each option's prediction error by its attention (:class:`AttentionPCN`); the free
  energy is the negative log evidence of the Pyro mixture :func:`option_mixture_model`, whose
  exact posterior over options is the attention (site ``option``, not ``attention_weights``).
"""

from .cueing import (
    CueingObserver,
    choice_probabilities,
    simulate_cueing_design,
    simulate_cueing_responses,
)
from .normalization import NormalizationPsychometric, normalization_response, population_response
from .pcn import (
    AttentionPCN,
    free_energy,
    option_attention,
    option_errors,
    option_mixture_model,
    train_attention_pcn,
)
from .precision import PrecisionWeighting, precision_weights
from .tva import (
    TVA,
    HierarchicalTVA,
    partial_report_log_prob,
    simulate_partial_report,
    simulate_whole_report,
    whole_report_design,
    whole_report_log_prob,
)

__all__ = [
    "TVA",
    "HierarchicalTVA",
    "whole_report_log_prob",
    "partial_report_log_prob",
    "simulate_whole_report",
    "simulate_partial_report",
    "whole_report_design",
    "NormalizationPsychometric",
    "normalization_response",
    "population_response",
    "CueingObserver",
    "choice_probabilities",
    "simulate_cueing_design",
    "simulate_cueing_responses",
    "PrecisionWeighting",
    "precision_weights",
    "AttentionPCN",
    "free_energy",
    "option_attention",
    "option_errors",
    "option_mixture_model",
    "train_attention_pcn",
]
