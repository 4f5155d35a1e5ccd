"""The analyses of ``analyses/``: run a study, then write its figures and tables.

Each analysis script is a thin ``main(args)`` around :func:`run_analysis`; the
command ``bayes-ips study`` uses it too.  The report is the study task's
(:mod:`bayes_ips.study.tasks`); ``kind`` picks one of the analyses it knows, e.g.
for the IPS task ``study``, ``dimension``, ``smoothness`` or ``bayes_vs_erm``
(:func:`bayes_ips.study.report.write_ips_report`).
"""

from __future__ import annotations

import argparse
import os

from bayes_ips.errors import InputError
from bayes_ips.run_options import add_run_arguments

__all__ = ["add_study_arguments", "main_for", "run_analysis"]


def add_study_arguments(parser: argparse.ArgumentParser, default_config: str) -> None:
    """The options every analysis script takes."""
    parser.add_argument("--config", default=default_config, help="study config (.toml)")
    parser.add_argument("--out-dir", required=True, help="figures, tables and aggregated results")
    parser.add_argument(
        "--study-dir",
        help="folder of the cell records (default: --out-dir); share it between "
        "analyses of the same seed and settings to reuse cells",
    )
    add_run_arguments(parser, folder="--study-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main_for(kind: str, args: argparse.Namespace) -> dict:
    """The body of an analysis script's ``main(args)``: float64, cache, run, print."""
    from bayes_ips import enable_compilation_cache, enable_x64

    enable_x64()
    enable_compilation_cache()
    out = run_analysis(
        args.config,
        args.out_dir,
        kind=kind,
        study_dir=args.study_dir,
        processes=args.processes,
        workers=args.workers,
        scheduler=args.scheduler,
        attempts=args.attempts,
        cell_timeout=args.cell_timeout,
        progress=not args.quiet,
        only=args.only,
        report_only=args.report_only,
    )
    print(out["summary"])
    return out


def run_analysis(
    config_path: str,
    out_dir: str,
    *,
    kind: str = "study",
    study_dir: str | None = None,
    processes: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    attempts: int = 2,
    progress: bool = True,
    only: list[str] | None = None,
    report_only: bool = False,
    cell_timeout: float | None = None,
) -> dict:
    """Run (or resume) the study of ``config_path`` and write its report into ``out_dir``.

    ``only`` restricts the grid to a slice, e.g. ``["estimator=erm", "d=1,5"]``
    (keys: the task's coordinates; for the IPS task estimator, d, M, rep, beta,
    family).  ``report_only`` runs no cell and reports on those already finished.
    ``kind`` is one of the analyses the task's report knows.

    Returns a dict with the StudyResult (``result``), the summary Markdown
    (``summary``), the files written (``paths``), and what else the task's report
    returns (IPS: the error slopes ``rows`` and band-width slopes ``band_rows``;
    both ``[]`` when no cell has finished).
    """
    import xarray as xr

    from bayes_ips.study.backends import check_backend_options
    from bayes_ips.study.cells import parse_only, select_cells
    from bayes_ips.study.config import load_config
    from bayes_ips.study.engine import run_study
    from bayes_ips.study.tasks import task_of

    check_backend_options(processes, workers, scheduler, cell_timeout)
    config = load_config(config_path)
    task = task_of(config)
    if kind not in task.kinds:
        raise InputError(
            f"unknown analysis kind {kind!r} for task {task.name!r}; "
            f"choose from {', '.join(task.kinds)}"
        )
    selection = parse_only(only, task.selectable)
    cells = select_cells(task.make_cells(config), selection)
    if not cells:
        raise InputError(f"--only {' '.join(only or [])} selects no cell of {config.name}")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out_dir}: {e.strerror}") from None
    result = run_study(
        config,
        study_dir or out_dir,
        processes=processes,
        workers=workers,
        scheduler=scheduler,
        max_attempts=attempts,
        progress=progress,
        results_dir=out_dir,
        cells=cells,
        report_only=report_only,
        cell_timeout=cell_timeout,
    )
    out = {"result": result, "rows": [], "band_rows": [], "summary": "", "paths": []}
    if not result.records:
        return out
    with xr.open_dataset(os.path.join(out_dir, "results.nc"), engine="h5netcdf") as ds:
        ds = ds.load()
    return {**out, **task.report(ds, out_dir, config, result, kind)}
