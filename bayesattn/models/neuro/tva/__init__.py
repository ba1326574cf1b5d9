r"""Bundesen's Theory of Visual Attention (TVA): exact report likelihoods, simulator, Pyro model.

Bundesen (1990); the math is in ``docs/design.md`` (section "Neuroscience-style models") and in
:mod:`~bayesattn.models.neuro.tva.race`. Item ``x`` of a display of ``N`` locations has
attentional weight ``w_x`` and processing rate ``v_x = C w_x / sum_z w_z`` (items/s): the
capacity ``C`` shared out by ``softmax(log w)``. Each item finishes at ``t0 + Exp(v_x)``; the
first ``K`` items to finish before the exposure ends enter visual short-term memory and are
reported (whole report), or only the encoded targets are (partial report).

One concept per module:

* :mod:`.sets` -- the ``2^N`` candidate report sets (``report_sets``, ``MAX_ITEMS``).
* :mod:`.capacity` -- the VSTM capacity ``K`` as probabilities of ``K = 0..N``
  (``k_probabilities``; the probit ``K`` of StanTVA, ``k_probit_probabilities``).
* :mod:`.threshold` -- the threshold ``t0``: fixed, Gaussian or exponential, integrated in
  closed form.
* :mod:`.rates` -- attentional weights to processing rates (``processing_rates``) and the item
  weights of partial report.
* :mod:`.race` -- the exact race likelihood of the report-consistent encoded sets (Kyllingsbaek
  2006; Dyrholm et al. 2011), vectorised over trials.
* :mod:`.likelihood` -- the public report log-probabilities (``report_log_prob``,
  ``whole_report_log_prob``, ``partial_report_log_prob``).
* :mod:`.simulate` -- trial-by-trial simulation and the standard whole-report design.
* :mod:`.distribution` -- :class:`TVAReport`, the report as a Pyro distribution.
* :mod:`.conditions` -- per-condition parameters (``by_condition``) and per-trial gathering.
* :mod:`.model` -- :class:`TVA`, the Pyro model with priors.
* :mod:`.hierarchical` -- :class:`HierarchicalTVA`, many subjects, non-centred.

Units: ``C`` in items/s, times (``exposure``, ``t0``, ``t0_sd``) in ms.
"""

from .capacity import k_probabilities, k_probit_probabilities
from .distribution import TVAReport
from .hierarchical import HierarchicalTVA
from .likelihood import partial_report_log_prob, report_log_prob, whole_report_log_prob
from .model import TVA
from .rates import processing_rates
from .sets import MAX_ITEMS, report_sets
from .simulate import (
    partial_report_design,
    simulate_partial_report,
    simulate_report,
    simulate_whole_report,
    whole_report_design,
)

__all__ = [
    "MAX_ITEMS",
    "report_sets",
    "k_probabilities",
    "k_probit_probabilities",
    "processing_rates",
    "whole_report_log_prob",
    "partial_report_log_prob",
    "report_log_prob",
    "simulate_whole_report",
    "simulate_partial_report",
    "simulate_report",
    "whole_report_design",
    "partial_report_design",
    "TVAReport",
    "TVA",
    "HierarchicalTVA",
]
