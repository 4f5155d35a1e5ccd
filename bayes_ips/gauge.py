"""The scale gauge of the factors: ``A = U V^T / ||U V^T||_F`` (pure ``jnp``).

Only the pairwise interaction ``g(x, y) = phi(x^T A y)`` is identifiable: ``(c A,
phi(. / c))`` gives the same ``g``.  Both estimators remove this scale ridge by
working with the unit-norm ``A``: ERM (:mod:`bayes_ips.erm`) parameterises its fit
by it, and the Bayesian model (:mod:`bayes_ips.models.lowrank_spline`) samples raw
factors and maps them to it.  The norm is computed from the ``r x r`` Gram
matrices of the factors, ``||U V^T||_F^2 = sum((U^T U) * (V^T V))``, without ever
forming the ``d x d`` matrix.

The sign rule (largest-magnitude entry of ``A`` positive), applied to a fitted
``A`` once, is :func:`bayes_ips.simulate.gauge_fix`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["factor_norm", "gauge_factors"]


def factor_norm(U: ArrayLike, V: ArrayLike) -> jax.Array:
    """``||U V^T||_F``, from the ``r x r`` Gram matrices of the factors.

    Parameters
    ----------
    U, V : (d, r) arrays

    Returns
    -------
    () array

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> float(factor_norm(jnp.array([[3.0]]), jnp.array([[4.0]])))
    12.0
    """
    U, V = jnp.asarray(U), jnp.asarray(V)
    return jnp.sqrt(jnp.sum((U.T @ U) * (V.T @ V)))


def gauge_factors(U: ArrayLike, V: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Factors of the gauge-fixed ``A = U V^T / ||U V^T||_F``: ``(U / ||U V^T||_F, V)``.

    Parameters
    ----------
    U, V : (d, r) arrays
        Raw factors, ``U V^T != 0``.

    Returns
    -------
    Un : (d, r) array
        ``U`` scaled so that ``||Un V^T||_F = 1``.
    V : (d, r) array
        ``V`` unchanged.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> Un, Vn = gauge_factors(jnp.array([[3.0]]), jnp.array([[4.0]]))
    >>> float(Un[0, 0]), float((Un @ Vn.T)[0, 0])
    (0.25, 1.0)
    """
    U, V = jnp.asarray(U), jnp.asarray(V)
    return U / factor_norm(U, V), V
