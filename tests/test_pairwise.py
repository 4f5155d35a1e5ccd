"""The one pairwise kernel against a naive NumPy double loop with SciPy's B-splines,
and the derivative rule of ``gram`` against JAX autodiff and finite differences."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.interpolate import BSpline

from bayes_ips.collapsed import collapsed_loglik, pspline_precision
from bayes_ips.pairwise import (
    GramStats,
    _gram_pass,
    design,
    grad_chunk,
    gram,
    pair_scores,
    pairwise_mean,
    sq_loss,
)
from bayes_ips.spline import full_knot_vector, make_knots, n_basis

# float64 sums of O(100) terms of size O(1..1e2) (extrapolated cubic pieces)
RTOL = 1e-10


def _naive_basis(knots):
    """The basis functions by SciPy: extrapolate=True for the "poly" tail; for the
    "linear" tail that spline continued by its tangent at b_0 and b_K; for the
    "flat" tail its value at the nearer of them."""
    t = np.asarray(full_knot_vector(knots))
    nb, s = n_basis(knots), knots.degree
    b0, bK = (float(x) for x in np.asarray(knots.breaks)[[0, -1]])
    splines = [BSpline(t, np.eye(nb)[k], s, extrapolate=True) for k in range(nb)]
    if knots.tail == "poly":
        return splines

    def linear(spl):
        def f(u):
            edge = min(max(u, b0), bK)
            if knots.tail == "flat":
                return spl(edge)
            slope = spl(edge, nu=1) if s > 0 else 0.0
            return spl(edge) + slope * (u - edge)

        return f

    return [linear(spl) for spl in splines]


def _naive_design(X, U, V, knots):
    """F[m, i, k] = 1/(N-1) sum_{j != i} B_k(x_i^T U V^T x_j), by explicit loops."""
    M, N, _ = X.shape
    nb = n_basis(knots)
    basis = _naive_basis(knots)
    A = U @ V.T
    F = np.zeros((M, N, nb))
    for m in range(M):
        for i in range(N):
            for j in range(N):
                if i != j:
                    u = X[m, i] @ A @ X[m, j]
                    F[m, i] += np.array([b(u) for b in basis]) / (N - 1)
    return F


# (degree, multiplicity, tail): the linear tail on three bases, the default tail
# ("flat") and the boundary polynomial of older fits ("poly") on the cubic
CASES = {
    "cubic-flat-tail": (3, 1, "flat"),
    "cubic": (3, 1, "linear"),
    "pw-quadratic": (2, 3, "linear"),
    "linear": (1, 1, "linear"),
    "cubic-poly-tail": (3, 1, "poly"),
}
slow = pytest.mark.slow


def cases(*fast):
    """The three cases for an indirect ``case`` parametrization; those not named in
    ``fast`` run in the slow tier only.  The gradient checks compile a new program per
    case (a few seconds each), so the fast tier keeps one or two of them per test."""
    return [pytest.param(v, id=k, marks=() if k in fast else slow) for k, v in CASES.items()]


@pytest.fixture(scope="module", params=list(CASES.values()), ids=list(CASES))
def case(request):
    degree, mult, tail = request.param
    rng = np.random.default_rng(degree)
    M, N, d, r = 13, 5, 3, 2
    X = rng.uniform(-1, 1, (M, N, d))
    U, V = rng.normal(size=(d, r)), rng.normal(size=(d, r))
    Y = rng.normal(size=(M, N))
    S = np.asarray(pair_scores(X, U, V))
    # knots cover most scores; a few fall outside on purpose (extrapolation)
    lo, hi = np.quantile(S, [0.05, 0.95])
    knots = make_knots(np.linspace(lo, hi, 6), degree, mult, tail)
    coef = rng.normal(size=n_basis(knots))
    F = _naive_design(X, U, V, knots)
    return X, Y, U, V, knots, coef, F, S


def test_design_matches_naive_loop(case):
    X, Y, U, V, knots, coef, F, _ = case
    np.testing.assert_allclose(np.asarray(design(U, V, X, knots)), F, rtol=RTOL, atol=RTOL)


# Each chunk size is a new program per case.  The fast tier keeps, over the five cases,
# both a padded last chunk and one chunk larger than M for the mean and loss, a padded
# one and an exact one for gram; the slow tier runs every case with all four.
def case_chunks(*fast):
    """Every (case, chunk size) for an indirect ``case``; the pairs ``(case id, chunk)``
    not named in ``fast`` run in the slow tier only."""
    return [
        pytest.param(v, c, id=f"{k}-{c}", marks=() if (k, c) in fast else slow)
        for k, v in CASES.items()
        for c in (4, 5, 13, 64)
    ]


@pytest.mark.parametrize(
    "case,chunk",
    case_chunks(
        ("cubic-flat-tail", 5),
        ("cubic-flat-tail", 64),
        ("pw-quadratic", 5),
        ("linear", 64),
        ("cubic-poly-tail", 5),
    ),
    indirect=["case"],
)
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


@pytest.mark.parametrize(
    "case,chunk",
    case_chunks(
        ("cubic-flat-tail", 4),
        ("cubic-flat-tail", 13),
        ("cubic", 4),
        ("pw-quadratic", 4),
        ("linear", 13),
        ("cubic-poly-tail", 4),
    ),
    indirect=["case"],
)
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


@pytest.mark.parametrize("case", cases("cubic"), indirect=True)
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


@pytest.mark.parametrize("case", cases("pw-quadratic"), indirect=True)
def test_kernel_under_vmap_over_factors(case):
    X, Y, U, V, knots, coef, _, _ = case
    Us = jnp.stack([U, 2 * U, -U])
    batched = jax.vmap(lambda u: sq_loss(u, V, coef, X, Y, knots, chunk_size=5))(Us)
    single = [float(sq_loss(u, V, coef, X, Y, knots, chunk_size=5)) for u in Us]
    np.testing.assert_allclose(np.asarray(batched), single, rtol=1e-12)
    # the gradient of the Gram statistics (its rule) batches too
    G = np.random.default_rng(1).normal(size=(n_basis(knots),) * 2)
    g = jax.jit(jax.grad(lambda u: _scalar(gram(u, V, X, Y, knots, 5), G)))
    batched = jax.jit(jax.vmap(g))(Us)
    for u, b in zip(Us, batched, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(g(u)), rtol=1e-12, atol=1e-12)


def test_new_knot_values_do_not_recompile(case):
    """The hot path is traced once per shape: knots are data, not constants."""
    X, Y, U, V, knots, coef, _, _ = case
    sq_loss(U, V, coef, X, Y, knots)
    before = sq_loss._cache_size()
    moved = make_knots(np.asarray(knots.breaks) * 1.1, knots.degree, knots.multiplicity, knots.tail)
    sq_loss(U, V, coef * 2, X, Y, moved)
    assert sq_loss._cache_size() == before


@pytest.mark.parametrize("case", cases("linear"), indirect=True)
def test_new_knot_values_do_not_recompile_gram_or_its_gradient(case):
    X, Y, U, V, knots, coef, _, _ = case
    G = np.random.default_rng(1).normal(size=(n_basis(knots),) * 2)
    vg = jax.jit(jax.value_and_grad(lambda U, V, kn: _scalar(gram(U, V, X, Y, kn, 5), G), (0, 1)))
    vg(U, V, knots)
    gram(U, V, X, Y, knots, 5)
    before = vg._cache_size(), gram._cache_size()
    moved = make_knots(np.asarray(knots.breaks) * 1.1, knots.degree, knots.multiplicity, knots.tail)
    vg(2 * U, V, moved)
    gram(U, V, X, Y, moved, 5)
    assert (vg._cache_size(), gram._cache_size()) == before


# --------------------------------------------------------------------------- #
# the derivative rule of gram
# --------------------------------------------------------------------------- #

# The rule and autodiff add the same terms in different orders: agreement to
# rounding, relative to the largest entry of each gradient.
GRAD_RTOL = 1e-11


def _gram_autodiff(U, V, X, Y, knots, chunk_size):
    """``gram``'s values without its rule: derivatives by JAX autodiff through the
    Cox--de Boor triangle and the scatters (how ``gram`` was differentiated before)."""
    b, s, m = knots.breaks, knots.degree, knots.multiplicity
    (FtF, FtY, YtY, n_out), _ = _gram_pass(U, V, b, X, Y, chunk_size, s, m, knots.tail)
    return GramStats(FtF, FtY, YtY, jnp.asarray(X.shape[0] * X.shape[1], X.dtype), n_out)


def _scalar(st, G):
    """A generic scalar of the statistics (G not symmetric: both halves of FtF count)."""
    return jnp.sum(G * st.FtF) + jnp.sum(jnp.cos(st.FtY)) + 0.3 * st.YtY


def _problem(degree, mult, N, M=13, d=3, seed=0, coverage=(0.1, 0.9), tail="linear"):
    """Data whose scores partly fall outside the knots (extrapolated by ``tail``)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (M, N, d))
    U, V = rng.normal(size=(d, 2)), rng.normal(size=(d, 2))
    Y = rng.normal(size=(M, N))
    S = np.asarray(pair_scores(X, U, V))[:, ~np.eye(N, dtype=bool)]
    knots = make_knots(np.linspace(*np.quantile(S, coverage), 5), degree, mult, tail)
    assert int(gram(U, V, X, Y, knots).n_outside) > 0
    return X, Y, U, V, knots


