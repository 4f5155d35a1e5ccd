"""The linear-Gaussian algebra of the spline coefficients (pure math, no NumPyro).

Given ``A`` the model is ``Y = F(A) c + eta`` with ``eta ~ N(0, sigma^2 I_n)``.  Under
the P-spline prior ``c ~ N(0, Q^{-1})``,

    Q(tau) = D^T D / tau^2 + I / kappa^2,

(``D`` the matrix of second differences; the weak ridge ``1/kappa^2`` makes the prior
proper on the constants and linear trends that ``D`` does not see), ``c`` can be
integrated out exactly.  With ``G = F^T F``, ``b = F^T Y`` and ``H = G + sigma^2 Q``
(K x K, K = number of basis functions)

    log p(Y | A, sigma, tau) = -1/2 [ (Y^T Y - b^T H^{-1} b) / sigma^2
                                      + 2 (n - K) log sigma + log|H| - log|Q|
                                      + n log(2 pi) ]

by Woodbury and the matrix determinant lemma, and

    c | Y, A, sigma, tau ~ N(H^{-1} b, sigma^2 H^{-1}).

Only the Gram statistics of :func:`bayes_ips.pairwise.gram` are needed, so the cost
per evaluation is one chunked pass over the data plus a K x K Cholesky.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bayes_ips.pairwise import GramStats

__all__ = [
    "ConditionalC",
    "collapsed_loglik",
    "conditional_c",
    "difference_matrix",
    "pspline_precision",
    "sample_conditional_c",
]


def difference_matrix(n: int, order: int = 2) -> jax.Array:
    """``(n - order, n)`` matrix of ``order``-th differences."""
    D = jnp.eye(n)
    for _ in range(order):
        D = D[1:] - D[:-1]
    return D


def pspline_precision(n: int, tau: ArrayLike, kappa: float, order: int = 2) -> jax.Array:
    """``Q = D^T D / tau^2 + I / kappa^2`` of shape (n, n)."""
    D = difference_matrix(n, order)
    return D.T @ D / jnp.asarray(tau) ** 2 + jnp.eye(n) / kappa**2


class ConditionalC(NamedTuple):
    """``c | rest ~ N(mean, sigma^2 H^{-1})``; ``chol`` is the Cholesky factor of ``H``."""

    mean: jax.Array
    chol: jax.Array
    sigma: jax.Array


def _chol(H: jax.Array) -> jax.Array:
    return jnp.linalg.cholesky(0.5 * (H + H.T))


def collapsed_loglik(stats: GramStats, sigma: ArrayLike, Q: ArrayLike) -> jax.Array:
    """``log p(Y | A, sigma, tau)`` with ``c ~ N(0, Q^{-1})`` integrated out.

    Parameters
    ----------
    stats : GramStats
        ``F^T F``, ``F^T Y``, ``Y^T Y`` and ``n_obs`` at the current ``A``.
    sigma : () array
    Q : (K, K) array, the prior precision of ``c``.

    Returns
    -------
    () array
    """
    sigma = jnp.asarray(sigma)
    Q = jnp.asarray(Q)
    K = Q.shape[0]
    n = stats.n_obs
    s2 = sigma**2
    L = _chol(stats.FtF + s2 * Q)
    alpha = jax.scipy.linalg.solve_triangular(L, stats.FtY, lower=True)
    quad = (stats.YtY - alpha @ alpha) / s2
    logdet_H = 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
    logdet_Q = 2.0 * jnp.sum(jnp.log(jnp.diag(_chol(Q))))
    logdet = 2.0 * (n - K) * jnp.log(sigma) + logdet_H - logdet_Q
    return -0.5 * (quad + logdet + n * math.log(2.0 * math.pi))


def conditional_c(stats: GramStats, sigma: ArrayLike, Q: ArrayLike) -> ConditionalC:
    """The exact Gaussian conditional of ``c`` given ``A, sigma, tau`` and the data."""
    sigma = jnp.asarray(sigma)
    L = _chol(stats.FtF + sigma**2 * jnp.asarray(Q))
    mean = jax.scipy.linalg.cho_solve((L, True), stats.FtY)
    return ConditionalC(mean, L, sigma)


def sample_conditional_c(key: jax.Array, cond: ConditionalC) -> jax.Array:
    """One draw ``c = mean + sigma L^{-T} z`` with ``z ~ N(0, I)``."""
    z = jax.random.normal(key, cond.mean.shape, cond.mean.dtype)
    return cond.mean + cond.sigma * jax.scipy.linalg.solve_triangular(
        cond.chol.T, z, lower=False
    )
