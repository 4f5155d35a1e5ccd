"""Families of true interaction functions phi*, each with its Hoelder smoothness beta.

A :class:`PhiSpec` is plain data (JSON-serialisable) so that it can travel in data
files.  Every family is written ``phi*(u) = f(u / scale)``: ``scale`` is the
standard deviation of the scores under the exploration measure (set by
:func:`bayes_ips.simulate.make_truth`), so that the non-linearity sits where the
scores are, whatever the dimension or the token law.

Families
--------
``tanh``, ``sin``
    Smooth (beta = inf): ``f(z) = tanh(z)``, ``f(z) = sin(z)``.
``holder``
    Exact Hoelder exponent ``beta`` for any ``beta > 0``:
    ``f(z) = tanh(z) + sum_k w_k psi_beta(z - z_k) exp(-(z - z_k)^2 / 2)`` with
    ``psi_beta(x) = |x|^beta`` (``sign(x)|x|^beta`` when beta is an even integer,
    where ``|x|^beta`` would be a polynomial).  At each kink ``z_k`` the function
    has ``ceil(beta) - 1`` derivatives and the last one is exactly
    ``(beta - ceil(beta) + 1)``-Hoelder: no better.
``bspline``
    A random B-spline of degree ``P`` (the paper's experiments) added to a tanh
    trend: ``f(z) = tanh(z) + sum_k c_k B_k(z)`` with simple knots on 14 uniform
    intervals of ``[-4, 4]``, ``c_k ~ N(0, 1)`` except the ``P + 1`` coefficients at
    each end, which are zero, so the spline vanishes smoothly near the ends and
    stays zero beyond (no polynomial blow-up in the tails of unbounded token
    laws).  Its smoothness is ``beta = P`` (``P - 1`` continuous derivatives, the
    last one Lipschitz).
``weierstrass``
    Rough at every point and every scale: a lacunary Weierstrass sum
    ``f(z) = c sum_{k=0}^{n-1} 2^(-k beta) cos(2^k z + theta_k)`` with phases
    ``theta_k ~ U[0, 2 pi)`` from the key, for any non-integer ``beta > 0`` (see
    :func:`weierstrass_terms` for why its exponent is exactly ``beta`` everywhere,
    why integer beta is refused and where the sum is cut).  Its amplitude ``c`` is
    set by :func:`bayes_ips.simulate.make_truth` so that
    ``||phi*||^2_{L2(rho)} = 1/2`` (:data:`WEIERSTRASS_MEAN_SQUARE`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.errors import InputError
from bayes_ips.spline import make_knots, spline_eval

__all__ = [
    "FAMILIES",
    "WEIERSTRASS_MEAN_SQUARE",
    "PhiSpec",
    "check_beta",
    "make_phi",
    "phi_eval",
    "weierstrass_terms",
    "with_mean_square",
]

FAMILIES = ("tanh", "sin", "holder", "bspline", "weierstrass")
_BSPLINE_RANGE = 4.0
_BSPLINE_INTERVALS = 14

# The lacunary Weierstrass family (``weierstrass_terms``): frequencies 2^k, k < 26.
_WEIERSTRASS_BASE = 2
_WEIERSTRASS_TERMS = 26  # top frequency 2^25 ~ 3.4e7 (see weierstrass_terms)
#: ``E_rho[phi*(x^T A* y)^2]`` of a ``weierstrass`` truth: that of a unit-amplitude
#: cosine, in the middle of the other families' 0.27-0.68 (tanh, sin, holder, bspline
#: on cube, Gaussian and correlated tokens, d = 1 and 5).
WEIERSTRASS_MEAN_SQUARE = 0.5


@dataclasses.dataclass(frozen=True)
class PhiSpec:
    """A true activation ``phi*(u) = f(u / scale)``.

    Attributes
    ----------
    family : str
        One of :data:`FAMILIES`.
    beta : float
        Hoelder smoothness (``inf`` for analytic families).
    scale : float
        Input scale.
    params : dict
        Family parameters (kinks and weights, or spline degree and coefficients).
    """

    family: str
    beta: float
    scale: float = 1.0
    params: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["beta"] = "inf" if math.isinf(self.beta) else self.beta
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PhiSpec:
        try:
            d = json.loads(text)
            d["beta"] = float(d["beta"])
            spec = cls(**d)
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"corrupt phi specification: {e}") from None
        if spec.family not in FAMILIES:
            raise InputError(f"unknown phi family {spec.family!r}; choose from {FAMILIES}")
        return spec

    def with_scale(self, scale: float) -> PhiSpec:
        return dataclasses.replace(self, scale=float(scale))


def check_beta(family: str, beta: float | None) -> None:
    """Refuse a family name or a smoothness that :func:`make_phi` cannot honour.

    Raises
    ------
    InputError
        An unknown family; ``beta <= 0``; no beta for ``holder`` or ``weierstrass``;
        an integer beta for ``weierstrass`` (see :func:`weierstrass_terms`).
    """
    if family not in FAMILIES:
        raise InputError(f"unknown phi family {family!r}; choose from {', '.join(FAMILIES)}")
    if beta is not None and not (float(beta) > 0):
        raise InputError(f"beta must be > 0, got {beta}")
    if family in ("holder", "weierstrass") and beta is None:
        raise InputError(f"the {family} family needs beta > 0")
    if family == "weierstrass":
        if not math.isfinite(beta):
            raise InputError("the weierstrass family needs a finite beta")
        if float(beta).is_integer():
            raise InputError(
                f"the weierstrass family needs a non-integer beta, got {beta}: at an integer "
                "beta its last derivative changes by ~h log(1/h) over h (Zygmund-smooth), not h^1"
            )


def make_phi(
    key: jax.Array, family: str, *, beta: float | None = None, degree: int | None = None
) -> PhiSpec:
    """Draw a true activation of the given family (scale 1; see ``with_scale``).

    Parameters
    ----------
    key : PRNG key
        Randomises kink positions and weights (``holder``), coefficients
        (``bspline``) or phases (``weierstrass``); unused by the smooth families.
    family : str
        One of :data:`FAMILIES`.
    beta : float, optional
        Smoothness of the ``holder`` family (any > 0) and of the ``weierstrass``
        family (any non-integer > 0), required there; for ``bspline`` it sets the
        degree ``P = beta`` when ``degree`` is not given.
    degree : int, optional
        Degree ``P`` of the ``bspline`` family (default 3).

    Examples
    --------
    >>> spec = make_phi(jax.random.PRNGKey(0), "holder", beta=1.5)
    >>> spec.beta
    1.5
    """
    check_beta(family, beta)
    if family in ("tanh", "sin"):
        return PhiSpec(family, math.inf)
    if family == "holder":
        k1, k2, k3 = jax.random.split(key, 3)
        kinks = np.sort(np.asarray(jax.random.uniform(k1, (3,), minval=-1.2, maxval=1.2)))
        mag = np.asarray(jax.random.uniform(k2, (3,), minval=0.5, maxval=1.0))
        sign = np.where(np.asarray(jax.random.bernoulli(k3, 0.5, (3,))), 1.0, -1.0)
        params = {"kinks": kinks.tolist(), "weights": (mag * sign).tolist()}
        return PhiSpec("holder", float(beta), 1.0, params)
    if family == "weierstrass":
        phases = jax.random.uniform(
            key, (_WEIERSTRASS_TERMS,), jnp.float64, minval=0.0, maxval=2 * math.pi
        )
        _, weights = weierstrass_terms(float(beta))
        # the mean square over a long range of z, c^2 sum_k w_k^2 / 2, at the target;
        # make_truth sets it exactly under rho (``with_mean_square``)
        amplitude = math.sqrt(2 * WEIERSTRASS_MEAN_SQUARE / float(np.sum(weights**2)))
        params = {"phases": np.asarray(phases, np.float64).tolist(), "amplitude": amplitude}
        return PhiSpec("weierstrass", float(beta), 1.0, params)
    # bspline
    if degree is None:
        degree = 3 if beta is None else int(round(float(beta)))
        if beta is not None and degree != float(beta):
            raise InputError(f"the bspline family has integer smoothness; got beta = {beta}")
    if degree < 1:
        raise InputError(f"bspline degree must be >= 1, got {degree}")
    n_coef = _BSPLINE_INTERVALS + degree
    coef = np.array(jax.random.normal(key, (n_coef,)))
    coef[: degree + 1] = 0.0
    coef[-(degree + 1) :] = 0.0
    return PhiSpec("bspline", float(degree), 1.0, {"degree": int(degree), "coef": coef.tolist()})


def weierstrass_terms(
    beta: float, n_terms: int = _WEIERSTRASS_TERMS
) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies ``2^k`` and weights ``2^(-k beta)``, ``k < n_terms``, of the Weierstrass family.

    The family is ``f(z) = c sum_k 2^(-k beta) cos(2^k z + theta_k)``.

    **Exact exponent.**  For ``0 < a < 1`` let ``W(z) = sum_k 2^(-k a) cos(2^k z + t_k)``
    (any phases).  Upper bound: ``|W(z + h) - W(z)|`` is at most
    ``sum_{2^k h <= 1} 2^(-k a) 2^k h + sum_{2^k h > 1} 2 * 2^(-k a) <= C h^a``, so W is
    a-Hoelder.  Lower bound, at every point: take a Schwartz function ``psi``
    whose Fourier transform is supported in ``[3/4, 3/2]`` and equals 1 at 1, and
    ``psi_j(t) = 2^j psi(2^j t)``.  Its support in frequency holds ``2^j`` and no
    other ``2^k``, so ``(W * psi_j)(z0) = 2^(-j a) e^{i(2^j z0 + t_j)} / 2``, of modulus
    ``2^(-j a) / 2``; and ``psi_j`` has zero mean, so if
    ``|W(z0 + t) - W(z0)| <= C |t|^a'`` near ``z0`` then
    ``|(W * psi_j)(z0)| <= C' 2^(-j a')``.  Hence no ``a' > a`` at any ``z0``: the
    pointwise Hoelder exponent is exactly ``a`` everywhere (Hardy 1916 proved it
    for the phase-free series; the argument above is the standard one for
    Hadamard-lacunary series and does not care about the phases).
    For ``beta`` in ``(m, m + 1)`` the ``m``-times differentiated series
    ``sum_k 2^(-k (beta - m)) cos(2^k z + theta_k + m pi / 2)`` converges uniformly, so
    it is ``f^(m)``: a W with ``a = beta - m`` and shifted phases.  So f is in
    ``C^{m, beta - m}`` and its m-th derivative has the exact exponent ``beta - m``
    at every point (no better anywhere).  At an integer ``beta = m + 1``, ``f^(m)``
    is the series with ``a = 1``: Zygmund-smooth, with increments ``~ h log(1/h)``,
    not Lipschitz, so f is *not* in ``C^{m, 1}``: :func:`check_beta` refuses it.

    **Where the sum is cut.**  ``n_terms = 26``: the top frequency is
    ``2^25 ~ 3.4e7`` in the standardised score ``z = u / scale`` (sd 1 under rho).
    The studies' splines have at most 240 quantile intervals; the narrowest,
    where a rank-1 score (a product of two token projections) has its log-singular
    density at 0, is still ``>= 1e-3`` wide in z, so they resolve frequencies
    ``<= pi / 1e-3 ~ 3e3``: the cut is ``1e4`` times finer.  At knot width
    ``w >= 1e-3`` the omitted tail of ``f^(m)``, at most
    ``c 2^(-26 (beta - m)) / (1 - 2^(-(beta - m)))`` in sup norm, is then of order
    ``(2^26 w)^-(beta - m) ~ 0.4 %`` (``beta - m = 1/2``, the worst of the study values)
    of the increments ``~ w^(beta - m)`` of the infinite sum at that width (measured:
    at most 1.4 % of the smallest oscillation over ``|t| <= 1e-3`` at 600 random
    points, ``tests/test_activations.py``), and its square ``~1e-4`` of theirs: to
    every spline of a study the truncated sum is the infinite one.  The top phase
    ``2^25 z`` is held in float64 to ``~1e-7`` rad for ``|z| <= 100``; in float32 it
    would be noise, so :func:`phi_eval` refuses float32.

    Returns
    -------
    freqs, weights : (n_terms,) arrays
    """
    k = np.arange(n_terms, dtype=np.float64)
    return float(_WEIERSTRASS_BASE) ** k, float(_WEIERSTRASS_BASE) ** (-k * float(beta))


