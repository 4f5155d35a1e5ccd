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
  with ``k_rule="theory"``, or a fixed value): :mod:`bayes_ips.kselect`;
* deterministic multi-start: a moment (linearised) estimate of ``A`` followed by
  random starts, all derived from the seed.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.typing import ArrayLike

from bayes_ips.coercivity import coercivity_constant, pair_gram
from bayes_ips.errors import InputError, check_rank, check_xy
from bayes_ips.gauge import gauge_factors
from bayes_ips.kselect import (
    K_RULES,
    KNOT_PLACEMENTS,
    _knots_for,
    k_candidates,
    k_extension_for,
    k_grid,
    placement_weights,
    refinement_matrices,
    refinement_matrix,
    select_basis,
    theory_condition,
    theory_k,
)
from bayes_ips.pairwise import DEFAULT_CHUNK, gram, sq_loss
from bayes_ips.simulate import gauge_fix
from bayes_ips.spline import Knots, n_basis, reflect, spline_eval

__all__ = [
    "ERMConfig",
    "ERMFit",
    "fit_erm",
    "solve_coefficients",
    # re-exported from bayes_ips.kselect, their home
    "k_candidates",
    "refinement_matrices",
    "refinement_matrix",
    "theory_condition",
    "theory_k",
]


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
        Number of starts: the linearised moment estimate, the second-moment
        estimate (from 2 on), the screened start (from 3 on: the best, by its
        training loss with the pilot basis, of the second-moment estimate with a
        factor's column on a coordinate axis, and of the two estimates crossed;
        candidates tied with it run too, up to 3 more starts than ``restarts``),
        then random starts.
    knot_placement : {"quantile", "auto"}
        ``auto`` (default): GCV chooses among the quantile layout and its mixtures
        with the uniform law (:data:`bayes_ips.kselect.ERM_UNIFORM_WEIGHTS`), which
        put narrower intervals where the scores thin out at the ends of their range.
        ``quantile``:
        knots at empirical quantiles of the scores (the package's layout before
        2026-12-04, and that of the committed paper studies; analyses/RESULTS.md,
        "Knots where the scores thin out").  Single-head ERM only: multi-head ERM
        places quantile knots.
    ridge : float
        Relative ridge: ``lam = ridge * trace(F^T F) / n_basis``.
    max_steps : int
        BFGS steps per start.
    tol : float
        BFGS relative and absolute tolerance.
    known_a : bool
        Fit ``phi`` only, at the ``A`` passed to :func:`fit_erm` (an oracle for
        studies: the error without ``A``'s estimation error, so that what learning
        ``A`` adds, of order ``d / M``, can be told from the nonparametric rate).
        The K rule and the knots' placement are as without it; GCV counts no
        degrees of freedom for ``A``.
    """

    rank: int = 1
    degree: int | None = None
    n_intervals: int | None = None
    k_rule: str = "gcv"
    multiplicity: int = 1
    beta: float | None = None
    restarts: int = 5
    knot_placement: str = "auto"
    ridge: float = 1e-8
    max_steps: int = 300
    tol: float = 1e-8
    known_a: bool = False

    def validate(self, d: int) -> ERMConfig:
        check_rank(self.rank, d)
        if self.k_rule not in K_RULES:
            raise InputError(f"unknown K rule {self.k_rule!r}; choose from {', '.join(K_RULES)}")
        if self.knot_placement not in KNOT_PLACEMENTS:
            raise InputError(
                f"unknown knot placement {self.knot_placement!r}; "
                f"choose from {', '.join(KNOT_PLACEMENTS)}"
            )
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
        losses, BFGS steps, scores outside the knots, theory condition, and the
        coercivity constant ``c_H`` of the fitted space on the training data with
        the dimension ``c_H_dim`` it was taken over (:mod:`bayes_ips.coercivity`).
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
    return _solve_coefficients(FtF, FtY, ridge)


@jax.jit  # one program, not ~13 eager ones per new process
def _solve_coefficients(FtF, FtY, ridge):
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


@partial(jax.jit, static_argnames=("d", "r", "chunk"))
def _loss_at(theta, X, Y, knots, ridge, d, r, chunk):
    return _projected_loss(theta, (X, Y, knots, ridge, d, r, chunk))


SCREEN_SAMPLES = 2000
"""Samples on which :func:`_screened_start` ranks its candidates (M N = 12000 scores at
N = 6, plenty to rank profiled losses, and a screen of 62 candidates at d = 30 costs
~0.5 s instead of ~1.4 s at M = 8000)."""

SCREEN_TIE = 0.005
"""Relative margin within which a candidate's pilot loss ties the best's, so that BFGS
runs from it too: on Rademacher tokens with phi* = |.| the axes tied within 0.1%, and
BFGS told the right one apart (analyses/RESULTS.md, "Starts on the axes")."""

SCREEN_MAX_TIED = 4
"""At most this many screened starts (the best and those tied with it)."""


@partial(jax.jit, static_argnames=("d", "r", "chunk"))
def _loss_from_gram(theta, X, Y, knots, ridge, d, r, chunk):
    """:func:`_loss_at` from the Gram statistics alone (one pass over the data, not two):
    ``||Y - F c||^2 = Y^T Y - 2 c^T F^T Y + c^T F^T F c`` at the ridge solution ``c``.
    For values only (the screen of :func:`_screened_start`); BFGS needs the other."""
    st = gram(*_factors(theta, d, r), X, Y, knots, chunk)
    c, lam = solve_coefficients(st.FtF, st.FtY, ridge)
    sq = st.YtY - 2.0 * c @ st.FtY + c @ (st.FtF @ c)
    return (sq + lam * jnp.sum(c**2)) / st.n_obs


def _fit_direction(theta0, X, Y, knots, ridge, d, r, chunk, max_steps, tol):
    """BFGS over the factors, or nothing where ``A`` has no free direction.

    At ``d = r = 1`` the normalised ``A`` is +-1 and the sign is the reflection
    ``phi(-s)`` of the spline (a gauge), so the profiled loss is constant in the
    factors: BFGS would only wander along the flat scale (up to ``max_steps``
    Gram passes, minutes at large K and M, for nothing).

    Returns
    -------
    theta, loss, steps
    """
    if r * (2 * d - r) - 1 == 0:
        return theta0, _loss_at(theta0, X, Y, knots, ridge, d, r, chunk), 0
    return _optimise_jit(theta0, X, Y, knots, ridge, d, r, chunk, max_steps, tol)


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


def _second_moment_start(X: np.ndarray, Y: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Second-moment estimate of A's column and row spaces (for phi with phi'(0) ~ 0).

    The quadratic part of ``phi`` gives ``E[Y_i | x_i] ~ x_i^T A Sigma A^T x_i`` and
    ``E[Y_i | x_j] ~ x_j^T A^T Sigma A x_j / (N - 1)`` (``Sigma`` the tokens'
    covariance), so the ``Y``-weighted second moments of ``x_i`` and of its partners,

        B_U = mean_i (Y_i - Ybar) x_i x_i^T,
        B_V = mean_i (Y_i - Ybar) mean_{j != i} x_j x_j^T,

    have ``U``'s and ``V``'s spans as their leading eigenvectors (by |eigenvalue|;
    exactly for Gaussian tokens by Stein's identity, up to a kurtosis term on the
    diagonal otherwise).  The linearised :func:`_moment_start` sees ``phi'(0) A``
    and fails where ``phi`` is near-even at 0: at d = 30 on the minimax study's
    beta = 0.5 Weierstrass cells its directions had |cos| 0.02-0.69 with the truth,
    these 0.98-1.00 (u) and 0.79-1.00 (v) from M = 250 on (analyses/RESULTS.md).
    With rank > 1 the pairing of the columns of U and V is arbitrary (BFGS sets it).
    O(M N d^2).
    """
    M, N, d = X.shape
    y = Y - Y.mean()
    Xc = X - X.reshape(-1, d).mean(axis=0)
    B_u = np.einsum("mn,mni,mnj->ij", y, Xc, Xc) / y.size
    partners = (y.sum(axis=1, keepdims=True) - y) / (N - 1)  # mean of the partners' Y, per j
    B_v = np.einsum("mn,mni,mnj->ij", partners, Xc, Xc) / y.size
    out = []
    for B in (B_u, B_v):
        lam, E = np.linalg.eigh(0.5 * (B + B.T))
        out.append(E[:, np.argsort(-np.abs(lam))[:rank]])
    return out[0], out[1]


