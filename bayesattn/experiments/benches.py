"""Registry of ``bayesattn bench NAME`` experiments.

Each entry maps a bench name to the module that runs it. The module defines::

    HELP: str                          # one line for ``bayesattn bench --help``
    def add_arguments(parser) -> None  # its own options (``--out``, ``--force`` and
                                       # ``--quick`` are added by the CLI)
    def run(args, out) -> None         # ``out``: the claimed :class:`bayesattn.io.OutputDir`

The module is imported only when its bench runs, so ``bayesattn --help`` stays instant.
"""

from __future__ import annotations

#: bench name -> module (imported lazily by the command line)
BENCHES: dict[str, str] = {
    "structural": "bayesattn.experiments.structural",
    "uea": "bayesattn.experiments.uea",
    "pcn": "bayesattn.experiments.pcn_digits",
    "uncertainty": "bayesattn.experiments.uncertainty",
    "fewshot": "bayesattn.experiments.fewshot",
    "distill": "bayesattn.experiments.distill",
    "seq2seq": "bayesattn.experiments.seq2seq",
}
