"""The truth side: token laws, the low-rank A*, noise laws, and simulated data.

Model (one attention-style layer as an interacting particle system)::

    Y[m, i] = 1/(N-1) sum_{j != i} phi*(X[m, i]^T A* X[m, j]) + eta[m, i]

Token laws (exchangeable within a sample):

``cube``
    i.i.d. uniform on ``[-1, 1]^d`` (the paper's setting).
``gaussian``
    i.i.d. ``N(0, I_d)``.
``anisotropic``
    i.i.d. ``N(0, diag(scales^2))``; default scales geometric from 2 to 1/2.
``correlated``
    exchangeable Gaussian with a common factor:
    ``X_i = sqrt(rho) Z_0 + sqrt(1 - rho) Z_i`` (default ``rho = 0.3``), so every
    pair of tokens of a sample has correlation ``rho`` per coordinate.

Noise laws (sub-Gaussian, all with standard deviation ``sd``): ``gaussian``,
``uniform`` (on ``[-sqrt(3) sd, sqrt(3) sd]``) and ``rademacher`` (``+-sd``).

A* is gauge-fixed the way every fit is: ``||A*||_F = 1`` and its largest-magnitude
entry positive (see :func:`gauge_fix`).
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.activations import PhiSpec, make_phi, phi_eval, with_mean_square
from bayes_ips.errors import InputError, check_positive, check_rank
from bayes_ips.pairwise import pair_scores

__all__ = [
    "NOISE_LAWS",
    "TOKEN_LAWS",
    "NoiseLaw",
    "TokenLaw",
    "Truth",
    "g_true",
    "gauge_fix",
    "make_truth",
    "sample_pairs",
    "sample_tokens",
    "simulate",
]

TOKEN_LAWS = ("cube", "gaussian", "anisotropic", "correlated")
NOISE_LAWS = ("gaussian", "uniform", "rademacher")


@dataclasses.dataclass(frozen=True)
class TokenLaw:
    """Law of the N tokens of one sample.

    Attributes
    ----------
    family : str
        One of :data:`TOKEN_LAWS`.
    d : int
    scales : tuple of float, optional
        Coordinate standard deviations (``anisotropic``).
    rho : float
        Within-sample correlation (``correlated``).
    """

    family: str
    d: int
    scales: tuple[float, ...] | None = None
    rho: float = 0.0

    def __post_init__(self) -> None:
        if self.family not in TOKEN_LAWS:
            raise InputError(
                f"unknown token law {self.family!r}; choose from {', '.join(TOKEN_LAWS)}"
            )
        if int(self.d) != self.d or self.d < 1:
            raise InputError(f"dimension d must be a positive integer, got {self.d}")
        if self.family == "anisotropic":
            if self.scales is None:
                object.__setattr__(self, "scales", tuple(np.geomspace(2.0, 0.5, self.d).tolist()))
            if len(self.scales) != self.d or min(self.scales) <= 0:
                raise InputError(f"anisotropic scales must be {self.d} positive numbers")
        if self.family == "correlated":
            if self.rho == 0.0:
                object.__setattr__(self, "rho", 0.3)
            if not 0.0 <= self.rho < 1.0:
                raise InputError(f"correlation rho must be in [0, 1), got {self.rho}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TokenLaw:
        try:
            d = json.loads(text)
            if d.get("scales") is not None:
                d["scales"] = tuple(d["scales"])
            return cls(**d)
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"corrupt token law specification: {e}") from None


@dataclasses.dataclass(frozen=True)
class NoiseLaw:
    """Observation noise: ``family`` in :data:`NOISE_LAWS` with standard deviation ``sd``."""

    family: str = "gaussian"
    sd: float = 0.1

    def __post_init__(self) -> None:
        if self.family not in NOISE_LAWS:
            raise InputError(
                f"unknown noise law {self.family!r}; choose from {', '.join(NOISE_LAWS)}"
            )
        if not (self.sd >= 0) or math.isinf(self.sd):
            raise InputError(f"noise sd must be finite and >= 0, got {self.sd}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NoiseLaw:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"corrupt noise specification: {e}") from None


@dataclasses.dataclass(frozen=True)
class Truth:
    """Everything needed to simulate data and to evaluate an estimate.

    Attributes
    ----------
    A : (d, d) array, gauge-fixed (unit Frobenius norm, sign rule).
    phi : PhiSpec
    tokens : TokenLaw
    noise : NoiseLaw
    """

    A: np.ndarray
    phi: PhiSpec
    tokens: TokenLaw
    noise: NoiseLaw

    @property
    def rank(self) -> int:
        return int(np.linalg.matrix_rank(self.A))


def gauge_fix(A: ArrayLike) -> tuple[np.ndarray, float]:
    """Fix the gauge of ``A``: unit Frobenius norm, largest-magnitude entry positive.

    Returns the fixed matrix and the signed factor ``c`` with ``A_fixed = A / c``,
    so that ``phi(x^T A y) = phi_fixed(x^T A_fixed y)`` with ``phi_fixed(u) = phi(c u)``.
    """
    A = np.asarray(A, dtype=np.float64)
    nrm = float(np.linalg.norm(A))
    if not nrm > 0:
        raise InputError("A is zero: no interaction to learn")
    sign = 1.0 if A.flat[np.argmax(np.abs(A))] >= 0 else -1.0
    return A / (sign * nrm), sign * nrm


def sample_tokens(key: jax.Array, law: TokenLaw, M: int, N: int) -> jax.Array:
    """Draw ``M`` samples of ``N`` tokens.

    Returns
    -------
    (M, N, d) array
    """
    d = law.d
    if law.family == "cube":
        return jax.random.uniform(key, (M, N, d), minval=-1.0, maxval=1.0)
    if law.family == "gaussian":
        return jax.random.normal(key, (M, N, d))
    if law.family == "anisotropic":
        return jax.random.normal(key, (M, N, d)) * jnp.asarray(law.scales)
    k0, k1 = jax.random.split(key)
    common = jax.random.normal(k0, (M, 1, d))
    own = jax.random.normal(k1, (M, N, d))
    return math.sqrt(law.rho) * common + math.sqrt(1.0 - law.rho) * own


def sample_pairs(key: jax.Array, law: TokenLaw, P: int) -> tuple[jax.Array, jax.Array]:
    """Draw ``P`` independent pairs ``(x, y)`` from the exploration measure rho.

    Each pair is two distinct tokens of a fresh sample.

    Returns
    -------
    x, y : (P, d) arrays
    """
    T = sample_tokens(key, law, P, 2)
    return T[:, 0], T[:, 1]


def _noise(key: jax.Array, law: NoiseLaw, shape: tuple[int, ...]) -> jax.Array:
    if law.family == "gaussian":
        return law.sd * jax.random.normal(key, shape)
    if law.family == "uniform":
        return law.sd * math.sqrt(3.0) * jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
    return law.sd * jax.random.rademacher(key, shape, dtype=jnp.float64)


def g_true(truth: Truth, x: ArrayLike, y: ArrayLike) -> jax.Array:
    """The target ``g*(x, y) = phi*(x^T A* y)`` on pairs ``x, y`` of shape (P, d)."""
    u = jnp.einsum("pi,ij,pj->p", jnp.asarray(x), jnp.asarray(truth.A), jnp.asarray(y))
    return phi_eval(truth.phi, u)


def make_truth(
    key: jax.Array,
    d: int,
    rank: int = 1,
    *,
    phi: str | PhiSpec = "tanh",
    beta: float | None = None,
    tokens: str | TokenLaw = "cube",
    noise_sd: float = 0.1,
    noise: str = "gaussian",
    A: ArrayLike | None = None,
) -> Truth:
    """Build a ground truth: A* (random of the given rank, or ``A``), phi*, laws.

    The scale of phi* is set to the standard deviation of the scores under rho
    (estimated by Monte Carlo with a fixed key), so that phi* is non-linear on the
    bulk of the scores for every token law and dimension.  The amplitude of a
    ``weierstrass`` phi* is set on the same scores so that its mean square under rho
    is :data:`~bayes_ips.activations.WEIERSTRASS_MEAN_SQUARE`
    (:func:`~bayes_ips.activations.with_mean_square`); the other families keep theirs.

    Parameters
    ----------
    key : PRNG key
    d : int
    rank : int
    phi : str or PhiSpec
        Family name (see :mod:`bayes_ips.activations`) or a ready spec.
    beta : float, optional
        Smoothness for the ``holder``, ``bspline`` and ``weierstrass`` families.
    tokens : str or TokenLaw
    noise_sd : float
    noise : str
    A : (d, d) array, optional
        A user-given interaction matrix (gauge-fixed here; its rank is checked).
    """
    rank = check_rank(rank, d)
    law = tokens if isinstance(tokens, TokenLaw) else TokenLaw(tokens, d)
    if law.d != d:
        raise InputError(f"token law has d = {law.d} but d = {d} was asked")
    noise_law = NoiseLaw(noise, float(noise_sd))
    k_a, k_phi, k_scale = jax.random.split(key, 3)
    if A is None:
        ku, kv = jax.random.split(k_a)
        U = np.asarray(jax.random.normal(ku, (d, rank)))
        V = np.asarray(jax.random.normal(kv, (d, rank)))
        A_raw = U @ V.T
    else:
        A_raw = np.asarray(A, dtype=np.float64)
        if A_raw.shape != (d, d):
            raise InputError(f"A must have shape (d, d) = {(d, d)}, got {A_raw.shape}")
        if not np.all(np.isfinite(A_raw)):
            raise InputError("A has NaN or inf entries")
        r_given = int(np.linalg.matrix_rank(A_raw))
        if r_given != rank:
            raise InputError(f"the given A has rank {r_given}, but rank = {rank} was asked")
    A_fixed, _ = gauge_fix(A_raw)
    spec = phi if isinstance(phi, PhiSpec) else make_phi(k_phi, phi, beta=beta)
    x, y = sample_pairs(k_scale, law, 20000)
    u = jnp.einsum("pi,ij,pj->p", x, jnp.asarray(A_fixed), y)
    scale = float(jnp.std(u))
    check_positive("score scale", scale)
    spec = with_mean_square(spec.with_scale(scale), u)  # weierstrass: E_rho phi*^2 = 1/2
    return Truth(A_fixed, spec, law, noise_law)


def simulate(key: jax.Array, truth: Truth, M: int, N: int) -> tuple[jax.Array, jax.Array]:
    """Simulate ``M`` samples of ``N`` tokens and their outputs.

    Returns
    -------
    X : (M, N, d) array
    Y : (M, N) array
    """
    if int(M) != M or M < 1:
        raise InputError(f"M must be a positive integer, got {M}")
    if int(N) != N or N < 2:
        raise InputError(f"each sample needs N >= 2 tokens, got N = {N}")
    kx, ke = jax.random.split(key)
    X = sample_tokens(kx, truth.tokens, M, N)
    S = pair_scores(X, jnp.asarray(truth.A), jnp.eye(truth.tokens.d))
    phi = phi_eval(truth.phi, S)
    off = (1.0 - jnp.eye(N)) / (N - 1)
    mean = jnp.sum(phi * off, axis=-1)
    return X, mean + _noise(ke, truth.noise, (M, N))
