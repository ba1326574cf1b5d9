"""Run independent tasks (one model fit, one benchmark seed) in parallel: a process pool or Ray.

:func:`run_tasks` calls a module-level function once per task and returns one
:class:`TaskResult` per task, in task order, whatever the order of completion:

* ``"process"`` (the default of the command line): a pool of ``workers`` spawned Python
  processes on this machine (``concurrent.futures.ProcessPoolExecutor``, ``spawn`` start
  method, so no torch thread pool is ever forked);
* ``"ray"``: Ray tasks (https://docs.ray.io), one CPU each. ``address=None`` starts a private
  local Ray instance with ``workers`` CPUs and shuts it down afterwards; ``address="auto"`` or
  ``"ray://HOST:10001"`` (Ray Client) or ``"HOST:6379"`` joins an existing cluster (see
  ``docs/cluster.md``), with at most ``workers`` tasks in flight when ``workers`` is given.
  Ray is imported only here and only then, so bayesattn works without it;
* ``"serial"``: one task after the other in this process (tests, debugging).

Every task runs under :func:`bayesattn.inference.threads.torch_threads` with the same number of
torch threads (default 1) on every backend, and seeds itself from its own arguments, so the
results are identical across backends (floating point included: same code, same thread count,
same seeds).

A task that raises an exception is reported (``TaskResult.error``: ``"TypeName: message"``,
one line, also written to stderr as it happens) and the others go on. A worker process that
dies (killed, out of memory) fails its own task on Ray; in the process pool it breaks the pool,
so every unfinished task is reported failed with that reason. Ctrl-C (``KeyboardInterrupt``)
stops the workers (the pool's processes are terminated; Ray tasks are cancelled and a private
Ray instance is shut down) and propagates.

Progress: a tqdm bar over finished tasks on stderr (``progress=True``).

The process pool spawns fresh interpreters that import the module of ``fn``; a script that
calls :func:`run_tasks` with ``backend="process"`` must therefore keep its top-level code under
``if __name__ == "__main__":`` (Python's rule for the ``spawn`` start method). How to run on a
Ray cluster: ``docs/cluster.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..interrupts import init_worker, starting_workers

__all__ = ["BACKENDS", "TaskResult", "add_backend_arguments", "default_workers", "import_ray",
           "run_tasks"]

#: backends of :func:`run_tasks` (the first is the command line's default)
BACKENDS = ("process", "ray", "serial")


@dataclass
class TaskResult:
    """The outcome of one task.

    Attributes:
        key: the task's name (as given to :func:`run_tasks`).
        value: what the function returned (None when it failed).
        error: None, or ``"TypeName: message"`` (one line) when it failed.
        seconds: wall time of the call in the worker (0 when it never ran).
    """

    key: str
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the task finished without an error."""
        return self.error is None


