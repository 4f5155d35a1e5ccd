"""B-spline bases in pure ``jax.numpy``, evaluated locally.

A basis is fixed by its breakpoints ``b_0 < ... < b_K`` (K intervals), its degree
``s`` and the multiplicity ``m`` of the interior knots:

* ``m = 1`` (simple knots) spans the C^{s-1} splines;
* ``m = s + 1`` spans *all* piecewise polynomials of degree ``s`` on the K
  intervals (the estimator class of the theory);
* boundary knots always have multiplicity ``s + 1`` (clamped basis).

The number of basis functions is ``s + 1 + (K - 1) m``.  Every score ``u`` touches
exactly ``s + 1`` of them (local support): :func:`local_basis` returns the index of
the first one and their ``s + 1`` values.  On each interval the basis is a
polynomial; :func:`basis_polynomials` computes these pieces exactly by running the
Cox--de Boor triangle (Piegl & Tiller, *The NURBS Book*, algorithm A2.2) on
polynomials, and evaluation is then an interval search and a Horner step.

Scores outside ``[b_0, b_K]`` are extrapolated by the rule ``Knots.tail``
(:func:`count_outside` reports how many there are):

* ``"flat"`` (the default for new fits): each basis function, hence every spline,
  keeps its boundary value, ``s(u) = s(b_K)`` for ``u > b_K`` and likewise below
  ``b_0``.  The outer knots are the extremes of the training scores, so the end
  intervals hold few of them and the slope there is the least determined thing
  the fit has: continued linearly, a slope that swings multiplies its error by the
  distance out.  On the minimax study's worst cells a few held-out pairs beyond the
  knots (~1e-4 of them) made 80-85% of the linear tail's squared error; the flat
  tail cut the worst cells' errors 3-5x and was better or equal in 33 of 34 cells
  of seven problems (``analyses/RESULTS.md``, "The flat tail");
* ``"linear"``: each basis function continues linearly with its value and slope at
  the boundary, ``s(u) = s(b_K) + s'(b_K) (u - b_K)`` (the tail of a natural
  spline); the default from 2026-12-03 to 2026-12-04;
* ``"poly"``: the polynomial piece of the boundary interval (as
  ``scipy.interpolate.BSpline(extrapolate=True)`` does); the rule of the package
  before the linear tail, kept for files saved without a ``tail``.

Every rule is linear in the coefficients, and every evaluation of the basis
(:func:`local_basis`, :func:`spline_eval`, the kernels of
:mod:`bayes_ips.pairwise`) applies the same one: a score outside is evaluated at
the clamped local coordinate ``zc`` (``"flat"``), with its first-order Taylor term
``p(zc) + p'(zc) (z - zc)`` (``"linear"``), or at ``z`` itself (``"poly"``;
:func:`_tail_coord`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "LEGACY_TAIL",
    "TAILS",
    "Knots",
    "count_outside",
    "design_matrix",
    "full_knot_vector",
    "host_knot_vector",
    "basis_polynomials",
    "local_basis",
    "locate",
    "piece_coefficients",
    "make_knots",
    "mixed_breaks",
    "n_basis",
    "quantile_breaks",
    "reflect",
    "saved_tail",
    "spline_eval",
]


@dataclasses.dataclass(frozen=True)
class Knots:
    """A clamped B-spline knot layout.

    Attributes
    ----------
    breaks : (K + 1,) array
        Strictly increasing breakpoints; ``K`` is the number of intervals.
    degree : int
        Polynomial degree ``s >= 0``.
    multiplicity : int
        Multiplicity of the interior knots, ``1 <= m <= s + 1``.
    tail : str
        Extrapolation beyond ``[b_0, b_K]`` (module docstring): ``"flat"``
        (what :func:`make_knots` gives new fits), ``"linear"`` or ``"poly"``.
    """

    breaks: jax.Array
    degree: int = 3
    multiplicity: int = 1
    tail: str = "flat"

    @property
    def n_intervals(self) -> int:
        return int(self.breaks.shape[-1]) - 1


#: the extrapolation rules beyond the outer knots (module docstring)
TAILS = ("flat", "linear", "poly")
#: the tail of knots saved before files recorded one: they predict as they did
LEGACY_TAIL = "poly"
#: the tail of every new fit's knots (``make_knots`` without a ``tail``).  Records made
#: before the linear tail (2026-12-03) are reproduced with this set to ``LEGACY_TAIL``,
#: those made before the flat tail (2026-12-04, session 14) with ``"linear"``.
DEFAULT_TAIL = "flat"

jax.tree_util.register_dataclass(
    Knots, data_fields=["breaks"], meta_fields=["degree", "multiplicity", "tail"]
)


def make_knots(
    breaks: ArrayLike, degree: int = 3, multiplicity: int = 1, tail: str | None = None
) -> Knots:
    """Validate and build a :class:`Knots`.

    Examples
    --------
    >>> kn = make_knots([0.0, 0.5, 1.0], degree=2)
    >>> n_basis(kn)
    4
    """
    degree = int(degree)
    multiplicity = int(multiplicity)
    if degree < 0:
        raise ValueError(f"spline degree must be >= 0, got {degree}")
    if not 1 <= multiplicity <= degree + 1:
        raise ValueError(
            f"knot multiplicity must be in [1, degree + 1] = [1, {degree + 1}], got {multiplicity}"
        )
    if tail is None:  # new knots: the package's default, read at call time
        tail = DEFAULT_TAIL
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    b = np.asarray(breaks, dtype=np.float64)
    if b.ndim != 1 or b.size < 2:
        raise ValueError("breaks must be a 1-d array with at least 2 entries")
    if not np.all(np.isfinite(b)):
        raise ValueError("breaks must be finite")
    if np.any(np.diff(b) <= 0):
        raise ValueError("breaks must be strictly increasing")
    # device_put transfers; jnp.asarray would compile a copy program per shape, which a
    # fresh process (every CLI run) traces and lowers again for each candidate basis
    return Knots(jax.device_put(b), degree, multiplicity, str(tail))


def saved_tail(attrs) -> str:
    """The tail recorded in a file's attributes (a mapping), ``"poly"`` if absent.

    Files written before the linear tail carry no ``tail``: their fits were made,
    and must predict, with the boundary polynomial.  ``ValueError`` for an unknown
    value.
    """
    tail = str(attrs.get("tail", LEGACY_TAIL))
    if tail not in TAILS:
        raise ValueError(f"unknown spline tail {tail!r} (expected one of {TAILS})")
    return tail


def n_basis(knots: Knots) -> int:
    """Number of basis functions, ``s + 1 + (K - 1) m``."""
    return knots.degree + 1 + (knots.n_intervals - 1) * knots.multiplicity


@jax.jit
def full_knot_vector(knots: Knots) -> jax.Array:
    """The full (clamped) knot vector, of length ``n_basis + s + 1``."""
    s, m = knots.degree, knots.multiplicity
    b = knots.breaks
    parts = [jnp.repeat(b[:1], s + 1)]
    if knots.n_intervals > 1:
        parts.append(jnp.repeat(b[1:-1], m))
    parts.append(jnp.repeat(b[-1:], s + 1))
    return jnp.concatenate(parts)


def host_knot_vector(knots: Knots) -> np.ndarray:
    """:func:`full_knot_vector` in NumPy, for code on the host: no program per shape."""
    s, m = knots.degree, knots.multiplicity
    b = np.asarray(knots.breaks, dtype=np.float64)
    return np.concatenate(
        [np.repeat(b[:1], s + 1), np.repeat(b[1:-1], m), np.repeat(b[-1:], s + 1)]
    )


def _interval(u: jax.Array, breaks: jax.Array) -> jax.Array:
    """Index ``k`` of the interval ``[b_k, b_{k+1})`` holding ``u``, clamped to [0, K-1].

    Scores left of ``b_0`` get ``k = 0`` and scores right of ``b_K`` get ``K - 1``: they
    are extrapolated with the boundary piece.

    ``k`` is the number of interior breakpoints ``<= u``, summed one breakpoint
    at a time so that XLA fuses the ``K - 1`` compares into one elementwise loop
    (no ``(..., K)`` intermediate).  On CPU this beats a binary search, whose
    dependent gathers XLA does not fuse (measured in the kernel benchmark).
    """
    k = jnp.zeros(u.shape, jnp.int32)
    for j in range(1, breaks.shape[-1] - 1):
        k = k + (u >= breaks[j]).astype(jnp.int32)
    # materialise k once: otherwise XLA fuses (recomputes) it into every consumer
    return _materialise(k, breaks)


def _materialise(x, ref: jax.Array):
    """``x`` unchanged, but computed into memory before any consumer reads it.

    XLA's CPU backend fuses producers into all their consumers: an interval index
    read by six gathers would be recomputed six times, and gathers get fused into
    (single-threaded) reductions.  ``lax.optimization_barrier`` is dropped by the
    CPU pipeline; a conditional on a runtime predicate is not, and XLA must write
    its operand to memory.  The predicate (a bit test on ``ref[..., 0]``, a runtime
    array) is always true but cannot be constant-folded.  Only on CPU: other
    backends get ``x`` as is.  ``x`` is any pytree of arrays.
    """
    if jax.default_backend() != "cpu":
        return x
    r = jnp.ravel(ref)[0]
    bits = jax.lax.bitcast_convert_type(r, jnp.int32 if r.dtype.itemsize == 4 else jnp.int64)
    pred = (bits | 1) != 0
    return jax.lax.cond(pred, lambda t: t, lambda t: jax.tree.map(jnp.zeros_like, t), x)


def _tail_coord(z: jax.Array, tail: str) -> tuple[jax.Array, jax.Array | None]:
    """Where to evaluate the local polynomial, and the distance of the linear tail.

    ``tail = "poly"``: ``(z, None)``, the polynomial piece itself.  ``"flat"``:
    ``(clip(z, 0, 1), None)``, the boundary value (its derivative in ``u`` is zero
    outside, which :func:`_piece_eval` applies).  ``"linear"``:
    ``zc = clip(z, 0, 1)`` and ``dz = z - zc``; the tail value of a piece ``p`` is
    then ``p(zc) + p'(zc) dz``.  Inside the range ``dz = 0`` (interior intervals
    always have ``z`` in [0, 1)); outside, ``zc`` is the boundary's end of the
    boundary interval, so this is the linear continuation with the boundary's
    value and slope (linear in ``u``, since ``z`` is).
    """
    if tail == "poly":
        return z, None
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    zc = jnp.clip(z, 0.0, 1.0)
    return zc, (z - zc if tail == "linear" else None)


def _flat_slope_weight(u: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """What multiplies ``d / du`` of a spline under the flat tail at scores ``u``: 1
    inside ``(lo, hi)``, 0 beyond, 1/2 exactly on ``lo`` or ``hi`` (the kink; JAX's
    convention for ``clip`` at its bounds, and what central differences give there).
    Shared by :func:`_piece_eval` and the Gram kernel's triangle."""
    inside = (u > lo) & (u < hi)
    on_edge = (u == lo) | (u == hi)
    return jnp.where(inside, 1.0, jnp.where(on_edge, 0.5, 0.0)).astype(u.dtype)