def _assert_close(got, ref, rtol=GRAD_RTOL):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))


# Fast tier: a cubic (the model's default) on N = 5 with the default flat tail, and
# repeated knots with the linear tail on N = 2, the two-token edge case; the slow tier
# runs every degree and multiplicity on both N and all three tails (~2-3 s of
# compilation each).
_FAST_RULE = {(3, 1, 5, "flat")}


@pytest.mark.parametrize(
    "degree, mult, N, tail",
    [
        pytest.param(s, m, n, tail, marks=() if (s, m, n, tail) in _FAST_RULE else slow)
        for s, m in [(0, 1), (1, 1), (2, 1), (2, 3), (3, 1), (3, 2), (4, 1), (5, 3)]
        for n in (2, 5)
        for tail in ("flat", "linear", "poly")
    ],
)
def test_gram_rule_matches_autodiff(degree, mult, N, tail):
    """Gradients in U, V, X and Y; M = 13 in chunks of 5 (the last one overlapping).
    Scores fall on both sides outside the knots, where the rule's ``B'`` must be the
    tail's slope (zero for the flat tail)."""
    X, Y, U, V, knots = _problem(degree, mult, N, tail=tail)
    S = np.asarray(pair_scores(X, U, V))[:, ~np.eye(N, dtype=bool)]
    b = np.asarray(knots.breaks)
    assert np.any(S < b[0]) and np.any(S > b[-1])
    G = np.random.default_rng(2).normal(size=(n_basis(knots),) * 2)

    def loss(fn):
        return lambda U, V, X, Y: _scalar(fn(U, V, X, Y, knots, 5), G)

    got = jax.jit(jax.grad(loss(gram), (0, 1, 2, 3)))(U, V, X, Y)
    ref = jax.jit(jax.grad(loss(_gram_autodiff), (0, 1, 2, 3)))(U, V, X, Y)
    _assert_close(got, ref)
    if degree > 0:
        assert np.max(np.abs(np.asarray(got[0]))) > 0


