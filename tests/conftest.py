"""Test-session settings and fixtures shared by every test module.

Hypothesis: CI runs the property tests derandomised (the examples are derived from each test's
source, so a CI run is reproducible and never fails on a fresh random draw), without the
example database (a fresh CI machine has none to replay, and writing one is wasted work) and
without per-example deadlines (the shared CI machines are slow and their timings noisy). Local
runs keep Hypothesis' default randomised search and its database, so new counterexamples are
still found and replayed.

CI is recognised by the ``CI`` environment variable (set by GitHub Actions, GitLab CI and most
others) holding anything but ``""``, ``0``, ``false`` or ``no``; ``HYPOTHESIS_PROFILE=ci`` or
``HYPOTHESIS_PROFILE=dev`` overrides that detection. The per-test ``@settings(...)`` decorators
only set ``max_examples`` and ``deadline``; every other setting is inherited from the profile
loaded here, because this file is imported before the test modules.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch
from hypothesis import settings

#: Profile for continuous integration: reproducible, no database, no deadlines.
settings.register_profile(
    "bayesattn-ci", derandomize=True, database=None, deadline=None, print_blob=True
)
#: Profile for local runs: Hypothesis' defaults (random search, example database).
settings.register_profile("bayesattn-dev", settings.get_profile("default"))


def _in_ci(environ) -> bool:
    """True when ``environ`` says the tests run under continuous integration."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _profile(environ) -> str:
    """The Hypothesis profile to load for ``environ`` (``HYPOTHESIS_PROFILE`` wins)."""
    chosen = environ.get("HYPOTHESIS_PROFILE", "").strip().lower()
    if chosen in ("ci", "dev"):
        return f"bayesattn-{chosen}"
    return "bayesattn-ci" if _in_ci(environ) else "bayesattn-dev"


settings.load_profile(_profile(os.environ))

# pytest-xdist: each worker has one core of its own (-n 2 on two cores), so one torch thread:
# two workers on two threads each fight over the cores, and small-tensor loops slow down 5-15x.
# Tests of the library's own thread choice set the count they start from.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread (small models are much faster so) and restore the count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def interruptible_popen():
    """``subprocess.Popen`` whose child takes Ctrl-C as a terminal's program does, even when
    the tests run in a background job: its shell ignores SIGINT, and an ignored signal would be
    inherited (a caught one is reset to the default on exec). Call from the main thread."""

    def popen(*args, **kwargs):
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return subprocess.Popen(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)

    return popen
