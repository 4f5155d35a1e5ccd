"""The phi* families: smoothness, serialisation, refusal of bad options."""

import math

import jax
import numpy as np
import pytest

from bayes_ips.activations import PhiSpec, make_phi, phi_eval
from bayes_ips.errors import InputError


@pytest.mark.parametrize("beta", [0.5, 1.5])
def test_holder_family_has_exact_exponent_at_its_kinks(beta):
    """Second differences at a kink scale like h^beta (smooth parts give h^2).

    At the kink z_k, f(z+h) - 2f(z) + f(z-h) = 2 w_k h^beta + O(h^2), so the
    log-log slope over h in [1e-5, 1e-3] is beta up to O(h^(2-beta)) = at most
    0.03 here; tolerance 0.05.
    """
    spec = make_phi(jax.random.PRNGKey(1), "holder", beta=beta)
    zk = spec.params["kinks"][1]
    h = np.geomspace(1e-5, 1e-3, 9)
    f = lambda z: np.asarray(phi_eval(spec, np.asarray(z)))  # noqa: E731
    d2 = np.abs(f(zk + h) - 2 * f(zk) + f(zk - h))
    slope = np.polyfit(np.log(h), np.log(d2), 1)[0]
    assert slope == pytest.approx(beta, abs=0.05)
    # away from the kinks the function is smooth: second differences ~ h^2
    z0 = max(spec.params["kinks"]) + 1.0
    d2s = np.abs(f(z0 + h) - 2 * f(z0) + f(z0 - h))
    assert np.polyfit(np.log(h[3:]), np.log(d2s[3:]), 1)[0] == pytest.approx(2.0, abs=0.1)


def test_even_integer_beta_is_not_a_polynomial():
    """beta = 2 uses sign(x)|x|^2: the third difference at the kink does not vanish like h^3."""
    spec = make_phi(jax.random.PRNGKey(0), "holder", beta=2.0)
    zk = spec.params["kinks"][0]
    h = np.geomspace(1e-4, 1e-2, 7)
    f = lambda z: np.asarray(phi_eval(spec, np.asarray(z)))  # noqa: E731
    d3 = np.abs(f(zk + 1.5 * h) - 3 * f(zk + 0.5 * h) + 3 * f(zk - 0.5 * h) - f(zk - 1.5 * h))
    assert np.polyfit(np.log(h), np.log(d3), 1)[0] == pytest.approx(2.0, abs=0.1)


def test_bspline_family_is_a_degree_p_spline_with_beta_p():
    spec = make_phi(jax.random.PRNGKey(3), "bspline", beta=3)
    assert spec.beta == 3.0 and spec.params["degree"] == 3
    # vanishes (apart from the tanh trend) beyond the spline's support
    z = np.array([-10.0, 10.0])
    np.testing.assert_allclose(np.asarray(phi_eval(spec, z)), np.tanh(z), atol=1e-12)


def test_json_round_trip_and_scale():
    spec = make_phi(jax.random.PRNGKey(0), "holder", beta=0.7).with_scale(0.3)
    back = PhiSpec.from_json(spec.to_json())
    assert back == spec
    u = np.linspace(-1, 1, 11)
    np.testing.assert_allclose(np.asarray(phi_eval(back, u)), np.asarray(phi_eval(spec, u)))
    smooth = PhiSpec.from_json(make_phi(jax.random.PRNGKey(0), "tanh").to_json())
    assert math.isinf(smooth.beta)
    np.testing.assert_allclose(np.asarray(phi_eval(smooth.with_scale(2.0), u)), np.tanh(u / 2))


@pytest.mark.parametrize(
    "family,beta",
    [("relu", None), ("holder", None), ("holder", 0.0), ("holder", -1.0), ("bspline", 2.5)],
)
def test_bad_specs_are_refused(family, beta):
    with pytest.raises(InputError):
        make_phi(jax.random.PRNGKey(0), family, beta=beta)


def test_corrupt_json_is_refused():
    with pytest.raises(InputError):
        PhiSpec.from_json('{"family": "tanh"')


# ------------------------------------------------------------------- weierstrass

# Scales over which the local oscillation is fitted: 4 decades, well inside the
# range where the truncated sum is the infinite one (its top frequency is 2^25,
# so scales >> 3e-8) and below the O(1) scale of its first term.
_SCALES = np.geomspace(1e-5, 1e-1, 17)
_OFFSETS = np.linspace(-1.0, 1.0, 129)  # |t| <= h sampled at 129 points for the max
_N_POINTS = 100
# Per point the fitted slope scatters around the exponent (the oscillation constant
# moves log-periodically with the scale and from point to point): measured over 6
# keys x 100 points, its 5-95 % range is beta +- 0.08 and its standard deviation
# ~0.045, so the median of 100 points has a standard error of ~0.006.
EXPONENT_TOL = 0.03  # |median slope - beta|: 5 standard errors of the median
POINT_TOL = 0.12  # at least 90 % of the points within this of beta (rough everywhere)
TAIL_FRACTION = 0.02  # omitted tail (sup) / smallest oscillation at the finest knots


def _oscillation_slopes(spec, m, key):
    """Log-log slopes of osc(z, h) = max_{|t| <= h} |f^(m)(z + t) - f^(m)(z)| at random z.

    ``f^(m)`` is taken by ``jax.grad`` of :func:`phi_eval` (so this also checks
    that the family is traceable).  Returns the slopes (one per point) and the
    oscillations, (points, scales).
    """
    f = lambda u: phi_eval(spec, u)  # noqa: E731
    for _ in range(m):
        f = jax.grad(f)
    fv = jax.jit(jax.vmap(f))
    z = np.asarray(jax.random.uniform(key, (_N_POINTS,), minval=-3.0, maxval=3.0))
    Z = z[:, None, None] + _SCALES[None, :, None] * _OFFSETS
    F = np.asarray(fv(Z.ravel())).reshape(Z.shape)
    osc = np.abs(F - np.asarray(fv(z))[:, None, None]).max(axis=-1)
    return np.polyfit(np.log(_SCALES), np.log(osc).T, 1)[0], osc


