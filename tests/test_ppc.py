"""Posterior predictive thinning and the Gaussian log-likelihood, against SciPy and by hand."""

import jax
import numpy as np
import pytest
from scipy import stats

from bayes_ips.ppc import (
    PPC_MAX_VALUES,
    gaussian_loglik,
    numpy_generator,
    predictive_draws,
    thin_draws,
)


@pytest.mark.parametrize(
    ("C", "D", "n_values", "max_values"),
    [(2, 500, 10, PPC_MAX_VALUES), (4, 500, 1000, 10**5), (2, 7, 10**9, PPC_MAX_VALUES)],
)
def test_thin_draws_keeps_below_the_bound_and_spans_the_run(C, D, n_values, max_values):
    idx = thin_draws(C, D, n_values, max_values)
    assert idx.dtype.kind == "i" and np.all(np.diff(idx) > 0)
    assert idx[0] == 0 and 1 <= len(idx) <= D
    if C * n_values <= max_values:
        assert C * len(idx) * n_values <= max_values
        assert idx[-1] == D - 1
    else:
        assert len(idx) == 1  # even one draw is too many: one is kept
    if C * D * n_values <= max_values:
        np.testing.assert_array_equal(idx, np.arange(D))


@pytest.mark.parametrize("obs_shape", [(6,), (6, 3)])
def test_predictive_draws_are_mean_plus_sigma_times_the_keys_noise(obs_shape):
    rng = np.random.default_rng(0)
    C, D = 2, 9
    mean = rng.normal(size=(C, D) + obs_shape)
    sigma = rng.uniform(0.5, 2.0, size=(C, D))
    idx = np.array([0, 4, 8])
    key = jax.random.PRNGKey(3)
    y = predictive_draws(key, mean, sigma, idx)
    assert y.shape == (C, 3) + obs_shape
    noise = numpy_generator(key).standard_normal((C, 3) + obs_shape)
    for c in range(C):
        for k, s in enumerate(idx):
            np.testing.assert_allclose(y[c, k], mean[c, s] + sigma[c, s] * noise[c, k], rtol=1e-15)
    # the same key gives the same draws, another key others; the noise is standard normal
    np.testing.assert_array_equal(predictive_draws(key, mean, sigma, idx), y)
    assert not np.allclose(predictive_draws(jax.random.PRNGKey(4), mean, sigma, idx), y)


def test_numpy_generator_is_seeded_by_the_key():
    """Equal keys give equal streams, split keys different ones; the draws pass a KS test
    (named tolerance: p > 1e-3 for 20000 standard normals, a false alarm 1 run in 1000)."""
    k = jax.random.PRNGKey(11)
    a = numpy_generator(k).standard_normal(20000)
    np.testing.assert_array_equal(a, numpy_generator(jax.random.PRNGKey(11)).standard_normal(20000))
    b = numpy_generator(jax.random.split(k)[0]).standard_normal(20000)
    assert not np.allclose(a, b)
    assert stats.kstest(a, "norm").pvalue > 1e-3


@pytest.mark.parametrize("obs_shape", [(5,), (5, 3)])
def test_gaussian_loglik_against_scipy(obs_shape):
    rng = np.random.default_rng(1)
    C, D = 2, 4
    Y = rng.normal(size=obs_shape)
    mean = rng.normal(size=(C, D) + obs_shape)
    sigma = rng.uniform(0.1, 3.0, size=(C, D))
    got = gaussian_loglik(Y, mean, sigma)
    assert got.shape == (C, D) + obs_shape
    expand = (...,) + (None,) * len(obs_shape)
    np.testing.assert_allclose(got, stats.norm.logpdf(Y, loc=mean, scale=sigma[expand]), rtol=1e-12)
