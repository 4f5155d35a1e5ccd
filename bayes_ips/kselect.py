"""Choosing K, the number of knot intervals of the ERM spline (see README, "Choosing K").

* :func:`k_candidates`: the grid searched by generalised cross-validation (GCV),
  the divisors of the finest K the data allow;
* :func:`select_k`: GCV of every candidate at a fitted ``A``, all from one Gram
  pass at the finest K (:func:`_gcv_table`, through the nested spline spaces of
  :func:`refinement_matrices`), the grid's top doubled (up to :data:`K_CEILING`,
  as the data allow) while GCV's minimum sits on it;
* :func:`theory_k`: the theory's rule ``K ~ (M / log M)^{1/(2 beta + 1)}``, and
  :func:`theory_condition`, the theory's condition on ``r d``;
* :func:`select_basis`: :func:`select_k` over knot placements too (quantile and
  mixtures with the uniform law, :data:`ERM_UNIFORM_WEIGHTS`);
* :func:`_knots_for`: the knots of a given K, at empirical quantiles of the scores
  (or of their mixture with the uniform law);
* :func:`posterior_basis`: the Bayesian model's own basis (K and knot placement)
  of largest marginal likelihood (:func:`log_evidence`).

:func:`bayes_ips.erm.fit_erm` picks the rule (:func:`k_grid`) and calls :func:`select_basis`;
:func:`bayes_ips.inference.fit_posterior` calls :func:`posterior_basis`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bayes_ips.pairs import off_diagonal_scores
from bayes_ips.pairwise import gram
from bayes_ips.spline import Knots, host_knot_vector, make_knots, mixed_breaks, quantile_breaks

__all__ = [
    "K_RULES",
    "k_candidates",
    "extend_while_top",
    "k_extension",
    "k_extension_for",
    "k_grid",
    "log_evidence",
    "merge_thin",
    "posterior_basis",
    "posterior_k_ceiling",
    "refinement_matrices",
    "refinement_matrix",
    "placement_weights",
    "select_basis",
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
K_MAX = 240  # the first grid's ceiling: a Gram pass costs ~ n_basis^2 (F^T F is dense)
K_CEILING = 960  # GCV's grid doubles up to here while its minimum is at the grid's top
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


def _knots_for(
    X, U, V, K: int, degree: int, multiplicity: int, uniform_weight: float = 0.0
) -> Knots:
    """The knots of ``K`` intervals at the scores of ``U, V``: at their quantiles
    (``uniform_weight = 0``) or at those of their mixture with the uniform law
    (:func:`bayes_ips.spline.mixed_breaks`), thin intervals merged (:func:`merge_thin`,
    counted on all the scores of ``X``)."""
    S = off_diagonal_scores(X, U, V, KNOT_SAMPLES)
    breaks = mixed_breaks(S, K, uniform_weight)
    if uniform_weight > 0:
        S_all = np.asarray(off_diagonal_scores(X, U, V, None)).ravel()
        breaks = merge_thin(breaks, S_all, min_interval_scores(degree))
    return make_knots(breaks, degree, multiplicity)


# ERM's knot placements (``ERMConfig.knot_placement``): ``auto`` (the default), where
# GCV also chooses among mixtures of the scores' law with the uniform law, or
# ``quantile``.  Equal-mass (quantile) intervals grow wide where the scores' density vanishes,
# at the ends of their range; for a phi* rough everywhere the bias there then
# dominates the L2(rho) error: squared bias ~ w^(2 beta) on the last interval's mass
# 1/K, with w ~ K^(-1/(a+1)) for a density vanishing like t^a at the end, so the
# error falls like M^(-(1 + 2 beta/(a+1)) / (2 + 2 beta/(a+1))), not at the minimax
# rate (analyses/RESULTS.md, "Knots where the scores thin out").  Equal-width knots
# (weight 1) are left out, and every interval of a mixed layout must hold at least
# 2 (s + 1) training scores: where the scores thin out at d = 5, intervals with 0-2
# scores left the (barely ridged) coefficients there free to swing, up to |c| = 46,
# and with them the linear tail's slope (held-out errors 4.2e-3 at weight 0.5 and
# K = 80, 0.34 at weight 1 and K = 30, against 1.0e-4 at weight 0.5 and K = 24, all at
# the true A), while GCV, on the training data, hardly saw it.  Thin intervals are
# merged into their neighbours towards the median (:func:`merge_thin`; until
# 2026-12-04 such a layout was refused): with unbounded score tails (d = 30) the
# uniform share's range grows with the sample and every mixed layout had thin ends,
# so GCV fell back to quantile knots (analyses/RESULTS.md, "Thin ends merged").
ERM_UNIFORM_WEIGHTS = (0.0, 0.25, 0.5)
KNOT_PLACEMENTS = ("quantile", "auto")


def min_interval_scores(degree: int) -> int:
    """The fewest training scores a mixed layout's interval may hold: ``2 (s + 1)``."""
    return 2 * (degree + 1)


def merge_thin(breaks, S: np.ndarray, min_count: int) -> np.ndarray:
    """``breaks`` with each thin interval merged into its neighbour towards the scores' median.

    While an interval holds fewer than ``min_count`` of the scores ``S``, the thinnest
    one loses its inner breakpoint (the one on the side of the median of ``S``); the
    outer ends stay.  Where the scores have unbounded (e.g. exponential) tails, the
    uniform share of a mixed layout spreads over a range that grows with the sample,
    and its outermost intervals hold a few scores or none: merged, they become wide
    end intervals like those of quantile knots, and the rest of the layout is kept.
    A layout with no thin interval is returned unchanged; the result is a subset of
    ``breaks``, so its spline space is nested in that of ``breaks``.
    """
    b = np.asarray(breaks, dtype=np.float64)
    counts = list(np.histogram(S, b)[0])
    keep = list(range(len(b)))
    med = float(np.median(S))
    while len(counts) > 1 and min(counts) < min_count:
        i = int(np.argmin(counts))  # interval i spans keep[i] .. keep[i + 1]
        inner = i + 1 if b[keep[i + 1]] <= med else i  # the breakpoint towards the median
        if inner == 0 or inner == len(keep) - 1:  # an end: merge inwards instead
            inner = 1 if inner == 0 else len(keep) - 2
        j = inner - 1  # intervals j and j + 1 become one
        counts[j : j + 2] = [counts[j] + counts[j + 1]]
        del keep[inner]
    return b[keep]


