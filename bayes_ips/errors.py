"""The one exception type for bad input, and the checks that raise it.

Every message is one line that says what was wrong and what was expected; the
CLI prints it and exits non-zero without a traceback.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = [
    "InputError",
    "check_finite",
    "check_output_dir",
    "check_positive",
    "check_rank",
    "check_xy",
]


class InputError(ValueError):
    """Bad input: wrong shapes, non-finite values, impossible options, bad files."""


def check_finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        n_bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise InputError(f"{name} has {n_bad} NaN or inf value(s)")


def check_positive(name: str, value: float, *, allow_inf: bool = False) -> None:
    if value is None or not (value > 0) or (math.isinf(value) and not allow_inf):
        raise InputError(f"{name} must be a positive number, got {value}")


def check_xy(X, Y=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate samples ``X`` (M, N, d) and outputs ``Y`` (M, N); return float64 copies."""
    X = np.asarray(X)
    if X.ndim != 3:
        raise InputError(f"X must have shape (M, N, d), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(f"X must be numeric, got dtype {X.dtype}")
    M, N, d = X.shape
    if N < 2:
        raise InputError(f"each sample needs N >= 2 tokens to interact, got N = {N}")
    if M < 1 or d < 1:
        raise InputError(f"X must have M >= 1 samples and d >= 1 dimensions, got {X.shape}")
    X = X.astype(np.float64)
    check_finite("X", X)
    if Y is None:
        return X, None
    Y = np.asarray(Y)
    if Y.shape != (M, N):
        raise InputError(f"Y must have shape (M, N) = {(M, N)} to match X, got {Y.shape}")
    if not np.issubdtype(Y.dtype, np.number):
        raise InputError(f"Y must be numeric, got dtype {Y.dtype}")
    Y = Y.astype(np.float64)
    check_finite("Y", Y)
    return X, Y


def check_rank(rank: int, d: int) -> int:
    if int(rank) != rank or rank < 1:
        raise InputError(f"rank must be a positive integer, got {rank}")
    if rank > d:
        raise InputError(f"rank {rank} is impossible in dimension d = {d} (need rank <= d)")
    return int(rank)


def check_output_dir(path: str | os.PathLike) -> str:
    """The folder an output ``path`` will be written to: it must exist and be writable.

    Returns
    -------
    str
        The absolute folder.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"cannot write {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"cannot write {path}: directory {directory} is not writable")
    return directory
