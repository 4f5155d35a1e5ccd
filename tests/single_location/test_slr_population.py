"""The closed-form population risk of erf attention against quadrature and Monte Carlo."""

import math

import jax
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import erf

from bayes_ips.errors import InputError
from bayes_ips.single_location import population
from bayes_ips.single_location.attention import erf_attention
from bayes_ips.single_location.population import erf_population_risk, noise_token_moments
from bayes_ips.single_location.risk import risk
from bayes_ips.single_location.simulate import make_truth

# Closed form against Monte Carlo: the gap in units of the MC s.e.  About 20 comparisons
# in this module; Z = 4.5 keeps the family-wise false-alarm rate below ~1e-4.
Z = 4.5
# scipy's adaptive quadrature reaches ~1e-12 relative on these smooth integrands
QUAD_RTOL = 1e-10
# a trapezoid rule of step h on an integrand with an erf step of width w errs by ~(h / w)^2
TRAPEZOID_RTOL = 1e-7


@pytest.mark.parametrize("lam", [0.05, 0.3, 1.0, 5.0])
def test_noise_token_moments_match_quadrature(lam):
    def expect(f):
        return integrate.quad(lambda s: f(s) * stats.norm.pdf(s), -np.inf, np.inf,
                              epsabs=0, epsrel=1e-13, limit=200)[0]  # fmt: skip

    m = noise_token_moments(lam)
    assert m["erf_s"] == pytest.approx(expect(lambda s: erf(lam * s) * s), rel=QUAD_RTOL)
    assert m["erf2"] == pytest.approx(expect(lambda s: erf(lam * s) ** 2), rel=QUAD_RTOL)
    assert m["erf2_s2"] == pytest.approx(expect(lambda s: (erf(lam * s) * s) ** 2), rel=QUAD_RTOL)


@pytest.mark.parametrize(
    "lam,gamma",
    [(0.1, math.sqrt(0.5))]
    + [pytest.param(lam, g, marks=pytest.mark.slow) for lam, g in [(1.0, 1.0), (5.0, 1.3)]],
)
def test_signal_integrals_agree_with_a_dense_trapezoid_rule(lam, gamma, monkeypatch):
    """The adaptive quadrature against 400001 points on [-12, 12] (step 6e-5, far below
    the width 1 / (lambda gamma) >= 0.15 of the erf step; Gaussian tail beyond: 1e-32)."""
    t = make_truth(jax.random.PRNGKey(0), 20, gamma=gamma)
    rng = np.random.default_rng(0)
    pairs = [(t.k, t.v), tuple(rng.normal(size=(2, 20)))]
    adaptive = [erf_population_risk(k, v, lam, t) for k, v in pairs]
    grid = np.linspace(-12, 12, 400_001)
    phi = stats.norm.pdf(grid)

    def trapezoid(fn, t0):  # the integrands are ufunc arithmetic: one call on the grid
        return float(np.trapezoid(fn(grid) * phi, grid))

    monkeypatch.setattr(population, "_expect", trapezoid)
    for (k, v), a in zip(pairs, adaptive, strict=True):
        assert erf_population_risk(k, v, lam, t) == pytest.approx(a, rel=TRAPEZOID_RTOL)


def _pairs(t, seed):
    """(k, v) at the truth, exchanged, at random, in between, and with non-unit norms."""
    rng = np.random.default_rng(seed)
    return {
        "truth": (t.k, t.v),
        "swapped": (t.v, t.k),
        "random": tuple(rng.normal(size=(2, t.d))),
        "mixed": (0.8 * t.k + 0.6 * t.v, 0.6 * t.k + 0.8 * t.v),
        "scaled": (2.0 * t.k, -0.5 * (t.v + 0.3 * t.k)),
    }


