"""``bayesattn bench pcn``: the predictive-coding bridge on scikit-learn's 8x8 digits.

An :class:`~bayesattn.models.neuro.pcn.AttentionPCN` with one option per class
(``f_k(h) = W_k h + b_k``: a class-specific linear generator of the 64 pixels from a shared
latent state ``h``) is trained the predictive-coding way (Singh & Buckley 2023, AttentionPCN):
for each minibatch the label is clamped as the prior over options, the state descends the
free energy to equilibrium, and the weights take one Adam step at that equilibrium. A
held-out digit is then inferred with the label left free: its state descends
``F = -(1/T) log sum_k exp(-T e_k) + lambda |h|^2 / 2`` from ``h = 0``, and the inferred label
is the option with the largest attention ``pi = softmax(-T e)`` at equilibrium.

The data (1,797 digits, pixels scaled to ``[0, 1]``) ship with scikit-learn
(:func:`sklearn.datasets.load_digits`, no download). Each seed draws a stratified split:
30 % test, and of the rest 20 % validation (used only to choose ``T``) and 80 % training.
Training does not depend on ``T`` (the label clamps the option), so one trained layer is
evaluated at every ``T`` of the grid; the reported test accuracy is at the ``T`` chosen on the
validation split. Baselines on the same training split (scikit-learn): the nearest class mean
(the PCN's options at ``h = 0`` start there), Gaussian naive Bayes and logistic regression.

Outputs: ``results.json`` (settings, one record per seed and error measure, summary),
``results.md`` (tables), ``accuracy_vs_temperature.png`` and ``attention_maps.png`` (held-out
digits: the attention over options, the winning options' predictions, and the pixels whose
precision-weighted errors drive the state; the attention's path during inference).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..inference.threads import torch_threads
from ..io import OutputDir
from ..models.neuro.pcn import AttentionPCN, train_attention_pcn

__all__ = [
    "DigitsConfig",
    "QUICK",
    "load_digits_split",
    "fit_digits_pcn",
    "evaluate_temperatures",
    "attention_example",
    "run_one",
    "run_pcn_digits",
    "plot_accuracy_vs_temperature",
    "plot_attention_maps",
]


@dataclass(frozen=True)
class DigitsConfig:
    """Settings of the digits demonstration (defaults: the committed full run).

    Attributes:
        seeds: number of seeds (each a new split and initialisation).
        errors: error measures to run (:data:`bayesattn.models.neuro.pcn.ERRORS`).
        state_dim: latent state size ``H``.
        state_precision: prior precision ``lambda`` of the state.
        epochs, batch_size, lr: Adam on the weights.
        train_steps, test_steps, step_size: state descent per minibatch / per held-out digit.
        temperatures: the grid of ``T`` (``inf``: hard attention).
        test_size, val_size: split fractions (val of the non-test part).
    """

    seeds: int = 5
    errors: tuple[str, ...] = ("squared", "euclidean")
    state_dim: int = 8
    state_precision: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-2
    train_steps: int = 40
    test_steps: int = 100
    step_size: float = 0.1
    temperatures: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, math.inf)
    test_size: float = 0.3
    val_size: float = 0.2


#: a smoke run (CI): one seed, squared errors, two epochs, a short grid
QUICK = DigitsConfig(seeds=1, errors=("squared",), epochs=2, train_steps=20, test_steps=40,
                     temperatures=(0.3, 1.0, 3.0, math.inf))


def load_digits_split(seed: int, *, test_size: float = 0.3, val_size: float = 0.2):
    """Stratified train / validation / test split of the 8x8 digits, pixels in ``[0, 1]``.

    Returns:
        ``{"train": (x, y), "val": (x, y), "test": (x, y)}`` with ``x`` float32 ``(N, 64)``
        and ``y`` int64 ``(N,)``.

    Raises:
        ValueError: fractions outside ``(0, 1)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    for name, v in (("test_size", test_size), ("val_size", val_size)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {v}")
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_size,
                                                      random_state=seed, stratify=y)
    x_tr, x_val, y_tr, y_val = train_test_split(x_rest, y_rest, test_size=val_size,
                                                random_state=seed, stratify=y_rest)

    def pair(a, b):
        return torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.int64)

    return {"train": pair(x_tr, y_tr), "val": pair(x_val, y_val), "test": pair(x_test, y_test)}


