"""Multi-head ERM: alignment, the oracle, centring, and recovery of two heads."""

import itertools

import jax
import numpy as np
import pytest

from bayes_ips.erm import ERMConfig
from bayes_ips.errors import InputError
from bayes_ips.multihead import (
    align_heads,
    check_heads,
    fit_erm_heads,
    fit_oracle_heads,
    head_cosines,
)
from bayes_ips.pairwise import design


def _unit(a):
    return a / np.linalg.norm(a)


def _two_heads(M, N=8, d=5, noise=0.1, seed=0, phis=None):
    """Two rank-1 heads; G(x, y) = phi_1(x^T A_1 y) + phi_2(x^T A_2 y); tokens on the cube."""
    rng = np.random.default_rng(seed)
    A = np.stack([_unit(rng.normal(size=(d, 1)) @ rng.normal(size=(1, d))) for _ in range(2)])
    phis = phis or (lambda u: np.tanh(3 * u), lambda u: np.sin(4 * u))

    def G(x, y):
        return sum(p(np.einsum("...i,ij,...j->...", x, a, y)) for p, a in zip(phis, A, strict=True))

    X = rng.uniform(-1, 1, (M, N, d))
    Gm = G(X[:, :, None, :], X[:, None, :, :])
    Y = (Gm * ~np.eye(N, dtype=bool)).sum(-1) / (N - 1) + noise * rng.normal(size=(M, N))
    return X, Y, A, G, rng


def test_head_cosines_match_an_explicit_loop():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(3, 4, 4)), rng.normal(size=(2, 4, 4))
    C = head_cosines(A, B)
    for h, g in itertools.product(range(3), range(2)):
        expected = abs(np.sum(A[h] * B[g])) / np.linalg.norm(A[h]) / np.linalg.norm(B[g])
        assert C[h, g] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("H", [2, 3, 7])  # 7: the Hungarian branch
def test_align_heads_recovers_a_known_permutation_and_ignores_signs(H):
    rng = np.random.default_rng(H)
    ref = rng.normal(size=(H, 4, 4))
    perm = rng.permutation(H)
    signs = rng.choice([-1.0, 1.0], size=H)[:, None, None]
    shuffled = np.empty_like(ref)
    shuffled[perm] = ref * signs * 2.0  # head h of ref sits at position perm[h]
    got, cos = align_heads(shuffled, ref)
    np.testing.assert_array_equal(got, perm)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-12)
    got, _ = align_heads(ref, ref)
    np.testing.assert_array_equal(got, np.arange(H))


def test_bad_heads_get_one_line_errors():
    with pytest.raises(InputError, match="positive integer"):
        check_heads(0)
    with pytest.raises(InputError, match="positive integer"):
        check_heads(1.5)
    with pytest.raises(InputError, match="not distinct at d = 1"):
        check_heads(2, d=1)
    X, Y, *_ = _two_heads(40, N=4, d=3)
    with pytest.raises(InputError, match="too few"):
        fit_erm_heads(jax.random.PRNGKey(0), X[:5], Y[:5], ERMConfig(n_intervals=8), heads=3)
    with pytest.raises(InputError, match="known_a is for single-head ERM"):
        fit_erm_heads(jax.random.PRNGKey(0), X, Y, ERMConfig(known_a=True), heads=2)
    with pytest.raises(InputError, match=r"shape \(H, d, d\)"):
        fit_oracle_heads(X, Y, np.eye(3), 4)


def test_oracle_reproduces_splines_exactly_and_centres_heads():
    """phi_h cubic polynomials lie in every cubic spline space: noiseless data are fitted
    to rounding, and heads 2..H have mean zero over the training rows (the constant sits
    in head 1) without changing G."""
    phis = (lambda u: 0.5 + u - u**3, lambda u: 0.2 * u**2 + 0.3)
    X, Y, A, G, rng = _two_heads(120, N=5, d=3, noise=0.0, phis=phis)
    fit = fit_oracle_heads(X, Y, A, 4, ridge=1e-13)  # a tiny ridge: only the null direction
    x, y = rng.uniform(-1, 1, (500, 3)), rng.uniform(-1, 1, (500, 3))
    # inside every head's knots: beyond them the tail (flat by default) holds the
    # boundary value, not the cubic's
    u = np.einsum("pi,hij,pj->hp", x, np.asarray(fit.A), y)
    b = np.asarray(fit.knots.breaks)
    inside = np.all((u >= b[:, :1]) & (u <= b[:, -1:]), axis=0)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(
        np.asarray(fit.predict(x[inside], y[inside])), G(x[inside], y[inside]), atol=1e-7
    )
    F = np.asarray(design(fit.U, fit.V, X, fit.knots))  # (M, N, H n_basis)
    nb = fit.coef.shape[1]
    head_means = [float(np.mean(F[..., h * nb : (h + 1) * nb] @ fit.coef[h])) for h in range(2)]
    assert abs(head_means[1]) < 1e-10  # centred
    # head 1 carries the whole constant: 0.5 + 0.3 plus the means of the non-constant parts
    assert head_means[0] == pytest.approx(float(np.mean(Y)), abs=1e-7)
    assert fit.info["head_share"][0] >= fit.info["head_share"][1]  # ordered by variance


