"""Figures of ``bayesattn bench uncertainty``: reliability, metric vs severity, ROC, coverage."""

from __future__ import annotations

import numpy as np
import torch

from ..nn.metrics import reliability_curve, risk_coverage_curve
from .corruptions import CORRUPTIONS
from .uncertainty_methods import LABELS

__all__ = ["plot_all"]


def _color(i: int) -> str:
    return f"C{i % 10}"


def _pool(pooled, method, key):
    return torch.cat([a[key] for a in pooled[method]])


def plot_all(out, records: list[dict], pooled: dict, config, *, dpi: int = 110) -> None:
    """Write ``reliability.png``, ``shift.png``, ``roc.png`` and ``coverage.png`` to ``out``.

    Args:
        out: :class:`bayesattn.io.OutputDir`.
        records: the benchmark records.
        pooled: ``{method: [per-seed dict of tensors probs, y, ent_in, ent_out, mi_in,
            mi_out]}``.
        config: the :class:`UncertaintyConfig` (its severities).
        dpi: resolution of the PNG files.
    """
    from matplotlib.figure import Figure

    methods = list(pooled)
    # reliability, pooled over seeds
    cols = min(5, len(methods))
    rows = -(-len(methods) // cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, m in zip(axes, methods, strict=False):
        probs, y = _pool(pooled, m, "probs"), _pool(pooled, m, "y")
        curve = reliability_curve(probs, y, n_bins=10)
        ok = curve.count > 0
        width = 0.1
        ax.bar((curve.edges[:-1] + width / 2)[ok].numpy(), curve.accuracy[ok].numpy(),
               width=width * 0.9,
               color="C0", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="0.4", lw=1)
        ax.set_title(LABELS[m], fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence", fontsize=8)
    for ax in axes[len(methods):]:
        ax.set_visible(False)
    fig.suptitle("Reliability on the clean test set (10 bins, all seeds pooled)")
    out.savefig("reliability.png", fig, dpi=dpi)

    # metric against severity, mean over seeds
    sev = [0, *config.severities]
    fig = Figure(figsize=(16, 10), layout="constrained")
    axes = fig.subplots(3, len(CORRUPTIONS), squeeze=False)
    for i, m in enumerate(methods):
        rs = [r for r in records if r["method"] == m]
        for j, c in enumerate(CORRUPTIONS):
            for k, key in enumerate(("accuracy", "nll", "ece")):
                clean = np.mean([r["in_distribution"][key] for r in rs])
                vals = [np.mean([r["shift"][c][s][key] for r in rs])
                        for s in range(len(config.severities))]
                axes[k, j].plot(sev, [clean, *vals], "o-", ms=3, color=_color(i),
                                label=LABELS[m])
                axes[k, j].set_ylabel(key if j == 0 else "")
                axes[0, j].set_title(c)
                axes[2, j].set_xlabel("severity (0 = clean)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Accuracy, NLL and ECE against corruption severity (mean over seeds)")
    out.savefig("shift.png", fig, dpi=dpi)

    # ROC of the unknown-speaker detection
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax_h, ax_mi = fig.subplots(1, 2)
    for i, m in enumerate(methods):
        for ax, key in ((ax_h, "ent"), (ax_mi, "mi")):
            s_in, s_out = _pool(pooled, m, key + "_in"), _pool(pooled, m, key + "_out")
            if key == "mi" and float(torch.cat([s_in, s_out]).abs().max()) == 0:
                continue
            fpr, tpr = _roc(s_in.numpy(), s_out.numpy())
            ax.plot(fpr, tpr, color=_color(i), lw=1.2, label=LABELS[m])
    for ax, title in ((ax_h, "predictive entropy"), (ax_mi, "mutual information")):
        ax.plot([0, 1], [0, 1], "--", color="0.5", lw=1)
        ax.set_xlabel("false-positive rate (known speakers)")
        ax.set_ylabel("true-positive rate (held-out speakers)")
        ax.set_title(f"unknown speakers by {title} (seeds pooled)")
    ax_h.legend(fontsize=7, loc="lower right")
    out.savefig("roc.png", fig, dpi=dpi)

    # accuracy-coverage
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for i, m in enumerate(methods):
        cov, risk = risk_coverage_curve(_pool(pooled, m, "probs"), _pool(pooled, m, "y"))
        ax.plot(cov.numpy(), 100 * (1 - risk.numpy()), color=_color(i), lw=1.2,
                label=LABELS[m])
    ax.set_xlabel("coverage (share of test utterances answered)")
    ax.set_ylabel("accuracy on the answered (%)")
    ax.set_title("selective prediction by confidence (clean test, seeds pooled)")
    ax.legend(fontsize=7, loc="lower left")
    out.savefig("coverage.png", fig, dpi=dpi)


def _roc(s_in: np.ndarray, s_out: np.ndarray):
    """ROC points ``(fpr, tpr)`` over all thresholds (positives = ``s_out``)."""
    thresholds = np.unique(np.concatenate([s_in, s_out]))[::-1]
    fpr = np.array([0.0, *[(s_in >= t).mean() for t in thresholds]])
    tpr = np.array([0.0, *[(s_out >= t).mean() for t in thresholds]])
    return fpr, tpr
