"""Few-shot classification by attention over a support set, on scikit-learn's digits.

An N-way K-shot episode draws ``N`` classes and ``K`` labelled images of each (the support
set) plus query images of the same classes; a query is classified by attention over the
support set with the embedded support images as keys and their one-hot labels as values
(matching networks, Vinyals et al. 2016, eq. 1, with softmax attention over cosine
similarities). The attention output is a score per class; the prediction is its argmax.

Data: the 1797 8 x 8 images of :func:`sklearn.datasets.load_digits` (shipped with
scikit-learn), pixels divided by 16. Classes 0-4 are meta-train and 5-9 meta-test (no
overlap). With only five meta-train classes a 5-way validation split of *classes* is
impossible, so validation episodes use the meta-train classes with 20 % of each class's images
held out from training (seeded): hyperparameters (the heads' scale, bandwidth, ridge and
lengthscale) are chosen on these, never on meta-test classes.

Embeddings: a two-layer MLP (64 -> 64 -> 32, ReLU) whose L2-normalised output is trained on
meta-train episodes with the softmax (matching-network) head and then frozen; and, as a
reference that needs no training, the L2-normalised pixels (:class:`PixelEmbedding`). Every
head is evaluated on the same embedding.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import functional as Fn

__all__ = ["HEADS", "HEAD_GRIDS", "load_digit_split", "sample_episodes", "DigitEmbedding",
           "PixelEmbedding",
           "head_scores", "train_embedding", "episode_accuracy", "choose_head", "mean_ci"]

#: attention heads compared (the softmax one is the matching network)
HEADS = ("softmax", "kernel", "least_squares", "softmax_least_squares", "gp")
#: the validation grids of each head's hyperparameters
HEAD_GRIDS = {
    "softmax": [{"scale": s} for s in (1.0, 3.0, 10.0, 30.0, 100.0)],
    "kernel": [{"bandwidth": b} for b in (0.05, 0.1, 0.2, 0.4, 0.8)],
    "least_squares": [{"ridge": r} for r in (0.01, 0.1, 1.0, 10.0)],
    "softmax_least_squares": [{"scale": s, "ridge": r} for s in (3.0, 10.0, 30.0)
                              for r in (0.01, 0.1, 1.0)],
    "gp": [{"lengthscale": ls, "ridge": r} for ls in (0.25, 0.5, 1.0)
           for r in (0.01, 0.1, 1.0)],
}
META_TRAIN, META_TEST = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


def load_digit_split(seed: int, val_fraction: float = 0.2):
    """``{"train", "val", "test"}``: each a dict class -> ``(n_c, 64)`` float32 images.

    ``train`` / ``val`` split the images of classes 0-4 (``val_fraction`` held out, seeded);
    ``test`` holds classes 5-9.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    gen = torch.Generator().manual_seed(1000 + seed)
    split = {"train": {}, "val": {}, "test": {}}
    for c in META_TRAIN:
        xc = x[y == c][torch.randperm(int((y == c).sum()), generator=gen)]
        n_val = int(round(val_fraction * xc.shape[0]))
        split["val"][c], split["train"][c] = xc[:n_val], xc[n_val:]
    for c in META_TEST:
        split["test"][c] = x[y == c]
    return split


def sample_episodes(pool: dict, episodes: int, ways: int, shots: int, queries: int, generator):
    """Draw ``episodes`` N-way K-shot episodes from ``pool`` (class -> images).

    Returns:
        ``(support (E, N K, 64), support_labels (E, N K) int64, query (E, N Q, 64),
        query_labels (E, N Q) int64)``; labels are ``0..N-1`` in a random class order.

    Raises:
        ValueError: fewer than ``ways`` classes, or a class with fewer than ``shots +
            queries`` images.
    """
    classes = sorted(pool)
    if len(classes) < ways:
        raise ValueError(f"ways={ways} needs at least {ways} classes, the pool has {len(classes)}")
    if min(pool[c].shape[0] for c in classes) < shots + queries:
        raise ValueError(f"shots + queries = {shots + queries} exceeds a class's images")
    sup, qry = [], []
    for _ in range(episodes):
        chosen = torch.randperm(len(classes), generator=generator)[:ways]
        s_e, q_e = [], []
        for c in chosen.tolist():
            imgs = pool[classes[c]]
            idx = torch.randperm(imgs.shape[0], generator=generator)[:shots + queries]
            s_e.append(imgs[idx[:shots]])
            q_e.append(imgs[idx[shots:]])
        sup.append(torch.cat(s_e))
        qry.append(torch.cat(q_e))
    labels = torch.arange(ways)
    return (torch.stack(sup), labels.repeat_interleave(shots).expand(episodes, -1),
            torch.stack(qry), labels.repeat_interleave(queries).expand(episodes, -1))