def fit_digits_pcn(x, y, error: str, seed: int, config: DigitsConfig):
    """Train an :class:`AttentionPCN` with one option per class; returns ``(layer, history)``.

    The options' biases start at the class means of ``x`` and the weights at
    ``N(0, 0.1^2)`` (seeded); then :func:`train_attention_pcn`.

    Raises:
        ValueError: as :func:`train_attention_pcn`.
    """
    g = torch.Generator().manual_seed(seed)
    layer = AttentionPCN(x.shape[1], config.state_dim, 10, error=error,
                         state_precision=config.state_precision, generator=g)
    with torch.no_grad():
        for k in range(10):
            layer.bias[k] = x[y == k].mean(0)
    history = train_attention_pcn(layer, x, y, epochs=config.epochs,
                                  batch_size=config.batch_size, lr=config.lr,
                                  infer_steps=config.train_steps, step_size=config.step_size,
                                  generator=g)
    return layer, history


def evaluate_temperatures(layer: AttentionPCN, x, y, config: DigitsConfig) -> dict:
    """Inferred-label accuracy at each ``T`` of the grid, after inference and at ``h = 0``.

    Returns:
        ``{"accuracy": [...], "accuracy_h0": [...], "energy": [...]}`` aligned with
        ``config.temperatures`` (energy: the mean free energy at equilibrium).
    """
    acc, acc0, energy = [], [], []
    h0 = torch.zeros(x.shape[0], layer.state_dim)
    with torch.no_grad():
        for t in config.temperatures:
            acc0.append(_accuracy(layer.attention(x, h0, temperature=t), y))
    for t in config.temperatures:
        h = layer.infer(x, temperature=t, num_steps=config.test_steps,
                        step_size=config.step_size)
        with torch.no_grad():
            acc.append(_accuracy(layer.attention(x, h, temperature=t), y))
            energy.append(float(layer.energy(x, h, temperature=t).mean()))
    return {"accuracy": acc, "accuracy_h0": acc0, "energy": energy}


def _accuracy(pi, y) -> float:
    return float((pi.argmax(-1) == y).float().mean())


def attention_example(layer: AttentionPCN, x, *, temperature: float, num_steps: int,
                      step_size: float) -> dict:
    """Attention maps of a few digits ``x (M, 64)`` at ``temperature``.

    Returns numpy arrays: ``pi (M, K)`` at equilibrium, ``path (num_steps + 1, M, K)`` the
    attention along the state's descent, ``predictions (M, K, 64)`` at equilibrium, and
    ``pixel_drive (M, K, 64)`` = ``pi_k (x - f_k)^2 / 2`` for squared errors or
    ``pi_k |x - f_k| |x - f_k|_j / e_k`` for Euclidean ones: each pixel's share of the
    precision-weighted error that option ``k`` contributes to ``F`` (sums over pixels to
    ``pi_k e_k``).
    """
    h = torch.zeros(x.shape[0], layer.state_dim)
    path = []
    with torch.no_grad():
        path.append(layer.attention(x, h, temperature=temperature))
    for _ in range(num_steps):
        h = layer.infer(x, temperature=temperature, num_steps=1, step_size=step_size, h0=h)
        with torch.no_grad():
            path.append(layer.attention(x, h, temperature=temperature))
    with torch.no_grad():
        f = layer.predictions(h)
        r2 = (x[:, None] - f) ** 2
        pi = path[-1]
        if layer.error == "squared":
            drive = pi[..., None] * 0.5 * r2
        else:
            e = r2.sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
            drive = pi[..., None] * r2 / e
    return {"pi": pi.numpy(), "path": torch.stack(path).numpy(), "predictions": f.numpy(),
            "pixel_drive": drive.numpy()}


