"""A Laplace proposal and an independence Metropolis-Hastings sampler built on it.

The fast path of the package's posteriors (:func:`bayes_ips.inference.run_imh`):

1. find the mode of the potential energy (minus the log posterior in NumPyro's
   unconstrained space) with BFGS (``optimistix``) from a given start, in
   coordinates whitened by the Hessian there;
2. take the Hessian there; its inverse is the Laplace covariance ``Sigma``
   (eigenvalues floored, as for the NUTS mass matrix: :func:`bayes_ips.nuts.laplace_inverse_mass`);
3. draw proposals from a multivariate Student-t centred at the mode with scale
   ``Sigma`` (heavier tails than the posterior's in every direction the Laplace
   approximation gets roughly right, so the importance weights stay bounded);
4. evaluate the exact log posterior of every proposal (batched: the proposals
   do not depend on the chain), and run independence Metropolis-Hastings chains
   on them: a proposal ``x'`` replaces the current ``x`` with probability
   ``min(1, w(x') / w(x))``, ``w = p / q``.  The chains are exact MCMC whatever the
   proposal; a poor proposal shows up as a low acceptance rate and a large
   Pareto k of the same importance weights (Vehtari et al. 2024, PSIS), which is
   what :func:`bayes_ips.inference.sample_posterior` checks before it trusts them.

The pieces here are pure functions of arrays; everything model-specific (how a
proposal's log density is evaluated) is the caller's.

**Charts of the spheres (rank 1).**  The likelihood sees the factors only through
their directions ``u = U / |U|`` and ``v = V / |V|``; their radii have a prior of
their own (the model's gauge factor), independent of the data.  In ``U``-space the
posterior is a thin curved shell of radius ``sqrt(d)`` whose curvature no Gaussian
follows once ``d`` is large (at d = 30 the Laplace proposal's Pareto k was 1.4).
The identifiable part, the directions, is chart-able: the gnomonic chart
``u(z) = (c + B z) / sqrt(1 + |z|^2)`` (``c`` a centre direction, ``B`` an
orthonormal basis of the tangent space at ``c``) maps ``R^(d-1)`` onto the
hemisphere around ``c``, with surface element ``(1 + |z|^2)^(-d/2) dz``.  The
posterior of ``(u, v, log sigma, log tau)`` in chart coordinates is the model's
posterior at ``U = sqrt(d) u``, ``V = sqrt(d) v`` (where the gauge factor is
constant) times that Jacobian: :class:`SphereChart`.  The multi-head model gives
every head the single-head gauge factor, so every head's ``u_h`` and ``v_h`` get a
chart of their own (the charts stacked in one :class:`SphereChart`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.scipy.special import gammaln

__all__ = [
    "LaplaceApprox",
    "RotationSlice",
    "SphereChart",
    "chart_covariance",
    "flatten",
    "imh_chains",
    "laplace_approx",
    "mode_and_hessian",
    "mvt_logpdf",
    "mvt_sample",
    "rotation_slice",
    "sphere_chart",
    "unravel",
    "widened",
]


class LaplaceApprox(NamedTuple):
    """A Gaussian (or Student-t) approximation in the flattened unconstrained space.

    Attributes
    ----------
    mean : (P,) array, the mode.
    cov : (P, P) array, the inverse Hessian (eigenvalues floored).
    chol : (P, P) array, its lower Cholesky factor.
    """

    mean: np.ndarray
    cov: np.ndarray
    chol: np.ndarray


def flatten(point: dict, sites: Sequence[str]) -> tuple[jax.Array, tuple]:
    """The sites of ``point`` raveled into one vector, and the layout to undo it."""
    layout = tuple((k, tuple(jnp.shape(point[k]))) for k in sites)
    return jnp.concatenate([jnp.ravel(point[k]) for k in sites]), layout


def unravel(flat, layout: tuple, rest: dict | None = None) -> dict:
    """Inverse of :func:`flatten` along the last axis (``rest`` holds further sites, unchanged).

    ``flat`` of shape ``(..., P)`` (a JAX or NumPy array) gives each site the shape
    ``(..., *shape)``: one point, or a batch of them (e.g. proposals, on the host).
    """
    out, i = dict(rest or {}), 0
    lead = tuple(flat.shape[:-1])
    for k, sh in layout:
        n = int(np.prod(sh))
        out[k] = flat[..., i : i + n].reshape(lead + tuple(sh))
        i += n
    return out


class SphereChart(NamedTuple):
    """Gnomonic charts of the unit spheres of the rank-1 factors around centre directions.

    One head: chart coordinates ``z = (z_u, z_v, log sigma, log tau)`` (``2 (d - 1) + 2``)
    map to the model's flattened ``(U, V, log sigma, log tau)`` at radius ``sqrt(d)``.
    ``H`` heads (centres stacked, ``cu`` of shape ``(H, d)``): ``z = (z_u1, ..., z_uH,
    z_v1, ..., z_vH, rest)`` maps to the flattened ``(U, V, rest)`` with ``U`` and ``V``
    of shape ``(H, d, 1)``, each head's factors on their own spheres (the multi-head
    model's gauge factor is the single-head one per head).  ``rest`` is passed through.
    """

    cu: jax.Array  # (d,) or (H, d) centre directions
    cv: jax.Array
    Bu: jax.Array  # (d, d - 1) or (H, d, d - 1) orthonormal bases of the tangent spaces
    Bv: jax.Array

    @property
    def n_heads(self) -> int:
        return 1 if self.cu.ndim == 1 else int(self.cu.shape[0])

    @property
    def dim(self) -> int:
        """Chart coordinates of the directions plus ``log sigma`` and one ``log tau`` per head."""
        return 2 * self.n_heads * self.Bu.shape[-1] + 1 + self.n_heads


def _tangent_basis(c: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the complement of the unit vector ``c``: (d, d - 1)."""
    _, _, vt = np.linalg.svd(c[None, :])
    return vt[1:].T


