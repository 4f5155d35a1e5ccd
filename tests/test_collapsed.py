"""The collapsed likelihood against the explicit Gaussian marginal, and the penalty."""

import jax
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from bayes_ips.collapsed import (
    collapsed_loglik,
    conditional_c,
    curvature_penalty,
    difference_penalty,
    greville,
    pspline_precision,
    sample_conditional_c,
)
from bayes_ips.pairwise import design, gram
from bayes_ips.spline import design_matrix, make_knots, quantile_breaks


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    M, N, d = 6, 4, 2
    X = rng.uniform(-1, 1, (M, N, d))
    Y = rng.normal(size=(M, N))
    U, V = rng.normal(size=(d, 1)), rng.normal(size=(d, 1))
    S = np.einsum("mid,de,mje->mij", X, U @ V.T, X)
    knots = make_knots(quantile_breaks(S, 4), 3, 1)
    return X, Y, U, V, knots


def test_collapsed_loglik_equals_the_explicit_gaussian_marginal(tiny):
    """Y ~ N(0, sigma^2 I + F Q^{-1} F^T): dense SciPy density, to round-off."""
    X, Y, U, V, knots = tiny
    F = np.asarray(design(U, V, X, knots)).reshape(Y.size, -1)
    D = curvature_penalty(knots, 0.5)
    for sigma, tau in [(0.3, 0.7), (1.5, 0.05), (0.05, 3.0)]:
        Q = np.asarray(pspline_precision(D, tau, 4.0))
        cov = sigma**2 * np.eye(Y.size) + F @ np.linalg.solve(Q, F.T)
        ref = multivariate_normal(np.zeros(Y.size), cov).logpdf(Y.ravel())
        got = float(collapsed_loglik(gram(U, V, X, Y, knots), sigma, Q))
        assert got == pytest.approx(ref, rel=1e-10, abs=1e-9)


def test_conditional_of_c_is_the_gaussian_posterior(tiny):
    X, Y, U, V, knots = tiny
    F = np.asarray(design(U, V, X, knots)).reshape(Y.size, -1)
    sigma = 0.4
    Q = np.asarray(pspline_precision(curvature_penalty(knots, 0.5), 0.3, 4.0))
    prec = F.T @ F / sigma**2 + Q
    mean = np.linalg.solve(prec, F.T @ Y.ravel() / sigma**2)
    cond = conditional_c(gram(U, V, X, Y, knots), sigma, Q)
    np.testing.assert_allclose(np.asarray(cond.mean), mean, rtol=1e-9, atol=1e-10)
    # draws have covariance prec^{-1}: check with 20k draws (relative MC error ~1%,
    # tolerance 5% of the largest variance)
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    draws = np.asarray(jax.vmap(lambda k: sample_conditional_c(k, cond))(keys))
    cov = np.cov(draws.T)
    ref = np.linalg.inv(prec)
    assert np.max(np.abs(cov - ref)) < 0.05 * np.max(np.diag(ref))


@pytest.mark.parametrize("mult", [1, 2])
def test_curvature_penalty_vanishes_on_lines_and_measures_curvature(mult):
    breaks = quantile_breaks(np.random.default_rng(1).standard_t(4, 5000), 9)
    knots = make_knots(breaks, 3, mult)
    D = curvature_penalty(knots, 1.0)
    xi = greville(knots)
    # B-spline coefficients of a + b u are a + b xi_k (Greville): zero penalty
    line = 0.3 + 2.0 * xi
    np.testing.assert_allclose(D @ line, 0.0, atol=1e-8)
    # a quadratic u^2 has phi'' = 2: on uniform knots ||D c||^2 ~ int_{-2}^{2} 4 du = 16
    # (a Riemann sum on the Greville points; measured 16.7, 16.3, 16.2 for K = 9, 20, 40)
    uniform = make_knots(np.linspace(-2, 2, 21), 3, mult)
    u = np.linspace(-2, 2, 4000)
    c, *_ = np.linalg.lstsq(np.asarray(design_matrix(u, uniform)), u**2, rcond=None)
    approx = float(np.sum((curvature_penalty(uniform, 1.0) @ c) ** 2))
    assert approx == pytest.approx(16.0, rel=0.1)
    # units: the penalty is in standardised scores z = u / scale, phi''(z) = scale^2 phi''(u)
    approx2 = float(np.sum((curvature_penalty(uniform, 2.0) @ c) ** 2))
    assert approx2 == pytest.approx(approx * 2.0**3, rel=1e-9)


def test_first_difference_penalty_vanishes_on_constants_and_measures_slope():
    """Order 1: ``||D c||^2 ~ int phi'^2``, zero on constants, in units of the scale."""
    breaks = quantile_breaks(np.random.default_rng(2).standard_t(4, 5000), 9)
    D = difference_penalty(make_knots(breaks, 3, 1), 1.0, 1)
    assert D.shape == (11, 12)  # n_basis - 1 rows
    np.testing.assert_allclose(D @ np.full(12, 0.7), 0.0, atol=1e-10)
    uniform = make_knots(np.linspace(-2, 2, 21), 3, 1)
    xi = greville(uniform)
    # a line u has Greville coefficients xi_k exactly and phi' = 1: the sum of the
    # spacings, the Greville span, which is [-2, 2] here: exactly 4
    D1 = difference_penalty(uniform, 1.0, 1)
    assert float(np.sum((D1 @ xi) ** 2)) == pytest.approx(4.0, rel=1e-12)
    # u^2 has phi' = 2u: int_{-2}^{2} 4 u^2 du = 64 / 3 (a midpoint sum on 22 Greville
    # points; measured 21.5, 0.8% off)
    u = np.linspace(-2, 2, 4000)
    c, *_ = np.linalg.lstsq(np.asarray(design_matrix(u, uniform)), u**2, rcond=None)
    approx = float(np.sum((D1 @ c) ** 2))
    assert approx == pytest.approx(64.0 / 3.0, rel=0.05)
    # units: in z = u / scale, phi'(z) = scale phi'(u) and dz = du / scale
    approx2 = float(np.sum((difference_penalty(uniform, 2.0, 1) @ c) ** 2))
    assert approx2 == pytest.approx(approx * 2.0, rel=1e-9)
    # order 2 is the curvature penalty; other orders are refused
    np.testing.assert_array_equal(
        difference_penalty(uniform, 1.3, 2), curvature_penalty(uniform, 1.3)
    )
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        difference_penalty(uniform, 1.0, 3)


@pytest.mark.parametrize(
    "degree, mult, K", [(0, 1, 5), (1, 1, 1), (2, 2, 7), (3, 1, 24), (3, 3, 6)]
)
def test_greville_is_the_mean_of_each_functions_inner_knots(degree, mult, K):
    """``xi_k = mean(t_{k+1}, ..., t_{k+s})`` of the clamped knot vector, by a naive loop
    over :func:`bayes_ips.spline.full_knot_vector` (midpoints of its spans at degree 0)."""
    from bayes_ips.spline import full_knot_vector, n_basis

    knots = make_knots(np.sort(np.random.default_rng(K).normal(size=K + 1)), degree, mult)
    t = np.asarray(full_knot_vector(knots))
    nb = n_basis(knots)
    if degree == 0:
        ref = [0.5 * (t[k] + t[k + 1]) for k in range(nb)]
    else:
        ref = [sum(t[k + 1 : k + degree + 1]) / degree for k in range(nb)]
    np.testing.assert_allclose(greville(knots), ref, rtol=0, atol=1e-14)
