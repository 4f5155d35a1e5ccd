"""Empirical risk minimisation over rank-r A and splines phi: the estimator the theory covers.

The loss

    L(A, c) = (1/(M N)) sum_{m,i} (Y[m,i] - (F(A) c)[m,i])^2

is linear-quadratic in ``c`` for fixed ``A``.  We use *variable projection*: the
ridge-stabilised minimiser ``c*(A) = (F^T F + lam I)^{-1} F^T Y`` is computed in
closed form from the chunked Gram statistics (:func:`bayes_ips.pairwise.gram`),
and BFGS (``optimistix``) minimises the projected loss over the factors ``U, V``.
By the envelope theorem its gradient is the gradient of ``L(A, c)`` at fixed
``c = c*(A)``, so each step costs one Gram pass and one value-and-gradient pass
of the shared kernel.

Gauge.  The fit is parameterised by ``A = U V^T / ||U V^T||_F`` (the scale of A
is fixed; phi absorbs it).  On return, the sign is fixed so that the
largest-magnitude entry of ``A`` is positive (the spline is reflected exactly,
``phi(u) -> phi(-u)``), and ``U, V`` are the balanced SVD factors of ``A``.

Defaults that adapt to the data (see README, "Choosing K"):

* knots at empirical quantiles of the training scores (scores concentrate near
  zero; equal-mass intervals put resolution where rho has mass);
* the number of intervals ``K`` chosen by generalised cross-validation (GCV)
  on a grid, at the fitted ``A`` (or the theory rule ``K ~ (M / log M)^{1/(2 beta + 1)}``
  with ``k_rule="theory"``, or a fixed value);
* deterministic multi-start: a moment (linearised) estimate of ``A`` followed by
  random starts, all derived from the seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.typing import ArrayLike

from bayes_ips.errors import InputError, check_rank, check_xy
from bayes_ips.gauge import gauge_factors
from bayes_ips.pairs import off_diagonal_scores
from bayes_ips.pairwise import DEFAULT_CHUNK, gram, sq_loss
from bayes_ips.simulate import gauge_fix
from bayes_ips.spline import (
    Knots,
    make_knots,
    n_basis,
    quantile_breaks,
    reflect,
    spline_eval,
)

__all__ = [
    "ERMConfig",
    "ERMFit",
    "fit_erm",
    "k_candidates",
    "refinement_matrices",
    "refinement_matrix",
    "solve_coefficients",
    "theory_condition",
    "theory_k",
]

K_RULES = ("gcv", "theory")


@dataclasses.dataclass(frozen=True)
class ERMConfig:
    """Settings of the ERM fit.

    Attributes
    ----------
    rank : int
        Rank r of A.
    degree : int
        Spline degree s (default 3: cubic; raised to ``ceil(beta) - 1`` for beta > 4).
    n_intervals : int or None
        Number of knot intervals K; None chooses it by ``k_rule``.
    k_rule : {"gcv", "theory"}
        ``gcv``: minimise generalised cross-validation over a grid of K.
        ``theory``: ``K = ceil(2 (M / log M)^{1/(2 beta + 1)})`` (needs beta).
    multiplicity : int
        Interior knot multiplicity (1: C^{s-1} splines; s + 1: all piecewise
        polynomials, the class of the theory).
    beta : float or None
        Smoothness of phi*, if known: used by ``k_rule="theory"`` and to report
        the theory's condition ``r d <= (M / log M)^{1/(2 beta + 1)}``.
    restarts : int
        Number of starts (the first is the moment estimate).
    ridge : float
        Relative ridge: ``lam = ridge * trace(F^T F) / n_basis``.
    max_steps : int
        BFGS steps per start.
    tol : float
        BFGS relative and absolute tolerance.
    """

    rank: int = 1
    degree: int | None = None
    n_intervals: int | None = None
    k_rule: str = "gcv"
    multiplicity: int = 1
    beta: float | None = None
    restarts: int = 4
    ridge: float = 1e-8
    max_steps: int = 300
    tol: float = 1e-8

    def validate(self, d: int) -> ERMConfig:
        check_rank(self.rank, d)
        if self.k_rule not in K_RULES:
            raise InputError(f"unknown K rule {self.k_rule!r}; choose from {', '.join(K_RULES)}")
        if self.beta is not None and not (self.beta > 0):
            raise InputError(f"beta must be > 0, got {self.beta}")
        if self.k_rule == "theory" and self.n_intervals is None and self.beta is None:
            raise InputError("k_rule='theory' needs beta")
        if self.n_intervals is not None and (
            int(self.n_intervals) != self.n_intervals or self.n_intervals < 1
        ):
            raise InputError(
                f"number of intervals must be a positive integer, got {self.n_intervals}"
            )
        deg = self.resolved_degree()
        if deg < 0 or deg > 7:
            raise InputError(f"spline degree must be in 0..7, got {deg}")
        if not 1 <= self.multiplicity <= deg + 1:
            raise InputError(
                f"knot multiplicity must be in 1..degree+1 = 1..{deg + 1}, got {self.multiplicity}"
            )
        if int(self.restarts) != self.restarts or self.restarts < 1:
            raise InputError(f"restarts must be a positive integer, got {self.restarts}")
        if not (self.ridge >= 0) or not (self.tol > 0) or self.max_steps < 1:
            raise InputError("ridge must be >= 0, tol > 0 and max_steps >= 1")
        return self

    def resolved_degree(self) -> int:
        if self.degree is not None:
            return int(self.degree)
        if self.beta is not None and math.isfinite(self.beta) and self.beta > 4:
            return int(math.ceil(self.beta)) - 1
        return 3


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


@dataclasses.dataclass(frozen=True)
class ERMFit:
    """A fitted ``g(x, y) = phi_c(x^T A y)`` in the documented gauge.

    Attributes
    ----------
    A : (d, d) array, unit Frobenius norm, largest-magnitude entry positive.
    U, V : (d, r) arrays, balanced factors, ``A = U V^T``.
    coef : (n_basis,) array
    knots : Knots
    config : ERMConfig
    seed : int
    info : dict
        Diagnostics: training loss, noise estimate, K selection table, start
        losses, BFGS steps, scores outside the knots, theory condition.
    """

    A: np.ndarray
    U: np.ndarray
    V: np.ndarray
    coef: np.ndarray
    knots: Knots
    config: ERMConfig
    seed: int
    info: dict

    def phi(self, u: ArrayLike) -> jax.Array:
        """``phi_c(u)``, (...,) -> (...,)."""
        return spline_eval(jnp.asarray(u), jnp.asarray(self.coef), self.knots)

    def predict(self, x: ArrayLike, y: ArrayLike) -> jax.Array:
        """``g(x_p, y_p)`` for pairs ``x, y`` of shape (P, d); returns (P,)."""
        u = jnp.einsum("pi,ij,pj->p", jnp.asarray(x), jnp.asarray(self.A), jnp.asarray(y))
        return self.phi(u)


# --------------------------------------------------------------------------- math


def solve_coefficients(FtF: ArrayLike, FtY: ArrayLike, ridge: float) -> tuple[jax.Array, jax.Array]:
    """Ridge solution ``c = (F^T F + lam I)^{-1} F^T Y`` and its ``lam``."""
    FtF = jnp.asarray(FtF)
    nb = FtF.shape[0]
    lam = ridge * jnp.trace(FtF) / nb + 1e-300
    L = jnp.linalg.cholesky(FtF + lam * jnp.eye(nb))
    c = jax.scipy.linalg.cho_solve((L, True), jnp.asarray(FtY))
    return c, lam


def _projected_loss(theta, args):
    X, Y, knots, ridge, d, r, chunk = args
    U = theta[: d * r].reshape(d, r)
    V = theta[d * r :].reshape(d, r)
    Un, _ = gauge_factors(U, V)
    st = gram(jax.lax.stop_gradient(Un), jax.lax.stop_gradient(V), X, Y, knots, chunk)
    c, lam = solve_coefficients(st.FtF, st.FtY, ridge)
    c = jax.lax.stop_gradient(c)
    return (sq_loss(Un, V, c, X, Y, knots, chunk) + lam * jnp.sum(c**2)) / st.n_obs


def _optimise(theta0, X, Y, knots, ridge, d, r, chunk, max_steps, tol):
    solver = optx.BFGS(rtol=tol, atol=tol)
    sol = optx.minimise(
        _projected_loss,
        solver,
        theta0,
        args=(X, Y, knots, ridge, d, r, chunk),
        max_steps=max_steps,
        throw=False,
    )
    loss = _projected_loss(sol.value, (X, Y, knots, ridge, d, r, chunk))
    return sol.value, loss, sol.stats["num_steps"]


_optimise_jit = jax.jit(_optimise, static_argnames=("d", "r", "chunk", "max_steps"))


KNOT_SAMPLES = 4000  # samples whose scores place the knots


def _knots_for(X, U, V, K: int, degree: int, multiplicity: int) -> Knots:
    breaks = quantile_breaks(off_diagonal_scores(X, U, V, KNOT_SAMPLES), K)
    return make_knots(breaks, degree, multiplicity)


def _moment_start(X: np.ndarray, Y: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Linearised moment estimate: regress Y_i on vec(x_i xbar_{-i}^T), truncate to rank r.

    If phi is roughly linear near 0, ``Y_i ~ a + phi'(0) x_i^T A xbar_{-i}``; the
    ridge regression estimates ``phi'(0) A`` up to noise, and its rank-r SVD is
    a start for A (good when phi'(0) != 0, harmless otherwise).
    """
    M, N, d = X.shape
    rows = min(M * N, max(4000, 20 * d * d))
    Xs = X.reshape(M * N, d)[:rows]
    xbar = ((X.sum(axis=1, keepdims=True) - X) / (N - 1)).reshape(M * N, d)[:rows]
    Z = (Xs[:, :, None] * xbar[:, None, :]).reshape(rows, d * d)
    y = Y.reshape(-1)[:rows]
    Z = Z - Z.mean(0)
    y = y - y.mean()
    G = Z.T @ Z
    w = np.linalg.solve(
        G + 1e-6 * np.trace(G) / (d * d) * np.eye(d * d) + 1e-12 * np.eye(d * d), Z.T @ y
    )
    P, s, Qt = np.linalg.svd(w.reshape(d, d))
    root = np.sqrt(s[:rank] + 1e-12)
    return P[:, :rank] * root, Qt[:rank].T * root


