"""``bayesattn bench fewshot``: in-context few-shot regression and few-shot classification.

Part 1, in-context regression (:mod:`bayesattn.experiments.incontext`): small Transformers of
one size (:class:`~bayesattn.experiments.incontext.InContextTransformer`: width 32, 2 layers,
4 heads) with softmax, linear, least-squares (Intention), softmax-Intention, kernel and GP
attention are trained on prompts of ``(x_i, y_i)`` pairs drawn from a task family and
evaluated on fixed test prompts for every prompt length ``n = 1..max_examples``, beside
references that need no training (OLS, ridge at the true noise = Bayes-optimal for the linear
families, the Intention layer with identity projections, k-NN, GP attention with identity
projections, a scikit-learn GP with per-prompt fitted hyperparameters) and, for the
sinusoids, the Bayes-optimal posterior mean by quadrature
(:func:`~bayesattn.experiments.incontext.sinusoid_bayes_prefixes`). Reported: test MSE
against ``n``, each model's gap to the Bayes-optimal curve (linear families and sinusoids;
none is computed for ``relu_net``), and the coverage of 90 % intervals of the kinds that give
a predictive variance.

Part 2, few-shot classification (:mod:`bayesattn.experiments.fewshot_digits`): 5-way 1-shot
and 5-shot episodes on scikit-learn's digits (meta-train classes 0-4, meta-test 5-9),
softmax (matching network), kernel, least-squares, softmax-Intention and GP attention heads
over the support set on one shared embedding; accuracy with 95 % confidence intervals.

Hyperparameters (k of k-NN, GP-attention lengthscale/ridge, transformer early stopping, the
classification heads' settings) are chosen on validation tasks / held-out meta-train images
only. Outputs: ``results.json``, ``results.md``, ``mse_vs_examples.png``,
``digits_accuracy.png``; written after every finished seed round (incremental).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import functional as Fn
from ..inference.threads import torch_threads
from . import fewshot_digits as dg
from . import incontext as ic

__all__ = ["KINDS", "FewShotConfig", "run_fewshot", "HELP", "add_arguments", "run"]

#: attention kinds of the in-context Transformers, in table order
KINDS = ("softmax", "linear", "least_squares", "softmax_least_squares", "kernel", "gp")
LABELS = {"softmax": "softmax", "linear": "linear (elu+1)", "least_squares": "least squares",
          "softmax_least_squares": "softmax-Intention", "kernel": "kernel (Gaussian)",
          "gp": "GP (RBF)", "ridge": "ridge at true noise (Bayes for linear)",
          "bayes": "Bayes (posterior mean by quadrature)",
          "intention": "Intention layer, identity projections", "ols": "OLS (min-norm)",
          "knn": "k-NN", "gp_attention": "GP attention, identity projections",
          "sklearn_gp": "GP, fitted hyperparameters (sklearn)"}
REFERENCES = ("ridge", "intention", "ols", "knn", "gp_attention", "sklearn_gp")
VARIANCE_MODELS = ("ridge", "intention", "gp_attention", "sklearn_gp")


@dataclass(frozen=True)
class FewShotConfig:
    """Sizes of one run (the defaults are the committed full run's).

    Attributes:
        trained_families: families on which the Transformers are trained.
        reference_families: families evaluated with the references only.
        kinds: attention kinds of the Transformers.
        seeds: seeds ``0..seeds-1`` (training streams and initialisations; the test prompts
            are fixed per family).
        steps, batch, lr: Transformer training (AdamW, one-cycle).
        evals: validation evaluations per training run (the best is kept).
        width, depth, heads: Transformer size (the same for every kind).
        test_prompts, val_prompts, queries: evaluation prompts (``queries`` per prompt).
        gp_prompts: test prompts for the per-prompt scikit-learn GP (at 4 prompt lengths).
        digit_steps, digit_val_episodes, digit_test_episodes: few-shot classification.
    """

    trained_families: tuple = ("linear5", "linear10", "linear20", "sinusoid", "relu_net")
    reference_families: tuple = ()
    kinds: tuple = KINDS
    seeds: int = 3
    steps: int = 500
    batch: int = 64
    lr: float = 2e-3
    evals: int = 8
    width: int = 32
    depth: int = 2
    heads: int = 4
    test_prompts: int = 256
    val_prompts: int = 64
    queries: int = 8
    gp_prompts: int = 12
    digit_steps: int = 400
    digit_val_episodes: int = 300
    digit_test_episodes: int = 1000

    @classmethod
    def quick(cls) -> FewShotConfig:
        """A seconds-long configuration for CI (``--quick``)."""
        return cls(trained_families=("linear5",), reference_families=(), kinds=KINDS, seeds=1,
                   steps=8, batch=16, evals=1, test_prompts=8, val_prompts=8, queries=4,
                   gp_prompts=1, digit_steps=10, digit_val_episodes=10, digit_test_episodes=20)


# ----------------------------------------------------------------------------- regression
def _prompts(fam, count, queries, seed):
    gen = torch.Generator().manual_seed(seed)
    return ic.sample_prompts(fam, count, fam.max_examples, queries, gen)


def _gp_grid(fam):
    m = fam.max_examples
    return sorted({1, max(1, m // 4), max(1, m // 2), m})


def _mse_curve(pred, y_q):
    """``pred (N, B, Q)`` -> MSE per prompt length ``(N,)``."""
    return ((torch.as_tensor(pred, dtype=torch.float64) - y_q.double()) ** 2).mean((1, 2))


def _references(fam, val, test, cfg):
    """Curves, coverage and chosen hyperparameters of the training-free references."""
    xc, yc, xq, yq = test
    s2, s = fam.noise**2, fam.noise
    out = {"mse": {}, "coverage": {}, "hyper": {}}

    def both(fn):
        pairs = [fn(xc[:, :n], yc[:, :n], xq) for n in range(1, xc.shape[1] + 1)]
        mean, var = zip(*pairs, strict=True)
        return torch.stack(mean), torch.stack(var)

    x64 = [t.double() for t in test]
    for name, fn in (("ridge", ic.ridge_predict), ("intention", ic.intention_predict)):
        mean, var = zip(*(fn(x64[0][:, :n], x64[1][:, :n], x64[2], ridge=s2, noise=s)
                          for n in range(1, xc.shape[1] + 1)), strict=True)
        mean, var = torch.stack(mean), torch.stack(var)
        out["mse"][name] = _mse_curve(mean, yq).tolist()
        out["coverage"][name] = [ic.interval_coverage(m, v, yq)
                                 for m, v in zip(mean, var, strict=True)]
        out[f"_{name}_mean"] = mean
    out["intention_max_abs_diff_to_ridge"] = float(
        (out.pop("_intention_mean") - out.pop("_ridge_mean")).abs().max())
    if fam.kind == "sinusoid":  # the Bayes-optimal curve, by quadrature over (A, phi)
        out["mse"]["bayes"] = _mse_curve(
            ic.sinusoid_bayes_prefixes(xc, yc, xq, noise=fam.noise), yq).tolist()
    out["mse"]["ols"] = _mse_curve(
        ic.predict_prefixes(ic.ols_predict, xc, yc, xq), yq).tolist()
    # k-NN: k on validation prompts
    scores = {k: float(_mse_curve(ic.predict_prefixes(
        lambda a, b, c, k=k: ic.knn_predict(a, b, c, k), *val[:3]), val[3]).mean())
        for k in (1, 2, 3, 5, 8)}
    k = min(scores, key=scores.get)
    out["hyper"]["knn_k"] = k
    out["mse"]["knn"] = _mse_curve(ic.predict_prefixes(
        lambda a, b, c: ic.knn_predict(a, b, c, k), xc, yc, xq), yq).tolist()
    # GP attention with identity projections: (lengthscale, ridge) and amplitude on validation
    sc = fam.y_scale
    root = fam.dim**0.5
    best = None
    for ls in (0.3 * root, root, 3 * root, 10 * root):
        for ridge in (0.003, 0.03, 0.3):
            mean, lat = zip(*(ic.gp_attention_predict(val[0][:, :n].double(),
                                                      val[1][:, :n].double() / sc,
                                                      val[2].double(), lengthscale=ls,
                                                      ridge=ridge)
                              for n in range(1, val[0].shape[1] + 1)), strict=True)
            mse = float(_mse_curve(torch.stack(mean) * sc, val[3]).mean())
            if best is None or mse < best[0]:
                resid = ((torch.stack(mean) - val[3].double() / sc) ** 2 / torch.stack(lat))
                best = (mse, ls, ridge, float(resid.mean()))
    _, ls, ridge, amp2 = best
    out["hyper"].update(gp_attention_lengthscale=ls, gp_attention_ridge=ridge,
                        gp_attention_amplitude2=amp2)
    mean, var = both(lambda a, b, c: ic.gp_attention_predict(
        a.double(), b.double() / sc, c.double(), lengthscale=ls, ridge=ridge, amplitude2=amp2))
    out["mse"]["gp_attention"] = _mse_curve(mean * sc, yq).tolist()
    out["coverage"]["gp_attention"] = [ic.interval_coverage(m * sc, v * sc**2, yq)
                                       for m, v in zip(mean, var, strict=True)]
    # scikit-learn GP on a subset of prompts and lengths
    grid, P = _gp_grid(fam), cfg.gp_prompts
    sk_mse, sk_cov, sub_ridge = [], [], []
    for n in grid:
        mean, var = ic.sklearn_gp_predict(xc[:P, :n], yc[:P, :n], xq[:P])
        sk_mse.append(float(((mean - yq[:P].double().numpy()) ** 2).mean()))
        sk_cov.append(ic.interval_coverage(mean, var, yq[:P]))
        rm, _ = ic.ridge_predict(x64[0][:P, :n], x64[1][:P, :n], x64[2][:P], ridge=s2, noise=s)
        sub_ridge.append(float(((rm - yq[:P].double()) ** 2).mean()))
    out["sklearn_gp"] = {"n": grid, "prompts": P, "mse": sk_mse, "coverage": sk_cov,
                         "ridge_mse_same_prompts": sub_ridge}
    return out


def _train_one(fam, kind, seed, val, test, cfg):
    model = ic.InContextTransformer(fam.dim, fam.y_scale, width=cfg.width, depth=cfg.depth,
                                    heads=cfg.heads, ff=2 * cfg.width, attention=kind)
    start = time.perf_counter()
    hist = ic.train_in_context(model, fam, steps=cfg.steps, batch=cfg.batch, lr=cfg.lr,
                               seed=seed, validation=val,
                               eval_every=max(1, cfg.steps // cfg.evals))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        pred = ic.predict_prefixes(model, *test[:3])
    return {"mse": _mse_curve(pred, test[3]).tolist(), "train_seconds": round(seconds, 2),
            "best_step": hist["best_step"], "val_mse": hist["val_mse"]}


# ----------------------------------------------------------------------------- digits
def _digits_seed(seed, cfg):
    split = dg.load_digit_split(seed)
    start = time.perf_counter()
    model = dg.train_embedding(split, seed=seed, steps=cfg.digit_steps)
    result = {"train_seconds": round(time.perf_counter() - start, 2)}
    gen = torch.Generator().manual_seed(5000 + seed)
    for shots in (1, 5):
        val = dg.sample_episodes(split["val"], cfg.digit_val_episodes, 5, shots, 10, gen)
        test = dg.sample_episodes(split["test"], cfg.digit_test_episodes, 5, shots, 15, gen)
        for emb_name, emb in (("learned", model), ("pixels", dg.PixelEmbedding())):
            for head in dg.HEADS:
                params, val_acc = dg.choose_head(emb, head, val, 5)
                acc = dg.episode_accuracy(emb, head, test, 5, params)
                mean, half = dg.mean_ci(acc.numpy())
                result[f"{emb_name}/{head}/{shots}"] = {
                    "accuracy": mean, "ci95": half, "params": params, "val_accuracy": val_acc}
    return result


# ----------------------------------------------------------------------------- report
def _msd(values):
    a = np.asarray(values, dtype=np.float64)
    return a.mean(0), (a.std(0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1:]))


def _fmt(m, s=None, digits=3):
    return f"{m:.{digits}g}" if s is None else f"{m:.{digits}g} ± {s:.2g}"


def _bayes(fam, fam_res):
    """The Bayes-optimal MSE curve of a family (``None`` where it is not computed)."""
    mse = fam_res["references"]["mse"]
    curve = mse.get("ridge") if fam.kind == "linear" else mse.get("bayes")
    return None if curve is None else np.asarray(curve)


def _excess(curve, bayes):
    """Mean over ``n`` of ``MSE / Bayes - 1`` (or of the MSE where no Bayes curve exists)."""
    curve = np.asarray(curve)
    return float((curve / bayes - 1).mean() if bayes is not None else curve.mean())


def _summary(results, cfg) -> list[str]:
    """One table: each Transformer's excess MSE over Bayes per family (mean ± sd over seeds)."""
    reg, seeds_done = results["regression"], results["seeds_done"]
    names = [n for n in reg if reg[n]["transformers"]]
    if not names or not seeds_done:
        return []
    fams = {n: ic.family(n) for n in names}
    lines = ["## Summary: mean over n of MSE / Bayes − 1 (relu_net: mean MSE over n, no "
             "Bayes curve)", "",
             "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for kind in cfg.kinds:
        cells = []
        for name in names:
            runs = reg[name]["transformers"].get(kind, {})
            vals = [_excess(runs[str(s)]["mse"], _bayes(fams[name], reg[name]))
                    for s in range(seeds_done) if str(s) in runs]
            m, sd = _msd(np.asarray(vals)[:, None]) if vals else (None, None)
            cells.append(_fmt(float(m[0]), float(sd[0])) if vals else "-")
        lines.append(f"| Transformer, {LABELS[kind]} | " + " | ".join(cells) + " |")
    for ref in ("intention", "ols", "knn", "gp_attention"):
        cells = [_fmt(_excess(reg[n]["references"]["mse"][ref], _bayes(fams[n], reg[n])))
                 for n in names]
        lines.append(f"| {LABELS[ref]} | " + " | ".join(cells) + " |")
    return lines + ["", "0 is the Bayes-optimal predictor (ridge at the true noise for the "
                    "linear families, the quadrature posterior mean for the sinusoids); the "
                    "Intention layer with identity projections is ridge regression, hence "
                    "Bayes-optimal on the linear families.", ""]


def _table(results, cfg, wall) -> str:
    reg, lines = results["regression"], []
    seeds_done = results["seeds_done"]
    lines += ["# bayesattn bench fewshot", "",
              f"Seeds finished: {seeds_done} of {cfg.seeds}; wall time {wall / 60:.1f} min on "
              f"one torch thread ({platform.processor() or platform.machine()}, a shared "
              "2-core machine). Transformers: width "
              f"{cfg.width}, {cfg.depth} layers, {cfg.heads} heads, {cfg.steps} AdamW steps of "
              f"{cfg.batch} prompts (lr {cfg.lr}, one-cycle), the checkpoint with the lowest "
              f"validation MSE among {cfg.evals} evaluations. "
              f"Test: {cfg.test_prompts} fixed prompts x {cfg.queries} queries per family; "
              "MSE includes the observation noise (a perfect predictor scores sigma^2). "
              f"Transformers trained on {', '.join(cfg.trained_families)}"
              + (f"; {', '.join(cfg.reference_families)} with the training-free references "
                 "only (to fit the compute budget)" if cfg.reference_families else "")
              + ".", ""]
    lines += _summary(results, cfg)
    lines += ["## In-context regression: test MSE", ""]
    for name, fam_res in reg.items():
        fam = ic.family(name)
        N = fam.max_examples
        cols = sorted({1, max(1, fam.dim), N} if fam.kind == "linear" else {1, 5, N})
        bayes = _bayes(fam, fam_res)
        head = "| model | " + " | ".join(f"n = {c}" for c in cols)
        head += (" | mean MSE / Bayes − 1 over n |" if bayes is not None
                 else " | mean MSE over n |")
        lines += [f"### {name} (d = {fam.dim}, sigma = {fam.noise}, n = 1..{N})", "", head,
                  "|" + "---|" * (len(cols) + 2)]
        rows = []
        for kind in cfg.kinds:
            runs = [fam_res["transformers"][kind][str(s)]["mse"]
                    for s in range(seeds_done) if str(s) in fam_res["transformers"].get(kind, {})]
            if not runs:
                continue
            m, s = _msd(runs)
            gap_m, gap_s = _msd([_excess(r, bayes) for r in runs])
            rows.append((f"Transformer, {LABELS[kind]}", [_fmt(m[c - 1], s[c - 1]) for c in cols],
                         _fmt(float(gap_m), float(gap_s))))
        refs = ("bayes",) * ("bayes" in fam_res["references"]["mse"])
        for ref in refs + ("ridge", "intention", "ols", "knn", "gp_attention"):
            curve = np.asarray(fam_res["references"]["mse"][ref])
            rows.append((LABELS[ref], [_fmt(curve[c - 1]) for c in cols],
                         _fmt(_excess(curve, bayes))))
        for label, vals, summ in rows:
            lines.append(f"| {label} | " + " | ".join(vals) + f" | {summ} |")
        sk = fam_res["references"]["sklearn_gp"]
        lines += ["", f"{LABELS['sklearn_gp']} on the first {sk['prompts']} test prompts: "
                  + ", ".join(f"n = {n}: {m:.3g} (ridge on the same prompts {r:.3g})"
                              for n, m, r in zip(sk["n"], sk["mse"],
                                                 sk["ridge_mse_same_prompts"], strict=True)) + ".",
                  f"Intention layer vs ridge (float64): max |prediction difference| = "
                  f"{fam_res['references']['intention_max_abs_diff_to_ridge']:.2e}.", ""]
    lines += ["## Coverage of central 90 % predictive intervals (mean over n; first, last n)",
              "", "| family | " + " | ".join(LABELS[m] for m in VARIANCE_MODELS) + " |",
              "|---|" + "---|" * len(VARIANCE_MODELS)]
    for name, fam_res in reg.items():
        cov = fam_res["references"]["coverage"]
        cells = [f"{np.mean(cov[m]):.3f} ({cov[m][0]:.2f}, {cov[m][-1]:.2f})"
                 for m in VARIANCE_MODELS[:-1]]
        sk = fam_res["references"]["sklearn_gp"]["coverage"]
        cells.append(f"{np.mean(sk):.3f} ({sk[0]:.2f}, {sk[-1]:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "The Transformers are trained for the mean (MSE) and give no variance; the "
              "kinds with a closed-form variance are least squares (Intention) and GP "
              "attention, shown here with identity projections.", ""]
    dig = results["digits"]
    if dig:
        lines += ["## Few-shot classification: scikit-learn digits, 5-way", "",
                  f"Meta-train classes 0-4 (80 % of their images; the other 20 % give the "
                  f"validation episodes), meta-test classes 5-9. Embeddings: *learned*, one MLP "
                  f"per seed trained {cfg.digit_steps} steps with the matching-network "
                  f"(softmax) loss, then frozen; *pixels*, the L2-normalised pixels (no "
                  f"training). Each head's hyperparameters chosen on {cfg.digit_val_episodes} "
                  f"validation episodes; {cfg.digit_test_episodes} test episodes x 75 queries "
                  "per seed. Accuracy (%): mean ± sd over seeds [mean 95 % CI half-width over "
                  "episodes within a seed].", "",
                  "| embedding | head | 1-shot | 5-shot | chosen (seed 0, 1-shot / 5-shot) |",
                  "|---|---|---|---|---|"]
        for emb in ("learned", "pixels"):
            for head in dg.HEADS:
                cells = []
                for shots in (1, 5):
                    accs = [d[f"{emb}/{head}/{shots}"]["accuracy"] for d in dig]
                    cis = [d[f"{emb}/{head}/{shots}"]["ci95"] for d in dig]
                    m, s = _msd(np.asarray(accs)[:, None])
                    cells.append(f"{100 * m[0]:.1f} ± {100 * s[0]:.1f} "
                                 f"[± {100 * np.mean(cis):.1f}]")
                chosen = (f"{dig[0][f'{emb}/{head}/1']['params']} / "
                          f"{dig[0][f'{emb}/{head}/5']['params']}")
                lines.append(f"| {emb} | {head} | " + " | ".join(cells) + f" | {chosen} |")
    return "\n".join(lines) + "\n"


def _plot(results, cfg, out) -> None:
    import matplotlib.pyplot as plt

    reg = results["regression"]
    if reg:
        fig, axes = plt.subplots(1, len(reg), figsize=(4.2 * len(reg), 3.6), squeeze=False)
        for ax, (name, fam_res) in zip(axes[0], reg.items(), strict=True):
            n = np.arange(1, ic.family(name).max_examples + 1)
            for kind, runs in fam_res["transformers"].items():
                m, s = _msd([r["mse"] for r in runs.values()])
                ax.plot(n, m, label=LABELS[kind], lw=1.2)
                ax.fill_between(n, m - s, m + s, alpha=0.15)
            for ref, style in (("ridge", "k-"), ("ols", "k:"), ("knn", "k-."),
                               ("gp_attention", "k--"), ("bayes", "r-")):
                if ref in fam_res["references"]["mse"]:
                    ax.plot(n, fam_res["references"]["mse"][ref], style, label=LABELS[ref],
                            lw=1.5)
            sk = fam_res["references"]["sklearn_gp"]
            ax.plot(sk["n"], sk["mse"], "ko", ms=4, label=LABELS["sklearn_gp"])
            ax.set_yscale("log")
            if "bayes" in fam_res["references"]["mse"]:
                ax.legend(*[h[-2:-1] for h in ax.get_legend_handles_labels()], fontsize=7)
            ax.set_title(name)
            ax.set_xlabel("in-context examples n")
            ax.set_ylabel("test MSE")
        axes[0][0].legend(fontsize=6)
        fig.tight_layout()
        out.savefig("mse_vs_examples.png", fig, dpi=110)
        plt.close(fig)
    dig = results["digits"]
    if dig:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
        width = 0.38
        for ax, emb in zip(axes, ("learned", "pixels"), strict=True):
            for j, shots in enumerate((1, 5)):
                means = [np.mean([d[f"{emb}/{h}/{shots}"]["accuracy"] for d in dig])
                         for h in dg.HEADS]
                cis = [np.mean([d[f"{emb}/{h}/{shots}"]["ci95"] for d in dig])
                       for h in dg.HEADS]
                x = np.arange(len(dg.HEADS)) + (j - 0.5) * width
                ax.bar(x, means, width, yerr=cis, capsize=3, label=f"{shots}-shot")
            ax.set_xticks(np.arange(len(dg.HEADS)), dg.HEADS, fontsize=7)
            ax.set_ylim(0.4, 1.0)
            ax.set_title(f"5-way digits 5-9, {emb} embedding")
        axes[0].set_ylabel("test accuracy (95 % CI)")
        axes[0].legend()
        fig.tight_layout()
        out.savefig("digits_accuracy.png", fig, dpi=110)
        plt.close(fig)


def _save(results, cfg, out, start):
    wall = time.perf_counter() - start
    results["wall_seconds"] = round(wall, 1)
    out.write_text("results.json", json.dumps(results, indent=1) + "\n")
    out.write_text("results.md", _table(results, cfg, wall))
    _plot(results, cfg, out)


def run_fewshot(out, cfg: FewShotConfig | None = None, *, progress: bool = True) -> dict:
    """Run both parts and write the outputs into ``out`` (a :class:`bayesattn.io.OutputDir`).

    Order: references of every family, then one round per seed (every trained family and
    kind, then the digits), saving all outputs after each round, so a run stopped early
    leaves complete tables for the seeds it finished. One torch thread; argument validation
    of :mod:`bayesattn.functional` is off during the run (restored afterwards).

    Returns:
        the results dictionary written to ``results.json``.

    Raises:
        ValueError: an unknown family or attention kind, ``seeds < 1`` or ``steps < 1``.
    """
    cfg = cfg or FewShotConfig()
    if cfg.seeds < 1 or cfg.steps < 1:
        raise ValueError(f"seeds and steps must be positive, got {cfg.seeds}, {cfg.steps}")
    fams = {name: ic.family(name) for name in cfg.trained_families + cfg.reference_families}
    results = {"settings": asdict(cfg), "seeds_done": 0, "regression": {}, "digits": []}
    start = time.perf_counter()
    was_validating = Fn.is_validating()
    try:
        with torch_threads(1):
            Fn.set_validation(False)
            data = {}
            for i, (name, fam) in enumerate(fams.items()):
                val = _prompts(fam, cfg.val_prompts, cfg.queries, 20_000 + i)
                test = _prompts(fam, cfg.test_prompts, cfg.queries, 10_000 + i)
                data[name] = (val, test)
                results["regression"][name] = {"references": _references(fam, val, test, cfg),
                                               "transformers": {}}
                if progress:
                    print(f"[fewshot] references {name}: {time.perf_counter() - start:.0f} s",
                          flush=True)
            for seed in range(cfg.seeds):
                for name in cfg.trained_families:
                    fam, (val, test) = fams[name], data[name]
                    for kind in cfg.kinds:
                        res = _train_one(fam, kind, seed, val, test, cfg)
                        results["regression"][name]["transformers"].setdefault(
                            kind, {})[str(seed)] = res
                        if progress:
                            print(f"[fewshot] seed {seed} {name} {kind}: mean MSE "
                                  f"{np.mean(res['mse']):.3f}, {res['train_seconds']} s "
                                  f"(total {time.perf_counter() - start:.0f} s)", flush=True)
                results["digits"].append(_digits_seed(seed, cfg))
                results["seeds_done"] = seed + 1
                _save(results, cfg, out, start)
    finally:
        Fn.set_validation(was_validating)
    return results


# -- ``bayesattn bench fewshot`` (see bayesattn.experiments.benches)

HELP = "in-context few-shot regression and few-shot digit classification with each attention kind"


def add_arguments(parser) -> None:
    """Options of ``bayesattn bench fewshot`` beside the common ones."""
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="Transformer training steps (default 500; quick 8)")


def run(args, out) -> None:
    """Run ``bayesattn bench fewshot`` into the claimed output folder ``out``.

    Raises:
        bayesattn.errors.UsageError: a non-positive ``--seeds`` or ``--steps``.
    """
    from dataclasses import replace

    from ..errors import UsageError

    cfg = FewShotConfig.quick() if args.quick else FewShotConfig()
    for flag, value in (("seeds", args.seeds), ("steps", args.steps)):
        if value is not None:
            if value < 1:
                raise UsageError(f"--{flag} must be a positive integer, got {value}")
            cfg = replace(cfg, **{flag: value})
    run_fewshot(out, cfg, progress=True)
    print((out / "results.md").read_text())