def sphere_chart(U: np.ndarray, V: np.ndarray) -> SphereChart:
    """Charts centred at the directions of ``U`` and ``V`` ((d, 1) each, or (H, d, 1) per head)."""
    U, V = np.asarray(U, dtype=np.float64), np.asarray(V, dtype=np.float64)
    if U.ndim == 3:
        charts = [sphere_chart(U[h], V[h]) for h in range(U.shape[0])]
        return SphereChart(*(jnp.stack(parts) for parts in zip(*charts, strict=True)))
    cu = np.ravel(U) / np.linalg.norm(U)
    cv = np.ravel(V) / np.linalg.norm(V)
    return SphereChart(*(jnp.asarray(a) for a in (cu, cv, _tangent_basis(cu), _tangent_basis(cv))))


def _split(z: jax.Array, chart: SphereChart):
    """``z`` as the heads' ``z_u`` and ``z_v`` ((H, d - 1) each) and the rest."""
    H, k = chart.n_heads, chart.Bu.shape[-1]
    return z[: H * k].reshape(H, k), z[H * k : 2 * H * k].reshape(H, k), z[2 * H * k :]


def _stacked(chart: SphereChart):
    d, k = chart.Bu.shape[-2:]
    return (
        jnp.reshape(chart.cu, (-1, d)),
        jnp.reshape(chart.cv, (-1, d)),
        jnp.reshape(chart.Bu, (-1, d, k)),
        jnp.reshape(chart.Bv, (-1, d, k)),
    )


def chart_to_flat(z: jax.Array, chart: SphereChart) -> jax.Array:
    """Chart coordinates -> the model's flattened ``(U, V, log sigma, log tau)``."""
    cu, cv, Bu, Bv = _stacked(chart)
    zu, zv, rest = _split(z, chart)
    R = jnp.sqrt(Bu.shape[-1] + 1.0)

    def sphere(c, B, w):
        return (c + jnp.einsum("hdk,hk->hd", B, w)) / jnp.sqrt(1.0 + jnp.sum(w**2, -1))[:, None]

    return jnp.concatenate([R * sphere(cu, Bu, zu).ravel(), R * sphere(cv, Bv, zv).ravel(), rest])


