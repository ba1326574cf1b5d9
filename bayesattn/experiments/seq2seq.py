"""Encoder-decoder attention (D2L 11.4-11.7) on written dates: ``bayesattn bench seq2seq``.

``bayesattn bench seq2seq [--models M[,M...]] [--seeds N] [--epochs N]`` trains, on the
written-date -> ISO task of :mod:`bayesattn.experiments.dates` (2000 train, 300 validation,
500 test dates, the splits disjoint), the models of
:mod:`bayesattn.experiments.seq2seq_models`:

* ``gru``: GRU encoder-decoder without attention (D2L 10.7);
* ``bahdanau``: GRU encoder-decoder with additive attention (Bahdanau et al. 2015; D2L 11.4);
* ``bahdanau-bam``: the same with a Bayesian alignment (BAM-style lognormal weights, Fan et
  al. 2020; :class:`bayesattn.experiments.seq2seq_models.BayesianGRUSeq2Seq`), trained on the
  ELBO with a KL coefficient ``lambda`` chosen per seed on validation from
  ``Seq2SeqConfig.kl_weights``, decoded with the Monte-Carlo predictive over 32 alignment
  paths; the posterior sd of its alignment is summarised on the test split
  (:func:`bayesattn.experiments.seq2seq_bayes.alignment_uncertainty`);
* ``transformer-KIND``: a 1 + 1 layer Transformer (``d_model = 32``, 4 heads) whose every
  attention is ``KIND`` of :class:`bayesattn.nn.MultiheadAttention` (D2L 11.7); by default
  ``softmax``, ``least_squares`` (Intention) and ``gp`` (GP attention everywhere: encoder
  self-attention and cross-attention with exact key padding, decoder self-attention with the
  exact causal mask, each query regressing on its prefix); ``linear``, ``kernel``, ... on
  request.

Training: cross-entropy with teacher forcing, Adam (step 3e-3 after a 50-step linear
warm-up, gradient norm clipped at 1), minibatches of 32, at most ``--epochs`` (8) epochs;
after each epoch the greedy character accuracy on the validation split is measured and the
best epoch's weights are kept (stopping after 2 epochs without a gain): the validation split is the
only thing tuned on. Argument validation of :mod:`bayesattn.functional` is off during the run
(:func:`bayesattn.functional.set_validation`, restored afterwards): it syncs on every call.
Test metrics (greedy decoding, 10 steps): exact match (the whole ISO string right), character
accuracy, and corpus BLEU from ``sacrebleu`` with character tokenisation (``tokenize="char"``):
an ISO date is one whitespace token, so word-level BLEU would collapse to exact match, while
character n-grams give partial credit for the right year with the wrong day.

Outputs in ``DIR``: ``results.json`` (records ``{model, seed, exact_match, char_accuracy,
bleu, best_epoch, train_seconds, ...}``, rewritten after every run), ``results.md`` (mean +-
sd over seeds), ``results.png`` (test exact match and BLEU per model) and
``attention.png`` (cross-attention heatmaps of the Bahdanau and Transformer models of seed 0
on four test dates, as D2L 11.4 and 11.7 draw them; least-squares and GP weights are signed),
``alignment_sd.png`` (seed 0: the Bahdanau alignment beside the Bayesian model's posterior
mean and sd on the same dates), ``seed0_models.pt`` (their state dicts, so that a resumed
run draws the same maps).
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
from ..nn.attention import ATTENTION_KINDS
from .dates import SOURCE_CHARS, TARGET_CHARS, TARGET_LENGTH, decode_target, make_dates
from .seq2seq_bayes import alignment_uncertainty, plot_alignment_posterior
from .seq2seq_models import BayesianGRUSeq2Seq, GRUSeq2Seq, TransformerSeq2Seq

#: Attention kinds of ``transformer-KIND`` (``gp``: causal GP self-attention in the decoder).
TRANSFORMER_KINDS = ATTENTION_KINDS + ("gp",)

__all__ = ["DEFAULT_MODELS", "Seq2SeqConfig", "build_model", "train_seq2seq", "evaluate",
           "run_one", "run_seq2seq_bench", "summarize"]

DEFAULT_MODELS = ("gru", "bahdanau", "bahdanau-bam", "transformer-softmax",
                  "transformer-least_squares", "transformer-gp")
LABELS = {"gru": "GRU, no attention", "bahdanau": "GRU + Bahdanau (additive)",
          "bahdanau-bam": "GRU + Bayesian Bahdanau (BAM)",
          "transformer-gp": "Transformer, GP (exact causal mask)",
          "transformer-softmax": "Transformer, softmax",
          "transformer-least_squares": "Transformer, least-squares",
          "transformer-linear": "Transformer, linear (elu+1)",
          "transformer-kernel": "Transformer, kernel (Gaussian NW)"}


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Settings of every run.

    Attributes:
        sizes: train, validation and test examples.
        data_seed: seed of the data (the same splits for every model and seed).
        embed_dim, hidden: GRU sizes.
        d_model, nhead, num_layers, dim_feedforward, dropout: Transformer sizes.
        epochs: most epochs; patience: epochs without validation gain before stopping.
        batch_size, lr: Adam minibatch and step size.
        warmup: steps of linear learning-rate warm-up.
        threads: torch threads.
        kl_weights: the KL coefficients ``lambda`` of ``bahdanau-bam`` tried per seed (the
            one with the best validation character accuracy is kept; ties: the lower
            validation NLL of the Monte-Carlo predictive).
        mc_samples: Monte-Carlo alignment paths of ``bahdanau-bam`` at test.
        val_mc_samples: paths in its per-epoch validation and KL-coefficient choice.
    """

    sizes: tuple = (2000, 300, 500)
    data_seed: int = 0
    embed_dim: int = 32
    hidden: int = 64
    d_model: int = 32
    nhead: int = 4
    num_layers: int = 1
    dim_feedforward: int = 64
    dropout: float = 0.1
    epochs: int = 8
    patience: int = 2
    batch_size: int = 32
    warmup: int = 50
    lr: float = 3e-3
    threads: int = 1
    kl_weights: tuple = (0.001, 0.01, 0.1, 1.0)
    mc_samples: int = 32
    val_mc_samples: int = 8


