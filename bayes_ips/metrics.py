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
    batch: int = 50_000,
) -> L2Error:
    """Estimate the L2(rho) error of ``predict`` against ``truth``.

    Parameters
    ----------
    key : PRNG key
        Draws the held-out pairs.
    predict : callable
        ``(x, y) -> g_hat``, with ``x, y`` of shape (P, d) and output (P,).
    truth : Truth
    n_pairs : int
        Number of held-out pairs P.

    Returns
    -------
    L2Error
    """
    x, y = sample_pairs(key, truth.tokens, n_pairs)
    sq, gs = [], []
    for lo in range(0, n_pairs, batch):
        xb, yb = x[lo : lo + batch], y[lo : lo + batch]
        g = g_true(truth, xb, yb)
        sq.append(np.asarray((jnp.asarray(predict(xb, yb)) - g) ** 2))
        gs.append(np.asarray(g))
    sq = np.concatenate(sq)
    g = np.concatenate(gs)
    err = float(sq.mean())
    se = float(sq.std(ddof=1) / math.sqrt(n_pairs))
    return L2Error(err, se, err / float(g.var()), int(n_pairs))
