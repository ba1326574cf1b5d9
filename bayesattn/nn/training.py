"""Training and prediction helpers for the deterministic sequence classifiers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

__all__ = ["train_classifier", "predict_proba", "iterate_minibatches", "check_sequence_data"]


def check_sequence_data(x, padding_mask, y=None) -> None:
    """Check ``x (N, T, F)`` float, ``padding_mask (N, T)`` bool and ``y (N,)`` int64.

    Raises:
        TypeError: wrong types or dtypes.
        ValueError: wrong shapes, NaN/inf in ``x``, a sequence with no real step.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor (N, T, F)")
    if x.dim() != 3:
        raise ValueError(f"x must have shape (N, T, F), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf (pad with zeros and mark padding_mask)")
    if padding_mask is not None:
        if not isinstance(padding_mask, torch.Tensor) or padding_mask.dtype != torch.bool:
            raise TypeError("padding_mask must be a bool tensor (N, T), True = padded")
        if padding_mask.shape != x.shape[:2]:
            raise ValueError(
                f"padding_mask must have shape {tuple(x.shape[:2])}, got "
                f"{tuple(padding_mask.shape)}"
            )
        if bool(padding_mask.all(1).any()):
            raise ValueError("padding_mask marks every step of some sequence as padded")
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64:
            raise TypeError("y must be an int64 tensor of class indices")
        if tuple(y.shape) != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")


def iterate_minibatches(x, padding_mask, y, batch_size: int, *, shuffle: bool, generator=None):
    """Yield ``(index, x, padding_mask, y)`` minibatches trimmed to their longest sequence."""
    N = x.shape[0]
    order = torch.randperm(N, generator=generator) if shuffle else torch.arange(N)
    for start in range(0, N, batch_size):
        idx = order[start : start + batch_size]
        xb = x[idx]
        pm = None if padding_mask is None else padding_mask[idx]
        if pm is not None:
            T = int((~pm).sum(1).max())
            xb, pm = xb[:, :T], pm[:, :T]
        yield idx, xb, pm, (None if y is None else y[idx])


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    padding_mask: torch.Tensor | None,
    y: torch.Tensor,
    *,
    epochs: int = 60,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    clip_norm: float = 1.0,
    seed: int | None = None,
    progress: bool = True,
) -> list[float]:
    """Fit a classifier ``model(x, padding_mask) -> logits (N, C)`` by cross-entropy.

    AdamW (Loshchilov & Hutter 2019) with a one-cycle learning-rate schedule (Smith & Topin
    2019), gradient-norm clipping, shuffled minibatches trimmed to their longest sequence; a
    tqdm bar over epochs shows the mean training loss.

    Args:
        model: a module returning logits.
        x: ``(N, T, F)``.
        padding_mask: ``(N, T)`` bool, True at padded steps, or None.
        y: ``(N,)`` int64 class indices.
        epochs, batch_size, lr, weight_decay, clip_norm: optimisation settings.
        seed: seeds the minibatch order (and dropout via ``torch.manual_seed``) if given.
        progress: show the progress bar.

    Returns:
        mean training loss (nats) per epoch.

    Raises:
        TypeError, ValueError: malformed data (:func:`check_sequence_data`); non-positive
            ``epochs``, ``batch_size`` or ``lr``.
    """
    check_sequence_data(x, padding_mask, y)
    for name, val in (("epochs", epochs), ("batch_size", batch_size)):
        if not (isinstance(val, int) and val > 0):
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    gen = None
    if seed is not None:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
    model.train()

    def loss_fn(xb, pm, yb):
        return F.cross_entropy(model(xb, pm), yb)

    history = minibatch_descent(
        [{"params": list(model.parameters()), "weight_decay": weight_decay}], loss_fn, x,
        padding_mask, y, epochs=epochs, batch_size=batch_size, lr=lr, clip_norm=clip_norm,
        generator=gen, progress=progress, desc="train",
    )
    model.eval()
    return history


def minibatch_descent(
    param_groups: list[dict],
    loss_fn,
    x: torch.Tensor,
    padding_mask: torch.Tensor | None,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    clip_norm: float,
    generator: torch.Generator | None,
    progress: bool,
    desc: str,
    before_step=None,
) -> list[float]:
    """The package's one training loop: AdamW, one-cycle schedule, gradient clipping.

    AdamW (Loshchilov & Hutter 2019) on ``param_groups`` (each group may set its own
    ``weight_decay``) with a one-cycle learning-rate schedule peaking at ``lr`` (Smith &
    Topin 2019), gradient-norm clipping at ``clip_norm`` (0 = none), shuffled minibatches
    trimmed to their longest sequence (:func:`iterate_minibatches`), a tqdm bar over epochs.
    Used by :func:`train_classifier` (cross-entropy) and :func:`bayesattn.nn.train_svi`
    (negative ELBO).

    Args:
        param_groups: torch optimiser parameter groups.
        loss_fn: ``(x_batch, padding_mask_batch, y_batch) -> 0-dim loss`` (mean per example).
        x, padding_mask, y: the data (see :func:`check_sequence_data`).
        epochs, batch_size, lr, clip_norm: optimisation settings.
        generator: seeds the minibatch order (or None).
        progress: show the bar; ``desc`` its label.
        before_step: called as ``before_step(step, total_steps)`` (1-based) before each step.

    Returns:
        the mean loss per example and epoch.
    """
    opt = torch.optim.AdamW(param_groups, lr=lr)
    steps = epochs * math.ceil(x.shape[0] / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    params = [p for group in param_groups for p in group["params"]]
    history = []
    step = 0
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        total, count = 0.0, 0
        for _, xb, pm, yb in iterate_minibatches(x, padding_mask, y, batch_size, shuffle=True,
                                                 generator=generator):
            step += 1
            if before_step is not None:
                before_step(step, steps)
            loss = loss_fn(xb, pm, yb)
            opt.zero_grad()
            loss.backward()
            if clip_norm:
                nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
            sched.step()
            total += float(loss.detach()) * yb.shape[0]
            count += yb.shape[0]
        history.append(total / count)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: torch.Tensor, padding_mask: torch.Tensor | None, *, batch_size: int = 512
) -> torch.Tensor:
    """Class probabilities ``softmax(model(x, padding_mask))``, ``(N, C)``, in eval mode.

    Raises:
        TypeError, ValueError: malformed data (:func:`check_sequence_data`).
    """
    check_sequence_data(x, padding_mask)
    was_training = model.training
    model.eval()
    out = [
        model(xb, pm).softmax(-1)
        for _, xb, pm, _ in iterate_minibatches(x, padding_mask, None, batch_size, shuffle=False)
    ]
    model.train(was_training)
    return torch.cat(out)
