"""Validators of study config tables: each refuses a bad value with a one-line ``InputError``.

Every task's parser (:mod:`bayes_ips.study.tasks`) builds on these, so that all
study configs word their errors alike (``study.M entries must be an integer >= 2,
got 1``).  :func:`dataclass_settings` validates a settings table against the real
config dataclass of an estimator (its fields, their annotated types, then its own
``validate``), so the study never re-declares an estimator's settings.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np

from bayes_ips.errors import InputError

__all__ = [
    "as_choice",
    "as_float",
    "as_int",
    "check_unknown",
    "dataclass_settings",
    "int_list",
    "m_grid",
    "settings_dict",
    "study_estimators",
    "study_name",
]

T = TypeVar("T")


def check_unknown(where: str, got: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse the first key of ``got`` that is not in ``allowed``."""
    allowed = set(allowed)
    extra = sorted(set(got) - allowed)
    if extra:
        raise InputError(
            f"unknown key {extra[0]!r} in {where} (allowed: {', '.join(sorted(allowed))})"
        )


def as_int(where: str, v: Any, lo: int = 1) -> int:
    """``v`` as an integer >= ``lo`` (booleans refused)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise InputError(f"{where} must be an integer >= {lo}, got {v!r}")
    return int(v)


def as_float(where: str, v: Any, lo: float | None = None, lo_open: bool = False) -> float:
    """``v`` as a finite float, ``>= lo`` (``> lo`` when ``lo_open``)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InputError(f"{where} must be a finite number, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise InputError(f"{where} must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    return float(v)


def as_choice(where: str, v: Any, choices: tuple[str, ...]) -> str:
    """``v`` if it is one of ``choices``."""
    if v not in choices:
        raise InputError(f"{where} must be one of {', '.join(choices)}; got {v!r}")
    return v


def int_list(where: str, v: Any, lo: int) -> tuple[int, ...]:
    """A non-empty list of distinct integers >= ``lo``, sorted."""
    if not isinstance(v, list) or not v:
        raise InputError(f"{where} must be a non-empty list of integers, got {v!r}")
    out = tuple(as_int(f"{where} entries", x, lo) for x in v)
    if len(set(out)) != len(out):
        raise InputError(f"{where} has repeated values: {list(out)}")
    return tuple(sorted(out))


def m_grid(v: Any) -> tuple[int, ...]:
    """``study.M``: a list of sample sizes, or ``{min, max, num}`` (log-spaced, rounded)."""
    if isinstance(v, dict):
        check_unknown("study.M", v, {"min", "max", "num"})
        for k in ("min", "max", "num"):
            if k not in v:
                raise InputError(f"study.M as a range needs min, max and num; {k!r} is missing")
        lo, hi, num = (
            as_int("M.min", v["min"], 2),
            as_int("M.max", v["max"], 2),
            as_int("M.num", v["num"]),
        )
        if hi < lo:
            raise InputError(f"study.M: max {hi} < min {lo}")
        return tuple(sorted({int(round(m)) for m in np.geomspace(lo, hi, num)}))
    return int_list("study.M", v, 2)


def study_name(st: Mapping[str, Any], default: str) -> str:
    """``study.name``: a plain non-empty string (it names files)."""
    name = st.get("name", default)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0"):
        raise InputError(f"study.name must be a plain non-empty string, got {name!r}")
    return name


_PLAIN_NAME = re.compile(r"[a-z][a-z0-9_]*")


def study_estimators(
    st: Mapping[str, Any], choices: tuple[str, ...], *, named: bool = False
) -> tuple[str, ...]:
    """``study.estimators``: a non-empty list of distinct names from ``choices``.

    With ``named``, an entry may also be any plain name (lower-case letters,
    digits and ``_``, starting with a letter): a task that lets a config name
    its own estimators (tables with a ``kind``) resolves those itself.
    """
    est = st.get("estimators")
    if not isinstance(est, list) or not est:
        raise InputError("study.estimators must be a non-empty list")
    if named:
        for e in est:
            if not isinstance(e, str) or not _PLAIN_NAME.fullmatch(e):
                raise InputError(
                    "study.estimators entries must be plain names (a-z, 0-9, _; "
                    f"starting with a letter), got {e!r}"
                )
        out = tuple(est)
    else:
        out = tuple(as_choice("study.estimators entries", e, choices) for e in est)
    if len(set(out)) != len(out):
        raise InputError(f"study.estimators has repeated values: {list(out)}")
    return out


# --------------------------------------------------------- settings of an estimator


def _check_type(where: str, v: Any, hint: Any) -> Any:
    """``v`` checked against a field's annotation (None, bool, int, float, str, unions).

    Annotations of another form are not checked here: the class's ``validate``
    judges those values.  Integers are accepted for floats (and converted).
    """
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if union else (hint,)
    if v is None:
        if type(None) in args:
            return v
        raise InputError(f"{where} must be given a value, got none")
    if bool in args:
        if isinstance(v, bool):
            return v
        raise InputError(f"{where} must be true or false, got {v!r}")
    if int in args and isinstance(v, int) and not isinstance(v, bool):
        return v
    if float in args and isinstance(v, int | float) and not isinstance(v, bool):
        if not math.isfinite(v):
            raise InputError(f"{where} must be a finite number, got {v!r}")
        return float(v)
    if str in args and isinstance(v, str):
        return v
    known = {int, float, str, type(None)}
    if not set(args) <= known:
        return v
    kind = {int: "an integer", float: "a number", str: "a string"}
    want = " or ".join(kind[a] for a in args if a in kind)
    raise InputError(f"{where} must be {want}, got {v!r}")


def dataclass_settings(
    table: str,
    raw: Any,
    cls: Callable[..., T],
    *,
    given: Mapping[str, Any] | None = None,
    later: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
    study_keys: Mapping[str, Callable[[str, Any], Any]] | None = None,
) -> tuple[T, dict[str, Any]]:
    """Validate the table ``[table]`` against the config dataclass ``cls``.

    The allowed keys are the fields of ``cls`` (so a field added to ``cls`` is
    accepted without editing the study) less those in ``given``, plus
    ``study_keys``.  Each value is checked against its field's annotation; the
    built object is returned unvalidated (its ``validate`` may need the data's
    shape: the caller runs it).

    Parameters
    ----------
    table : str
        The table's name in the config, e.g. ``"erm"`` (messages say ``erm.restarts``).
    raw : dict
        The table as read from TOML.
    cls : dataclass type
    given : dict, optional
        Fields the study sets itself (e.g. the rank): not keys of the table.
    later : iterable of str
        Fields each cell sets (e.g. a degree): not keys of the table, left at
        the class's default here.
    defaults : dict, optional
        The study's own defaults of some fields (e.g. shorter chains).
    study_keys : dict, optional
        Study-only keys of the table, each with its validator ``(where, value) -> value``.

    Returns
    -------
    config : cls
    extra : dict
        The study-only keys' values (absent keys omitted).
    """
    if not isinstance(raw, dict):
        raise InputError(f"[{table}] must be a table")
    given = dict(given or {})
    study_keys = dict(study_keys or {})
    hints = typing.get_type_hints(cls)
    not_keys = set(given) | set(later)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in not_keys]
    check_unknown(f"[{table}]", raw, set(fields) | set(study_keys))
    kwargs = {**given, **(defaults or {})}
    for name in fields:
        if name in raw:
            kwargs[name] = _check_type(f"{table}.{name}", raw[name], hints.get(name))
    extra = {k: check(f"{table}.{k}", raw[k]) for k, check in study_keys.items() if k in raw}
    try:
        return cls(**kwargs), extra
    except (TypeError, ValueError) as e:
        raise InputError(f"[{table}]: {e}") from None


def settings_dict(
    config: Any,
    always: Iterable[str],
    exclude: Iterable[str] = (),
    legacy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields ``always`` of a config dataclass, plus every other field off its default.

    This is the form a study writes into cell specs and its config hash: adding
    a field (with a default) to the class changes no existing hash, and setting
    it in a config does.  Fields in ``exclude`` (those the study sets itself,
    recorded elsewhere in the spec) are left out.  A field of ``legacy`` (name ->
    value) is compared with that value instead of its default: the value specs
    meant before the field existed, or before its default changed, so that
    their hashes stay (a spec without the field reads as it).
    """
    legacy = legacy or {}
    always = tuple(always)
    skip = set(always) | set(exclude)
    out = {k: getattr(config, k) for k in always}
    for f in dataclasses.fields(config):
        if f.name in skip:
            continue
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        default = legacy.get(f.name, default)
        v = getattr(config, f.name)
        if default is dataclasses.MISSING or v != default:
            out[f.name] = v
    return out
