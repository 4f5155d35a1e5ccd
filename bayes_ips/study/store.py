"""The results store of a study: one JSON record per cell, written atomically.

Layout of a study's output folder::

    study.json            the config, its hash and seed (rewritten at every run)
    records/<cell>.json   one finished cell: cell_id, spec_hash, config_hash, spec, record
    failures/<cell>.json  the last failure of a cell that has no record (error, attempts)
    results.nc            every record as an xarray Dataset (over the task's dimensions)
    results.csv           the same, one row per cell

A record file appears complete under its name or not at all (temporary file, then
rename), so a study killed at any moment leaves only whole records behind; its
rerun skips every cell whose record matches the cell's spec hash and computes the
rest.  Stray temporary files (``.tmp-*``) of a killed run are removed on the next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bayes_ips.errors import InputError
from bayes_ips.io import atomic_write
from bayes_ips.study.cells import TIMING_KEYS, Cell

__all__ = [
    "Store",
    "records_to_dataset",
    "write_csv",
    "write_dataset",
]


def _dumps(obj: Any) -> str:
    def default(o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating | np.bool_):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o)}")

    return json.dumps(obj, default=default, sort_keys=True, indent=1)


class Store:
    """Records and failures of one study folder."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.root = Path(out_dir)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "records").mkdir(exist_ok=True)
            (self.root / "failures").mkdir(exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot use {self.root} as the study folder: {e.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise InputError(f"the study folder {self.root} is not writable")
        self.corrupt: list[str] = []

    # -- files
    def _path(self, kind: str, cell_id: str) -> Path:
        return self.root / kind / f"{cell_id}.json"

    def clean_temporaries(self) -> int:
        """Remove temporary files left by a killed run; returns how many."""
        n = 0
        for sub in ("records", "failures", "."):
            for p in (self.root / sub).glob(".tmp-*"):
                p.unlink(missing_ok=True)
                n += 1
        return n

    def write_meta(self, meta: dict) -> None:
        with atomic_write(self.root / "study.json") as tmp, open(tmp, "w") as f:
            f.write(_dumps(meta))

    # -- records
    def load(self, cell: Cell) -> dict | None:
        """The finished record of ``cell``, or None (missing, stale or corrupt)."""
        p = self._path("records", cell.id)
        if not p.exists():
            return None
        try:
            with open(p) as f:
                doc = json.load(f)
            if doc.get("spec_hash") != cell.hash:
                return None  # made by another spec: recompute (and overwrite)
            return doc["record"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.corrupt.append(str(p))
            return None

    def save(self, cell: Cell, record: dict, config_hash: str) -> None:
        doc = {
            "cell_id": cell.id,
            "spec_hash": cell.hash,
            "config_hash": config_hash,
            "spec": cell.spec,
            "record": record,
        }
        with atomic_write(self._path("records", cell.id)) as tmp, open(tmp, "w") as f:
            f.write(_dumps(doc))
        self._path("failures", cell.id).unlink(missing_ok=True)

    def save_failure(self, cell: Cell, error: str, attempts: int) -> None:
        doc = {"cell_id": cell.id, "spec_hash": cell.hash, "error": error, "attempts": attempts}
        with atomic_write(self._path("failures", cell.id)) as tmp, open(tmp, "w") as f:
            f.write(_dumps(doc))

    def failures(self) -> list[dict]:
        out = []
        for p in sorted((self.root / "failures").glob("*.json")):
            try:
                with open(p) as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                out.append({"cell_id": p.stem, "error": "unreadable failure file"})
        return out


# ------------------------------------------------------------------- aggregation


def _default_coord(rec: dict, dim: str) -> Any:
    return rec[dim] if dim == "estimator" else int(rec[dim])


def records_to_dataset(
    records: list[dict],
    dims: tuple[str, ...],
    *,
    coord: Callable[[dict, str], Any] = _default_coord,
    skip: Iterable[str] = (),
    estimators: Sequence[str] = (),
    always: Iterable[str] = (),
):
    """Every record in one ``xarray.Dataset`` over the dimensions ``dims``.

    Numeric and boolean fields become variables of shape ``dims`` (NaN where a
    cell has no such field, e.g. band widths for ERM).  Each task calls this
    from its ``to_dataset`` with its own dimensions.

    Parameters
    ----------
    records : list of dict
    dims : tuple of str
        The dimensions, e.g. ``("estimator", "d", "M", "rep")``.
    coord : callable
        ``(record, dim) -> value`` of the record along ``dim`` (default: the
        record's field, an integer except for ``estimator``).
    skip : iterable of str
        Record fields that are no variables (the coordinates' sources).
    estimators : sequence of str
        The order of the ``estimator`` coordinate (others follow, sorted).
    always : iterable of str
        Fields that are variables even when no record has a number there.
    """
    import xarray as xr

    if not records:
        raise InputError("no finished records to aggregate")
    tasks = {r.get("task") for r in records}
    if len(tasks) != 1:
        raise InputError(f"records of several tasks cannot be aggregated together: {tasks}")
    coords = {}
    for dim in dims:
        vals = {coord(r, dim) for r in records}
        if dim == "estimator":
            order = [e for e in estimators if e in vals]
            coords[dim] = order + sorted(vals - set(order))
        else:
            coords[dim] = sorted(vals)
    index = {k: {v: i for i, v in enumerate(vals)} for k, vals in coords.items()}
    shape = tuple(len(coords[k]) for k in dims)
    skip = {"task", *skip, *dims}
    fields = {k for r in records for k, v in r.items() if k not in skip and _numeric(v)}
    data = {k: np.full(shape, np.nan) for k in sorted(fields | set(always))}
    for r in records:
        at = tuple(index[dim][coord(r, dim)] for dim in dims)
        for k in data:
            v = r.get(k)
            if _numeric(v):
                data[k][at] = float(v)
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords=coords)
    ds.attrs["n_records"] = len(records)
    return ds


def _numeric(v: Any) -> bool:
    return isinstance(v, bool | int | float) and not isinstance(v, str)


def write_dataset(ds, path: str | os.PathLike, attrs: dict | None = None) -> None:
    """netCDF (h5netcdf), atomically; ``attrs`` are stored as JSON strings."""
    ds = ds.copy()
    for k, v in (attrs or {}).items():
        ds.attrs[k] = v if isinstance(v, str | int | float) else _dumps(v)
    with atomic_write(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def write_csv(records: list[dict], path: str | os.PathLike, head: Sequence[str] = ()) -> None:
    """One row per record (columns: the union of the records' fields), atomically.

    The columns ``head`` (a task's coordinates) come first and order the rows;
    timings come last.
    """
    import csv

    head = [k for k in head if any(k in r for r in records)]
    cols = head + sorted({k for r in records for k in r} - set(head) - set(TIMING_KEYS))
    cols += [k for k in TIMING_KEYS if any(k in r for r in records)]

    def order(r):
        # a record from before a coordinate existed has none there: it sorts last
        vals = [r.get(k) for k in head]
        return tuple(
            (0, v) if isinstance(v, int | float) else (2, "") if v is None else (1, str(v))
            for v in vals
        )

    rows = sorted(records, key=order)
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in cols})