def with_mean_square(spec: PhiSpec, u: ArrayLike) -> PhiSpec:
    """``spec`` with its amplitude set so that ``mean(phi*(u)^2) = WEIERSTRASS_MEAN_SQUARE``.

    Only the ``weierstrass`` family has a free amplitude: every other family is
    returned unchanged (their amplitude is part of their definition).
    :func:`bayes_ips.simulate.make_truth` calls it on its Monte Carlo scores from rho,
    so that ``||phi*||^2_{L2(rho)} = 1/2`` up to that Monte Carlo error.

    Parameters
    ----------
    spec : PhiSpec
    u : (P,) array
        Scores ``x^T A* y`` of pairs from rho.
    """
    if spec.family != "weierstrass":
        return spec
    ms = float(jnp.mean(phi_eval(spec, u) ** 2))
    amplitude = spec.params["amplitude"] * math.sqrt(WEIERSTRASS_MEAN_SQUARE / ms)
    return dataclasses.replace(spec, params={**spec.params, "amplitude": amplitude})


def _psi(x: jax.Array, beta: float) -> jax.Array:
    ax = jnp.abs(x)
    # |x|^beta with a safe gradient at 0 for beta <= 1
    powed = jnp.where(ax > 0, jnp.abs(jnp.where(ax > 0, x, 1.0)) ** beta, 0.0)
    if float(beta).is_integer() and int(beta) % 2 == 0:
        return jnp.sign(x) * powed
    return powed


