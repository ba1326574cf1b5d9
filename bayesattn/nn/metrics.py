"""Classification metrics for probabilistic predictions: accuracy, NLL, calibration, uncertainty,
detection of unknown inputs (AUROC, FPR at 95 % TPR) and selective prediction (AURC).

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
    "brier_score",
    "detection_auroc",
    "fpr_at_tpr",
    "risk_coverage_curve",
    "area_under_risk_coverage",
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


def brier_score(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Mean multi-class Brier score ``(1/N) sum_n sum_c (p_nc - [y_n = c])^2`` (Brier 1950).

    In ``[0, 2]``; 0 for a perfect confident forecast.

    Raises:
        TypeError, ValueError: malformed ``probs`` or ``y``.
    """
    _check_probs(probs, y)
    onehot = torch.nn.functional.one_hot(y.long(), probs.shape[1]).to(torch.float64)
    return float(((probs.double() - onehot) ** 2).sum(-1).mean())


def _check_scores(score_in, score_out):
    for name, s in (("score_in", score_in), ("score_out", score_out)):
        if not isinstance(s, torch.Tensor) or s.dim() != 1 or s.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-d tensor")
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"{name} contains NaN or inf")


def detection_auroc(score_in: torch.Tensor, score_out: torch.Tensor) -> float:
    """Area under the ROC curve for telling ``out`` inputs from ``in`` inputs by a score.

    Higher score = more likely ``out`` (e.g. predictive entropy for unknown classes). Equals
    the Mann-Whitney probability ``P(s_out > s_in) + P(s_out = s_in) / 2`` (Hanley & McNeil
    1982), computed from mid-ranks in ``O(n log n)``.

    Args:
        score_in: ``(N_in,)`` scores of the known (negative) inputs.
        score_out: ``(N_out,)`` scores of the unknown (positive) inputs.

    Raises:
        ValueError: a score tensor that is not 1-d, is empty or holds NaN / inf.
    """
    _check_scores(score_in, score_out)
    scores = torch.cat([score_in, score_out]).double()
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    _, inverse, counts = torch.unique(sorted_scores, return_inverse=True,
                                         return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mid = ends - (counts.double() - 1) / 2  # mid-ranks of tied scores
    ranks[order] = mid[inverse]
    n_in, n_out = len(score_in), len(score_out)
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2
    return float(u / (n_in * n_out))


def fpr_at_tpr(score_in: torch.Tensor, score_out: torch.Tensor, tpr: float = 0.95) -> float:
    """False-positive rate on ``in`` inputs at the threshold that flags ``tpr`` of ``out`` ones.

    The threshold is the largest ``t`` with ``mean(score_out >= t) >= tpr``; the result is
    ``mean(score_in >= t)`` ("FPR at 95 % TPR", Hendrycks & Gimpel 2017, with ``tpr=0.95``).

    Args:
        score_in: ``(N_in,)`` scores of the known inputs.
        score_out: ``(N_out,)`` scores of the unknown inputs.
        tpr: target true-positive rate in ``(0, 1]``.

    Raises:
        ValueError: malformed scores; ``tpr`` outside ``(0, 1]``.
    """
    _check_scores(score_in, score_out)
    if not 0.0 < float(tpr) <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    out_sorted = torch.sort(score_out.double(), descending=True).values
    k = max(1, int(torch.ceil(torch.tensor(tpr * len(score_out) - 1e-9))))
    threshold = out_sorted[k - 1]
    return float((score_in.double() >= threshold).double().mean())


def risk_coverage_curve(probs: torch.Tensor, y: torch.Tensor, confidence=None):
    """Selective risk against coverage when abstaining on the least confident inputs.

    Inputs are sorted by decreasing ``confidence`` (default the top-class probability);
    keeping the ``k`` most confident gives coverage ``k / N`` and selective risk (error rate
    among them) ``e_k / k`` (Geifman & El-Yaniv 2017; El-Yaniv & Wiener 2010).

    Args:
        probs: ``(N, C)`` probabilities.
        y: ``(N,)`` labels.
        confidence: ``(N,)`` confidence (higher = keep first), or None for ``max_c p_c``.

    Returns:
        ``(coverage, risk)``, each ``(N,)`` float64, coverage ``1/N .. 1``.

    Raises:
        TypeError, ValueError: malformed ``probs`` / ``y``; ``confidence`` not ``(N,)``.
    """
    _check_probs(probs, y)
    if confidence is None:
        confidence = probs.max(-1).values
    if not isinstance(confidence, torch.Tensor) or tuple(confidence.shape) != (len(y),):
        raise ValueError(f"confidence must be a tensor of shape ({len(y)},)")
    order = torch.argsort(confidence.double(), descending=True, stable=True)
    wrong = (probs.argmax(-1) != y).double()[order]
    k = torch.arange(1, len(y) + 1, dtype=torch.float64)
    return k / len(y), torch.cumsum(wrong, 0) / k


def area_under_risk_coverage(probs: torch.Tensor, y: torch.Tensor, confidence=None) -> float:
    """AURC: the mean selective risk over the coverages ``1/N, 2/N, .., 1`` (lower is better).

    Geifman, Uziel & El-Yaniv (ICLR 2019), the area under :func:`risk_coverage_curve`.

    Raises:
        TypeError, ValueError: as :func:`risk_coverage_curve`.
    """
    _, risk = risk_coverage_curve(probs, y, confidence)
    return float(risk.mean())
