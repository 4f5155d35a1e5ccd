"""The linear-Gaussian algebra of the spline coefficients (pure math, no NumPyro).

Given ``A`` the model is ``Y = F(A) c + eta`` with ``eta ~ N(0, sigma^2 I_n)``.  Under
the P-spline prior ``c ~ N(0, Q^{-1})``,

    Q(tau) = D^T D / tau^2 + I / kappa^2,

``c`` can be integrated out exactly.  ``D`` (:func:`curvature_penalty`) holds
weighted second *divided* differences of the coefficients at the Greville
abscissae, so that ``c^T D^T D c`` approximates ``int phi''(z)^2 dz`` in standardised
score units and vanishes on linear functions even for the non-uniform (quantile)
knots the package uses: plain second differences would penalise a linear phi
there and bias the posterior.  The weak ridge ``1/kappa^2`` makes the prior proper
on the constants and linear trends that ``D`` does not see.

With ``G = F^T F``, ``b = F^T Y`` and ``H = G + sigma^2 Q`` (K x K, K = number of
basis functions)

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
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.pairwise import GramStats
from bayes_ips.spline import Knots, host_knot_vector, n_basis

__all__ = [
    "ConditionalC",
    "collapsed_loglik",
    "conditional_c",
    "curvature_penalty",
    "difference_penalty",
    "greville",
    "pspline_precision",
    "sample_conditional_c",
]


def greville(knots: Knots) -> np.ndarray:
    """Greville abscissae ``xi_k = mean(t_{k+1}, ..., t_{k+s})``: (n_basis,)."""
    # on the host, for every candidate basis (JAX's eager dispatch cost ~8 ms a call)
    s, t = knots.degree, host_knot_vector(knots)
    nb = n_basis(knots)
    if s == 0:
        return 0.5 * (t[:-1] + t[1:])[:nb]
    return np.lib.stride_tricks.sliding_window_view(t[1:], s)[:nb].mean(axis=1)


def curvature_penalty(knots: Knots, scale: float) -> np.ndarray:
    """``(n_basis - 2, n_basis)`` matrix ``D`` with ``||D c||^2 ~ int phi''(z)^2 dz``.

    Second divided differences of ``c`` at the Greville abscissae (in units of
    ``scale``, the score standard deviation), weighted by the square root of the
    local spacing.  Exactly zero on linear functions.  Repeated Greville points
    (knot multiplicity > 1) are separated by a tiny spacing.
    """
    return difference_penalty(knots, scale, 2)


def difference_penalty(knots: Knots, scale: float, order: int = 2) -> np.ndarray:
    """``(n_basis - order, n_basis)`` matrix ``D`` with ``||D c||^2 ~ int (phi^(order))^2 dz``.

    ``order = 2``: :func:`curvature_penalty` (zero on linear functions).  ``order = 1``:
    first divided differences at the Greville abscissae weighted by the square root of
    their spacing, ``sum_k (c_{k+1} - c_k)^2 / h_k ~ int phi'(z)^2 dz`` (the random-walk
    prior; zero on constants only), the prior for a phi* rough at every point.
    """
    if order not in (1, 2):
        raise ValueError(f"difference order must be 1 or 2, got {order!r}")
    xi = greville(knots) / scale
    nb = xi.shape[0]
    if nb < order + 1:
        return np.zeros((0, nb))
    h = np.maximum(np.diff(xi), 1e-6 * (xi[-1] - xi[0]))
    D1 = (np.eye(nb)[1:] - np.eye(nb)[:-1]) / h[:, None]  # first divided differences
    if order == 1:
        return D1 * np.sqrt(h)[:, None]
    mid = 0.5 * (h[1:] + h[:-1])
    D2 = (D1[1:] - D1[:-1]) / mid[:, None]
    return D2 * np.sqrt(mid)[:, None]


def pspline_precision(D: ArrayLike, tau: ArrayLike, kappa: float) -> jax.Array:
    """``Q = D^T D / tau^2 + I / kappa^2`` of shape (n_basis, n_basis)."""
    D = jnp.asarray(D)
    return D.T @ D / jnp.asarray(tau) ** 2 + jnp.eye(D.shape[1]) / kappa**2


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
    return cond.mean + cond.sigma * jax.scipy.linalg.solve_triangular(cond.chol.T, z, lower=False)
