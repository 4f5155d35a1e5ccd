"""The truth side: token laws, noise laws, A*, and the simulated outputs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_ips.activations import WEIERSTRASS_MEAN_SQUARE, phi_eval
from bayes_ips.errors import InputError
from bayes_ips.simulate import (
    MAX_HEAD_OVERLAP,
    TOKEN_LAWS,
    HeadsTruth,
    NoiseLaw,
    TokenLaw,
    Truth,
    g_true,
    gauge_fix,
    head_g_true,
    head_overlap,
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


@pytest.mark.parametrize("rho", [-1 / 3, -0.1])
def test_negatively_correlated_tokens(rho):
    """Exchangeable with correlation rho < 0 and unit variances (N = 4 allows rho >= -1/3;
    at -1/3 every sample sums to zero), and pairs with the same correlation."""
    key = jax.random.PRNGKey(3)
    d, M, N = 3, 50_000, 4
    law = TokenLaw("correlated", d, rho=rho)
    X = np.asarray(sample_tokens(key, law, M, N))
    np.testing.assert_allclose(X.reshape(-1, d).var(0), 1, atol=2 * MOMENT_TOL)
    for i, j in [(0, 1), (1, 3), (2, 0)]:
        np.testing.assert_allclose(np.mean(X[:, i] * X[:, j], axis=0), rho, atol=2 * MOMENT_TOL)
    if rho == -1 / 3:
        np.testing.assert_allclose(X.sum(axis=1), 0, atol=1e-12)  # rounding only
    x, y = (np.asarray(a) for a in sample_pairs(key, law, 100_000))
    np.testing.assert_allclose(x.var(0), 1, atol=2 * MOMENT_TOL)
    np.testing.assert_allclose(np.mean(x * y, 0), rho, atol=2 * MOMENT_TOL)
    if rho == -1 / 3:
        with pytest.raises(InputError, match="cannot have correlation"):
            sample_tokens(key, law, 10, 5)  # N = 5 tokens allow rho >= -1/4 only


@pytest.mark.parametrize(
    "family", ["gaussian", "rademacher", pytest.param("uniform", marks=pytest.mark.slow)]
)
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
        TokenLaw("correlated", 3, rho=-1.0)
    with pytest.raises(InputError):
        NoiseLaw("gaussian", float("inf"))


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param(t, marks=() if t in ("cube", "correlated") else pytest.mark.slow)
        for t in TOKEN_LAWS
    ],
)
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


# ----------------------------------------------------------------------------- heads


@pytest.fixture(scope="module")
def heads3():
    """Three heads of rank 1 at d = 3, one phi family each, noiseless."""
    return make_truth(
        jax.random.PRNGKey(11), 3, 1, heads=3, phi=["tanh", "holder", "sin"], beta=1.5, noise_sd=0
    )


def test_one_head_is_the_single_head_truth():
    for kwargs in ({}, {"phi": "holder", "beta": 1.5, "tokens": "gaussian"}):
        a = make_truth(jax.random.PRNGKey(2), 3, 2, **kwargs)
        b = make_truth(jax.random.PRNGKey(2), 3, 2, heads=1, **kwargs)
        c = make_truth(
            jax.random.PRNGKey(2),
            3,
            2,
            heads=1,
            phi=[kwargs.get("phi", "tanh")],
            **{k: v for k, v in kwargs.items() if k != "phi"},
        )
        for t in (b, c):
            assert type(t) is Truth
            np.testing.assert_array_equal(t.A, a.A)
            assert t.phi == a.phi and t.tokens == a.tokens and t.noise == a.noise


def test_heads_truth_is_gauge_fixed_distinct_and_scaled(heads3):
    t = heads3
    assert isinstance(t, HeadsTruth) and t.n_heads == 3 and t.rank == 1
    assert t.A.shape == (3, 3, 3)
    assert [p.family for p in t.phis] == ["tanh", "holder", "sin"]
    np.testing.assert_allclose(np.linalg.norm(t.A, axis=(1, 2)), 1.0)
    for h in range(3):
        assert t.A[h].flat[np.argmax(np.abs(t.A[h]))] > 0
        assert np.linalg.matrix_rank(t.A[h]) == 1
    overlaps = [abs(np.sum(t.A[h] * t.A[g])) for h in range(3) for g in range(3) if h != g]
    assert max(overlaps) <= MAX_HEAD_OVERLAP
    assert head_overlap(t.A) == pytest.approx(max(overlaps))
    # each phi*_h at the sd of its own scores (20000 pairs in make_truth: a few %)
    x, y = sample_pairs(jax.random.PRNGKey(9), t.tokens, 20_000)
    for h in range(3):
        sd = float(jnp.std(jnp.einsum("pi,ij,pj->p", x, jnp.asarray(t.A[h]), y)))
        assert t.phis[h].scale == pytest.approx(sd, rel=0.05)
    head = t.head(1)
    assert type(head) is Truth and head.phi == t.phis[1] and head.tokens == t.tokens
    np.testing.assert_array_equal(head.A, t.A[1])
    with pytest.raises(InputError, match="head"):
        t.head(3)


def test_heads_are_deterministic_and_one_phi_serves_every_head():
    a = make_truth(jax.random.PRNGKey(5), 3, 2, heads=2, phi="holder", beta=1.5)
    b = make_truth(jax.random.PRNGKey(5), 3, 2, heads=2, phi="holder", beta=1.5)
    np.testing.assert_array_equal(a.A, b.A)
    assert a.phis == b.phis and a.rank == 2
    # the same family, drawn with each head's own key
    assert a.phis[0].params["kinks"] != a.phis[1].params["kinks"]


def test_heads_outputs_match_a_naive_loop(heads3):
    M_, N_, H = 7, 4, heads3.n_heads
    X, Y = simulate(jax.random.PRNGKey(5), heads3, M_, N_)
    X, Y = np.asarray(X), np.asarray(Y)
    # scores by a loop over m, i, j, h; phi*_h evaluated once per head on all of them
    u = np.zeros((H, M_, N_, N_))
    for m in range(M_):
        for i in range(N_):
            for j in range(N_):
                for h in range(H):
                    u[h, m, i, j] = X[m, i] @ heads3.A[h] @ X[m, j]
    phi = np.stack([np.asarray(phi_eval(heads3.phis[h], u[h])) for h in range(H)])
    for m in range(M_):
        for i in range(N_):
            total = sum(phi[h, m, i, j] for h in range(H) for j in range(N_) if j != i)
            assert Y[m, i] == pytest.approx(total / (N_ - 1), abs=1e-12)


def test_heads_noise_is_that_of_a_single_head_truth(heads3):
    """The same key gives the same tokens and the same noise as a one-head truth."""
    noisy = dataclasses.replace(heads3, noise=NoiseLaw("gaussian", 0.3))
    X0, Y0 = simulate(jax.random.PRNGKey(5), heads3, 7, 4)
    X1, Y1 = simulate(jax.random.PRNGKey(5), noisy, 7, 4)
    one = make_truth(jax.random.PRNGKey(0), 3, 1, noise_sd=0.3)
    clean = dataclasses.replace(one, noise=NoiseLaw("gaussian", 0.0))
    Xs, Ys = simulate(jax.random.PRNGKey(5), one, 7, 4)
    _, Yz = simulate(jax.random.PRNGKey(5), clean, 7, 4)
    np.testing.assert_array_equal(X0, Xs)
    np.testing.assert_array_equal(X1, Xs)
    np.testing.assert_allclose(np.asarray(Y1 - Y0), np.asarray(Ys - Yz), atol=1e-12)


def test_head_g_true_sums_to_g_true(heads3):
    x, y = sample_pairs(jax.random.PRNGKey(1), heads3.tokens, 20_000)  # make_truth's shape
    per_head = np.asarray(head_g_true(heads3, x, y))
    assert per_head.shape == (3, 20_000)
    for h in range(3):
        np.testing.assert_allclose(per_head[h], np.asarray(g_true(heads3.head(h), x, y)))
    np.testing.assert_allclose(per_head.sum(0), np.asarray(g_true(heads3, x, y)), atol=1e-12)
    one = make_truth(jax.random.PRNGKey(0), 3, 1)
    np.testing.assert_array_equal(head_g_true(one, x, y), np.asarray(g_true(one, x, y))[None])


def test_user_given_heads():
    e = np.eye(3)
    A = np.stack([2.0 * np.outer(e[0], e[1]), -np.outer(e[1], e[2])])
    t = make_truth(jax.random.PRNGKey(0), 3, 1, heads=2, A=A)
    np.testing.assert_allclose(t.A, [np.outer(e[0], e[1]), np.outer(e[1], e[2])])
    with pytest.raises(InputError, match=r"shape \(H, d, d\)"):
        make_truth(jax.random.PRNGKey(0), 3, 1, heads=2, A=A[0])
    with pytest.raises(InputError, match="rank"):
        make_truth(jax.random.PRNGKey(0), 3, 2, heads=2, A=A)
    with pytest.raises(InputError, match="not distinct"):
        make_truth(
            jax.random.PRNGKey(0),
            3,
            1,
            heads=2,
            A=np.stack([A[0], -np.outer(e[0], e[1] + 0.1 * e[2])]),
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"heads": 0}, "heads must be a positive integer"),
        ({"heads": -1}, "heads must be a positive integer"),
        ({"heads": 1.5}, "heads must be a positive integer"),
        ({"heads": "2"}, "heads must be a positive integer"),
        ({"heads": 2, "d": 1}, "not distinct at d = 1"),
        ({"heads": 2, "phi": ["tanh", "sin", "tanh"]}, "3 families for 2 head"),
        ({"heads": 1, "phi": ["tanh", "sin"]}, "2 families for 1 head"),
        ({"heads": 2, "phi": ["tanh", "relu"]}, "relu"),
    ],
)
def test_bad_heads_options_are_refused(kwargs, match):
    d = kwargs.pop("d", 3)
    with pytest.raises(InputError, match=match):
        make_truth(jax.random.PRNGKey(0), d, 1, **kwargs)


def test_heads_truth_validates_itself(heads3):
    with pytest.raises(InputError, match="3 heads needs 3 phi"):
        HeadsTruth(heads3.A, heads3.phis[:2], heads3.tokens, heads3.noise)
    with pytest.raises(InputError, match=r"\(H, d, d\)"):
        HeadsTruth(heads3.A[0], heads3.phis[:1], heads3.tokens, heads3.noise)
    with pytest.raises(InputError, match="token law"):
        HeadsTruth(heads3.A, heads3.phis, TokenLaw("cube", 2), heads3.noise)