def _model_name(name: str) -> str:
    from ..errors import UsageError

    name = name.strip().lower().replace("least-squares", "least_squares")
    if name in ("gru", "bahdanau", "bahdanau-bam"):
        return name
    if name.startswith("transformer-") and name.split("-", 1)[1] in TRANSFORMER_KINDS:
        return name
    raise UsageError(f"unknown model {name!r}; expected gru, bahdanau, bahdanau-bam or "
                     f"transformer-KIND (KIND one of {', '.join(TRANSFORMER_KINDS)})")


def build_model(name: str, config: Seq2SeqConfig, *, kl_weight: float | None = None
                ) -> nn.Module:
    """The model called ``name`` (``gru``, ``bahdanau``, ``bahdanau-bam`` or
    ``transformer-KIND``).

    Args:
        name: the model.
        config: sizes.
        kl_weight: ``lambda`` of ``bahdanau-bam`` (default the first of
            ``config.kl_weights``).

    Raises:
        bayesattn.errors.UsageError: unknown name.
    """
    name = _model_name(name)
    V_src, V_tgt = len(SOURCE_CHARS) + 1, len(TARGET_CHARS) + 2
    if name == "bahdanau-bam":
        lam = config.kl_weights[0] if kl_weight is None else kl_weight
        return BayesianGRUSeq2Seq(V_src, V_tgt, embed_dim=config.embed_dim,
                                  hidden=config.hidden, kl_weight=lam,
                                  num_samples=config.mc_samples)
    if name in ("gru", "bahdanau"):
        return GRUSeq2Seq(V_src, V_tgt, embed_dim=config.embed_dim, hidden=config.hidden,
                          attention=name == "bahdanau")
    return TransformerSeq2Seq(V_src, V_tgt, d_model=config.d_model, nhead=config.nhead,
                              num_layers=config.num_layers,
                              dim_feedforward=config.dim_feedforward, dropout=config.dropout,
                              attention=name.split("-", 1)[1])


def _batches(split, batch_size, generator=None):
    N = len(split)
    order = torch.randperm(N, generator=generator) if generator is not None else torch.arange(N)
    for start in range(0, N, batch_size):
        idx = order[start:start + batch_size]
        pm = split.source_padding_mask[idx]
        S = int((~pm).sum(1).max())
        yield split.source[idx, :S], pm[:, :S], split.target[idx]


