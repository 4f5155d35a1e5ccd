"""Run a study: skip finished cells, run the rest on a backend, retry failures, aggregate.

    result = run_study(config, "out/quick")                 # sequential, in this process
    result = run_study(config, "out/quick", workers=4)      # Dask LocalCluster
    result = run_study(config, "out/quick", scheduler="tcp://host:8786")

The study folder is the unit of resumption (:mod:`bayes_ips.study.store`): rerun
the same call after an interruption and only the missing cells are computed.  A
cell that raises is retried (``max_attempts`` in all, per run); a cell that still
fails is written to ``failures/`` and reported, the others go on, and the next
run retries it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from bayes_ips.study.backends import check_backend_options, open_backend
from bayes_ips.study.cells import Cell
from bayes_ips.study.config import config_hash
from bayes_ips.study.store import Store, write_csv, write_dataset
from bayes_ips.study.tasks import TaskConfig, task_of

__all__ = ["StudyResult", "aggregate", "run_study"]


@dataclasses.dataclass
class StudyResult:
    """What a run left in its folder.

    Attributes
    ----------
    records : list of dict
        Every finished record of the study's cells (reused and new).
    failures : list of dict
        Cells that failed every attempt in this run: ``cell_id``, ``error``, ``attempts``.
    n_reused, n_computed : int
    out_dir : str
    n_missing : int
        Cells left without a record because the run was ``report_only``.
    backend : str
    wall_time_s : float
    """

    records: list[dict]
    failures: list[dict]
    n_reused: int
    n_computed: int
    out_dir: str
    backend: str
    wall_time_s: float
    n_missing: int = 0


def run_study(
    config: TaskConfig,
    out_dir: str | os.PathLike,
    *,
    processes: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    max_attempts: int = 2,
    progress: bool = True,
    cell_fn: Callable[[dict], dict] | None = None,
    cells: list[Cell] | None = None,
    results_dir: str | os.PathLike | None = None,
    report_only: bool = False,
    cell_timeout: float | None = None,
) -> StudyResult:
    """Compute every missing cell of ``config`` and aggregate all records in ``out_dir``.

    Parameters
    ----------
    config : TaskConfig
        A validated config (:func:`bayes_ips.study.config.load_config`); its task
        makes the cells, runs them and aggregates their records.
    out_dir : path
        The study folder (created if needed).
    processes, workers, scheduler
        The backend (see :func:`bayes_ips.study.backends.open_backend`); none
        means sequential in this process.
    max_attempts : int
        Tries per cell in this run.
    progress : bool
        A progress bar over the cells (stderr).
    cell_fn : callable, optional
        ``spec -> record`` (default: the task's ``run_cell``); picklable for the
        pool and Dask backends.
    cells : list of Cell, optional
        A subset of the grid (default: all of it).
    results_dir : path, optional
        Where ``results.nc`` and ``results.csv`` of these cells go (default
        ``out_dir``): several configs can share one folder of records.
    report_only : bool
        Compute nothing: aggregate the cells that already have records (e.g. to
        look at a study while the rest of it runs elsewhere).
    cell_timeout : float, optional
        Seconds a cell may run before its worker is ended and the cell counted as
        failed (needs a pool or Dask; see :func:`~bayes_ips.study.backends.open_backend`).
    """
    t0 = time.perf_counter()
    check_backend_options(processes, workers, scheduler, cell_timeout)
    store = Store(out_dir)
    store.clean_temporaries()
    chash = config_hash(config)
    store.write_meta({"config": config.to_dict(), "config_hash": chash, "seed": config.seed})
    task = task_of(config)
    cell_fn = task.run_cell if cell_fn is None else cell_fn
    cells = task.make_cells(config) if cells is None else cells
    done: dict[str, dict] = {}
    todo: list[Cell] = []
    for cell in cells:
        rec = store.load(cell)
        if rec is None:
            todo.append(cell)
        else:
            done[cell.id] = rec
    n_reused = len(done)
    n_missing = 0
    if report_only:
        n_missing, todo = len(todo), []
    # Repetition-major order: cells of equal shapes (same estimator, d, M) then run one
    # after another rather than side by side, so a pool's later ones load the program
    # the first compiled from the persistent cache instead of compiling it again.
    todo.sort(key=lambda c: c.rep)
    failures: dict[str, dict] = {}
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"study {config.name}", unit="cell")
    with open_backend(
        processes=processes, workers=workers, scheduler=scheduler, cell_timeout=cell_timeout
    ) as backend:
        pending = todo
        for attempt in range(1, max_attempts + 1):
            if not pending:
                break
            failed = []
            specs = [c.spec for c in pending]
            for i, rec, err, tb in backend.run(cell_fn, specs):
                cell = pending[i]
                if err is None:
                    rec = dict(rec, attempts=attempt, finished_at=time.time())
                    store.save(cell, rec, chash)
                    done[cell.id] = rec
                    failures.pop(cell.id, None)
                    if bar is not None:
                        bar.update(1)
                else:
                    failed.append(cell)
                    failures[cell.id] = {
                        "cell_id": cell.id,
                        "error": err,
                        "traceback": tb,
                        "attempts": attempt,
                    }
                    store.save_failure(cell, err, attempt)
                    if bar is not None:
                        bar.set_postfix_str(f"{len(failed)} failed (attempt {attempt})")
            pending = failed
        if bar is not None:
            bar.update(len(pending))
            bar.close()
        name = backend.name
    records = [done[c.id] for c in cells if c.id in done]
    if records:
        results_dir = out_dir if results_dir is None else results_dir
        os.makedirs(results_dir, exist_ok=True)
        aggregate(records, results_dir, config)
    return StudyResult(
        records,
        list(failures.values()),
        n_reused,
        len(todo) - len(failures),
        os.fspath(out_dir),
        name,
        time.perf_counter() - t0,
        n_missing,
    )


def aggregate(records: list[dict], out_dir: str | os.PathLike, config: TaskConfig):
    """Write ``results.nc`` and ``results.csv`` (by the config's task); return the Dataset."""
    task = task_of(config)
    ds = task.to_dataset(records)
    meta = {"config": config.to_dict(), "config_hash": config_hash(config), "seed": config.seed}
    write_dataset(ds, os.path.join(out_dir, "results.nc"), meta)
    write_csv(records, os.path.join(out_dir, "results.csv"), head=task.coordinates)
    return ds