def _baselines(split) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import NearestCentroid

    (xtr, ytr), (xte, yte) = split["train"], split["test"]
    xtr, ytr, xte, yte = xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy()
    models = {"nearest class mean": NearestCentroid(), "Gaussian naive Bayes": GaussianNB(),
              "logistic regression": LogisticRegression(max_iter=3000)}
    with warnings.catch_warnings():  # NearestCentroid warns about the constant pixels
        warnings.simplefilter("ignore", UserWarning)
        return {name: float((m.fit(xtr, ytr).predict(xte) == yte).mean())
                for name, m in models.items()}


def run_one(seed: int, error: str, config: DigitsConfig, split=None) -> tuple[dict, AttentionPCN]:
    """Train and evaluate one seed and error measure; returns ``(record, layer)``.

    The record holds the training history, the validation and test accuracy at each ``T``,
    the chosen ``T`` (best validation accuracy; ties to the smaller ``T``), its test accuracy,
    and the wall times.

    Raises:
        ValueError: unknown ``error`` (from :class:`AttentionPCN`).
    """
    split = split or load_digits_split(seed, test_size=config.test_size,
                                       val_size=config.val_size)
    torch.manual_seed(seed)
    start = time.perf_counter()
    layer, history = fit_digits_pcn(*split["train"], error, seed, config)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    val = evaluate_temperatures(layer, *split["val"], config)
    test = evaluate_temperatures(layer, *split["test"], config)
    best = int(np.argmax(val["accuracy"]))
    record = {
        "seed": seed, "error": error, "history": history,
        "temperatures": [_t(t) for t in config.temperatures],
        "val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"],
        "test_accuracy_h0": test["accuracy_h0"], "test_energy": test["energy"],
        "chosen_temperature": _t(config.temperatures[best]),
        "accuracy": test["accuracy"][best], "accuracy_h0": test["accuracy_h0"][best],
        "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - start,
        "num_train": int(split["train"][0].shape[0]), "num_test": int(split["test"][0].shape[0]),
    }
    return record, layer


def _t(t: float):
    return "inf" if math.isinf(t) else t


