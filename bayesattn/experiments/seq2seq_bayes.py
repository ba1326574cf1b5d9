"""The Bayesian alignment of ``bayesattn bench seq2seq``: its posterior sd, summarised and drawn.

For :class:`bayesattn.experiments.seq2seq_models.BayesianGRUSeq2Seq` (Bahdanau attention with
BAM-style lognormal alignment weights): :func:`alignment_uncertainty` runs the Monte-Carlo
greedy decoder on a split and summarises the posterior sd of the alignment per (output
character, source character) cell; :func:`plot_alignment_posterior` draws, for a few test
dates, the deterministic Bahdanau alignment beside the Bayesian model's posterior mean and sd
(D2L 11.4's heatmaps, one row per map).
"""

from __future__ import annotations

import numpy as np
import torch

from ..nn.metrics import detection_auroc
from .dates import TARGET_LENGTH, decode_target

__all__ = ["alignment_uncertainty", "plot_alignment_posterior"]


@torch.no_grad()
def alignment_uncertainty(model, split, *, num_samples: int | None = None,
                          threshold: float = 0.1, batch_size: int = 250) -> dict:
    """Posterior-sd summaries of a Bayesian alignment on ``split`` (eval mode, sampling on).

    Per output character ``t`` of example ``n`` the score ``max_j sd[n, t, j]`` (the largest
    posterior sd over source positions) is compared between characters decoded wrongly and
    rightly (AUROC, :func:`bayesattn.nn.metrics.detection_auroc`; 0.5 = no information), and
    beside it the same AUROC of the predictive's own doubt ``1 - max_v p(y_t = v)``.

    Args:
        model: a :class:`~bayesattn.experiments.seq2seq_models.BayesianGRUSeq2Seq`.
        split: a split of :func:`bayesattn.experiments.dates.make_dates`.
        num_samples: Monte-Carlo paths (default the model's).
        threshold: cells with posterior mean weight above it enter ``mean_sd_attended``.
        batch_size: examples per pass.

    Returns:
        dict: ``mean_sd_attended`` (mean sd over cells with mean weight > ``threshold``),
        ``mean_sd_all`` (over all real cells), ``max_sd_right`` / ``max_sd_wrong`` (mean of
        the per-character score over right / wrong characters; NaN without any),
        ``char_errors`` (count), ``auroc_sd`` and ``auroc_confidence`` (NaN without errors
        or without right characters), ``num_samples``.

    Raises:
        ValueError: ``threshold`` outside ``[0, 1)``.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    model.eval()
    M = num_samples or model.num_samples
    sds, means, wrong, doubt, real = [], [], [], [], []
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(len(split), start + batch_size))
        pm = split.source_padding_mask[idx]
        S = int((~pm).sum(1).max())
        tokens, mean, sd, probs = model.alignment_posterior(split.source[idx, :S], pm[:, :S],
                                                            TARGET_LENGTH, num_samples=M)
        cells = (~pm[:, :S]).unsqueeze(1).expand_as(mean)
        sds.append(sd[cells])
        means.append(mean[cells])
        real.append(sd.masked_fill(~cells, 0.0).amax(-1).flatten())
        wrong.append((tokens != split.target[idx]).flatten())
        doubt.append((1 - probs.amax(-1)).flatten())
    sd, mean = torch.cat(sds), torch.cat(means)
    score, wrong, doubt = torch.cat(real), torch.cat(wrong), torch.cat(doubt)
    errors = int(wrong.sum())
    both = 0 < errors < len(wrong)
    nan = float("nan")
    return {
        "mean_sd_attended": float(sd[mean > threshold].mean()),
        "mean_sd_all": float(sd.mean()),
        "max_sd_right": float(score[~wrong].mean()) if errors < len(wrong) else nan,
        "max_sd_wrong": float(score[wrong].mean()) if errors else nan,
        "char_errors": errors,
        "characters": len(wrong),
        "auroc_sd": detection_auroc(score[~wrong], score[wrong]) if both else nan,
        "auroc_confidence": detection_auroc(doubt[~wrong], doubt[wrong]) if both else nan,
        "num_samples": M,
    }


def plot_alignment_posterior(deterministic, bayesian, split, out=None, name="alignment_sd.png",
                             index=(0, 1, 2, 3), *,
                             labels=("Bahdanau", "Bayesian mean", "Bayesian sd")):
    """Heatmaps of the deterministic alignment, the Bayesian posterior mean and its sd.

    Rows: ``deterministic``'s greedy alignment (skipped when None), ``bayesian``'s posterior
    mean and posterior sd (its own Monte-Carlo greedy output on the y axis); columns: the
    examples ``index`` of ``split``. Written with ``out.savefig(name, ...)`` when ``out`` (a
    :class:`bayesattn.io.OutputDir`) is given.

    Returns:
        the :class:`matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    index = [i for i in index if i < len(split)]
    src, pm = split.source[index], split.source_padding_mask[index]
    S = int((~pm).sum(1).max())
    rows = []
    if deterministic is not None:
        deterministic.eval()
        tokens, w = deterministic.greedy(src[:, :S], pm[:, :S], TARGET_LENGTH)
        rows.append((labels[0], w, decode_target(tokens), "Reds"))
    bayesian.eval()
    tokens, mean, sd, _ = bayesian.alignment_posterior(src[:, :S], pm[:, :S], TARGET_LENGTH)
    hyps = decode_target(tokens)
    rows += [(labels[1], mean, hyps, "Reds"), (labels[2], sd, hyps, "Blues")]
    fig = Figure(figsize=(3.6 * len(index), 2.4 * len(rows) + 0.5), layout="constrained")
    axes = np.array(fig.subplots(len(rows), len(index), squeeze=False))
    for r, (label, w, texts, cmap) in enumerate(rows):
        for c, i in enumerate(index):
            ax = axes[r, c]
            written = split.written[i]
            L = len(written)
            im = ax.imshow(w[c, :, :L].numpy(), cmap=cmap, vmin=0, aspect="auto")
            ax.set_xticks(range(L), list(written), fontsize=6)
            ax.set_yticks(range(TARGET_LENGTH), list(texts[c].ljust(TARGET_LENGTH)), fontsize=6)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            ok = "right" if texts[c] == split.iso[i] else f"wrong; truth {split.iso[i]}"
            ax.set_title(f"{written} ({ok})", fontsize=7)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"alignment: deterministic Bahdanau; Bayesian (BAM) posterior mean and sd over "
                 f"{bayesian.num_samples} draws (rows: output, columns: source characters)",
                 fontsize=9)
    if out is not None:
        out.savefig(name, fig, dpi=110)
    return fig
