"""Unit tests of the simulation-based calibration pieces (bayes_ips.sbc)."""

import jax
import numpy as np
import pytest

from bayes_ips.sbc import (
    SBCDesign,
    bonferroni,
    design_prior,
    draw_truth,
    normalised_ranks,
    rank_of_truth,
    sign_fix,
    thin_index,
    uniformity_pvalue,
)
from bayes_ips.simulate import sample_tokens


def test_rank_of_truth_counts_draws_below():
    draws = np.array([[0.1, 5.0], [0.3, 6.0], [0.2, 7.0]])  # (L=3, Q=2)
    assert rank_of_truth(np.array([0.25, 4.0]), draws).tolist() == [2, 0]
    assert rank_of_truth(np.array([1.0, 8.0]), draws).tolist() == [3, 3]


def test_thin_index_takes_the_end_of_each_chain_at_equal_stride():
    idx = thin_index(2, 10, 4)
    assert idx.tolist() == [4, 9, 14, 19]
    assert len(thin_index(4, 500, 100)) == 100
    with pytest.raises(ValueError):
        thin_index(4, 500, 102)


def test_sign_fix_makes_the_largest_entry_positive_per_matrix():
    A = np.array([[[0.1, -0.9], [0.2, 0.3]], [[0.5, 0.1], [0.0, 0.2]]])
    out = sign_fix(A)
    np.testing.assert_allclose(out[0], -A[0])
    np.testing.assert_allclose(out[1], A[1])
    np.testing.assert_allclose(sign_fix(-A), out)


def _ranks_of(truth, draws):
    """Rank of each replication's truth (n,) among its draws (n, L)."""
    return rank_of_truth(truth, draws.T)


def test_uniformity_pvalue_is_calibrated_under_uniform_ranks():
    rng = np.random.default_rng(0)
    L, n = 100, 200
    p = np.array([uniformity_pvalue(rng.integers(0, L + 1, n), L) for _ in range(300)])
    assert 0.4 < p.mean() < 0.6
    assert np.mean(p < 0.05) < 0.1
    # ranks of an exact posterior (truth and draws from the same law) are uniform too
    truth = rng.normal(size=n)
    assert uniformity_pvalue(_ranks_of(truth, rng.normal(size=(n, L))), L) > 1e-3


def test_uniformity_pvalue_detects_a_shifted_or_too_narrow_posterior():
    rng = np.random.default_rng(1)
    L, n = 100, 200
    truth = rng.normal(size=n)
    shifted = rng.normal(0.5, 1.0, size=(n, L))
    assert uniformity_pvalue(_ranks_of(truth, shifted), L) < 1e-6
    narrow = rng.normal(0.0, 0.5, size=(n, L))
    assert uniformity_pvalue(_ranks_of(truth, narrow), L) < 1e-6
    with pytest.raises(ValueError):
        uniformity_pvalue(np.array([0, L + 1]), L)


def test_bonferroni_caps_at_one():
    assert bonferroni({"a": 0.01, "b": 0.6}) == {"a": 0.02, "b": 1.0}


def test_normalised_ranks_lie_in_their_cell():
    r = np.array([0, 5, 10])
    u = normalised_ranks(r, 10, np.random.default_rng(0))
    assert np.all((u >= r / 11) & (u < (r + 1) / 11))


def test_design_prior_is_symmetric_fixed_and_covers_every_score():
    design = SBCDesign()
    prior = design_prior(design)
    b = np.asarray(prior.knots.breaks)
    assert len(b) == design.n_intervals + 1
    np.testing.assert_allclose(b, -b[::-1])
    assert b[0] == -design.d and b[-1] == design.d  # |x^T A y| <= d for cube tokens
    assert prior.y_scale == 1.0 and prior.penalty_scale > 0
    again = design_prior(design)
    np.testing.assert_array_equal(np.asarray(again.knots.breaks), b)
    assert again.penalty_scale == prior.penalty_scale


@pytest.mark.slow  # ~7 s of compilation (fast-tier budget; the SBC script test is slow too)
def test_draw_truth_gives_a_unit_norm_A_and_data_of_the_right_shape():
    design = SBCDesign(M=20, N=4)
    prior = design_prior(design)
    X = sample_tokens(jax.random.PRNGKey(0), design.token_law(), design.M, design.N)
    t = draw_truth(jax.random.PRNGKey(1), X, prior, design)
    assert t["Y"].shape == (20, 4)
    np.testing.assert_allclose(np.linalg.norm(t["A"]), 1.0, rtol=1e-10)
    assert np.linalg.matrix_rank(t["A"]) == 1
    assert t["sigma"] > 0 and t["tau"] > 0 and t["c"].shape == (11,)


@pytest.mark.slow  # ~10 s: NUTS on the factors' prior compiles once
def test_factor_prior_draws_follow_the_gauge_tilted_prior_not_plain_normals():
    """At rank 2 the gauge factor changes the law of A (module docstring).  The NUTS
    draws of the factors' prior must agree with importance-weighted N(0, I) draws
    (weights exp(gauge), 400000 of them: effective size ~1600) on the mean of the
    ratio rho = s_2 / s_1 of A's singular values, within Z standard errors (measured:
    0.1168 against 0.1167, s.e. 0.0051), and the plain normals' mean (0.177, 11.8 s.e.
    away) must be far outside."""
    from bayes_ips.models.lowrank_spline import gauge_log_factor

    from bayes_ips.sbc import factor_prior_draws

    Z = 4.5  # two-sided, ~7e-6 for one comparison of normal estimates

    def ratio(U, V):
        s = np.linalg.svd(U @ np.swapaxes(V, -1, -2), compute_uv=False)
        return s[..., 1] / s[..., 0]

    f = factor_prior_draws(jax.random.PRNGKey(0), SBCDesign(rank=2), 2000)
    assert f["U"].shape == f["V"].shape == (2000, 2, 2)
    rho = ratio(f["U"], f["V"])
    rng = np.random.default_rng(0)
    U, V = rng.standard_normal((2, 400000, 2, 2))
    lw = np.asarray(jax.vmap(gauge_log_factor)(U, V))
    w = np.exp(lw - lw.max())
    w /= w.sum()
    rho0 = ratio(U, V)
    m_is = w @ rho0
    se_is = np.sqrt(w @ (rho0 - m_is) ** 2 * np.sum(w**2))  # sd / sqrt(effective size)
    se = np.sqrt(se_is**2 + rho.var() / len(rho))  # thinned draws: lag-1 acf ~0.02
    assert abs(rho.mean() - m_is) < Z * se, (rho.mean(), m_is, se)
    assert abs(rho0.mean() - m_is) > 10 * se, (rho0.mean(), m_is, se)