def chart_log_jacobian(z: jax.Array, chart: SphereChart) -> jax.Array:
    """Log of the spheres' surface element per unit chart volume at ``z``."""
    k = chart.Bu.shape[-1]
    zu, zv, _ = _split(z, chart)
    return -0.5 * (k + 1) * jnp.sum(jnp.log1p(jnp.sum(zu**2, -1)) + jnp.log1p(jnp.sum(zv**2, -1)))


@jax.jit
def charts_to_flat(z: jax.Array, chart: SphereChart) -> tuple[jax.Array, jax.Array]:
    """:func:`chart_to_flat` and :func:`chart_log_jacobian` of the rows of ``z``, compiled
    once per shape (run eagerly, their vmaps were traced anew at every call)."""
    flat = jax.vmap(chart_to_flat, in_axes=(0, None))(z, chart)
    return flat, jax.vmap(chart_log_jacobian, in_axes=(0, None))(z, chart)


@jax.jit
def _chart_jacobian(z: jax.Array, chart: SphereChart) -> tuple[jax.Array, jax.Array]:
    """:func:`chart_to_flat` at ``z`` and its Jacobian, as one program (run eagerly, they
    were ~40 small programs, each traced and lowered again by every new process)."""
    return chart_to_flat(z, chart), jax.jacfwd(chart_to_flat)(z, chart)


def chart_point(flat: np.ndarray, chart: SphereChart) -> np.ndarray:
    """The chart coordinates of a model point whose directions lie in the charts' hemispheres."""
    cu, cv, Bu, Bv = (np.asarray(a) for a in _stacked(chart))
    H, d = cu.shape
    flat = np.asarray(flat)
    U, V = flat[: H * d].reshape(H, d), flat[H * d : 2 * H * d].reshape(H, d)
    rest = flat[2 * H * d :]

    def z_of(w, c, B):
        w = w / np.linalg.norm(w, axis=-1, keepdims=True)
        return (np.einsum("hdk,hd->hk", B, w) / np.sum(c * w, -1)[:, None]).ravel()

    return np.concatenate([z_of(U, cu, Bu), z_of(V, cv, Bv), rest])


class RotationSlice(NamedTuple):
    """The slice through a rank ``r >= 2`` model's mode, transverse to its factors' rotations.

    ``A = U V^T`` and the model's prior do not change under ``(U, V) -> (U Q, V Q)``,
    ``Q`` in O(r): the posterior is constant along each orbit (``r (r - 1) / 2``
    dimensions), and a Gaussian about one point of it fits it badly (Pareto k 3.0 at
    rank 2, d = 6, M = 2000; analyses/RESULTS.md, session 27).  Slice coordinates
    ``z`` (``P - m`` of them, ``m = r (r - 1) / 2``) map to ``x0 + B z``: ``B`` is an
    orthonormal basis of the complement of the orbit's tangents at the mode ``x0``
    within the ``(U, V)`` block, the other sites (``log sigma, log tau``) pass through
    as the last coordinates.  A density on the slice times the Faddeev-Popov factor
    ``|det G(x)|``, ``G_ab(x) = <t_a(x), t_b(x0)>`` with ``t_a(x) = (U J_a, V J_a)``
    and ``J_a`` the generators of so(r), is the density of the orbits' law (the
    coarea formula with the orbits' Haar measure; :func:`slices_to_flat`).
    """

    x0: jax.Array  # (P,) the mode, in the model's flattened coordinates
    B: jax.Array  # (P, P - m)
    W: jax.Array  # (P, m * m): G(x) = (x @ W).reshape(m, m)