@torch.no_grad()
def predict(model: nn.Module, split, *, batch_size: int = 500):
    """Greedy target tokens ``(N, 10)`` of ``split`` (eval mode)."""
    model.eval()
    return torch.cat([model.greedy(src, pm, TARGET_LENGTH)[0]
                      for src, pm, _ in _batches(split, batch_size)])


def evaluate(model: nn.Module, split) -> dict:
    """Exact match and character accuracy in [0, 1], and sacrebleu's character BLEU (0-100)."""
    from sacrebleu.metrics import BLEU

    tokens = predict(model, split)
    hyps = decode_target(tokens)
    exact = float(np.mean([h == r for h, r in zip(hyps, split.iso, strict=True)]))
    chars = float((tokens == split.target).double().mean())
    bleu = BLEU(tokenize="char").corpus_score(hyps, [split.iso]).score
    return {"exact_match": exact, "char_accuracy": chars, "bleu": bleu}


def train_seq2seq(model: nn.Module, train, val, config: Seq2SeqConfig, *, seed: int,
                  progress: bool = False) -> dict:
    """Teacher-forced cross-entropy training, keeping the best-on-validation epoch.

    Adam with a linear warm-up over ``config.warmup`` steps; after each epoch the greedy
    character accuracy on ``val`` is measured (finer than exact match, which is 0 for every
    early epoch); the best epoch's weights are kept and training stops after
    ``config.patience`` epochs without a gain.

    Returns:
        ``{"best_epoch", "epochs_run", "val_char_accuracy", "history"}``.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / max(1, config.warmup)))
    best, best_state, best_epoch, history = -1.0, None, 0, []
    for epoch in range(1, config.epochs + 1):
        model.train()
        total = 0.0
        for src, pm, tgt in _batches(train, config.batch_size, gen):
            logits = model(src, pm, tgt)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
            if hasattr(model, "regularizer"):  # the ELBO's alignment KL (bahdanau-bam)
                loss = loss + model.regularizer(tgt.numel())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * src.shape[0]
        scores = evaluate(model, val)
        score = scores["char_accuracy"]
        history.append({"epoch": epoch, "train_loss": total / len(train),
                        "val_exact": scores["exact_match"], "val_char": score})
        if progress:
            print(f"  epoch {epoch}: loss {total / len(train):.4f} val exact "
                  f"{scores['exact_match']:.4f} char {score:.4f}", flush=True)
        if score > best:
            best, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return {"best_epoch": best_epoch, "epochs_run": len(history), "val_char_accuracy": best,
            "history": history}


def run_one(name: str, seed: int, splits, config: Seq2SeqConfig, *, progress=False):
    """Train model ``name`` with ``seed`` and evaluate it on the test split.

    Returns:
        ``(record, model)``.
    """
    train, val, test = splits
    name = _model_name(name)
    start = time.perf_counter()
    if name == "bahdanau-bam":
        model, fit = _select_kl_weight(seed, splits, config, progress=progress)
    else:
        torch.manual_seed(seed)
        model = build_model(name, config)
        fit = train_seq2seq(model, train, val, config, seed=seed, progress=progress)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate(model, test)
    record = {"model": name, "seed": seed, **metrics,
              "max_epochs": config.epochs, "patience": config.patience,
              "test_seconds": time.perf_counter() - start, "train_seconds": train_seconds,
              "parameters": sum(p.numel() for p in model.parameters()), **fit}
    if name == "bahdanau-bam":
        torch.manual_seed(seed)
        record["alignment"] = alignment_uncertainty(model, test)
    return record, model


@torch.no_grad()
def validation_nll(model: nn.Module, split, *, batch_size: int = 250) -> float:
    """Teacher-forced NLL per target character (nats) of the Monte-Carlo predictive
    ``(1/M) sum_m p(y_t | y_<t, x, w^(m))`` of a :class:`BayesianGRUSeq2Seq` (``M`` =
    ``model.num_samples``; one pass for a deterministic model)."""
    model.eval()
    M = getattr(model, "num_samples", 1)
    total = 0.0
    for src, pm, tgt in _batches(split, batch_size):
        logp = torch.stack([model(src, pm, tgt).log_softmax(-1) for _ in range(M)])
        logp = torch.logsumexp(logp, 0) - math.log(M)
        total -= float(logp.gather(-1, tgt.unsqueeze(-1)).sum())
    return total / split.target.numel()


def _select_kl_weight(seed, splits, config, *, progress=False):
    """Train ``bahdanau-bam`` once per ``config.kl_weights``; keep the best on validation."""
    train, val, _ = splits
    best = None
    tried = []
    for lam in config.kl_weights:
        torch.manual_seed(seed)
        model = build_model("bahdanau-bam", config, kl_weight=lam)
        model.num_samples = config.val_mc_samples
        fit = train_seq2seq(model, train, val, config, seed=seed, progress=progress)
        torch.manual_seed(seed)
        nll = validation_nll(model, val)
        tried.append({"kl_weight": lam, "val_char_accuracy": fit["val_char_accuracy"],
                      "val_nll": nll, "best_epoch": fit["best_epoch"]})
        key = (fit["val_char_accuracy"], -nll)
        if best is None or key > best[0]:
            best = (key, model, fit, lam)
    _, model, fit, lam = best
    model.num_samples = config.mc_samples
    return model, {**fit, "kl_weight": lam, "kl_weight_search": tried}


def summarize(records: list[dict]) -> list[dict]:
    """Mean and sample sd over seeds of the test metrics, per model."""
    rows = []
    names = list(dict.fromkeys(r["model"] for r in records))
    order = {m: i for i, m in enumerate(DEFAULT_MODELS)}
    for name in sorted(names, key=lambda m: order.get(m, len(order))):
        rs = [r for r in records if r["model"] == name]
        row = {"model": name, "seeds": len(rs), "parameters": rs[0]["parameters"],
               "max_epochs": rs[0].get("max_epochs")}
        for key in ("exact_match", "char_accuracy", "bleu", "train_seconds", "best_epoch"):
            vals = [r[key] for r in rs]
            row[key] = statistics.fmean(vals)
            row[key + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def _table(records, config, wall, seeds) -> str:
    lines = [
        "# Written dates -> ISO 8601: encoder-decoders with and without attention",
        "",
        f"Train / validation / test: {config.sizes[0]} / {config.sizes[1]} / {config.sizes[2]} "
        "distinct dates in 8 written formats (data seed "
        f"{config.data_seed}). Greedy decoding. Mean +- sd over {seeds} seed(s). Exact match "
        "and character accuracy in %, BLEU: sacrebleu corpus BLEU with character "
        "tokenisation; the epoch is chosen on the validation character accuracy.",
        "",
        "| model | parameters | exact match (%) | char. accuracy (%) | BLEU (char) | best epoch "
        "/ most | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summarize(records):
        lines.append(
            f"| {LABELS.get(r['model'], r['model'])} | {r['parameters']} | "
            f"{100 * r['exact_match']:.2f} +- {100 * r['exact_match_sd']:.2f} | "
            f"{100 * r['char_accuracy']:.2f} +- {100 * r['char_accuracy_sd']:.2f} | "
            f"{r['bleu']:.2f} +- {r['bleu_sd']:.2f} | {r['best_epoch']:.1f} / "
            f"{r['max_epochs']} | "
            f"{r['train_seconds']:.0f} +- {r['train_seconds_sd']:.0f} |")
    lines += _alignment_table(records)
    lines += [
        "",
        f"Training time summed over the runs: "
        f"{sum(r['train_seconds'] for r in records) / 60:.0f} min wall clock (this invocation: "
        f"{wall / 60:.1f} min) on {platform.machine()} CPU with {config.threads} torch "
        f"thread(s) on a shared machine, torch {torch.__version__}.",
        "",
        "Settings: " + json.dumps(asdict(config), sort_keys=True),
        "",
    ]
    return "\n".join(lines)


def _alignment_table(records) -> list[str]:
    """Markdown lines summarising the Bayesian alignment's posterior sd (``bahdanau-bam``)."""
    rs = [r for r in records if r.get("alignment")]
    if not rs:
        return []

    def ms(key, scale=1.0, digits=3):
        vals = [scale * r["alignment"][key] for r in rs]
        vals = [v for v in vals if not math.isnan(v)]
        if not vals:
            return "n/a"
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.fmean(vals):.{digits}f} +- {sd:.{digits}f}" + (
            f" ({len(vals)} of {len(rs)} seeds)" if len(vals) < len(rs) else "")

    a = rs[0]["alignment"]
    lines = [
        "",
        "## Posterior sd of the Bayesian alignment (GRU + Bayesian Bahdanau, BAM)",
        "",
        f"Test split, {a['num_samples']} Monte-Carlo alignment paths per date, mean +- sd over "
        f"{len(rs)} seed(s). KL coefficient chosen per seed on validation: "
        + ", ".join(f"seed {r['seed']}: {r['kl_weight']:g}" for r in rs) + ". "
        "Per output character, its score is the largest posterior sd over source positions; "
        "AUROC of that score for telling wrongly from rightly decoded characters (0.5 = no "
        "information), beside the AUROC of the predictive's own doubt 1 - max_v p(y_t = v).",
        "",
        "| mean sd, cells with mean weight > 0.1 | mean sd, all cells | max-sd score, right "
        "chars | max-sd score, wrong chars | wrong chars (of "
        f"{a['characters']}) | AUROC max-sd | AUROC 1 - max p |",
        "|---|---|---|---|---|---|---|",
        f"| {ms('mean_sd_attended')} | {ms('mean_sd_all')} | {ms('max_sd_right')} | "
        f"{ms('max_sd_wrong')} | {ms('char_errors', digits=1)} | {ms('auroc_sd')} | "
        f"{ms('auroc_confidence')} |",
    ]
    grid = {}
    for r in rs:
        for t in r.get("kl_weight_search", []):
            grid.setdefault(t["kl_weight"], []).append(t)
    if grid:
        lines += ["", "Validation per KL coefficient (mean over seeds; the choice is the best "
                  "character accuracy, ties broken by the lower NLL of the Monte-Carlo "
                  "predictive, nats per character):", "",
                  "| KL coefficient | val. char. accuracy (%) | val. NLL | best epoch |",
                  "|---|---|---|---|"]
        for lam, ts in sorted(grid.items()):
            lines.append(
                f"| {lam:g} | {100 * statistics.fmean(t['val_char_accuracy'] for t in ts):.2f} "
                f"| {statistics.fmean(t['val_nll'] for t in ts):.4f} | "
                f"{statistics.fmean(t['best_epoch'] for t in ts):.1f} |")
    return lines


