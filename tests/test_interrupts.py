"""A Ctrl-C that arrives while worker processes start is held, then raised (not lost)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bayesattn.interrupts import starting_workers


def test_ctrl_c_inside_the_block_is_raised_when_it_ends():
    before = signal.getsignal(signal.SIGINT)
    reached_end_of_block = False
    with pytest.raises(KeyboardInterrupt):
        with starting_workers():
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C while workers would be starting
            reached_end_of_block = True
    assert reached_end_of_block  # held: the block's work was not cut in the middle
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_no_ctrl_c_no_exception_and_children_inherit_the_held_signal():
    with starting_workers():
        child = subprocess.run(
            [sys.executable, "-c", "import signal; print(signal.SIGINT in "
             "signal.pthread_sigmask(signal.SIG_BLOCK, set()))"],
            capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "True"  # a Ctrl-C cannot interrupt a starting worker
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_the_block_holds_while_a_process_pool_starts():
    """Starting a spawn pool (and with it multiprocessing's resource tracker, which blocks and
    then unblocks SIGINT itself) must not lift the block half-way."""
    import multiprocessing

    with starting_workers():
        pool = multiprocessing.get_context("spawn").Pool(1)
        try:
            assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        finally:
            pool.terminate()
            pool.join()
