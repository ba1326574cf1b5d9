"""Classification metrics for probabilistic predictions: accuracy, NLL, calibration, uncertainty.

``probs (N, C)`` are predicted class probabilities (rows sum to 1), ``y (N,)`` class indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "accuracy",
    "negative_log_likelihood",
    "expected_calibration_error",
    "reliability_curve",
    "ReliabilityCurve",
    "predictive_uncertainty",
]


def _check_probs(probs, y=None):
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point() or probs.dim() != 2:
        raise ValueError("probs must be a floating-point tensor of shape (N, C)")
    if bool((probs < 0).any()) or not bool(
        torch.allclose(probs.sum(-1), torch.ones((), dtype=probs.dtype), atol=1e-4)
    ):
        raise ValueError("probs must be non-negative with rows summing to 1")
    if y is not None:
        if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32):
            raise TypeError("y must be an integer tensor of class indices")
        if tuple(y.shape) != (probs.shape[0],):
            raise ValueError(f"y must have shape ({probs.shape[0]},), got {tuple(y.shape)}")
        if bool((y < 0).any()) or bool((y >= probs.shape[1]).any()):
            raise ValueError(f"y must hold class indices in 0..{probs.shape[1] - 1}")


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``argmax_c probs`` equal to ``y``.

    Raises:
        TypeError, ValueError: malformed ``probs`` or ``y``.
    """
    _check_probs(probs, y)
    return float((probs.argmax(-1) == y).double().mean())


def negative_log_likelihood(probs: torch.Tensor, y: torch.Tensor, *, eps: float = 1e-12) -> float:
    """Mean ``-log p(y_n)`` in nats (probabilities floored at ``eps``).

    Raises:
        TypeError, ValueError: malformed ``probs`` or ``y``.
    """
    _check_probs(probs, y)
    p = probs.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)
    return float(-(p.double().clamp_min(eps)).log().mean())


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin calibration data (equal-width confidence bins on ``[0, 1]``).

    Attributes:
        edges: ``(B + 1,)`` bin edges.
        confidence: ``(B,)`` mean top-class probability in each bin (NaN if empty).
        accuracy: ``(B,)`` accuracy in each bin (NaN if empty).
        count: ``(B,)`` number of predictions in each bin.
    """

    edges: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor
    count: torch.Tensor


def reliability_curve(probs: torch.Tensor, y: torch.Tensor, *, n_bins: int = 15):
    """Bin predictions by confidence ``max_c p_c`` (Guo et al. 2017, section 2).

    Bin ``b`` holds confidences in ``(b/B, (b+1)/B]`` (the first bin also holds 0).

    Raises:
        TypeError, ValueError: malformed ``probs`` / ``y``; ``n_bins < 1``.
    """
    _check_probs(probs, y)
    if not (isinstance(n_bins, int) and n_bins >= 1):
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    conf, pred = probs.double().max(-1)
    correct = (pred == y).double()
    idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).double()
    sum_conf = torch.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = torch.bincount(idx, weights=correct, minlength=n_bins)
    nan = torch.full_like(count, float("nan"))
    nonempty = count > 0
    return ReliabilityCurve(
        edges=torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64),
        confidence=torch.where(nonempty, sum_conf / count.clamp_min(1), nan),
        accuracy=torch.where(nonempty, sum_acc / count.clamp_min(1), nan),
        count=count,
    )


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, *, n_bins: int = 15):
    """Expected calibration error ``sum_b (n_b / N) |acc_b - conf_b|`` (Guo et al. 2017, eq. 3).

    Equal-width bins over the top-class confidence; see :func:`reliability_curve`.

    Raises:
        TypeError, ValueError: malformed ``probs`` / ``y``; ``n_bins < 1``.
    """
    curve = reliability_curve(probs, y, n_bins=n_bins)
    nonempty = curve.count > 0
    gap = (curve.accuracy[nonempty] - curve.confidence[nonempty]).abs()
    return float((curve.count[nonempty] * gap).sum() / curve.count.sum())


def predictive_uncertainty(prob_samples: torch.Tensor) -> dict[str, torch.Tensor]:
    """Predictive mean and its entropy decomposition from Monte-Carlo class probabilities.

    With ``p_s = p(y | x, theta_s)`` for posterior draws ``s = 1..S``:
    ``mean = (1/S) sum_s p_s``; ``predictive_entropy = H[mean]`` (total uncertainty, nats);
    ``expected_entropy = (1/S) sum_s H[p_s]`` (aleatoric part); ``mutual_information =
    predictive_entropy - expected_entropy`` (epistemic part, the information gain about
    ``theta`` from ``y``; Houlsby et al. 2011, BALD; Depeweg et al. 2018, eq. 4-5).

    Args:
        prob_samples: ``(S, N, C)`` probabilities.

    Returns:
        dict with ``mean (N, C)``, ``predictive_entropy (N,)``, ``expected_entropy (N,)``,
        ``mutual_information (N,)`` (clamped at 0 against rounding).

    Raises:
        ValueError: ``prob_samples`` not ``(S, N, C)`` probabilities.
    """
    if not isinstance(prob_samples, torch.Tensor) or prob_samples.dim() != 3:
        raise ValueError("prob_samples must be a tensor of shape (S, N, C)")
    _check_probs(prob_samples.reshape(-1, prob_samples.shape[-1]))

    def entropy(p):
        return -(p * p.clamp_min(1e-30).log()).sum(-1)

    mean = prob_samples.mean(0)
    total = entropy(mean)
    aleatoric = entropy(prob_samples).mean(0)
    return {
        "mean": mean,
        "predictive_entropy": total,
        "expected_entropy": aleatoric,
        "mutual_information": (total - aleatoric).clamp_min(0.0),
    }