def _so_generators(r: int) -> np.ndarray:
    """The ``m = r (r - 1) / 2`` generators ``E_kl - E_lk`` (k < l) of so(r): (m, r, r)."""
    out = []
    for k in range(r):
        for j in range(k + 1, r):
            J = np.zeros((r, r))
            J[k, j], J[j, k] = 1.0, -1.0
            out.append(J)
    return np.asarray(out)


def rotation_slice(approx: LaplaceApprox, layout: tuple) -> tuple[LaplaceApprox, RotationSlice]:
    """A flat Laplace approximation of a rank ``r >= 2`` model, restricted to the
    :class:`RotationSlice` through its mode.

    ``layout`` starts with ``U`` and ``V`` of shape ``(d, r)``.  The Hessian (the
    inverse of ``approx.cov``) is projected onto the slice, ``B^T H B``: the rotations'
    flat directions, where ``laplace_approx`` had floored its eigenvalues, are left out.
    """
    names = [k for k, _ in layout]
    if names[:2] != ["U", "V"] or len(layout[0][1]) != 2:
        raise ValueError(f"expected (d, r) factors U, V first in the layout, got {layout}")
    d, r = layout[0][1]
    P, n_uv = approx.mean.shape[0], 2 * d * r
    gens = _so_generators(r)
    m = gens.shape[0]
    # (U J) flattened row-major is kron(I_d, J^T) applied to U's flattening; the same for V
    L = np.zeros((m, P, P))
    for a, J in enumerate(gens):
        blk = np.kron(np.eye(d), J.T)
        L[a, : d * r, : d * r] = blk
        L[a, d * r : n_uv, d * r : n_uv] = blk
    x0 = np.asarray(approx.mean, dtype=float)
    T0 = L @ x0  # (m, P) the tangents at the mode
    q, _ = np.linalg.qr(T0[:, :n_uv].T, mode="complete")
    B = np.zeros((P, P - m))
    B[:n_uv, : n_uv - m] = q[:, m:]
    B[n_uv:, n_uv - m :] = np.eye(P - n_uv)
    W = np.einsum("apq,bp->qab", L, T0).reshape(P, m * m)  # G_ab(x) = x . L_a^T t0_b
    H = np.linalg.inv(np.asarray(approx.cov))
    Hs = B.T @ (0.5 * (H + H.T)) @ B
    sl = RotationSlice(jnp.asarray(x0), jnp.asarray(B), jnp.asarray(W))
    return laplace_approx(np.zeros(P - m), Hs), sl


@jax.jit
def slices_to_flat(z: jax.Array, sl: RotationSlice) -> tuple[jax.Array, jax.Array]:
    """Slice coordinates (rows of ``z``) -> model points, and the log Faddeev-Popov
    factor ``log |det G(x)|`` of each (:class:`RotationSlice`)."""
    flat = sl.x0 + z @ sl.B.T
    m = int(round(np.sqrt(sl.W.shape[1])))
    G = (flat @ sl.W).reshape(flat.shape[0], m, m)
    return flat, jnp.linalg.slogdet(G)[1]


def chart_covariance(
    mode: np.ndarray, cov: np.ndarray, chart: SphereChart, radius_sd: float
) -> tuple[np.ndarray, np.ndarray]:
    """A chart's mode and covariance in the model's flattened coordinates (for NUTS).

    The covariance is pushed through the chart's Jacobian at the mode, and each
    factor's radial direction gets the spread of the model's radius prior
    (``radius_sd`` relative to ``sqrt(d)``), which the chart does not see.
    """
    flat, J = (np.asarray(a) for a in _chart_jacobian(jnp.asarray(mode), chart))
    out = J @ np.asarray(cov) @ J.T
    H, d = chart.n_heads, chart.Bu.shape[-2]
    R = np.sqrt(d)
    for h in range(2 * H):  # U_1..U_H, then V_1..V_H
        block = slice(h * d, (h + 1) * d)
        w = flat[block] / R
        out[block, block] += (radius_sd * R) ** 2 * np.outer(w, w)
    return flat, out