@pytest.mark.parametrize(
    "beta", [1.5] + [pytest.param(b, marks=pytest.mark.slow) for b in (0.5, 2.5)]
)
def test_weierstrass_has_exact_exponent_at_every_point(beta):
    """The m-th derivative's local oscillation scales like h^(beta - m) at random points.

    m = floor(beta): for beta > 1 the function itself is C^1 and its oscillation
    scales like h (checked), which is why the exponent is read off f^(m).
    """
    from bayes_ips.activations import weierstrass_terms

    spec = make_phi(jax.random.PRNGKey(11), "weierstrass", beta=beta)
    m = math.floor(beta)
    slopes, osc = _oscillation_slopes(spec, m, jax.random.PRNGKey(12))
    measured = m + slopes
    assert abs(np.median(measured) - beta) < EXPONENT_TOL
    assert np.mean(np.abs(measured - beta) < POINT_TOL) >= 0.9
    # not an integer exponent (what a function smooth between kinks would show)
    assert abs(np.median(measured) - round(np.median(measured))) > 0.4
    if m >= 1:
        raw, _ = _oscillation_slopes(spec, 0, jax.random.PRNGKey(12))
        assert np.median(raw) == pytest.approx(1.0, abs=EXPONENT_TOL)
    # the cut: the omitted terms (k >= 26) of f^(m), bounded in sup norm, are a
    # small fraction of its oscillation at h = 1e-3, the finest knot width of a study
    _, w = weierstrass_terms(beta, 80)
    k = np.arange(80)
    tail = spec.params["amplitude"] * np.sum((w * 2.0 ** (k * m))[len(spec.params["phases"]) :])
    assert tail < TAIL_FRACTION * osc[:, np.argmin(np.abs(_SCALES - 1e-3))].min()


def test_weierstrass_is_deterministic_from_the_key():
    spec = make_phi(jax.random.PRNGKey(5), "weierstrass", beta=0.5)
    again = make_phi(jax.random.PRNGKey(5), "weierstrass", beta=0.5)
    other = make_phi(jax.random.PRNGKey(6), "weierstrass", beta=0.5)
    assert spec == again and spec.params["phases"] != other.params["phases"]
    u = np.linspace(-3.0, 3.0, 101)
    np.testing.assert_array_equal(np.asarray(phi_eval(spec, u)), np.asarray(phi_eval(again, u)))
    assert np.abs(np.asarray(phi_eval(spec, u)) - np.asarray(phi_eval(other, u))).max() > 0.1
    back = PhiSpec.from_json(spec.with_scale(0.7).to_json())
    np.testing.assert_array_equal(
        np.asarray(phi_eval(back, u)), np.asarray(phi_eval(spec.with_scale(0.7), u))
    )
    # jit-traceable, and the same numbers under jit
    np.testing.assert_allclose(
        np.asarray(jax.jit(lambda x: phi_eval(spec, x))(u)),
        np.asarray(phi_eval(spec, u)),
        rtol=1e-13,
        atol=1e-13,
    )


def test_weierstrass_terms_and_long_range_mean_square():
    """make_phi's amplitude gives mean square 1/2 over a long range of z (the phases
    decorrelate there); make_truth then sets it under rho (tests/test_simulate.py)."""
    from bayes_ips.activations import WEIERSTRASS_MEAN_SQUARE, weierstrass_terms

    freqs, w = weierstrass_terms(1.5)
    np.testing.assert_array_equal(freqs, 2.0 ** np.arange(26))
    np.testing.assert_allclose(w, 2.0 ** (-1.5 * np.arange(26)))
    spec = make_phi(jax.random.PRNGKey(2), "weierstrass", beta=1.5)
    z = np.linspace(0.0, 2000 * np.pi, 400_001)  # 1000 periods of the lowest term
    ms = float(np.mean(np.asarray(phi_eval(spec, z)) ** 2))
    # the grid resolves the terms up to 2^13 (7 points a period); the rest weigh
    # < 2^(-3 * 14) of the total mean square
    assert ms == pytest.approx(WEIERSTRASS_MEAN_SQUARE, rel=1e-3)


@pytest.mark.parametrize(
    "beta, message",
    [
        (None, "needs beta > 0"),
        (0.0, "beta must be > 0"),
        (-0.5, "beta must be > 0"),
        (1.0, "non-integer beta"),
        (2, "non-integer beta"),
        (math.inf, "finite beta"),
    ],
)
def test_weierstrass_refuses_bad_beta(beta, message):
    with pytest.raises(InputError, match=message) as e:
        make_phi(jax.random.PRNGKey(0), "weierstrass", beta=beta)
    assert "\n" not in str(e.value)


def test_weierstrass_refuses_float32():
    spec = make_phi(jax.random.PRNGKey(0), "weierstrass", beta=0.5)
    with jax.enable_x64(False), pytest.raises(InputError, match="needs float64"):
        phi_eval(spec, np.linspace(-1.0, 1.0, 5))


def test_unknown_family_is_one_line():
    with pytest.raises(InputError, match="weierstrass") as e:
        make_phi(jax.random.PRNGKey(0), "weierstrass2", beta=0.5)
    assert "\n" not in str(e.value)
