"""Choosing K, the number of knot intervals of the ERM spline (see README, "Choosing K").

* :func:`k_candidates`: the grid searched by generalised cross-validation (GCV),
  the divisors of the finest K the data allow;
* :func:`select_k`: GCV of every candidate at a fitted ``A``, all from one Gram
  pass at the finest K (:func:`_gcv_table`, through the nested spline spaces of
  :func:`refinement_matrices`);
* :func:`theory_k`: the theory's rule ``K ~ (M / log M)^{1/(2 beta + 1)}``, and
  :func:`theory_condition`, the theory's condition on ``r d``;
* :func:`_knots_for`: the knots of a given K, at empirical quantiles of the scores.

:func:`bayes_ips.erm.fit_erm` picks the rule (:func:`k_grid`) and calls :func:`select_k`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bayes_ips.pairs import off_diagonal_scores
from bayes_ips.pairwise import gram
from bayes_ips.spline import Knots, make_knots, quantile_breaks

__all__ = [
    "K_RULES",
    "k_candidates",
    "k_grid",
    "refinement_matrices",
    "refinement_matrix",
    "select_k",
    "theory_condition",
    "theory_k",
]

K_RULES = ("gcv", "theory")


def theory_k(M: int, beta: float, constant: float = 2.0) -> int:
    """``ceil(constant * (M / log M)^{1/(2 beta + 1)})``: the theory's order for K."""
    return max(1, math.ceil(constant * (M / math.log(max(M, 3))) ** (1.0 / (2.0 * beta + 1.0))))


def theory_condition(M: int, d: int, rank: int, beta: float | None) -> dict[str, Any]:
    """Does ``r d <= (M / log M)^{1/(2 beta + 1)}`` hold?  (None when beta is unknown.)"""
    if beta is None or not math.isfinite(beta):
        return {"holds": None, "lhs": rank * d, "rhs": None, "beta": beta}
    rhs = (M / math.log(max(M, 3))) ** (1.0 / (2.0 * beta + 1.0))
    return {"holds": bool(rank * d <= rhs), "lhs": rank * d, "rhs": rhs, "beta": beta}


# Finest grids: numbers with many divisors, spread roughly geometrically.
FINE_K = (4, 6, 8, 12, 16, 24, 36, 48, 60, 96, 120, 180, 240)
K_MAX = 240  # the cost of a Gram pass grows like n_basis^2 (F^T F is dense)
OBS_PER_INTERVAL = 25  # the finest K leaves at least this many observations per interval


