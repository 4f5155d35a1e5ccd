"""Errors of an estimate of the pairwise interaction, in L2(rho).

``rho`` is the law of a pair ``(X_i, X_j)``, ``i != j``, of tokens of one sample.
The error ``||g_hat - g*||^2_{L2(rho)}`` is estimated by Monte Carlo on ``P``
independent held-out pairs (each from a fresh sample), so the standard error is
the sample standard deviation of the squared differences over ``sqrt(P)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bayes_ips.simulate import Truth, g_true, sample_pairs

__all__ = ["L2Error", "l2_error"]

DEFAULT_PAIRS = 20000
DEFAULT_RSE_FACTOR = 32  # the pairs a target rse may draw, by default: 32 x n_pairs


@dataclasses.dataclass(frozen=True)
class L2Error:
    """Monte Carlo estimate of ``||g_hat - g*||^2_{L2(rho)}``.

    Attributes
    ----------
    error : float
        The mean squared difference over held-out pairs.
    se : float
        Its Monte Carlo standard error.
    relative : float
        ``error / Var_rho(g*)``: 0 is perfect, 1 is as bad as predicting the mean.
    n_pairs : int
    """

    error: float
    se: float
    relative: float
    n_pairs: int

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def l2_error(
    key: jax.Array,
    predict: Callable[[jax.Array, jax.Array], jax.Array],
    truth: Truth,
    n_pairs: int = DEFAULT_PAIRS,
    *,
    rse: float | None = None,
    max_pairs: int | None = None,
    min_pairs: int = 0,
    batch: int = 50_000,
) -> L2Error:
    """Estimate the L2(rho) error of ``predict`` against ``truth``.

    Without ``rse`` (and ``min_pairs``) the estimate is the mean over ``n_pairs``
    held-out pairs drawn with ``key``.  With a target ``rse`` the held-out pairs
    double until ``se <= rse * error``: they come in chunks of ``n_pairs``, the
    first drawn with ``key`` (the same pairs as without a target, so a target the
    first draw meets changes nothing), chunk ``c >= 1`` with ``fold_in(key, c)``
    (chunks of one shape: no new compilation), and the target is checked at 1, 2,
    4, 8, ... chunks.  They stop at ``max_pairs``: a doubling that would pass it
    is not drawn, and the target is then missed (``se > rse * error``, which the
    caller reports).  The squared errors are heavy-tailed where an estimate
    extrapolates (a few pairs far out in the tails carry much of the mean), which
    is why a fixed number of pairs can leave a large relative standard error.

    Parameters
    ----------
    key : PRNG key
        Draws the held-out pairs.
    predict : callable
        ``(x, y) -> g_hat``, with ``x, y`` of shape (P, d) and output (P,).
    truth : Truth
    n_pairs : int
        Number of held-out pairs P of the first block.
    rse : float, optional
        Target relative standard error ``se / error``.
    max_pairs : int, optional
        The most pairs drawn (default: ``n_pairs`` without a target, 32 times it
        with one).
    min_pairs : int
        Draw blocks until at least this many pairs are used (at most
        ``max_pairs``), e.g. to score a second estimate on the very pairs
        another one used: the same key and the same number of pairs give the
        same pairs.

    Returns
    -------
    L2Error
        ``n_pairs`` is the number of pairs used.
    """
    if max_pairs is None:
        max_pairs = n_pairs if rse is None else DEFAULT_RSE_FACTOR * n_pairs
    max_pairs = max(max_pairs, n_pairs, min_pairs)
    sq, gs = [], []
    while True:
        for c in range(len(sq), max(2 * len(sq), 1)):  # double the chunks (1 at first)
            k = key if c == 0 else jax.random.fold_in(key, c)
            sq_c, g_c = _squared_errors(k, predict, truth, n_pairs, batch)
            sq.append(sq_c)
            gs.append(g_c)
        total = len(sq) * n_pairs
        allsq = np.concatenate(sq)
        err = float(allsq.mean())
        se = float(allsq.std(ddof=1) / math.sqrt(total))
        more = total < min_pairs or (rse is not None and not se <= rse * err)
        if not more or 2 * total > max_pairs:
            break
    g = np.concatenate(gs)
    return L2Error(err, se, err / float(g.var()), int(total))


def _squared_errors(key, predict, truth, n_pairs, batch):
    """Squared differences ``(g_hat - g*)^2`` and ``g*`` on ``n_pairs`` pairs drawn with ``key``."""
    x, y = sample_pairs(key, truth.tokens, n_pairs)
    sq, gs = [], []
    for lo in range(0, n_pairs, batch):
        xb, yb = x[lo : lo + batch], y[lo : lo + batch]
        g = g_true(truth, xb, yb)
        sq.append(np.asarray((jnp.asarray(predict(xb, yb)) - g) ** 2))
        gs.append(np.asarray(g))
    return np.concatenate(sq), np.concatenate(gs)
