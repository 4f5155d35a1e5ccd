"""The attention predictors of single-location regression, ``T(X) = sum_l w_l(X) <x_l, v>``.

With the scores ``s_l = <x_l, k>``, three token weightings are supported
(:data:`ATTENTIONS`):

* ``erf`` (the paper's eq. (2), the default): ``w_l = erf(lambda s_l)``;
* ``softmax``: ``w_l = softmax_l(lambda s_l)``, computed in log space
  (``exp(log_softmax)``: scores of hundreds of nats, as at d = 400, neither
  overflow nor give NaN);
* ``linear``: ``w_l = lambda s_l``, so ``T(X) = lambda sum_l <x_l, k> <x_l, v>``.

The predictor exists once, here (:func:`attend`): the PGD loss, the NumPyro
likelihood and every prediction call it.  Which sign and exchange symmetries of
``(k, v)`` each attention has is recorded in :mod:`bayes_ips.single_location.sphere`.
At ``gamma = 1`` softmax attention at ``(k*, v*, sqrt(d/2))`` is the Bayes predictor
(:mod:`bayes_ips.single_location.bayes`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf
from jax.typing import ArrayLike

from bayes_ips.errors import InputError

__all__ = [
    "ATTENTIONS",
    "LAMBDA_GRIDS",
    "attend",
    "attend_draws",
    "check_attention",
    "erf_attention",
    "erf_attention_draws",
    "profile_lambda",
    "profile_lambda_scores",
    "sq_loss",
    "token_weights",
]

ATTENTIONS = ("erf", "softmax", "linear")
# Log grids (lo, hi, points) of the profile fit of lambda, ratio 1.12 between points.
# Softmax needs larger lambda: at gamma = 1 its best value is sqrt(d/2) (14 at d = 400).
LAMBDA_GRIDS = {"erf": (1e-3, 1e1, 81), "softmax": (1e-2, 1e2, 81), "linear": (1e-3, 1e1, 81)}


def check_attention(attention: str) -> str:
    """``attention`` if it names a predictor, else a one-line :class:`InputError`."""
    if attention not in ATTENTIONS:
        raise InputError(f"unknown attention {attention!r}; choose from {', '.join(ATTENTIONS)}")
    return attention


def token_weights(S: jax.Array, lam: ArrayLike, attention: str = "erf", axis: int = -1):
    """The weights ``w_l`` of the tokens given their scores ``S`` (tokens along ``axis``)."""
    if attention == "erf":
        return erf(lam * S)
    if attention == "softmax":
        return jnp.exp(jax.nn.log_softmax(lam * S, axis=axis))
    if attention == "linear":
        return lam * S
    check_attention(attention)  # raises


@functools.partial(jax.jit, static_argnames=("attention",))
def attend(
    X: ArrayLike, k: ArrayLike, v: ArrayLike, lam: ArrayLike, attention: str = "erf"
) -> jax.Array:
    """``T(X) = sum_l w_l <x_l, v>`` with the weights of ``attention`` on ``<x_l, k>``.

    Parameters
    ----------
    X : (..., L, d) array
    k, v : (d,) arrays (unit vectors in the model; not normalised here)
    lam : scalar
    attention : {"erf", "softmax", "linear"}

    Returns
    -------
    (...) array

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> X = jnp.array([[1.0, 0.0], [0.0, 2.0]])  # L = 2 tokens in d = 2: erf(1) * 1 + erf(0) * 0
    >>> e1 = jnp.array([1.0, 0.0])
    >>> round(float(attend(X, e1, e1, 1.0)), 6)
    0.842701
    >>> round(float(attend(X, e1, e1, 1.0, "softmax")), 6)  # e / (e + 1) * 1
    0.731059
    >>> round(float(attend(X, e1, e1, 0.5, "linear")), 6)  # 0.5 * 1 * 1
    0.5
    """
    X = jnp.asarray(X)
    return jnp.sum(token_weights(X @ k, lam, attention) * (X @ v), axis=-1)


def erf_attention(X: ArrayLike, k: ArrayLike, v: ArrayLike, lam: ArrayLike) -> jax.Array:
    """``T(X) = sum_l erf(lam <x_l, k>) <x_l, v>``: :func:`attend` with ``attention="erf"``."""
    return attend(X, k, v, lam, "erf")


@functools.partial(jax.jit, static_argnames=("attention",))
def sq_loss(
    X: ArrayLike, Y: ArrayLike, k: ArrayLike, v: ArrayLike, lam: ArrayLike, attention: str = "erf"
) -> jax.Array:
    """Empirical squared risk ``mean_m (Y_m - T(X_m))^2`` for ``X`` (M, L, d), ``Y`` (M,)."""
    return jnp.mean((jnp.asarray(Y) - attend(X, k, v, lam, attention)) ** 2)


@functools.partial(jax.jit, static_argnames=("attention",))
def attend_draws(
    X: ArrayLike, K: ArrayLike, V: ArrayLike, lam: ArrayLike, attention: str = "erf"
) -> jax.Array:
    """``T`` for many parameter draws at once (two matrix products, no loop over draws).

    Parameters
    ----------
    X : (M, L, d) array
    K, V : (S, d) arrays of draws
    lam : (S,) array
    attention : {"erf", "softmax", "linear"}

    Returns
    -------
    (M, S) array, ``T_s(X_m)``
    """
    X = jnp.asarray(X)
    S = jnp.einsum("mld,sd->mls", X, K)
    U = jnp.einsum("mld,sd->mls", X, V)
    return jnp.sum(token_weights(S, lam, attention, axis=1) * U, axis=1)


def erf_attention_draws(X: ArrayLike, K: ArrayLike, V: ArrayLike, lam: ArrayLike) -> jax.Array:
    """:func:`attend_draws` with ``attention="erf"``."""
    return attend_draws(X, K, V, lam, "erf")


@functools.partial(jax.jit, static_argnames=("attention",))
def _grid_losses(S, U, Y, grid, attention):
    def loss(lam):
        return jnp.mean((Y - jnp.sum(token_weights(S, lam, attention) * U, -1)) ** 2)

    return jax.vmap(loss)(grid)


def profile_lambda(
    X: ArrayLike, Y: ArrayLike, k: ArrayLike, v: ArrayLike, attention: str = "erf"
) -> float:
    """The lambda that minimises ``mean (Y - T_lambda(X))^2`` at fixed ``(k, v)``.

    Two log-spaced grids: 81 points on :data:`LAMBDA_GRIDS` of the attention
    (``[1e-3, 10]`` for erf and linear, ``[1e-2, 100]`` for softmax), then 41 points
    between the neighbours of the best (relative resolution ~0.6%).  With ``Y`` the
    Bayes predictor's values this is the excess-risk-optimal lambda.
    """
    X = jnp.asarray(X)
    return profile_lambda_scores(X @ jnp.asarray(k), X @ jnp.asarray(v), Y, attention)


def profile_lambda_scores(
    S: ArrayLike, U: ArrayLike, Y: ArrayLike, attention: str = "erf"
) -> float:
    """:func:`profile_lambda` from the scores ``S = X k`` and values ``U = X v``: (M, L) each."""
    check_attention(attention)
    S, U, Y = jnp.asarray(S), jnp.asarray(U), jnp.asarray(Y)
    lo, hi, n = LAMBDA_GRIDS[attention]
    grid = np.geomspace(lo, hi, n)
    i = int(np.argmin(np.asarray(_grid_losses(S, U, Y, jnp.asarray(grid), attention))))
    fine = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, n - 1)], 41)
    j = int(np.argmin(np.asarray(_grid_losses(S, U, Y, jnp.asarray(fine), attention))))
    return float(fine[j])
