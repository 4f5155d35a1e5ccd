"""The L2(rho) error estimate against a closed form."""

import jax
import numpy as np
import pytest

from bayes_ips.metrics import l2_error
from bayes_ips.simulate import g_true, make_truth


def test_l2_error_of_a_shifted_estimate_is_the_squared_shift():
    truth = make_truth(jax.random.PRNGKey(0), 3, 1)
    res = l2_error(jax.random.PRNGKey(1), lambda x, y: g_true(truth, x, y) + 0.3, truth, 5000)
    assert res.error == pytest.approx(0.09, rel=1e-10)
    assert res.se == pytest.approx(0.0, abs=1e-12)


def test_l2_error_matches_closed_form_for_a_linear_phi():
    """phi*(u) = tanh(u / s) vs g_hat = 0: the error is E tanh^2(u/s) under rho.

    The closed form is checked against an independent large Monte Carlo; the
    estimate must agree within 4 standard errors (false-failure rate ~ 6e-5).
    """
    truth = make_truth(jax.random.PRNGKey(0), 4, 2, tokens="gaussian")
    res = l2_error(jax.random.PRNGKey(2), lambda x, y: 0.0 * x[:, 0], truth, 20000)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400_000, 4)), rng.normal(size=(400_000, 4))
    ref = np.mean(np.tanh(np.einsum("pi,ij,pj->p", x, truth.A, y) / truth.phi.scale) ** 2)
    assert abs(res.error - ref) < 4 * res.se
    assert res.relative > 0.9  # predicting 0 is about as bad as predicting the mean


# A target relative s.e. the first draw of held-out pairs misses: the squared error of
# g* + 0.1 (x.y)^2 on Gaussian tokens is heavy-tailed (se / error = 0.17 on 500 pairs).
RSE_TARGET, FIRST_PAIRS = 0.1, 500


def _heavy_tailed_case():
    import jax.numpy as jnp

    truth = make_truth(jax.random.PRNGKey(0), 3, 1, tokens="gaussian")
    return truth, lambda x, y: g_true(truth, x, y) + 0.1 * jnp.sum(x * y, axis=1) ** 2