def mode_and_hessian(
    model: Callable[..., Any],
    model_args: tuple,
    model_kwargs: dict[str, Any],
    point: dict[str, jax.Array],
    sites: Sequence[str],
    *,
    max_steps: int = 500,
    tol: float = 1e-6,
    chart: SphereChart | None = None,
) -> tuple[np.ndarray, np.ndarray, int, bool, tuple]:
    """Minimise the potential energy of a NumPyro model from ``point`` (BFGS), then its Hessian.

    With a ``chart`` (sites ``U, V, sigma, tau`` of rank 1), the search runs in its
    coordinates, on the potential of the directions (the model's at radius
    ``sqrt(d)`` minus the chart's log Jacobian), from the chart point of ``point``;
    the mode and Hessian returned are in chart coordinates.

    ``tol`` is BFGS's relative and absolute tolerance (Cauchy: on the whitened
    coordinates and the potential).  The mode only centres the proposals of the
    importance and independence samplers, which correct any offset exactly, so it
    need not be exact: on three held-out problems 1e-6 took 14-22 steps where 1e-9
    took 46-70 (0.5-1.3 s more at K = 96-192), with the same Pareto k and effective
    size.

    ``model`` must be a stable, hashable callable (a function, or a cached
    ``functools.partial``): it keys the one compiled program, and the data in
    ``model_args``/``model_kwargs`` are its arguments.

    Returns
    -------
    mode : (P,) array, the flattened unconstrained sites (or chart coordinates) at the
        minimum found.
    hessian : (P, P) array, the Hessian of the potential there.
    n_steps : int, BFGS steps.
    ok : bool, whether BFGS reported success.
    layout : the layout of the flattened sites (see :func:`unravel`).
    """
    flat0, layout = flatten(point, sites)
    rest = {k: v for k, v in point.items() if k not in sites}
    if chart is not None:
        flat0 = jnp.asarray(chart_point(np.asarray(flat0), chart))
    x, H, n, ok = _mode_and_hessian(
        flat0,
        rest,
        model_args,
        model_kwargs,
        chart,
        model=model,
        layout=layout,
        max_steps=max_steps,
        tol=tol,
    )
    return np.asarray(x), np.asarray(H), int(n), bool(ok), layout


def _mode_and_hessian(
    flat0, rest, model_args, model_kwargs, chart, *, model, layout, max_steps, tol
):
    # BFGS in coordinates whitened by the Hessian at the start (x = x0 + T z,
    # T^T H0 T = I up to the eigenvalue floor): the angular directions of the
    # factors are ~1e3 times stiffer than the others, which took BFGS from an
    # identity start ~230 steps at d = 5; whitened, it needs a few tens.  The
    # Hessian is one compiled program called twice (inlined twice into one
    # program, it doubled the compile time of the Laplace step, ~12 s at d = 1).
    args = (rest, model_args, model_kwargs, chart)
    H0 = _hessian(flat0, *args, model=model, layout=layout)
    x, n, ok = _bfgs(flat0, H0, *args, model=model, layout=layout, max_steps=max_steps, tol=tol)
    return x, _hessian(x, *args, model=model, layout=layout), n, ok


def _potential(flat, rest, model_args, model_kwargs, chart, model, layout):
    """The potential energy at flattened sites (or chart coordinates, less the log Jacobian)."""
    from numpyro.infer.util import potential_energy

    if chart is None:
        return potential_energy(model, model_args, model_kwargs, unravel(flat, layout, rest))
    point = unravel(chart_to_flat(flat, chart), layout, rest)
    return potential_energy(model, model_args, model_kwargs, point) - chart_log_jacobian(
        flat, chart
    )


@partial(jax.jit, static_argnames=("model", "layout"))
def _hessian(flat, rest, model_args, model_kwargs, chart, *, model, layout):
    def pe(f):
        return _potential(f, rest, model_args, model_kwargs, chart, model, layout)

    return jax.hessian(pe)(flat)


