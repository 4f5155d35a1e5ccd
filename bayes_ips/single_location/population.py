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

import dataclasses
import math
import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate
from scipy.special import erf

from bayes_ips.errors import InputError
from bayes_ips.single_location.simulate import SLRTruth

__all__ = [
    "FD_STEP",
    "QUAD_RTOL",
    "PopulationFit",
    "erf_best_lambda",
    "erf_population_gradient",
    "erf_population_pgd",
    "erf_population_risk",
    "noise_token_moments",
]

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
    return _risk_from_overlaps(_overlaps(k, v, truth), lam, c, truth)


def _overlaps(k: np.ndarray, v: np.ndarray, truth: SLRTruth) -> np.ndarray:
    """The five inner products the risk of unit ``(k, v)`` depends on:
    ``<k, v>``, ``<mu, k>``, ``<mu, v>``, ``<k, v*>``, ``<v, v*>``."""
    mu = truth.mu
    return np.array([k @ v, mu @ k, mu @ v, k @ truth.v, v @ truth.v], dtype=np.float64)


def _risk_from_overlaps(o: np.ndarray, lam: float, c: float, truth: SLRTruth) -> float:
    """The risk of ``c T(k, v, lam)`` for unit ``(k, v)`` with overlaps ``o``."""
    rho, m_s, m_u, c_ka, c_vv = (float(x) for x in o)
    L, g, eps = truth.L, truth.gamma, truth.noise_sd
    # noise tokens
    nm = noise_token_moments(lam)
    fN = rho * nm["erf_s"]
    fN2 = rho**2 * nm["erf2_s2"] + (1.0 - rho**2) * nm["erf2"]

    # the signal token, as integrals over t ~ N(0, 1)
    def e_u(t):
        return m_u + g * rho * t

    def w(t):  # scalar or array t (the tests' dense check passes a grid)
        return erf(lam * (m_s + g * t))

    t0 = -m_s / g  # the step of erf(lambda s)
    fS = _expect(lambda t: w(t) * e_u(t), t0)
    afS = _expect(lambda t: w(t) * (e_u(t) * g * c_ka * t + g**2 * (c_vv - rho * c_ka)), t0)
    fS2 = _expect(lambda t: w(t) ** 2 * (e_u(t) ** 2 + g**2 * (1.0 - rho**2)), t0)
    ET2 = fS2 + (L - 1) * fN2 + 2 * (L - 1) * fS * fN + (L - 1) * (L - 2) * fN**2
    return g**2 + eps**2 - 2.0 * c * afS + c**2 * ET2


#: central-difference step for the risk's derivatives in the overlaps (the overlaps
#: are O(1) to O(sqrt(d)); the quadrature's relative error QUAD_RTOL = 1e-12 then
#: leaves ~1e-6 relative error in a derivative)
FD_STEP = 1e-6


def erf_population_gradient(
    k: ArrayLike, v: ArrayLike, lam: float, truth: SLRTruth
) -> tuple[float, np.ndarray, np.ndarray]:
    """The population risk of erf attention at unit ``(k, v)`` and its Euclidean
    gradients in ``k`` and ``v``.

    The risk depends on ``(k, v)`` only through five overlaps (``<k, v>``,
    ``<mu, k>``, ``<mu, v>``, ``<k, v*>``, ``<v, v*>``), so the gradients lie in
    ``span{v, mu, v*}`` and ``span{k, mu, v*}``: the derivatives in the overlaps are
    taken by central differences (:data:`FD_STEP`) and carried to ``k``, ``v`` by
    the chain rule, ten risk evaluations whatever ``d``.

    Returns
    -------
    (risk, dR/dk, dR/dv)
    """
    k, v = np.asarray(k, dtype=np.float64), np.asarray(v, dtype=np.float64)
    o = _overlaps(k, v, truth)
    return (_risk_from_overlaps(o, lam, 1.0, truth), *_gradient(o, k, v, lam, truth))


def _gradient(o, k, v, lam, truth) -> tuple[np.ndarray, np.ndarray]:
    """dR/dk, dR/dv at unit ``(k, v)`` with overlaps ``o`` (:func:`erf_population_gradient`)."""
    dr = np.empty(5)
    for i in range(5):
        e = np.zeros(5)
        e[i] = FD_STEP
        dr[i] = (
            _risk_from_overlaps(o + e, lam, 1.0, truth)
            - _risk_from_overlaps(o - e, lam, 1.0, truth)
        ) / (2 * FD_STEP)
    mu, vs = truth.mu, truth.v
    return dr[0] * v + dr[1] * mu + dr[3] * vs, dr[0] * k + dr[2] * mu + dr[4] * vs