def test_rse_target_doubles_the_pairs_until_met_deterministically():
    truth, predict = _heavy_tailed_case()
    key = jax.random.PRNGKey(1)
    first = l2_error(key, predict, truth, FIRST_PAIRS)
    assert first.se > RSE_TARGET * first.error  # the first draw misses the target
    res = l2_error(key, predict, truth, FIRST_PAIRS, rse=RSE_TARGET)
    assert res.se <= RSE_TARGET * res.error
    assert res.n_pairs > FIRST_PAIRS and res.n_pairs % FIRST_PAIRS == 0
    chunks = res.n_pairs // FIRST_PAIRS
    assert chunks & (chunks - 1) == 0  # a power of two: the pairs doubled
    # one doubling fewer had missed it (the loop stops at the first total that meets it)
    fewer = l2_error(key, predict, truth, FIRST_PAIRS, min_pairs=res.n_pairs // 2)
    assert fewer.n_pairs == res.n_pairs // 2 and fewer.se > RSE_TARGET * fewer.error
    assert l2_error(key, predict, truth, FIRST_PAIRS, rse=RSE_TARGET) == res  # deterministic
    # min_pairs draws the very same pairs (the paired ERM error of a posterior cell)
    assert l2_error(key, predict, truth, FIRST_PAIRS, min_pairs=res.n_pairs) == res


def test_rse_target_met_by_the_first_draw_changes_nothing_and_the_cap_holds():
    truth, predict = _heavy_tailed_case()
    key = jax.random.PRNGKey(1)
    plain = l2_error(key, predict, truth, FIRST_PAIRS)
    assert l2_error(key, predict, truth, FIRST_PAIRS, rse=0.5) == plain  # met at once
    capped = l2_error(key, predict, truth, FIRST_PAIRS, rse=0.01, max_pairs=5 * FIRST_PAIRS)
    assert capped.n_pairs == 4 * FIRST_PAIRS  # 8 chunks would pass the cap of 5
    assert capped.se > 0.01 * capped.error  # missed, and the result says so


# Stratified (double) sampling of a rare region: g_hat = g* + C on the pairs whose score
# under B exceeds Q (probability ~3e-3 on cube tokens), so the error is C^2 P(s > Q).
STRAT_C, STRAT_Q = 3.0, 0.9
STRAT_Z = 4.0  # agreement within 4 standard errors: false-failure rate ~ 6e-5 per check


def _rare_region_case():
    import jax.numpy as jnp

    from bayes_ips.simulate import sample_pairs

    truth = make_truth(jax.random.PRNGKey(0), 2, 1, tokens="cube")
    B = jnp.asarray([[0.6, 0.2], [0.1, 0.7]])

    def stratum(x, y):
        return jnp.einsum("pd,de,pe->p", x, B, y) > STRAT_Q

    def predict(x, y):
        return g_true(truth, x, y) + STRAT_C * stratum(x, y)

    # the probability of the region from 4M independent pairs (scores only)
    x, y = sample_pairs(jax.random.PRNGKey(99), truth.tokens, 4_000_000)
    p = float(jnp.mean(stratum(x, y)))
    return truth, stratum, predict, p


# slow tier: ~6 s (the fast tier's 5-minute budget, 2026-12-07)
@pytest.mark.slow
def test_stratified_error_is_unbiased_and_far_more_precise_on_a_rare_region():
    truth, stratum, predict, p = _rare_region_case()
    assert 1e-3 < p < 1e-2  # rare: ~60 of the 20000 main pairs
    exact = STRAT_C**2 * p  # up to the reference's own s.e., C^2 sqrt(p / 4e6) ~ 0.1% of it
    plain = l2_error(jax.random.PRNGKey(1), predict, truth, 20000)
    strat = l2_error(jax.random.PRNGKey(1), predict, truth, 20000, stratum=stratum)
    assert strat.n_pairs == 20000 and strat.n_screened == 65 * 20000
    assert strat.n_stratum > 0.5 * p * strat.n_screened  # the screened pairs were evaluated
    assert abs(strat.error - exact) < STRAT_Z * strat.se
    assert abs(plain.error - exact) < STRAT_Z * plain.se
    # se ~ C^2 sqrt(p / n) for the plain mean, C^2 sqrt(p / (65 n)) stratified: ~8x
    assert strat.se < plain.se / 4
    again = l2_error(jax.random.PRNGKey(1), predict, truth, 20000, stratum=stratum)
    assert again == strat  # the same key gives the same numbers


def test_an_empty_stratum_gives_the_plain_estimate():
    truth = make_truth(jax.random.PRNGKey(0), 3, 1)

    def predict(x, y):
        return g_true(truth, x, y) + 0.1 * x[:, 0]

    plain = l2_error(jax.random.PRNGKey(3), predict, truth, 5000)
    strat = l2_error(
        jax.random.PRNGKey(3), predict, truth, 5000, stratum=lambda x, y: x[:, 0] > 1e9, screen=4
    )
    assert strat.error == pytest.approx(plain.error, rel=1e-12)
    assert strat.se == pytest.approx(plain.se, rel=1e-12)
    assert strat.n_stratum == 0 and strat.n_screened == 5 * 5000


def test_outside_knots_marks_scores_beyond_the_outer_knots():
    import jax.numpy as jnp

    from bayes_ips.metrics import outside_knots
    from bayes_ips.spline import make_knots

    knots = make_knots(np.linspace(-1.0, 2.0, 7), 3, 1)
    A = np.array([[2.0, 0.0], [0.0, 0.0]])
    x = jnp.asarray([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    y = jnp.asarray(
        [[-0.6, 5.0], [-0.4, 0.0], [0.9, 0.0], [1.1, 0.0]]
    )  # scores -1.2, -0.8, 1.8, 2.2
    assert np.asarray(outside_knots(A, knots)(x, y)).tolist() == [True, False, False, True]
