"""The ``bayesattn`` command line (argparse).

Commands (each imports its experiment module lazily, so ``bayesattn --help`` is instant)::

    bayesattn demo [mcycle|neuro] [--out DIR] [--quick] [--seed N] [--force]
    bayesattn fit --data FILE.csv --x COL[,COL...] --y COL [--model MODEL] [--method METHOD]
                  [--out DIR] [--seed N] [--quick] [--num-steps N] [--force]
    bayesattn predict --fit DIR --data NEW.csv --out PREDICTIONS.csv [--prob P] [--force]
    bayesattn bench NAME [--out DIR] [--quick] [--force] [NAME's options]
        (NAME: see bayesattn.experiments.benches.BENCHES, e.g. uea [--attention KIND[,KIND...]]
         [--seeds N] [--epochs N] [--backend process|ray|serial] [--workers N])
    bayesattn tva fit --data TRIALS.csv --task partial|whole --k probit|free|fixed=VALUE
                  --t0 gaussian|fixed=VALUE|exponential [--regions "1-3,4-6"]
                  --by subject[,condition] [--condition-params C,alpha,w,K,t0]
                  [--hierarchical [--deviation condition|subject]] --method map|nuts|svi
                  [--prior NAME=Family(args) ...]
                  --out DIR [--backend process|ray|serial] [--address ADDR] [--workers N]
                  [--seed N] [--force] [--quick]
        (see bayesattn.experiments.tva_study; exit status 1 when some fits failed)

Errors: bad input (a missing, unreadable, non-UTF-8 or binary file; a missing column;
non-numeric data; values too large to square; more rows than the model and method can fit;
an unknown model or method; a seed outside 0..2**31-1; an output folder that cannot be
created or written, or that holds files bayesattn did not write) prints one line
``bayesattn: error: ...`` and exits with status 2, without a traceback, before any fitting.

Output files: every file is written atomically (temporary file, ``fsync``, rename) and listed
in the folder's manifest ``.bayesattn-manifest.json`` (see :mod:`bayesattn.io`). Ctrl-C stops
the run with one line ``bayesattn: interrupted; ...`` and exit status 130, leaving only
complete files; the same command run again starts over. ``--force`` replaces the previous
run's files (and only those: files bayesattn did not write are never removed or overwritten,
and symbolic links are replaced, never written through).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from .errors import UsageError

__all__ = ["MAX_SEED", "METHOD_CHOICES", "MODEL_CHOICES", "UsageError", "build_parser", "console",
           "main", "prepare_out_dir"]

#: models of ``bayesattn fit`` (the keys of :data:`bayesattn.experiments.regression.MODELS`,
#: repeated here so that ``--help`` does not import torch; a test keeps them equal)
MODEL_CHOICES = ("kernel", "softmax", "gp", "least_squares")
#: methods of ``bayesattn fit`` (:data:`bayesattn.inference.METHODS`, likewise)
METHOD_CHOICES = ("exact", "map", "svi", "nuts")
#: largest ``--seed``: fits seed chain ``c`` with ``seed + c`` and NumPy's legacy seeding (used
#: by Pyro) accepts 0 .. 2**32 - 1, so 2**31 - 1 leaves room for any number of chains
MAX_SEED = 2**31 - 1


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (:class:`UsageError`) instead of
    usage + message + ``SystemExit``; :func:`main` prints it."""

    def error(self, message):  # noqa: D102 - argparse's hook
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _seed(text: str) -> int:
    """argparse type of ``--seed``: an integer in ``0 .. MAX_SEED``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED}, got {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def prepare_out_dir(out: str | Path, force: bool, planned=(), command=None):
    """Check, create and claim an output folder (:meth:`bayesattn.io.OutputDir.prepare`).

    Returns:
        the :class:`bayesattn.io.OutputDir`.

    Raises:
        UsageError: see :meth:`bayesattn.io.OutputDir.prepare`.
    """
    from .io import OutputDir

    return OutputDir.prepare(out, force=force, planned=planned, command=command)


def _run_in(out, job) -> None:
    """Run ``job()``; mark ``out`` complete on success, drop it if the job wrote nothing."""
    try:
        job()
    except BaseException:
        out.abandon()
        raise
    out.finish()


def _demo(args) -> None:
    command = ["bayesattn", *args.argv]
    if args.which == "neuro":
        from .experiments.neuro import PLANNED_FILES, run_neuro_demo

        out = prepare_out_dir(args.out or "bayesattn-demo-neuro", args.force,
                              PLANNED_FILES, command)
        _run_in(out, lambda: run_neuro_demo(out, quick=args.quick, seed=args.seed))
    else:
        from .experiments.mcycle import DEMO_MODELS, planned_files, run_demo

        out = prepare_out_dir(args.out or "bayesattn-demo-mcycle", args.force,
                              planned_files(DEMO_MODELS), command)
        _run_in(out, lambda: run_demo(out, quick=args.quick, seed=args.seed))


def _fit(args) -> None:
    from .experiments.fit_csv import run_fit

    run_fit(args, command=["bayesattn", *args.argv])


def _predict(args) -> None:
    from .experiments.predict_csv import run_predict

    run_predict(args)


def _tva_fit(args) -> int:
    from .experiments.tva_study import run_tva_fit

    return run_tva_fit(args, command=["bayesattn", *args.argv])


def _probability(text: str) -> float:
    """argparse type of ``--prob``: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _bench(args) -> None:
    """Run ``bayesattn bench NAME [options]``: parse NAME's own options (the module named in
    :data:`bayesattn.experiments.benches.BENCHES`), claim ``--out``, run it there."""
    import importlib

    from .experiments.benches import BENCHES

    module = importlib.import_module(BENCHES[args.suite])
    parser = _Parser(prog=f"bayesattn bench {args.suite}", description=module.HELP)
    parser.add_argument("--out", default=f"bayesattn-bench-{args.suite}", help="output folder")
    parser.add_argument("--quick", action="store_true", help="a short run (CI smoke test)")
    parser.add_argument("--force", action="store_true",
                        help="replace the previous bayesattn run in --out (only files bayesattn "
                             "wrote, listed in its .bayesattn-manifest.json)")
    module.add_arguments(parser)
    options = parser.parse_args(args.options)
    out = prepare_out_dir(options.out, options.force, (), ["bayesattn", *args.argv])
    _run_in(out, lambda: module.run(options, out))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayesattn`` command.

    Raises:
        UsageError: (from ``parse_args``) an unknown command, option or choice, or a value
            of the wrong type or range, instead of argparse's exit.
    """
    parser = _Parser(prog="bayesattn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    seed_help = f"seed of every random number, 0 to {MAX_SEED} (default 0)"
    force_help = ("replace the previous bayesattn run in --out (only files bayesattn wrote, "
                  "listed in its .bayesattn-manifest.json)")

    demo = sub.add_parser("demo", help="fit Bayesian attention models to shipped real data")
    demo.add_argument("which", nargs="?", default="mcycle", choices=["mcycle", "neuro"])
    demo.add_argument("--out", default=None, help="output folder (default bayesattn-demo-WHICH)")
    demo.add_argument("--quick", action="store_true", help="short chains (CI smoke run)")
    demo.add_argument("--seed", type=_seed, default=0, help=seed_help)
    demo.add_argument("--force", action="store_true", help=force_help)
    demo.set_defaults(func=_demo)

    fit = sub.add_parser("fit", help="fit an attention regression model to your own CSV")
    fit.add_argument("--data", required=True, help="CSV file (UTF-8) with a header row")
    fit.add_argument("--x", required=True,
                     help="input column(s) (queries and keys), comma-separated: --x a,b,c")
    fit.add_argument("--y", required=True, help="target column (values)")
    fit.add_argument("--model", default="kernel", choices=MODEL_CHOICES,
                     help="attention regression model (default kernel)")
    fit.add_argument("--method", default="nuts", choices=METHOD_CHOICES,
                     help="inference method (default nuts)")
    fit.add_argument("--out", default="bayesattn-fit", help="output folder")
    fit.add_argument("--seed", type=_seed, default=0, help=seed_help)
    fit.add_argument("--quick", action="store_true", help="short chains")
    fit.add_argument("--num-steps", type=_positive, default=None,
                     help="optimisation steps of --method svi or map (default: the fit's own)")
    fit.add_argument("--force", action="store_true", help=force_help)
    fit.set_defaults(func=_fit)

    pred = sub.add_parser("predict", help="predict new rows with a model `bayesattn fit` wrote")
    pred.add_argument("--fit", required=True,
                      help="output folder of `bayesattn fit` (or its MODEL.json)")
    pred.add_argument("--data", required=True, help="CSV file with the model's input columns")
    pred.add_argument("--out", required=True, help="predictions CSV file to write")
    pred.add_argument("--prob", type=_probability, default=0.94,
                      help="mass of the central predictive interval (default 0.94)")
    pred.add_argument("--force", action="store_true", help="replace an existing --out file")
    pred.set_defaults(func=_predict)

    _add_tva(sub, seed_help, force_help)

    from .experiments.benches import BENCHES

    bench = sub.add_parser("bench",
                           help="benchmarks and experiments (`bayesattn bench NAME --help`)")
    bench.add_argument("suite", choices=sorted(BENCHES), help="the experiment to run")
    bench.add_argument("options", nargs=argparse.REMAINDER,
                       help="the experiment's own options (`bayesattn bench NAME --help`)")
    bench.set_defaults(func=_bench)
    return parser


def _add_tva(sub, seed_help: str, force_help: str) -> None:
    tva = sub.add_parser("tva", help="Theory of Visual Attention: fit a study's trials")
    tsub = tva.add_subparsers(dest="tva_command", required=True)
    fit = tsub.add_parser("fit", help="fit TVA per subject (or condition) to a trial CSV")
    fit.add_argument("--data", required=True,
                     help="CSV, one row per trial: subject, condition, T (ms), S1..SN, D1..DN, "
                          "R1..RN (0/1)")
    fit.add_argument("--task", required=True, choices=["partial", "whole"],
                     help="partial or whole report")
    fit.add_argument("--k", default="probit",
                     help="VSTM capacity K: probit (default), free or fixed=VALUE")
    fit.add_argument("--t0", default="gaussian",
                     help="perception threshold: gaussian (default), exponential or "
                          "fixed=VALUE (ms)")
    fit.add_argument("--regions", default=None,
                     help="locations sharing a weight, 1-based ranges: \"1-3,4-6\" (default: "
                          "one weight per location)")
    fit.add_argument("--by", default="subject",
                     help="one fit per: subject (default), condition or subject,condition")
    fit.add_argument("--condition-params", default=None,
                     help="with --by subject: parameters with one value per condition, some "
                          "of C,alpha,w,K,t0")
    fit.add_argument("--hierarchical", action="store_true",
                     help="one hierarchical fit of all subjects (per condition with --by "
                          "subject,condition)")
    fit.add_argument("--deviation", default=None, choices=["condition", "subject"],
                     help="with --hierarchical: a subject's deviation from the population in "
                          "a --condition-params parameter is drawn per condition (default) or "
                          "once, shared by its conditions")
    fit.add_argument("--method", default="map", choices=["map", "nuts", "svi"],
                     help="inference method (default map)")
    fit.add_argument("--nuts-start", default="median", choices=["median", "map"],
                     help="with --method nuts: chains start at prior medians (default) or at "
                          "draws of a MAP-Laplace fit, its variances the starting metric "
                          "(a cheaper start of warm-up; all chains begin near one mode)")
    fit.add_argument("--prior", action="append", default=[], metavar="NAME=Family(args)",
                     help="a prior from pyro.distributions with numeric arguments, e.g. "
                          "C=LogNormal(4.5,0.6); NAME one of C, alpha, w, mu0, sigma0, mK, sK, "
                          "pK; repeat for several")
    fit.add_argument("--out", default="bayesattn-tva", help="output folder")
    from .experiments.backends import add_backend_arguments

    add_backend_arguments(fit)
    fit.add_argument("--seed", type=_seed, default=0, help=seed_help)
    fit.add_argument("--quick", action="store_true", help="short chains / few draws")
    fit.add_argument("--force", action="store_true", help=force_help)
    fit.set_defaults(func=_tva_fit)


def _noninteractive_plots() -> None:
    """Draw with Matplotlib's Agg backend unless pyplot is already in use (a notebook or a
    caller's session keeps its backend): the command line only saves figures."""
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        matplotlib.use("Agg")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bayesattn`` console script; returns the exit status.

    0 on success; 1 when a command finished but some of its independent fits failed (each
    reported); 2 with one line ``bayesattn: error: ...`` on a user error (including
    argparse's); 130 with one line ``bayesattn: interrupted; ...`` on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        _noninteractive_plots()
        code = args.func(args)
        if code:
            return int(code)
    except UsageError as err:
        print(f"bayesattn: error: {err}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\nbayesattn: interrupted; only complete files were kept; run the same command "
              "again to start over", file=sys.stderr, flush=True)
        return 130
    return 0


def console() -> NoReturn:
    """The ``bayesattn`` program: :func:`main` on ``sys.argv``, then exit with its status.

    After Ctrl-C the process ends at once (``os._exit`` once the message is flushed): the
    interpreter's own teardown (torch, Pyro) takes seconds, and every file already written is
    complete. After a finished run a late Ctrl-C is ignored while the interpreter shuts down,
    so the exit status stays the run's.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if code == 130:
        # free what the interrupted run left (e.g. a terminated process pool): its
        # semaphores' finalizers unregister them, so no resource-tracker warning follows
        gc.collect()
        os._exit(130)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    from bayesattn.cli import console as _console  # the package's classes, not __main__'s

    _console()
