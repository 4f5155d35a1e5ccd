"""Where cells run: this process, a local process pool, or a Dask cluster.

Every backend takes a picklable function and a list of specs and yields
``(index, result, error)`` in completion order; ``error`` is a one-line
description (with the traceback kept apart) when the call raised.  Records are
written by the driver, never by the workers, so a Dask cluster needs no shared
file system.

``local``
    Sequential, in this process (the embedded default; compiled programs are
    reused between cells of equal shapes).
``processes``
    A local pool of ``n`` spawned processes (``concurrent.futures``); no server.
``dask``
    ``distributed``: a ``LocalCluster`` of ``n`` single-threaded worker processes,
    or an existing cluster at a scheduler address (e.g. started by dask-jobqueue
    on SLURM or PBS).  Needs ``pip install "bayes_ips[dask]"`` on every machine.
    No more cells are in flight than the cluster has threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from bayes_ips.errors import InputError

__all__ = [
    "Backend",
    "check_backend_options",
    "describe_error",
    "open_backend",
    "relieve_map_pressure",
]

Outcome = tuple[int, Any, "str | None", "str | None"]  # index, result, error, traceback


def describe_error(e: BaseException) -> tuple[str, str]:
    """A one-line description of an exception, and its full traceback text."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    line = f"{type(e).__name__}: {first}" if first else type(e).__name__
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    cause = getattr(e, "__cause__", None)
    if cause is not None and type(cause).__name__ == "_RemoteTraceback":
        tb = str(cause) + tb
    return line, tb


@dataclasses.dataclass
class Backend:
    """A running backend: ``name`` and ``run(fn, specs)`` (see the module docstring)."""

    name: str
    workers: int
    _run: Callable[[Callable, list], Iterator[Outcome]]

    def run(self, fn: Callable[[dict], dict], specs: list[dict]) -> Iterator[Outcome]:
        return self._run(fn, specs)


def _sequential(fn, specs):
    for i, spec in enumerate(specs):
        try:
            yield i, fn(spec), None, None
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a failed cell must not stop the others
            line, tb = describe_error(e)
            yield i, None, line, tb


# Every compiled XLA:CPU program holds a few memory mappings while JAX caches it, and
# the kernel caps a process at vm.max_map_count of them (65530 by default); past it
# XLA's compiler segfaults.  A long study compiles a program per shape (and eager
# operations compile too), so each cell first checks how close its process is.
MAP_BUDGET = 0.5  # fraction of vm.max_map_count at which compiled programs are dropped


def relieve_map_pressure(budget: float | None = None) -> bool:
    """Drop JAX's compiled programs if this process uses over ``budget`` of its mappings.

    Returns whether it did.  Costs only recompilation (or a load from the
    persistent cache); a no-op where ``/proc`` is absent.
    """
    budget = MAP_BUDGET if budget is None else budget
    try:
        with open("/proc/self/maps", "rb") as f:
            n_maps = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return False
    if n_maps < budget * limit:
        return False
    import jax

    jax.clear_caches()
    return True


def _init_worker() -> str:
    """A worker process's setup: float64 and the persistent compilation cache.

    JAX itself is not imported here (its settings go through the environment):
    a worker imports it with its first cell that needs it, so pools of cells
    that never touch JAX start in a fraction of a second.

    Returns the worker's bayes_ips version (checked against the driver's).
    """
    import bayes_ips

    bayes_ips.configure_jax_before_import()
    return bayes_ips.__version__


def _die_with_parent() -> None:
    """Ask Linux to end this process when its parent does (a no-op elsewhere).

    A pool worker otherwise outlives a killed study driver and finishes its
    current cell (minutes of NUTS) for nobody.
    """
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_pool_worker() -> str:
    _die_with_parent()
    return _init_worker()


def _pool_worker(conn) -> None:
    """A pool worker's loop: receive ``(fn, spec)``, send back the outcome; ``None`` ends it."""
    _init_pool_worker()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if task is None:
            return
        fn, spec = task
        conn.send(("start",))  # the cell's clock starts now, not when it was sent
        try:
            out = ("ok", fn(spec))
        except Exception as e:  # a failed cell must not end the worker
            out = ("error",) + describe_error(e)
        try:
            conn.send(out)
        except Exception as e:  # an unpicklable result is the cell's failure
            conn.send(("error",) + describe_error(e))


