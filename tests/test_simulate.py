"""The truth side: token laws, noise laws, A*, and the simulated outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_ips.activations import WEIERSTRASS_MEAN_SQUARE, phi_eval
from bayes_ips.errors import InputError
from bayes_ips.simulate import (
    TOKEN_LAWS,
    NoiseLaw,
    TokenLaw,
    g_true,
    gauge_fix,
    make_truth,
    sample_pairs,
    sample_tokens,
    simulate,
)

# Moments from 200k draws: the standard error of a sample mean of an O(1)
# variable is ~2e-3, so 5 s.e. = 0.01 bounds a false failure at ~1e-6.
MOMENT_TOL = 0.01


def test_token_law_moments():
    key = jax.random.PRNGKey(0)
    d, M, N = 4, 50_000, 4
    cube = np.asarray(sample_tokens(key, TokenLaw("cube", d), M, N)).reshape(-1, d)
    assert np.abs(cube).max() <= 1.0
    np.testing.assert_allclose(cube.var(0), 1 / 3, atol=MOMENT_TOL)
    np.testing.assert_allclose(cube.mean(0), 0, atol=MOMENT_TOL)
    aniso = TokenLaw("anisotropic", d)
    Xa = np.asarray(sample_tokens(key, aniso, M, N)).reshape(-1, d)
    np.testing.assert_allclose(Xa.std(0) / np.asarray(aniso.scales), 1, atol=MOMENT_TOL)
    corr = TokenLaw("correlated", d, rho=0.4)
    Xc = np.asarray(sample_tokens(key, corr, M, N))
    # exchangeable: unit variance, correlation rho between two tokens of a sample
    np.testing.assert_allclose(Xc.reshape(-1, d).var(0), 1, atol=2 * MOMENT_TOL)
    c01 = np.mean(Xc[:, 0] * Xc[:, 1], axis=0)
    c23 = np.mean(Xc[:, 2] * Xc[:, 3], axis=0)
    np.testing.assert_allclose(c01, 0.4, atol=2 * MOMENT_TOL)
    np.testing.assert_allclose(c23, 0.4, atol=2 * MOMENT_TOL)
    x, y = sample_pairs(key, corr, 100_000)
    np.testing.assert_allclose(np.mean(np.asarray(x) * np.asarray(y), 0), 0.4, atol=2 * MOMENT_TOL)


@pytest.mark.parametrize("family", ["gaussian", "uniform", "rademacher"])
def test_noise_laws_have_the_asked_sd_and_are_independent_of_x(family):
    truth = make_truth(jax.random.PRNGKey(0), 3, 1, noise_sd=0.3, noise=family)
    X, Y = simulate(jax.random.PRNGKey(1), truth, 40_000, 3)
    clean = make_truth(jax.random.PRNGKey(0), 3, 1, noise_sd=0.0, noise=family)
    _, Y0 = simulate(jax.random.PRNGKey(1), clean, 40_000, 3)
    eta = np.asarray(Y - Y0)
    assert eta.std() == pytest.approx(0.3, rel=MOMENT_TOL)
    assert abs(np.corrcoef(eta.ravel(), np.asarray(Y0).ravel())[0, 1]) < 0.02
    if family == "rademacher":
        np.testing.assert_allclose(np.abs(eta), 0.3, rtol=1e-12)


def test_outputs_match_a_naive_loop():
    truth = make_truth(jax.random.PRNGKey(4), 3, 2, phi="holder", beta=1.5, noise_sd=0.0)
    X, Y = simulate(jax.random.PRNGKey(5), truth, 7, 4)
    X, Y = np.asarray(X), np.asarray(Y)
    for m in range(7):
        for i in range(4):
            u = [X[m, i] @ truth.A @ X[m, j] for j in range(4) if j != i]
            assert Y[m, i] == pytest.approx(
                float(np.mean(np.asarray(phi_eval(truth.phi, np.array(u)))))
            )


def test_truth_is_gauge_fixed_with_the_asked_rank():
    truth = make_truth(jax.random.PRNGKey(0), 6, 2, tokens="gaussian")
    assert np.linalg.norm(truth.A) == pytest.approx(1.0)
    assert truth.A.flat[np.argmax(np.abs(truth.A))] > 0
    assert truth.rank == 2
    # the scale of phi* is the sd of the scores under rho
    x, y = sample_pairs(jax.random.PRNGKey(9), truth.tokens, 100_000)
    sd = float(jnp.std(jnp.einsum("pi,ij,pj->p", x, jnp.asarray(truth.A), y)))
    assert truth.phi.scale == pytest.approx(sd, rel=0.03)


def test_gauge_fix_returns_the_factor():
    A = -3.0 * np.outer([1.0, 2.0], [0.5, -1.0])
    Af, c = gauge_fix(A)
    np.testing.assert_allclose(Af * c, A)
    assert Af.flat[np.argmax(np.abs(Af))] > 0


def test_same_key_same_data():
    t = make_truth(jax.random.PRNGKey(0), 3, 1)
    a = simulate(jax.random.PRNGKey(1), t, 10, 3)
    b = simulate(jax.random.PRNGKey(1), t, 10, 3)
    c = simulate(jax.random.PRNGKey(2), t, 10, 3)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[1], c[1])


def test_user_given_A():
    A = np.outer([1.0, 0, 0], [0, 1.0, 0])
    t = make_truth(jax.random.PRNGKey(0), 3, 1, A=A)
    np.testing.assert_allclose(t.A, A)
    with pytest.raises(InputError, match="rank"):
        make_truth(jax.random.PRNGKey(0), 3, 2, A=A)
    with pytest.raises(InputError, match="shape"):
        make_truth(jax.random.PRNGKey(0), 4, 1, A=A)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"d": 3, "rank": 4},
        {"d": 3, "rank": 0},
        {"d": 3, "tokens": "laplace"},
        {"d": 3, "noise": "cauchy"},
        {"d": 3, "noise_sd": -1.0},
        {"d": 3, "phi": "holder", "beta": -0.5},
        {"d": 3, "phi": "weierstrass"},
        {"d": 3, "phi": "weierstrass", "beta": 1.0},
    ],
)
def test_bad_truth_options_are_refused(kwargs):
    d = kwargs.pop("d")
    with pytest.raises(InputError):
        make_truth(jax.random.PRNGKey(0), d, **{"rank": 1, **kwargs})


def test_bad_sizes_are_refused():
    t = make_truth(jax.random.PRNGKey(0), 3, 1)
    with pytest.raises(InputError):
        simulate(jax.random.PRNGKey(0), t, 10, 1)
    with pytest.raises(InputError):
        simulate(jax.random.PRNGKey(0), t, 0, 3)
    with pytest.raises(InputError):
        TokenLaw("correlated", 3, rho=1.5)
    with pytest.raises(InputError):
        NoiseLaw("gaussian", float("inf"))


@pytest.mark.parametrize("tokens", TOKEN_LAWS)
def test_weierstrass_truth_has_the_fixed_l2_rho_norm(tokens):
    """make_truth sets E_rho[phi*(x^T A* y)^2] = 1/2 on its 20000 Monte Carlo pairs.

    Checked on 50000 fresh pairs: the two estimates differ by Monte Carlo error
    only, with standard error sd(g^2) sqrt(1/20000 + 1/50000); 5 of them bound a
    false failure at ~1e-6.
    """
    truth = make_truth(jax.random.PRNGKey(7), 3, 2, phi="weierstrass", beta=0.5, tokens=tokens)
    x, y = sample_pairs(jax.random.PRNGKey(8), truth.tokens, 50_000)
    g2 = np.asarray(g_true(truth, x, y)) ** 2
    se = g2.std() * np.sqrt(1 / 20_000 + 1 / 50_000)
    assert abs(g2.mean() - WEIERSTRASS_MEAN_SQUARE) < 5 * se
    # deterministic from the key
    again = make_truth(jax.random.PRNGKey(7), 3, 2, phi="weierstrass", beta=0.5, tokens=tokens)
    assert again.phi == truth.phi