def k_candidates(n_obs: int, n_max: int = K_MAX) -> list[int]:
    """The K searched by GCV: the divisors >= 2 of the finest K allowed by the data.

    The finest K is the largest of :data:`FINE_K` not above
    ``min(n_max, n_obs / 25)`` (at least 4).  Its divisors are spread roughly
    geometrically (240: 2, 3, 4, 5, 6, 8, 10, 12, 15, 16, 20, 24, 30, 40, 48, 60, 80,
    120, 240), and their quantile knots are nested in its own, so every candidate's
    Gram statistics follow from one pass over the data at the finest K (see
    :func:`_gcv_table`).  The ceiling grows with the data because the best K does:
    rough phi* (many kinks, small beta) need many intervals, and a fixed ceiling
    becomes an error floor.
    """
    k_hi = int(np.clip(n_obs // OBS_PER_INTERVAL, 4, n_max))
    fine = max(k for k in FINE_K if k <= k_hi)
    return [k for k in range(2, fine + 1) if fine % k == 0]


KNOT_SAMPLES = 4000  # samples whose scores place the knots


def _knots_for(X, U, V, K: int, degree: int, multiplicity: int) -> Knots:
    breaks = quantile_breaks(off_diagonal_scores(X, U, V, KNOT_SAMPLES), K)
    return make_knots(breaks, degree, multiplicity)


def _gcv_score(G, b, yy, n, ridge, n_a, K) -> dict[str, float]:
    """GCV of the ridge fit from Gram statistics (NumPy; a K x K solve)."""
    nb = G.shape[0]
    lam = ridge * np.trace(G) / nb + 1e-300
    H = G + lam * np.eye(nb)
    c = np.linalg.solve(H, b)
    rss = float(yy - 2 * c @ b + c @ G @ c)
    df = float(np.trace(np.linalg.solve(H, G))) + n_a
    score = (rss / n) / (1.0 - df / n) ** 2 if df < n else math.inf
    return {"K": int(K), "n_basis": nb, "rss": rss, "df": df, "gcv": score}


def _gcv(X, Y, U, V, knots, ridge, n_a, chunk) -> dict[str, float]:
    """GCV at one knot layout: one pass of :func:`gram`."""
    st = gram(U, V, X, Y, knots, chunk)
    return _gcv_score(
        np.asarray(st.FtF),
        np.asarray(st.FtY),
        float(st.YtY),
        float(st.n_obs),
        ridge,
        n_a,
        knots.n_intervals,
    )


def refinement_matrix(coarse: Knots, fine: Knots) -> np.ndarray:
    """``T`` with ``B_coarse(u) = B_fine(u) T`` when the coarse knots are nested in the fine.

    The coarse B-splines lie in the fine spline space.  Both bases are evaluated
    (SciPy) at ``s + 1`` points inside every fine interval, which determine a
    spline of the fine space, and ``T`` solves that consistent least-squares
    system; the extrapolation beyond the end knots is the same polynomial, so the
    identity holds for every score.  ``ValueError`` when the residual shows that
    the knots are not nested.

    Returns
    -------
    (n_basis(fine), n_basis(coarse)) array
    """
    return refinement_matrices([coarse], fine)[0]


def refinement_matrices(coarse: list[Knots], fine: Knots) -> list[np.ndarray]:
    """:func:`refinement_matrix` for several coarse layouts, with one factorisation.

    The normal equations of the fine collocation matrix (banded, well conditioned:
    B-splines at points spread over every interval) are factorised once; each
    coarse layout then costs one product and two triangular solves.
    """
    from scipy.interpolate import BSpline
    from scipy.linalg import cho_factor, cho_solve

    def knot_vector(kn: Knots) -> np.ndarray:  # NumPy: no compilation per layout
        b, deg, mult = np.asarray(kn.breaks), kn.degree, kn.multiplicity
        return np.concatenate(
            [np.repeat(b[:1], deg + 1), np.repeat(b[1:-1], mult), np.repeat(b[-1:], deg + 1)]
        )

    s = fine.degree
    bf = np.asarray(fine.breaks)
    frac = (np.arange(s + 1) + 0.5) / (s + 1)
    u = (bf[:-1, None] + np.diff(bf)[:, None] * frac).ravel()
    Bf = BSpline.design_matrix(u, knot_vector(fine), s).toarray()
    chol = cho_factor(Bf.T @ Bf)
    out = []
    for c in coarse:
        Bc = BSpline.design_matrix(u, knot_vector(c), s).toarray()
        T = cho_solve(chol, Bf.T @ Bc)
        if np.abs(Bf @ T - Bc).max() > 1e-9:
            raise ValueError("the coarse knots are not nested in the fine knots")
        out.append(T)
    return out


def _gcv_table(X, Y, U, V, grid, s, m, ridge, n_a, chunk) -> list[dict[str, float]]:
    """GCV for every K of the grid from one pass over the data.

    The candidates divide the finest K, so their quantile breakpoints are every
    ``(K_fine / K)``-th breakpoint of the finest layout: their spline spaces are
    nested in the finest one, ``F_K = F_fine T_K``, and ``F_K^T F_K = T_K^T (F^T F) T_K``
    exactly.  (Falls back to one pass per K when ties in the scores merged
    breakpoints of the finest layout.)
    """
    fine_k = max(grid)
    fine = _knots_for(X, U, V, fine_k, s, m)
    if fine.n_intervals != fine_k or any(fine_k % K for K in grid):
        return [_gcv(X, Y, U, V, _knots_for(X, U, V, K, s, m), ridge, n_a, chunk) for K in grid]
    st = gram(U, V, X, Y, fine, chunk)
    G, b = np.asarray(st.FtF), np.asarray(st.FtY)
    yy, n = float(st.YtY), float(st.n_obs)
    breaks = np.asarray(fine.breaks)
    coarse = [make_knots(breaks[:: fine_k // K], s, m) for K in grid]
    table = []
    for K, T in zip(grid, refinement_matrices(coarse, fine), strict=True):
        table.append(_gcv_score(T.T @ G @ T, T.T @ b, yy, n, ridge, n_a, K))
    return table


def k_grid(
    n_obs: int, M: int, n_intervals: int | None, k_rule: str, beta: float | None
) -> list[int]:
    """The K to choose from: the fixed ``n_intervals``, the theory's K, or the GCV grid."""
    if n_intervals is not None:
        return [int(n_intervals)]
    if k_rule == "theory":
        return [theory_k(M, beta)]
    return k_candidates(n_obs)


def select_k(X, Y, U, V, grid, s, m, ridge, n_a, chunk) -> tuple[int, list[dict[str, float]]]:
    """The K of ``grid`` with the smallest GCV at the factors ``U, V``, and the GCV table."""
    table = _gcv_table(X, Y, U, V, grid, s, m, ridge, n_a, chunk)
    return table[int(np.argmin([t["gcv"] for t in table]))]["K"], table