def _starts(
    key: jax.Array, X: np.ndarray, Y: np.ndarray, rank: int, restarts: int
) -> list[np.ndarray]:
    d = X.shape[2]
    U0, V0 = _moment_start(X, Y, rank)
    starts = [np.concatenate([U0.ravel(), V0.ravel()])]
    for k in jax.random.split(key, restarts - 1) if restarts > 1 else []:
        starts.append(np.asarray(jax.random.normal(k, (2 * d * rank,))))
    return starts


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


def fit_erm(
    key: jax.Array,
    X: ArrayLike,
    Y: ArrayLike,
    config: ERMConfig = ERMConfig(),
    *,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = False,
) -> ERMFit:
    """Fit ``g(x, y) = phi(x^T A y)`` by variable-projection ERM.

    Parameters
    ----------
    key : PRNG key
        Drives the random starts (the fit is deterministic given the key).
    X : (M, N, d) array
    Y : (M, N) array
    config : ERMConfig
    seed : int, optional
        Recorded in the fit (the integer the key was made from).
    progress : bool
        Show a progress bar over the starts.

    Returns
    -------
    ERMFit
    """
    X, Y = check_xy(X, Y)
    M, N, d = X.shape
    config.validate(d)
    r = config.rank
    s = config.resolved_degree()
    m = config.multiplicity
    n_obs = M * N
    n_a = r * (2 * d - r) - 1  # dimension of {rank-r A, ||A||_F = 1}

    if config.n_intervals is not None:
        grid = [int(config.n_intervals)]
    elif config.k_rule == "theory":
        grid = [theory_k(M, config.beta)]
    else:
        grid = k_candidates(n_obs)
    n_params_min = s + 1 + (min(grid) - 1) * m + n_a
    if n_obs < 2 * n_params_min:
        raise InputError(
            f"M = {M} samples of N = {N} tokens give {n_obs} observations, too few for "
            f"{n_params_min} parameters (rank {r}, d = {d}, degree {s}); need at least "
            f"{2 * n_params_min}"
        )
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    k_pilot = min(8, max(grid))

    # 1. multi-start with a pilot basis
    starts = _starts(key, X, Y, r, config.restarts)
    iterator = starts
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(starts, desc="ERM starts", unit="start", leave=False)
    results = []
    for theta0 in iterator:
        U0 = jnp.asarray(theta0[: d * r].reshape(d, r))
        V0 = jnp.asarray(theta0[d * r :].reshape(d, r))
        knots = _knots_for(Xj, gauge_factors(U0, V0)[0], V0, k_pilot, s, m)
        theta, loss, steps = _optimise_jit(
            jnp.asarray(theta0),
            Xj,
            Yj,
            knots,
            config.ridge,
            d,
            r,
            chunk_size,
            config.max_steps,
            config.tol,
        )
        results.append((float(loss), np.asarray(theta), int(steps)))
    start_losses = [res[0] for res in results]
    best = int(np.nanargmin(start_losses))
    theta = jnp.asarray(results[best][1])

    def factors(th):
        U = th[: d * r].reshape(d, r)
        V = th[d * r :].reshape(d, r)
        return gauge_factors(U, V)

    # 2. choose K at the pilot A, refit A with it, re-place the knots
    U, V = factors(theta)
    table = _gcv_table(Xj, Yj, U, V, grid, s, m, config.ridge, n_a, chunk_size)
    K = table[int(np.argmin([t["gcv"] for t in table]))]["K"]
    knots = _knots_for(Xj, U, V, K, s, m)
    theta, _, steps2 = _optimise_jit(
        theta, Xj, Yj, knots, config.ridge, d, r, chunk_size, config.max_steps, config.tol
    )
    U, V = factors(theta)
    knots = _knots_for(Xj, U, V, K, s, m)
    st = gram(U, V, Xj, Yj, knots, chunk_size)
    c, _ = solve_coefficients(st.FtF, st.FtY, config.ridge)
    loss = float(sq_loss(U, V, c, Xj, Yj, knots, chunk_size)) / n_obs

    # 3. gauge: unit Frobenius norm (already), sign rule, balanced factors
    A = np.asarray(U @ V.T)
    A, factor = gauge_fix(A)
    coef = np.asarray(c)
    if factor < 0:
        knots, c_ref = reflect(knots, coef)
        coef = np.asarray(c_ref)
    P, sv, Qt = np.linalg.svd(A)
    Uf = P[:, :r] * np.sqrt(sv[:r])
    Vf = Qt[:r].T * np.sqrt(sv[:r])

    info = {
        "train_mse": loss,
        "sigma_hat": math.sqrt(max(loss, 0.0) * n_obs / max(n_obs - n_a - n_basis(knots), 1)),
        "K": int(knots.n_intervals),
        "n_basis": int(n_basis(knots)),
        "degree": s,
        "multiplicity": m,
        "k_rule": "fixed" if config.n_intervals is not None else config.k_rule,
        "k_table": table,
        "start_losses": start_losses,
        "best_start": best,
        "bfgs_steps": [res[2] for res in results] + [int(steps2)],
        "n_outside": int(st.n_outside),
        "theory_condition": theory_condition(M, d, r, config.beta),
        "M": M,
        "N": N,
        "d": d,
    }
    return ERMFit(A, Uf, Vf, coef, knots, config, -1 if seed is None else int(seed), info)
