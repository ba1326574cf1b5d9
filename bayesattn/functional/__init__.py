"""Closed-form attention: the fast path (pure torch; this package never imports pyro).

Every function here is the exact posterior mean of one of the Pyro models in
:mod:`bayesattn.models` (docs/design.md, "Key-selection models" and "Least-squares
attention"). Names, shapes and masks follow
:func:`torch.nn.functional.scaled_dot_product_attention` (SDPA): ``...`` batch dims (any
number, broadcast), ``L`` queries, ``S`` keys/values, ``E`` query/key
dim, ``Ev`` value dim::

    query (..., L, E)   key (..., S, E)   value (..., S, Ev)   ->   output (..., L, Ev)
    attn_mask (..., L, S): bool, True = takes part (SDPA), or float, added to the log-weights
    weights (..., L, S)   returned with need_weights=True

Also as SDPA: ``dropout_p``, ``is_causal`` (top-left causal mask) and ``scale`` (the logit
multiplier, an inverse variance in the key-selection model; never Pyro's ``scale``, an sd).
``noise`` is always an observation-noise standard deviation. A query whose mask allows no key
has an empty posterior: its weights are all 0 and its output is 0.

Validation of tensor values (each a host sync) is on by default and can be turned off with
:func:`set_validation` or per call with ``validate_args=False``; it is off while
:func:`torch.compile` traces. Modules: :mod:`.softmax`, :mod:`.kernels`, :mod:`.least_squares`,
:mod:`.gp`, :mod:`.linear`, :mod:`.multihop`, :mod:`.expanding`.
"""

from ._core import (
    IllConditionedError,
    NotPositiveDefiniteError,
    cholesky,
    is_validating,
    ridge_qr,
    set_validation,
)
from .expanding import expanding_attention
from .gp import GP_KERNELS, gp_attention, gp_kernel
from .kernels import (
    COMPACT_KERNELS,
    KERNELS,
    kernel_attention,
    kernel_log_density,
    kernel_log_normaliser,
    kernel_log_weights,
)
from .least_squares import least_squares_attention, softmax_least_squares_attention
from .linear import linear_attention
from .multihop import DEFAULT_HOP_WEIGHTS, multihop_attention
from .softmax import softmax_attention, softmax_log_weights

__all__ = [
    "KERNELS",
    "COMPACT_KERNELS",
    "GP_KERNELS",
    "IllConditionedError",
    "NotPositiveDefiniteError",
    "set_validation",
    "is_validating",
    "cholesky",
    "ridge_qr",
    "softmax_log_weights",
    "softmax_attention",
    "kernel_log_density",
    "kernel_log_normaliser",
    "kernel_log_weights",
    "kernel_attention",
    "least_squares_attention",
    "softmax_least_squares_attention",
    "gp_kernel",
    "gp_attention",
    "linear_attention",
    "DEFAULT_HOP_WEIGHTS",
    "multihop_attention",
    "expanding_attention",
]