def potential_hessian(
    flat, model, model_args: tuple, model_kwargs: dict, layout: tuple, *,
    chart: SphereChart | None = None,
) -> np.ndarray:  # fmt: skip
    """The Hessian of the potential at flattened sites (or chart coordinates, with
    ``chart``): :func:`mode_and_hessian`'s compiled program."""
    H = _hessian(jnp.asarray(flat), {}, model_args, model_kwargs, chart, model=model, layout=layout)
    return np.asarray(H)


def search_mode(
    flat0, hessian, model, model_args: tuple, model_kwargs: dict, layout: tuple, *,
    chart: SphereChart | None = None, max_steps: int = 500, tol: float = 1e-6,
) -> tuple[np.ndarray, int, bool]:  # fmt: skip
    """:func:`mode_and_hessian`'s search without the Hessian at its end: BFGS from
    ``flat0`` (flattened sites, or chart coordinates with ``chart``) whitened by
    ``hessian`` (e.g. a mode's and Hessian on other data), or by the Hessian at
    ``flat0`` when it is None (then the search is :func:`mode_and_hessian`'s, step
    for step).  Returns the mode found, the number of steps and whether BFGS
    reported success."""
    args = ({}, model_args, model_kwargs, chart)
    flat0 = jnp.asarray(flat0)
    if hessian is None:
        hessian = _hessian(flat0, *args, model=model, layout=layout)
    x, n, ok = _bfgs(
        flat0, jnp.asarray(hessian), *args, model=model, layout=layout, max_steps=max_steps,
        tol=tol,
    )  # fmt: skip
    return np.asarray(x), int(n), bool(ok)


@partial(jax.jit, static_argnames=("model", "layout", "max_steps", "tol"))
def _bfgs(flat0, H0, rest, model_args, model_kwargs, chart, *, model, layout, max_steps, tol):
    def pe(flat):
        return _potential(flat, rest, model_args, model_kwargs, chart, model, layout)

    w, Q = jnp.linalg.eigh(H0)
    w = jnp.abs(w)
    T = Q / jnp.sqrt(jnp.maximum(w, 1e-6 * jnp.max(w)))
    sol = optx.minimise(
        lambda z, _: pe(flat0 + T @ z),
        optx.BFGS(rtol=tol, atol=tol),
        jnp.zeros_like(flat0),
        max_steps=max_steps,
        throw=False,
    )
    x = flat0 + T @ sol.value
    return x, sol.stats["num_steps"], (sol.result == optx.RESULTS.successful)


def laplace_approx(mode: np.ndarray, hessian: np.ndarray, floor: float = 1e-6) -> LaplaceApprox:
    """``N(mode, H^{-1})`` with the eigenvalues of ``H`` made positive and floored.

    Raises ``FloatingPointError`` when the Hessian is not finite.
    """
    H = np.asarray(hessian, dtype=float)
    if not np.all(np.isfinite(H)):
        raise FloatingPointError("the Hessian at the mode is not finite")
    w, Q = np.linalg.eigh(0.5 * (H + H.T))
    w = np.maximum(np.abs(w), floor * np.abs(w).max())
    cov = (Q / w) @ Q.T
    return LaplaceApprox(np.asarray(mode, dtype=float), cov, np.linalg.cholesky(cov))


def widened(approx: LaplaceApprox, idx, factor: float) -> LaplaceApprox:
    """``approx`` with its spread along coordinates ``idx`` multiplied by ``factor``.

    The deviations from the mode are scaled by ``T = diag(1, ..., factor, ...)``: the
    covariance becomes ``T cov T`` and the Cholesky factor ``T chol`` (still lower
    triangular), so the correlations are kept.
    """
    T = np.ones(approx.mean.shape[0])
    T[np.asarray(idx)] = factor
    return LaplaceApprox(approx.mean, T[:, None] * approx.cov * T, T[:, None] * approx.chol)