def _fewest_scores(S: np.ndarray, breaks) -> int:
    """The fewest of the scores ``S`` in one interval of ``breaks``."""
    return int(np.histogram(S, np.asarray(breaks))[0].min())


def placement_weights(placement: str) -> tuple[float, ...]:
    """The uniform weights GCV chooses among for a ``knot_placement``."""
    return ERM_UNIFORM_WEIGHTS if placement == "auto" else (0.0,)


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
    system.  The identity holds for every score with either tail: beyond the end
    knots both sides continue as the same polynomial (``"poly"``), or linearly
    with the same value and slope at the end knots (``"linear"``).  ``ValueError``
    when the residual shows that the knots are not nested.

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

    s = fine.degree
    bf = np.asarray(fine.breaks)
    frac = (np.arange(s + 1) + 0.5) / (s + 1)
    u = (bf[:-1, None] + np.diff(bf)[:, None] * frac).ravel()
    Bf = BSpline.design_matrix(u, host_knot_vector(fine), s).toarray()
    chol = cho_factor(Bf.T @ Bf)
    out = []
    for c in coarse:
        Bc = BSpline.design_matrix(u, host_knot_vector(c), s).toarray()
        T = cho_solve(chol, Bf.T @ Bc)
        if np.abs(Bf @ T - Bc).max() > 1e-9:
            raise ValueError("the coarse knots are not nested in the fine knots")
        out.append(T)
    return out