class _Worker:
    """One pool process, its pipe, and the cell it runs: ``(index, start time)`` or None.

    The start time is None until the worker says it has begun the cell: a worker
    still starting up (spawning, importing; seconds on a loaded machine) has not
    used any of the cell's time.
    """

    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_pool_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple[int, float] | None = None
        self.ended = False

    def give(self, i: int, fn, spec) -> bool:
        """Send a cell; False if the worker is gone."""

        try:
            self.conn.send((fn, spec))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            return False
        self.task = (i, None)
        return True

    def collect(self):
        """The finished cell's message, or None if the worker died without sending one."""
        try:
            return self.conn.recv() if self.conn.poll() else None
        except (EOFError, OSError):
            return None

    def end(self, wait: bool) -> None:
        """Stop the process: politely (``wait``: finish, then exit) or at once."""
        if self.ended:
            return
        self.ended = True
        if wait and self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


_POLL_S = 1.0  # longest uninterrupted wait of the pool's driver, in seconds


def _died(proc) -> str:
    proc.join(5)
    return (
        f"WorkerDied: the worker process running this cell ended (exit code {proc.exitcode}; "
        "e.g. killed for memory)"
    )


@contextlib.contextmanager
def _process_pool(n: int, cell_timeout: float | None = None):
    import multiprocessing as mp
    import time
    from collections import deque
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # JAX is not fork-safe
    started: list[_Worker] = []  # every worker of this pool, ended when it closes

    def spawn() -> _Worker:
        started.append(_Worker(ctx))
        return started[-1]

    def run(fn, specs):
        # Each worker takes one cell at a time, so the driver knows which cell each
        # one runs and since when.  A worker that dies (killed for memory, a crash)
        # or runs a cell past ``cell_timeout`` (ended here) fails that cell only and
        # is replaced; the other workers go on with theirs.  Interrupted (Ctrl-C, or
        # the consumer closing this generator), the workers are ended at once; a
        # driver killed outright takes them along through _die_with_parent.
        queue = deque(enumerate(specs))
        workers = [spawn() for _ in range(min(n, len(specs)))]
        clean = False
        try:
            while True:
                for k, w in enumerate(workers):
                    while w.task is None and queue:
                        i, spec = queue.popleft()
                        if w.give(i, fn, spec):
                            break
                        line = _died(w.proc)
                        w.end(wait=False)
                        workers[k] = w = spawn()
                        yield i, None, line, line
                busy = [w for w in workers if w.task is not None]
                if not busy:
                    break
                # Never block for long: a Ctrl-C that the kernel hands to another
                # thread of this process (numpy's, XLA's) is only seen by the main
                # thread when its wait returns.
                timeout = _POLL_S
                running = [w.task[1] for w in busy if w.task[1] is not None]
                if cell_timeout is not None and running:
                    now = time.monotonic()
                    deadline = min(running) + cell_timeout
                    timeout = min(timeout, max(0.0, deadline - now))
                ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout))
                for k, w in enumerate(workers):
                    if w.task is None:
                        continue
                    i, t0 = w.task
                    if w.conn in ready or w.proc.sentinel in ready:
                        msg = w.collect()
                        if msg == ("start",):
                            w.task = (i, time.monotonic())
                            continue
                        if msg is not None:
                            w.task = None
                            if msg[0] == "ok":
                                yield i, msg[1], None, None
                            else:
                                yield i, None, msg[1], msg[2]
                            continue
                        line = _died(w.proc)
                    elif (
                        cell_timeout is not None
                        and t0 is not None
                        and time.monotonic() - t0 >= cell_timeout
                    ):
                        line = (
                            f"CellTimeout: the cell ran past the cell timeout "
                            f"({cell_timeout:g} s); its worker was ended"
                        )
                    else:
                        continue
                    w.task = None
                    w.end(wait=False)
                    if queue:
                        workers[k] = spawn()
                    yield i, None, line, line
            clean = True
        finally:
            for w in workers:
                w.end(wait=clean)

    try:
        yield Backend("processes", n, run)
    finally:  # a consumer that stopped iterating without closing the generator
        for w in started:
            w.end(wait=False)