def mvt_sample(key: jax.Array, approx: LaplaceApprox, df: float, n: int) -> jax.Array:
    """``n`` draws of the multivariate Student-t ``t_df(mean, cov)``: (n, P).

    ``df = inf`` gives the Gaussian.
    """
    return _mvt_sample(key, approx.mean, approx.chol, float(df), int(n))


# An integer df (the samplers' default, max(8, 2P)) up to this many: the chi-square
# mixing variable as a sum of df squared normals, the same law as the gamma draw, whose
# rejection loop takes XLA:CPU ~2-3 s to compile (each new n and df, every process)
# against ~0.5 s.  Above it, or for a df that is not an integer: the gamma draw.
CHI2_BY_NORMALS_MAX_DF = 1024


# Compiled once per shape (run eagerly, each was ~15 small programs that every new
# process traces and lowers again).
@partial(jax.jit, static_argnames=("df", "n"))
def _mvt_sample(key, mean, chol, df: float, n: int) -> jax.Array:
    kz, kg = jax.random.split(key)
    P = mean.shape[0]
    z = jax.random.normal(kz, (n, P), dtype=jnp.float64)
    if np.isfinite(df):
        if float(df).is_integer() and df <= CHI2_BY_NORMALS_MAX_DF:
            e = jax.random.normal(kg, (n, int(df)), dtype=jnp.float64)
            g = jnp.sum(e * e, axis=1) / df  # chi-square(df) / df
        else:
            g = jax.random.gamma(kg, df / 2.0, (n,), dtype=jnp.float64) / (df / 2.0)
        z = z / jnp.sqrt(g)[:, None]
    return mean + z @ chol.T


def mvt_logpdf(x: jax.Array, approx: LaplaceApprox, df: float) -> jax.Array:
    """Log density of ``t_df(mean, cov)`` at the rows of ``x``: (n,)."""
    return _mvt_logpdf(x, approx.mean, approx.chol, float(df))


@partial(jax.jit, static_argnames=("df",))
def _mvt_logpdf(x, mean, L, df: float) -> jax.Array:
    P = mean.shape[0]
    z = jax.scipy.linalg.solve_triangular(L, (x - mean).T, lower=True)
    q = jnp.sum(z**2, axis=0)
    half_logdet = jnp.sum(jnp.log(jnp.diag(L)))
    if not np.isfinite(df):
        return -0.5 * q - half_logdet - 0.5 * P * jnp.log(2 * jnp.pi)
    return (
        gammaln((df + P) / 2)
        - gammaln(df / 2)
        - 0.5 * P * jnp.log(df * jnp.pi)
        - half_logdet
        - 0.5 * (df + P) * jnp.log1p(q / df)
    )


@jax.jit
def imh_chains(key: jax.Array, log_w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Independence Metropolis-Hastings on precomputed proposals.

    Parameters
    ----------
    key : PRNG key
    log_w : (C, T) array
        ``log p - log q`` of each chain's proposals, in the order they are offered
        (``-inf`` for a proposal of zero posterior density or a failed evaluation).
        Each chain starts at its first proposal.

    Returns
    -------
    index : (C, T) int array, the proposal each chain holds after step t.
    accepted : (C, T) bool array (step 0 counts as accepted).
    """
    C, T = log_w.shape
    log_u = jnp.log(jax.random.uniform(key, (C, T), dtype=log_w.dtype))
    log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)

    def step(carry, t):
        cur, cur_lw = carry
        prop_lw = log_w[:, t]
        better = jnp.isneginf(cur_lw) | (log_u[:, t] < prop_lw - cur_lw)
        acc = (t == 0) | (~jnp.isneginf(prop_lw) & better)
        cur = jnp.where(acc, t, cur)
        cur_lw = jnp.where(acc, prop_lw, cur_lw)
        return (cur, cur_lw), (cur, acc)

    init = (jnp.zeros((C,), jnp.int_), jnp.full((C,), -jnp.inf, log_w.dtype))
    _, (idx, acc) = jax.lax.scan(step, init, jnp.arange(T, dtype=jnp.int_))
    return idx.T, acc.T
