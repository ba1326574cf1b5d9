"""The UEA benchmark: one small Transformer classifier, every attention kind, JapaneseVowels.

``bayesattn bench uea [--attention KIND[,KIND...]] [--seeds N] [--epochs N] [--out DIR]``
trains the same classifier (:class:`bayesattn.nn.TransformerClassifier`: linear embedding,
sinusoidal positions, 2 pre-norm encoder layers with ``d_model = 64``, 4 heads, masked mean
pooling) with each attention kind on the 270 training utterances of JapaneseVowels
(:func:`bayesattn.data.japanese_vowels.load_japanese_vowels`, features standardised with the
training statistics) and evaluates it on the 370 test utterances. The Bayesian kind is
:class:`bayesattn.nn.bayesian.BayesianTransformerClassifier` fitted by SVI and evaluated by its
Monte-Carlo posterior predictive mean.

Outputs in ``DIR``:

* ``results.json``: a list of records ``{attention, seed, accuracy, nll, ece, train_seconds,
  predict_seconds, epochs}`` (accuracy in [0, 1], NLL in nats per test utterance, ECE with 15
  equal-width bins; Bayesian records add the mean predictive entropy and mutual information);
* ``results.md``: mean +- sd over seeds per kind, with the settings and the measured wall time;
* ``results.png``: accuracy per kind, NLL and ECE per kind, and the reliability diagram of
  the softmax and Bayesian models (pooled over seeds);
* ``predictions.npz``: the test-set class probabilities of every run.

Published reference for the softmax Transformer on this split: about 98.4-98.7 % test accuracy
(Nguyen et al., ICLR 2023, arXiv 2406.13781; docs/design.md section 4).
"""

from __future__ import annotations

import functools
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.japanese_vowels import load_japanese_vowels
from ..io import OutputDir
from ..nn.metrics import (
    accuracy,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_curve,
)
from ..nn.training import predict_proba, train_classifier
from ..nn.transformer import TransformerClassifier

__all__ = ["UEA_KINDS", "LABELS", "BenchConfig", "run_one", "run_uea_bench", "summarize"]

#: Attention kinds of the benchmark, in table order.
UEA_KINDS = ("softmax", "bn", "sh", "bn_sh", "kernel", "least_squares", "linear", "bayesian")
#: Display names.
LABELS = {
    "softmax": "softmax",
    "bn": "Attention-BN",
    "sh": "Attention-SH",
    "bn_sh": "Attention-BN+SH",
    "kernel": "kernel (Gaussian NW)",
    "least_squares": "least-squares",
    "linear": "linear (elu+1)",
    "bayesian": "Bayesian (BAM, SVI)",
}
_ALIASES = {"least-squares": "least_squares", "bn+sh": "bn_sh", "bn-sh": "bn_sh",
            "attention-bn": "bn", "attention-sh": "sh", "ls": "least_squares"}


@dataclass(frozen=True)
class BenchConfig:
    """Settings shared by every run (the defaults are those of the published table).

    Attributes:
        d_model, nhead, num_layers, dim_feedforward, dropout: classifier sizes.
        batch_size, lr, weight_decay: optimisation (AdamW + one-cycle; SVI uses Adam).
        epochs: epochs of the deterministic kinds.
        bayes_epochs: epochs of the Bayesian kind.
        mc_samples: Monte-Carlo draws of the Bayesian predictive.
        bayes_options: keyword arguments of the Bayesian classifier (default: its defaults).
        svi_options: keyword arguments of :func:`bayesattn.nn.bayesian.train_svi`.
        threads: torch CPU threads during the run (restored afterwards).
    """

    d_model: int = 64
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 128
    dropout: float = 0.1
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    epochs: int = 40
    bayes_epochs: int = 60
    mc_samples: int = 32
    bayes_options: dict = field(default_factory=dict)
    svi_options: dict = field(default_factory=lambda: {"init_scale": 0.01})
    threads: int = 1


def _resolve_kinds(attention):
    from ..errors import UsageError

    if attention is None:
        return list(UEA_KINDS)
    kinds = []
    for raw in attention:
        kind = _ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if kind not in UEA_KINDS:
            raise UsageError(
                f"unknown attention kind {raw!r}; expected one of {', '.join(UEA_KINDS)}"
            )
        if kind not in kinds:
            kinds.append(kind)
    if not kinds:
        raise UsageError("--attention lists no kind")
    return kinds


