"""torch.nn layers on :mod:`bayesattn.functional`, and Bayesian layers as PyroModules.

Deterministic layers: :class:`MultiheadAttention` (a drop-in for
:class:`torch.nn.MultiheadAttention` with a choice of attention kind), :class:`AttentionBN`,
:class:`AttentionSH`, :class:`AttentionBNSH`, :class:`SlotAttention`,
:class:`HopfieldRetrieval`, :class:`AdditiveAttention`, :class:`MultihopAttention`,
:class:`ExpandingAttention`, :class:`SinusoidalPositionalEncoding`,
:class:`TransformerEncoderLayer` and :class:`TransformerClassifier`, trained with
:func:`train_classifier`.

Uncertainty-aware layers (:mod:`bayesattn.nn.bayesian`): :class:`BayesianMultiheadAttention`
and :class:`BayesianTransformerClassifier` (PyroModules), fitted with :func:`train_svi` and
evaluated with :func:`predict_bayesian` (predictive mean, entropy, mutual information);
plain-torch stochastic attention: :class:`BayesianAdditiveAttention` (Bahdanau attention with
BAM-style lognormal alignment weights and their KL), :class:`TemperaturePosteriorAttention`
(a posterior over the attention temperature) and :class:`GPMultiheadAttention` (GP attention
passing on samples of its predictive variance, after SGPA), placed in a classifier with
:func:`swap_attention` and predicted by Monte Carlo with :func:`sample_probs`.
Calibration metrics live in :mod:`bayesattn.nn.metrics`.
"""

from .attention import (
    ATTENTION_KINDS,
    SELF_ATTENTION_KINDS,
    UNMASKED_KINDS,
    AttentionBN,
    AttentionBNSH,
    AttentionSH,
    MultiheadAttention,
)
from .bam_additive import BayesianAdditiveAttention
from .bayesian import (
    BayesianMultiheadAttention,
    BayesianTransformerClassifier,
    predict_bayesian,
    train_svi,
)
from .bn_sh import batch_normalized_query, scaled_heads_pool
from .gp_attention import GPMultiheadAttention
from .layers import (
    AdditiveAttention,
    HopfieldRetrieval,
    SinusoidalPositionalEncoding,
    SlotAttention,
)
from .stochastic import sample_probs, set_sampling, swap_attention, total_kl
from .structural import ExpandingAttention, MultihopAttention
from .temperature import TemperaturePosteriorAttention
from .training import predict_proba, train_classifier
from .transformer import TransformerClassifier, TransformerEncoderLayer, masked_mean

__all__ = [
    "ATTENTION_KINDS",
    "SELF_ATTENTION_KINDS",
    "UNMASKED_KINDS",
    "AdditiveAttention",
    "ExpandingAttention",
    "MultihopAttention",
    "AttentionBN",
    "AttentionBNSH",
    "AttentionSH",
    "BayesianAdditiveAttention",
    "BayesianMultiheadAttention",
    "BayesianTransformerClassifier",
    "GPMultiheadAttention",
    "TemperaturePosteriorAttention",
    "HopfieldRetrieval",
    "MultiheadAttention",
    "SinusoidalPositionalEncoding",
    "SlotAttention",
    "TransformerClassifier",
    "TransformerEncoderLayer",
    "batch_normalized_query",
    "masked_mean",
    "predict_bayesian",
    "predict_proba",
    "scaled_heads_pool",
    "train_classifier",
    "train_svi",
    "sample_probs",
    "set_sampling",
    "swap_attention",
    "total_kl",
]
