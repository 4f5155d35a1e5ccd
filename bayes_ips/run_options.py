"""Command-line options for running a study, shared by ``bayes-ips study`` and ``analyses/``.

Kept free of heavy imports (no JAX, no NumPy): the command line builds its parser
before it knows which command runs.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["add_run_arguments", "positive_int", "positive_seconds"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return v


def add_run_arguments(parser: argparse.ArgumentParser, *, folder: str = "--out-dir") -> None:
    """The backend, retry, timeout and slicing options of a study run.

    ``folder`` names the option that holds the cell records (for the help text).
    """
    be = parser.add_mutually_exclusive_group()
    be.add_argument("--processes", type=positive_int, help="local process pool of this size")
    be.add_argument("--workers", type=positive_int, help="Dask LocalCluster with N workers")
    be.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:port)")
    parser.add_argument(
        "--attempts", type=positive_int, default=2, help="tries per cell (default 2)"
    )
    parser.add_argument(
        "--cell-timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="end the worker of a cell running longer than this and count the cell as "
        "failed (retried like any failure; needs --processes, --workers or --scheduler)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="KEY=V1,V2",
        help="run a slice of the grid: --only estimator=erm --only d=1,5 "
        "(keys: the task's coordinates, e.g. estimator, kind, d, M, rep, beta, family; heads for "
        "task = 'heads')",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help=f"run no cell: aggregate and report the cells already finished in {folder}",
    )