# Fast tier: chunks of 4 over M = 13 (a short last chunk) on the linear case; chunks of 5
# are checked against autodiff above.  The slow tier runs all nine combinations.
@pytest.mark.parametrize(
    "case, chunk",
    [
        pytest.param(v, c, id=f"{k}-{c}", marks=() if (k, c) == ("linear", 4) else slow)
        for k, v in CASES.items()
        for c in (4, 5, 13)
    ],
    indirect=["case"],
)
def test_gram_rule_for_any_chunking(case, chunk):
    X, Y, U, V, knots, _, _, _ = case
    G = np.random.default_rng(3).normal(size=(n_basis(knots),) * 2)
    grad = jax.grad(lambda U, V: _scalar(gram(U, V, X, Y, knots, chunk), G), (0, 1))
    _assert_close(
        grad(U, V), jax.grad(lambda U, V: _scalar(gram(U, V, X, Y, knots, 64), G), (0, 1))(U, V)
    )
    ref = jax.grad(lambda U, V: _scalar(_gram_autodiff(U, V, X, Y, knots, chunk), G), (0, 1))
    _assert_close(grad(U, V), ref(U, V))


def _collapsed(gram_fn, knots, X, Y, chunk=5):
    # a well-conditioned prior precision (the curvature penalty of repeated knots
    # has 1 / tiny spacings, which would drown the check in round-off)
    D = np.diff(np.eye(n_basis(knots)), 2, axis=0)
    Q = pspline_precision(D, 0.5, 2.0)
    return jax.jit(lambda U, V: collapsed_loglik(gram_fn(U, V, X, Y, knots, chunk), 0.7, Q))


