"""Cells of a study: one point of a task's grid, as a JSON-able spec and its coordinates.

A cell is a plain, JSON-able *spec* (everything that determines its numbers) that
its task's ``run_cell`` turns into a record (a pure function of the spec, so that
any backend computes the same record), plus the cell's coordinates in the grid
(``estimator``, ``M``, ``rep`` and the task's own, e.g. ``d`` or ``beta``), by
which ``--only`` selects a slice.  Which cells a grid has and what a cell
computes is the business of its task (:mod:`bayes_ips.study.tasks`); this module
knows no task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from bayes_ips.errors import InputError

__all__ = [
    "TIMING_KEYS",
    "Cell",
    "parse_only",
    "select_cells",
    "spec_hash",
    "stable_int",
]

# Record fields that vary between runs of the same cell (not compared on resume).
TIMING_KEYS = ("wall_time_s", "erm_time_s", "nuts_time_s", "finished_at", "attempts")


def spec_hash(spec: dict) -> str:
    """Stable hash of a cell spec (its record is reused only when this matches)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def stable_int(*parts: Any) -> int:
    """A 31-bit integer that depends only on ``parts`` (a ``fold_in`` tag)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of a study grid.

    Attributes
    ----------
    id : str
        The cell's name (its record is ``records/<id>.json``).
    spec : dict
        JSON-able; everything that determines the cell's record.
    coords : dict
        The cell's coordinates in the grid: ``estimator``, ``M`` and ``rep`` in
        every task, plus the task's own (``d``, ``family``, ``beta``, ...), which
        read as attributes too (``cell.d``).
    """

    id: str
    spec: dict
    coords: Mapping[str, Any]

    @property
    def hash(self) -> str:
        return spec_hash(self.spec)

    @property
    def estimator(self) -> str:
        return self.coords["estimator"]

    @property
    def M(self) -> int:
        return self.coords["M"]

    @property
    def rep(self) -> int:
        return self.coords["rep"]

    def __getattr__(self, key: str) -> Any:
        coords = self.__dict__.get("coords") or {}  # not self.coords: no recursion
        if key in coords:
            return coords[key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")


def parse_only(
    items: list[str] | None, selectable: Mapping[str, Callable[[str], Any]]
) -> dict[str, set]:
    """Parse ``["estimator=erm", "d=1,5"]`` into ``{"estimator": {"erm"}, "d": {1, 5}}``.

    Parameters
    ----------
    items : list of str, optional
        ``KEY=V1,V2`` strings (``--only``).
    selectable : dict
        The task's coordinates: key -> parser of one value (e.g. ``int``).
    """
    out: dict[str, set] = {}
    for item in items or []:
        key, sep, vals = item.partition("=")
        key = key.strip()
        if not sep or not vals.strip():
            raise InputError(f"--only takes KEY=V1,V2; got {item!r}")
        if key not in selectable:
            raise InputError(f"--only: unknown key {key!r} (choose from {', '.join(selectable)})")
        parsed = set()
        for v in vals.split(","):
            try:
                parsed.add(selectable[key](v.strip()))
            except InputError as e:  # a parser's own message (e.g. an unknown attention)
                raise InputError(f"--only {key}: {e}") from None
            except ValueError:
                raise InputError(f"--only {key}: expected numbers, got {v.strip()!r}") from None
        out.setdefault(key, set()).update(parsed)
    return out


def select_cells(cells: list[Cell], only: dict[str, set]) -> list[Cell]:
    """The cells whose coordinates are in ``only`` (every key must match)."""
    return [c for c in cells if all(c.coords.get(k) in vals for k, vals in only.items())]
