"""Ctrl-C while worker processes start: held until they have started, then raised.

A pool of spawned workers must not see a Ctrl-C while the workers import torch (each would
print a ``KeyboardInterrupt`` traceback), yet the parent must not lose it: a Ctrl-C that is
simply ignored while the pool starts lets the whole run go on to its end. :func:`starting_workers`
does both: the workers inherit a blocked SIGINT through fork and exec (their initializer then
ignores it), and the parent records a Ctrl-C that arrives meanwhile and raises
:class:`KeyboardInterrupt` once the block ends, so that the caller terminates what it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from multiprocessing import resource_tracker

__all__ = ["exit_with_parent", "init_worker", "starting_workers"]


@contextlib.contextmanager
def starting_workers():
    """Start worker processes inside this block; a Ctrl-C (SIGINT) meanwhile is held.

    Raises:
        KeyboardInterrupt: on leaving the block, when a Ctrl-C arrived inside it (the caller's
            cleanup then terminates the workers).

    Outside the main thread, or where ``signal.pthread_sigmask`` does not exist, the block is
    run as is.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    if os.name == "posix":
        # multiprocessing's resource tracker blocks SIGINT while it starts and then *unblocks*
        # it: start it before the block, or it would lift the block half-way
        resource_tracker.ensure_running()
    hits: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a held Ctrl-C is recorded here
        signal.signal(signal.SIGINT, previous)
    if hits:
        raise KeyboardInterrupt


def exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """In a worker process: exit (status 1) once ``parent`` is no longer this process's parent.

    A parent killed outright (SIGTERM, SIGKILL, the out-of-memory killer) cannot terminate
    its pool, and a worker would otherwise compute on for nobody until its task ends (a NUTS
    chain: minutes to hours). A daemon thread compares ``os.getppid()`` with ``parent`` every
    ``poll_s`` seconds. Call it from the pool's initializer, with the parent's pid.
    """

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def init_worker(parent: int) -> None:
    """A pool worker's initializer (``initargs=(os.getpid(),)`` of the parent).

    The worker ignores Ctrl-C (the parent handles it and terminates the pool), exits once its
    parent is killed outright (:func:`exit_with_parent`), and gives tqdm a thread lock: tqdm's
    default lock is a multiprocessing semaphore, which a worker terminated on Ctrl-C would
    leak (a resource-tracker warning after exit); one process needs only a thread lock.
    """
    from tqdm.std import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)
    tqdm.set_lock(threading.RLock())