# Fast tier: first order on the repeated-knot case.  The cubic case's second-order check
# (~11 s) is slow; the second derivatives through gram are checked against autodiff in
# the fast tier by test_hessian_through_gram_matches_autodiff.
@pytest.mark.parametrize("case", cases("pw-quadratic"), indirect=True)
def test_collapsed_loglik_gradients_against_finite_differences(case):
    X, Y, U, V, knots, _, _, _ = case
    # second order (forward over forward, reverse over reverse) on the cubic case
    order = 2 if knots.degree == 3 else 1
    check_grads(_collapsed(gram, knots, X, Y), (U, V), order=order, modes=["fwd", "rev"])


# ~7-12 s each (two Hessian programs): slow tier (fast-tier budget).  The fast tier's
# Laplace and inference tests take jax.hessian through gram at the model's cubic.
@slow
@pytest.mark.parametrize("degree, mult", [(3, 1), (2, 3)])
def test_hessian_through_gram_matches_autodiff(degree, mult):
    """``jax.hessian`` (forward over reverse, as ``laplace_inverse_mass``) and
    reverse over reverse, against autodiff of the same values."""
    X, Y, U, V, knots = _problem(degree, mult, N=4)
    f = _collapsed(gram, knots, X, Y)
    ref = jax.jit(jax.hessian(_collapsed(_gram_autodiff, knots, X, Y), (0, 1)))(U, V)
    _assert_close(jax.jit(jax.hessian(f, (0, 1)))(U, V), ref, rtol=1e-9)
    _assert_close(jax.jit(jax.jacrev(jax.jacrev(f, (0, 1)), (0, 1)))(U, V), ref, rtol=1e-9)


@pytest.mark.parametrize("case", cases("cubic-flat-tail", "pw-quadratic", "linear"), indirect=True)
def test_gram_has_no_derivative_in_the_breakpoints(case):
    """Knots are data: placed before sampling, never differentiated."""
    X, Y, U, V, knots, _, _, _ = case
    g = jax.grad(lambda kn: jnp.sum(gram(U, V, X, Y, kn, 5).FtF))(knots)
    assert np.all(np.asarray(g.breaks) == 0)


def test_grad_chunk_keeps_small_data_in_one_chunk():
    assert grad_chunk(6, 500) == 500  # 18000 scores: one chunk, no recomputation
    assert grad_chunk(8, 2000) == grad_chunk(8) == 256  # 128000 scores: chunks of 16k


