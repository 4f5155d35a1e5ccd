"""The attention predictor ``T(X) = sum_l erf(lambda <x_l, k>) <x_l, v>`` (the paper's eq. (2)).

It exists once, here: the PGD loss, the NumPyro likelihood and every prediction
call it.  ``erf`` is odd, so ``(k, v) -> (-k, -v)`` leaves ``T`` unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import erf
from jax.typing import ArrayLike

__all__ = ["erf_attention", "erf_attention_draws", "sq_loss"]


@jax.jit
def erf_attention(X: ArrayLike, k: ArrayLike, v: ArrayLike, lam: ArrayLike) -> jax.Array:
    """``T(X) = sum_l erf(lam <x_l, k>) <x_l, v>``.

    Parameters
    ----------
    X : (..., L, d) array
    k, v : (d,) arrays (unit vectors in the model; not normalised here)
    lam : scalar

    Returns
    -------
    (...) array

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> X = jnp.array([[1.0, 0.0], [0.0, 2.0]])  # L = 2 tokens in d = 2: erf(1) * 1 + erf(0) * 0
    >>> round(float(erf_attention(X, jnp.array([1.0, 0.0]), jnp.array([1.0, 0.0]), 1.0)), 6)
    0.842701
    """
    X = jnp.asarray(X)
    return jnp.sum(erf(lam * (X @ k)) * (X @ v), axis=-1)


@jax.jit
def sq_loss(X: ArrayLike, Y: ArrayLike, k: ArrayLike, v: ArrayLike, lam: ArrayLike) -> jax.Array:
    """Empirical squared risk ``mean_m (Y_m - T(X_m))^2`` for ``X`` (M, L, d), ``Y`` (M,)."""
    return jnp.mean((jnp.asarray(Y) - erf_attention(X, k, v, lam)) ** 2)


@jax.jit
def erf_attention_draws(X: ArrayLike, K: ArrayLike, V: ArrayLike, lam: ArrayLike) -> jax.Array:
    """``T`` for many parameter draws at once (two matrix products, no loop over draws).

    Parameters
    ----------
    X : (M, L, d) array
    K, V : (S, d) arrays of draws
    lam : (S,) array

    Returns
    -------
    (M, S) array, ``T_s(X_m)``
    """
    X = jnp.asarray(X)
    S = jnp.einsum("mld,sd->mls", X, K)
    U = jnp.einsum("mld,sd->mls", X, V)
    return jnp.sum(erf(S * lam) * U, axis=1)