def _axis_candidates(X: np.ndarray, Y: np.ndarray, rank: int, moments=None) -> list[np.ndarray]:
    """Starts near the moment estimates, for :func:`_screened_start` to choose from.

    The crossed estimates (the second-moment ``U`` with the linearised ``V`` and back),
    and the second-moment ``(U, V)`` with one column of ``U`` or of ``V`` replaced by a
    coordinate axis (``2 d r`` of them).  The second moments see a direction only
    through the tokens' fourth moments; where those are degenerate, as for tokens with
    a discrete coordinate law (Rademacher: ``x_k^2 = 1``, so ``B_V``'s diagonal is
    blind), a factor near a coordinate axis is invisible to them, and the axes are the
    natural guesses of a product law (analyses/RESULTS.md, "Starts on the axes").
    ``moments`` holds the two estimates if already computed (the linearised one costs
    ``O(d^4)`` flops at large d).
    """
    d = X.shape[2]
    if moments is None:
        moments = (_moment_start(X, Y, rank), _second_moment_start(X, Y, rank))
    (U1, V1), (U2, V2) = moments

    def flat(U, V):
        return np.concatenate([U.ravel(), V.ravel()])

    out = [flat(U2, V1 / max(np.linalg.norm(V1), 1e-300)), flat(U1, V2)]
    for k in range(d):
        for j in range(rank):
            for side in (1, 0):  # V's column, then U's
                F = [U2.copy(), V2.copy()]
                F[side][:, j] = np.eye(d)[k]
                out.append(flat(*F))
    return out


