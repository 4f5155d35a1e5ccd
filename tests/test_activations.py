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
