"""Multi-head ERM: ``G(x, y) = sum_h phi_h(x^T A_h y)`` by variable projection.

The model is

    Y_i = 1/(N-1) sum_{j != i} sum_{h=1..H} phi_h(X_i^T A_h X_j) + noise,   A_h = U_h V_h^T.

Identifiability.  The total interaction ``G`` is identifiable.  Single heads are
identifiable only up to (i) each head's own gauge (scale, sign and rotation of its
factors, fixed as for one head: unit Frobenius norm, largest-magnitude entry
positive, balanced factors), (ii) a permutation of the heads and (iii) constants
moved between heads (``phi_1 + a, phi_2 - a``), and only when the ``A_h`` differ.
So the fit pins the constants (heads ``2..H`` are centred: their mean over the
training pairs is zero, head 1 carries the constant), orders the heads by the
variance of their contribution, and every comparison uses ``G`` or heads aligned
to a reference by permutation (:func:`align_heads`), never raw factors.

The fit is the single-head one (:mod:`bayes_ips.erm`) with every head's factors in
one BFGS vector: each step solves for all heads' coefficients together from the
Gram statistics of the concatenated basis ``[F_1 ... F_H]`` (one pass of the
shared kernel, :func:`bayes_ips.pairwise.gram`).  The constant that moves between
heads is an exact null direction of ``F`` (B-splines sum to one); the ridge picks
one point of it, and the centring afterwards moves it without changing ``G``.
Knots sit at each head's own score quantiles, with one ``K`` for all heads,
chosen by GCV.  Starts: the moment estimate of ``sum_h phi_h'(0) A_h`` split into
heads by its singular vectors, then random starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.typing import ArrayLike

from bayes_ips.erm import ERMConfig, _gauged, _moment_start, solve_coefficients
from bayes_ips.errors import InputError, check_xy
from bayes_ips.gauge import gauge_factors
from bayes_ips.kselect import (
    _gcv_score,
    _knots_for,
    extend_while_top,
    k_extension_for,
    k_grid,
    refinement_matrices,
)
from bayes_ips.pairwise import DEFAULT_CHUNK, gram, sq_loss
from bayes_ips.spline import Knots, make_knots, n_basis, spline_eval

__all__ = [
    "HeadsFit",
    "align_heads",
    "best_permutation",
    "check_heads",
    "fit_erm_heads",
    "fit_oracle_heads",
    "head_cosines",
    "heads_report",
    "stack_knots",
]


def check_heads(heads, d: int | None = None) -> int:
    """``heads`` as an int >= 1 (``InputError`` otherwise; at ``d = 1`` only one head)."""
    if isinstance(heads, bool) or int(heads) != heads or heads < 1:
        raise InputError(f"the number of heads must be a positive integer, got {heads}")
    heads = int(heads)
    if d == 1 and heads > 1:
        raise InputError("heads are not distinct at d = 1: every A_h is +-1")
    return heads


def stack_knots(knots: list[Knots]) -> Knots:
    """One :class:`Knots` with ``(H, K + 1)`` breaks from per-head layouts of one K."""
    if len({(k.n_intervals, k.degree, k.multiplicity, k.tail) for k in knots}) != 1:
        raise ValueError("the heads' knots must share K, degree, multiplicity and tail")
    k0 = knots[0]
    return Knots(
        jnp.stack([jnp.asarray(k.breaks) for k in knots]), k0.degree, k0.multiplicity, k0.tail
    )


def _head_knots(knots: Knots, h: int) -> Knots:
    b = knots.breaks
    return Knots(b if b.ndim == 1 else b[h], knots.degree, knots.multiplicity, knots.tail)


@dataclasses.dataclass(frozen=True)
class HeadsFit:
    """A fitted ``G(x, y) = sum_h phi_h(x^T A_h y)`` in the documented gauge.

    Attributes
    ----------
    A : (H, d, d) array, each head unit Frobenius norm, largest-magnitude entry positive.
    U, V : (H, d, r) arrays, balanced factors, ``A_h = U_h V_h^T``.
    coef : (H, n_basis) array; heads ``2..H`` centred over the training pairs.
    knots : Knots with ``(H, K + 1)`` breaks (each head its own).
    config : ERMConfig
    seed : int
    info : dict
        Fit statistics, the K table, the starts, ``head_share`` (each head's share
        of the variance of ``G`` over the training pairs), ``head_cosines``
        (``|<A_h, A_g>_F|``), and where a truth was given its alignment.
    """

    A: np.ndarray
    U: np.ndarray
    V: np.ndarray
    coef: np.ndarray
    knots: Knots
    config: ERMConfig
    seed: int
    info: dict

    @property
    def n_heads(self) -> int:
        return int(self.A.shape[0])

    def phi(self, h: int, u: ArrayLike) -> jax.Array:
        """``phi_h(u)``."""
        return spline_eval(jnp.asarray(u), jnp.asarray(self.coef[h]), _head_knots(self.knots, h))

    def predict_heads(self, x: ArrayLike, y: ArrayLike) -> jax.Array:
        """``g_h(x_p, y_p) = phi_h(x_p^T A_h y_p)`` for pairs of shape (P, d): (H, P)."""
        x, y = jnp.asarray(x), jnp.asarray(y)
        return jnp.stack(
            [
                self.phi(h, jnp.einsum("pi,ij,pj->p", x, jnp.asarray(self.A[h]), y))
                for h in range(self.n_heads)
            ]
        )

    def predict(self, x: ArrayLike, y: ArrayLike) -> jax.Array:
        """``G(x_p, y_p)`` for pairs of shape (P, d); returns (P,)."""
        return jnp.sum(self.predict_heads(x, y), axis=0)


# ----------------------------------------------------------------------- the fit


def _unpack(theta, H: int, d: int, r: int):
    """Head-stacked ``(U_h / ||U_h V_h^T||_F, V_h)`` from the flat vector."""
    UV = theta.reshape(H, 2, d, r)
    Un = jax.vmap(lambda u, v: gauge_factors(u, v)[0])(UV[:, 0], UV[:, 1])
    return Un, UV[:, 1]


def _projected_loss(theta, args):
    X, Y, knots, ridge, H, d, r, chunk = args
    U, V = _unpack(theta, H, d, r)
    st = gram(jax.lax.stop_gradient(U), jax.lax.stop_gradient(V), X, Y, knots, chunk)
    c, lam = solve_coefficients(st.FtF, st.FtY, ridge)
    c = jax.lax.stop_gradient(c).reshape(H, -1)
    return (sq_loss(U, V, c, X, Y, knots, chunk) + lam * jnp.sum(c**2)) / st.n_obs


def _optimise(theta0, X, Y, knots, ridge, H, d, r, chunk, max_steps, tol):
    args = (X, Y, knots, ridge, H, d, r, chunk)
    sol = optx.minimise(
        _projected_loss,
        optx.BFGS(rtol=tol, atol=tol),
        theta0,
        args=args,
        max_steps=max_steps,
        throw=False,
    )
    return sol.value, _projected_loss(sol.value, args), sol.stats["num_steps"]


_optimise_jit = jax.jit(_optimise, static_argnames=("H", "d", "r", "chunk", "max_steps"))


def _heads_knots(X, U, V, K: int, s: int, m: int) -> Knots:
    return stack_knots([_knots_for(X, U[h], V[h], K, s, m) for h in range(U.shape[0])])


def _starts(key, X: np.ndarray, Y: np.ndarray, H: int, r: int, restarts: int) -> list[np.ndarray]:
    """The moment estimate's rank-``H r`` SVD split into heads, then random starts."""
    d = X.shape[2]
    U0, V0 = _moment_start(X, Y, min(H * r, d))
    if U0.shape[1] < H * r:  # H r > d: pad with random directions
        extra = np.asarray(jax.random.normal(jax.random.fold_in(key, 7), (2, d, H * r - d)))
        U0, V0 = np.hstack([U0, extra[0]]), np.hstack([V0, extra[1]])
    theta = np.stack(
        [np.stack([U0[:, h * r : (h + 1) * r], V0[:, h * r : (h + 1) * r]]) for h in range(H)]
    )
    starts = [theta.ravel()]
    for k in jax.random.split(key, restarts - 1) if restarts > 1 else []:
        starts.append(np.asarray(jax.random.normal(k, (H * 2 * d * r,))))
    return starts


