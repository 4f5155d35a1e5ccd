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

__all__ = ["FAMILIES", "PhiSpec", "make_phi", "phi_eval"]

FAMILIES = ("tanh", "sin", "holder", "bspline")
_BSPLINE_RANGE = 4.0
_BSPLINE_INTERVALS = 14


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


def make_phi(
    key: jax.Array, family: str, *, beta: float | None = None, degree: int | None = None
) -> PhiSpec:
    """Draw a true activation of the given family (scale 1; see ``with_scale``).

    Parameters
    ----------
    key : PRNG key
        Randomises kink positions and weights (``holder``) or coefficients
        (``bspline``); unused by the smooth families.
    family : str
        One of :data:`FAMILIES`.
    beta : float, optional
        Smoothness of the ``holder`` family (required there); for ``bspline`` it
        sets the degree ``P = beta`` when ``degree`` is not given.
    degree : int, optional
        Degree ``P`` of the ``bspline`` family (default 3).

    Examples
    --------
    >>> spec = make_phi(jax.random.PRNGKey(0), "holder", beta=1.5)
    >>> spec.beta
    1.5
    """
    if family not in FAMILIES:
        raise InputError(f"unknown phi family {family!r}; choose from {', '.join(FAMILIES)}")
    if beta is not None and not (float(beta) > 0):
        raise InputError(f"beta must be > 0, got {beta}")
    if family in ("tanh", "sin"):
        return PhiSpec(family, math.inf)
    if family == "holder":
        if beta is None:
            raise InputError("the holder family needs beta > 0")
        k1, k2, k3 = jax.random.split(key, 3)
        kinks = np.sort(np.asarray(jax.random.uniform(k1, (3,), minval=-1.2, maxval=1.2)))
        mag = np.asarray(jax.random.uniform(k2, (3,), minval=0.5, maxval=1.0))
        sign = np.where(np.asarray(jax.random.bernoulli(k3, 0.5, (3,))), 1.0, -1.0)
        params = {"kinks": kinks.tolist(), "weights": (mag * sign).tolist()}
        return PhiSpec("holder", float(beta), 1.0, params)
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
        knots = make_knots(
            np.linspace(-_BSPLINE_RANGE, _BSPLINE_RANGE, _BSPLINE_INTERVALS + 1), P, 1
        )
        return jnp.tanh(z) + spline_eval(z, jnp.asarray(spec.params["coef"]), knots)
    raise InputError(f"unknown phi family {spec.family!r}")


def describe(spec: PhiSpec) -> dict[str, Any]:
    """A short dict for logs and records."""
    return {"family": spec.family, "beta": spec.beta, "scale": spec.scale}