def phi_eval(spec: PhiSpec, u: ArrayLike) -> jax.Array:
    """Evaluate ``phi*(u)`` elementwise.

    Parameters
    ----------
    spec : PhiSpec
    u : (...,) array

    Returns
    -------
    (...,) array
    """
    z = jnp.asarray(u) / spec.scale
    if spec.family == "tanh":
        return jnp.tanh(z)
    if spec.family == "sin":
        return jnp.sin(z)
    if spec.family == "holder":
        out = jnp.tanh(z)
        for zk, wk in zip(spec.params["kinks"], spec.params["weights"], strict=True):
            x = z - zk
            out = out + wk * _psi(x, spec.beta) * jnp.exp(-0.5 * x**2)
        return out
    if spec.family == "bspline":
        P = int(spec.params["degree"])
        # the truth keeps the boundary polynomial beyond its knots ("poly"), so
        # that simulated data stay what they were before the linear tail
        knots = make_knots(
            np.linspace(-_BSPLINE_RANGE, _BSPLINE_RANGE, _BSPLINE_INTERVALS + 1), P, 1, "poly"
        )
        return jnp.tanh(z) + spline_eval(z, jnp.asarray(spec.params["coef"]), knots)
    if spec.family == "weierstrass":
        if not jax.config.jax_enable_x64:
            raise InputError(
                "the weierstrass family needs float64 (bayes_ips.enable_x64()): its top "
                "frequencies lose their phase in float32"
            )
        z = z.astype(jnp.float64)
        freqs, weights = weierstrass_terms(spec.beta, len(spec.params["phases"]))
        out = jnp.zeros_like(z)
        for f, w, th in zip(freqs, weights, spec.params["phases"], strict=True):
            out = out + w * jnp.cos(f * z + th)
        return spec.params["amplitude"] * out
    raise InputError(f"unknown phi family {spec.family!r}")


def describe(spec: PhiSpec) -> dict[str, Any]:
    """A short dict for logs and records."""
    return {"family": spec.family, "beta": spec.beta, "scale": spec.scale}
