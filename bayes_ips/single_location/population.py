"""The population risk of erf attention, in closed form (up to one 1-D Gaussian integral).

For ``T(X) = sum_l erf(lambda <x_l, k>) <x_l, v>`` and the data law of
:mod:`bayes_ips.single_location.simulate`, ``R(k, v, lambda) = E[(Y - T(X))^2]``.
Write ``f_l = erf(lambda s_l) u_l`` with ``s_l = <x_l, k>``, ``u_l = <x_l, v>``, and
``a = <x_{J0}, v*>`` so that ``Y = a + eps xi``.  Given ``J0`` the tokens are
independent, and every sample has one signal token (S) and ``L - 1`` noise tokens
(N), so (the noise tokens are independent of ``a``, and ``E a = <mu, v*> = 0``)::

    R = gamma^2 + eps^2 - 2 E[a f_S]
        + E[f_S^2] + (L - 1) E[f_N^2] + 2 (L - 1) E[f_S] E[f_N] + (L - 1)(L - 2) E[f_N]^2.

Noise tokens, ``x ~ N(0, I)``, unit ``k``, ``v``, ``rho = <k, v>``: ``s ~ N(0, 1)`` and
``u = rho s + sqrt(1 - rho^2) w`` with ``w`` independent, hence, by Stein's lemma and
Gaussian integrals,

    E[erf(lambda s) s]     = 2 lambda / (sqrt(pi) sqrt(1 + 2 lambda^2))
    E[erf(lambda s)^2]     = (2/pi) arcsin(2 lambda^2 / (1 + 2 lambda^2))
    E[erf(lambda s)^2 s^2] = E[erf(lambda s)^2]
                             + 8 lambda^2 / (pi (1 + 2 lambda^2) sqrt(1 + 4 lambda^2))
    E[f_N]   = rho E[erf(lambda s) s]
    E[f_N^2] = rho^2 E[erf(lambda s)^2 s^2] + (1 - rho^2) E[erf(lambda s)^2].

The term ``(L - 1)(2/pi) arcsin(2 lambda^2 / (1 + 2 lambda^2))`` (at ``rho = 0``) is the one
the reference implementation of arXiv 2410.01537 (``dynamics.py``) drops: it does
not depend on ``(k, v)``, so gradients in ``k``, ``v`` are unaffected, but risks and
gradients in ``lambda`` are.

Signal token, ``x = mu + gamma z``: ``s = m_s + gamma t`` with ``t ~ N(0, 1)``,
``m_s = <mu, k>``; given ``t``, ``u`` and ``a`` are Gaussian with

    E[u | t] = m_u + gamma rho t,  Var(u | t) = gamma^2 (1 - rho^2),   m_u = <mu, v>
    E[a | t] = gamma <k, v*> t,    Cov(u, a | t) = gamma^2 (<v, v*> - rho <k, v*>),

so ``E[f_S]``, ``E[a f_S]`` and ``E[f_S^2]`` are one-dimensional integrals over ``t`` of
``erf(lambda s)`` or ``erf(lambda s)^2`` times a quadratic in ``t`` (the reference's
``zeta``; ``E[erf(lambda s)^2]`` at ``m_s != 0`` is an Owen's T function, no elementary
form).  They are computed by adaptive quadrature (``scipy.integrate.quad``, relative
tolerance :data:`QUAD_RTOL`), split at the step of erf, ``t0 = -m_s / gamma``: for large
``lambda gamma`` the integrand is nearly discontinuous there, and Gauss-Hermite
quadrature does not converge (200 nodes are off by 1e-4 relative at lambda gamma = 6.5).

Non-unit ``k``, ``v`` are allowed: ``T(k, v, lambda) = ||v|| T(k/||k||, v/||v||, lambda ||k||)``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate
from scipy.special import erf

from bayes_ips.errors import InputError
from bayes_ips.single_location.simulate import SLRTruth

__all__ = ["QUAD_RTOL", "erf_population_risk", "noise_token_moments"]

QUAD_RTOL = 1e-12  # relative tolerance of the signal-token integrals


def noise_token_moments(lam: float) -> dict[str, float]:
    """``E[erf(lam s) s]``, ``E[erf(lam s)^2]`` and ``E[erf(lam s)^2 s^2]`` for ``s ~ N(0, 1)``."""
    lam2 = lam * lam
    erf2 = (2.0 / math.pi) * math.asin(2.0 * lam2 / (1.0 + 2.0 * lam2))
    return {
        "erf_s": 2.0 * lam / (math.sqrt(math.pi) * math.sqrt(1.0 + 2.0 * lam2)),
        "erf2": erf2,
        "erf2_s2": erf2 + 8.0 * lam2 / (math.pi * (1.0 + 2.0 * lam2) * math.sqrt(1.0 + 4.0 * lam2)),
    }


def _expect(fn, t0: float) -> float:
    """``E[fn(t)]`` for ``t ~ N(0, 1)``, by adaptive quadrature split at ``t0``."""

    def f(t):
        return fn(t) * math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)

    opts = {"epsabs": 0.0, "epsrel": QUAD_RTOL, "limit": 200}
    return integrate.quad(f, -np.inf, t0, **opts)[0] + integrate.quad(f, t0, np.inf, **opts)[0]


def erf_population_risk(k: ArrayLike, v: ArrayLike, lam: float, truth: SLRTruth) -> float:
    """``E[(Y - T(X))^2]`` of erf attention at ``(k, v, lam)`` under ``truth`` (module docstring).

    Parameters
    ----------
    k, v : (d,) arrays, non-zero
    lam : float, > 0
    truth : SLRTruth

    Returns
    -------
    float
    """
    k, v = np.asarray(k, dtype=np.float64), np.asarray(v, dtype=np.float64)
    if k.shape != (truth.d,) or v.shape != (truth.d,):
        raise InputError(f"k and v must have shape ({truth.d},), got {k.shape} and {v.shape}")
    nk, nv = float(np.linalg.norm(k)), float(np.linalg.norm(v))
    if not (nk > 0 and nv > 0 and np.isfinite(nk) and np.isfinite(nv)):
        raise InputError("k and v must be finite and non-zero")
    if not (lam > 0) or math.isinf(lam):
        raise InputError(f"lambda must be a positive finite number, got {lam}")
    k, v, lam, c = k / nk, v / nv, float(lam) * nk, nv  # T(k, v, lam) = c T(k^, v^, lam ||k||)
    L, g, eps = truth.L, truth.gamma, truth.noise_sd
    rho = float(k @ v)
    # noise tokens
    nm = noise_token_moments(lam)
    fN = rho * nm["erf_s"]
    fN2 = rho**2 * nm["erf2_s2"] + (1.0 - rho**2) * nm["erf2"]
    # the signal token, as integrals over t ~ N(0, 1)
    mu = truth.mu
    m_s, m_u = float(mu @ k), float(mu @ v)
    c_ka, c_vv = float(k @ truth.v), float(v @ truth.v)

    def e_u(t):
        return m_u + g * rho * t

    def w(t):
        return float(erf(lam * (m_s + g * t)))

    t0 = -m_s / g  # the step of erf(lambda s)
    fS = _expect(lambda t: w(t) * e_u(t), t0)
    afS = _expect(lambda t: w(t) * (e_u(t) * g * c_ka * t + g**2 * (c_vv - rho * c_ka)), t0)
    fS2 = _expect(lambda t: w(t) ** 2 * (e_u(t) ** 2 + g**2 * (1.0 - rho**2)), t0)
    ET2 = fS2 + (L - 1) * fN2 + 2 * (L - 1) * fS * fN + (L - 1) * (L - 2) * fN**2
    return g**2 + eps**2 - 2.0 * c * afS + c**2 * ET2