def _gcv_table(X, Y, U, V, grid, s, m, ridge, n_a, chunk):
    """GCV for every K of the grid: nested knots per head, one Gram pass (as for one head)."""
    H = U.shape[0]
    fine_k = max(grid)
    fines = [_knots_for(X, U[h], V[h], fine_k, s, m) for h in range(H)]
    if any(f.n_intervals != fine_k for f in fines) or any(fine_k % K for K in grid):
        table = []
        for K in grid:
            kn = _heads_knots(X, U, V, K, s, m)
            st = gram(U, V, X, Y, kn, chunk)
            args = (float(st.YtY), float(st.n_obs), ridge, n_a, K)
            table.append(_gcv_score(np.asarray(st.FtF), np.asarray(st.FtY), *args))
        return table
    st = gram(U, V, X, Y, stack_knots(fines), chunk)
    G, b = np.asarray(st.FtF), np.asarray(st.FtY)
    per_head = []
    for f in fines:
        br = np.asarray(f.breaks)
        coarse = [make_knots(br[:: fine_k // K], s, m) for K in grid]
        per_head.append(refinement_matrices(coarse, f))
    from scipy.linalg import block_diag

    table = []
    for i, K in enumerate(grid):
        T = block_diag(*[Ts[i] for Ts in per_head])
        args = (float(st.YtY), float(st.n_obs), ridge, n_a, K)
        table.append(_gcv_score(T.T @ G @ T, T.T @ b, *args))
    return table


def fit_erm_heads(
    key: jax.Array,
    X: ArrayLike,
    Y: ArrayLike,
    config: ERMConfig | None = None,
    *,
    heads: int = 2,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = False,
) -> HeadsFit:
    """Fit ``G(x, y) = sum_h phi_h(x^T A_h y)`` with ``heads`` heads by variable projection.

    Parameters
    ----------
    key : PRNG key
        Drives the random starts.
    X : (M, N, d) array
    Y : (M, N) array
    config : ERMConfig, optional
        As for one head (default ``ERMConfig()``); ``rank`` is each head's rank.
    heads : int
        Number of heads H (for H = 1 prefer :func:`bayes_ips.erm.fit_erm`).
    seed : int, optional
        Recorded in the fit.
    progress : bool
        Progress bar over the starts.

    Returns
    -------
    HeadsFit
    """
    X, Y = check_xy(X, Y)
    M, N, d = X.shape
    H = check_heads(heads, d)
    config = ERMConfig() if config is None else config
    config.validate(d)
    if config.known_a:
        raise InputError("known_a is for single-head ERM: multi-head ERM fits every head's A")
    r, s, m = config.rank, config.resolved_degree(), config.multiplicity
    n_obs = M * N
    n_a = H * (r * (2 * d - r) - 1)
    grid = k_grid(n_obs, M, config.n_intervals, config.k_rule, config.beta)

    def fits(K):  # the heads' parameters at K within half the observations
        return H * (s + 1 + (K - 1) * m) + n_a <= n_obs // 2

    grid = [K for K in grid if fits(K)] or [min(grid)]
    n_params = H * (s + 1 + (min(grid) - 1) * m) + n_a
    if n_obs < 2 * n_params:
        raise InputError(
            f"M = {M} samples of N = {N} tokens give {n_obs} observations, too few for "
            f"{n_params} parameters ({H} heads of rank {r}, d = {d}, degree {s}); need at "
            f"least {2 * n_params}"
        )
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    k_pilot = min(8, max(grid))

    # 1. multi-start with a pilot basis
    starts = _starts(key, X, Y, H, r, config.restarts)
    it = starts
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(starts, desc="ERM starts (heads)", unit="start", leave=False)
    results = []
    for theta0 in it:
        U0, V0 = _unpack(jnp.asarray(theta0), H, d, r)
        knots = _heads_knots(Xj, U0, V0, k_pilot, s, m)
        theta, loss, steps = _optimise_jit(
            jnp.asarray(theta0), Xj, Yj, knots, config.ridge, H, d, r, chunk_size,
            config.max_steps, config.tol,
        )  # fmt: skip
        results.append((float(loss), np.asarray(theta), int(steps)))
    best = int(np.nanargmin([res[0] for res in results]))
    theta = jnp.asarray(results[best][1])

    # 2. K by GCV at the pilot factors, refit with it, knots at the final factors
    U, V = _unpack(theta, H, d, r)
    # GCV's grid grows past its top while GCV chooses the top (as for one head,
    # bayes_ips.kselect.select_k), as long as the heads' parameters fit
    K, table = extend_while_top(
        _gcv_table(Xj, Yj, U, V, grid, s, m, config.ridge, n_a, chunk_size),
        k_extension_for(n_obs, config.n_intervals, config.k_rule),
        lambda ks: _gcv_table(Xj, Yj, U, V, ks, s, m, config.ridge, n_a, chunk_size),
        fits,
    )
    knots = _heads_knots(Xj, U, V, K, s, m)
    theta, _, steps2 = _optimise_jit(
        theta, Xj, Yj, knots, config.ridge, H, d, r, chunk_size, config.max_steps, config.tol
    )
    U, V = _unpack(theta, H, d, r)
    knots = _heads_knots(Xj, U, V, K, s, m)
    st = gram(U, V, Xj, Yj, knots, chunk_size)
    c, _ = solve_coefficients(st.FtF, st.FtY, config.ridge)
    loss = float(sq_loss(U, V, c.reshape(H, -1), Xj, Yj, knots, chunk_size)) / n_obs
    fit = _finish(U, V, knots, np.asarray(c), st, config, seed)
    nb = n_basis(_head_knots(knots, 0))
    fit.info.update(
        {
            "train_mse": loss,
            "sigma_hat": math.sqrt(max(loss, 0.0) * n_obs / max(n_obs - n_a - H * nb, 1)),
            "K": int(K),
            "n_basis": nb,
            "degree": s,
            "multiplicity": m,
            "tail": knots.tail,
            "k_rule": "fixed" if config.n_intervals is not None else config.k_rule,
            "k_table": table,
            "start_losses": [res[0] for res in results],
            "best_start": best,
            "bfgs_steps": [res[2] for res in results] + [int(steps2)],
            "n_outside": int(st.n_outside),
            "M": M,
            "N": N,
            "d": d,
        }
    )
    return fit


def _finish(U, V, knots: Knots, c: np.ndarray, st, config: ERMConfig, seed) -> HeadsFit:
    """Centre heads 2..H, fix each head's gauge and order the heads; a :class:`HeadsFit`."""
    H = U.shape[0]
    FtF = np.asarray(st.FtF)
    nb = FtF.shape[0] // H
    n = float(st.n_obs)
    C = np.asarray(c, dtype=np.float64).reshape(H, nb)
    # column means of F: F 1 = F_h 1_h for every head (the B-splines sum to one)
    colmean = FtF[:, :nb].sum(axis=1) / n
    means = np.array([colmean[h * nb : (h + 1) * nb] @ C[h] for h in range(H)])
    # variance of each head's contribution over the training rows, then the order
    cov = C.ravel() @ FtF @ C.ravel()
    g_mean = colmean @ C.ravel()  # before the heads are reordered and centred
    var = np.array(
        [C[h] @ FtF[h * nb : (h + 1) * nb, h * nb : (h + 1) * nb] @ C[h] / n - means[h] ** 2
         for h in range(H)]
    )  # fmt: skip
    order = np.argsort(-var, kind="stable")
    C = C[order]
    means = means[order]
    C[1:] -= means[1:, None]  # heads 2..H centred (exact: a constant shift of phi_h)
    C[0] += means[1:].sum()
    A, Us, Vs, coefs, breaks = [], [], [], [], []
    for i, h in enumerate(order):
        Ah, Uf, Vf, kn, coef = _gauged(U[h], V[h], _head_knots(knots, int(h)), C[i], config.rank)
        A.append(Ah)
        Us.append(Uf)
        Vs.append(Vf)
        coefs.append(coef)
        breaks.append(np.asarray(kn.breaks))
    knots = Knots(jnp.asarray(np.stack(breaks)), knots.degree, knots.multiplicity, knots.tail)
    A = np.stack(A)
    info = {
        "heads": H,
        "head_share": (var[order] / max(float(var.sum()), 1e-300)).tolist(),
        "head_cosines": head_cosines(A, A).tolist(),
        "G_variance": float(cov / n - g_mean**2),
    }
    return HeadsFit(
        A, np.stack(Us), np.stack(Vs), np.stack(coefs), knots, config,
        -1 if seed is None else int(seed), info,
    )  # fmt: skip


def fit_oracle_heads(
    X: ArrayLike,
    Y: ArrayLike,
    A: ArrayLike,
    n_intervals: int,
    *,
    degree: int = 3,
    ridge: float = 1e-8,
    chunk_size: int = DEFAULT_CHUNK,
) -> HeadsFit:
    """Least squares over the concatenated bases at the true ``A_h`` (the oracle of issue 15).

    Knots at each head's score quantiles under the given ``A`` (H, d, d); only the
    coefficients are fitted.
    """
    X, Y = check_xy(X, Y)
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 3 or A.shape[1:] != (X.shape[2],) * 2:
        raise InputError(f"A must have shape (H, d, d) with d = {X.shape[2]}, got {A.shape}")
    H, d = A.shape[0], X.shape[2]
    eye = np.broadcast_to(np.eye(d), (H, d, d))
    U, V = jnp.asarray(A), jnp.asarray(eye)  # A_h = A_h I^T: full-rank factors of the truth
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    knots = _heads_knots(Xj, U, V, n_intervals, degree, 1)
    st = gram(U, V, Xj, Yj, knots, chunk_size)
    c, _ = solve_coefficients(st.FtF, st.FtY, ridge)
    config = ERMConfig(rank=d, degree=degree, n_intervals=n_intervals)
    fit = _finish(U, V, knots, np.asarray(c), st, config, None)
    fit.info.update({"K": int(n_intervals), "oracle": True})
    return fit


# ----------------------------------------------------------------- alignment


def head_cosines(A: ArrayLike, B: ArrayLike) -> np.ndarray:
    """``|<A_h, B_g>_F| / (||A_h|| ||B_g||)``, an (H, G) array.

    Sign-free: each head's sign is part of its gauge.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    num = np.abs(np.einsum("hij,gij->hg", A, B))
    den = np.linalg.norm(A, axis=(1, 2))[:, None] * np.linalg.norm(B, axis=(1, 2))[None, :]
    return num / den


def best_permutation(S: ArrayLike) -> np.ndarray:
    """``perm`` maximising ``sum_h S[..., perm[h], h]`` for each leading index.

    All permutations (vectorised) for ``H <= 6``, the Hungarian algorithm beyond.

    Parameters
    ----------
    S : (..., H, H) array, ``S[j, h]``: the draw's head ``j`` against reference head ``h``.

    Returns
    -------
    (..., H) int array
    """
    S = np.asarray(S)
    H = S.shape[-1]
    lead = S.shape[:-2]
    flat = S.reshape((-1, H, H))
    if H <= 6:
        perms = np.array(list(itertools.permutations(range(H))))  # (P, H)
        total = flat[:, perms, np.arange(H)].sum(-1)  # (n, P)
        return perms[np.argmax(total, axis=1)].reshape(lead + (H,))
    from scipy.optimize import linear_sum_assignment

    out = np.empty((flat.shape[0], H), dtype=int)
    for i, s in enumerate(flat):
        rows, cols = linear_sum_assignment(-s)
        out[i, cols] = rows
    return out.reshape(lead + (H,))


def align_heads(A: ArrayLike, reference: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The permutation of ``A``'s heads that best matches ``reference``'s.

    Maximises ``sum_h |cos(A_perm[h], reference_h)|`` over permutations (all of
    them for H <= 6, the Hungarian algorithm beyond).

    Returns
    -------
    perm : (H,) int array, ``A[perm]`` aligned with ``reference``.
    cosines : (H,) array, ``|cos(A[perm[h]], reference[h])|``.
    """
    C = head_cosines(A, reference)  # C[h, g]: fitted head h against reference head g
    H = C.shape[0]
    if C.shape != (H, H):
        raise InputError(f"cannot align {C.shape[0]} heads with {C.shape[1]}")
    perm = best_permutation(C)
    return perm, C[perm, np.arange(H)]


def heads_report(key: jax.Array, fit: HeadsFit, truth, n_pairs: int = 20000) -> dict:
    """How well the fitted heads recover the true ones, up to permutation and constants.

    The heads are aligned by :func:`align_heads`; each aligned pair ``(g_h, g*_h)``
    is centred by its mean over ``n_pairs`` pairs drawn from rho with ``key``
    (constants move between heads), and compared in ``L2(rho)`` relative to the
    variance of ``g*_h``.  ``g_h`` is a function of the pair, so each head's sign
    gauge does not enter.

    Parameters
    ----------
    key : PRNG key
    fit : HeadsFit
    truth : HeadsTruth
        With ``A`` (H, d, d), ``tokens`` and ``head(h)`` (a single-head truth).
    n_pairs : int

    Returns
    -------
    dict with ``head_permutation``, ``head_cosines_to_truth`` and ``head_relative_errors``
    (lists over the true heads).
    """
    from bayes_ips.simulate import head_g_true, sample_pairs

    perm, cos = align_heads(fit.A, truth.A)
    x, y = sample_pairs(key, truth.tokens, n_pairs)
    fitted = np.asarray(fit.predict_heads(x, y))[perm]
    true = np.asarray(head_g_true(truth, x, y))
    errs = [
        float(np.mean(((f - f.mean()) - (t - t.mean())) ** 2) / t.var())
        for f, t in zip(fitted, true, strict=True)
    ]
    return {
        "head_permutation": [int(p) for p in perm],
        "head_cosines_to_truth": [float(c) for c in cos],
        "head_relative_errors": errs,
    }
