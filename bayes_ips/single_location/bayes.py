"""The Bayes-optimal predictor ``E[Y | X]`` of single-location regression, in closed form.

Given ``X``, only the latent position ``J0`` is unknown.  Its posterior is a
softmax: the tokens are independent given ``J0``, so

    P(J0 = l | X) ∝ N(x_l; mu, gamma^2 I) / N(x_l; 0, I),       mu = sqrt(d/2) k*,

and, dropping the terms common to every ``l``, the log-odds are

    s_l = <x_l, mu> / gamma^2 + ||x_l||^2 (1 - 1/gamma^2) / 2.

They grow like ``d`` (``||mu||^2 = d/2``), so the weights are computed by a
log-sum-exp softmax.  With ``a_l = <x_l, v*>`` and ``w = softmax(s)``:

    E[Y | X]   = sum_l w_l a_l
    Var(Y | X) = eps^2 + sum_l w_l (a_l - E[Y | X])^2,

the last being the conditional risk of the Bayes predictor (its expectation is
the Bayes risk).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bayes_ips.single_location.simulate import SLRTruth

__all__ = ["bayes_conditional_variance", "bayes_predict", "position_log_posterior"]


@jax.jit
def _log_posterior(X: jax.Array, mu: jax.Array, gamma: float) -> jax.Array:
    s = X @ mu / gamma**2 + 0.5 * (1.0 - 1.0 / gamma**2) * jnp.sum(X**2, axis=-1)
    return jax.nn.log_softmax(s, axis=-1)


def position_log_posterior(truth: SLRTruth, X: ArrayLike) -> jax.Array:
    """``log P(J0 = l | X)`` for ``X`` (..., L, d): (..., L)."""
    return _log_posterior(jnp.asarray(X), jnp.asarray(truth.mu), truth.gamma)


@jax.jit
def _moments(X: jax.Array, mu: jax.Array, v: jax.Array, gamma: float, eps: float):
    w = jnp.exp(_log_posterior(X, mu, gamma))
    a = X @ v
    mean = jnp.sum(w * a, axis=-1)
    var = eps**2 + jnp.sum(w * (a - mean[..., None]) ** 2, axis=-1)
    return mean, var


def bayes_predict(truth: SLRTruth, X: ArrayLike) -> jax.Array:
    """``E[Y | X]`` for ``X`` (..., L, d): (...)."""
    X = jnp.asarray(X)
    return _moments(X, jnp.asarray(truth.mu), jnp.asarray(truth.v), truth.gamma, truth.noise_sd)[0]


def bayes_conditional_variance(truth: SLRTruth, X: ArrayLike) -> jax.Array:
    """``Var(Y | X)``, the conditional risk of the Bayes predictor, for ``X`` (..., L, d): (...)."""
    X = jnp.asarray(X)
    return _moments(X, jnp.asarray(truth.mu), jnp.asarray(truth.v), truth.gamma, truth.noise_sd)[1]
