"""Posterior predictive draws and the Gaussian log-likelihood per draw, for every model.

Both Bayesian models of the package (the IPS model, :mod:`bayes_ips.inference`, and
single-location regression, :mod:`bayes_ips.single_location.posterior`) have
Gaussian noise ``Y ~ N(mean_s, sigma_s^2)`` around a mean that depends on the draw
``s``.  Their posterior predictive is kept for a thinned, evenly spaced set of
draws (:func:`thin_draws`) so that files stay below :data:`PPC_MAX_VALUES` values,
and the pointwise log-likelihood (:func:`gaussian_loglik`) feeds ArviZ's
``log_likelihood`` group (``az.loo``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["PPC_MAX_VALUES", "gaussian_loglik", "numpy_generator", "predictive_draws", "thin_draws"]

PPC_MAX_VALUES = 20_000_000  # posterior predictive values kept (~160 MB in float64)


def thin_draws(C: int, D: int, n_values: int, max_values: int = PPC_MAX_VALUES) -> np.ndarray:
    """Evenly spaced draw indices whose predictive draws hold at most ``max_values`` values.

    Parameters
    ----------
    C, D : int
        Chains and draws per chain.
    n_values : int
        Values in one predictive draw (``M N`` for the IPS model, ``M`` for
        single-location regression).
    max_values : int

    Returns
    -------
    (D',) int array
        Sorted unique indices in ``0..D-1``, ``1 <= D' <= D``; all draws when they fit.

    Examples
    --------
    >>> thin_draws(2, 5, 10).tolist()
    [0, 1, 2, 3, 4]
    >>> thin_draws(2, 5, 10, max_values=60).tolist()
    [0, 2, 4]
    """
    keep = max(1, min(D, max_values // max(C * n_values, 1)))
    return np.unique(np.linspace(0, D - 1, keep).round().astype(int))


def _per_draw(sigma: np.ndarray, ndim: int) -> np.ndarray:
    """``sigma`` (C, D) with trailing axes added up to ``ndim`` axes."""
    return sigma.reshape(sigma.shape + (1,) * (ndim - sigma.ndim))


def numpy_generator(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded by a JAX PRNG key (four 32-bit words drawn from it).

    For large arrays of plain draws: NumPy's PCG64 fills millions of normals without
    a compiled program per shape (``jax.random.normal`` compiles one for every new
    shape, ~10 s for the first (4, 250, 1200, 8) draw on 2 loaded cores).
    """
    words = np.asarray(jax.random.bits(key, (4,), dtype=jnp.uint32))
    return np.random.default_rng([int(w) for w in words])


def predictive_draws(
    key: jax.Array, mean: ArrayLike, sigma: ArrayLike, draw_index: ArrayLike
) -> np.ndarray:
    """Posterior predictive ``Y_rep = mean + sigma * noise`` for the draws ``draw_index``.

    Parameters
    ----------
    key : PRNG key
        Seeds the standard normal noise, shape ``(C, D') + obs_shape``
        (:func:`numpy_generator`).
    mean : (C, D, *obs_shape) array
        The mean of ``Y`` per draw.
    sigma : (C, D) array
        The noise sd per draw.
    draw_index : (D',) int array
        From :func:`thin_draws`.

    Returns
    -------
    (C, D', *obs_shape) array
    """
    mean, sigma = np.asarray(mean), np.asarray(sigma)
    draw_index = np.asarray(draw_index)
    shape = (mean.shape[0], len(draw_index)) + mean.shape[2:]
    y = numpy_generator(key).standard_normal(shape)
    y *= _per_draw(sigma[:, draw_index], mean.ndim)
    y += mean[:, draw_index]
    return y


def gaussian_loglik(Y: ArrayLike, mean: ArrayLike, sigma: ArrayLike) -> np.ndarray:
    """Pointwise ``log N(Y | mean_s, sigma_s^2)`` for every draw ``s``.

    Parameters
    ----------
    Y : obs_shape array
        The data.
    mean : (C, D, *obs_shape) array
    sigma : (C, D) array

    Returns
    -------
    (C, D, *obs_shape) array
        Sum over trailing axes for the log-likelihood of larger units.

    Examples
    --------
    >>> float(gaussian_loglik(np.zeros(1), np.zeros((1, 1, 1)), np.ones((1, 1)))[0, 0, 0])
    -0.9189385332046727
    """
    mean, sigma = np.asarray(mean), np.asarray(sigma)
    s2 = _per_draw(sigma, mean.ndim) ** 2
    out = np.subtract(np.asarray(Y), mean)  # in place from here: arrays of ~10M values
    out **= 2
    out /= -2.0 * s2
    out -= 0.5 * np.log(2 * np.pi * s2)
    return out
