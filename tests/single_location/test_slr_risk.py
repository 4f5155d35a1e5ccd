"""The Bayes-optimal predictor and the Monte Carlo risks of single-location regression."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bayes_ips.errors import InputError
from bayes_ips.single_location.attention import erf_attention
from bayes_ips.single_location.bayes import (
    bayes_conditional_variance,
    bayes_predict,
    position_log_posterior,
)
from bayes_ips.single_location.risk import bayes_risk, excess_risk, mc_terms, risk
from bayes_ips.single_location.simulate import make_truth, simulate

# Two Monte Carlo estimates of one quantity are compared through their gap in units of
# the s.e. of the gap; Z = 4.5 keeps the family-wise false-alarm rate below ~1e-4
# over the comparisons of this module.
Z = 4.5


def naive_posterior_mean(truth, X):
    """E[Y | X] by enumerating J0 with SciPy densities of the whole sample (L d-dim tokens)."""
    M, L, d = X.shape
    out_mean, out_var = np.empty(M), np.empty(M)
    for m in range(M):
        logp = np.empty(L)
        for j in range(L):  # J0 = j: token j ~ N(mu, gamma^2 I), the others N(0, I)
            logp[j] = stats.multivariate_normal.logpdf(X[m, j], truth.mu, truth.gamma**2)
            for i in range(L):
                if i != j:
                    logp[j] += stats.multivariate_normal.logpdf(X[m, i], np.zeros(d), 1.0)
        w = np.exp(logp - logp.max())
        w /= w.sum()
        a = X[m] @ truth.v
        out_mean[m] = w @ a
        out_var[m] = truth.noise_sd**2 + w @ (a - out_mean[m]) ** 2
    return out_mean, out_var


@pytest.mark.parametrize(
    "d,L,gamma",
    [(3, 5, 1.3)] + [pytest.param(*c, marks=pytest.mark.slow) for c in [(2, 3, 0.7), (6, 2, 0.4)]],
)
def test_bayes_predictor_matches_naive_enumeration(d, L, gamma):
    t = make_truth(jax.random.PRNGKey(d), d, L=L, gamma=gamma, noise_sd=0.2)
    X = np.asarray(simulate(jax.random.PRNGKey(1), t, 30)[0])
    mean, var = naive_posterior_mean(t, X)
    np.testing.assert_allclose(np.asarray(bayes_predict(t, X)), mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(bayes_conditional_variance(t, X)), var, rtol=1e-10)


def test_one_token_is_known_exactly():
    t = make_truth(jax.random.PRNGKey(0), 4, L=1, noise_sd=0.3)
    X, Y, _ = simulate(jax.random.PRNGKey(1), t, 50)
    np.testing.assert_allclose(bayes_predict(t, X), np.asarray(X[:, 0]) @ t.v, rtol=1e-12)
    np.testing.assert_allclose(bayes_conditional_variance(t, X), 0.09, rtol=1e-12)
    br = bayes_risk(jax.random.PRNGKey(2), t, 100)
    assert br.mean == pytest.approx(0.09, rel=1e-12) and br.se < 1e-12


def test_position_posterior_is_stable_in_high_dimension():
    """Log-odds grow like d/2 nats (2000 here: exp would overflow); the softmax must not."""
    t = make_truth(jax.random.PRNGKey(0), 4000)
    X, _, J0 = simulate(jax.random.PRNGKey(1), t, 32)
    logw = np.asarray(position_log_posterior(t, X))
    assert np.all(np.isfinite(logw)) and np.all(logw <= 0)
    np.testing.assert_allclose(np.exp(logw).sum(-1), 1.0, rtol=1e-12)
    # at this d the signal token is ~d/2 nats more likely than any other
    assert np.array_equal(logw.argmax(-1), np.asarray(J0))
    assert np.all(np.isfinite(np.asarray(bayes_predict(t, X))))


def test_position_posterior_is_calibrated():
    """P(J0 = l | X) against the simulated J0 (small d, where it is far from one-hot).

    Within each bin of predicted probability, the count of hits is compared with the
    sum of the predicted probabilities (a Poisson-binomial with known variance).
    """
    t = make_truth(jax.random.PRNGKey(5), 2, L=3, gamma=0.8)
    X, _, J0 = simulate(jax.random.PRNGKey(6), t, 32_768)
    w = np.exp(np.asarray(position_log_posterior(t, X))).ravel()
    hit = (np.arange(3)[None] == np.asarray(J0)[:, None]).ravel()
    assert 0.05 < np.median(w) < 0.6  # really uncertain, so the check has power
    edges = np.linspace(0, 1, 11)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (w >= lo) & (w < hi)
        if sel.sum() < 50:
            continue
        expected, sd = w[sel].sum(), math.sqrt((w[sel] * (1 - w[sel])).sum())
        assert abs(hit[sel].sum() - expected) < Z * sd, (lo, hit[sel].sum(), expected)


def test_bayes_risk_agrees_with_the_plain_monte_carlo_risk_of_the_bayes_predictor():
    """E[Var(Y | X)] (closed-form conditional variance) = E[(Y - E[Y | X])^2], independent draws."""
    t = make_truth(jax.random.PRNGKey(7), 3, L=4, gamma=0.7, noise_sd=0.2)
    rb = bayes_risk(jax.random.PRNGKey(8), t, 32_768)
    plain = risk(jax.random.PRNGKey(9), lambda X: bayes_predict(t, X), t, 32_768)
    assert rb.mean > t.noise_sd**2 + 0.05  # the position is really uncertain at d = 3
    assert abs(rb.mean - plain.mean) < Z * math.hypot(rb.se, plain.se)
    assert rb.se < plain.se  # Rao-Blackwellisation pays


def test_bayes_residual_is_orthogonal_to_functions_of_x():
    """E[(Y - f_B(X)) h(X)] = 0 for every h: checked for f_B itself and each <x_l, v*>."""
    t = make_truth(jax.random.PRNGKey(10), 3, L=3, gamma=0.7, noise_sd=0.2)
    X, Y, _ = simulate(jax.random.PRNGKey(11), t, 32_768)
    f = np.asarray(bayes_predict(t, X))
    r = np.asarray(Y) - f
    for h in [f, *np.asarray(X @ t.v).T, np.asarray(X[:, 0, 0])]:
        prod = r * h
        assert abs(prod.mean()) < Z * prod.std() / math.sqrt(len(prod))


def test_risk_of_the_zero_predictor_is_the_output_variance():
    """E[Y^2] = gamma^2 + eps^2 in closed form (<mu, v*> = 0)."""
    t = make_truth(jax.random.PRNGKey(12), 10, gamma=0.9, noise_sd=0.3)
    r = risk(jax.random.PRNGKey(13), lambda X: jnp.zeros(X.shape[0]), t, 16_384)
    assert abs(r.mean - (0.81 + 0.09)) < Z * r.se


def test_excess_risk_is_paired_and_consistent():
    t = make_truth(jax.random.PRNGKey(14), 20)
    key = jax.random.PRNGKey(15)
    f = lambda X: erf_attention(X, t.k, t.v, 0.1)  # noqa: E731
    e = excess_risk(key, f, t, 12_000)
    # the Bayes predictor has no excess risk, exactly (same draws)
    e0 = excess_risk(key, lambda X: bayes_predict(t, X), t, 12_000)
    assert e0.excess == 0.0 and e0.excess_se == 0.0
    # same key, same draws: the risk equals the one computed by `risk`, and the first
    # n draws do not depend on n
    assert e.risk == risk(key, f, t, 12_000).mean
    assert e.bayes_risk == bayes_risk(key, t, 12_000).mean
    short = mc_terms(key, f, t, 5000)
    terms = mc_terms(key, f, t, 12_000)
    np.testing.assert_array_equal(short["y"], terms["y"][:5000])
    # the L2 form and the paired difference of squared losses estimate the same excess
    diff = (terms["y"] - terms["f"]) ** 2 - (terms["y"] - terms["f_bayes"]) ** 2
    se_diff = diff.std(ddof=1) / math.sqrt(len(diff))
    assert abs(e.excess - diff.mean()) < Z * se_diff
    assert e.excess_se < se_diff  # the cross term removed: smaller s.e.
    # Pythagoras: risk = Bayes risk + excess, up to the zero-mean cross term
    assert abs(e.risk - e.bayes_risk - e.excess) < Z * se_diff
    assert e.excess > 10 * e.excess_se  # T at (k*, v*) is not Bayes-optimal at d = 20


def test_mc_terms_validates():
    t = make_truth(jax.random.PRNGKey(0), 3)
    with pytest.raises(InputError, match="integer >= 2"):
        risk(jax.random.PRNGKey(0), lambda X: X[:, 0, 0], t, 1)
    with pytest.raises(ValueError, match="predict must map"):
        risk(jax.random.PRNGKey(0), lambda X: X[:, 0], t, 10)
