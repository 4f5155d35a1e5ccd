"""The scale gauge of the factors, against NumPy's Frobenius norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_ips.gauge import factor_norm, gauge_factors


@pytest.mark.parametrize(("d", "r"), [(1, 1), (4, 1), (5, 3)])
def test_gauge_factors_give_unit_frobenius_norm(d, r):
    rng = np.random.default_rng(d + r)
    U, V = rng.normal(size=(d, r)), rng.normal(size=(d, r))
    np.testing.assert_allclose(float(factor_norm(U, V)), np.linalg.norm(U @ V.T), rtol=1e-13)
    Un, Vn = gauge_factors(U, V)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(Un @ Vn.T)), 1.0, rtol=1e-13)
    np.testing.assert_array_equal(np.asarray(Vn), V)  # only U is scaled
    # the direction of A is unchanged
    np.testing.assert_allclose(
        np.asarray(Un @ Vn.T), U @ V.T / np.linalg.norm(U @ V.T), rtol=1e-12, atol=1e-15
    )


def test_gauge_factors_are_scale_invariant_and_traceable():
    U = jnp.asarray([[1.0], [0.5], [-0.3]])
    V = jnp.asarray([[0.2], [1.0], [0.4]])
    a = jax.jit(gauge_factors)(3.0 * U, V)[0] @ V.T
    b = gauge_factors(U, 7.0 * V)[0] @ (7.0 * V).T
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13)


def test_the_model_and_erm_use_the_one_gauge():
    from bayes_ips.models import lowrank_spline

    assert lowrank_spline.gauge_factors is gauge_factors
