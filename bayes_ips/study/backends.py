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
"""

from __future__ import annotations

import contextlib
import dataclasses
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from bayes_ips.errors import InputError

__all__ = ["Backend", "describe_error", "open_backend", "relieve_map_pressure"]

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

    Returns the worker's bayes_ips version (checked against the driver's).
    """
    import jax

    import bayes_ips

    jax.config.update("jax_enable_x64", True)
    bayes_ips.enable_compilation_cache()
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


@contextlib.contextmanager
def _process_pool(n: int):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")  # JAX is not fork-safe

    def run(fn, specs):
        # A fresh pool per pass: a worker that died (e.g. killed for memory) breaks
        # the pool; the cells it took are reported as failed and retried.
        # Interrupted (Ctrl-C, or the consumer closing this generator), the workers
        # are ended at once: shutting the pool down would wait for their cells.  A
        # driver killed outright takes them along through _die_with_parent.
        ex = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_pool_worker)
        try:
            futures = {ex.submit(fn, s): i for i, s in enumerate(specs)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    yield i, fut.result(), None, None
                except Exception as e:
                    line, tb = describe_error(e)
                    yield i, None, line, tb
        except BaseException:
            for p in list(getattr(ex, "_processes", {}).values()):
                p.terminate()
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown(wait=True)

    yield Backend("processes", n, run)


@contextlib.contextmanager
def _dask(n: int | None, address: str | None):
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
            futures = {}
            for i, s in enumerate(specs):
                fut = client.submit(fn, s, pure=False)
                futures[fut] = i
            for fut in as_completed(list(futures)):
                i = futures[fut]
                try:
                    yield i, fut.result(), None, None
                except Exception as e:
                    line, tb = describe_error(e)
                    yield i, None, line, tb
                finally:
                    fut.release()

        yield Backend("dask", n_workers, run)


@contextlib.contextmanager
def open_backend(
    *, processes: int | None = None, workers: int | None = None, scheduler: str | None = None
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
    if processes:
        with _process_pool(int(processes)) as b:
            yield b
    elif workers or scheduler:
        with _dask(workers, scheduler) as b:
            yield b
    else:
        yield Backend("local", 1, _sequential)