def _screened_start(X: np.ndarray, Y: np.ndarray, rank: int, loss, moments=None) -> list:
    """The candidates of :func:`_axis_candidates` with the least ``loss`` (a start's
    profiled training loss with the pilot basis: one Gram pass each, no BFGS): the best,
    and those tied with it within ``SCREEN_TIE`` (at most ``SCREEN_MAX_TIED`` in all,
    best first).  Ties happen where the candidates fit alike on the pilot basis, e.g.
    phi* = |.| with Rademacher tokens, whose every axis gives |v . x| = 1."""
    cands = _axis_candidates(X, Y, rank, moments)
    values = np.array([loss(t) for t in cands])
    finite = np.isfinite(values)
    if not finite.any():  # nothing to rank (degenerate data): the first candidate
        return [cands[0]]
    values = np.where(finite, values, np.inf)
    order = np.argsort(values, kind="stable")
    tied = [i for i in order if values[i] <= values[order[0]] * (1.0 + SCREEN_TIE)]
    return [cands[i] for i in tied[:SCREEN_MAX_TIED]]


def _starts(
    key: jax.Array, X: np.ndarray, Y: np.ndarray, rank: int, restarts: int, loss=None
) -> list[np.ndarray]:
    """``restarts`` starts (more where screened candidates tie): the linearised moment
    estimate, the second-moment estimate (from 2 starts on), the screened start or
    starts (from 3 on; :func:`_screened_start`, which needs ``loss``), then random ones
    (restarts = 5 draws the two random starts that restarts = 4 drew before the
    screened start existed, which are those that 3 drew before the second-moment
    start existed)."""
    d = X.shape[2]
    first = _moment_start(X, Y, rank)
    starts = [np.concatenate([a.ravel() for a in first])]
    if restarts > 1:
        second = _second_moment_start(X, Y, rank)
        starts.append(np.concatenate([a.ravel() for a in second]))
    if restarts > 2 and rank * (2 * d - rank) - 1 == 0:
        starts.append(starts[1])  # A = +-1 (d = 1): every start is the same fit
    elif restarts > 2:
        if loss is None:
            raise ValueError("the screened start (restarts >= 3) needs the pilot loss")
        starts.extend(_screened_start(X, Y, rank, loss, (first, second)))
    for k in jax.random.split(key, restarts - 2)[: restarts - 3] if restarts > 3 else []:
        starts.append(np.asarray(jax.random.normal(k, (2 * d * rank,))))
    return starts