# --------------------------------------------------------------------------- #
# several heads: the same kernel with a leading head axis
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def heads():
    """Two cubic heads with their own factors and knots; some scores extrapolated."""
    rng = np.random.default_rng(7)
    M, N, d, r, H = 11, 4, 3, 1, 2
    X = rng.uniform(-1, 1, (M, N, d))
    Y = rng.normal(size=(M, N))
    U, V = rng.normal(size=(H, d, r)), rng.normal(size=(H, d, r))
    breaks, per_head = [], []
    for h in range(H):
        S = np.asarray(pair_scores(X, U[h], V[h]))
        lo, hi = np.quantile(S, [0.05, 0.95])
        breaks.append(np.linspace(lo, hi, 5))
        per_head.append(make_knots(breaks[-1], 3, 1))
    knots = make_knots(breaks[0], 3, 1)
    knots = type(knots)(jnp.asarray(np.stack(breaks)), 3, 1, knots.tail)
    coef = rng.normal(size=(H, n_basis(per_head[0])))
    F = np.concatenate([_naive_design(X, U[h], V[h], per_head[h]) for h in range(H)], axis=-1)
    return X, Y, U, V, knots, per_head, coef, F


def test_heads_design_is_the_concatenation_of_the_heads_designs(heads):
    X, Y, U, V, knots, _, coef, F = heads
    np.testing.assert_allclose(np.asarray(design(U, V, X, knots)), F, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("chunk", [4, pytest.param(64, marks=slow)])  # 3 chunks; 1 chunk
def test_heads_mean_loss_and_gram_match_naive_loop(heads, chunk):
    X, Y, U, V, knots, per_head, coef, F = heads
    mean = F @ coef.ravel()  # sum over the heads of each head's pairwise mean
    np.testing.assert_allclose(
        np.asarray(pairwise_mean(U, V, coef, X, knots, chunk)), mean, rtol=RTOL, atol=RTOL
    )
    np.testing.assert_allclose(
        float(sq_loss(U, V, coef, X, Y, knots, chunk)), np.sum((Y - mean) ** 2), rtol=RTOL
    )
    st = gram(U, V, X, Y, knots, chunk)
    Ff = F.reshape(-1, F.shape[-1])
    np.testing.assert_allclose(np.asarray(st.FtF), Ff.T @ Ff, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(np.asarray(st.FtY), Ff.T @ Y.ravel(), rtol=RTOL, atol=RTOL)
    singles = [gram(U[h], V[h], X, Y, per_head[h], chunk).n_outside for h in range(2)]
    assert int(st.n_outside) == sum(int(n) for n in singles) > 0


@pytest.mark.slow  # ~5 s of compilation; the rule for one head (the same loop) is in the fast tier
def test_heads_gram_rule_matches_autodiff(heads):
    X, Y, U, V, knots, _, coef, _ = heads
    G = np.random.default_rng(5).normal(size=(coef.size,) * 2)
    got = jax.grad(lambda U, V, X, Y: _scalar(gram(U, V, X, Y, knots, 4), G), (0, 1, 2, 3))
    ref = jax.grad(
        lambda U, V, X, Y: _scalar(_gram_autodiff(U, V, X, Y, knots, 4), G), (0, 1, 2, 3)
    )
    _assert_close(got(U, V, X, Y), ref(U, V, X, Y))


@pytest.mark.slow  # finite differences of the one-pass loss rule with heads (~3 s)
def test_heads_loss_gradient_against_finite_differences(heads):
    X, Y, U, V, knots, _, coef, _ = heads
    # the linear tail: the flat one's kink at the outer knots (some of the 5% of scores
    # beyond them lie within a step of it) is what central differences cannot take;
    # the flat rule is checked against autodiff (test_heads_gram_rule_matches_autodiff)
    knots = dataclasses.replace(knots, tail="linear")
    check_grads(
        lambda U, V, c: sq_loss(U, V, c, X, Y, knots, chunk_size=4),
        (U, V, coef),
        order=1,
        modes=["rev"],
    )


def test_heads_shapes_must_agree(heads):
    X, Y, U, V, knots, _, coef, _ = heads
    with pytest.raises(ValueError, match="2 heads of factors, but coefficients for 1"):
        pairwise_mean(U, V, coef[0], X, knots)
