"""torch.nn layers on :mod:`bayesattn.functional`, and Bayesian layers as PyroModules.

Deterministic layers: :class:`MultiheadAttention` (a drop-in for
:class:`torch.nn.MultiheadAttention` with a choice of attention kind), :class:`AttentionBN`,
:class:`AttentionSH`, :class:`AttentionBNSH`, :class:`SlotAttention`,
:class:`HopfieldRetrieval`, :class:`AdditiveAttention`, :class:`SinusoidalPositionalEncoding`,
:class:`TransformerEncoderLayer` and :class:`TransformerClassifier`.
"""

from .attention import (
    ATTENTION_KINDS,
    AttentionBN,
    AttentionBNSH,
    AttentionSH,
    MultiheadAttention,
    batch_normalized_query,
    scaled_heads_pool,
)
from .layers import (
    AdditiveAttention,
    HopfieldRetrieval,
    SinusoidalPositionalEncoding,
    SlotAttention,
)
from .transformer import TransformerClassifier, TransformerEncoderLayer, masked_mean

__all__ = [
    "ATTENTION_KINDS",
    "AdditiveAttention",
    "AttentionBN",
    "AttentionBNSH",
    "AttentionSH",
    "HopfieldRetrieval",
    "MultiheadAttention",
    "SinusoidalPositionalEncoding",
    "SlotAttention",
    "TransformerClassifier",
    "TransformerEncoderLayer",
    "batch_normalized_query",
    "masked_mean",
    "scaled_heads_pool",
]