def _gcv_table(
    X, Y, U, V, grid, s, m, ridge, n_a, chunk, uniform_weight: float = 0.0
) -> list[dict[str, float]]:
    """GCV for every K of the grid from one pass over the data.

    The candidates divide the finest K, so their breakpoints are every
    ``(K_fine / K)``-th breakpoint of the finest layout (quantile or mixed, see
    :func:`_knots_for`): their spline spaces are nested in the finest one,
    ``F_K = F_fine T_K``, and ``F_K^T F_K = T_K^T (F^T F) T_K`` exactly.  (Falls back
    to one pass per K when ties in the scores merged breakpoints of the finest
    layout.)  A mixed layout (``uniform_weight > 0``) has its intervals of fewer than
    :func:`min_interval_scores` training scores merged (:func:`merge_thin`, a subset
    of the same breakpoints: still nested).  A row whose layout has fewer intervals
    than its ``K`` (merged, or tied breakpoints) says so in ``n_intervals``.  One
    still thin after merging (too few scores in all) gets GCV ``inf`` (``"thin"``).
    """
    w = float(uniform_weight)
    S = np.asarray(off_diagonal_scores(X, U, V, KNOT_SAMPLES))
    S_all = np.asarray(off_diagonal_scores(X, U, V, None)).ravel() if w > 0 else S

    def row(G, b, yy, n, kn: Knots, K: int) -> dict[str, Any]:
        r = {**_gcv_score(G, b, yy, n, ridge, n_a, K), "uniform_weight": w}
        if kn.n_intervals != K:
            r["n_intervals"] = kn.n_intervals  # thin intervals merged, or tied breakpoints
        if w > 0 and _fewest_scores(S_all, kn.breaks) < min_interval_scores(s):
            r.update(gcv=math.inf, thin=True)
        return r

    def repaired(breaks) -> np.ndarray:
        if w > 0:
            return merge_thin(breaks, S_all, min_interval_scores(s))
        return np.asarray(breaks)

    fine_k = max(grid)
    fine = make_knots(mixed_breaks(S, fine_k, w), s, m)
    if fine.n_intervals != fine_k or any(fine_k % K for K in grid):
        table = []
        for K in grid:
            kn = make_knots(repaired(mixed_breaks(S, K, w)), s, m)
            st = gram(U, V, X, Y, kn, chunk)
            G, b = np.asarray(st.FtF), np.asarray(st.FtY)
            table.append(row(G, b, float(st.YtY), float(st.n_obs), kn, K))
        return table
    st = gram(U, V, X, Y, fine, chunk)
    G, b = np.asarray(st.FtF), np.asarray(st.FtY)
    yy, n = float(st.YtY), float(st.n_obs)
    breaks = np.asarray(fine.breaks)
    coarse = [make_knots(repaired(breaks[:: fine_k // K]), s, m) for K in grid]
    return [
        row(T.T @ G @ T, T.T @ b, yy, n, kn, K)
        for kn, T, K in zip(coarse, refinement_matrices(coarse, fine), grid, strict=True)
    ]


def k_grid(
    n_obs: int, M: int, n_intervals: int | None, k_rule: str, beta: float | None
) -> list[int]:
    """The K to choose from: the fixed ``n_intervals``, the theory's K, or the GCV grid."""
    if n_intervals is not None:
        return [int(n_intervals)]
    if k_rule == "theory":
        return [theory_k(M, beta)]
    return k_candidates(n_obs)


def k_extension(n_obs: int, n_max: int = K_CEILING) -> int:
    """The finest K that GCV's grid may be extended to: ``min(n_max, n_obs / 25)``."""
    return int(min(n_max, n_obs // OBS_PER_INTERVAL))


def k_extension_for(n_obs: int, n_intervals: int | None, k_rule: str) -> int | None:
    """How far GCV's grid may grow (:func:`k_extension`), or None where K is not GCV's
    grid (a fixed ``n_intervals`` or the theory's K): ``extend_to`` of :func:`select_k`."""
    return k_extension(n_obs) if n_intervals is None and k_rule == "gcv" else None


def select_k(
    X, Y, U, V, grid, s, m, ridge, n_a, chunk, extend_to: int | None = None
) -> tuple[int, list[dict[str, float]]]:
    """The K of ``grid`` with the smallest GCV at the factors ``U, V`` (quantile
    knots), and the GCV table: :func:`select_basis` with the quantile layout only."""
    K, _, table = select_basis(X, Y, U, V, grid, s, m, ridge, n_a, chunk, extend_to)
    return K, table


def select_basis(
    X, Y, U, V, grid, s, m, ridge, n_a, chunk, extend_to: int | None = None, weights=(0.0,)
) -> tuple[int, float, list[dict[str, float]]]:
    """The K of ``grid`` and the knot placement with the smallest GCV at ``U, V``.

    One table per uniform weight of ``weights`` (:func:`_gcv_table`; 0: quantile
    knots), each from one Gram pass at its finest K.  With ``extend_to``, a minimum
    at a table's finest K is not trusted as the optimum: its top is doubled (one
    more Gram pass at the doubled K) for as long as GCV keeps choosing the top and
    the doubled K stays within ``extend_to``.  Rough phi* (Hoelder exponent below
    1, or many kinks) want K to grow like ``M^{1/(2 beta + 1)}`` with a large
    constant, and a fixed ceiling (:data:`K_MAX`) becomes the error's floor;
    smooth phi* stop at the first grid and pay nothing.

    Returns
    -------
    K, uniform_weight, table (every row, with its ``uniform_weight``)
    """
    table: list[dict[str, Any]] = []
    for w in weights:

        def score(ks, w=w):
            return _gcv_table(X, Y, U, V, ks, s, m, ridge, n_a, chunk, w)

        table += extend_while_top(score(grid), extend_to, score)[1]
    best = table[int(np.argmin([t["gcv"] for t in table]))]
    return int(best["K"]), float(best["uniform_weight"]), table


def extend_while_top(
    table: list[dict], extend_to: int | None, score, allowed=lambda K: True
) -> tuple[int, list[dict]]:
    """The GCV table's best K, doubling the table's top while GCV chooses the top.

    ``score(ks)`` gives the table rows of the Ks ``ks``; a doubled K is scored only
    while it is ``<= extend_to`` and ``allowed(K)`` (e.g. enough observations for the
    multi-head fit's parameters).  ``extend_to=None``: the table as it is.  Shared by
    :func:`select_k` and :func:`bayes_ips.multihead.fit_erm_heads`.
    """
    best = int(np.argmin([t["gcv"] for t in table]))
    while extend_to is not None and best == len(table) - 1:
        K2 = 2 * table[-1]["K"]
        if K2 > extend_to or not allowed(K2):
            break
        table = table + score([K2])
        best = int(np.argmin([t["gcv"] for t in table]))
    return table[best]["K"], table


# ------------------------------------------------------------ the posterior's own basis
#
# ERM's basis is chosen for a ridge fit: GCV over K with knots at quantiles of the
# scores (every interval needs data).  The Bayesian model's P-spline prior does
# its own smoothing, so its basis is chosen by the model's marginal likelihood
# instead (type-II maximum likelihood), over K and over how much of the knots'
# mass goes into the sparse tails of the scores.  Its maximum, not the smallest K
# within a tolerance of it: on a paper cell (d = 5, M = 16000) K = 48 was 1.8 nats
# below the best K = 64, with the same error but 90% bands covering 0.79 of
# held-out pairs against 0.89 (the bias the smaller basis leaves is of the order
# of the posterior's own spread there).  Within 1 nat fails too (2026-12-04, session
# 14): on the 16 paper cells of analyses/RESULTS.md it halved the held-out Hoelder-1.5
# case's cost (K = 24 at 0.05 nats below K = 96), but took K = 16 for 24 on a d = 1,
# M = 1000 cell, whose bands then covered 0.72 of held-out pairs against 0.88.
#
# Nor below POSTERIOR_K_MIN = 32 intervals: a P-spline's basis should be generous and
# leave the smoothing to its penalty (Eilers and Marx 1996; Ruppert 2002, J. Comput.
# Graph. Stat. 11, 735-757, takes min(35, distinct scores / 4) knots).  Conditional on
# the basis the bands say nothing of what a coarse basis cannot represent.  With the
# grid starting at 8, on 29 problems built outside the package (analyses/
# heldout_external.py) the evidence took K = 8-24 for smooth and kinked phi* (tanh,
# ReLU, a steep sigmoid, cos, sinc) whose 90% bands then covered 0.64-0.79 of held-out
# pairs in 7 runs; from 32 up, 1 run stayed below 0.8 (0.75, sinc at d = 1 and low
# signal to noise), at +1.7% posterior-mean error on average over the 19 runs whose
# K changed (2026-12-06, session 27, analyses/RESULTS.md).

POSTERIOR_FINE_K = (48, 96, 192)  # candidates: the divisors >= POSTERIOR_K_MIN of the finest
POSTERIOR_K_MIN = 32

# How fine the model's basis may be.  ERM's ridge fit needs data in every interval
# (OBS_PER_INTERVAL observations), and so, by default, does the model's.  At d = 1,
# where the gauge leaves A = +-1 and the posterior is over phi alone, a prior of
# first differences (the one taken for a phi* rough at every point, see ORDER_CV_SE)
# may be finer: the prior does all the smoothing, and a basis finer than the data
# could pin coefficient by coefficient costs nothing but factorisations (it tends to
# the prior's continuous limit).  Its K is left to the evidence up to the cost cap
# POSTERIOR_FIXED_A_K_MAX; only the knots need data: each interval keeps at least
# POSTERIOR_SCORES_PER_INTERVAL of the M N (N - 1) pair scores, the rule of four
# distinct covariate values per knot (Ruppert 2002, J. Comput. Graph. Stat. 11,
# 735-757).  With ERM's ceiling the evidence of first differences sat at it on every
# beta = 0.5 Weierstrass phi* at M <= 2000; allowed, it took K = 384-768 and the
# posterior mean's error fell by 9-36%, its 90% band coverage rose from 0.50-0.70
# to 0.78-0.83 (analyses/RESULTS.md, session 23).  The curvature prior keeps ERM's
# ceiling: given the finer one (session 23) it took K = 192 for 48 on the demo's
# smooth tanh cells, error +2-9% in 4 of 5 and 40% slower, and on beta = 1.5 it
# changed the error by at most 2%.  With the factors free (d >= 2) and for
# multi-head models every prior keeps ERM's ceiling: at d = 5, M = 250-500 the finer
# basis helped as much, but at d = 30, M = 250 it took K = 192 for 48 with the same
# error and coverage, and the Laplace proposal of A then failed (Pareto k 0.75
# against 0.37): NUTS, minutes for seconds.
POSTERIOR_SCORES_PER_INTERVAL = 4


def posterior_k_ceiling(shape: tuple[int, ...], heads: int | None = None, order: int = 2) -> int:
    """The finest K the model's basis may take on data of ``shape`` ``(M, N, d)``.

    One head at d = 1 with a prior of first differences (``order = 1``): a quarter of
    the ``M N (N - 1)`` pair scores (:data:`POSTERIOR_SCORES_PER_INTERVAL`);
    otherwise (the curvature prior, ``d >= 2``, or ``heads = H`` heads) ERM's
    ``M N / (25 H)`` (:data:`OBS_PER_INTERVAL`).
    """
    M, N, d = (int(n) for n in shape[:3])
    if heads is None and d == 1 and order == 1:
        return M * N * (N - 1) // POSTERIOR_SCORES_PER_INTERVAL
    return M * N // (OBS_PER_INTERVAL * (heads or 1))


UNIFORM_WEIGHTS = (0.0, 0.5, 1.0)  # quantile, half-and-half, equal-width knots

# The prior's difference order.  The curvature prior (order 2) shrinks towards
# functions far smoother than a phi* rough at every point (a beta = 0.5 Weierstrass
# sum); there its evidence asks for the finest basis it is allowed, and the bias it
# leaves is of the order of its own bands.  The evidence cannot choose the order:
# the weak ridge on the penalty's null space (constants for order 1, lines for
# order 2; prior sd KAPPA * y_scale) adds an Occam factor that depends on KAPPA, not
# on the data, and on the 16 paper cells it took first differences in 16 of 16
# with worse error and coverage (analyses/RESULTS.md, session 16).  So the order is
# switched only if first differences predict held-out sequences better: K-fold
# cross-validation of the squared error over sequences, each prior at its own evidence-best K and
# (sigma, tau), first differences taken when they are better by more than
# ORDER_CV_SE standard errors of the paired fold differences.  That comparison is
# made at ERM's A; at d >= 2 the default path confirms a win of first differences
# with A refitted on every fold (bayes_ips.inference.refit_order_cv, the
# ``order_check`` of posterior_basis): at a fixed A a rougher phi can look better
# while it lets the factors' posterior go flat (analyses/RESULTS.md, session 21).
# Until session 35 the comparison was made only where the curvature prior's
# evidence sat at the grid's largest K; a phi* rough at one point (a cusp,
# sqrt|u|) leaves it inside the grid, and there first differences won the
# comparison by 2.1-4.6 s.e. (coverage 0.78 -> 0.88 on a held-out cusp case);
# on 16 study-like d = 5 cells and 26 held-out runs it changed nothing
# (analyses/RESULTS.md, "Ten problems never run before").
ORDER_CV_FOLDS = 10  # folds of sequences (the remainder of M / 10 left out of the comparison)
ORDER_CV_SE = 2.0  # standard errors by which order 1 must win (the usual 2-s.e. rule)
#: The law of ``tau`` with which the basis and the prior's order are chosen
#: (:func:`log_evidence`, :func:`bayes_ips.inference.refit_order_cv`): the HalfNormal, not
#: the model's half-Cauchy (:func:`bayes_ips.models.lowrank_spline.tau_prior`).  Under the
#: half-Cauchy the curvature prior's type-II MAP ``tau`` grows on a phi* rough everywhere
#: until its cross-validated error nears first differences' (z 8.8 -> 1.7 on the order
#: test's cell), and the order rule no longer takes them.
SELECTION_TAU_LAW = "halfnormal"

# Beyond the finest K of POSTERIOR_FINE_K, where the factors cannot move: at d = 1
# the gauge leaves A = +-1, the Gram statistics exist once per sign, and a finer
# basis costs its K x K factorisations only (elsewhere every proposal of A is a
# Gram pass whose dense product grows as K^2).  The chosen prior's K is doubled
# while its evidence sits at the largest K scored, within the ceiling of
# posterior_k_ceiling, up to POSTERIOR_FIXED_A_K_MAX: on a beta = 0.5 Weierstrass phi* the
# evidence of first differences kept rising to K = 768 at M = 4000, its error
# falling below ERM's (analyses/RESULTS.md, session 16).
POSTERIOR_FIXED_A_K_MAX = 768


def _prior_precision(DtD, tau, ridge) -> np.ndarray:
    """``Q = D^T D / tau^2 + ridge I``; block diagonal over heads for (H, nb, nb) ``DtD``."""
    if np.ndim(DtD) == 2:
        return DtD / tau**2 + ridge * np.eye(DtD.shape[0])
    from scipy.linalg import block_diag

    tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), (DtD.shape[0],))
    eye = np.eye(DtD.shape[-1])
    return block_diag(*(m / t**2 + ridge * eye for m, t in zip(DtD, tau, strict=True)))


def _log_marginal_np(G, b, yy, n, DtD, sigma, tau, ridge, logdet_Q=None):
    """NumPy twin of :func:`bayes_ips.collapsed.collapsed_loglik` (no compilation per K).

    ``DtD``: ``D^T D`` (nb, nb) with a scalar ``tau``, or one per head (H, nb, nb)
    with ``tau`` (H,): the multi-head model's block prior precision
    (:func:`bayes_ips.models.multihead_spline.block_precision`).
    ``logdet_Q``: ``log |Q|`` if the caller has it (from the eigenvalues of ``D^T D``).
    """
    # LAPACK directly (what scipy.linalg.cho_factor and solve_triangular call, without
    # their ~30 us of argument checks: this runs ~60 times per candidate basis)
    from scipy.linalg.lapack import dpotrf, dtrtrs

    K = G.shape[0]
    Q = _prior_precision(DtD, tau, ridge)
    L, info = dpotrf(G + sigma**2 * Q, lower=1, clean=0)
    if info != 0:
        return -math.inf
    if logdet_Q is None:
        LQ, info = dpotrf(Q, lower=1, clean=0)
        if info != 0:
            return -math.inf
        logdet_Q = 2.0 * np.log(np.abs(np.diag(LQ))).sum()
    a, info = dtrtrs(L, b, lower=1)
    if info != 0:
        return -math.inf
    quad = (yy - a @ a) / sigma**2
    logdet = 2.0 * (n - K) * math.log(sigma) + 2.0 * np.log(np.abs(np.diag(L))).sum() - logdet_Q
    return -0.5 * (quad + logdet + n * math.log(2.0 * math.pi))


def log_evidence(stats, penalty, y_scale: float, sigma0: float, tau0=None) -> dict[str, Any]:
    """The model's marginal likelihood at a fixed ``A``, maximised over ``sigma, tau``.

    ``log p(Y | A, sigma, tau) + log p(sigma) + log p(tau)`` (the coefficients
    integrated out, :func:`bayes_ips.collapsed.collapsed_loglik`; HalfNormal(``y_scale``)
    priors on both, :data:`SELECTION_TAU_LAW` for ``tau``), maximised over
    ``(log sigma, log tau)`` with their Jacobian: a type-II MAP, by Nelder-Mead to
    0.01 nats.  The search starts at ``sigma0`` and at ``tau0`` if given (e.g. the
    optimum of a neighbouring basis), else at the best ``tau`` of a coarse grid.

    Multi-head (:mod:`bayes_ips.models.multihead_spline`): ``penalty`` (H, nb - 2, nb)
    holds each head's ``D_h`` and ``stats`` are those of the concatenated design
    ``[F_1 ... F_H]``; every head has its own ``tau_h`` (HalfNormal prior each), so
    the search is over ``H + 1`` log-parameters, started at one ``tau`` for all
    heads (``tau0``, a scalar or one per head, or the grid's best common value).
    With ``H = 1`` this is the single-head computation, number for number.

    Parameters
    ----------
    stats : GramStats (or anything with ``FtF``, ``FtY``, ``YtY``, ``n_obs``)
    penalty : (n_basis - 2, n_basis) array, the curvature penalty ``D``, or
        (H, n_basis - 2, n_basis) for H heads
    y_scale : float
    sigma0 : float, a noise estimate (e.g. ERM's)
    tau0 : float or (H,) array, optional

    Returns
    -------
    dict with ``log_evidence``, ``sigma`` and ``tau`` (a float; a list of H floats
    for a multi-head ``penalty``).
    """
    from scipy.optimize import minimize

    from bayes_ips.models.lowrank_spline import KAPPA

    G, b = np.asarray(stats.FtF), np.asarray(stats.FtY)
    yy, n = float(stats.YtY), float(stats.n_obs)
    D = np.asarray(penalty)
    heads = D.ndim == 3
    DtD = np.swapaxes(D, -1, -2) @ D
    ridge = 1.0 / (KAPPA * y_scale) ** 2
    lam = np.clip(np.linalg.eigvalsh(DtD), 0.0, None)  # log |Q| for every tau from these

    def neg(z):
        sigma = math.exp(z[0])
        tau = np.array([math.exp(t) for t in z[1:]]) if heads else math.exp(z[1])
        t2 = np.asarray(tau)[:, None] ** 2 if heads else tau**2
        logdet_Q = float(np.log(lam / t2 + ridge).sum())
        ll = _log_marginal_np(G, b, yy, n, DtD, sigma, tau, ridge, logdet_Q)
        prior = sum(zi - math.exp(zi) ** 2 / (2.0 * y_scale**2) for zi in z)
        return -(ll + prior) if math.isfinite(ll) else math.inf

    H = D.shape[0] if heads else 1
    ls0 = math.log(max(sigma0, 1e-6 * y_scale))
    if tau0 is None:
        grid = math.log(y_scale) + np.arange(-8.0, 3.0)
        lt0 = np.full(H, min(grid, key=lambda lt: neg([ls0] + [lt] * H)))
    else:
        lt0 = np.broadcast_to(np.log(np.asarray(tau0, dtype=np.float64)), (H,))
    res = minimize(neg, [ls0, *lt0], method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-2})
    tau = [math.exp(t) for t in res.x[1:]] if heads else math.exp(res.x[1])
    return {"log_evidence": -float(res.fun), "sigma": math.exp(res.x[0]), "tau": tau}


def posterior_basis(
    X,
    Y,
    U,
    V,
    degree: int,
    sigma0: float,
    chunk: int,
    k_max: int | None = None,
    scores=None,
    rough_order: bool = True,
    order_check=None,
) -> tuple[Knots, list[dict[str, Any]]]:
    """The Bayesian model's basis: the K and knot placement of largest marginal likelihood.

    Candidates are the placements of :data:`UNIFORM_WEIGHTS`
    (:func:`bayes_ips.spline.mixed_breaks`) times the K that divide the finest
    allowed (the largest of :data:`POSTERIOR_FINE_K` within
    :func:`posterior_k_ceiling`, ERM's 25 observations per interval), from
    :data:`POSTERIOR_K_MIN` on (192: 32, 48, 64, 96, 192), all at the
    factors ``U, V`` (an ERM fit's), with the model's penalty and
    ``y_scale = RMS(Y)``.  Each placement's coarser layouts are nested in its
    finest (every ``(K_fine / K)``-th breakpoint), so one Gram pass per placement
    gives every K's statistics (:func:`refinement_matrices`); each candidate then
    costs a two-parameter search (:func:`log_evidence`).  ``k_max`` (optional)
    leaves out the K above it (all but the grid's smallest if it is below that,
    :func:`_posterior_grid`).  The default path sets none: capping K at ERM's
    GCV K (at least 48) made the held-out B-spline-2 case 3.6 times cheaper
    (K 96 against 192, same error) but the rough Hoelder-0.8 case worse than ERM
    (error 1.78e-4 against ERM's 1.38e-4, coverage 0.76; uncapped K = 96 at
    quantile knots: 1.14e-4, coverage 0.82).

    At d = 1 (one head), where first differences are taken, they are scored again on
    the finer grid of their own ceiling (a quarter of the pair scores,
    :func:`posterior_k_ceiling` with ``order = 1``) and the best of all their rows
    is taken; where the chosen row's K is then the grid's largest (and no ``k_max``
    is given), K is doubled beyond it (:func:`_extend_fixed_a`, within the chosen
    order's ceiling and :data:`POSTERIOR_FIXED_A_K_MAX`).

    The prior's difference order (``order`` in the table): the curvature penalty
    (2), unless ``rough_order`` (one head): then first differences (1) are scored
    on the same grid too, and taken, at their own evidence-best (placement, K),
    when they beat the curvature prior's choice in cross-validation
    (:func:`order_cv`, the rule by :data:`ORDER_CV_SE`; the comparison goes into the
    chosen row as ``order_cv``).
    ``order_check`` (optional) is asked to confirm a win of first differences there:
    called with the two candidates ``[(knots, row), (knots, row)]`` (the curvature
    prior's first), ``scale`` (the penalty's units) and ``y_scale``, it returns a dict
    like :func:`order_cv`'s, whose verdict then stands (with the first comparison
    as its ``fixed_a``), or None to keep :func:`order_cv`'s
    (:func:`bayes_ips.inference.refit_order_cv` refits ``A`` on every fold).

    Multi-head (``U, V`` of shape (H, d, r), :mod:`bayes_ips.models.multihead_spline`):
    one K and one placement for all heads, each head's knots placed by that rule
    on its own training scores (``scores``: H arrays that replace them, e.g. all
    heads' scores pooled for one shared basis) and its penalty in units of their
    sd; the evidence is the collapsed multi-head model's, maximised over ``sigma``
    and every head's ``tau_h`` (:func:`log_evidence`).  The finest K keeps 25
    observations per coefficient in all: ``H K <= n / 25``.

    Returns
    -------
    knots : Knots ((H, K + 1) breaks for H heads)
    table : list of dict (``K``, ``uniform_weight``, ``order``, ``log_evidence``,
        ``sigma``, ``tau``, ``chosen``), one per candidate.
    """
    import jax
    import jax.numpy as jnp
    from threadpoolctl import threadpool_limits

    from bayes_ips.gauge import gauge_factors

    heads = np.ndim(U) == 3
    if heads:
        H = np.shape(U)[0]
        if scores is None:
            scores = [off_diagonal_scores(X, U[h], V[h], KNOT_SAMPLES) for h in range(H)]
        S = [np.asarray(s) for s in scores]
        scale = [float(s.std()) for s in S]
        Un, Vn = jax.vmap(gauge_factors)(jnp.asarray(U), jnp.asarray(V))
    else:
        H = 1
        S = np.asarray(off_diagonal_scores(X, U, V, KNOT_SAMPLES) if scores is None else scores)
        scale = float(S.std())
        Un, Vn = gauge_factors(U, V)
    y_scale = float(np.sqrt(np.mean(np.asarray(Y) ** 2)))
    fine_k, top, grid = _posterior_grid(
        posterior_k_ceiling(np.shape(X), H if heads else None), k_max
    )
    table, layouts = [], []
    # Hundreds of K x K factorisations (K <= 195): with the cores shared (a study's
    # worker pool, any other job), OpenBLAS's threads at K = 195 took 144 ms per
    # Cholesky against 0.1 ms on one thread (measured, load 2.5 on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        placements = _placements(X, Y, Un, Vn, S, fine_k, grid, degree, chunk)
        _evidence_tables(placements, heads, scale, y_scale, grid, sigma0, table, layouts)
        if not table:  # no placement could be nested: ERM's quantile knots at the finest K
            per = [make_knots(quantile_breaks(s, fine_k), degree, 1) for s in (S if heads else [S])]
            knots = _stack(per) if heads else per[0]
            row = {"K": int(knots.n_intervals), "uniform_weight": 0.0, "order": 2, "chosen": True}
            return knots, [row]
        pick = int(np.argmax([t["log_evidence"] for t in table]))
        cv = None
        if rough_order and not heads:
            # is the curvature prior's smoothness wrong for these data? try first differences
            n2 = len(table)
            _evidence_tables(placements, heads, scale, y_scale, grid, sigma0, table, layouts, 1)
            pick1 = n2 + int(np.argmax([t["log_evidence"] for t in table[n2:]]))
            # each candidate through its placement's finest layout (one compiled shape
            # for the fold passes, shared when the placements agree)
            fine = {w: (fines[0], Ts[0]) for w, _, _, Ts, fines in placements}
            cands = []
            for i in (pick, pick1):
                f, Ts = fine[table[i]["uniform_weight"]]
                cands.append((layouts[i], table[i], f, Ts[grid.index(table[i]["K"])]))
            cv = order_cv(X, Y, Un, Vn, cands, scale, y_scale, chunk)
            if order_check is not None and cv["mse_diff"] < -ORDER_CV_SE * cv["se"]:
                confirm = order_check([c[:2] for c in cands], scale, y_scale)
                if confirm is not None:  # it decides; the first comparison is kept in it
                    cv = {**confirm, "fixed_a": cv}
            if cv["mse_diff"] < -ORDER_CV_SE * cv["se"]:
                pick = pick1
        fixed_a = not heads and np.shape(X)[-1] == 1
        if fixed_a and table[pick]["order"] == 1:  # first differences' finer ceiling
            fine1, top1, grid1 = _posterior_grid(posterior_k_ceiling(np.shape(X), order=1), k_max)
            if fine1 > fine_k and top1 > top:
                grid = grid1
                fines = _placements(X, Y, Un, Vn, S, fine1, grid, degree, chunk)
                _evidence_tables(fines, heads, scale, y_scale, grid, sigma0, table, layouts, 1)
                pick = _best_of_order(table, 1)
        if fixed_a and k_max is None and table[pick]["K"] == max(grid):
            cap = posterior_k_ceiling(np.shape(X), order=table[pick]["order"])
            pick = _extend_fixed_a(
                X, Y, Un, Vn, S, scale, y_scale, degree, sigma0, chunk, cap, table, layouts, pick
            )
    for i, t in enumerate(table):
        t["chosen"] = i == pick
    if cv is not None:
        table[pick]["order_cv"] = cv
    return layouts[pick], table


def _posterior_grid(ceiling: int, k_max: int | None) -> tuple[int, int, list[int]]:
    """The finest K of :data:`POSTERIOR_FINE_K` within ``ceiling`` (the smallest if
    none is), the grid's upper bound (``k_max`` if given, at least
    :data:`POSTERIOR_K_MIN`) and the grid: the finest K's divisors from
    :data:`POSTERIOR_K_MIN` to that bound, or the smallest of them if none is within
    it (48 for ``k_max = 40``)."""
    fine_k = max([k for k in POSTERIOR_FINE_K if k <= ceiling], default=min(POSTERIOR_FINE_K))
    top = fine_k if k_max is None else max(POSTERIOR_K_MIN, min(fine_k, int(k_max)))
    divisors = [k for k in range(POSTERIOR_K_MIN, fine_k + 1) if fine_k % k == 0] or [fine_k]
    grid = [k for k in divisors if k <= top] or divisors[:1]
    return fine_k, max(grid), grid


def _best_of_order(table: list[dict[str, Any]], order: int) -> int:
    """The index of the row of largest evidence among those of difference ``order``."""
    rows = [i for i, t in enumerate(table) if t["order"] == order]
    return max(rows, key=lambda i: table[i]["log_evidence"])


def _extend_fixed_a(
    X, Y, Un, Vn, S, scale, y_scale, degree, sigma0, chunk, ceiling, table, layouts, pick
) -> int:
    """Double the chosen prior's K past the grid while its evidence sits at the top.

    Every placement of :data:`UNIFORM_WEIGHTS` is scored at ``2 K`` (one Gram pass
    each, at its own knots) with the chosen row's difference order, while ``2 K``
    is within ``ceiling`` (:func:`posterior_k_ceiling`) and at most
    :data:`POSTERIOR_FIXED_A_K_MAX`.
    Rows are appended to ``table`` and ``layouts``; returns the index of the best
    row of that order.
    """
    from bayes_ips.collapsed import difference_penalty

    order = table[pick]["order"]
    K = table[pick]["K"]
    while 2 * K <= min(ceiling, POSTERIOR_FIXED_A_K_MAX):
        K *= 2
        tau = table[pick]["tau"]
        for w in UNIFORM_WEIGHTS:
            kn = make_knots(mixed_breaks(S, K, w), degree, 1)
            if kn.n_intervals != K:  # ties merged breakpoints
                continue
            ev = log_evidence(
                gram(Un, Vn, X, Y, kn, chunk), difference_penalty(kn, scale, order),
                y_scale, sigma0, tau,
            )  # fmt: skip
            table.append({"K": K, "uniform_weight": w, "order": order, **ev})
            layouts.append(kn)
        pick = _best_of_order(table, order)
        if table[pick]["K"] != K:
            break
    return pick


def order_cv(X, Y, Un, Vn, cands, scale: float, y_scale: float, chunk: int) -> dict[str, Any]:
    """K-fold cross-validated squared error of two priors' posterior means (given ``A``).

    ``cands``: two ``(knots, entry)`` pairs, ``entry`` a row of
    :func:`posterior_basis`'s table (its ``order``, ``sigma`` and ``tau``), or
    ``(knots, entry, fine, T)`` with ``knots`` nested in the layout ``fine`` by the
    refinement matrix ``T`` (:func:`refinement_matrices`): the folds' Gram passes
    are then made at ``fine`` (once for candidates with the same ``fine``).  The
    sequences are split into :data:`ORDER_CV_FOLDS` contiguous folds of equal size;
    for each fold the posterior mean of ``c`` given the other folds (at the entry's
    ``sigma, tau``) predicts the fold's responses.

    Returns
    -------
    dict with ``cv_mse`` (per observation, one per candidate), ``mse_diff`` (the
    second's minus the first's, the mean over folds of the per-observation
    difference), ``se`` (its standard error over folds) and ``folds``.
    """
    from bayes_ips.collapsed import difference_penalty

    F = ORDER_CV_FOLDS
    size = cv_fold_size(np.shape(X)[0])
    ridge = null_space_ridge(y_scale)
    sse = np.zeros((len(cands), F))
    n_f = np.zeros(F)
    passes: dict[int, list] = {}  # the folds' statistics per layout passed over
    for j, cand in enumerate(cands):
        kn, ent = cand[0], cand[1]
        fine, T = (cand[2], np.asarray(cand[3])) if len(cand) > 2 else (kn, None)
        if id(fine) not in passes:
            passes[id(fine)] = [
                gram(
                    Un, Vn, X[f * size : (f + 1) * size], Y[f * size : (f + 1) * size], fine, chunk
                )
                for f in range(F)
            ]
        st = passes[id(fine)]
        Gs = [np.asarray(s.FtF) if T is None else T.T @ np.asarray(s.FtF) @ T for s in st]
        bs = [np.asarray(s.FtY) if T is None else T.T @ np.asarray(s.FtY) for s in st]
        D = difference_penalty(kn, scale, ent["order"])
        Q = _prior_precision(D.T @ D, ent["tau"], ridge)
        G, b = sum(Gs), sum(bs)
        for f in range(F):
            sse[j, f] = held_out_sse(G - Gs[f], b - bs[f], Gs[f], bs[f], st[f].YtY, Q, ent["sigma"])
            n_f[f] = float(st[f].n_obs)
    return cv_summary(sse, n_f)


def cv_fold_size(n_sequences: int) -> int:
    """Sequences per fold of :data:`ORDER_CV_FOLDS` contiguous folds (the remainder in none)."""
    size = int(n_sequences) // ORDER_CV_FOLDS
    if size < 1:
        raise ValueError(f"the order's cross-validation needs at least {ORDER_CV_FOLDS} sequences")
    return size


def null_space_ridge(y_scale: float) -> float:
    """The prior precision on the penalty's null space, ``1 / (KAPPA y_scale)^2``."""
    from bayes_ips.models.lowrank_spline import KAPPA

    return 1.0 / (KAPPA * y_scale) ** 2


def held_out_sse(G, b, G_f, b_f, yy_f, Q, sigma: float) -> float:
    """A fold's squared error under the posterior mean of ``c`` from other data.

    ``G, b``: the Gram statistics ``F^T F, F^T Y`` the mean is fitted on (prior
    precision ``Q``, noise ``sigma``); ``G_f, b_f, yy_f`` the fold's, with ``Y^T Y``.
    """
    from scipy.linalg import cho_factor, cho_solve

    c = cho_solve(cho_factor(np.asarray(G) + sigma**2 * Q), np.asarray(b))
    return float(yy_f) - 2.0 * c @ np.asarray(b_f) + c @ np.asarray(G_f) @ c


def cv_summary(sse: np.ndarray, n_f: np.ndarray) -> dict[str, Any]:
    """Two candidates' fold errors ``sse`` (2, F) over the folds' sizes ``n_f``:
    :func:`order_cv`'s ``cv_mse``, ``mse_diff`` (second minus first), ``se`` and ``folds``."""
    F = sse.shape[1]
    diff = (sse[1] - sse[0]) / n_f
    return {
        "cv_mse": [float(v) for v in sse.sum(axis=1) / n_f.sum()],
        "mse_diff": float(diff.mean()),
        "se": float(diff.std(ddof=1) / math.sqrt(F)),
        "folds": F,
    }


def _stack(knots: list[Knots]) -> Knots:
    """Per-head layouts of one K as one :class:`Knots` with (H, K + 1) breaks."""
    import jax.numpy as jnp

    if len({k.n_intervals for k in knots}) != 1:  # ties merged some head's breakpoints
        raise ValueError("the heads' knots must share K")
    k0 = knots[0]
    return Knots(jnp.stack([jnp.asarray(k.breaks) for k in knots]), k0.degree, 1, k0.tail)


def _placements(X, Y, Un, Vn, S, fine_k, grid, degree, chunk) -> list[tuple]:
    """One Gram pass per knot placement of :data:`UNIFORM_WEIGHTS` at the finest K.

    Returns, per placement that nests (ties can merge breakpoints): its weight, the
    pass's statistics, per head the coarse layouts of ``grid`` and their
    refinement matrices, and per head the finest layout.  Multi-head when ``Un`` is
    (H, d, r): ``S`` is then per head, and each head's coarse layouts nest in its own
    finest one.
    """
    heads = np.ndim(Un) == 3
    Ss = S if heads else [S]
    out = []
    for w in UNIFORM_WEIGHTS:
        fines = [make_knots(mixed_breaks(s, fine_k, w), degree, 1) for s in Ss]
        if any(f.n_intervals != fine_k for f in fines):  # ties merged breakpoints: not nested
            continue
        st = gram(Un, Vn, X, Y, _stack(fines) if heads else fines[0], chunk)
        coarse, Ts = [], []  # per head: the coarse layouts and their refinement matrices
        for f in fines:
            breaks = np.asarray(f.breaks)
            coarse.append([make_knots(breaks[:: fine_k // K], degree, 1) for K in grid])
            Ts.append(refinement_matrices(coarse[-1], f))
        out.append((w, st, coarse, Ts, fines))
    return out


def _evidence_tables(
    placements, heads, scale, y_scale, grid, sigma0, table, layouts, order=2
) -> None:
    """Append the evidence of every (placement, K) to ``table`` and its knots to ``layouts``.

    ``placements`` from :func:`_placements`; ``order``: the penalty's difference order.
    Multi-head: ``scale`` per head, and the refinement of the concatenated basis is
    block diagonal.
    """
    from scipy.linalg import block_diag

    from bayes_ips.collapsed import difference_penalty
    from bayes_ips.pairwise import GramStats

    scales = scale if heads else [scale]
    for w, st, coarse, Ts, _ in placements:
        G, b = np.asarray(st.FtF), np.asarray(st.FtY)
        tau = None  # each K's search starts at the previous K's tau
        for i, K in enumerate(grid):
            T = block_diag(*(t[i] for t in Ts)) if heads else Ts[0][i]
            per = [c[i] for c in coarse]
            D = [difference_penalty(kn, sc, order) for kn, sc in zip(per, scales, strict=True)]
            stats = GramStats(T.T @ G @ T, T.T @ b, st.YtY, st.n_obs, st.n_outside)
            ev = log_evidence(stats, np.stack(D) if heads else D[0], y_scale, sigma0, tau)
            table.append({"K": K, "uniform_weight": w, "order": order, **ev})
            layouts.append(_stack(per) if heads else per[0])
            tau = ev["tau"]