@pytest.mark.slow  # ~25 s: four BFGS starts over two heads and a GCV table
def test_two_heads_recovered_within_4x_of_the_oracle():
    """Issue 15's check at d = 5, M = 1000, N = 8, noise 0.1: ERM's L2(rho) error on G is
    within 4x that of the oracle that knows the A*_h (same K), and the heads are
    recovered up to permutation (|cos| > 0.99; 20000 held-out pairs: Monte Carlo
    relative s.e. of the errors ~2%, far below the factor asked)."""
    X, Y, A, G, rng = _two_heads(1000)
    fit = fit_erm_heads(jax.random.PRNGKey(0), X, Y, ERMConfig(rank=1), heads=2)
    perm, cos = align_heads(fit.A, A)
    assert np.all(cos > 0.99), cos
    x, y = rng.uniform(-1, 1, (20000, 5)), rng.uniform(-1, 1, (20000, 5))
    g = G(x, y)
    err = np.mean((np.asarray(fit.predict(x, y)) - g) ** 2)
    oracle = fit_oracle_heads(X, Y, A, fit.info["K"])
    err_oracle = np.mean((np.asarray(oracle.predict(x, y)) - g) ** 2)
    assert err <= 4 * err_oracle, (err, err_oracle)
    assert err < 0.01 * g.var()


def _rough_heads():
    rough = (
        lambda u: np.abs(np.sin(6 * u)) ** 0.5,
        lambda u: np.sign(np.sin(5 * u)) * np.abs(np.sin(5 * u)) ** 0.5,
    )
    return _two_heads(500, N=6, d=2, noise=0.05, phis=rough)


# slow tier: ~7 s (the fast tier's 5-minute budget, 2026-12-07)
@pytest.mark.slow
def test_heads_gcv_grid_doubles_its_top_while_gcv_chooses_it():
    """Two rough heads (Hoelder 1/2 kinks) at their true factors: from a grid capped at
    8, GCV wants more, the grid doubles (each added K scored as its own Gram pass at
    its own knots), and stops at the ceiling or when the minimum moves inside; a
    parameter limit stops it too."""
    import jax.numpy as jnp

    from bayes_ips.kselect import _gcv_score, extend_while_top
    from bayes_ips.multihead import _gcv_table, _heads_knots
    from bayes_ips.pairwise import gram

    X, Y, A, _, _ = _rough_heads()
    U = jnp.asarray(np.stack([np.linalg.svd(a)[0][:, :1] for a in A]))
    V = jnp.asarray(np.stack([np.linalg.svd(a)[2][:1].T * np.linalg.svd(a)[1][0] for a in A]))
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)

    def score(ks):
        return _gcv_table(Xj, Yj, U, V, ks, 3, 1, 1e-6, 4, 2048)

    top = 120
    K, table = extend_while_top(score([2, 4, 8]), top, score)
    ks = [row["K"] for row in table]
    assert ks[:4] == [2, 4, 8, 16] and ks[-1] <= top  # GCV wanted more than 8 intervals
    best = int(np.argmin([row["gcv"] for row in table]))
    assert K == ks[best] and (best < len(ks) - 1 or 2 * ks[-1] > top)
    for row in table[3:]:
        st = gram(U, V, Xj, Yj, _heads_knots(Xj, U, V, row["K"], 3, 1), 2048)
        ref = _gcv_score(
            np.asarray(st.FtF), np.asarray(st.FtY), float(st.YtY), float(st.n_obs), 1e-6, 4,
            row["K"],
        )  # fmt: skip
        assert row["gcv"] == pytest.approx(ref["gcv"], rel=1e-9)
    # a parameter limit (or no ceiling) stops the doubling where it stands
    _, capped = extend_while_top(score([2, 4, 8]), top, score, allowed=lambda K: K <= 16)
    assert [row["K"] for row in capped][-1] == 16
    assert len(extend_while_top(score([2, 4, 8]), None, score)[1]) == 3


@pytest.mark.slow  # ~20 s: a two-head fit
def test_fit_erm_heads_extends_gcvs_grid(monkeypatch):
    """The wiring: with GCV's grid capped at 8 (monkeypatched), a rough two-head fit's
    K table goes past 8; with a fixed K it stays that K."""
    import bayes_ips.multihead as mh

    X, Y, *_ = _rough_heads()
    monkeypatch.setattr(mh, "k_grid", lambda *a: [2, 4, 8])
    fit = fit_erm_heads(jax.random.PRNGKey(0), X, Y, ERMConfig(rank=1, restarts=1), heads=2)
    assert max(row["K"] for row in fit.info["k_table"]) > 8, fit.info["k_table"]
    monkeypatch.setattr(mh, "k_grid", lambda *a: [8])
    cfg = ERMConfig(rank=1, restarts=1, n_intervals=8)
    fit = fit_erm_heads(jax.random.PRNGKey(0), X, Y, cfg, heads=2)
    assert [row["K"] for row in fit.info["k_table"]] == [8]
