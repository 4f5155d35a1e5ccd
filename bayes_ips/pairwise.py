"""The one pairwise kernel of the attention-style IPS model.

For samples ``X`` of shape ``(M, N, d)`` and factors ``U, V`` of shape ``(d, r)``
(``A = U V^T``) the scores are ``S[m, i, j] = X[m, i]^T A X[m, j]``.  With a spline
``phi_c = sum_k c_k B_k`` this module computes

* the pairwise means ``(F(A) c)[m, i] = 1/(N-1) sum_{j != i} phi_c(S[m, i, j])``
  (:func:`pairwise_mean`), and the residual sum of squares built on them
  (:func:`sq_loss`);
* the design tensor ``F(A)[m, i, k] = 1/(N-1) sum_{j != i} B_k(S[m, i, j])``
  (:func:`design`, for small ``M``);
* the sufficient statistics of the linear-in-``c`` model, ``F^T F``, ``F^T Y``,
  ``Y^T Y`` (:func:`gram`), accumulated chunk by chunk over ``M`` without ever
  holding ``F`` whole.

Everything goes through one chunk-level routine per reduction, uses local
support (each score touches ``s + 1`` basis functions; no ``(M, N, N, K)`` array is
ever built) and is differentiable in ``U``, ``V`` and ``c``.  Reductions over
``M`` run in a ``lax.scan`` over chunks of ``chunk_size`` samples whose body is
rematerialised (``jax.checkpoint``), so memory stays bounded for gradients too.
The ERM loss and every NumPyro likelihood of the package call these functions.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bayes_ips.spline import Knots, local_basis, n_basis, spline_eval

__all__ = [
    "DEFAULT_CHUNK",
    "GramStats",
    "design",
    "gram",
    "pair_scores",
    "pairwise_mean",
    "sq_loss",
]

DEFAULT_CHUNK = 2048  # samples per chunk: ~2048*N*N*(s+1) floats live at once


class GramStats(NamedTuple):
    """Sufficient statistics of ``Y = F(A) c + noise``.

    Attributes
    ----------
    FtF : (n_basis, n_basis) array
    FtY : (n_basis,) array
    YtY : () array
    n_obs : () array, the number of (sample, token) observations summed.
    n_outside : () int array, the number of ordered pairs ``(i, j)``, ``i != j``,
        whose score lies outside the knot range (extrapolated, never clipped).
    """

    FtF: jax.Array
    FtY: jax.Array
    YtY: jax.Array
    n_obs: jax.Array
    n_outside: jax.Array


def pair_scores(X: ArrayLike, U: ArrayLike, V: ArrayLike) -> jax.Array:
    """Scores ``S[..., i, j] = x_i^T U V^T x_j``.

    Parameters
    ----------
    X : (..., N, d) array
    U, V : (d, r) arrays

    Returns
    -------
    (..., N, N) array
    """
    P = jnp.matmul(X, U)
    Q = jnp.matmul(X, V)
    return jnp.matmul(P, jnp.swapaxes(Q, -1, -2))


def _offdiag(n: int, dtype) -> jax.Array:
    return (1.0 - jnp.eye(n, dtype=dtype)) / (n - 1)


def _chunk_mean(U, V, coef, Xc, knots):
    """(c, N) pairwise means of one chunk."""
    S = pair_scores(Xc, U, V)
    phi = spline_eval(S, coef, knots)
    return jnp.sum(phi * _offdiag(Xc.shape[-2], phi.dtype), axis=-1)


def _chunk_design(U, V, Xc, knots):
    """(c * N, n_basis) design rows of one chunk, by a local-support scatter."""
    c, N, _ = Xc.shape
    s = knots.degree
    S = pair_scores(Xc, U, V)
    first, vals = local_basis(S, knots)  # (c, N, N), (c, N, N, s+1)
    vals = vals * _offdiag(N, vals.dtype)[..., None]
    rows = jnp.broadcast_to(jnp.arange(c * N).reshape(c, N, 1, 1), vals.shape)
    cols = first[..., None] + jnp.arange(s + 1)
    F = jnp.zeros((c * N, n_basis(knots)), dtype=vals.dtype)
    F = F.at[rows, cols].add(vals)
    outside = (S < knots.breaks[0]) | (S > knots.breaks[-1])
    n_out = jnp.sum(outside & (_offdiag(N, S.dtype) > 0), axis=(-1, -2))
    return F, n_out


def _split(X, Y, chunk_size):
    """Pad ``M`` to a multiple of ``chunk_size`` and reshape into chunks, with a mask."""
    M = X.shape[0]
    n = -(-M // chunk_size)
    pad = n * chunk_size - M
    mask = jnp.ones((M,), dtype=X.dtype)
    if pad:
        X = jnp.concatenate([X, jnp.zeros((pad,) + X.shape[1:], X.dtype)])
        mask = jnp.concatenate([mask, jnp.zeros((pad,), X.dtype)])
        if Y is not None:
            Y = jnp.concatenate([Y, jnp.zeros((pad,) + Y.shape[1:], Y.dtype)])
    Xs = X.reshape((n, chunk_size) + X.shape[1:])
    Ys = None if Y is None else Y.reshape((n, chunk_size) + Y.shape[1:])
    return Xs, Ys, mask.reshape(n, chunk_size)


@partial(jax.jit, static_argnames=("chunk_size",))
def pairwise_mean(
    U: ArrayLike,
    V: ArrayLike,
    coef: ArrayLike,
    X: ArrayLike,
    knots: Knots,
    chunk_size: int = DEFAULT_CHUNK,
) -> jax.Array:
    """Pairwise means ``F(A) c``.

    Parameters
    ----------
    U, V : (d, r) arrays
        Factors of ``A = U V^T``.
    coef : (n_basis,) array
        Spline coefficients ``c``.
    X : (M, N, d) array
    knots : Knots
    chunk_size : int
        Samples per chunk (memory bound); static.

    Returns
    -------
    (M, N) array
        ``1/(N-1) sum_{j != i} phi_c(X_i^T A X_j)``.
    """
    X = jnp.asarray(X)
    M = X.shape[0]
    if M <= chunk_size:
        return _chunk_mean(U, V, coef, X, knots)
    Xs, _, _ = _split(X, None, chunk_size)
    body = jax.checkpoint(lambda Xc: _chunk_mean(U, V, coef, Xc, knots))
    out = jax.lax.map(body, Xs)
    return out.reshape((-1,) + out.shape[2:])[:M]


@partial(jax.jit, static_argnames=("chunk_size",))
def sq_loss(
    U: ArrayLike,
    V: ArrayLike,
    coef: ArrayLike,
    X: ArrayLike,
    Y: ArrayLike,
    knots: Knots,
    chunk_size: int = DEFAULT_CHUNK,
) -> jax.Array:
    """Residual sum of squares ``sum_{m,i} (Y[m,i] - (F(A) c)[m,i])^2``.

    Parameters
    ----------
    U, V : (d, r) arrays
    coef : (n_basis,) array
    X : (M, N, d) array
    Y : (M, N) array
    knots : Knots

    Returns
    -------
    () array
    """
    X = jnp.asarray(X)
    Y = jnp.asarray(Y)
    if X.shape[0] <= chunk_size:
        return jnp.sum((Y - _chunk_mean(U, V, coef, X, knots)) ** 2)
    Xs, Ys, mask = _split(X, Y, chunk_size)

    @jax.checkpoint
    def body(acc, inp):
        Xc, Yc, mc = inp
        r = (Yc - _chunk_mean(U, V, coef, Xc, knots)) * mc[:, None]
        return acc + jnp.sum(r**2), None

    total, _ = jax.lax.scan(body, jnp.zeros((), X.dtype), (Xs, Ys, mask))
    return total


@jax.jit
def design(U: ArrayLike, V: ArrayLike, X: ArrayLike, knots: Knots) -> jax.Array:
    """Design tensor ``F(A)``, built whole: only for small ``M``.

    Parameters
    ----------
    U, V : (d, r) arrays
    X : (M, N, d) array
    knots : Knots

    Returns
    -------
    (M, N, n_basis) array
    """
    X = jnp.asarray(X)
    F, _ = _chunk_design(U, V, X, knots)
    return F.reshape(X.shape[0], X.shape[1], -1)


@partial(jax.jit, static_argnames=("chunk_size",))
def gram(
    U: ArrayLike,
    V: ArrayLike,
    X: ArrayLike,
    Y: ArrayLike,
    knots: Knots,
    chunk_size: int = DEFAULT_CHUNK,
) -> GramStats:
    """Accumulate ``F^T F``, ``F^T Y`` and ``Y^T Y`` over chunks of samples.

    Memory is ``O(chunk_size * N * (N (s+1) + n_basis))`` whatever ``M``.

    Parameters
    ----------
    U, V : (d, r) arrays
    X : (M, N, d) array
    Y : (M, N) array
    knots : Knots
    chunk_size : int

    Returns
    -------
    GramStats
    """
    X = jnp.asarray(X)
    Y = jnp.asarray(Y)
    nb = n_basis(knots)
    chunk_size = min(chunk_size, X.shape[0])
    Xs, Ys, mask = _split(X, Y, chunk_size)
    N = X.shape[1]

    @jax.checkpoint
    def body(acc, inp):
        Xc, Yc, mc = inp
        F, n_out = _chunk_design(U, V, Xc, knots)
        w = jnp.repeat(mc, N)
        Fw = F * w[:, None]
        y = Yc.reshape(-1) * w
        FtF, FtY, YtY, n_obs, n_outside = acc
        return (
            GramStats(
                FtF + Fw.T @ F,
                FtY + Fw.T @ y,
                YtY + y @ y,
                n_obs + jnp.sum(w),
                n_outside + jnp.sum(jnp.where(mc > 0, n_out, 0)).astype(n_outside.dtype),
            ),
            None,
        )

    zero = jnp.zeros((), X.dtype)
    init = GramStats(
        jnp.zeros((nb, nb), X.dtype), jnp.zeros((nb,), X.dtype), zero, zero, jnp.zeros((), jnp.int_)
    )
    out, _ = jax.lax.scan(body, init, (Xs, Ys, mask))
    return out