@dataclasses.dataclass(frozen=True)
class PopulationFit:
    """The end of :func:`erf_population_pgd`.

    Attributes
    ----------
    k, v : (d,) unit vectors
    lam : float
        The risk-minimising lambda at ``(k, v)`` (last refit).
    risk : float
        The population risk at ``(k, v, lam)``.
    kappa, nu : float
        ``<k, k*>`` and ``<v, v*>``.
    risks : (n,) array
        The risk after every accepted step (non-increasing by construction).
    grad_norm : float
        The Riemannian gradient's norm at the end (sphere x sphere, at ``lam``).
    steps : int
        Accepted steps over all rounds.
    """

    k: np.ndarray
    v: np.ndarray
    lam: float
    risk: float
    kappa: float
    nu: float
    risks: np.ndarray
    grad_norm: float
    steps: int


def erf_best_lambda(k: ArrayLike, v: ArrayLike, truth: SLRTruth, bounds=(1e-3, 1e2)) -> float:
    """The lambda minimising the population risk of erf attention at ``(k, v)``
    (bounded search on ``log lambda``)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda t: erf_population_risk(k, v, math.exp(t), truth),
        bounds=(math.log(bounds[0]), math.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(res.x))


def erf_population_pgd(
    truth: SLRTruth,
    k0: ArrayLike,
    v0: ArrayLike,
    *,
    lam: float = 0.1,
    steps: int = 500,
    rounds: int = 3,
    gtol: float = 1e-7,
    refit_lambda: bool = True,
) -> PopulationFit:
    """Projected (Riemannian) gradient descent of erf attention's *population* risk.

    The population counterpart of :func:`bayes_ips.single_location.pgd.fit_pgd`, as
    arXiv 2410.01537 studies it, on the complete closed-form risk
    (:func:`erf_population_risk`).  ``(k, v)`` move on the product of unit spheres
    with Armijo backtracking (the risk is deterministic, so a step is kept only if
    it lowers the risk by a fixed share of its first-order decrease; the step
    doubles after each success).  With ``refit_lambda`` each round ends by setting
    lambda to the minimiser of the risk at the current ``(k, v)``
    (:func:`erf_best_lambda`), and the next round descends at that lambda: block
    coordinate descent in ``((k, v), lambda)``.

    Parameters
    ----------
    truth : SLRTruth
    k0, v0 : (d,) arrays
        Starting points (normalised).
    lam : float
        Lambda of the first round.
    steps : int
        Most accepted steps per round.
    rounds : int
        Rounds of descent and lambda refit (1 and no refit: plain PGD at ``lam``).
    gtol : float
        A round ends when the Riemannian gradient's norm falls below this.
    """
    k0, v0 = np.asarray(k0, dtype=np.float64), np.asarray(v0, dtype=np.float64)
    if k0.shape != (truth.d,) or v0.shape != (truth.d,):
        raise InputError(f"k0 and v0 must have shape ({truth.d},), got {k0.shape} and {v0.shape}")
    if not (np.all(np.isfinite(k0)) and np.all(np.isfinite(v0))):
        raise InputError("k0 and v0 must be finite")
    if not (lam > 0) or math.isinf(lam):
        raise InputError(f"lambda must be a positive finite number, got {lam}")
    for name, n in (("steps", steps), ("rounds", rounds)):
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise InputError(f"{name} must be a positive integer, got {n}")
    with warnings.catch_warnings():
        # quad's "roundoff error" at QUAD_RTOL: the integrals are still exact to ~1e-14
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return _pgd(truth, k0, v0, float(lam), int(steps), int(rounds), gtol, refit_lambda)


def _pgd(truth, k0, v0, lam, steps, rounds, gtol, refit_lambda) -> PopulationFit:
    k, v = k0 / np.linalg.norm(k0), v0 / np.linalg.norm(v0)
    risks: list[float] = []
    n_steps, t = 0, 1.0
    gnorm = math.inf
    for _ in range(rounds):
        r, gk, gv = erf_population_gradient(k, v, lam, truth)
        for _ in range(steps):
            gk, gv = gk - (gk @ k) * k, gv - (gv @ v) * v  # tangent parts
            g2 = float(gk @ gk + gv @ gv)
            gnorm = math.sqrt(g2)
            if gnorm < gtol:
                break
            while True:  # Armijo backtracking along the retraction
                kn, vn = k - t * gk, v - t * gv
                kn, vn = kn / np.linalg.norm(kn), vn / np.linalg.norm(vn)
                rn = _risk_from_overlaps(_overlaps(kn, vn, truth), lam, 1.0, truth)
                if rn <= r - 1e-4 * t * g2:
                    break
                t *= 0.5
                if t < 1e-14:
                    break
            if t < 1e-14:
                break
            k, v, r = kn, vn, rn
            n_steps += 1
            risks.append(rn)
            t *= 2.0
            gk, gv = _gradient(_overlaps(k, v, truth), k, v, lam, truth)  # r is rn
        if refit_lambda:
            lam = erf_best_lambda(k, v, truth)
    risk = erf_population_risk(k, v, lam, truth)
    return PopulationFit(
        k=k,
        v=v,
        lam=lam,
        risk=risk,
        kappa=float(k @ truth.k),
        nu=float(v @ truth.v),
        risks=np.asarray(risks),
        grad_norm=gnorm,
        steps=n_steps,
    )
