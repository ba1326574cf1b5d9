"""A Ctrl-C that arrives while worker processes start is held, then raised (not lost)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """A pool whose parent is killed outright (SIGKILL: no cleanup runs) does not keep
    computing: each worker notices its parent is gone and exits within a few seconds."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "from bayesattn.inference.nuts import _worker_init\n"
        "def busy(folder):\n"  # a running task: the initializer has run in its worker
        "    open(os.path.join(folder, str(os.getpid())), 'w').close()\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('spawn')\n"
        "    pool = ctx.Pool(2, initializer=_worker_init, initargs=(os.getpid(),))\n"
        "    pool.map_async(busy, [sys.argv[1]] * 2, chunksize=1)\n"
        "    while len(os.listdir(sys.argv[1])) < 2:\n"
        "        time.sleep(0.1)\n"
        "    print(' '.join(os.listdir(sys.argv[1])), flush=True)\n"
        "    time.sleep(120)\n"
    )
    started = tmp_path / "started"
    started.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(started)],
                              stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2
        parent.kill()
        parent.wait(timeout=10)

        def alive(pid):  # running, not a zombie waiting for an init that may not reap it
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except FileNotFoundError:
                return False

        deadline = time.monotonic() + 20.0
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in workers)
    finally:
        parent.kill()