@functools.lru_cache(maxsize=1)
def _load_data():
    data = load_japanese_vowels()
    mean, std = data.train.feature_mean_std()
    return data.train.standardized(mean, std), data.test.standardized(mean, std)


def run_one(kind: str, seed: int, train, test, config: BenchConfig, *, epochs: int | None = None):
    """Train and evaluate one kind with one seed.

    Args:
        kind: one of :data:`UEA_KINDS`.
        seed: seeds torch (and Pyro) before the model is built.
        train, test: :class:`bayesattn.data.japanese_vowels.SequenceSplit`.
        config: :class:`BenchConfig`.
        epochs: override of the configured epochs.

    Returns:
        ``(record, probs)``: the result record and the test probabilities ``(N, C)``.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind not in UEA_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(UEA_KINDS)}")
    F, C = train.x.shape[-1], int(train.y.max()) + 1
    sizes = {"d_model": config.d_model, "nhead": config.nhead, "num_layers": config.num_layers,
             "dim_feedforward": config.dim_feedforward, "dropout": config.dropout}
    extra = {}
    if kind == "bayesian":
        import pyro

        from ..nn.bayesian import BayesianTransformerClassifier, predict_bayesian, train_svi

        n_epochs = epochs or config.bayes_epochs
        pyro.set_rng_seed(seed)
        model = BayesianTransformerClassifier(F, C, **sizes, **config.bayes_options)
        start = time.perf_counter()
        guide, _ = train_svi(model, train.x, train.padding_mask, train.y, epochs=n_epochs,
                             batch_size=config.batch_size, lr=config.lr, seed=seed,
                             progress=False, **config.svi_options)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        pred = predict_bayesian(model, guide, test.x, test.padding_mask,
                                num_samples=config.mc_samples)
        predict_seconds = time.perf_counter() - start
        probs = pred["probs"]
        extra = {
            "mean_predictive_entropy": float(pred["predictive_entropy"].mean()),
            "mean_mutual_information": float(pred["mutual_information"].mean()),
            "mc_samples": config.mc_samples,
        }
    else:
        n_epochs = epochs or config.epochs
        torch.manual_seed(seed)
        model = TransformerClassifier(F, C, attention=kind, **sizes)
        start = time.perf_counter()
        train_classifier(model, train.x, train.padding_mask, train.y, epochs=n_epochs,
                         batch_size=config.batch_size, lr=config.lr,
                         weight_decay=config.weight_decay, seed=seed, progress=False)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        probs = predict_proba(model, test.x, test.padding_mask)
        predict_seconds = time.perf_counter() - start
    record = {
        "attention": kind,
        "seed": seed,
        "accuracy": accuracy(probs, test.y),
        "nll": negative_log_likelihood(probs, test.y),
        "ece": expected_calibration_error(probs, test.y),
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "epochs": n_epochs,
        **extra,
    }
    return record, probs


def _run_task(payload):
    """One run of the benchmark in a worker: ``payload = (kind, seed, epochs, config)``."""
    kind, seed, epochs, config = payload
    train, test = _load_data()
    return run_one(kind, seed, train, test, config, epochs=epochs)


def summarize(records: list[dict]) -> list[dict]:
    """Mean and sample sd (0 for one seed) per kind of accuracy, nll, ece and train_seconds."""
    rows = []
    kinds = [k for k in UEA_KINDS if any(r["attention"] == k for r in records)]
    for kind in kinds:
        rs = [r for r in records if r["attention"] == kind]
        row = {"attention": kind, "seeds": len(rs)}
        for key in ("accuracy", "nll", "ece", "train_seconds"):
            vals = [r[key] for r in rs]
            row[key] = statistics.fmean(vals)
            row[key + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def _table(records, config, wall_seconds, kinds, seeds) -> str:
    rows = summarize(records)
    lines = [
        "# UEA JapaneseVowels: one Transformer classifier, every attention kind",
        "",
        f"Test set: 370 utterances (train 270). Mean +- sd over {seeds} seed(s). "
        "Accuracy in %, NLL in nats per utterance, ECE with 15 equal-width bins, "
        "train time in seconds (wall clock).",
        "",
        "| attention | accuracy (%) | NLL | ECE | train s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {LABELS[r['attention']]} | {100 * r['accuracy']:.2f} +- "
            f"{100 * r['accuracy_sd']:.2f} | {r['nll']:.4f} +- {r['nll_sd']:.4f} | "
            f"{r['ece']:.4f} +- {r['ece_sd']:.4f} | {r['train_seconds']:.1f} +- "
            f"{r['train_seconds_sd']:.1f} |"
        )
    lines += [
        "",
        f"Whole run: {wall_seconds / 60:.1f} min wall clock for {len(kinds)} kind(s) x {seeds} "
        f"seed(s) on {platform.machine()} CPU with {config.threads} torch thread(s), "
        f"torch {torch.__version__}.",
        "",
        "Settings: " + json.dumps(asdict(config), sort_keys=True),
        "",
        "Published softmax Transformer on this split: about 98.4-98.7 % "
        "(Nguyen et al., ICLR 2023).",
        "",
    ]
    return "\n".join(lines)


def _plot(records, probs_by_run, y_test, out, name: str) -> None:
    from matplotlib.figure import Figure

    rows = summarize(records)
    names = [LABELS[r["attention"]] for r in rows]
    xs = np.arange(len(rows))
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    ax_acc, ax_cal, ax_rel = fig.subplots(1, 3)
    for i, r in enumerate(rows):
        pts = [100 * rec["accuracy"] for rec in records if rec["attention"] == r["attention"]]
        ax_acc.scatter(np.full(len(pts), i), pts, s=12, color="0.4", zorder=3)
    ax_acc.bar(xs, [100 * r["accuracy"] for r in rows],
               yerr=[100 * r["accuracy_sd"] for r in rows], color="C0", alpha=0.7, capsize=3)
    ax_acc.axhspan(98.4, 98.7, color="C2", alpha=0.25, label="published softmax (98.4-98.7)")
    low = min(100 * rec["accuracy"] for rec in records)
    ax_acc.set_ylim(max(0.0, min(low, 97.0) - 1.5), 100.0)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("accuracy (mean +- sd, dots = seeds)")
    ax_acc.legend(loc="lower left", fontsize=8)
    width = 0.4
    ax_cal.bar(xs - width / 2, [r["nll"] for r in rows], width, yerr=[r["nll_sd"] for r in rows],
               color="C1", capsize=3, label="NLL (nats)")
    ax_ece = ax_cal.twinx()
    ax_ece.bar(xs + width / 2, [r["ece"] for r in rows], width,
               yerr=[r["ece_sd"] for r in rows], color="C3", capsize=3, label="ECE")
    ax_cal.set_ylabel("test NLL (nats)")
    ax_ece.set_ylabel("ECE (15 bins)")
    ax_cal.set_title("calibration (lower is better)")
    handles = ax_cal.get_legend_handles_labels()[0] + ax_ece.get_legend_handles_labels()[0]
    ax_cal.legend(handles, ["NLL", "ECE"], loc="upper left", fontsize=8)
    for ax in (ax_acc, ax_cal):
        ax.set_xticks(xs, names, rotation=35, ha="right", fontsize=8)
    ax_rel.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1)
    for kind, color in (("softmax", "C0"), ("bayesian", "C3")):
        runs = [p for (k, _), p in probs_by_run.items() if k == kind]
        if not runs:
            continue
        probs = torch.cat(runs)
        y = y_test.repeat(len(runs))
        curve = reliability_curve(probs, y, n_bins=10)
        ok = curve.count > 0
        ax_rel.plot(curve.confidence[ok], curve.accuracy[ok], "-", color=color, lw=1, alpha=0.6)
        pooled = expected_calibration_error(probs, y)
        ax_rel.scatter(curve.confidence[ok], curve.accuracy[ok], s=8 + 4 * curve.count[ok].sqrt(),
                       color=color, alpha=0.8, label=f"{LABELS[kind]} (pooled ECE {pooled:.4f})")
    ax_rel.set_xlim(0, 1)
    ax_rel.set_ylim(0, 1.02)
    ax_rel.set_xlabel("confidence (top-class probability)")
    ax_rel.set_ylabel("accuracy")
    ax_rel.set_title("reliability (10 bins, all seeds; area ~ count)")
    ax_rel.legend(loc="lower right", fontsize=8)
    out.savefig(name, fig, dpi=120)


def run_uea_bench(
    out: Path,
    *,
    attention: list[str] | None = None,
    seeds: int = 3,
    epochs: int | None = None,
    config: BenchConfig | None = None,
    progress: bool = True,
    backend: str = "serial",
    workers: int | None = None,
    address: str | None = None,
) -> list[dict]:
    """Run the benchmark and write ``results.json``, ``results.md``, ``results.png`` to ``out``.

    Args:
        out: output folder (created if missing) or a :class:`bayesattn.io.OutputDir`; every
            file is written atomically.
        attention: kinds to run (default all of :data:`UEA_KINDS`; hyphenated aliases such as
            ``least-squares`` are accepted).
        seeds: seeds ``0..seeds-1`` per kind.
        epochs: override the epochs of every kind (default: :class:`BenchConfig`).
        config: settings (default :class:`BenchConfig`).
        progress: show a tqdm bar over runs.
        backend, workers, address: where the runs (kind x seed) go
            (:func:`bayesattn.experiments.backends.run_tasks`): ``"serial"`` (one after the
            other here), ``"process"`` (a local process pool) or ``"ray"``. Each run seeds
            itself and uses ``config.threads`` torch threads, so the records are the same on
            every backend (the timings aside).

    Returns:
        the list of result records (as in ``results.json``), in the order kind, seed.

    Raises:
        bayesattn.errors.UsageError: unknown kind, ``seeds < 1`` or ``epochs < 1``; a bad
            backend option (see :func:`~bayesattn.experiments.backends.run_tasks`); a run
            failed (the others are finished and written first).
    """
    from ..errors import UsageError

    kinds = _resolve_kinds(attention)
    if not (isinstance(seeds, int) and seeds >= 1):
        raise UsageError(f"--seeds must be a positive integer, got {seeds}")
    if epochs is not None and not (isinstance(epochs, int) and epochs >= 1):
        raise UsageError(f"--epochs must be a positive integer, got {epochs}")
    config = config or BenchConfig()
    if not isinstance(out, OutputDir):
        Path(out).mkdir(parents=True, exist_ok=True)
        out = OutputDir.plain(out)
    from .backends import run_tasks

    train, test = _load_data()
    runs = [(k, s) for k in kinds for s in range(seeds)]
    done: dict[int, tuple] = {}

    def on_result(i, res):
        if res.ok:
            done[i] = res.value
            records_so_far = [done[j][0] for j in sorted(done)]
            out.write_text("results.json", json.dumps(records_so_far, indent=2) + "\n")

    start = time.perf_counter()
    results = run_tasks(_run_task, [(f"{k} seed {s}", (k, s, epochs, config)) for k, s in runs],
                        backend=backend, workers=workers, address=address,
                        threads=config.threads, progress=progress, desc="bench uea",
                        on_result=on_result)
    failed = [r for r in results if not r.ok]
    if failed:
        raise UsageError(f"{len(failed)} of {len(results)} runs failed; the first: "
                         f"{failed[0].key}: {failed[0].error}")
    records = [done[i][0] for i in range(len(runs))]
    probs_by_run = {runs[i]: done[i][1] for i in range(len(runs))}
    wall = time.perf_counter() - start
    out.write_text("results.md", _table(records, config, wall, kinds, seeds))
    with out.file("predictions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, y_test=test.y.numpy(),
            **{f"{k}_seed{s}": p.numpy() for (k, s), p in probs_by_run.items()},
        )
    _plot(records, probs_by_run, test.y, out, "results.png")
    if progress:
        print((out / "results.md").read_text())
    return records



# -- ``bayesattn bench uea`` (see bayesattn.experiments.benches)

HELP = "Transformer classifiers with each attention kind on JapaneseVowels (UEA)"


def add_arguments(parser) -> None:
    """Options of ``bayesattn bench uea`` beside the common ones."""
    parser.add_argument("--attention", default=None, help="comma-separated kinds (default all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per kind (default 3)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every kind (default: the benchmark's own)")
    from .backends import add_backend_arguments

    add_backend_arguments(parser)


def run(args, out) -> None:
    """Run ``bayesattn bench uea`` into the claimed output folder ``out``."""
    kinds = ([k.strip() for k in args.attention.split(",") if k.strip()]
             if args.attention else None)
    epochs = 1 if args.quick and args.epochs is None else args.epochs
    seeds = 1 if args.quick else args.seeds
    run_uea_bench(out, attention=kinds, seeds=seeds, epochs=epochs, backend=args.backend,
                  workers=args.workers, address=args.address)