def _plot_scores(records, out, name):
    from matplotlib.figure import Figure

    rows = summarize(records)
    xs = np.arange(len(rows))
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_em, ax_bleu = fig.subplots(1, 2)
    for ax, key, scale, label in ((ax_em, "exact_match", 100, "test exact match (%)"),
                                  (ax_bleu, "bleu", 1, "test BLEU (character)")):
        ax.bar(xs, [scale * r[key] for r in rows], yerr=[scale * r[key + "_sd"] for r in rows],
               color=[f"C{i}" for i in range(len(rows))], alpha=0.75, capsize=3)
        for i, r in enumerate(rows):
            pts = [scale * q[key] for q in records if q["model"] == r["model"]]
            ax.scatter(np.full(len(pts), i), pts, s=10, color="0.3", zorder=3)
        ax.set_xticks(xs, [LABELS.get(r["model"], r["model"]) for r in rows], rotation=30,
                      ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, 100)
    ax_em.set_title("exact match (mean +- sd, dots = seeds)")
    ax_bleu.set_title("BLEU")
    out.savefig(name, fig, dpi=120)


def attention_maps(model: nn.Module, split, index: list[int]):
    """Cross-attention weights ``(len(index), 10, S)`` of greedy decoding, the source strings
    and the predicted ISO strings (None weights for a model without attention)."""
    model.eval()
    src, pm = split.source[index], split.source_padding_mask[index]
    S = int((~pm).sum(1).max())
    tokens, w = model.greedy(src[:, :S], pm[:, :S], TARGET_LENGTH)
    return w, [split.written[i] for i in index], decode_target(tokens)


