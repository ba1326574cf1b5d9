"""``bayesattn bench uncertainty``: does uncertainty-aware attention pay? An honest protocol.

On JapaneseVowels (:mod:`bayesattn.data.japanese_vowels`), with the Transformer backbone of
``bayesattn bench uea`` (:class:`bayesattn.experiments.uea.BenchConfig` sizes), it compares
deterministic attention (softmax, kernel, least squares, with temperature scaling), standard
uncertainty baselines (deep ensemble, MC dropout, last-layer Laplace) and Bayesian attention
(a posterior over the attention temperature, SGPA-style GP attention, the BAM-style layer)
(:mod:`bayesattn.experiments.uncertainty_methods`).

Protocol (per seed ``s``):

* **splits**: a validation set of ``val_per_class`` utterances per speaker carved from the
  270 training utterances (stratified, drawn with seed ``s``); features standardised with the
  statistics of the remaining training part; the 370 test utterances are touched once per
  final configuration, after every choice is made;
* **choices on validation only**: the temperature of temperature scaling (per model and seed),
  the Laplace prior precision (per seed), the BAM attention-KL coefficient and the GP-attention
  amplitude (grids, on the first seed's validation split, then fixed for the other seeds).
  There is no early stopping: every model trains for the same fixed number of epochs of a
  one-cycle schedule (fixed in advance, not tuned on test);
* **in distribution**: accuracy, NLL, Brier, ECE (15 bins; cross-checked against
  torchmetrics when it is installed), AURC;
* **shift**: the test set under four corruptions at five severities
  (:mod:`bayesattn.experiments.corruptions`); accuracy, NLL and ECE per severity and their
  average over the 20 corrupted sets;
* **unknown classes**: every method retrained on 7 speakers with 2 held out (a different pair
  per seed); AUROC and FPR at 95 % TPR of the predictive entropy and the mutual information
  for telling the held-out speakers' test utterances from the known ones';
* **cost**: training seconds (one thread, wall clock, including post-hoc fits; an ensemble is
  the sum of its members; grid searches are recorded separately), prediction milliseconds per
  test example, parameters.

Outputs in ``--out``: ``results.json`` (settings, protocol with what chose what, one record
per seed and method), ``results.md`` (the table and the verdict on the issue's goal),
``reliability.png``, ``shift.png``, ``roc.png``, ``coverage.png``.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.japanese_vowels import SequenceSplit, load_japanese_vowels
from ..io import OutputDir
from ..nn.metrics import (
    accuracy,
    area_under_risk_coverage,
    brier_score,
    detection_auroc,
    expected_calibration_error,
    fpr_at_tpr,
    negative_log_likelihood,
    predictive_uncertainty,
)
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt
from .uea import BenchConfig
from .uncertainty_methods import GROUPS, LABELS, METHODS, MethodTrainer

__all__ = ["UncertaintyConfig", "QUICK", "stratified_split", "held_out_pair",
           "run_uncertainty_bench", "report_from", "summarize", "verdict"]

_BASE = BenchConfig()


@dataclass(frozen=True)
class UncertaintyConfig:
    """Settings of the benchmark (sizes and optimiser from :class:`BenchConfig`).

    Attributes:
        d_model, nhead, num_layers, dim_feedforward, dropout: backbone sizes.
        batch_size, lr, weight_decay, epochs: optimisation, the same for every method.
        val_per_class: validation utterances per speaker (carved from training).
        ensemble_size: members of the deep ensemble.
        mc_samples: Monte-Carlo passes of MC dropout, the stochastic attention and BAM.
        laplace_samples: logit draws of the Laplace predictive.
        laplace_prior_grid: prior precisions tried on validation.
        temperature_prior_scale: prior sd of the log-temperature.
        bam_kl_grid: BAM attention-KL coefficients tried on validation.
        gp_amplitude_grid: GP-attention amplitudes tried on validation.
        severities: corruption severities evaluated.
        threads: torch threads.
    """

    d_model: int = _BASE.d_model
    nhead: int = _BASE.nhead
    num_layers: int = _BASE.num_layers
    dim_feedforward: int = _BASE.dim_feedforward
    dropout: float = _BASE.dropout
    batch_size: int = _BASE.batch_size
    lr: float = _BASE.lr
    weight_decay: float = _BASE.weight_decay
    epochs: int = 20
    val_per_class: int = 8
    ensemble_size: int = 5
    mc_samples: int = 8
    laplace_samples: int = 64
    laplace_prior_grid: tuple = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
    temperature_prior_scale: float = 0.5
    bam_kl_grid: tuple = (0.01, 0.1)
    gp_amplitude_grid: tuple = (0.2, 0.5)
    severities: tuple = SEVERITIES
    threads: int = 1


#: The ``--quick`` settings (a smoke test of every code path in seconds, not a result).
QUICK = UncertaintyConfig(d_model=8, nhead=2, num_layers=1, dim_feedforward=8, epochs=1,
                          ensemble_size=2, mc_samples=2, laplace_samples=4,
                          laplace_prior_grid=(1.0, 100.0), bam_kl_grid=(0.01,),
                          gp_amplitude_grid=(0.3,), severities=(1, 5))


def _subset(split: SequenceSplit, idx: torch.Tensor, relabel: dict | None = None):
    lengths = split.lengths[idx]
    T = int(lengths.max())
    y = split.y[idx]
    if relabel is not None:
        y = torch.tensor([relabel[int(c)] for c in y], dtype=torch.long)
    return SequenceSplit(split.x[idx, :T], split.padding_mask[idx, :T], lengths, y)


def stratified_split(split: SequenceSplit, per_class: int, seed: int):
    """Carve ``per_class`` validation examples per class from ``split`` at random.

    Returns:
        ``(train, val)`` :class:`SequenceSplit`s (sequences trimmed to their longest).

    Raises:
        ValueError: a class with no more than ``per_class`` examples.
    """
    gen = torch.Generator().manual_seed(seed)
    val_idx = []
    for c in torch.unique(split.y).tolist():
        members = torch.nonzero(split.y == c).squeeze(-1)
        if len(members) <= per_class:
            raise ValueError(f"class {c} has {len(members)} examples; cannot hold out "
                             f"{per_class} for validation")
        val_idx.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    val_idx = torch.cat(val_idx).sort().values
    is_val = torch.zeros(len(split), dtype=torch.bool)
    is_val[val_idx] = True
    return _subset(split, torch.nonzero(~is_val).squeeze(-1)), _subset(split, val_idx)


def held_out_pair(seed: int, num_classes: int = 9) -> tuple[int, int]:
    """The two speakers held out for the unknown-class task of ``seed`` (0-based)."""
    a = (2 * seed) % num_classes
    return a, (a + 1) % num_classes


def _standardize(train, *others):
    mean, std = train.feature_mean_std()
    return [s.standardized(mean, std) for s in (train, *others)]


def _metrics(samples: torch.Tensor, y: torch.Tensor, *, full: bool) -> dict:
    probs = samples.mean(0)
    out = {"accuracy": accuracy(probs, y), "nll": negative_log_likelihood(probs, y),
           "ece": expected_calibration_error(probs, y)}
    if full:
        out["brier"] = brier_score(probs, y)
        out["aurc"] = area_under_risk_coverage(probs, y)
        try:
            from torchmetrics.functional.classification import multiclass_calibration_error
        except ImportError:  # torchmetrics is a dev dependency
            pass
        else:
            out["ece_torchmetrics"] = float(multiclass_calibration_error(
                probs, y, num_classes=probs.shape[1], n_bins=15, norm="l1"))
    return out


def _run_seed(seed, config, methods, choices, selection, bar):
    """All methods on the main and the unknown-class task for one seed."""
    data = load_japanese_vowels()
    C = data.num_classes
    train, val = stratified_split(data.train, config.val_per_class, seed)
    train, val, test = _standardize(train, val, data.test)
    shifted = {(c, s): corrupt(test, c, s, seed=seed) for c in CORRUPTIONS
               for s in config.severities}
    pair = held_out_pair(seed, C)
    known = [c for c in range(C) if c not in pair]
    relabel = {c: i for i, c in enumerate(known)}
    in_train = torch.nonzero(torch.isin(data.train.y, torch.tensor(known))).squeeze(-1)
    tr_u, va_u = stratified_split(_subset(data.train, in_train, relabel),
                                  config.val_per_class, seed)
    in_test = torch.nonzero(torch.isin(data.test.y, torch.tensor(known))).squeeze(-1)
    out_test = torch.nonzero(torch.isin(data.test.y, torch.tensor(pair))).squeeze(-1)
    tr_u, va_u, te_in, te_out = _standardize(tr_u, va_u, _subset(data.test, in_test, relabel),
                                             _subset(data.test, out_test))
    main = MethodTrainer(config, train, val, C, seed)
    unknown = MethodTrainer(config, tr_u, va_u, len(known), seed)
    grids = {"bam": config.bam_kl_grid, "gp_attention": config.gp_amplitude_grid}
    records, arrays = [], {}
    for method in methods:
        bar.set_postfix(seed=seed, method=method)
        start = time.perf_counter()
        if method in grids and method not in choices:
            fitted, scores = main.select(method, grids[method])
            value = min(scores, key=scores.get)
            choices[method] = value
            selection[method] = {"grid": list(grids[method]),
                                 "validation_nll": {str(k): v for k, v in scores.items()},
                                 "chosen": value, "chosen_on": f"validation split of seed {seed}",
                                 "seconds": time.perf_counter() - start}
        else:
            fitted = main.fit(method, choices.get(method))
        val_samples = fitted.predict(val.x, val.padding_mask)
        t0 = time.perf_counter()
        samples = fitted.predict(test.x, test.padding_mask)
        predict_seconds = time.perf_counter() - t0
        rec = {"seed": seed, "method": method, "group": GROUPS[method],
               "train_seconds": fitted.train_seconds,
               "predict_ms_per_example": 1000 * predict_seconds / len(test),
               "parameters": fitted.parameters, "chosen": fitted.chosen,
               "validation": _metrics(val_samples, val.y, full=False),
               "in_distribution": _metrics(samples, test.y, full=True)}
        shift = {}
        for c in CORRUPTIONS:
            shift[c] = [_metrics(fitted.predict(shifted[c, s].x, shifted[c, s].padding_mask),
                                 test.y, full=False) for s in config.severities]
        rec["shift"] = shift
        rec["shift_mean"] = {k: statistics.fmean(m[k] for c in CORRUPTIONS for m in shift[c])
                             for k in ("accuracy", "nll", "ece")}
        unc = predictive_uncertainty(samples)
        arrays[method] = {"probs": samples.mean(0), "y": test.y}
        # unknown classes: retrained without the held-out speakers
        fitted_u = unknown.fit(method, choices.get(method))
        s_in = fitted_u.predict(te_in.x, te_in.padding_mask)
        s_out = fitted_u.predict(te_out.x, te_out.padding_mask)
        u_in, u_out = predictive_uncertainty(s_in), predictive_uncertainty(s_out)
        ent_in, ent_out = u_in["predictive_entropy"], u_out["predictive_entropy"]
        stochastic = s_in.shape[0] > 1
        rec["unknown"] = {
            "held_out": [p + 1 for p in pair], "train_seconds": fitted_u.train_seconds,
            "accuracy_known": accuracy(s_in.mean(0), te_in.y),
            "auroc_entropy": detection_auroc(ent_in, ent_out),
            "fpr95_entropy": fpr_at_tpr(ent_in, ent_out),
            "auroc_mi": (detection_auroc(u_in["mutual_information"], u_out["mutual_information"])
                         if stochastic else None),
            "fpr95_mi": (fpr_at_tpr(u_in["mutual_information"], u_out["mutual_information"])
                         if stochastic else None),
        }
        rec["mean_mutual_information_test"] = float(unc["mutual_information"].mean())
        arrays[method].update(ent_in=ent_in, ent_out=ent_out,
                              mi_in=u_in["mutual_information"], mi_out=u_out["mutual_information"])
        records.append(rec)
        bar.update(1)
    try:
        import pyro

        pyro.clear_param_store()
    except ImportError:  # pragma: no cover
        pass
    return records, arrays


# ---------------------------------------------------------------------- summary and verdict
_KEYS = {
    "accuracy": ("in_distribution", "accuracy"), "nll": ("in_distribution", "nll"),
    "brier": ("in_distribution", "brier"), "ece": ("in_distribution", "ece"),
    "aurc": ("in_distribution", "aurc"), "shift_accuracy": ("shift_mean", "accuracy"),
    "shift_nll": ("shift_mean", "nll"), "shift_ece": ("shift_mean", "ece"),
    "auroc_entropy": ("unknown", "auroc_entropy"), "fpr95_entropy": ("unknown", "fpr95_entropy"),
    "auroc_mi": ("unknown", "auroc_mi"), "fpr95_mi": ("unknown", "fpr95_mi"),
    "train_seconds": ("train_seconds",), "predict_ms": ("predict_ms_per_example",),
    "parameters": ("parameters",),
}


def _get(rec, path):
    for k in path:
        rec = rec[k]
    return rec


def summarize(records: list[dict]) -> dict[str, dict]:
    """Mean and sample sd (0 for one seed) over seeds of every table metric, per method.

    Returns:
        ``{method: {metric: mean, metric + "_sd": sd, "seeds": n}}`` in :data:`METHODS` order;
        a metric that is None for a method (mutual information of a deterministic model) is
        None.
    """
    out = {}
    for method in METHODS:
        rs = [r for r in records if r["method"] == method]
        if not rs:
            continue
        row = {"seeds": len(rs)}
        for key, path in _KEYS.items():
            vals = [_get(r, path) for r in rs]
            if any(v is None for v in vals):
                row[key] = row[key + "_sd"] = None
                continue
            row[key] = statistics.fmean(vals)
            row[key + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[method] = row
    return out


def verdict(summary: dict, reference: str = "softmax_ts") -> dict:
    """The issue's goal, checked per Bayesian-attention method against ``reference``.

    Goal: shift-averaged NLL and ECE below the reference (softmax + TS in the issue; plain
    softmax is the stronger baseline when the validation temperature is below 1), unknown-class
    AUROC (predictive entropy) above it, accuracy not more than 0.5 points below; and the
    training cost as a fraction of the deep ensemble's.

    Returns:
        ``{method: {"shift_nll": bool, "shift_ece": bool, "auroc_entropy": bool,
        "accuracy_within_0.5": bool, "met": bool, "cost_vs_ensemble": float or None,
        "gap_to_ensemble": {...}}}`` for the Bayesian-attention methods; empty without the
        reference.
    """
    ref = summary.get(reference)
    ens = summary.get("ensemble")
    if ref is None:
        return {}
    result = {}
    for method, row in summary.items():
        if GROUPS[method] != "bayesian_attention":
            continue
        v = {"shift_nll": row["shift_nll"] < ref["shift_nll"],
             "shift_ece": row["shift_ece"] < ref["shift_ece"],
             "auroc_entropy": row["auroc_entropy"] > ref["auroc_entropy"],
             "accuracy_within_0.5": row["accuracy"] >= ref["accuracy"] - 0.005}
        v["met"] = all(v.values())
        v["cost_vs_ensemble"] = (row["train_seconds"] / ens["train_seconds"] if ens else None)
        if ens:
            v["gap_to_ensemble"] = {k: row[k] - ens[k] for k in
                                    ("shift_nll", "shift_ece", "auroc_entropy", "accuracy")}
        result[method] = v
    return result


def _pm(row, key, scale=1.0, digits=3):
    if row.get(key) is None:
        return "-"
    return f"{scale * row[key]:.{digits}f} ± {scale * row[key + '_sd']:.{digits}f}"


def _table(records, summary, config, protocol, wall, seeds, notes: str = "") -> str:
    L = ["# Uncertainty-aware attention on JapaneseVowels: honest protocol", ""]
    L.append(f"Mean ± sd over {seeds} seed(s). Test: 370 utterances (9 speakers); training "
             f"{270 - 9 * config.val_per_class} + validation {9 * config.val_per_class} "
             "(stratified, carved from the 270 training utterances). Shift: mean over 4 "
             f"corruptions x {len(config.severities)} severities. Unknown classes: retrained "
             "on 7 speakers, 2 held out (a different pair per seed); AUROC / FPR@95 of "
             "predictive entropy (H) and mutual information (MI). Accuracy in %, NLL in "
             "nats, ECE 15 bins, AURC = mean selective risk; train s = one torch thread, "
             "wall clock (main task); predict ms per test example.")
    L += ["", "| method | acc % | NLL | Brier | ECE | AURC | shift acc % | shift NLL | "
          "shift ECE | AUROC H | FPR95 H | AUROC MI | train s | predict ms | params |",
          "|---|" + "---|" * 15]
    for m, r in summary.items():
        L.append(
            f"| {LABELS[m]} | {_pm(r, 'accuracy', 100, 2)} | {_pm(r, 'nll')} | "
            f"{_pm(r, 'brier')} | {_pm(r, 'ece')} | {_pm(r, 'aurc', 1, 4)} | "
            f"{_pm(r, 'shift_accuracy', 100, 1)} | {_pm(r, 'shift_nll')} | "
            f"{_pm(r, 'shift_ece')} | {_pm(r, 'auroc_entropy')} | {_pm(r, 'fpr95_entropy', 1, 2)}"
            f" | {_pm(r, 'auroc_mi')} | {r['train_seconds']:.1f} | {r['predict_ms']:.2f} | "
            f"{int(r['parameters']):,} |")
    L += ["", "## Shift: NLL per corruption (mean over severities and seeds)", "",
          "| method | " + " | ".join(CORRUPTIONS) + " |", "|---|" + "---|" * len(CORRUPTIONS)]
    for m in summary:
        rs = [r for r in records if r["method"] == m]
        cells = [statistics.fmean(x["nll"] for r in rs for x in r["shift"][c])
                 for c in CORRUPTIONS]
        L.append(f"| {LABELS[m]} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    temps = [r["chosen"]["temperature"] for r in records if r["method"] == "softmax_ts"]
    for reference, title in (("softmax_ts", "softmax + temperature scaling (the issue's goal)"),
                             ("softmax", "plain softmax (no temperature scaling)")):
        L += ["", f"## Goal against {title}", ""]
        if reference == "softmax_ts" and temps:
            L.append(f"Temperature chosen on validation: mean T = {statistics.fmean(temps):.2f} "
                     f"(range {min(temps):.2f}-{max(temps):.2f}). T < 1 sharpens: the small "
                     "validation set is almost perfectly classified, so its NLL prefers more "
                     "confidence, and the sharpened model is badly overconfident under shift. "
                     "Plain softmax is then the stronger deterministic baseline.")
            L.append("")
        L += _verdict_lines(summary, reference)
    L += ["", "## What chose what", ""]
    for item in protocol["choices"]:
        L.append(f"- {item}")
    for m, sel in protocol["grid_search"].items():
        L.append(f"- {LABELS[m]}: grid {sel['grid']} -> {sel['chosen']} (validation NLL "
                 + ", ".join(f"{k}: {x:.3f}" for k, x in sel["validation_nll"].items())
                 + f"; {sel['chosen_on']}; search {sel['seconds']:.0f} s, not in train s)")
    L += ["", f"Whole run: {wall / 60:.1f} min wall clock on {platform.machine()} CPU, "
          f"{config.threads} torch thread(s), torch {torch.__version__}.", "",
          "Settings: " + json.dumps(asdict(config)), ""]
    if notes:
        L += ["## Notes", "", notes, ""]
    return "\n".join(L)


def _verdict_lines(summary, reference) -> list[str]:
    v = verdict(summary, reference)
    ref = summary.get(reference)
    if not v:
        return [f"{LABELS[reference]} not run: no verdict."]
    lines = []
    for m, res in v.items():
        r = summary[m]
        marks = ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in res.items()
                          if isinstance(ok, bool) and k != "met")
        cost = ("" if res["cost_vs_ensemble"] is None else
                f"; training time {100 * res['cost_vs_ensemble']:.0f} % of the deep ensemble's")
        lines.append(
            f"- **{LABELS[m]}**: goal {'MET' if res['met'] else 'not met'} ({marks}). "
            f"shift NLL {r['shift_nll']:.3f} vs {ref['shift_nll']:.3f}, shift ECE "
            f"{r['shift_ece']:.3f} vs {ref['shift_ece']:.3f}, AUROC(H) "
            f"{r['auroc_entropy']:.3f} vs {ref['auroc_entropy']:.3f}, accuracy "
            f"{100 * r['accuracy']:.2f} vs {100 * ref['accuracy']:.2f} %{cost}.")
    if not any(res["met"] for res in v.values()):
        lines += ["", "No Bayesian-attention model met the goal in this run."]
    ens = summary.get("ensemble")
    if ens:
        lines += ["", f"Deep ensemble for reference: shift NLL {ens['shift_nll']:.3f}, shift ECE "
                  f"{ens['shift_ece']:.3f}, AUROC(H) {ens['auroc_entropy']:.3f}, accuracy "
                  f"{100 * ens['accuracy']:.2f} %."]
    return lines


def _protocol(config, seeds):
    return {
        "splits": {"train": "270 training utterances minus validation",
                   "validation": f"{config.val_per_class} per speaker, stratified, drawn per "
                                 "seed from the training utterances",
                   "test": "370 test utterances, evaluated once per final configuration",
                   "standardisation": "statistics of the training part only"},
        "seeds": list(range(seeds)),
        "choices": [
            "temperature of temperature scaling: validation NLL (grid of log T), per model "
            "and seed",
            "Laplace prior precision: validation NLL, per seed (grid "
            f"{list(config.laplace_prior_grid)})",
            "BAM attention-KL coefficient and GP-attention amplitude: validation NLL on the "
            "first seed's split, then fixed",
            f"early stopping: none; every model trains {config.epochs} epochs (one-cycle "
            "schedule), fixed in advance",
            "unknown-class task: the same settings; temperature and prior precision refitted "
            "on that task's validation split",
            "test set: never used for any choice",
        ],
        "grid_search": {},
    }


def run_uncertainty_bench(out, *, seeds: int = 5, methods=None, config: UncertaintyConfig |
                          None = None, progress: bool = True, notes: str = "") -> list[dict]:
    """Run the benchmark into ``out`` (see the module docstring); returns the records.

    Args:
        out: a folder or :class:`bayesattn.io.OutputDir`.
        seeds: seeds ``0..seeds-1``.
        methods: subset of :data:`bayesattn.experiments.uncertainty_methods.METHODS`.
        config: :class:`UncertaintyConfig` (default the full settings).
        progress: tqdm bar and the table printed at the end.
        notes: text appended to ``results.md``.

    Raises:
        bayesattn.errors.UsageError: ``seeds < 1``; an unknown method.
    """
    from ..errors import UsageError
    from .uncertainty_plots import plot_all

    if not (isinstance(seeds, int) and seeds >= 1):
        raise UsageError(f"--seeds must be a positive integer, got {seeds}")
    methods = list(METHODS) if methods is None else list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UsageError(f"unknown method(s) {', '.join(bad)}; expected {', '.join(METHODS)}")
    config = config or UncertaintyConfig()
    if not isinstance(out, OutputDir):
        Path(out).mkdir(parents=True, exist_ok=True)
        out = OutputDir.plain(out)
    protocol = _protocol(config, seeds)
    records, pooled, choices = [], {}, {}
    start = time.perf_counter()
    # torch.set_num_threads directly: bayesattn.inference.threads would import ArviZ (seconds)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        bar = tqdm(total=seeds * len(methods), desc="bench uncertainty", disable=not progress)
        for seed in range(seeds):
            recs, arrays = _run_seed(seed, config, methods, choices, protocol["grid_search"],
                                     bar)
            records += recs
            for m, a in arrays.items():
                pooled.setdefault(m, []).append(a)
            doc = {"settings": asdict(config), "protocol": protocol, "records": records,
                   "complete": seed == seeds - 1, "wall_seconds": time.perf_counter() - start}
            out.write_text("results.json", json.dumps(doc, indent=1, default=_json) + "\n")
            with out.file("arrays.pt") as tmp:  # for plots of a partial run (finish_from)
                torch.save(pooled, tmp)
        bar.close()
    finally:
        torch.set_num_threads(old_threads)
    wall = time.perf_counter() - start
    summary = summarize(records)
    doc["summary"], doc["verdict"], doc["wall_seconds"] = summary, verdict(summary), wall
    out.write_text("results.json", json.dumps(doc, indent=1, default=_json) + "\n")
    out.write_text("results.md", _table(records, summary, config, protocol, wall, seeds, notes))
    plot_all(out, records, pooled, config, dpi=110 if config.epochs > 1 else 50)
    if progress:
        print((out / "results.md").read_text())
    return records


def report_from(folder, out, *, notes: str = "", progress: bool = False) -> list[dict]:
    """Write ``results.json`` (with summary and verdict), ``results.md`` and the plots to
    ``out`` from the per-seed ``results.json`` and ``arrays.pt`` of a (possibly interrupted)
    run in ``folder``; no training; ``notes`` are appended to the table. Returns the
    records.

    Raises:
        bayesattn.errors.UsageError: ``folder`` lacks those files or holds no finished seed.
    """
    from ..errors import UsageError
    from .uncertainty_plots import plot_all

    folder = Path(folder)
    try:
        doc = json.loads((folder / "results.json").read_text())
        pooled = torch.load(folder / "arrays.pt", weights_only=False)
    except (OSError, ValueError) as err:
        raise UsageError(f"--from {folder}: cannot read results.json / arrays.pt ({err})") from None
    records = doc["records"]
    if not records:
        raise UsageError(f"--from {folder}: no finished seed")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["settings"].items()}
    config = UncertaintyConfig(**settings)
    seeds = len({r["seed"] for r in records})
    if not isinstance(out, OutputDir):
        Path(out).mkdir(parents=True, exist_ok=True)
        out = OutputDir.plain(out)
    summary = summarize(records)
    doc["summary"], doc["verdict"] = summary, verdict(summary)
    doc["protocol"]["seeds"] = sorted({r["seed"] for r in records})
    wall = doc.get("wall_seconds") or float("nan")
    out.write_text("results.json", json.dumps(doc, indent=1, default=_json) + "\n")
    if notes:
        doc["notes"] = notes
    out.write_text("results.md", _table(records, summary, config, doc["protocol"], wall, seeds,
                                        notes))
    plot_all(out, records, pooled, config, dpi=110 if config.epochs > 1 else 50)
    if progress:
        print((out / "results.md").read_text())
    return records


def _json(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# -- ``bayesattn bench uncertainty`` (see bayesattn.experiments.benches)

HELP = ("uncertainty under an honest protocol: calibration, shift, unknown speakers, "
        "selective prediction, cost (JapaneseVowels)")


def add_arguments(parser) -> None:
    """Options of ``bayesattn bench uncertainty`` beside the common ones."""
    parser.add_argument("--seeds", type=int, default=5, help="seeds (default 5)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods (default all): " + ", ".join(METHODS))
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every model (default 20)")
    parser.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                        help="no training: write the table and plots from the results.json "
                             "and arrays.pt of an earlier (possibly interrupted) run in DIR")
    parser.add_argument("--notes", default="", help="text appended to results.md")


def run(args, out) -> None:
    """Run ``bayesattn bench uncertainty`` into the claimed output folder ``out``.

    Raises:
        UsageError: ``--epochs`` below 1, and the option errors of
            :func:`run_uncertainty_bench` (seeds, unknown methods).
    """
    from ..errors import UsageError

    if args.from_dir is not None:
        report_from(args.from_dir, out, notes=args.notes, progress=True)
        return
    config = QUICK if args.quick else UncertaintyConfig()
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs must be a positive integer, got {args.epochs}")
        config = replace(config, epochs=args.epochs)
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()]
               if args.methods else None)
    seeds = 1 if args.quick else args.seeds
    run_uncertainty_bench(out, seeds=seeds, methods=methods, config=config,
                          progress=not args.quick, notes=args.notes)
