"""The L2(rho) error estimate against a closed form."""

import jax
import numpy as np
import pytest

from bayes_ips.metrics import l2_error
from bayes_ips.simulate import g_true, make_truth


def test_l2_error_of_a_shifted_estimate_is_the_squared_shift():
    truth = make_truth(jax.random.PRNGKey(0), 3, 1)
    res = l2_error(jax.random.PRNGKey(1), lambda x, y: g_true(truth, x, y) + 0.3, truth, 5000)
    assert res.error == pytest.approx(0.09, rel=1e-10)
    assert res.se == pytest.approx(0.0, abs=1e-12)


def test_l2_error_matches_closed_form_for_a_linear_phi():
    """phi*(u) = tanh(u / s) vs g_hat = 0: the error is E tanh^2(u/s) under rho.

    The closed form is checked against an independent large Monte Carlo; the
    estimate must agree within 4 standard errors (false-failure rate ~ 6e-5).
    """
    truth = make_truth(jax.random.PRNGKey(0), 4, 2, tokens="gaussian")
    res = l2_error(jax.random.PRNGKey(2), lambda x, y: 0.0 * x[:, 0], truth, 20000)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400_000, 4)), rng.normal(size=(400_000, 4))
    ref = np.mean(np.tanh(np.einsum("pi,ij,pj->p", x, truth.A, y) / truth.phi.scale) ** 2)
    assert abs(res.error - ref) < 4 * res.se
    assert res.relative > 0.9  # predicting 0 is about as bad as predicting the mean
