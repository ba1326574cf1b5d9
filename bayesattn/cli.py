"""The ``bayesattn`` command line (argparse).

Commands (each imports its experiment module lazily, so ``bayesattn --help`` is instant)::

    bayesattn demo [mcycle|neuro] [--out DIR] [--quick] [--seed N] [--force]
    bayesattn fit --data FILE.csv --x COL --y COL --model MODEL --method METHOD [--out DIR]
    bayesattn bench uea [--attention KIND[,KIND...]] [--seeds N] [--epochs N] [--out DIR]

Bad input (missing file or column, non-numeric data, unknown model or method, an existing
output folder without ``--force``) prints one line ``bayesattn: error: ...`` and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UsageError(Exception):
    """A user error: printed as one line by :func:`main`, exit status 2."""


def prepare_out_dir(out: str | Path, force: bool) -> Path:
    """Create the output folder; refuse to reuse a non-empty one unless ``force``.

    Raises:
        UsageError: ``out`` exists, is not empty and ``force`` is False; or it is a file.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out} already exists and is not empty; pass --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _demo(args) -> None:
    out = prepare_out_dir(args.out or f"bayesattn-demo-{args.which}", args.force)
    if args.which == "neuro":
        from .experiments.neuro import run_neuro_demo

        run_neuro_demo(out, quick=args.quick, seed=args.seed)
    else:
        from .experiments.mcycle import run_demo

        run_demo(out, quick=args.quick, seed=args.seed)


def _fit(args) -> None:
    from .experiments.fit_csv import run_fit

    run_fit(args, prepare_out=lambda: prepare_out_dir(args.out, args.force))


def _bench(args) -> None:
    from .experiments.uea import run_uea_bench

    out = prepare_out_dir(args.out, args.force)
    kinds = [k.strip() for k in args.attention.split(",") if k.strip()] if args.attention else None
    run_uea_bench(out, attention=kinds, seeds=args.seeds, epochs=args.epochs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayesattn`` command."""
    parser = argparse.ArgumentParser(prog="bayesattn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="fit Bayesian attention models to shipped real data")
    demo.add_argument("which", nargs="?", default="mcycle", choices=["mcycle", "neuro"])
    demo.add_argument("--out", default=None, help="output folder (default bayesattn-demo-WHICH)")
    demo.add_argument("--quick", action="store_true", help="short chains (CI smoke run)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser("fit", help="fit an attention regression model to your own CSV")
    fit.add_argument("--data", required=True, help="CSV file with a header row")
    fit.add_argument("--x", required=True, help="input column (queries and keys)")
    fit.add_argument("--y", required=True, help="target column (values)")
    fit.add_argument("--model", default="kernel", help="kernel | softmax | least_squares | gp")
    fit.add_argument("--method", default="nuts", help="nuts | svi | map | exact")
    fit.add_argument("--out", default="bayesattn-fit")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--quick", action="store_true", help="short chains")
    fit.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    fit.set_defaults(func=_fit)

    bench = sub.add_parser("bench", help="benchmarks on real data")
    bench.add_argument("suite", choices=["uea"])
    bench.add_argument("--attention", default=None, help="comma-separated kinds (default all)")
    bench.add_argument("--seeds", type=int, default=3)
    bench.add_argument("--epochs", type=int, default=None)
    bench.add_argument("--out", default="bayesattn-bench-uea")
    bench.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bayesattn`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as err:
        print(f"bayesattn: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    from bayesattn.cli import main as _main  # the package's classes, not __main__'s copies

    sys.exit(_main())