# ----------------------------------------------------------------------------- plots
def plot_accuracy_vs_temperature(records: list[dict]):
    """Mean test accuracy (after inference and at ``h = 0``) against ``T``, per error."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4), constrained_layout=True)
    for i, error in enumerate(sorted({r["error"] for r in records})):
        rs = [r for r in records if r["error"] == error]
        ts = rs[0]["temperatures"]
        xs = np.arange(len(ts))
        acc = np.array([r["test_accuracy"] for r in rs])
        acc0 = np.array([r["test_accuracy_h0"] for r in rs])
        ax.errorbar(xs, acc.mean(0), yerr=acc.std(0), marker="o", color=f"C{i}", capsize=3,
                    label=f"{error}: after descending F")
        ax.plot(xs, acc0.mean(0), ls="--", color=f"C{i}", label=f"{error}: state h = 0")
    ax.set_xticks(xs, [str(t) for t in ts])
    ax.set(xlabel="inverse temperature T", ylabel="held-out accuracy (inferred label)",
           title="AttentionPCN on 8x8 digits: label = argmax attention at equilibrium")
    ax.legend(fontsize=8)
    return fig


def plot_attention_maps(example: dict, x, y, *, top: int = 3):
    """Each digit (row): the image, its attention over options, the ``top`` options'
    predictions with their precision-weighted pixel errors, and the attention's path."""
    import matplotlib.pyplot as plt

    x, y = np.asarray(x), np.asarray(y)
    m = x.shape[0]
    cols = 3 + 2 * top
    fig, axes = plt.subplots(m, cols, figsize=(1.6 * cols, 1.7 * m), constrained_layout=True)
    axes = np.atleast_2d(axes)
    vmax = float(example["pixel_drive"].max())
    for i in range(m):
        pi = example["pi"][i]
        order = np.argsort(-pi)[:top]
        ax = axes[i, 0]
        ax.imshow(x[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"digit {int(y[i])}", fontsize=8)
        ax = axes[i, 1]
        ax.bar(range(10), pi, color=["C3" if k == int(y[i]) else "C0" for k in range(10)])
        ax.set(ylim=(0, 1), xticks=range(10))
        ax.tick_params(labelsize=6)
        ax.set_title("attention pi_k", fontsize=8)
        for j, k in enumerate(order):
            ax = axes[i, 2 + 2 * j]
            ax.imshow(example["predictions"][i, k].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"f_{k}(h*), pi={pi[k]:.2f}", fontsize=7)
            ax = axes[i, 3 + 2 * j]
            ax.imshow(example["pixel_drive"][i, k].reshape(8, 8), cmap="magma", vmin=0,
                      vmax=vmax)
            ax.set_title(f"precision x error, {k}", fontsize=7)
        ax = axes[i, -1]
        path = example["path"][:, i]
        for k in range(10):
            ax.plot(path[:, k], color="C3" if k == int(y[i]) else "0.6",
                    lw=1.5 if k == int(y[i]) else 0.7)
        ax.set(ylim=(0, 1))
        ax.tick_params(labelsize=6)
        ax.set_title("pi along inference", fontsize=8)
    for ax in axes[:, [0] + list(range(2, cols - 1))].ravel():
        ax.set(xticks=[], yticks=[])
    return fig


# ----------------------------------------------------------------------------- the run
def _summary(records: list[dict]) -> dict:
    out = {}
    for error in sorted({r["error"] for r in records}):
        rs = [r for r in records if r["error"] == error]
        acc = [r["accuracy"] for r in rs]
        out[error] = {
            "seeds": len(rs),
            "accuracy_mean": statistics.fmean(acc),
            "accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "accuracy_h0_mean": statistics.fmean(r["accuracy_h0"] for r in rs),
            "chosen_temperatures": [r["chosen_temperature"] for r in rs],
            "test_accuracy_by_temperature": dict(zip(
                [str(t) for t in rs[0]["temperatures"]],
                np.mean([r["test_accuracy"] for r in rs], 0).tolist(), strict=True)),
            "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in rs),
        }
    return out


def _markdown(records, baselines, summary, config, seconds, quick) -> str:
    lines = ["# AttentionPCN on scikit-learn's 8x8 digits", ""]
    if quick:
        lines += ["**Quick smoke run** (`--quick`): not the committed numbers.", ""]
    n = records[0]
    lines += [
        f"{config.seeds} seed(s); per seed a stratified split: {n['num_train']} training, "
        f"validation (chooses T), {n['num_test']} test digits. One option per class, "
        f"latent state H = {config.state_dim}, state precision {config.state_precision}; "
        f"training {config.epochs} epochs (batch {config.batch_size}, Adam lr {config.lr}, "
        f"{config.train_steps} state steps of {config.step_size} per batch, label clamped); "
        f"test: {config.test_steps} state steps from h = 0, label = argmax attention. "
        f"One torch thread; wall time {seconds / 60:.1f} min ({platform.machine()}).", "",
        "## Held-out accuracy of the inferred label (mean +- sd over seeds)", "",
        "| model | accuracy | T chosen on validation |", "|---|---|---|",
    ]
    for error, s in summary.items():
        lines.append(f"| AttentionPCN, {error} errors | {s['accuracy_mean']:.4f} +- "
                     f"{s['accuracy_sd']:.4f} | {', '.join(map(str, s['chosen_temperatures']))} |")
        lines.append(f"| same, no inference (state h = 0) | {s['accuracy_h0_mean']:.4f} | |")
    for name in baselines[0]:
        acc = [b[name] for b in baselines]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(f"| {name} (scikit-learn) | {statistics.fmean(acc):.4f} +- {sd:.4f} | |")
    lines += ["", "## Test accuracy against the inverse temperature T (mean over seeds)", ""]
    ts = [str(t) for t in records[0]["temperatures"]]
    lines += ["| errors | " + " | ".join(f"T={t}" for t in ts) + " |",
              "|---|" + "---|" * len(ts)]
    for error, s in summary.items():
        vals = s["test_accuracy_by_temperature"]
        lines.append(f"| {error} | " + " | ".join(f"{vals[t]:.4f}" for t in ts) + " |")
    lines += ["", "Training does not depend on T (the clamped label fixes the option); T only "
              "sets how sharply the attention selects an option while the state settles.", ""]
    return "\n".join(lines)


def run_pcn_digits(out, config: DigitsConfig | None = None, *, quick: bool = False,
                   progress: bool = True) -> dict:
    """Run the demonstration and write its files into ``out`` (module docstring).

    Args:
        out: a :class:`bayesattn.io.OutputDir` or a folder path.
        config: settings (default :class:`DigitsConfig`, or :data:`QUICK` with ``quick``).
        quick: the smoke settings.
        progress: print one line per run.

    Returns:
        ``{"records": [...], "baselines": [...], "summary": {...}, "seconds": float}``.
    """
    import matplotlib.pyplot as plt

    config = config or (QUICK if quick else DigitsConfig())
    out = out if isinstance(out, OutputDir) else OutputDir.plain(out)
    start = time.perf_counter()
    records, baselines, example = [], [], None
    with torch_threads(1):
        for seed in range(config.seeds):
            split = load_digits_split(seed, test_size=config.test_size,
                                      val_size=config.val_size)
            baselines.append({"seed": seed, **_baselines(split)})
            for error in config.errors:
                record, layer = run_one(seed, error, config, split)
                records.append(record)
                if progress:
                    print(f"seed {seed} {error}: accuracy {record['accuracy']:.4f} at "
                          f"T={record['chosen_temperature']} (h=0: {record['accuracy_h0']:.4f}); "
                          f"train {record['train_seconds']:.0f} s", flush=True)
                if example is None:
                    xs, ys = split["test"][0][:6], split["test"][1][:6]
                    t = config.temperatures[int(np.argmax(record["val_accuracy"]))]
                    example = (attention_example(layer, xs, temperature=t,
                                                 num_steps=config.test_steps,
                                                 step_size=config.step_size), xs, ys)
                _write_json(out, config, records, baselines, None, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    summary = _summary(records)
    _write_json(out, config, records, baselines, summary, seconds)
    base = [{k: v for k, v in b.items() if k != "seed"} for b in baselines]
    out.write_text("results.md", _markdown(records, base, summary, config, seconds, quick))
    for name, fig in (("accuracy_vs_temperature.png", plot_accuracy_vs_temperature(records)),
                      ("attention_maps.png", plot_attention_maps(*example))):
        try:
            out.savefig(name, fig, dpi=110)
        finally:
            plt.close(fig)
    if progress:
        for error, s in summary.items():
            print(f"{error}: {s['accuracy_mean']:.4f} +- {s['accuracy_sd']:.4f}")
        print(f"wrote {out} in {seconds:.0f} s")
    return {"records": records, "baselines": baselines, "summary": summary, "seconds": seconds}


def _write_json(out, config, records, baselines, summary, seconds) -> None:
    settings = asdict(config)
    settings["temperatures"] = [_t(t) for t in config.temperatures]
    payload = {"settings": settings, "complete": summary is not None, "seconds": seconds,
               "torch": torch.__version__, "records": records, "baselines": baselines,
               "summary": summary}
    out.write_text("results.json", json.dumps(payload, indent=1) + "\n")


# ----------------------------------------------------------------------------- CLI
HELP = "the predictive-coding bridge (AttentionPCN) on scikit-learn's 8x8 digits"


def add_arguments(parser) -> None:
    """Options of ``bayesattn bench pcn`` beside the common ones."""
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 5; quick 1)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default 10; quick 2)")


def run(args, out) -> None:
    """Run ``bayesattn bench pcn`` into the claimed output folder ``out``.

    Raises:
        UsageError: ``--seeds`` or ``--epochs`` below 1.
    """
    from ..errors import UsageError

    config = QUICK if args.quick else DigitsConfig()
    changes = {}
    for name in ("seeds", "epochs"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{name} must be >= 1, got {value}")
            changes[name] = value
    if changes:
        config = DigitsConfig(**{**asdict(config), **changes})
    run_pcn_digits(out, config, quick=args.quick)