def _call_with_deadline(fn, cell_timeout: float, spec):
    """Run ``fn(spec)`` in a Dask worker; past ``cell_timeout`` seconds, end the worker.

    A hung cell (stuck in compiled code, which no Python exception can interrupt)
    would otherwise hold its worker forever.  The nanny restarts the worker and the
    scheduler reschedules the cell; after ``distributed.scheduler.allowed-failures``
    deaths (3 by default) the cell fails with ``KilledWorker``.
    """
    import os
    import sys
    import threading

    def expire() -> None:
        print(
            f"bayes-ips: a cell ran past the cell timeout ({cell_timeout:g} s); ending this worker",
            file=sys.stderr,
            flush=True,
        )
        os._exit(70)

    timer = threading.Timer(cell_timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        return fn(spec)
    finally:
        timer.cancel()


@contextlib.contextmanager
def _dask(n: int | None, address: str | None, cell_timeout: float | None = None):
    try:
        import logging

        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError(
            "the Dask backend needs dask.distributed: pip install 'bayes_ips[dask]'"
        ) from None
    import bayes_ips

    with contextlib.ExitStack() as stack:
        if address:
            try:
                client = stack.enter_context(Client(address, timeout="20s"))
            except (OSError, TimeoutError, ValueError) as e:
                raise InputError(f"cannot reach the Dask scheduler at {address}: {e}") from None
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster))
        versions = client.run(_init_worker)
        bad = {w: v for w, v in versions.items() if v != bayes_ips.__version__}
        if bad:
            raise InputError(
                f"Dask workers run other bayes_ips versions than {bayes_ips.__version__}: {bad}"
            )
        n_workers = len(versions)
        if n_workers == 0:
            raise InputError(f"the Dask cluster at {address} has no workers")

        def run(fn, specs):
            import functools

            if cell_timeout is not None:
                fn = functools.partial(_call_with_deadline, fn, cell_timeout)
            # No more cells in flight than the cluster has threads: a cell
            # submitted early is placed on a worker at once, possibly queued
            # behind a hung cell, and would die with it when the deadline ends
            # that worker (counted as a failure of its own).
            todo = iter(enumerate(specs))
            futures = {}
            done = as_completed()

            def submit_more() -> None:
                slots = max(n_workers, sum(client.nthreads().values())) - len(futures)
                for i, s in itertools.islice(todo, max(slots, 0)):
                    fut = client.submit(fn, s, pure=False)
                    futures[fut] = i
                    done.add(fut)

            submit_more()
            for fut in done:
                i = futures.pop(fut)
                submit_more()
                try:
                    yield i, fut.result(), None, None
                except Exception as e:
                    line, tb = describe_error(e)
                    if cell_timeout is not None and type(e).__name__ == "KilledWorker":
                        line = f"{line} (the cell timeout is {cell_timeout:g} s)"
                    yield i, None, line, tb
                finally:
                    fut.release()

        yield Backend("dask", n_workers, run)


def check_backend_options(
    processes: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    cell_timeout: float | None = None,
) -> None:
    """Refuse impossible backend options with a one-line :class:`InputError`.

    Called before a study writes anything, and again by :func:`open_backend`.
    """
    given = [
        k
        for k, v in (("processes", processes), ("workers", workers), ("scheduler", scheduler))
        if v
    ]
    if len(given) > 1:
        raise InputError(f"give at most one of --processes, --workers, --scheduler (got {given})")
    for name, v in (("processes", processes), ("workers", workers)):
        if v is not None and (int(v) != v or v < 1):
            raise InputError(f"{name} must be a positive integer, got {v}")
    if scheduler is not None and not scheduler.strip():
        raise InputError("the scheduler address is empty")
    if cell_timeout is not None:
        ok = isinstance(cell_timeout, int | float) and math.isfinite(cell_timeout)
        if not ok or cell_timeout <= 0:
            raise InputError(
                f"the cell timeout must be a positive number of seconds, got {cell_timeout}"
            )
        if not given:
            raise InputError(
                "a cell timeout needs worker processes (--processes, --workers or --scheduler): "
                "a cell running in this process cannot be stopped"
            )


@contextlib.contextmanager
def open_backend(
    *,
    processes: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    cell_timeout: float | None = None,
):
    """Open the backend the options ask for (at most one of them).

    Parameters
    ----------
    processes : int, optional
        A local process pool of this size.
    workers : int, optional
        A Dask ``LocalCluster`` with this many single-threaded workers.
    scheduler : str, optional
        The address of a running Dask scheduler (``tcp://host:port``).
    cell_timeout : float, optional
        Seconds a cell may run.  The pool ends the worker of a cell past it and
        reports the cell as failed (the other workers go on); a Dask worker ends
        itself and the cell fails once the scheduler gives up on it.  Cells in
        this process cannot be stopped, so the sequential backend refuses it.
    """
    check_backend_options(processes, workers, scheduler, cell_timeout)
    if processes:
        with _process_pool(int(processes), cell_timeout) as b:
            yield b
    elif workers or scheduler:
        with _dask(workers, scheduler, cell_timeout) as b:
            yield b
    else:
        yield Backend("local", 1, _sequential)
