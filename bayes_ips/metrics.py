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

from bayes_ips.pairwise import padded_size
from bayes_ips.simulate import Truth, g_true, sample_pairs

__all__ = ["L2Error", "l2_error", "outside_knots"]

DEFAULT_PAIRS = 20000
DEFAULT_RSE_FACTOR = 32  # the pairs a target rse may draw, by default: 32 x n_pairs
#: With a stratum: pairs screened for it per pair of the main sample.  Screening
#: draws a pair and tests the stratum only (no prediction): cheap next to the
#: error's evaluation, so a stratum of probability 1e-5 yields hundreds of pairs.
SCREEN_FACTOR = 64


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
        Held-out pairs at which the error was evaluated (the main sample).
    n_screened : int
        With a stratum: the pairs screened for it (the main sample included).
    n_stratum : int
        With a stratum: the pairs in it at which the error was evaluated.
    """

    error: float
    se: float
    relative: float
    n_pairs: int
    n_screened: int = 0
    n_stratum: int = 0

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
    stratum: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    screen: int = SCREEN_FACTOR,
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
    stratum : callable, optional
        ``(x, y) -> bool (P,)``: a rare region whose pairs carry much of the
        error, e.g. where the estimate extrapolates (:func:`outside_knots`).  The
        error is then estimated by stratified sampling with estimated weights
        (double sampling): every chunk of the main sample comes with ``screen``
        chunks of pairs that are only tested for the stratum; the stratum's
        probability ``p`` is the fraction of all these pairs in it, its mean
        squared error the mean over all of them in it, and the rest's mean that
        over the main sample outside it:
        ``error = (1 - p) mean_out_of_stratum + p mean_in_stratum``, with
        ``se^2 = (1 - p)^2 s_o^2 / n_o + p^2 s_i^2 / n_i + (mean_i - mean_o)^2 p (1 - p) / n_s``
        (``n_s`` the pairs screened).
        It estimates the same quantity as the plain mean (for any stratum), with
        far less variance where a few rare pairs dominate.  Where fewer than 2
        pairs of the stratum are found, its variance is taken as its mean
        squared (a coefficient of variation of 1).
    screen : int
        Screened chunks per chunk of the main sample (with a stratum).

    Returns
    -------
    L2Error
        ``n_pairs`` is the number of pairs used.
    """
    if max_pairs is None:
        max_pairs = n_pairs if rse is None else DEFAULT_RSE_FACTOR * n_pairs
    max_pairs = max(max_pairs, n_pairs, min_pairs)
    if isinstance(screen, bool) or int(screen) != screen or screen < 0:
        raise ValueError(f"screen must be a non-negative integer, got {screen}")
    sq, gs, ins, extra = [], [], [], []  # extra: (squared errors in the stratum, pairs screened)
    while True:
        for c in range(len(sq), max(2 * len(sq), 1)):  # double the chunks (1 at first)
            k = key if c == 0 else jax.random.fold_in(key, c)
            x, y = sample_pairs(k, truth.tokens, n_pairs)
            sq_c, g_c = _squared_errors(x, y, predict, truth, batch)
            sq.append(sq_c)
            gs.append(g_c)
            if stratum is not None:
                ins.append(_in_stratum(stratum, x, y, batch))
                extra.append(_screened(k, predict, truth, stratum, n_pairs, screen, batch))
        total = len(sq) * n_pairs
        allsq = np.concatenate(sq)
        if stratum is None:
            err = float(allsq.mean())
            se = float(allsq.std(ddof=1) / math.sqrt(total))
            n_screened = n_stratum = 0
        else:
            inside = np.concatenate(ins)
            err, se, n_screened, n_stratum = _stratified(allsq, inside, extra)
        more = total < min_pairs or (rse is not None and not se <= rse * err)
        if not more or 2 * total > max_pairs:
            break
    g = np.concatenate(gs)
    return L2Error(err, se, err / float(g.var()), int(total), int(n_screened), int(n_stratum))


def _squared_errors(x, y, predict, truth, batch):
    """Squared differences ``(g_hat - g*)^2`` and ``g*`` at the pairs ``(x, y)``."""
    sq, gs = [], []
    for lo in range(0, x.shape[0], batch):
        xb, yb = x[lo : lo + batch], y[lo : lo + batch]
        g = g_true(truth, xb, yb)
        sq.append(np.asarray((jnp.asarray(predict(xb, yb)) - g) ** 2))
        gs.append(np.asarray(g))
    return np.concatenate(sq), np.concatenate(gs)


def _in_stratum(stratum, x, y, batch) -> np.ndarray:
    out = [
        np.asarray(stratum(x[lo : lo + batch], y[lo : lo + batch]))
        for lo in range(0, x.shape[0], batch)
    ]
    return np.concatenate(out).astype(bool)


def _screened(key, predict, truth, stratum, n_pairs, screen, batch):
    """Squared errors at the stratum's pairs of ``screen`` chunks from ``key``; pairs screened.

    The pairs found are evaluated together, padded to a power of two (a jitted
    ``predict`` compiles once per padded size, not once per count).
    """
    xs, ys = [], []
    for j in range(screen):
        kj = jax.random.fold_in(jax.random.fold_in(key, 0x5C2EE7), j)
        x, y = sample_pairs(kj, truth.tokens, n_pairs)
        hit = np.flatnonzero(_in_stratum(stratum, x, y, batch))
        if hit.size:
            xs.append(np.asarray(x)[hit])
            ys.append(np.asarray(y)[hit])
    if not xs:
        return np.zeros(0), screen * n_pairs
    x, y = np.concatenate(xs), np.concatenate(ys)
    n = x.shape[0]
    size = padded_size(n)
    pad = np.zeros((size - n, x.shape[1]), x.dtype)  # zero tokens: any valid pair, dropped below
    sq, _ = _squared_errors(
        jnp.asarray(np.concatenate([x, pad])),
        jnp.asarray(np.concatenate([y, pad])),
        predict,
        truth,
        batch,
    )
    return sq[:n], screen * n_pairs


def _stratified(allsq, inside, extra):
    """Double-sampling estimate (see :func:`l2_error`): ``(error, se, n_screened, n_stratum)``."""
    s_in = np.concatenate([allsq[inside]] + [e[0] for e in extra])
    s_out = allsq[~inside]
    n_screened = allsq.size + sum(e[1] for e in extra)
    p = s_in.size / n_screened
    m_out = float(s_out.mean()) if s_out.size else 0.0
    v_out = float(s_out.var(ddof=1)) if s_out.size >= 2 else 0.0
    m_in = float(s_in.mean()) if s_in.size else 0.0
    v_in = float(s_in.var(ddof=1)) if s_in.size >= 2 else m_in**2
    err = (1.0 - p) * m_out + p * m_in
    var = (1.0 - p) ** 2 * v_out / max(s_out.size, 1)
    var += p**2 * v_in / max(s_in.size, 1) + (m_in - m_out) ** 2 * p * (1.0 - p) / n_screened
    return err, math.sqrt(var), n_screened, s_in.size


def outside_knots(A, knots) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The pairs whose score ``x^T A y`` lies beyond the outer knots (where the tail rule acts).

    For :func:`l2_error`'s ``stratum``: an estimate extrapolates there, and its
    squared errors at the few such pairs can carry much of the mean.
    """
    A = jnp.asarray(A)
    lo, hi = float(knots.breaks[0]), float(knots.breaks[-1])

    def outside(x, y):
        s = jnp.einsum("pd,de,pe->p", jnp.asarray(x), A, jnp.asarray(y))
        return (s < lo) | (s > hi)

    return outside
