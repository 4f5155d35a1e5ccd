"""Study tasks: what a study of one model family parses, computes and reports.

The engine (:mod:`bayes_ips.study.engine`), the store and the backends know no
task: they handle cells (:class:`~bayes_ips.study.cells.Cell`), JSON-able specs
and flat records.  A task supplies the rest, through the small protocol
:class:`StudyTask`:

``parse(raw)``
    the TOML document (``[study]`` and the task's own tables) -> a frozen config
    (:class:`TaskConfig`); unknown keys and bad values raise a one-line
    :class:`~bayes_ips.errors.InputError`;
``make_cells(config)``
    the grid, as cells;
``run_cell(spec)``
    one cell's record (a flat JSON-able dict), a pure function of the spec;
``to_dataset(records)``
    the records as one ``xarray.Dataset`` over the task's dimensions
    (``results.nc``);
``report(ds, out_dir, config, result, kind)``
    slopes, figures, tables and ``summary.md`` from that Dataset.

A config picks its task by ``[study] task`` (default ``"ips"``).  A new task (a
multi-head model, say) is a module implementing the protocol, added to
:data:`TASKS`; nothing else changes.

============  ==========================================================
``"ips"``     :mod:`bayes_ips.study.tasks.ips`: attention-style IPS, ERM and
              the posterior mean against M (the default)
``"slr"``     :mod:`bayes_ips.study.tasks.slr`: single-location regression,
              PGD and the posterior-predictive mean against M
``"heads"``   :mod:`bayes_ips.study.tasks.heads`: multi-head IPS, the IPS
              grid crossed with numbers of heads H
============  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bayes_ips.errors import InputError
from bayes_ips.study.cells import Cell
from bayes_ips.study.tasks import heads, ips, slr

__all__ = [
    "DEFAULT_TASK",
    "TASKS",
    "StudyTask",
    "TaskConfig",
    "get_task",
    "make_cells",
    "run_cell",
    "task_of",
]


class TaskConfig(Protocol):
    """What the engine reads of a task's validated config."""

    name: str
    seed: int

    @property
    def task(self) -> str:
        """The task's key in :data:`TASKS`."""
        ...

    @property
    def n_cells(self) -> int:
        """How many cells the whole grid has."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form: everything that determines the study's numbers."""
        ...


class StudyTask(Protocol):
    """A study task (see the module docstring).  Modules implement it."""

    #: the task's key in :data:`TASKS` (``[study] task``)
    name: str
    #: the cell coordinates ``--only`` selects by, each with the parser of one value
    selectable: Mapping[str, Callable[[str], Any]]
    #: the analyses its report knows (``"study"`` is the plain report)
    kinds: tuple[str, ...]
    #: the record fields that locate a cell (the leading columns of ``results.csv``)
    coordinates: tuple[str, ...]

    def parse(self, raw: dict[str, Any]) -> TaskConfig:
        """Validate a parsed TOML document into the task's config."""
        ...

    def make_cells(self, config: Any) -> list[Cell]:
        """Every cell of the grid, cells of equal array shapes adjacent."""
        ...

    def run_cell(self, spec: dict) -> dict:
        """One cell's record, a flat JSON-able dict (picklable: a module function)."""
        ...

    def to_dataset(self, records: list[dict]) -> Any:
        """The records as one ``xarray.Dataset`` over the task's dimensions."""
        ...

    def report(self, ds: Any, out_dir: str, config: Any, result: Any, kind: str) -> dict:
        """Write the report of an aggregated study; returns ``summary`` and ``paths`` (+ more)."""
        ...


TASKS: dict[str, StudyTask] = {"ips": ips, "slr": slr, "heads": heads}
DEFAULT_TASK = "ips"  # a config without [study] task


def get_task(name: Any) -> StudyTask:
    """The task registered under ``name``."""
    if name not in TASKS:
        choices = ", ".join(repr(t) for t in TASKS)
        raise InputError(f"study.task must be one of {choices}; got {name!r}")
    return TASKS[name]


def task_of(config: TaskConfig) -> StudyTask:
    """The task of a validated config."""
    return get_task(config.task)


def make_cells(config: TaskConfig) -> list[Cell]:
    """Every cell of ``config``'s grid, made by its task."""
    return task_of(config).make_cells(config)


def run_cell(spec: dict) -> dict:
    """One cell's record, computed by the task its spec names."""
    return get_task(spec["task"]).run_cell(spec)
