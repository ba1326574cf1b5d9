"""Sequence classifiers whose attention layers are stochastic at prediction time.

A :class:`bayesattn.nn.TransformerClassifier` whose ``self_attn`` modules are replaced by
layers that draw a random quantity in each forward pass (a posterior draw of the attention
temperature, :class:`bayesattn.nn.TemperaturePosteriorAttention`; a draw of the GP-attention
output, :class:`bayesattn.nn.GPMultiheadAttention`). Such a layer has an attribute
``sample`` (draw, or use the mean) and a method ``kl()`` (the KL divergence of its
variational posterior to its prior, 0 when it has none). The Monte-Carlo predictive of the
classifier is the mean over ``S`` forward passes, ``p(y | x) ~ (1/S) sum_s softmax(f_s(x))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .training import check_sequence_data, iterate_minibatches
from .transformer import TransformerClassifier

__all__ = ["swap_attention", "set_sampling", "total_kl", "sample_probs"]


def swap_attention(model: TransformerClassifier, factory: Callable[[], nn.Module]):
    """Replace the ``self_attn`` of every encoder layer of ``model`` by ``factory()``, in place.

    Args:
        model: a :class:`TransformerClassifier`.
        factory: returns a fresh attention module (same call signature as
            :class:`bayesattn.nn.MultiheadAttention`, ``batch_first=True``).

    Returns:
        ``model``.

    Raises:
        TypeError: ``model`` is not a :class:`TransformerClassifier`.
    """
    if not isinstance(model, TransformerClassifier):
        raise TypeError("model must be a bayesattn.nn.TransformerClassifier")
    for layer in model.layers:
        layer.self_attn = factory()
    return model


def _stochastic_layers(model: nn.Module):
    return [m for m in model.modules() if hasattr(m, "sample") and hasattr(m, "kl")]


def set_sampling(model: nn.Module, sample: bool) -> None:
    """Draw (True) or use the mean (False) in every stochastic attention layer of ``model``."""
    for m in _stochastic_layers(model):
        m.sample = bool(sample)


def total_kl(model: nn.Module) -> torch.Tensor:
    """Sum of ``kl()`` over the stochastic attention layers of ``model`` (0-dim, nats)."""
    kls = [m.kl() for m in _stochastic_layers(model)]
    return torch.stack(kls).sum() if kls else torch.zeros(())


@torch.no_grad()
def sample_probs(
    model: nn.Module,
    x: torch.Tensor,
    padding_mask: torch.Tensor | None,
    *,
    num_samples: int,
    dropout: bool = False,
    batch_size: int = 512,
) -> torch.Tensor:
    """Monte-Carlo class probabilities ``(S, N, C)`` of a classifier with random forward passes.

    Each of the ``S = num_samples`` passes draws the stochastic attention layers afresh (and,
    with ``dropout=True``, keeps dropout on: MC dropout, Gal & Ghahramani 2016). The model's
    training flag and sampling flags are restored afterwards.

    Args:
        model: classifier ``model(x, padding_mask) -> logits (N, C)``.
        x: ``(N, T, F)``.
        padding_mask: ``(N, T)`` bool, True at padded steps.
        num_samples: ``S``.
        dropout: keep dropout on (train mode) during the passes.
        batch_size: examples per pass.

    Raises:
        TypeError, ValueError: malformed data; ``num_samples < 1``.
    """
    check_sequence_data(x, padding_mask)
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    was_training = model.training
    model.train(dropout)
    try:
        draws = []
        for _ in range(num_samples):
            draws.append(torch.cat([
                model(xb, pm).softmax(-1) for _, xb, pm, _ in
                iterate_minibatches(x, padding_mask, None, batch_size, shuffle=False)
            ]))
    finally:
        model.train(was_training)
    return torch.stack(draws)