def _plot_attention(models: dict, test, out, name, index=(0, 1, 2, 3)):
    from matplotlib.figure import Figure

    models = {k: m for k, m in models.items() if k != "gru"}
    if not models:
        return
    index = [i for i in index if i < len(test)]
    fig = Figure(figsize=(3.6 * len(index), 2.4 * len(models) + 0.4), layout="constrained")
    axes = np.array(fig.subplots(len(models), len(index), squeeze=False))
    for row, (mname, model) in enumerate(models.items()):
        w, written, hyps = attention_maps(model, test, list(index))
        signed = bool((w < 0).any())
        for col, i in enumerate(index):
            ax = axes[row, col]
            L = len(written[col])
            ww = w[col, :, :L].numpy()
            if signed:
                lim = max(1e-12, float(np.abs(ww).max()))
                im = ax.imshow(ww, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
            else:
                im = ax.imshow(ww, cmap="Reds", vmin=0, aspect="auto")
            ax.set_xticks(range(L), list(written[col]), fontsize=6)
            ax.set_yticks(range(TARGET_LENGTH), list(hyps[col].ljust(TARGET_LENGTH)),
                          fontsize=6)
            if col == 0:
                ax.set_ylabel(LABELS.get(mname, mname), fontsize=8)
            ok = "right" if hyps[col] == test.iso[i] else f"wrong; truth {test.iso[i]}"
            ax.set_title(f"{written[col]} ({ok})", fontsize=7)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("cross-attention of greedy decoding (rows: output characters, columns: "
                 "source characters); last decoder layer, heads averaged", fontsize=9)
    out.savefig(name, fig, dpi=110)


def run_seq2seq_bench(out, *, models=DEFAULT_MODELS, seeds: int = 3, first_seed: int = 0,
                      config: Seq2SeqConfig | None = None, resume=(), train: bool = True,
                      notes: str = "", progress: bool = True) -> dict:
    """Run the benchmark; write ``results.json`` (after every run), ``results.md``,
    ``results.png``, ``attention.png`` and ``seed0_models.pt``.

    Args:
        out: output folder or :class:`bayesattn.io.OutputDir`.
        models: names (``gru``, ``bahdanau``, ``transformer-KIND``).
        seeds: how many seeds; first_seed: the first (seeds ``first_seed ..``).
        config: :class:`Seq2SeqConfig`.
        resume: ``results.json`` files of earlier runs with the same settings (e.g. other
            seeds run in parallel): their records are kept and their runs skipped; seed 0's
            models are read from a ``seed0_models.pt`` beside one of them.
        train: run the missing runs (False: only write the outputs of the ``resume`` records)
        notes: a paragraph added to ``results.md`` (e.g. how the run was cut to fit).
        progress: print a line per run.

    Returns:
        ``{"config": ..., "records": [...]}`` as in ``results.json``.

    Raises:
        bayesattn.errors.UsageError: unknown model, ``seeds < 1``, ``first_seed < 0``, a
            resume file with other settings.
    """
    from .. import functional as Fn
    from ..errors import UsageError

    config = config or Seq2SeqConfig()
    names = list(dict.fromkeys(_model_name(m) for m in models))
    if not names:
        raise UsageError("--models lists no model")
    if not (isinstance(seeds, int) and seeds >= 1 and first_seed >= 0):
        raise UsageError(f"--seeds must be positive and --first-seed >= 0, got {seeds}, "
                         f"{first_seed}")
    if not isinstance(out, OutputDir):
        Path(out).mkdir(parents=True, exist_ok=True)
        out = OutputDir.plain(out)
    cfg = json.loads(json.dumps(asdict(config)))
    # may differ between runs that are merged (kept in each record; the last three only
    # concern bahdanau-bam, whose records hold the KL grid tried)
    budget = ("epochs", "patience", "kl_weights", "mc_samples", "val_mc_samples")
    same = {k: v for k, v in cfg.items() if k not in budget}
    records, seed0 = [], {}
    for path in [resume] if isinstance(resume, str | Path) else resume:
        previous = json.loads(Path(path).read_text())
        theirs = {k: v for k, v in previous.get("config", {}).items() if k not in budget}
        if theirs != same:
            raise UsageError(f"{path}: its settings differ from this run's")
        for r in previous["records"]:
            r.setdefault("max_epochs", previous["config"]["epochs"])
            r.setdefault("patience", previous["config"]["patience"])
        records += [r for r in previous["records"]
                    if (r["model"], r["seed"]) not in {(q["model"], q["seed"]) for q in records}]
        saved = Path(path).parent / "seed0_models.pt"
        if saved.exists():
            for name, state in torch.load(saved, weights_only=True).items():
                if name in seed0:
                    continue
                seed0[name] = build_model(name, config)
                seed0[name].load_state_dict(state)
    done = {(r["model"], r["seed"]) for r in records}
    results = {"config": cfg, "records": records}
    splits = make_dates(config.sizes, seed=config.data_seed)
    start = time.perf_counter()
    validating = Fn.is_validating()
    Fn.set_validation(False)
    try:
        with torch_threads(config.threads):
            for seed in range(first_seed, first_seed + seeds):
                for name in names:
                    if (name, seed) in done or not train:
                        continue
                    record, model = run_one(name, seed, splits, config)
                    if seed == 0:
                        seed0[name] = model
                        with out.file("seed0_models.pt") as tmp:
                            torch.save({k: m.state_dict() for k, m in seed0.items()}, tmp)
                    records.append(record)
                    out.write_text("results.json", json.dumps(results, indent=1) + "\n")
                    if progress:
                        print(f"{name:>28} seed={seed} exact={record['exact_match']:.4f} "
                              f"bleu={record['bleu']:.2f} epoch={record['best_epoch']} "
                              f"train={record['train_seconds']:.0f}s", flush=True)
            wall = time.perf_counter() - start
            all_seeds = len({r["seed"] for r in records})
            out.write_text("results.json", json.dumps(results, indent=1) + "\n")
            text = _table(records, config, wall, all_seeds)
            out.write_text("results.md",
                           text + (f"\n{notes.strip()}\n" if notes.strip() else ""))
            _plot_scores(records, out, "results.png")
            _plot_attention(seed0, splits[2], out, "attention.png")
            if "bahdanau-bam" in seed0:
                torch.manual_seed(0)
                plot_alignment_posterior(seed0.get("bahdanau"), seed0["bahdanau-bam"],
                                         splits[2], out, "alignment_sd.png")
            if seed0 and not (out / "seed0_models.pt").exists():
                with out.file("seed0_models.pt") as tmp:
                    torch.save({k: m.state_dict() for k, m in seed0.items()}, tmp)
    finally:
        Fn.set_validation(validating)
    if progress:
        print((out / "results.md").read_text())
    return results


# -- ``bayesattn bench seq2seq`` (see bayesattn.experiments.benches)

HELP = ("written dates to ISO: GRU, Bahdanau, Bayesian-alignment Bahdanau and Transformer "
        "encoder-decoders (D2L 11.4-11.7)")


def add_arguments(parser) -> None:
    """Options of ``bayesattn bench seq2seq`` beside the common ones."""
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated models: gru, bahdanau, bahdanau-bam, "
                             "transformer-KIND "
                             f"(default {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs (default 8)")
    parser.add_argument("--patience", type=int, default=None,
                        help="epochs without a validation gain before stopping (default 2)")
    parser.add_argument("--kl-weights", default=None,
                        help="comma-separated KL coefficients tried for bahdanau-bam "
                             "(default 0.001,0.01,0.1,1)")
    parser.add_argument("--resume", default=None,
                        help="comma-separated results.json files of earlier runs to continue")
    parser.add_argument("--notes", default="", help="a paragraph added to results.md")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the tables and plots of the --resume files")


