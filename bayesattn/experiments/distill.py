"""Policy distillation: attention students imitate an LQR expert on CartPole.

``bayesattn bench distill [--attention KIND[,KIND...]] [--seeds N] [--trajectories 1,2,5,10]``
distils the bang-bang LQR expert of :mod:`bayesattn.experiments.cartpole` (return 500, the
maximum, on every evaluation episode) into small sequence policies that see only the last
``T = 8`` observations, by default only the cart position and the pole angle, so that the
velocities must be inferred from the history. Each student (:class:`HistoryPolicy`) embeds the
``T`` observations, adds learned position embeddings, lets the newest step attend to the
history with one attention kind (:class:`bayesattn.experiments.heads.HeadAttention`), and
reads out two action logits. Garnelo & Czarnecki (2023, arXiv 2305.10203) test Intention on
policy distillation; this is a small, self-contained version of that use.

Two ways of collecting the labelled data, both with ``n`` trajectories of expert labels:

* behaviour cloning (BC): ``n`` expert episodes, every visited step labelled with the expert's
  action (Pomerleau 1991);
* DAgger (Ross, Gordon & Bagnell 2011, algorithm 1 with ``beta_1 = 1``, ``beta_i = 0`` after):
  one expert episode, then ``n - 1`` rounds each rolling out the current student for one
  episode, labelling the states it visits with the expert, aggregating and retraining (warm
  start). With ``n = 1`` DAgger is BC.

Training: cross-entropy, Adam, minibatches of 128, a fixed budget of gradient steps; 20 % of
the labelled steps (chosen at random) are held out and the weights with the lowest validation
loss (checked every 25 steps) are kept: the only tuning, on validation data. Evaluation: 100
episodes with fixed reset seeds (disjoint from the training seeds), greedy actions; the score
is the mean return over the expert's (500). Cost per step: median wall time of one policy
call on a single history (batch 1, no grad, one torch thread), in microseconds.

Outputs in ``DIR``: ``results.json`` (records ``{attention, method, trajectories, seed,
mean_return, sd_return, return_ratio, labelled_steps, train_seconds, us_per_step}`` plus the
expert's), ``results.md`` (mean +- sd over seeds), ``results.png`` (return ratio against the
number of trajectories, one panel per method). ``results.json`` is rewritten after every run.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..inference.threads import torch_threads
from ..io import OutputDir
from .cartpole import OBSERVATIONS, LQRExpert, lqr_gain, rollout, torch_policy
from .heads import HEAD_KINDS, HeadAttention

__all__ = ["DISTILL_KINDS", "DistillConfig", "HistoryPolicy", "train_policy", "run_one",
           "run_distill_bench", "summarize"]

#: attention kinds of the benchmark, in table order
DISTILL_KINDS = ("softmax", "linear", "least_squares", "softmax_least_squares", "kernel", "gp")
LABELS = {"softmax": "softmax", "linear": "linear (elu+1)", "least_squares": "least-squares",
          "softmax_least_squares": "softmax-Intention", "kernel": "kernel (Gaussian NW)",
          "gp": "GP (RBF)"}
METHODS = ("bc", "dagger")
EVAL_SEED0 = 100_000  # evaluation episodes use reset seeds EVAL_SEED0 .. EVAL_SEED0 + 99


@dataclass(frozen=True)
class DistillConfig:
    """Settings of every run.

    Attributes:
        history: observations per history ``T``.
        observe: ``"positions"`` (x, theta) or ``"full"`` (the 4-d state).
        d_model, nhead: student sizes (one attention block, feed-forward width ``2 d_model``).
        steps: gradient steps of a fit from scratch (BC, and DAgger's first round).
        dagger_steps: gradient steps of each later DAgger round (warm start).
        batch_size, lr: Adam minibatch size and step size.
        val_fraction: share of labelled steps held out for choosing the weights.
        eval_episodes: evaluation episodes.
        threads: torch threads.
    """

    history: int = 8
    observe: str = "positions"
    d_model: int = 16
    nhead: int = 2
    steps: int = 250
    dagger_steps: int = 50
    batch_size: int = 128
    lr: float = 3e-3
    val_fraction: float = 0.2
    eval_episodes: int = 100
    threads: int = 1


class HistoryPolicy(nn.Module):
    """A sequence policy: the newest observation attends to the last ``T`` observations.

    ``h_t = W_in ((o_t - mu) / sigma) + p_t`` for the ``T`` steps (learned positions ``p``);
    ``z = h_T + Attn(LN(h_T), LN(h_{1..T}))``; ``z = z + FF(LN(z))``; logits ``W_out LN(z)``
    (a pre-norm Transformer block with one query, Vaswani et al. 2017).

    Args:
        in_features: ``F``, features per observation.
        history: ``T``.
        attention: one of :data:`bayesattn.experiments.heads.HEAD_KINDS`.
        d_model, nhead: sizes.
        num_actions: number of discrete actions.
        obs_mean, obs_std: ``(F,)`` input standardisation (default 0 and 1).

    Raises:
        ValueError: non-positive sizes; unknown ``attention``.
    """

    def __init__(self, in_features: int, history: int, attention: str, *, d_model: int = 16,
                 nhead: int = 2, num_actions: int = 2, obs_mean=None, obs_std=None) -> None:
        for name, val in (("in_features", in_features), ("history", history),
                          ("d_model", d_model), ("num_actions", num_actions)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        super().__init__()
        mean = torch.zeros(in_features) if obs_mean is None else torch.as_tensor(obs_mean)
        std = torch.ones(in_features) if obs_std is None else torch.as_tensor(obs_std)
        self.register_buffer("obs_mean", mean.float().clone())
        self.register_buffer("obs_std", std.float().clone())
        self.embed = nn.Linear(in_features, d_model)
        self.pos = nn.Parameter(0.1 * torch.randn(history, d_model))
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(d_model)
        self.attn = HeadAttention(d_model, nhead, attention)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(),
                                nn.Linear(2 * d_model, d_model))
        self.norm_out = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_actions)

    def forward(self, histories: torch.Tensor) -> torch.Tensor:
        """Action logits ``(N, A)`` from ``histories (N, T, F)`` (oldest first).

        Raises:
            ValueError: ``histories`` not of shape ``(N, T, F)``.
        """
        if histories.dim() != 3 or histories.shape[1:] != (self.pos.shape[0],
                                                          self.obs_mean.shape[0]):
            raise ValueError(f"histories must be (N, {self.pos.shape[0]}, "
                             f"{self.obs_mean.shape[0]}), got {tuple(histories.shape)}")
        h = self.embed((histories - self.obs_mean) / self.obs_std) + self.pos
        z = h[:, -1:]
        z = z + self.attn(self.norm_q(z), self.norm_kv(h))[0]
        z = z + self.ff(self.norm_ff(z))
        return self.head(self.norm_out(z[:, 0]))


def train_policy(model: HistoryPolicy, x: torch.Tensor, y: torch.Tensor, *, steps: int,
                 config: DistillConfig, generator: torch.Generator) -> float:
    """Fit ``model`` to labelled histories by cross-entropy; keep the best-on-validation weights.

    A random ``config.val_fraction`` of the rows (at least one) is held out; the weights are
    those with the lowest validation loss among checks every 25 steps and at the end.

    Args:
        model: the policy (trained in place).
        x: ``(N, T, F)`` histories; y: ``(N,)`` int64 expert actions.
        steps: Adam steps.
        config: batch size, step size and validation share.
        generator: seeds the split and the minibatches.

    Returns:
        the best validation loss (nats per step).

    Raises:
        ValueError: fewer than 2 rows, or non-positive ``steps``.
    """
    n = x.shape[0]
    if n < 2 or steps < 1:
        raise ValueError(f"need at least 2 labelled steps and steps >= 1, got {n}, {steps}")
    perm = torch.randperm(n, generator=generator)
    n_val = max(1, int(round(config.val_fraction * n)))
    val, tr = perm[:n_val], perm[n_val:]
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = float(F.cross_entropy(model(x[val]), y[val]))
        model.train()
        return loss

    best, best_state = val_loss(), copy.deepcopy(model.state_dict())
    model.train()
    for step in range(1, steps + 1):
        idx = tr[torch.randint(len(tr), (min(config.batch_size, len(tr)),), generator=generator)]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == steps:
            current = val_loss()
            if current < best:
                best, best_state = current, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return best


def us_per_step(model: nn.Module, history: int, features: int, *, calls: int = 100,
                repeats: int = 5) -> float:
    """CPU time (µs) of one policy call on one history (batch 1, no grad, eval mode).

    Process CPU time (:func:`time.process_time`), not wall time, so that other jobs on a
    shared machine do not count; with one torch thread it is the work of the call. The best
    of ``repeats`` means over ``calls`` calls (as :mod:`timeit` advises).
    """
    x = torch.randn(1, history, features)
    was_training = model.training
    model.eval()
    best = math.inf
    with torch.no_grad():
        for _ in range(10):
            model(x)
        for _ in range(repeats):
            start = time.process_time()
            for _ in range(calls):
                model(x)
            best = min(best, (time.process_time() - start) / calls)
    model.train(was_training)
    return 1e6 * best


def _expert_data(expert, seeds, config):
    r = rollout(lambda h, s: expert(s), seeds, history=config.history, observe=config.observe)
    return r.histories, expert(r.states)


def run_one(kind: str, method: str, trajectories: int, seed: int, expert: LQRExpert,
            config: DistillConfig) -> dict:
    """Distil the expert into one student and evaluate it.

    Training episodes use reset seeds ``1000 seed + i``; evaluation episodes
    ``EVAL_SEED0 + j``, ``j < config.eval_episodes``.

    Raises:
        ValueError: unknown ``kind`` or ``method``; ``trajectories < 1``.
    """
    if kind not in HEAD_KINDS or method not in METHODS or trajectories < 1:
        raise ValueError(f"bad run ({kind!r}, {method!r}, {trajectories})")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    base = 1000 * seed
    start = time.perf_counter()
    n_first = trajectories if method == "bc" else 1
    xs, ys = _expert_data(expert, [base + i for i in range(n_first)], config)
    mean = xs.reshape(-1, xs.shape[-1]).mean(0)
    std = xs.reshape(-1, xs.shape[-1]).std(0) + 1e-6
    model = HistoryPolicy(xs.shape[-1], config.history, kind, d_model=config.d_model,
                          nhead=config.nhead, obs_mean=mean, obs_std=std)
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    val = train_policy(model, x, y, steps=config.steps, config=config, generator=gen)
    for i in range(n_first, trajectories):  # DAgger rounds
        r = rollout(torch_policy(model), [base + i], history=config.history,
                    observe=config.observe)
        x = torch.cat([x, torch.from_numpy(r.histories)])
        y = torch.cat([y, torch.from_numpy(expert(r.states))])
        val = train_policy(model, x, y, steps=config.dagger_steps, config=config, generator=gen)
    train_seconds = time.perf_counter() - start
    ev = rollout(torch_policy(model), [EVAL_SEED0 + j for j in range(config.eval_episodes)],
                 history=config.history, observe=config.observe, record=False)
    return {"attention": kind, "method": method, "trajectories": trajectories, "seed": seed,
            "mean_return": float(ev.returns.mean()), "sd_return": float(ev.returns.std()),
            "return_ratio": float(ev.returns.mean()) / 500.0, "labelled_steps": int(len(y)),
            "validation_loss": val, "train_seconds": train_seconds,
            "us_per_step": us_per_step(model, config.history, xs.shape[-1])}


def _run_key(r: dict) -> tuple:
    return r["attention"], r["method"], r["trajectories"], r["seed"]


def summarize(records: list[dict]) -> list[dict]:
    """Mean and sample sd over seeds of the return ratio, per (kind, method, trajectories)."""
    rows = []
    keys = sorted({(r["attention"], r["method"], r["trajectories"]) for r in records},
                  key=lambda k: (DISTILL_KINDS.index(k[0]) if k[0] in DISTILL_KINDS else 99,
                                 METHODS.index(k[1]), k[2]))
    for kind, method, n in keys:
        rs = [r for r in records if (r["attention"], r["method"], r["trajectories"])
              == (kind, method, n)]
        row = {"attention": kind, "method": method, "trajectories": n, "seeds": len(rs)}
        for key in ("return_ratio", "us_per_step", "train_seconds"):
            vals = [r[key] for r in rs]
            row[key] = statistics.fmean(vals)
            row[key + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def _cell(row: dict, seeds: int) -> str:
    """``mean +- sd``, or the mean with its seed count when fewer seeds finished."""
    if row["seeds"] == 1 < seeds:
        return f"{row['return_ratio']:.3f} (1 seed)"
    text = f"{row['return_ratio']:.3f} +- {row['return_ratio_sd']:.3f}"
    return text if row["seeds"] == seeds else f"{text} ({row['seeds']} seeds)"


def _table(records, expert_record, config, wall, counts, seeds, costs) -> str:
    rows = summarize(records)
    kinds = [k for k in DISTILL_KINDS if any(r["attention"] == k for r in rows)]
    lines = [
        "# Policy distillation on CartPole-v1: attention students of an LQR expert",
        "",
        f"Expert (bang-bang LQR, full state): mean return {expert_record['mean_return']:.1f} "
        f"over {config.eval_episodes} episodes ({expert_record['us_per_step']:.1f} µs a step). "
        f"Students see the last {config.history} observations ({config.observe}: "
        f"{'x, theta' if config.observe == 'positions' else 'x, xdot, theta, thetadot'}, "
        "and the previous action). "
        f"Cells: mean return over {config.eval_episodes} evaluation episodes / expert return, "
        f"mean +- sd over {seeds} seed(s), against the number of expert-labelled "
        "trajectories.",
        "",
    ]
    for method in METHODS:
        if not any(r["method"] == method for r in rows):
            continue
        lines += [f"## {'behaviour cloning' if method == 'bc' else 'DAgger'}", "",
                  "| attention | " + " | ".join(f"n = {n}" for n in counts)
                  + " | µs / step (one thread) |",
                  "|---|" + "---|" * (len(counts) + 1)]
        for kind in kinds:
            cells = []
            for n in counts:
                match = [r for r in rows if (r["attention"], r["method"], r["trajectories"])
                         == (kind, method, n)]
                cells.append(_cell(match[0], seeds) if match else "-")
            lines.append(f"| {LABELS[kind]} | " + " | ".join(cells) + f" | {costs[kind]:.0f} |")
        lines.append("")
    lines += [
        "Time summed over the runs: "
        f"{sum(r['train_seconds'] for r in records if 'same_as' not in r) / 60:.0f} min of "
        f"training wall clock (this invocation: {wall / 60:.1f} min) on {platform.machine()} "
        f"CPU with {config.threads} torch thread(s), torch {torch.__version__}. The µs / step "
        "column: "
        "process CPU time of one policy call on one history (batch 1, no grad, one torch "
        "thread), the best of 5 means over 100 calls, all kinds measured one after another "
        "at the end of the run.",
        "",
        "Settings: " + json.dumps(asdict(config), sort_keys=True),
        "",
    ]
    return "\n".join(lines)


def _plot(records, counts, out, name):
    from matplotlib.figure import Figure

    rows = summarize(records)
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    fig = Figure(figsize=(5.2 * len(methods) + 0.5, 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(methods), sharey=True))
    for ax, method in zip(axes, methods, strict=True):
        for i, kind in enumerate(DISTILL_KINDS):
            rs = [r for r in rows if r["attention"] == kind and r["method"] == method]
            if not rs:
                continue
            ns = np.array([r["trajectories"] for r in rs], float)
            m = np.array([r["return_ratio"] for r in rs])
            s = np.array([r["return_ratio_sd"] for r in rs])
            ax.plot(ns, m, "o-", color=f"C{i}", label=LABELS[kind])
            ax.fill_between(ns, m - s, m + s, color=f"C{i}", alpha=0.15)
        ax.axhline(1.0, color="0.4", ls="--", lw=1, label="expert (LQR)")
        ax.set_xscale("log")
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.minorticks_off()
        ax.set_xlabel("expert-labelled trajectories")
        ax.set_title("behaviour cloning" if method == "bc" else "DAgger")
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("student return / expert return")
    axes[-1].legend(fontsize=8, loc="lower right")
    out.savefig(name, fig, dpi=120)


def run_distill_bench(out, *, attention=None, methods=METHODS, trajectories=(1, 2, 5, 10),
                      seeds: int = 3, first_seed: int = 0, config: DistillConfig | None = None,
                      resume=(), train: bool = True, notes: str = "",
                      progress: bool = True) -> dict:
    """Run the benchmark; write ``results.json`` (after every run), ``results.md``, ``results.png``.

    Args:
        out: output folder or :class:`bayesattn.io.OutputDir`.
        attention: kinds (default :data:`DISTILL_KINDS`).
        methods: subset of ``("bc", "dagger")``.
        trajectories: numbers of expert-labelled trajectories.
        seeds: how many seeds; first_seed: the first (seeds ``first_seed ..``).
        config: :class:`DistillConfig`.
        resume: ``results.json`` files of earlier runs with the same settings (an interrupted
            run, other seeds run in parallel): their records are kept and their runs skipped;
            the tables cover every record (also of trajectory counts not asked for now).
        train: run the missing runs (False: only write the outputs of the ``resume`` records)
        notes: a paragraph added to ``results.md`` (e.g. how the run was cut to fit).
        progress: print a line per run.

    Returns:
        ``{"expert": record, "records": [...], "config": {...}}`` as in ``results.json``.

    Raises:
        bayesattn.errors.UsageError: unknown kind or method, ``seeds < 1``, bad
            trajectory counts, a resume file with other settings.
    """
    from ..errors import UsageError

    config = config or DistillConfig()
    kinds = list(attention or DISTILL_KINDS)
    bad = [k for k in kinds if k not in HEAD_KINDS]
    if bad or not kinds:
        raise UsageError(f"unknown attention kind(s) {bad}; expected some of {HEAD_KINDS}")
    if not methods or any(m not in METHODS for m in methods):
        raise UsageError(f"methods must be some of {METHODS}, got {methods}")
    if not (isinstance(seeds, int) and seeds >= 1 and first_seed >= 0):
        raise UsageError(f"--seeds must be positive and --first-seed >= 0, got {seeds}, "
                         f"{first_seed}")
    counts = sorted(set(trajectories))
    if not counts or counts[0] < 1:
        raise UsageError(f"--trajectories must be positive integers, got {trajectories}")
    if config.observe not in OBSERVATIONS:
        raise UsageError(f"observe must be one of {sorted(OBSERVATIONS)}")
    if not isinstance(out, OutputDir):
        Path(out).mkdir(parents=True, exist_ok=True)
        out = OutputDir.plain(out)
    records = []
    for path in [resume] if isinstance(resume, str | Path) else resume:
        previous = json.loads(Path(path).read_text())
        if previous.get("config") != asdict(config):
            raise UsageError(f"{path}: its settings differ from this run's")
        have = {_run_key(r) for r in records}
        records += [r for r in previous["records"]
                    if _run_key(r) not in have and "same_as" not in r]
    done = {_run_key(r) for r in records}
    start = time.perf_counter()
    with torch_threads(config.threads):
        import gymnasium as gym

        env = gym.make("CartPole-v1")
        expert = LQRExpert(lqr_gain(env))
        env.close()
        ev = rollout(lambda h, s: expert(s),
                     [EVAL_SEED0 + j for j in range(config.eval_episodes)], record=False)
        states = np.random.default_rng(0).normal(size=(300, 4))
        t = []
        for s in states:
            t0 = time.process_time()
            expert(s[None])
            t.append(time.process_time() - t0)
        expert_record = {"mean_return": float(ev.returns.mean()),
                         "sd_return": float(ev.returns.std()),
                         "gain": expert.gain.tolist(), "us_per_step": 1e6 * statistics.median(t)}
        results = {"expert": expert_record, "config": asdict(config), "records": records}
        runs = [(k, m, n, s) for s in range(first_seed, first_seed + seeds)
                for n in counts for m in methods
                for k in kinds if not (m == "dagger" and n == 1)]
        for kind, method, n, seed in runs:
            if (kind, method, n, seed) in done or not train:
                continue
            rec = run_one(kind, method, n, seed, expert, config)
            records.append(rec)
            out.write_text("results.json", json.dumps(results, indent=1) + "\n")
            if progress:
                print(f"{kind:>22} {method:>6} n={n:<3} seed={seed} ratio={rec['return_ratio']:.3f}"
                      f" train={rec['train_seconds']:.1f}s {rec['us_per_step']:.0f}us", flush=True)
    # DAgger with one trajectory is BC: report the BC runs under both methods
    for r in [r for r in records if r["method"] == "bc" and r["trajectories"] == 1]:
        if "dagger" in methods and not any(
            (q["attention"], q["method"], q["trajectories"], q["seed"])
            == (r["attention"], "dagger", 1, r["seed"]) for q in records
        ):
            records.append({**r, "method": "dagger", "same_as": "bc"})
    out.write_text("results.json", json.dumps(results, indent=1) + "\n")
    wall = time.perf_counter() - start
    counts = sorted({r["trajectories"] for r in records})
    n_seeds = len({r["seed"] for r in records})
    kinds_run = [k for k in DISTILL_KINDS if any(r["attention"] == k for r in records)]
    with torch_threads(config.threads):
        F = len(OBSERVATIONS[config.observe]) + 1  # observed components, previous action
        costs = {k: us_per_step(HistoryPolicy(F, config.history, k, d_model=config.d_model,
                                              nhead=config.nhead), config.history, F)
                 for k in kinds_run}
    results["cost_us_per_step"] = costs
    out.write_text("results.json", json.dumps(results, indent=1) + "\n")
    text = _table(records, expert_record, config, wall, counts, n_seeds, costs)
    out.write_text("results.md", text + (f"\n{notes.strip()}\n" if notes.strip() else ""))
    _plot(records, counts, out, "results.png")
    if progress:
        print((out / "results.md").read_text())
    return results


# -- ``bayesattn bench distill`` (see bayesattn.experiments.benches)

HELP = "distil an LQR CartPole expert into attention policies (BC and DAgger)"


def add_arguments(parser) -> None:
    """Options of ``bayesattn bench distill`` beside the common ones."""
    parser.add_argument("--attention", default=None,
                        help=f"comma-separated kinds (default {','.join(DISTILL_KINDS)})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--methods", default="bc,dagger", help="bc, dagger or both (default)")
    parser.add_argument("--trajectories", default="1,2,5,10",
                        help="comma-separated numbers of expert trajectories (default 1,2,5,10)")
    parser.add_argument("--observe", default="positions", choices=sorted(OBSERVATIONS),
                        help="what students see (default positions: x and theta)")
    parser.add_argument("--resume", default=None,
                        help="comma-separated results.json files of earlier runs to continue")
    parser.add_argument("--notes", default="", help="a paragraph added to results.md")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the tables and plots of the --resume files")


def run(args, out) -> None:
    """Run ``bayesattn bench distill`` into the claimed output folder ``out``.

    Raises:
        UsageError: ``--trajectories`` not a comma-separated list of integers, and the option
            errors of :func:`run_distill_bench`.
    """
    from ..errors import UsageError

    kinds = [k.strip() for k in args.attention.split(",") if k.strip()] if args.attention else None
    try:
        counts = [int(c) for c in args.trajectories.split(",") if c.strip()]
    except ValueError:
        raise UsageError(f"--trajectories must be integers, got {args.trajectories!r}") from None
    config = DistillConfig(observe=args.observe)
    seeds = args.seeds
    if args.quick:
        config = DistillConfig(observe=args.observe, steps=30, dagger_steps=10, eval_episodes=3,
                               d_model=8)
        kinds, counts, seeds = kinds or ["softmax", "gp"], [1, 2], 1
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    run_distill_bench(out, attention=kinds, methods=methods, trajectories=counts, seeds=seeds,
                      first_seed=args.first_seed, config=config,
                      resume=[p for p in (args.resume or "").split(",") if p],
                      train=not args.report_only, notes=args.notes)
