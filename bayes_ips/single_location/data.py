"""The data contract of single-location regression: ``X`` (M, L, d) and ``Y`` (M,)."""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike

from bayes_ips.errors import InputError

__all__ = ["check_data"]


def check_data(X: ArrayLike, Y: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate samples ``X`` (M, L, d) and outputs ``Y`` (M,); return float64 copies."""
    X = np.asarray(X)
    if X.ndim != 3:
        raise InputError(f"X must have shape (M, L, d), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(f"X must be numeric, got dtype {X.dtype}")
    M, L, d = X.shape
    if M < 1 or L < 1 or d < 2:
        raise InputError(f"X needs M >= 1 samples, L >= 1 tokens and d >= 2, got shape {X.shape}")
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise InputError(f"X has {int(np.size(X) - np.isfinite(X).sum())} NaN or inf value(s)")
    if Y is None:
        return X, None
    Y = np.asarray(Y)
    if Y.shape != (M,):
        raise InputError(f"Y must have shape (M,) = ({M},) to match X, got {Y.shape}")
    if not np.issubdtype(Y.dtype, np.number):
        raise InputError(f"Y must be numeric, got dtype {Y.dtype}")
    Y = Y.astype(np.float64)
    if not np.all(np.isfinite(Y)):
        raise InputError(f"Y has {int(np.size(Y) - np.isfinite(Y).sum())} NaN or inf value(s)")
    return X, Y
