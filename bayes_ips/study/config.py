"""Study configurations: a TOML file declares a grid of cells; its task validates it.

``[study] task`` picks the task (:mod:`bayes_ips.study.tasks`; default ``"ips"``),
whose module documents the file format: :mod:`bayes_ips.study.tasks.ips` (the
attention-style IPS, ERM and the posterior mean) and
:mod:`bayes_ips.study.tasks.slr` (single-location regression).  Every key is
checked: unknown keys and bad values are refused with a one-line
:class:`~bayes_ips.errors.InputError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from typing import Any

from bayes_ips.errors import InputError
from bayes_ips.study.tasks import DEFAULT_TASK, TaskConfig, get_task

__all__ = ["config_hash", "load_config", "parse_config"]


def config_hash(config: TaskConfig) -> str:
    """A short stable hash of everything that determines the study's numbers."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_config(raw: dict[str, Any]) -> TaskConfig:
    """Validate a parsed TOML document into its task's config (``[study] task``)."""
    study = raw.get("study")
    if not isinstance(study, dict):
        raise InputError("the config needs a [study] table")
    return get_task(study.get("task", DEFAULT_TASK)).parse(raw)


def load_config(path: str | os.PathLike) -> TaskConfig:
    """Read and validate a study TOML file; bad files raise :class:`InputError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    try:
        return parse_config(raw)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
