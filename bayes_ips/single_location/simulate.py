"""The truth side of single-location regression (Marion, Berthier, Biau, Boyer, arXiv 2410.01537).

A sample is ``L`` tokens ``x_1..x_L`` in ``R^d`` and one output ``Y``::

    J0 ~ Uniform{0, .., L-1}                      (the latent position; the paper counts 1..L)
    x_{J0} ~ N(sqrt(d/2) k*, gamma^2 I_d),   x_l ~ N(0, I_d) for l != J0
    Y = <x_{J0}, v*> + eps * xi,             xi ~ N(0, 1)

with ``k*``, ``v*`` orthogonal unit vectors.  The paper's setting: ``L = 10``,
``gamma = sqrt(0.5)``, ``d = 400``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.errors import InputError

__all__ = ["DEFAULT_GAMMA", "DEFAULT_L", "SLRTruth", "make_truth", "simulate"]

DEFAULT_L = 10
DEFAULT_GAMMA = math.sqrt(0.5)
UNIT_TOL = 1e-6  # |norm - 1| and |<k, v>| allowed for a user-given k*, v* (float rounding)


def _unit_vector(name: str, a: ArrayLike) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{name} must be a numeric vector of shape (d,), got shape {a.shape}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has NaN or inf entries")
    if abs(np.linalg.norm(a) - 1.0) > UNIT_TOL:
        raise InputError(f"{name} must be a unit vector, its norm is {np.linalg.norm(a):.6g}")
    return a


@dataclasses.dataclass(frozen=True)
class SLRTruth:
    """A single-location regression problem.

    Attributes
    ----------
    k, v : (d,) arrays
        The unit key ``k*`` (where the signal token sits) and value ``v*`` (what
        it says), orthogonal.
    L : int
        Tokens per sample (>= 1).
    gamma : float
        Standard deviation of the signal token around ``sqrt(d/2) k*`` (> 0).
    noise_sd : float
        ``eps``, the standard deviation of the output noise (>= 0).
    """

    k: np.ndarray
    v: np.ndarray
    L: int = DEFAULT_L
    gamma: float = DEFAULT_GAMMA
    noise_sd: float = 0.1

    def __post_init__(self) -> None:
        k, v = _unit_vector("k*", self.k), _unit_vector("v*", self.v)
        if k.shape != v.shape:
            raise InputError(f"k* and v* must have the same shape, got {k.shape} and {v.shape}")
        if len(k) < 2:
            raise InputError(f"d must be >= 2 (k* and v* are orthogonal), got d = {len(k)}")
        if abs(float(k @ v)) > UNIT_TOL:
            raise InputError(f"k* and v* must be orthogonal, <k*, v*> = {float(k @ v):.3g}")
        if isinstance(self.L, bool) or int(self.L) != self.L or self.L < 1:
            raise InputError(f"L must be a positive integer, got {self.L}")
        if not (self.gamma > 0) or math.isinf(self.gamma):
            raise InputError(f"gamma must be a positive finite number, got {self.gamma}")
        if not (self.noise_sd >= 0) or math.isinf(self.noise_sd):
            raise InputError(f"noise sd must be finite and >= 0, got {self.noise_sd}")
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "v", v)
        object.__setattr__(self, "L", int(self.L))
        object.__setattr__(self, "gamma", float(self.gamma))
        object.__setattr__(self, "noise_sd", float(self.noise_sd))

    @property
    def d(self) -> int:
        return len(self.k)

    @property
    def mu(self) -> np.ndarray:
        """Mean of the signal token, ``sqrt(d/2) k*``: (d,)."""
        return math.sqrt(self.d / 2) * self.k

    def params(self) -> dict[str, float | int]:
        """The scalar settings (for files and records)."""
        return {"d": self.d, "L": self.L, "gamma": self.gamma, "noise_sd": self.noise_sd}


def make_truth(
    key: jax.Array,
    d: int,
    *,
    L: int = DEFAULT_L,
    gamma: float = DEFAULT_GAMMA,
    noise_sd: float = 0.1,
    k: ArrayLike | None = None,
    v: ArrayLike | None = None,
) -> SLRTruth:
    """A truth with random orthogonal unit ``k*``, ``v*`` (or the given ones).

    Parameters
    ----------
    key : PRNG key
        Draws ``k*`` uniformly on the sphere and ``v*`` uniformly on the sphere
        of the orthogonal complement of ``k*`` (unused when both are given).
    d : int
        Dimension (>= 2).
    L, gamma, noise_sd
        See :class:`SLRTruth`.
    k, v : (d,) arrays, optional
        Given unit, orthogonal vectors (both or neither).
    """
    if isinstance(d, bool) or int(d) != d or d < 2:
        raise InputError(f"d must be an integer >= 2, got {d}")
    d = int(d)
    if (k is None) != (v is None):
        raise InputError("give both k* and v*, or neither")
    if k is None:
        kk, kv = jax.random.split(key)
        k = np.asarray(jax.random.normal(kk, (d,)))
        k = k / np.linalg.norm(k)
        g = np.asarray(jax.random.normal(kv, (d,)))
        v = g - (g @ k) * k
        v = v / np.linalg.norm(v)
    elif np.shape(k) != (d,) or np.shape(v) != (d,):
        raise InputError(
            f"k* and v* must have shape (d,) = ({d},), got {np.shape(k)} and {np.shape(v)}"
        )
    return SLRTruth(np.asarray(k), np.asarray(v), L, gamma, noise_sd)


def simulate(key: jax.Array, truth: SLRTruth, M: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw ``M`` samples.

    Parameters
    ----------
    key : PRNG key
    truth : SLRTruth
    M : int
        Number of samples (>= 1).

    Returns
    -------
    X : (M, L, d) array
    Y : (M,) array
    J0 : (M,) int array
        The latent position of each sample, in ``0..L-1``.
    """
    if isinstance(M, bool) or int(M) != M or M < 1:
        raise InputError(f"M must be a positive integer, got {M}")
    return _simulate(
        key,
        jnp.asarray(truth.mu),
        jnp.asarray(truth.v),
        truth.gamma,
        truth.noise_sd,
        int(M),
        truth.L,
    )


@functools.partial(jax.jit, static_argnames=("M", "L"))
def _simulate(key, mu, v, gamma, eps, M, L):
    kj, kx, ke = jax.random.split(key, 3)
    J0 = jax.random.randint(kj, (M,), 0, L)
    signal = (jnp.arange(L) == J0[:, None])[..., None]  # (M, L, 1)
    Z = jax.random.normal(kx, (M, L, len(mu)))
    X = jnp.where(signal, mu + gamma * Z, Z)
    x0 = jnp.take_along_axis(X, J0[:, None, None], axis=1)[:, 0]
    Y = x0 @ v + eps * jax.random.normal(ke, (M,))
    return X, Y, J0