def _table_eval(a: jax.Array, k: jax.Array, z: jax.Array, tail: str, derivative: bool):
    """Value (and ``d / dz``) at local coordinates ``z`` of the pieces ``a[k]``, with the tail.

    ``a`` is a ``(K, s + 1)`` table of local polynomials (:func:`piece_coefficients`),
    gathered one column at a time.  Returns ``(value, d value / dz)``, the
    derivative ``None`` unless ``derivative``.
    """
    s = a.shape[-1] - 1
    zc, dz = _tail_coord(z, tail)
    need = derivative or dz is not None
    out = a[:, s][k]
    der = jnp.zeros_like(out) if need else None
    for p in range(s - 1, -1, -1):
        if need:
            der = der * zc + out
        out = out * zc + a[:, p][k]
    if dz is not None:
        out = out + der * dz
    return out, der if derivative else None


def _piece_eval(u: jax.Array, a: jax.Array, breaks: jax.Array, derivative: bool, tail: str):
    """Interval, local coordinate, value (and ``d phi / du``) of a piecewise polynomial.

    ``a`` is the ``(K, s + 1)`` table of :func:`piece_coefficients`; ``tail`` the
    rule outside the breakpoints (:attr:`Knots.tail`).  Used by the kernels of
    :mod:`bayes_ips.pairwise`, which supply their own derivative rules: the
    breakpoints get no derivative through ``z`` (as in :func:`locate`).

    Returns
    -------
    k, z, value, and ``d value / du`` if ``derivative`` (else ``None``); all of the
    shape of ``u`` and materialised (see :func:`_materialise`).  ``z`` is the
    unclamped local coordinate (see :func:`_tail_coord`).
    """
    b = jax.lax.stop_gradient(breaks)
    k = _interval(u, b)
    invh = (1.0 / jnp.diff(b))[k]
    z = (u - b[:-1][k]) * invh
    out, der = _table_eval(a, k, z, tail, derivative)
    if derivative:
        der = der * invh
        if tail == "flat":  # constant beyond the boundary
            der = der * _flat_slope_weight(u, b[0], b[-1])
    z, out, der = _materialise((z, out, der), b)
    return k, z, out, der


