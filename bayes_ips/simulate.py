"""The truth side: token laws, the low-rank A*, noise laws, and simulated data.

Model (one attention-style layer as an interacting particle system)::

    Y[m, i] = 1/(N-1) sum_{j != i} phi*(X[m, i]^T A* X[m, j]) + eta[m, i]

and its multi-head form (:class:`HeadsTruth`, ``make_truth(..., heads=H)``)::

    Y[m, i] = 1/(N-1) sum_{j != i} sum_{h < H} phi*_h(X[m, i]^T A*_h X[m, j]) + eta[m, i]

Token laws (exchangeable within a sample):

``cube``
    i.i.d. uniform on ``[-1, 1]^d`` (the paper's setting).
``gaussian``
    i.i.d. ``N(0, I_d)``.
``anisotropic``
    i.i.d. ``N(0, diag(scales^2))``; default scales geometric from 2 to 1/2.
``correlated``
    exchangeable Gaussian: every pair of tokens of a sample has correlation ``rho``
    per coordinate, unit variances (default ``rho = 0.3``).  For ``rho >= 0`` with a
    common factor, ``X_i = sqrt(rho) Z_0 + sqrt(1 - rho) Z_i``; for
    ``-1/(N-1) <= rho < 0`` (the least correlation N exchangeable tokens can have)
    ``X_i = sqrt(1 - rho) (Z_i - Zbar) + sqrt(1 + (N-1) rho) Zbar``, the
    covariance's spectral square root: at ``rho = -1/(N-1)`` the tokens of a sample
    sum to zero.  Negatively correlated tokens are exchangeable but no mixture of
    i.i.d. ones (they cannot be extended to more tokens), and the coercivity bound
    ``c_H >= 1/(N-1)`` does not hold for them (:mod:`bayes_ips.coercivity`).

Noise laws (sub-Gaussian, all with standard deviation ``sd``): ``gaussian``,
``uniform`` (on ``[-sqrt(3) sd, sqrt(3) sd]``) and ``rademacher`` (``+-sd``).

A* is gauge-fixed the way every fit is: ``||A*||_F = 1`` and its largest-magnitude
entry positive (see :func:`gauge_fix`); so is every head ``A*_h``.  The heads of a
multi-head truth are distinct: ``|<A*_h, A*_g>_F| <= 0.9`` for ``h != g``
(:data:`MAX_HEAD_OVERLAP`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.activations import PhiSpec, make_phi, phi_eval, with_mean_square
from bayes_ips.errors import InputError, check_positive, check_rank
from bayes_ips.pairwise import pair_scores

__all__ = [
    "MAX_HEAD_OVERLAP",
    "NOISE_LAWS",
    "TOKEN_LAWS",
    "HeadsTruth",
    "NoiseLaw",
    "TokenLaw",
    "Truth",
    "check_correlation",
    "g_true",
    "gauge_fix",
    "head_g_true",
    "head_overlap",
    "make_truth",
    "sample_pairs",
    "sample_tokens",
    "simulate",
]

TOKEN_LAWS = ("cube", "gaussian", "anisotropic", "correlated")
NOISE_LAWS = ("gaussian", "uniform", "rademacher")
MAX_HEAD_OVERLAP = 0.9  # distinct heads: |<A_h, A_g>_F| <= this for h != g (unit norms)
_HEAD_TRIES = 100  # draws of one head before make_truth gives up on distinctness


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
            if not -1.0 < self.rho < 1.0:
                raise InputError(f"correlation rho must be in (-1, 1), got {self.rho}")

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


@dataclasses.dataclass(frozen=True)
class HeadsTruth:
    """A multi-head ground truth: ``g*(x, y) = sum_h phi*_h(x^T A*_h y)``.

    Attributes
    ----------
    A : (H, d, d) array
        One gauge-fixed matrix per head (unit Frobenius norm, sign rule), all of
        one rank.
    phis : tuple of PhiSpec
        One activation per head.
    tokens : TokenLaw
    noise : NoiseLaw

    Raises
    ------
    InputError
        ``A`` not a finite (H, d, d) array, ``len(phis) != H``, a token law of
        another dimension, or heads of different ranks.
    """

    A: np.ndarray
    phis: tuple[PhiSpec, ...]
    tokens: TokenLaw
    noise: NoiseLaw

    def __post_init__(self) -> None:
        A = np.asarray(self.A, dtype=np.float64)
        if A.ndim != 3 or A.shape[1] != A.shape[2] or A.shape[0] < 1:
            raise InputError(f"heads A must have shape (H, d, d), got {A.shape}")
        if not np.all(np.isfinite(A)):
            raise InputError("heads A has NaN or inf entries")
        phis = tuple(self.phis)
        if len(phis) != A.shape[0] or not all(isinstance(p, PhiSpec) for p in phis):
            raise InputError(f"a truth with {A.shape[0]} heads needs {A.shape[0]} phi specs")
        if self.tokens.d != A.shape[1]:
            raise InputError(f"the token law has d = {self.tokens.d}, the heads d = {A.shape[1]}")
        ranks = {int(np.linalg.matrix_rank(a)) for a in A}
        if len(ranks) != 1:
            raise InputError(f"the heads must share one rank, got ranks {sorted(ranks)}")
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "phis", phis)

    @property
    def n_heads(self) -> int:
        return int(self.A.shape[0])

    @property
    def rank(self) -> int:
        """The common rank of the heads."""
        return int(np.linalg.matrix_rank(self.A[0]))

    def head(self, h: int) -> Truth:
        """The single-head truth of head ``h`` (same token and noise laws)."""
        if int(h) != h or not 0 <= h < self.n_heads:
            raise InputError(f"head must be an integer in [0, {self.n_heads}), got {h}")
        return Truth(self.A[int(h)], self.phis[int(h)], self.tokens, self.noise)


def head_overlap(A: ArrayLike) -> float:
    """``max_{h != g} |<A_h, A_g>_F|`` of a stack of unit-norm heads (0 for one head).

    Parameters
    ----------
    A : (H, d, d) array

    Returns
    -------
    float
    """
    A = np.asarray(A, dtype=np.float64)
    flat = A.reshape(A.shape[0], -1)
    G = np.abs(flat @ flat.T)
    np.fill_diagonal(G, 0.0)
    return float(G.max()) if G.size else 0.0


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
    if law.rho < 0:
        check_correlation(law.rho, N)
        Z = jax.random.normal(key, (M, N, d))
        mean = Z.mean(axis=1, keepdims=True)
        return math.sqrt(1.0 - law.rho) * (Z - mean) + math.sqrt(1.0 + (N - 1) * law.rho) * mean
    k0, k1 = jax.random.split(key)
    common = jax.random.normal(k0, (M, 1, d))
    own = jax.random.normal(k1, (M, N, d))
    return math.sqrt(law.rho) * common + math.sqrt(1.0 - law.rho) * own


def check_correlation(rho: float, N: int) -> None:
    """Raise unless ``N`` exchangeable tokens can have within-sample correlation ``rho``."""
    if N > 1 and rho < -1.0 / (N - 1):
        raise InputError(
            f"N = {N} exchangeable tokens cannot have correlation rho = {rho} "
            f"(the least is -1/(N-1) = {-1.0 / (N - 1):.6g})"
        )


def sample_pairs(key: jax.Array, law: TokenLaw, P: int) -> tuple[jax.Array, jax.Array]:
    """Draw ``P`` independent pairs ``(x, y)`` from the exploration measure rho.

    Each pair is two distinct tokens of a fresh sample (for negatively correlated
    tokens, a bivariate Gaussian with their correlation: the pair marginal of a
    sample of any size ``N`` that allows it).

    Returns
    -------
    x, y : (P, d) arrays
    """
    if law.family == "correlated" and law.rho < 0:
        Z = jax.random.normal(key, (2, P, law.d))
        return Z[0], law.rho * Z[0] + math.sqrt(1.0 - law.rho**2) * Z[1]
    T = sample_tokens(key, law, P, 2)
    return T[:, 0], T[:, 1]


def _noise(key: jax.Array, law: NoiseLaw, shape: tuple[int, ...]) -> jax.Array:
    if law.family == "gaussian":
        return law.sd * jax.random.normal(key, shape)
    if law.family == "uniform":
        return law.sd * math.sqrt(3.0) * jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
    return law.sd * jax.random.rademacher(key, shape, dtype=jnp.float64)


def g_true(truth: Truth | HeadsTruth, x: ArrayLike, y: ArrayLike) -> jax.Array:
    """The target ``g*(x, y) = phi*(x^T A* y)`` on pairs ``x, y`` of shape (P, d).

    For a :class:`HeadsTruth` the sum over heads ``sum_h phi*_h(x^T A*_h y)``.
    """
    if isinstance(truth, HeadsTruth):
        return jnp.sum(head_g_true(truth, x, y), axis=0)
    u = jnp.einsum("pi,ij,pj->p", jnp.asarray(x), jnp.asarray(truth.A), jnp.asarray(y))
    return phi_eval(truth.phi, u)


def head_g_true(truth: Truth | HeadsTruth, x: ArrayLike, y: ArrayLike) -> jax.Array:
    """The per-head targets ``phi*_h(x^T A*_h y)`` on pairs ``x, y`` of shape (P, d).

    Returns
    -------
    (H, P) array
        Summed over heads it is :func:`g_true`; a :class:`Truth` has one row.
    """
    if not isinstance(truth, HeadsTruth):
        return g_true(truth, x, y)[None]
    u = jnp.einsum("pi,hij,pj->hp", jnp.asarray(x), jnp.asarray(truth.A), jnp.asarray(y))
    return jnp.stack([phi_eval(spec, u[h]) for h, spec in enumerate(truth.phis)])


def _draw_A(key: jax.Array, d: int, rank: int) -> np.ndarray:
    """A raw random ``U V^T`` of the given rank (Gaussian factors)."""
    ku, kv = jax.random.split(key)
    U = np.asarray(jax.random.normal(ku, (d, rank)))
    V = np.asarray(jax.random.normal(kv, (d, rank)))
    return U @ V.T


def _check_A(A_raw: np.ndarray, rank: int, what: str = "A") -> None:
    if not np.all(np.isfinite(A_raw)):
        raise InputError(f"{what} has NaN or inf entries")
    r_given = int(np.linalg.matrix_rank(A_raw))
    if r_given != rank:
        raise InputError(f"the given {what} has rank {r_given}, but rank = {rank} was asked")


def _scaled_phi(spec: PhiSpec, A_fixed: np.ndarray, law: TokenLaw, key: jax.Array) -> PhiSpec:
    """``spec`` at the scale of the scores ``x^T A y`` under rho (weierstrass: mean square)."""
    x, y = sample_pairs(key, law, 20000)
    u = jnp.einsum("pi,ij,pj->p", x, jnp.asarray(A_fixed), y)
    scale = float(jnp.std(u))
    check_positive("score scale", scale)
    return with_mean_square(spec.with_scale(scale), u)  # weierstrass: E_rho phi*^2 = 1/2


def _check_heads(heads: int, d: int) -> int:
    if isinstance(heads, bool) or not isinstance(heads, (int, np.integer, float)):
        raise InputError(f"heads must be a positive integer, got {heads!r}")
    if int(heads) != heads or heads < 1:
        raise InputError(f"heads must be a positive integer, got {heads}")
    if heads >= 2 and d == 1:
        raise InputError("heads are not distinct at d = 1: every A_h is ±1")
    return int(heads)


def _phi_per_head(phi: str | PhiSpec | Sequence[str | PhiSpec], heads: int) -> list:
    """One phi (family name or spec) per head: one for all, or a list of ``heads``."""
    if isinstance(phi, (str, PhiSpec)):
        return [phi] * heads
    phis = list(phi)
    if len(phis) != heads:
        raise InputError(
            f"phi lists {len(phis)} families for {heads} head(s): give one for all heads "
            f"or exactly {heads}"
        )
    return phis


def make_truth(
    key: jax.Array,
    d: int,
    rank: int = 1,
    *,
    phi: str | PhiSpec | Sequence[str | PhiSpec] = "tanh",
    beta: float | None = None,
    tokens: str | TokenLaw = "cube",
    noise_sd: float = 0.1,
    noise: str = "gaussian",
    A: ArrayLike | None = None,
    heads: int = 1,
) -> Truth | HeadsTruth:
    """Build a ground truth: A* (random of the given rank, or ``A``), phi*, laws.

    The scale of phi* is set to the standard deviation of the scores under rho
    (estimated by Monte Carlo with a fixed key), so that phi* is non-linear on the
    bulk of the scores for every token law and dimension.  The amplitude of a
    ``weierstrass`` phi* is set on the same scores so that its mean square under rho
    is :data:`~bayes_ips.activations.WEIERSTRASS_MEAN_SQUARE`
    (:func:`~bayes_ips.activations.with_mean_square`); the other families keep theirs.

    With ``heads = H >= 2`` every head gets its own key, ``jax.random.fold_in(key, h)``,
    split like the key of one head: its ``A*_h`` (rank ``rank``, gauge-fixed), its
    ``phi*_h`` and the scale of ``phi*_h`` (set on the scores of ``A*_h``, as above).
    The heads are distinct: a head whose ``|<A*_h, A*_g>_F|`` with an earlier one
    exceeds :data:`MAX_HEAD_OVERLAP` is drawn again, from ``fold_in`` of its key with
    the try number (at most 100 tries).

    Parameters
    ----------
    key : PRNG key
    d : int
    rank : int
        The rank of A* (of every head).
    phi : str or PhiSpec, or a sequence of them
        Family name (see :mod:`bayes_ips.activations`) or a ready spec, used for
        every head (drawn with each head's key), or one per head.
    beta : float, optional
        Smoothness for the ``holder``, ``bspline`` and ``weierstrass`` families.
    tokens : str or TokenLaw
    noise_sd : float
    noise : str
    A : (d, d) array, or (H, d, d) with heads = H >= 2, optional
        A user-given interaction matrix (gauge-fixed here; its rank is checked), or
        one per head (distinctness checked too).
    heads : int
        Number of heads H.  ``heads = 1`` (the default) returns a :class:`Truth`,
        ``heads >= 2`` a :class:`HeadsTruth`.

    Returns
    -------
    Truth or HeadsTruth

    Raises
    ------
    InputError
        Bad options; ``heads`` not a positive integer, or ``heads >= 2`` at
        ``d = 1``; a phi list of a length other than ``heads``; given heads that
        are not distinct, or no distinct heads drawn in 100 tries.
    """
    heads = _check_heads(heads, d)
    rank = check_rank(rank, d)
    law = tokens if isinstance(tokens, TokenLaw) else TokenLaw(tokens, d)
    if law.d != d:
        raise InputError(f"token law has d = {law.d} but d = {d} was asked")
    noise_law = NoiseLaw(noise, float(noise_sd))
    phis = _phi_per_head(phi, heads)
    if heads >= 2:
        return _make_heads_truth(key, d, rank, phis, beta, law, noise_law, A)
    phi = phis[0]
    k_a, k_phi, k_scale = jax.random.split(key, 3)
    if A is None:
        A_raw = _draw_A(k_a, d, rank)
    else:
        A_raw = np.asarray(A, dtype=np.float64)
        if A_raw.shape != (d, d):
            raise InputError(f"A must have shape (d, d) = {(d, d)}, got {A_raw.shape}")
        _check_A(A_raw, rank)
    A_fixed, _ = gauge_fix(A_raw)
    spec = phi if isinstance(phi, PhiSpec) else make_phi(k_phi, phi, beta=beta)
    return Truth(A_fixed, _scaled_phi(spec, A_fixed, law, k_scale), law, noise_law)


def _make_heads_truth(
    key: jax.Array,
    d: int,
    rank: int,
    phis: list,
    beta: float | None,
    law: TokenLaw,
    noise_law: NoiseLaw,
    A: ArrayLike | None,
) -> HeadsTruth:
    """The ``heads >= 2`` branch of :func:`make_truth` (options already checked)."""
    H = len(phis)
    if A is not None:
        A_given = np.asarray(A, dtype=np.float64)
        if A_given.shape != (H, d, d):
            raise InputError(f"A must have shape (H, d, d) = {(H, d, d)}, got {A_given.shape}")
        for h in range(H):
            _check_A(A_given[h], rank, f"head A[{h}]")
    heads_A: list[np.ndarray] = []
    specs: list[PhiSpec] = []
    for h in range(H):
        k_a, k_phi, k_scale = jax.random.split(jax.random.fold_in(key, h), 3)
        if A is not None:
            A_h, _ = gauge_fix(A_given[h])
        else:
            for t in range(_HEAD_TRIES):
                A_h, _ = gauge_fix(_draw_A(jax.random.fold_in(k_a, t), d, rank))
                if head_overlap(np.stack([*heads_A, A_h])) <= MAX_HEAD_OVERLAP:
                    break
            else:
                raise InputError(
                    f"could not draw {H} distinct heads (|<A_h, A_g>_F| <= {MAX_HEAD_OVERLAP}) "
                    f"of rank {rank} at d = {d} in {_HEAD_TRIES} tries: use fewer heads"
                )
        heads_A.append(A_h)
        spec = phis[h] if isinstance(phis[h], PhiSpec) else make_phi(k_phi, phis[h], beta=beta)
        specs.append(_scaled_phi(spec, A_h, law, k_scale))
    A_stack = np.stack(heads_A)
    overlap = head_overlap(A_stack)
    if overlap > MAX_HEAD_OVERLAP:  # only given heads can get here
        raise InputError(
            f"the given heads are not distinct: max |<A_h, A_g>_F| = {overlap:.3g} > "
            f"{MAX_HEAD_OVERLAP} (after gauge fixing)"
        )
    return HeadsTruth(A_stack, tuple(specs), law, noise_law)


def simulate(
    key: jax.Array, truth: Truth | HeadsTruth, M: int, N: int
) -> tuple[jax.Array, jax.Array]:
    """Simulate ``M`` samples of ``N`` tokens and their outputs.

    A :class:`HeadsTruth` sums its heads' interactions; the keys of the tokens and
    the noise are those of a :class:`Truth`.

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
    if isinstance(truth, HeadsTruth):
        eye = jnp.eye(truth.tokens.d)
        phi = sum(
            phi_eval(spec, pair_scores(X, jnp.asarray(A_h), eye))
            for A_h, spec in zip(truth.A, truth.phis, strict=True)
        )
    else:
        S = pair_scores(X, jnp.asarray(truth.A), jnp.eye(truth.tokens.d))
        phi = phi_eval(truth.phi, S)
    off = (1.0 - jnp.eye(N)) / (N - 1)
    mean = jnp.sum(phi * off, axis=-1)
    return X, mean + _noise(ke, truth.noise, (M, N))
