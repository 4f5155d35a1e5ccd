"""The multi-head model: H = 1 is the single-head model, H = 2 matches closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayes_ips.models.lowrank_spline import KAPPA, gauge_log_factor, lowrank_spline
from bayes_ips.models.multihead_spline import heads_setup, multihead_spline
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy.stats import halfcauchy, multivariate_normal, norm

from bayes_ips.collapsed import pspline_precision
from bayes_ips.gauge import gauge_factors
from bayes_ips.pairs import off_diagonal_scores
from bayes_ips.pairwise import design

M, N, d, r = 12, 4, 3, 1


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (M, N, d))
    Y = rng.normal(size=(M, N))
    U = rng.normal(size=(2, d, r))
    V = rng.normal(size=(2, d, r))
    scores = [off_diagonal_scores(X, U[h], V[h]) for h in range(2)]
    return X, Y, U, V, scores


def _kwargs(Y, scores, H):
    setup = heads_setup(Y, scores[:H], n_intervals=3)
    return dict(heads=H, rank=r, **setup)


def test_heads_setup_shapes(data):
    X, Y, U, V, scores = data
    s = heads_setup(Y, scores, n_intervals=4)
    assert s["knots"].breaks.shape == (2, 5)
    assert s["penalty"].shape == (2, 5, 7)  # nb = 3 + 1 + 3 = 7
    np.testing.assert_allclose(s["knots"].breaks[:, [0, -1]], [[min(x), max(x)] for x in scores])
    assert s["y_scale"] == pytest.approx(np.sqrt(np.mean(Y**2)))


@pytest.mark.slow  # ~4 s of compilation; lowrank_spline itself is tested in the fast tier
def test_one_head_is_lowrank_spline(data):
    X, Y, U, V, scores = data
    kw = _kwargs(Y, scores, 1)
    params = {"U": U[:1], "V": V[:1], "tau": jnp.array([0.7]), "sigma": 0.4}
    multi, _ = log_density(multihead_spline, (X, Y), kw, params)
    single_kw = dict(
        rank=r,
        knots=type(kw["knots"])(kw["knots"].breaks[0], 3, 1),
        penalty=kw["penalty"][0],
        y_scale=kw["y_scale"],
    )
    single_params = {"U": U[0], "V": V[0], "tau": 0.7, "sigma": 0.4}
    single, _ = log_density(lowrank_spline, (X, Y), single_kw, single_params)
    np.testing.assert_allclose(multi, single, rtol=1e-12)


def _prior_terms(U, V, tau, sigma, y_scale):
    """Log prior of U, V (with the gauge factors), tau (half-Cauchy), sigma (half-normal)."""
    lp = norm.logpdf(U).sum() + norm.logpdf(V).sum()
    lp += sum(float(gauge_log_factor(U[h], V[h])) for h in range(U.shape[0]))
    lp += np.sum(halfcauchy.logpdf(tau, scale=y_scale))
    lp += np.log(2) + norm.logpdf(sigma, scale=y_scale)
    return lp


def _design(X, U, V, knots):
    Un, Vn = jax.vmap(gauge_factors)(U, V)
    return np.asarray(design(Un, Vn, X, knots)).reshape(M * N, -1)


def _precisions(kw, tau):
    return [
        np.asarray(pspline_precision(kw["penalty"][h], tau[h], KAPPA * kw["y_scale"]))
        for h in range(len(tau))
    ]


def test_two_heads_collapsed_is_gaussian_marginal(data):
    """log N(Y; 0, sigma^2 I + F Q^{-1} F^T), F = [F_1 F_2] built whole, Q block diagonal."""
    X, Y, U, V, scores = data
    kw = _kwargs(Y, scores, 2)
    tau, sigma = np.array([0.7, 1.3]), 0.4
    params = {"U": U, "V": V, "tau": tau, "sigma": sigma}
    got, tr = log_density(multihead_spline, (X, Y), kw, params)
    F = _design(X, U, V, kw["knots"])
    Q1, Q2 = _precisions(kw, tau)
    cov_c = np.zeros((F.shape[1],) * 2)
    nb = Q1.shape[0]
    cov_c[:nb, :nb] = np.linalg.inv(Q1)
    cov_c[nb:, nb:] = np.linalg.inv(Q2)
    cov_y = sigma**2 * np.eye(M * N) + F @ cov_c @ F.T
    marginal = multivariate_normal(np.zeros(M * N), cov_y).logpdf(Y.ravel())
    np.testing.assert_allclose(tr["Y_marginal"]["fn"].log_factor, marginal, rtol=1e-10)
    expected = marginal + _prior_terms(U, V, tau, sigma, kw["y_scale"])
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.slow  # ~3 s of compilation; the collapsed form is checked in the fast tier
def test_two_heads_explicit_joint(data):
    """The explicit model: block prior on c (H, nb) and the Gaussian likelihood of F c."""
    X, Y, U, V, scores = data
    kw = _kwargs(Y, scores, 2)
    tau, sigma = np.array([0.7, 1.3]), 0.4
    nb = kw["penalty"].shape[2]
    c = np.random.default_rng(1).normal(size=(2, nb))
    params = {"U": U, "V": V, "tau": tau, "sigma": sigma, "c": c}
    got, _ = log_density(multihead_spline, (X, Y), {**kw, "collapsed": False}, params)
    F = _design(X, U, V, kw["knots"])
    Qs = _precisions(kw, tau)
    lp_c = sum(
        multivariate_normal(np.zeros(nb), np.linalg.inv(Qs[h])).logpdf(c[h]) for h in range(2)
    )
    lik = norm.logpdf(Y.ravel(), F @ c.ravel(), sigma).sum()
    expected = lik + lp_c + _prior_terms(U, V, tau, sigma, kw["y_scale"])
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.slow  # ~3 s of compilation; the collapsed form is checked in the fast tier
def test_prior_predictive_shapes(data):
    X, Y, U, V, scores = data
    kw = _kwargs(Y, scores, 2)
    tr = handlers.trace(handlers.seed(multihead_spline, 0)).get_trace(X, None, **kw)
    assert tr["A"]["value"].shape == (2, d, d)
    np.testing.assert_allclose(np.linalg.norm(tr["A"]["value"], axis=(1, 2)), 1.0)
    assert tr["c"]["value"].shape == (2, kw["penalty"].shape[2])
    assert tr["Y"]["value"].shape == (M, N)