def _positive_int(text: str) -> int:
    """argparse type of ``--workers``: a positive integer."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_backend_arguments(parser, default: str = "process") -> None:
    """Add ``--backend``, ``--workers`` and ``--address`` (the arguments of
    :func:`run_tasks`) to an argparse ``parser``."""
    parser.add_argument("--backend", default=default, choices=list(BACKENDS),
                        help=f"where independent fits run (default {default}): a local process "
                             "pool, Ray (local, or a cluster with --address), or one by one")
    parser.add_argument("--workers", type=_positive_int, default=None,
                        help="parallel workers (default: CPUs of this machine; with --address "
                             "as many as the cluster runs)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (auto, HOST:6379 or ray://HOST:10001); needs "
                             "--backend ray (default: a private local Ray)")


def default_workers(num_tasks: int) -> int:
    """Workers used when none are given: ``min(num_tasks, CPUs of this machine)`` (>= 1)."""
    return max(1, min(num_tasks, os.cpu_count() or 1))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _call(fn: Callable, key: str, payload: Any, threads: int) -> TaskResult:
    """Run ``fn(payload)`` with ``threads`` torch threads; an exception becomes an error."""
    from ..inference.threads import torch_threads

    start = time.perf_counter()
    try:
        with torch_threads(threads):
            value = fn(payload)
    except Exception as err:  # reported, the other tasks go on
        return TaskResult(key, error=_one_line(err), seconds=time.perf_counter() - start)
    return TaskResult(key, value=value, seconds=time.perf_counter() - start)


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence[tuple[str, Any]], *,
              backend: str = "process", workers: int | None = None, address: str | None = None,
              threads: int = 1, progress: bool = True, desc: str = "tasks",
              on_result: Callable[[int, TaskResult], None] | None = None) -> list[TaskResult]:
    """Run ``fn(payload)`` for every ``(key, payload)`` of ``tasks`` on ``backend``.

    Args:
        fn: a module-level function (it is sent to the workers by reference); it must seed
            its own random numbers from ``payload``.
        tasks: ``(key, payload)`` pairs; keys name the tasks in messages.
        backend: one of :data:`BACKENDS` (module docstring).
        workers: parallel workers; None = :func:`default_workers` (local) or as many as the
            Ray cluster schedules (``address`` given).
        address: Ray only: an existing cluster's address (None = a private local instance).
        threads: torch threads of each task.
        progress: show a tqdm bar on stderr.
        desc: the bar's label.
        on_result: called in this process as ``on_result(index, result)`` when task
            ``index`` finishes (e.g. to write its files at once).

    Returns:
        one :class:`TaskResult` per task, in the order of ``tasks``.

    Raises:
        UsageError: unknown ``backend``; ``workers < 1``; ``address`` without Ray; Ray not
            installed or the cluster cannot be reached.
        KeyboardInterrupt: interrupted (the workers are stopped first).
    """
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend!r}: unknown; expected one of {', '.join(BACKENDS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise UsageError(f"--workers must be a positive integer, got {workers!r}")
    if address is not None and backend != "ray":
        raise UsageError("--address needs --backend ray")
    tasks = list(tasks)
    results: list[TaskResult | None] = [None] * len(tasks)
    if not tasks:
        return []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, file=sys.stderr)

    def done(i: int, res: TaskResult) -> None:
        results[i] = res
        if res.error is not None:
            msg = f"{desc}: {res.key} failed: {res.error}"
            if progress:
                bar.write(msg, file=sys.stderr)
            else:
                print(msg, file=sys.stderr, flush=True)
        if on_result is not None:
            on_result(i, res)
        bar.set_postfix_str(res.key, refresh=False)
        bar.update(1)

    try:
        if backend == "serial":
            for i, (key, payload) in enumerate(tasks):
                done(i, _call(fn, key, payload, threads))
        elif backend == "process":
            _run_pool(fn, tasks, workers or default_workers(len(tasks)), threads, done)
        else:
            _run_ray(fn, tasks, workers, address, threads, done)
    finally:
        bar.close()
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------- process pool
def _run_pool(fn, tasks, workers, threads, done) -> None:
    ctx = multiprocessing.get_context("spawn")
    pool = None
    try:
        with starting_workers():  # a Ctrl-C while the workers start is raised after it
            pool = cf.ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx,
                                          initializer=init_worker,
                                          initargs=(os.getpid(),))
            futures = {pool.submit(_call, fn, key, payload, threads): i
                       for i, (key, payload) in enumerate(tasks)}
        pending = set(futures)
        while pending:  # a timed wait keeps this process responsive to Ctrl-C
            finished, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                i = futures[fut]
                try:
                    res = fut.result()
                except Exception as err:  # BrokenProcessPool: a worker died
                    res = TaskResult(tasks[i][0], error="worker process died: " + _one_line(err))
                done(i, res)
    except BaseException:
        if pool is not None:
            _terminate(pool)
        raise
    pool.shutdown(wait=True)


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a process pool at once (Ctrl-C): cancel what has not started, kill the workers."""
    pool.shutdown(wait=False, cancel_futures=True)
    stop = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if stop is not None:  # pragma: no cover - newer Python
        stop()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.join(timeout=5)


# ---------------------------------------------------------------------- Ray
def import_ray():
    """Import Ray, or say in one line how to get it.

    Raises:
        UsageError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise UsageError("--backend ray needs Ray: pip install 'ray>=2.9' (or use --backend "
                         "process)") from None
    return ray


def _run_ray(fn, tasks, workers, address, threads, done) -> None:
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False,
                  "configure_logging": False}
        if address is None:
            kwargs["num_cpus"] = workers or default_workers(len(tasks))
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except Exception as err:  # e.g. ConnectionError: no cluster at that address
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UsageError(f"--backend ray: cannot start or reach {where} ("
                             f"{_one_line(err)})") from None
        started = True
    remote = ray.remote(num_cpus=1, max_retries=0)(_call)
    limit = workers if workers is not None else len(tasks)
    queue = list(enumerate(tasks))
    refs: dict = {}
    try:
        while queue or refs:
            while queue and len(refs) < limit:
                i, (key, payload) = queue.pop(0)
                refs[remote.remote(fn, key, payload, threads)] = i
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.2)
            for ref in ready:
                i = refs.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as err:  # RayTaskError, WorkerCrashedError, ...
                    res = TaskResult(tasks[i][0], error="Ray task failed: " + _one_line(err))
                done(i, res)
    except BaseException:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # pragma: no cover - already finished
                pass
        raise
    finally:
        if started:
            ray.shutdown()
