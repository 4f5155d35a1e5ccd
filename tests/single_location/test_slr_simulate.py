"""Single-location regression: the truth, its validation, and the law of simulated data."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

from bayes_ips.errors import InputError
from bayes_ips.single_location.simulate import SLRTruth, make_truth, simulate

# Moment checks on n draws compare a sample mean with its expectation in units of
# its standard error; Z = 5 keeps the false-alarm rate of the ~10 checks below 1e-5.
Z = 5.0


def test_make_truth_gives_orthogonal_unit_vectors_and_is_deterministic():
    for d in (2, 3, 50, 400):
        t = make_truth(jax.random.PRNGKey(d), d)
        assert t.k.shape == t.v.shape == (d,)
        assert abs(np.linalg.norm(t.k) - 1) < 1e-12 and abs(np.linalg.norm(t.v) - 1) < 1e-12
        assert abs(t.k @ t.v) < 1e-12
    a, b = make_truth(jax.random.PRNGKey(0), 7), make_truth(jax.random.PRNGKey(0), 7)
    np.testing.assert_array_equal(a.k, b.k)
    assert not np.allclose(a.k, make_truth(jax.random.PRNGKey(1), 7).k)
    assert a.params() == {"d": 7, "L": 10, "gamma": math.sqrt(0.5), "noise_sd": 0.1}


def test_given_vectors_are_kept():
    k, v = np.eye(4)[0], np.eye(4)[2]
    t = make_truth(jax.random.PRNGKey(0), 4, k=k, v=v, L=3, gamma=0.5, noise_sd=0.0)
    np.testing.assert_array_equal(t.k, k)
    np.testing.assert_array_equal(t.v, v)
    np.testing.assert_allclose(t.mu, math.sqrt(2) * k)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"d": 1}, "d must be an integer >= 2"),
        ({"d": 2.5}, "d must be an integer >= 2"),
        ({"d": 3, "L": 0}, "L must be a positive integer"),
        ({"d": 3, "gamma": 0.0}, "gamma must be a positive"),
        ({"d": 3, "gamma": float("inf")}, "gamma must be a positive"),
        ({"d": 3, "noise_sd": -0.1}, "noise sd must be finite and >= 0"),
        ({"d": 3, "noise_sd": float("nan")}, "noise sd must be finite and >= 0"),
        ({"d": 3, "k": np.eye(3)[0]}, "give both"),
        ({"d": 3, "k": [1.0, 0, 0], "v": [0, 1.1, 0]}, "unit vector"),
        ({"d": 3, "k": [1.0, 0, 0], "v": [0.6, 0.8, 0]}, "orthogonal"),
        ({"d": 3, "k": [1.0, 0, 0], "v": [0, 1.0]}, "shape"),
        ({"d": 3, "k": [1.0, 0, np.nan], "v": [0, 1.0, 0]}, "NaN"),
    ],
)
def test_bad_truth_raises_one_line_input_error(kwargs, fragment):
    with pytest.raises(InputError, match=fragment) as e:
        make_truth(jax.random.PRNGKey(0), **kwargs)
    assert "\n" not in str(e.value)


def test_bad_sample_size_raises():
    t = make_truth(jax.random.PRNGKey(0), 3)
    for M in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="M must be a positive integer"):
            simulate(jax.random.PRNGKey(0), t, M)


def test_simulated_law_matches_the_model():
    d, L, gamma, eps, M = 5, 4, 0.6, 0.3, 40_000
    t = make_truth(jax.random.PRNGKey(3), d, L=L, gamma=gamma, noise_sd=eps)
    X, Y, J0 = (np.asarray(a) for a in simulate(jax.random.PRNGKey(4), t, M))
    assert X.shape == (M, L, d) and Y.shape == (M,) and J0.shape == (M,)
    assert X.dtype == np.float64 and J0.min() >= 0 and J0.max() < L
    # J0 uniform on the L positions (chi-square goodness of fit)
    counts = np.bincount(J0, minlength=L)
    assert stats.chisquare(counts).pvalue > 1e-4
    signal = X[np.arange(M), J0]  # (M, d)
    others = X[np.arange(L)[None] != J0[:, None]]  # (M (L - 1), d)
    # signal token: mean sqrt(d/2) k*, covariance gamma^2 I
    z = (signal.mean(0) - t.mu) / (gamma / math.sqrt(M))
    assert np.all(np.abs(z) < Z)
    cov = np.cov(signal.T)
    se_var = gamma**2 * math.sqrt(2 / M)  # s.e. of a sample variance of a normal
    assert np.all(np.abs(np.diag(cov) - gamma**2) < Z * se_var)
    assert np.all(np.abs(cov[~np.eye(d, dtype=bool)]) < Z * gamma**2 / math.sqrt(M))
    # other tokens: N(0, I)
    n = len(others)
    assert np.all(np.abs(others.mean(0)) < Z / math.sqrt(n))
    assert np.all(np.abs(others.var(0) - 1) < Z * math.sqrt(2 / n))
    # Y - <x_J0, v*> is the noise: mean 0, sd eps, independent of X
    noise = Y - signal @ t.v
    assert abs(noise.mean()) < Z * eps / math.sqrt(M)
    assert abs(noise.std() - eps) < Z * eps / math.sqrt(2 * M)
    assert abs(np.corrcoef(noise, signal @ t.v)[0, 1]) < Z / math.sqrt(M)


def test_same_key_same_draws():
    t = make_truth(jax.random.PRNGKey(0), 6)
    a = simulate(jax.random.PRNGKey(1), t, 10)
    b = simulate(jax.random.PRNGKey(1), t, 10)
    c = simulate(jax.random.PRNGKey(2), t, 10)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_truth_is_frozen():
    t = make_truth(jax.random.PRNGKey(0), 3)
    with pytest.raises(AttributeError):
        t.L = 2
    assert isinstance(t, SLRTruth) and t.d == 3