# (d, L, gamma, lambda, noise): the paper's gamma^2 = 0.5 at its lambda range, gamma = 1,
# gamma > 1, few and many tokens, a saturated erf (lambda = 2)
# The fast tier checks the paper's point and gamma > 1 with few tokens; the slow tier
# (CI) all five.
POINTS = [
    pytest.param(20, 10, math.sqrt(0.5), 0.1, 0.1, marks=pytest.mark.slow),
    pytest.param(20, 10, 1.0, 1.0, 0.2, marks=pytest.mark.slow),
    (5, 3, 1.3, 0.5, 0.2),
    pytest.param(50, 4, 0.7, 2.0, 0.0, marks=pytest.mark.slow),
    pytest.param(20, 6, 1.3, 5.0, 0.1, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("d,L,gamma,lam,noise", POINTS)
def test_closed_form_matches_the_monte_carlo_risk(d, L, gamma, lam, noise):
    t = make_truth(jax.random.PRNGKey(d), d, L=L, gamma=gamma, noise_sd=noise)
    key = jax.random.PRNGKey(1)
    for name, (k, v) in _pairs(t, d).items():
        R = erf_population_risk(k, v, lam, t)
        mc = risk(key, lambda X: erf_attention(X, k, v, lam), t, 20_000)  # noqa: B023
        assert abs(R - mc.mean) < Z * mc.se, (name, R, mc.mean, mc.se)


@pytest.mark.slow  # ~9 s: 4096 sequences of 10 tokens in 400 dimensions, twice
def test_closed_form_matches_the_monte_carlo_risk_at_the_papers_d_400():
    t = make_truth(jax.random.PRNGKey(400), 400, gamma=math.sqrt(0.5))
    key = jax.random.PRNGKey(2)
    for k, v in [(t.k, t.v), tuple(np.random.default_rng(4).normal(size=(2, 400)))]:
        R = erf_population_risk(k, v, 0.07, t)
        mc = risk(key, lambda X: erf_attention(X, k, v, 0.07), t, 4096)  # noqa: B023
        assert abs(R - mc.mean) < Z * mc.se


def test_the_noise_tokens_arcsin_term_is_needed():
    """Without (L - 1)(2/pi) arcsin(2 lambda^2 / (1 + 2 lambda^2)) (the reference's R) the
    risk at (k*, v*) (rho = 0, where it is the whole noise-token term) is far off."""
    L, lam = 10, 1.0
    t = make_truth(jax.random.PRNGKey(3), 20, L=L, gamma=math.sqrt(0.5))
    R = erf_population_risk(t.k, t.v, lam, t)
    dropped = (L - 1) * (2 / math.pi) * math.asin(2 * lam**2 / (1 + 2 * lam**2))
    mc = risk(jax.random.PRNGKey(4), lambda X: erf_attention(X, t.k, t.v, lam), t, 20_000)
    assert abs(R - mc.mean) < Z * mc.se
    assert abs(R - dropped - mc.mean) > 20 * mc.se


def test_bad_input():
    t = make_truth(jax.random.PRNGKey(0), 4)
    for k, v, lam, fragment in [
        (np.zeros(4), t.v, 0.1, "non-zero"),
        (t.k, t.v, 0.0, "lambda"),
        (t.k[:3], t.v, 0.1, "shape"),
    ]:
        with pytest.raises(InputError, match=fragment):
            erf_population_risk(k, v, lam, t)


# --- population-level PGD -------------------------------------------------------------

# the overlap derivatives are central differences of step FD_STEP = 1e-6 on a risk
# exact to ~1e-12 relative: ~1e-6 relative error, checked at 1e-4 against a second,
# independent difference in the full d-dimensional k, v (step 1e-5)
GRAD_RTOL = 1e-4


def test_population_gradient_matches_differences_in_k_and_v():
    truth = make_truth(jax.random.PRNGKey(3), 6, gamma=0.8)
    rng = np.random.default_rng(0)
    k, v = rng.normal(size=6), rng.normal(size=6)
    k, v = k / np.linalg.norm(k), v / np.linalg.norm(v)
    r, gk, gv = population.erf_population_gradient(k, v, 0.4, truth)
    assert r == pytest.approx(erf_population_risk(k, v, 0.4, truth), rel=1e-14)

    def risk_unnormalised(kk, vv):  # the gradient is of the formula at unit (k, v), extended
        return population._risk_from_overlaps(population._overlaps(kk, vv, truth), 0.4, 1, truth)

    h = 1e-5
    for _ in range(3):
        dk, dv = rng.normal(size=6), rng.normal(size=6)
        fd = (
            risk_unnormalised(k + h * dk, v + h * dv) - risk_unnormalised(k - h * dk, v - h * dv)
        ) / (2 * h)
        assert gk @ dk + gv @ dv == pytest.approx(fd, rel=GRAD_RTOL)


def test_population_pgd_descends_to_the_better_of_the_truth_and_its_swap():
    """From a random start the risk never rises, the Riemannian gradient vanishes,
    and the end is one of the two minima, (k*, v*) up to erf's sign or the swap
    (v*, k*), at its best lambda.  At d = 10 both are local minima (the swap lower,
    0.677 against 0.686) and this start ends at the truth's."""
    truth = make_truth(jax.random.PRNGKey(0), 10, gamma=1.0)
    rng = np.random.default_rng(1)
    fit = population.erf_population_pgd(
        truth, rng.normal(size=10), rng.normal(size=10), steps=300, rounds=2
    )
    assert np.all(np.diff(fit.risks) <= 0)
    assert fit.grad_norm < 1e-6
    at = {}
    for name, (k, v) in {"truth": (truth.k, truth.v), "swap": (truth.v, truth.k)}.items():
        lam = population.erf_best_lambda(k, v, truth)
        at[name] = erf_population_risk(k, v, lam, truth)
    assert abs(fit.kappa) > 1 - 1e-6 and abs(fit.nu) > 1 - 1e-6  # the truth's basin
    assert fit.risk == pytest.approx(at["truth"], rel=1e-8)
    assert at["swap"] < at["truth"]  # a local, not the global, minimum
    assert fit.risk == pytest.approx(erf_population_risk(fit.k, fit.v, fit.lam, truth))


def test_the_truth_is_a_stationary_point_of_the_population_risk():
    truth = make_truth(jax.random.PRNGKey(1), 8, gamma=0.7)
    _, gk, gv = population.erf_population_gradient(truth.k, truth.v, 0.2, truth)
    gk, gv = gk - (gk @ truth.k) * truth.k, gv - (gv @ truth.v) * truth.v
    assert np.linalg.norm(gk) + np.linalg.norm(gv) < 1e-8


def test_population_pgd_bad_input():
    truth = make_truth(jax.random.PRNGKey(0), 4)
    ok = np.ones(4)
    with pytest.raises(InputError, match="shape"):
        population.erf_population_pgd(truth, np.ones(3), ok)
    with pytest.raises(InputError, match="finite"):
        population.erf_population_pgd(truth, ok * np.nan, ok)
    with pytest.raises(InputError, match="lambda"):
        population.erf_population_pgd(truth, ok, ok, lam=0.0)
    with pytest.raises(InputError, match="steps"):
        population.erf_population_pgd(truth, ok, ok, steps=0)
