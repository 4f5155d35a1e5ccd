"""The Rao-Blackwell step of :mod:`bayes_ips.posterior`: its numbers, and the shape of
its program (no batched LAPACK call: see ``_rao_blackwell``'s docstring)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayes_ips.models.lowrank_spline import gauge_factors

from bayes_ips.collapsed import (
    conditional_c,
    curvature_penalty,
    pspline_precision,
    sample_conditional_c,
)
from bayes_ips.pairwise import gram
from bayes_ips.posterior import _rao_blackwell
from bayes_ips.simulate import make_truth, simulate
from bayes_ips.spline import make_knots

jax.config.update("jax_enable_x64", True)

KAPPA = 0.3  # any positive prior scale: both sides of each comparison use the same


def _inputs(n_draws, d=2, M=60, N=4, K=6, seed=0):
    truth = make_truth(jax.random.PRNGKey(seed), d, 1, phi="tanh", tokens="cube", noise_sd=0.1)
    X, Y = simulate(jax.random.PRNGKey(seed + 1), truth, M, N)
    knots = make_knots(np.linspace(-1.5, 1.5, K + 1), degree=3)
    ks = jax.random.split(jax.random.PRNGKey(seed + 2), 5)
    U = jax.random.normal(ks[0], (n_draws, d, 1))
    V = jax.random.normal(ks[1], (n_draws, d, 1))
    sigma = 0.05 + jax.random.uniform(ks[2], (n_draws,)) * 0.1
    tau = 0.5 + jax.random.uniform(ks[3], (n_draws,))
    keys = jax.random.split(ks[4], n_draws)
    penalty = jnp.asarray(curvature_penalty(knots, 1.0))
    return U, V, sigma, tau, keys, jnp.asarray(X), jnp.asarray(Y), knots, penalty


# a short last batch and a batch above the draws; the slow tier adds an even split and batch 1
@pytest.mark.parametrize(
    "n_draws,batch",
    [
        pytest.param(7, 3, marks=pytest.mark.slow),
        pytest.param(6, 3, marks=pytest.mark.slow),
        (5, 8),
        pytest.param(4, 1, marks=pytest.mark.slow),
    ],
)
def test_rao_blackwell_matches_a_loop_over_draws(n_draws, batch):
    """Every draw's (A, E[c | theta], c draw) equals the one-draw computation,
    whether or not the draws fill whole batches (padding must not leak)."""
    U, V, sigma, tau, keys, X, Y, knots, penalty = _inputs(n_draws)
    A, cm, cd = _rao_blackwell(U, V, sigma, tau, keys, X, Y, knots, penalty, KAPPA, batch)
    assert A.shape == (n_draws, 2, 2) and cm.shape == cd.shape and cm.shape[0] == n_draws
    for s in range(n_draws):
        un, vn = gauge_factors(U[s], V[s])
        st = gram(un, vn, X, Y, knots)
        cond = conditional_c(st, sigma[s], pspline_precision(penalty, tau[s], KAPPA))
        # one K x K solve per draw either way: agreement to rounding (rtol 1e-10)
        np.testing.assert_allclose(A[s], un @ vn.T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cm[s], cond.mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(
            cd[s], sample_conditional_c(keys[s], cond), rtol=1e-10, atol=1e-10
        )


def _lapack_batch_dims(hlo: str) -> list[int]:
    """``num_batch_dims`` of every LAPACK custom call in a StableHLO module."""
    dims = []
    for line in hlo.splitlines():
        if "custom_call @lapack" in line:
            found = re.search(r'num_batch_dims = "(\d+)"', line)
            assert found, f"LAPACK call without num_batch_dims: {line[:120]}"
            dims.append(int(found.group(1)))
    return dims


def test_rao_blackwell_program_has_no_batched_lapack_call():
    """A batched Cholesky or triangular solve is what hung the study (jaxlib splits it
    over the intra-op pool and blocks the worker; two at once wedged a 2-thread
    pool).  600 draws in batches of 64 hung (so did 640, with no remainder batch):
    this checks the 600-draw program.  Every LAPACK call must take a single matrix."""
    U, V, sigma, tau, keys, X, Y, knots, penalty = _inputs(600)
    hlo = _rao_blackwell.lower(
        U, V, sigma, tau, keys, X, Y, knots, penalty, KAPPA, batch=64
    ).as_text()
    dims = _lapack_batch_dims(hlo)
    assert len(dims) >= 2, "expected the Cholesky and triangular solves as LAPACK calls"
    assert max(dims) == 0, f"batched LAPACK call in the program: num_batch_dims {dims}"


def test_the_lapack_check_sees_a_batched_call():
    """The check above is not vacuous: a vmapped Cholesky is caught."""
    G = jnp.broadcast_to(jnp.eye(4) * 2.0, (3, 4, 4))
    hlo = jax.jit(jax.vmap(jnp.linalg.cholesky)).lower(G).as_text()
    assert _lapack_batch_dims(hlo) == [1]


def test_functions_of_repeated_draws_equal_the_draw_by_draw_values():
    """Chains that repeat draws (importance sampling resamples its proposals): g and the
    pairwise means, computed once per distinct draw, equal a plain loop over all draws."""
    from bayes_ips.pairwise import pairwise_mean
    from bayes_ips.posterior import Posterior, g_draws, posterior_predictive_mean, unique_draws
    from bayes_ips.spline import spline_eval

    k = jax.random.split(jax.random.PRNGKey(5), 3)
    X = np.asarray(jax.random.normal(k[0], (20, 4, 2)))
    knots = make_knots(np.linspace(-2.0, 2.0, 7), degree=3)
    A = np.asarray(jax.random.normal(k[1], (5, 2, 2)))  # any A and coefficients: no model
    coef = np.asarray(jax.random.normal(k[2], (5, 9)))
    pick = np.array([[0, 0, 3, 1], [4, 3, 3, 0]])  # 2 chains x 4 draws of 4 distinct ones
    ones = np.ones((2, 4))
    post = Posterior(A[pick], ones, ones, coef[pick], coef[pick], knots)
    uA, uc, inverse = unique_draws(post.A, post.c_draw)
    assert len(uA) == len(uc) == 8 and len(inverse) == 8  # 4 distinct, padded to at most C * D
    np.testing.assert_array_equal(uA[inverse], post.A.reshape(8, 2, 2))
    x, y = X[:7, 0], X[:7, 1]
    g = g_draws(post, x, y, rao_blackwell=False)
    means = posterior_predictive_mean(post, X)
    g_one, mean_one = jax.jit(spline_eval), jax.jit(pairwise_mean)
    for c in range(2):
        for s in range(4):
            a, cf = post.A[c, s], post.c_draw[c, s]
            z = np.einsum("pi,ij,pj->p", x, a, y)
            # the same float64 operations in a different batch: agreement to rounding
            np.testing.assert_allclose(g[c, s], g_one(z, cf, knots), rtol=1e-12, atol=1e-12)
            ref = mean_one(a, np.eye(2), cf, X, knots)
            np.testing.assert_allclose(means[c, s], ref, rtol=1e-10, atol=1e-12)