def run(args, out) -> None:
    """Run ``bayesattn bench seq2seq`` into the claimed output folder ``out``.

    Raises:
        UsageError: ``--epochs`` or ``--patience`` below 1; ``--kl-weights`` not a list of
            numbers >= 0; and the option errors of :func:`run_seq2seq_bench`.
    """
    from ..errors import UsageError

    models = [m for m in args.models.split(",") if m.strip()]
    config = Seq2SeqConfig()
    for flag, value in (("--epochs", args.epochs), ("--patience", args.patience)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    kl_weights = config.kl_weights
    if args.kl_weights:
        try:
            kl_weights = tuple(float(w) for w in args.kl_weights.split(","))
        except ValueError:
            kl_weights = ()
        if not kl_weights or not all(math.isfinite(w) and w >= 0 for w in kl_weights):
            raise UsageError(f"--kl-weights must list numbers >= 0, got {args.kl_weights!r}")
    config = Seq2SeqConfig(epochs=args.epochs or config.epochs,
                           patience=args.patience or config.patience, kl_weights=kl_weights)
    seeds = args.seeds
    if args.quick:
        config = Seq2SeqConfig(sizes=(300, 50, 50), epochs=1, d_model=16, hidden=16,
                               embed_dim=8, num_layers=1, dim_feedforward=16,
                               kl_weights=(0.1,), mc_samples=8, val_mc_samples=4)
        seeds = 1
    resume = [p for p in (args.resume or "").split(",") if p]
    run_seq2seq_bench(out, models=models, seeds=seeds, first_seed=args.first_seed,
                      config=config, resume=resume, train=not args.report_only, notes=args.notes)