def _mul_linear(p: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """(a + b z) * p(z) for polynomials stored as (..., deg+1) coefficient arrays."""
    shifted = jnp.concatenate([jnp.zeros_like(p[..., :1]), p[..., :-1]], axis=-1)
    return a[..., None] * p + b[..., None] * shifted


@jax.jit
def basis_polynomials(knots: Knots) -> jax.Array:
    """Local polynomial form of the basis on every interval.

    On interval ``k`` (``b_k <= u < b_{k+1}``, width ``h_k``), with the local
    coordinate ``z = (u - b_k) / h_k``,

        B_{k m + l}(u) = sum_p P[k, l, p] z^p,   l, p = 0..s.

    ``P`` is computed exactly by running the Cox--de Boor triangle (A2.2) on
    polynomials: its denominators do not depend on ``u``.  The same polynomial
    extended beyond ``[b_0, b_K]`` is the ``"poly"`` extrapolation; the
    ``"linear"`` tail is its first-order Taylor polynomial at the boundary.

    Returns
    -------
    (K, s + 1, s + 1) array
    """
    s, m = knots.degree, knots.multiplicity
    b = knots.breaks
    K = knots.n_intervals
    bk, h = b[:-1], jnp.diff(b)
    one = jnp.zeros((K, s + 1), b.dtype).at[:, 0].set(1.0)
    if s == 0:
        return one[:, None, :]
    t = full_knot_vector(knots)
    mu = s + jnp.arange(K) * m
    # left_j(z) = (b_k - t[mu+1-j]) + h z ;  right_j(z) = (t[mu+j] - b_k) - h z
    la = [None] + [bk - t[mu + 1 - j] for j in range(1, s + 1)]
    ra = [None] + [t[mu + j] - bk for j in range(1, s + 1)]
    basis = [one]
    for j in range(1, s + 1):
        saved = jnp.zeros_like(one)
        new = []
        for r in range(j):
            denom = ra[r + 1] + la[j - r]  # = t[mu+r+1] - t[mu+1-j+r] > 0
            temp = basis[r] / denom[:, None]
            new.append(saved + _mul_linear(temp, ra[r + 1], -h))
            saved = _mul_linear(temp, la[j - r], h)
        new.append(saved)
        basis = new
    return jnp.stack(basis, axis=1)


@jax.jit
def locate(u: ArrayLike, knots: Knots) -> tuple[jax.Array, jax.Array]:
    """Interval index and local coordinate of each score.

    Returns
    -------
    k : (...,) int32 array, the interval (0..K-1; clamped outside the range)
    z : (...,) array, ``(u - b_k) / h_k``: in [0, 1) inside, beyond it when
        extrapolating.
    """
    u = jnp.asarray(u)
    b = knots.breaks
    k = _interval(u, b)
    # One 1-d gather per quantity: on CPU, XLA gathers and scatters single
    # columns several times faster than rows of a table (see the benchmark).
    b = jax.lax.stop_gradient(b)
    return k, (u - b[:-1][k]) * (1.0 / jnp.diff(b))[k]


@jax.jit
def local_basis(u: ArrayLike, knots: Knots) -> tuple[jax.Array, jax.Array]:
    """Values of the ``s + 1`` B-splines that are non-zero at ``u``.

    Parameters
    ----------
    u : (...,) array
        Scores.
    knots : Knots

    Returns
    -------
    first : (...,) int array
        Index of the first non-zero basis function; the others follow it.
    values : (..., s + 1) array
        ``values[..., l] = B_{first + l}(u)``.  They sum to one.
    """
    s = knots.degree
    k, z = locate(u, knots)
    P = basis_polynomials(knots)
    zc, dz = _tail_coord(z, knots.tail)
    zp = [jnp.ones_like(zc)]
    for _ in range(s):
        zp.append(zp[-1] * zc)
    vals = [sum(P[:, j, p][k] * zp[p] for p in range(s + 1)) for j in range(s + 1)]
    if dz is not None:  # linear tail: + B'(zc) dz, in the local coordinate
        vals = [
            v + dz * sum(p * P[:, j, p][k] * zp[p - 1] for p in range(1, s + 1))
            for j, v in enumerate(vals)
        ]
    return k * knots.multiplicity, jnp.stack(vals, axis=-1)


@jax.jit
def piece_coefficients(coef: ArrayLike, knots: Knots) -> jax.Array:
    """Polynomial coefficients of ``phi_c`` on each interval, in the local coordinate.

    Returns
    -------
    (K, s + 1) array ``a`` with ``phi_c(u) = sum_p a[k, p] z^p`` on interval ``k``.
    """
    s, m = knots.degree, knots.multiplicity
    idx = jnp.arange(knots.n_intervals)[:, None] * m + jnp.arange(s + 1)
    return jnp.einsum("klp,kl->kp", basis_polynomials(knots), jnp.asarray(coef)[idx])


@jax.jit
def spline_eval(u: ArrayLike, coef: ArrayLike, knots: Knots) -> jax.Array:
    """Evaluate ``phi_c(u) = sum_k c_k B_k(u)`` using local support.

    The coefficients are first turned into one polynomial per interval (a
    ``(K, s + 1)`` table, :func:`piece_coefficients`); each score then costs an
    interval search, a gather of ``s + 1`` numbers and a Horner step (two, for
    the linear tail).  Differentiable in ``u`` and ``coef``.

    Parameters
    ----------
    u : (...,) array
    coef : (n_basis,) array
    knots : Knots

    Returns
    -------
    (...,) array
    """
    k, z = locate(u, knots)
    a = piece_coefficients(coef, knots)  # (K, s + 1)
    return _table_eval(a, k, z, knots.tail, False)[0]


@jax.jit
def design_matrix(u: ArrayLike, knots: Knots) -> jax.Array:
    """Dense basis matrix ``B[p, k] = B_k(u_p)``, for small inputs (plots, tests).

    Parameters
    ----------
    u : (P,) array

    Returns
    -------
    (P, n_basis) array
    """
    u = jnp.ravel(jnp.asarray(u))
    first, vals = local_basis(u, knots)
    idx = first[:, None] + jnp.arange(knots.degree + 1)
    out = jnp.zeros((u.shape[0], n_basis(knots)), dtype=vals.dtype)
    return out.at[jnp.arange(u.shape[0])[:, None], idx].add(vals)


@jax.jit
def count_outside(u: ArrayLike, knots: Knots) -> jax.Array:
    """Number of scores outside ``[b_0, b_K]`` (extrapolated by ``knots.tail``, not clipped)."""
    u = jnp.asarray(u)
    return jnp.sum((u < knots.breaks[0]) | (u > knots.breaks[-1]))


def reflect(knots: Knots, coef: ArrayLike) -> tuple[Knots, jax.Array]:
    """The basis and coefficients of ``u -> phi_c(-u)``: exact, by knot reflection."""
    # both tails are symmetric under the reflection
    new = Knots(-knots.breaks[::-1], knots.degree, knots.multiplicity, knots.tail)
    return new, jnp.asarray(coef)[::-1]


def quantile_breaks(
    scores: ArrayLike, n_intervals: int, *, max_points: int = 200_000, seed: int = 0
) -> np.ndarray:
    """Breakpoints at empirical quantiles of ``scores``, ends at their min and max.

    Scores of an attention layer concentrate near zero and have sparse tails, so
    equal-mass intervals put resolution where the exploration measure has mass
    (the L2(rho) error weights it so).  Near-ties (discrete token laws) are merged,
    so the result may have fewer than ``n_intervals`` intervals.

    Parameters
    ----------
    scores : array of any shape
    n_intervals : int
        Requested K >= 1.
    max_points : int
        Quantiles are taken on a fixed-seed subsample of at most this many
        scores (the ends always use all of them).

    Returns
    -------
    (K' + 1,) float64 numpy array, K' <= n_intervals.
    """
    if n_intervals < 1:
        raise ValueError(f"number of intervals must be >= 1, got {n_intervals}")
    u = np.asarray(scores, dtype=np.float64).ravel()
    u = u[np.isfinite(u)]
    if u.size < 2:
        raise ValueError("need at least two finite scores to place knots")
    lo, hi = float(u.min()), float(u.max())
    if not hi > lo:
        raise ValueError("all scores are equal: cannot place knots (is A zero?)")
    if u.size > max_points:
        u = np.random.default_rng(seed).choice(u, max_points, replace=False)
    q = np.quantile(u, np.linspace(0.0, 1.0, n_intervals + 1))
    return _merge_ties(q, lo, hi)


def _merge_ties(q: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``q`` (non-decreasing) with its ends set to ``lo``, ``hi`` and every breakpoint
    closer than a tiny fraction of the range to the previous one (or to ``hi``)
    dropped: the tied quantiles of discrete scores."""
    tol = 1e-9 * (hi - lo)
    keep = [lo]
    for x in q[1:-1]:
        if x - keep[-1] > tol and hi - x > tol:
            keep.append(float(x))
    keep.append(hi)
    return np.asarray(keep)


def mixed_breaks(
    scores: ArrayLike,
    n_intervals: int,
    uniform_weight: float,
    *,
    max_points: int = 200_000,
    seed: int = 0,
) -> np.ndarray:
    """Breakpoints at quantiles of a mixture of the scores' law and the uniform law.

    The breakpoints split ``[min, max]`` of the scores into ``n_intervals``
    intervals of equal mass under ``(1 - w) * empirical + w * uniform``, ``w`` the
    ``uniform_weight``: ``w = 0`` gives :func:`quantile_breaks` (equal-mass
    intervals), ``w = 1`` equal-width intervals, and values between put some
    resolution into the sparse tails, where quantile knots leave a few wide
    intervals.  A penalised (P-spline) fit needs no data in every interval,
    which is what makes ``w > 0`` usable for the Bayesian model
    (:func:`bayes_ips.kselect.posterior_basis`).

    Returns
    -------
    (K' + 1,) float64 numpy array, K' <= n_intervals: fewer where ties in the scores
    (discrete token laws) put several breakpoints on one value, merged as in
    :func:`quantile_breaks`.
    """
    w = float(uniform_weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"uniform_weight must be in [0, 1], got {uniform_weight}")
    if w == 0.0:
        return quantile_breaks(scores, n_intervals, max_points=max_points, seed=seed)
    if n_intervals < 1:
        raise ValueError(f"number of intervals must be >= 1, got {n_intervals}")
    u = np.asarray(scores, dtype=np.float64).ravel()
    u = u[np.isfinite(u)]
    if u.size < 2 or not u.max() > u.min():
        raise ValueError("need at least two distinct finite scores to place knots")
    lo, hi = float(u.min()), float(u.max())
    if u.size > max_points:
        u = np.random.default_rng(seed).choice(u, max_points, replace=False)
    u = np.sort(np.concatenate([[lo, hi], u]))
    # the mixture's distribution function at the sorted scores (the empirical part
    # interpolated linearly, as np.quantile does).  Its inverse is flat across a tie
    # (discrete token laws), so breakpoints there coincide and are merged.
    F = (1.0 - w) * np.arange(u.size) / (u.size - 1) + w * (u - lo) / (hi - lo)
    return _merge_ties(np.interp(np.linspace(0.0, 1.0, n_intervals + 1), F, u), lo, hi)
