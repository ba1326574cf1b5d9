"""The toy tasks of Singh & Buckley (NeurIPS 2023, arXiv 2304.04556) for multihop and
expanding attention: the data generators, the task models (independent runs stacked in one
batch) and their training; ``bayesattn bench structural``
(:mod:`bayesattn.experiments.structural`) runs them and writes the report.
See :mod:`bayesattn.experiments.structural` for the tasks' definitions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import functional as Fn

__all__ = [
    "MultihopConfig",
    "ExpandingConfig",
    "MULTIHOP_KINDS",
    "EXPANDING_KINDS",
    "LABELS",
    "MultihopTask",
    "ExpandingTask",
    "multihop_batch",
    "expanding_batch",
    "MultihopTaskModel",
    "ExpandingTaskModel",
    "relative_cost",
    "train_multihop",
    "train_expanding",
]

#: Multihop-task models, in table order.
MULTIHOP_KINDS = ("multihop", "softmax1", "softmax2")
#: Expanding-task models, in table order.
EXPANDING_KINDS = ("expanding", "softmax")
#: Display names of the models.
LABELS = {"multihop": "multihop (c = 1/3, 1/3, 1/3)", "softmax1": "softmax, 1 layer",
           "softmax2": "softmax, 2 layers", "expanding": "expanding", "softmax": "softmax (full)"}


@dataclass(frozen=True)
class MultihopConfig:
    """Settings of the multihop task (defaults: the issue / the authors' ``run_multihop.py``).

    Attributes:
        steps, batch_size, lr, weight_decay: Adam on fresh batches.
        test_size: held-out sequences for the final MSE.
        block: steps per point of the stored loss curve.
    """

    steps: int = 20_000
    batch_size: int = 200
    lr: float = 1e-3
    weight_decay: float = 2.0
    test_size: int = 10_000
    block: int = 200


@dataclass(frozen=True)
class ExpandingConfig:
    """Settings of the expanding task (defaults: the issue / the authors' ``run_expanding.py``).

    Attributes:
        seq_len: ``T``.
        dims: the embedding sizes ``d``.
        ps: the geometric rates ``p`` of the target's distance.
        steps, lr, weight_decay: Adam, batch 1.
        tail: the last steps whose mean MSE is reported.
        block: steps per point of the stored loss curve.
        learn_prior: learn ``log alpha``, ``log beta`` (without weight decay; the authors'
            code leaves them fixed: they get no gradient there).
    """

    seq_len: int = 50
    dims: tuple = (10, 50)
    ps: tuple = (1 / 2, 1 / 5, 1 / 10, 1 / 25)
    steps: int = 10_000
    lr: float = 5e-4
    weight_decay: float = 2.0
    tail: int = 1_000
    block: int = 100
    learn_prior: bool = True


# ------------------------------------------------------------------------------------- data
class MultihopTask:
    """The multihop task of one seed: ``A (3, 3) ~ U(0, 1)``, ``w (3,) ~ N(1, 1)``.

    Args:
        seed: seeds the task's own generator (``A``, ``w`` and every later batch).
        dim: ``d`` (3 in the paper).
    """

    seq_len = 5

    def __init__(self, seed: int, dim: int = 3) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))
        self.dim = dim
        self.A = torch.rand(dim, dim, generator=self.generator)
        self.w = 1.0 + torch.randn(dim, generator=self.generator)

    def sample(self, n: int):
        """``n`` sequences: ``x (n, 5, d)``, ``y (n,)`` (see :func:`multihop_batch`)."""
        return multihop_batch(n, self.A, self.w, self.generator)


def multihop_batch(n: int, A: torch.Tensor, w: torch.Tensor, generator=None):
    """Sequences of the multihop task (Singh & Buckley 2023, section "Multihop attention").

    Tokens: ``[z0, z1, g0, g1, g2]`` with ``z ~ N(0, 1)^d``, ``g0 = 10 U^d``,
    ``g1 = g0 A + N(0, 1)``, ``g2 = g1 A + N(0, 1)``; target ``y = w . (2 g0 + g1 + g2)``.

    Args:
        n: number of sequences.
        A: ``(d, d)``; w: ``(d,)``.
        generator: a :class:`torch.Generator` (default torch's global one).

    Returns:
        ``x (n, 5, d)``, ``y (n,)`` (float32).

    Raises:
        ValueError: ``n < 1`` or shapes that do not match.
    """
    d = w.shape[-1]
    if n < 1 or A.shape != (d, d):
        raise ValueError(f"need n >= 1 and A (d, d) with d = len(w) = {d}; got n={n}, "
                         f"A {tuple(A.shape)}")
    z = torch.randn(n, 2, d, generator=generator)
    g0 = 10.0 * torch.rand(n, d, generator=generator)
    g1 = g0 @ A + torch.randn(n, d, generator=generator)
    g2 = g1 @ A + torch.randn(n, d, generator=generator)
    x = torch.cat([z, torch.stack([g0, g1, g2], dim=1)], dim=1)
    y = (2.0 * g0 + g1 + g2) @ w
    return x, y


class ExpandingTask:
    """The expanding task of one seed and rate: ``A (d, d) ~ U(0, 1)``, ``w (d,) ~ N(1, 1)``.

    Args:
        seed: seeds the task's own generator.
        dim: ``d``.
        p: the geometric rate of the target's distance, in ``(0, 1]``.
        seq_len: ``T`` (at least 3).

    Raises:
        ValueError: ``p`` outside ``(0, 1]`` or ``seq_len < 3``.
    """

    def __init__(self, seed: int, dim: int, p: float, seq_len: int = 50) -> None:
        if not 0.0 < p <= 1.0 or seq_len < 3:
            raise ValueError(f"need 0 < p <= 1 and seq_len >= 3, got p={p}, seq_len={seq_len}")
        self.generator = torch.Generator().manual_seed(int(seed))
        self.dim, self.p, self.seq_len = dim, p, seq_len
        self.A = torch.rand(dim, dim, generator=self.generator)
        self.w = 1.0 + torch.randn(dim, generator=self.generator)

    def sample(self, n: int):
        """``n`` sequences: ``x (n, T, d)``, ``y (n,)``, ``distance (n,)`` (see
        :func:`expanding_batch`)."""
        return expanding_batch(n, self.A, self.w, self.p, self.seq_len, self.generator)


def expanding_batch(n: int, A, w, p: float, seq_len: int = 50, generator=None):
    """Sequences of the expanding task (Singh & Buckley 2023, section "Expanding attention").

    ``T - 2`` distractors ``N(0, 0.1^2)^d``, ``g0 = 2 U^d`` at distance
    ``min(x + 1, T - 1)`` before the last token, ``x ~ Geometric(p)`` on ``{1, 2, ...}``
    (drawn as ``1 + floor(log U / log(1 - p))``), and the last token
    ``g1 = g0 A + N(0, 0.1^2)``; target ``y = w . g0``.

    Args:
        n: number of sequences.
        A: ``(d, d)``; w: ``(d,)``.
        p: geometric rate in ``(0, 1]``.
        seq_len: ``T``.
        generator: a :class:`torch.Generator`.

    Returns:
        ``x (n, T, d)``, ``y (n,)``, ``distance (n,)`` (long, in ``2 .. T - 1``).

    Raises:
        ValueError: ``n < 1``, ``p`` outside ``(0, 1]``, ``seq_len < 3``, shapes that do not
            match.
    """
    d = w.shape[-1]
    if n < 1 or not 0.0 < p <= 1.0 or seq_len < 3 or A.shape != (d, d):
        raise ValueError(f"bad expanding batch: n={n}, p={p}, seq_len={seq_len}, "
                         f"A {tuple(A.shape)}, w {tuple(w.shape)}")
    T = seq_len
    x = 0.1 * torch.randn(n, T, d, generator=generator)
    g0 = 2.0 * torch.rand(n, d, generator=generator)
    g1 = g0 @ A + 0.1 * torch.randn(n, d, generator=generator)
    if p >= 1.0:
        geo = torch.ones(n, dtype=torch.long)
    else:
        u = torch.rand(n, generator=generator, dtype=torch.float64).clamp_min(1e-300)
        geo = 1 + torch.floor(torch.log(u) / math.log1p(-p)).long()
    distance = torch.clamp(geo + 1, max=T - 1)
    rows = torch.arange(n)
    x[rows, T - 1 - distance] = g0
    x[:, T - 1] = g1
    return x, g0 @ w, distance


# ------------------------------------------------------------------------------------ models
def _linear_init(seeds, rows: int, dim: int) -> torch.Tensor:
    """``(R, rows, dim)`` weights, run ``r`` drawn from its own seed with the default init of
    :class:`torch.nn.Linear` (``U(-1/sqrt(dim), 1/sqrt(dim))``)."""
    bound = 1.0 / math.sqrt(dim)
    return torch.stack([
        (2 * torch.rand(rows, dim, generator=torch.Generator().manual_seed(int(s))) - 1) * bound
        for s in seeds
    ])


def _project(x, weight, dim: int):
    """``x (R, N, T, d)`` through the runs' projections ``weight (R, 2d + 1, d)``: ``q, k``
    ``(R, N, T, d)`` and the scalar value ``v (R, N, T, 1)``."""
    return (x @ weight.mT.unsqueeze(1)).split([dim, dim, 1], dim=-1)


class MultihopTaskModel(nn.Module):
    """The models of the multihop task (see the module docs), ``R`` independent runs stacked:
    ``kind`` in :data:`MULTIHOP_KINDS`, run ``r`` initialised from ``seeds[r]``.

    Each run has the authors' one-head projection ``proj[r] (2d + 1, d)`` (queries, keys,
    a scalar value; no bias), and for ``softmax2`` a first layer ``first[r] (3d, d)``. Runs
    share no parameter, so summing their losses trains each exactly as alone (Adam and its
    weight decay act elementwise).

    ``forward(x (R, N, 5, d))`` returns the predictions ``(R, N)`` read at the last token;
    ``last_row(x)`` the last token's attention row ``(R, N, 5)`` (multihop: the row of ``M``;
    two layers: the second layer's row).

    Raises:
        ValueError: unknown ``kind`` or no seed.
    """

    def __init__(self, kind: str, dim: int = 3, seeds=(0,)) -> None:
        if kind not in MULTIHOP_KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {MULTIHOP_KINDS}")
        if not len(seeds):
            raise ValueError("seeds must name at least one run")
        super().__init__()
        self.kind, self.dim = kind, dim
        self.proj = nn.Parameter(_linear_init(seeds, 2 * dim + 1, dim))
        if kind == "softmax2":
            self.first = nn.Parameter(_linear_init([s + 10_000 for s in seeds], 3 * dim, dim))

    def _heads(self, x):
        if self.kind == "softmax2":
            q, k, v = (x @ self.first.mT.unsqueeze(1)).chunk(3, dim=-1)
            x = x + Fn.softmax_attention(q, k, v, validate_args=False)
        return _project(x, self.proj, self.dim)

    def forward(self, x):
        q, k, v = self._heads(x)
        if self.kind == "multihop":
            out = Fn.multihop_attention(q, k, v, validate_args=False)
        else:
            out = Fn.softmax_attention(q, k, v, validate_args=False)
        return out[..., -1, 0]

    @torch.no_grad()
    def last_row(self, x):
        """The last token's attention weights ``(R, N, 5)``."""
        q, k, v = self._heads(x)
        if self.kind == "multihop":
            _, M = Fn.multihop_attention(q, k, v, need_weights=True, validate_args=False)
            return M[..., -1, :]
        return Fn.softmax_log_weights(q, k, validate_args=False).exp()[..., -1, :]


class ExpandingTaskModel(nn.Module):
    """The models of the expanding task (see the module docs), ``R`` independent runs stacked:
    ``kind`` in :data:`EXPANDING_KINDS`, run ``r`` initialised from ``seeds[r]``.

    ``forward(x (R, 1, T, d))`` returns the predictions ``(R, 1)`` read at the last token
    and, for ``expanding``, sets :attr:`last` to ``(ceil(m) (R,), passes (R,))`` of the last
    token. The expanding runs start from the authors' prior ``alpha = 0.1``, ``beta = 0.9``,
    one pair per run (``log_alpha``, ``log_beta`` ``(R,)``: parameters with
    ``learn_prior``, else buffers).

    Raises:
        ValueError: unknown ``kind`` or no seed.
    """

    def __init__(self, kind: str, dim: int, seeds=(0,), *, learn_prior: bool = True) -> None:
        if kind not in EXPANDING_KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {EXPANDING_KINDS}")
        if not len(seeds):
            raise ValueError("seeds must name at least one run")
        super().__init__()
        self.kind, self.dim = kind, dim
        self.proj = nn.Parameter(_linear_init(seeds, 2 * dim + 1, dim))
        self.last = None
        if kind == "expanding":
            R = len(seeds)
            logs = (torch.full((R,), math.log(0.1)), torch.full((R,), math.log(0.9)))
            for name, t in zip(("log_alpha", "log_beta"), logs, strict=True):
                if learn_prior:
                    setattr(self, name, nn.Parameter(t))
                else:
                    self.register_buffer(name, t)

    def forward(self, x):
        q, k, v = _project(x, self.proj, self.dim)
        if self.kind == "expanding":
            # only the last token's query: the loop runs on (R, 1, 1, T), not (R, 1, T, T)
            out, (m, passes) = Fn.expanding_attention(
                q[..., -1:, :], k, v, alpha=self.log_alpha.exp()[:, None],
                beta=self.log_beta.exp()[:, None], need_window=True, validate_args=False)
            self.last = (torch.ceil(m[:, 0, -1].detach()), passes[:, 0, -1])
            return out[..., -1, 0]
        scores = (q[..., -1:, :] @ k[..., :-1, :].mT).squeeze(-2) / math.sqrt(self.dim)
        return (torch.softmax(scores, dim=-1).unsqueeze(-2) @ v[..., :-1, :])[..., 0, 0]


def relative_cost(window, passes, seq_len: int, dim: int) -> float:
    """The authors' relative cost of expanding attention (``expanding_figures.py``):
    ``mean_t[max(28, min(window_t, T)) (d + passes_t)] / (T d)``; full softmax attention is 1.

    Args:
        window: per-step window sizes ``ceil(m_t)`` (sequence of numbers).
        passes: per-step pass counts (the authors' loop index + 1).
        seq_len: ``T``; dim: ``d``.

    Returns:
        the relative cost (float).

    Raises:
        ValueError: empty or mismatched sequences.
    """
    window, passes = np.asarray(window, float), np.asarray(passes, float)
    if window.size == 0 or window.shape != passes.shape:
        raise ValueError("window and passes must be non-empty and of the same length")
    cost = np.maximum(28.0, np.minimum(window, seq_len)) * (dim + passes)
    return float(cost.mean() / (seq_len * dim))


# ---------------------------------------------------------------------------------- training
def _blocks(losses: np.ndarray, block: int) -> list[float]:
    n = len(losses) // block
    return losses[: n * block].reshape(n, block).mean(axis=1).tolist()


def _adam(model, lr, weight_decay):
    prior = [p for n, p in model.named_parameters() if n in ("log_alpha", "log_beta")]
    rest = [p for n, p in model.named_parameters() if n not in ("log_alpha", "log_beta")]
    groups = [{"params": rest, "weight_decay": weight_decay}]
    if prior:
        groups.append({"params": prior, "weight_decay": 0.0})
    return torch.optim.Adam(groups, lr=lr)


def train_multihop(kind: str, seeds, config: MultihopConfig = MultihopConfig()) -> list[dict]:
    """Train and evaluate one multihop-task model per seed (the runs stacked in one batch;
    each run sees its own task and data and is trained exactly as alone).

    Args:
        kind: one of :data:`MULTIHOP_KINDS`.
        seeds: the runs' seeds (task ``A``, ``w``, data, initialisation).
        config: :class:`MultihopConfig`.

    Returns:
        one record per seed ``{task, kind, seed, test_mse, var_y, rel_mse, tail_mse,
        attention {distractors, g0, g1, g2}, curve, block, steps, seconds, step_ms}``
        (``seconds``: the wall time of the stacked runs, shared).

    Raises:
        ValueError: unknown ``kind`` or no seed.
    """
    seeds = [int(s) for s in seeds]
    tasks = [MultihopTask(s) for s in seeds]
    model = MultihopTaskModel(kind, seeds=seeds)
    opt = _adam(model, config.lr, config.weight_decay)
    R, B = len(seeds), config.batch_size
    losses = np.empty((config.steps, R))
    chunk = 100
    start = time.perf_counter()
    for s0 in range(0, config.steps, chunk):
        n = min(chunk, config.steps - s0)
        batches = [t.sample(n * B) for t in tasks]
        xs = torch.stack([x.view(n, B, *x.shape[1:]) for x, _ in batches], dim=1)
        ys = torch.stack([y.view(n, B) for _, y in batches], dim=1)
        for i in range(n):
            opt.zero_grad(set_to_none=True)
            per_run = torch.mean((model(xs[i]) - ys[i]) ** 2, dim=-1)
            per_run.sum().backward()
            opt.step()
            losses[s0 + i] = per_run.detach().numpy()
    seconds = time.perf_counter() - start
    tests = [t.sample(config.test_size) for t in tasks]
    x_test = torch.stack([x for x, _ in tests])
    y_test = torch.stack([y for _, y in tests])
    with torch.no_grad():
        test_mse = torch.mean((model(x_test) - y_test) ** 2, dim=-1)
        rows = model.last_row(x_test).mean(1)
    records = []
    for r, seed in enumerate(seeds):
        var_y = float(y_test[r].var())
        row = rows[r]
        records.append({
            "task": "multihop", "kind": kind, "seed": seed, "test_mse": float(test_mse[r]),
            "var_y": var_y, "rel_mse": float(test_mse[r]) / var_y,
            "tail_mse": float(losses[-min(1000, config.steps):, r].mean()),
            "attention": {"distractors": float(row[:2].sum()), "g0": float(row[2]),
                          "g1": float(row[3]), "g2": float(row[4])},
            "curve": _blocks(losses[:, r], config.block), "block": config.block,
            "steps": config.steps, "seconds": seconds, "step_ms": 1e3 * seconds / config.steps,
            "stacked_runs": R,
        })
    return records


def train_expanding(kind: str, dim: int, runs, config: ExpandingConfig = ExpandingConfig()
                    ) -> list[dict]:
    """Train expanding-task models (batch 1 each), one per ``(seed, p)`` in ``runs``, stacked
    in one batch (each run sees its own task and data and is trained exactly as alone).

    Args:
        kind: one of :data:`EXPANDING_KINDS`.
        dim: ``d``.
        runs: ``(seed, p)`` pairs: the task's seed (and the initialisation's) and the
            geometric rate of the target's distance.
        config: :class:`ExpandingConfig`.

    Returns:
        one record per run ``{task, kind, dim, p, seed, tail_mse, var_y, rel_mse, window,
        window_tail, passes, cost, alpha?, beta?, curve, block, steps, seconds, step_ms}``
        (``window``, ``passes``: means over all steps; softmax: window ``T - 1``, cost 1).

    Raises:
        ValueError: unknown ``kind``, bad ``p``, no run.
    """
    runs = [(int(s), float(p)) for s, p in runs]
    T, steps = config.seq_len, config.steps
    tasks = [ExpandingTask(s, dim, p, T) for s, p in runs]
    model = ExpandingTaskModel(kind, dim, [s for s, _ in runs],
                               learn_prior=config.learn_prior)
    opt = _adam(model, config.lr, config.weight_decay)
    R = len(runs)
    losses, ys = np.empty((steps, R)), np.empty((steps, R))
    windows, passes = np.full((steps, R), T - 1.0), np.zeros((steps, R))
    expanding = kind == "expanding"
    chunk = 500
    start = time.perf_counter()
    for s0 in range(0, steps, chunk):
        n = min(chunk, steps - s0)
        batches = [t.sample(n) for t in tasks]
        xs = torch.stack([x for x, _, _ in batches], dim=1)  # (n, R, T, d)
        y = torch.stack([y for _, y, _ in batches], dim=1)   # (n, R)
        ys[s0:s0 + n] = y.numpy()
        for i in range(n):
            opt.zero_grad(set_to_none=True)
            per_run = (model(xs[i].unsqueeze(1))[:, 0] - y[i]) ** 2
            per_run.sum().backward()
            opt.step()
            losses[s0 + i] = per_run.detach().numpy()
            if expanding:
                windows[s0 + i] = model.last[0].numpy()
                passes[s0 + i] = model.last[1].numpy()
    seconds = time.perf_counter() - start
    tail = slice(steps - min(config.tail, steps), steps)
    records = []
    for r, (seed, p) in enumerate(runs):
        var_y = float(np.var(ys[:, r], ddof=1)) if steps > 1 else float("nan")
        record = {
            "task": "expanding", "kind": kind, "dim": dim, "p": p, "seed": seed,
            "tail_mse": float(losses[tail, r].mean()), "var_y": var_y,
            "rel_mse": float(losses[tail, r].mean()) / var_y,
            "window": float(windows[:, r].mean()), "window_tail": float(windows[tail, r].mean()),
            "passes": float(passes[:, r].mean()),
            "cost": relative_cost(windows[:, r], passes[:, r], T, dim) if expanding else 1.0,
            "curve": _blocks(losses[:, r], config.block), "block": config.block,
            "steps": steps, "seconds": seconds, "step_ms": 1e3 * seconds / steps,
            "stacked_runs": R,
        }
        if expanding:
            record["alpha"] = float(model.log_alpha.detach()[r].exp())
            record["beta"] = float(model.log_beta.detach()[r].exp())
        records.append(record)
    return records