class DigitEmbedding(nn.Module):
    """MLP ``64 -> hidden -> dim`` (ReLU) with an L2-normalised output ``(..., dim)``."""

    def __init__(self, hidden: int = 64, dim: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x):
        return F.normalize(self.net(x), dim=-1)


class PixelEmbedding(nn.Module):
    """The L2-normalised pixels ``(..., 64)``: the embedding that needs no training."""

    def forward(self, x):
        return F.normalize(x, dim=-1)


def head_scores(head: str, query, support, support_labels, ways: int, **params):
    """Class scores ``(E, NQ, ways)``: attention of the embedded queries over the support set.

    Keys are the embedded support images, values their one-hot labels. ``softmax``: scores
    ``softmax(scale q.k) Y`` (matching network); ``kernel``: Gaussian Nadaraya-Watson with
    ``bandwidth``; ``least_squares``: Intention (ridge regression of the labels); ``gp``: RBF
    GP attention; ``softmax_least_squares``: Intention's softmax variant.

    Raises:
        ValueError: an unknown ``head``.
    """
    values = F.one_hot(support_labels, ways).to(query.dtype)
    if head == "softmax":
        return Fn.softmax_attention(query, support, values, scale=params["scale"])
    if head == "kernel":
        return Fn.kernel_attention(query, support, values, bandwidth=params["bandwidth"])
    if head == "least_squares":
        return Fn.least_squares_attention(query, support, values, ridge=params["ridge"])
    if head == "softmax_least_squares":
        return Fn.softmax_least_squares_attention(query, support, values, scale=params["scale"],
                                                  ridge=params["ridge"])
    if head == "gp":
        return Fn.gp_attention(query, support, values, lengthscale=params["lengthscale"],
                               ridge=params["ridge"])
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")


def train_embedding(split, *, seed: int, steps: int = 400, episodes_per_step: int = 8,
                    ways: int = 5, queries: int = 5, lr: float = 3e-3) -> DigitEmbedding:
    """Train :class:`DigitEmbedding` on meta-train episodes (K drawn from {1, 5} per step)
    with the matching-network loss ``-log sum_j a_j y_j`` of softmax attention with a
    learnable scale (AdamW, one-cycle schedule)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DigitEmbedding()
    log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
    params = list(model.parameters()) + [log_scale]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for _ in range(steps):
        shots = (1, 5)[int(torch.randint(2, (1,), generator=gen))]
        s, sl, q, ql = sample_episodes(split["train"], episodes_per_step, ways, shots, queries,
                                       gen)
        w = torch.softmax(log_scale.exp() * model(q) @ model(s).mT, -1)
        probs = w @ F.one_hot(sl, ways).float()
        loss = F.nll_loss(probs.clamp_min(1e-8).log().flatten(0, 1), ql.flatten())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    model.eval()
    return model


@torch.no_grad()
def episode_accuracy(model, head, episodes, ways: int, params: dict) -> torch.Tensor:
    """Accuracy of each episode ``(E,)`` for ``head`` on the embedding ``model``."""
    s, sl, q, ql = episodes
    scores = head_scores(head, model(q), model(s), sl, ways, **params)
    return (scores.argmax(-1) == ql).float().mean(-1)


def choose_head(model, head, val_episodes, ways: int) -> tuple[dict, float]:
    """The grid point of :data:`HEAD_GRIDS` with the best validation accuracy
    (``(params, accuracy)``; ties go to the first)."""
    best, best_acc = None, -1.0
    for params in HEAD_GRIDS[head]:
        acc = float(episode_accuracy(model, head, val_episodes, ways, params).mean())
        if acc > best_acc + 1e-12:
            best, best_acc = params, acc
    return best, best_acc


def mean_ci(acc) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % confidence interval over episodes."""
    acc = np.asarray(acc, dtype=np.float64)
    return float(acc.mean()), float(1.959963984540054 * acc.std(ddof=1) / math.sqrt(acc.size))
