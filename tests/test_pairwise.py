"""The one pairwise kernel against a naive NumPy double loop with SciPy's B-splines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.interpolate import BSpline

from bayes_ips.pairwise import design, gram, pair_scores, pairwise_mean, sq_loss
from bayes_ips.spline import full_knot_vector, make_knots, n_basis

# float64 sums of O(100) terms of size O(1..1e2) (extrapolated cubic pieces)
RTOL = 1e-10


def _naive_design(X, U, V, knots):
    """F[m, i, k] = 1/(N-1) sum_{j != i} B_k(x_i^T U V^T x_j), by explicit loops."""
    M, N, _ = X.shape
    t = np.asarray(full_knot_vector(knots))
    nb = n_basis(knots)
    basis = [BSpline(t, np.eye(nb)[k], knots.degree, extrapolate=True) for k in range(nb)]
    A = U @ V.T
    F = np.zeros((M, N, nb))
    for m in range(M):
        for i in range(N):
            for j in range(N):
                if i != j:
                    u = X[m, i] @ A @ X[m, j]
                    F[m, i] += np.array([b(u) for b in basis]) / (N - 1)
    return F


@pytest.fixture(
    scope="module", params=[(3, 1), (2, 3), (1, 1)], ids=["cubic", "pw-quadratic", "linear"]
)
def case(request):
    degree, mult = request.param
    rng = np.random.default_rng(degree)
    M, N, d, r = 13, 5, 3, 2
    X = rng.uniform(-1, 1, (M, N, d))
    U, V = rng.normal(size=(d, r)), rng.normal(size=(d, r))
    Y = rng.normal(size=(M, N))
    S = np.asarray(pair_scores(X, U, V))
    # knots cover most scores; a few fall outside on purpose (extrapolation)
    lo, hi = np.quantile(S, [0.05, 0.95])
    knots = make_knots(np.linspace(lo, hi, 6), degree, mult)
    coef = rng.normal(size=n_basis(knots))
    F = _naive_design(X, U, V, knots)
    return X, Y, U, V, knots, coef, F, S


def test_design_matches_naive_loop(case):
    X, Y, U, V, knots, coef, F, _ = case
    np.testing.assert_allclose(np.asarray(design(U, V, X, knots)), F, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("chunk", [4, 5, 13, 64])
def test_pairwise_mean_and_loss_match_naive_loop_for_any_chunking(case, chunk):
    X, Y, U, V, knots, coef, F, _ = case
    np.testing.assert_allclose(
        np.asarray(pairwise_mean(U, V, coef, X, knots, chunk_size=chunk)),
        F @ coef,
        rtol=RTOL,
        atol=RTOL,
    )
    np.testing.assert_allclose(
        float(sq_loss(U, V, coef, X, Y, knots, chunk_size=chunk)),
        np.sum((Y - F @ coef) ** 2),
        rtol=RTOL,
    )


@pytest.mark.parametrize("chunk", [4, 13, 64])
def test_gram_matches_explicit_products(case, chunk):
    X, Y, U, V, knots, coef, F, S = case
    st = gram(U, V, X, Y, knots, chunk_size=chunk)
    Ff = F.reshape(-1, F.shape[-1])
    np.testing.assert_allclose(np.asarray(st.FtF), Ff.T @ Ff, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(np.asarray(st.FtY), Ff.T @ Y.ravel(), rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(float(st.YtY), np.sum(Y**2), rtol=1e-13)
    assert int(st.n_obs) == Y.size
    off = ~np.eye(X.shape[1], dtype=bool)
    b = np.asarray(knots.breaks)
    expected_out = int(np.sum(((S < b[0]) | (S > b[-1]))[:, off]))
    assert expected_out > 0 and int(st.n_outside) == expected_out


def test_gradients(case):
    X, Y, U, V, knots, coef, _, _ = case
    check_grads(
        lambda U, V, c: sq_loss(U, V, c, X, Y, knots, chunk_size=5),
        (U, V, coef),
        order=1,
        modes=["rev"],
    )
    check_grads(
        lambda U, V, c: pairwise_mean(U, V, c, X, knots, chunk_size=4),
        (U, V, coef),
        order=1,
        modes=["fwd", "rev"],
    )
    # the Gram statistics are differentiable in the factors (collapsed likelihoods)
    check_grads(
        lambda U, V: (
            jnp.sum(gram(U, V, X, Y, knots, chunk_size=5).FtF * 0.1)
            + jnp.sum(gram(U, V, X, Y, knots, chunk_size=5).FtY)
        ),
        (U, V),
        order=1,
        modes=["rev"],
    )


def test_kernel_under_vmap_over_factors(case):
    X, Y, U, V, knots, coef, _, _ = case
    Us = jnp.stack([U, 2 * U, -U])
    batched = jax.vmap(lambda u: sq_loss(u, V, coef, X, Y, knots, chunk_size=5))(Us)
    single = [float(sq_loss(u, V, coef, X, Y, knots, chunk_size=5)) for u in Us]
    np.testing.assert_allclose(np.asarray(batched), single, rtol=1e-12)


def test_new_knot_values_do_not_recompile(case):
    """The hot path is traced once per shape: knots are data, not constants."""
    X, Y, U, V, knots, coef, _, _ = case
    sq_loss(U, V, coef, X, Y, knots)
    before = sq_loss._cache_size()
    moved = make_knots(np.asarray(knots.breaks) * 1.1, knots.degree, knots.multiplicity)
    sq_loss(U, V, coef * 2, X, Y, moved)
    assert sq_loss._cache_size() == before