def fit_erm(
    key: jax.Array,
    X: ArrayLike,
    Y: ArrayLike,
    config: ERMConfig = ERMConfig(),
    *,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = False,
    A: ArrayLike | None = None,
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
    A : (d, d) array, optional
        The interaction matrix to fit ``phi`` at, with ``config.known_a`` (needed
        then, refused otherwise); rank at most ``config.rank``, any scale.

    Returns
    -------
    ERMFit
    """
    X, Y = check_xy(X, Y)
    M, N, d = X.shape
    config.validate(d)
    if config.known_a or A is not None:
        return _fit_known_a(X, Y, config, A, seed, chunk_size)
    r = config.rank
    s = config.resolved_degree()
    m = config.multiplicity
    n_obs = M * N
    n_a = r * (2 * d - r) - 1  # dimension of {rank-r A, ||A||_F = 1}
    grid = k_grid(n_obs, M, config.n_intervals, config.k_rule, config.beta)
    _check_enough_data(X.shape, r, s, m, n_a, min(grid))
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)

    # 1. multi-start with a pilot basis
    results = _multi_start(key, X, Y, config, min(8, max(grid)), chunk_size, progress)
    best = int(np.nanargmin([res[0] for res in results]))
    theta = jnp.asarray(results[best][1])

    # 2. choose K (and the knots' placement) at the pilot A, refit A with it, re-place the knots
    U, V = _factors(theta, d, r)
    extend_to = k_extension_for(n_obs, config.n_intervals, config.k_rule)
    weights = placement_weights(config.knot_placement)
    K, w, table = select_basis(
        Xj, Yj, U, V, grid, s, m, config.ridge, n_a, chunk_size, extend_to, weights
    )
    U, V, knots, c, st, steps2 = _refit(theta, Xj, Yj, K, config, chunk_size, w)

    # 3. the loss, the coercivity constant, then the gauge (see _finish)
    return _finish(
        X, Y, config, U, V, knots, c, st, w, seed, chunk_size,
        n_a=n_a, table=table, results=results, best=best, steps2=steps2,
    )  # fmt: skip


def _finish(
    X, Y, config: ERMConfig, U, V, knots, c, st, w, seed, chunk_size, *,
    n_a: int, table, results, best: int, steps2: int, **extra,
) -> ERMFit:  # fmt: skip
    """The fit at ``(U, V, knots, c)`` (``st`` its Gram statistics) as an :class:`ERMFit`.

    The training loss and the coercivity constant of the fitted space (gauge-invariant:
    computed before the gauge), then the documented gauge: unit Frobenius norm
    (already), sign rule, balanced factors (:func:`_gauged`).  The search's record
    (``n_a`` to ``steps2``) goes to :func:`_fit_info`; ``extra`` holds further
    ``info`` entries (``known_a``).
    """
    n_obs = int(np.size(Y))
    loss = float(sq_loss(U, V, c, jnp.asarray(X), jnp.asarray(Y), knots, chunk_size)) / n_obs
    coerc = coercivity_constant(st.FtF, n_obs, pair_gram(X, U, V, knots))
    A, Uf, Vf, knots, coef = _gauged(U, V, knots, c, config.rank)
    info = _fit_info(config, np.shape(X), n_a, knots, st, loss, table, results, best, steps2)
    info.update(uniform_weight=w, **extra, **coerc.as_dict())
    return ERMFit(A, Uf, Vf, coef, knots, config, -1 if seed is None else int(seed), info)


def _fit_known_a(X, Y, config: ERMConfig, A, seed, chunk_size: int) -> ERMFit:
    """:func:`fit_erm` with ``A`` given (``config.known_a``): K, knots and ``c`` only."""
    M, N, d = X.shape
    r = config.rank
    if not config.known_a:
        raise InputError("an A was given but the config does not set known_a = true")
    if A is None:
        raise InputError("known_a = true needs the A to fit phi at")
    A = np.asarray(A, dtype=np.float64)
    if A.shape != (d, d) or not np.all(np.isfinite(A)):
        raise InputError(f"the known A must be a finite ({d}, {d}) matrix, got shape {A.shape}")
    P, sv, Qt = np.linalg.svd(A)
    if not sv[0] > 0 or (r < d and sv[r] > 1e-8 * sv[0]):
        raise InputError(f"the known A must be non-zero and of rank at most {r}")
    U, V = gauge_factors(jnp.asarray(P[:, :r] * sv[:r]), jnp.asarray(Qt[:r].T))
    s, m = config.resolved_degree(), config.multiplicity
    n_obs = M * N
    grid = k_grid(n_obs, M, config.n_intervals, config.k_rule, config.beta)
    _check_enough_data(X.shape, r, s, m, 0, min(grid))
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    extend_to = k_extension_for(n_obs, config.n_intervals, config.k_rule)
    weights = placement_weights(config.knot_placement)
    K, w, table = select_basis(
        Xj, Yj, U, V, grid, s, m, config.ridge, 0, chunk_size, extend_to, weights
    )
    knots = _knots_for(Xj, U, V, K, s, m, w)
    st = gram(U, V, Xj, Yj, knots, chunk_size)
    c, _ = solve_coefficients(st.FtF, st.FtY, config.ridge)
    return _finish(
        X, Y, config, U, V, knots, c, st, w, seed, chunk_size,
        n_a=0, table=table, results=[], best=-1, steps2=0, known_a=True,
    )  # fmt: skip


def _factors(theta, d: int, r: int):
    """Gauge-fixed ``(U / ||U V^T||_F, V)`` from the flat parameter vector."""
    U = theta[: d * r].reshape(d, r)
    V = theta[d * r :].reshape(d, r)
    return gauge_factors(U, V)


def _multi_start(key, X, Y, config: ERMConfig, k_pilot: int, chunk_size: int, progress: bool):
    """BFGS from every start (:func:`_starts`), with knots for ``k_pilot`` intervals at each start.

    Returns
    -------
    list of ``(loss, theta, steps)``, one per start
    """
    d, r = X.shape[2], config.rank
    s, m = config.resolved_degree(), config.multiplicity
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)

    def pilot_knots(theta0, X_at=Xj):
        return _knots_for(X_at, *_factors(jnp.asarray(theta0), d, r), k_pilot, s, m)

    # the screen ranks 2 d r + 2 candidates: on at most SCREEN_SAMPLES samples, evenly
    # spaced (a file sorted by some covariate is still sampled across its range)
    rows = np.unique(np.linspace(0, len(X) - 1, min(len(X), SCREEN_SAMPLES)).astype(int))
    Xs, Ys = jnp.asarray(X[rows]), jnp.asarray(Y[rows])

    def pilot_loss(theta0):
        knots = pilot_knots(theta0, Xs)
        loss = _loss_from_gram(jnp.asarray(theta0), Xs, Ys, knots, config.ridge, d, r, chunk_size)
        return float(loss)

    starts = _starts(key, X, Y, r, config.restarts, pilot_loss)
    iterator = starts
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(starts, desc="ERM starts", unit="start", leave=False)
    results = []
    for theta0 in iterator:
        theta, loss, steps = _fit_direction(
            jnp.asarray(theta0),
            Xj,
            Yj,
            pilot_knots(theta0),
            config.ridge,
            d,
            r,
            chunk_size,
            config.max_steps,
            config.tol,
        )
        results.append((float(loss), np.asarray(theta), int(steps)))
    return results


def _refit(theta, Xj, Yj, K: int, config: ERMConfig, chunk_size: int, w: float = 0.0):
    """Refit A with ``K`` intervals, re-place the knots at it and solve for the coefficients.

    ``w`` is the knots' uniform weight (:func:`bayes_ips.kselect._knots_for`).

    Returns
    -------
    U, V, knots, c, st (the Gram statistics at the final knots), steps (BFGS)
    """
    d, r = Xj.shape[2], config.rank
    s, m = config.resolved_degree(), config.multiplicity
    U, V = _factors(theta, d, r)
    knots = _knots_for(Xj, U, V, K, s, m, w)
    theta, _, steps = _fit_direction(
        theta, Xj, Yj, knots, config.ridge, d, r, chunk_size, config.max_steps, config.tol
    )
    U, V = _factors(theta, d, r)
    knots = _knots_for(Xj, U, V, K, s, m, w)
    st = gram(U, V, Xj, Yj, knots, chunk_size)
    c, _ = solve_coefficients(st.FtF, st.FtY, config.ridge)
    return U, V, knots, c, st, steps


def _gauged(U, V, knots: Knots, c, r: int):
    """The documented gauge: ``A``'s sign rule (the spline reflected to match), balanced factors.

    Returns
    -------
    A, Uf, Vf, knots, coef
    """
    A = np.asarray(U @ V.T)
    A, factor = gauge_fix(A)
    coef = np.asarray(c)
    if factor < 0:
        knots, c_ref = reflect(knots, coef)
        coef = np.asarray(c_ref)
    P, sv, Qt = np.linalg.svd(A)
    Uf = P[:, :r] * np.sqrt(sv[:r])
    Vf = Qt[:r].T * np.sqrt(sv[:r])
    return A, Uf, Vf, knots, coef


def _check_enough_data(shape, r: int, s: int, m: int, n_a: int, k_min: int) -> None:
    """``InputError`` unless the observations are twice the parameters at the smallest K."""
    M, N, d = shape
    n_obs = M * N
    n_params_min = s + 1 + (k_min - 1) * m + n_a
    if n_obs < 2 * n_params_min:
        raise InputError(
            f"M = {M} samples of N = {N} tokens give {n_obs} observations, too few for "
            f"{n_params_min} parameters (rank {r}, d = {d}, degree {s}); need at least "
            f"{2 * n_params_min}"
        )


def _fit_info(config: ERMConfig, shape, n_a, knots, st, loss, table, results, best, steps2) -> dict:
    """The fit's ``info``: fit statistics, the K table, the starts and the theory's condition."""
    M, N, d = shape
    n_obs = M * N
    return {
        "train_mse": loss,
        "sigma_hat": math.sqrt(max(loss, 0.0) * n_obs / max(n_obs - n_a - n_basis(knots), 1)),
        "K": int(knots.n_intervals),
        "n_basis": int(n_basis(knots)),
        "degree": config.resolved_degree(),
        "multiplicity": config.multiplicity,
        "tail": knots.tail,
        "k_rule": "fixed" if config.n_intervals is not None else config.k_rule,
        "k_table": table,
        "start_losses": [res[0] for res in results],
        "best_start": best,
        "bfgs_steps": [res[2] for res in results] + [int(steps2)],
        "n_outside": int(st.n_outside),
        "theory_condition": theory_condition(M, d, config.rank, config.beta),
        "M": M,
        "N": N,
        "d": d,
    }
