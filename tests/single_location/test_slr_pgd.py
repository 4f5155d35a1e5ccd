"""The attention predictor and the PGD estimator of single-location regression."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import optimize

from bayes_ips.errors import InputError
from bayes_ips.single_location import pgd
from bayes_ips.single_location.attention import erf_attention, erf_attention_draws, sq_loss
from bayes_ips.single_location.pgd import (
    PGDConfig,
    curvature_scale,
    fit_pgd,
    lambda_schedule,
    moment_init,
    profile_lambda,
)
from bayes_ips.single_location.risk import excess_risk, mc_terms
from bayes_ips.single_location.simulate import make_truth, simulate
from bayes_ips.single_location.sphere import overlaps

RECOVERY = 0.95  # |kappa|, |nu| required of a recovered (k, v) (the criterion)
# The estimation part of the excess risk of an M-estimator with p free parameters is
# ~ p * risk / M (asymptotic ERM, well-specified); 4x leaves room for the sandwich
# constant of this misspecified fit.
ERM_GAP_FACTOR = 4.0
# Gaps between two Monte Carlo estimates, in units of their s.e. (few comparisons).
Z = 4.5


# Three seeds for the recovery checks: the first in the fast tier, all three in CI's
# slow tier (3000 full-batch steps at M = 2000 each, ~4 s a seed).
SEEDS = [0] + [pytest.param(s, marks=pytest.mark.slow) for s in (1, 2)]


def _data(seed, d=20, M=2000, L=10):
    t = make_truth(jax.random.PRNGKey(seed), d, L=L)
    X, Y, _ = simulate(jax.random.PRNGKey(100 + seed), t, M)
    return t, np.asarray(X), np.asarray(Y)


def test_erf_attention_is_sign_symmetric_and_matches_a_loop():
    t, X, _ = _data(0, d=5, M=7, L=3)
    rng = np.random.default_rng(0)
    k, v = rng.normal(size=5), rng.normal(size=5)
    T = np.asarray(erf_attention(X, k, v, 0.7))
    from scipy.special import erf

    loop = [sum(erf(0.7 * X[m, j] @ k) * (X[m, j] @ v) for j in range(3)) for m in range(7)]
    np.testing.assert_allclose(T, loop, rtol=1e-12)
    np.testing.assert_allclose(erf_attention(X, -k, -v, 0.7), T, rtol=1e-12)
    K, V, lam = rng.normal(size=(4, 5)), rng.normal(size=(4, 5)), rng.uniform(0.1, 1, 4)
    many = np.asarray(erf_attention_draws(X, K, V, lam))
    one_by_one = np.stack([erf_attention(X, K[s], V[s], lam[s]) for s in range(4)], axis=1)
    np.testing.assert_allclose(many, one_by_one, rtol=1e-12)


def test_loss_gradients():
    t, X, Y = _data(1, d=4, M=30, L=3)
    f = lambda k, v, lam: sq_loss(X, Y, k, v, lam)  # noqa: E731
    check_grads(f, (jnp.asarray(t.k), jnp.asarray(t.v), 0.4), order=2, modes=("rev",))


def test_lambda_schedules():
    for kind in ("linear", "geometric", "inverse"):
        lam = lambda_schedule(kind, 1.0, 0.1, 50)
        assert lam.shape == (50,) and lam[0] == pytest.approx(1.0) and lam[-1] == pytest.approx(0.1)
        assert np.all(np.diff(lam) < 0)
    np.testing.assert_allclose(lambda_schedule("constant", 0.3, 9.0, 4), 0.3)
    t = np.arange(50)
    c = (1.0 / 0.1 - 1) / 49
    np.testing.assert_allclose(lambda_schedule("inverse", 1.0, 0.1, 50), 1 / (1 + c * t))
    np.testing.assert_allclose(lambda_schedule("geometric", 0.1, 1.0, 3), [0.1, math.sqrt(0.1), 1])


def test_moment_start_is_consistent():
    """k0 ∝ sum of tokens and v0 ∝ (I - k0 k0^T) sum Y x are unbiased directions."""
    t, X, Y = _data(2, d=10, M=40_000, L=5)
    k0, v0 = moment_init(X, Y)
    # <k0, k*> = 1 / sqrt(1 + 2 L / M) up to O(1/M) for the normalised sum of tokens
    assert float(k0 @ t.k) > 1 / math.sqrt(1 + 2 * 5 / 40_000) - 1e-3
    assert float(v0 @ t.v) > 0.97


def test_curvature_scale_is_the_top_eigenvalue_of_the_token_second_moment():
    t, X, Y = _data(7, d=20, M=2000)
    S = np.einsum("mld,mle->de", X, X) / len(X)
    top = np.linalg.eigvalsh(S)[-1]
    assert curvature_scale(X) == pytest.approx(top, rel=1e-8)
    # E S = (d/2) k* k*^T + (L - 1 + gamma^2) I: top eigenvalue d/2 + L - 1 + gamma^2
    assert top == pytest.approx(20 / 2 + 9 + 0.5, rel=0.05)


def test_profile_lambda_matches_a_scalar_minimiser():
    t, X, Y = _data(3, d=20, M=500)
    lam = profile_lambda(X, Y, t.k, t.v)
    res = optimize.minimize_scalar(
        lambda u: float(sq_loss(X, Y, t.k, t.v, math.exp(u))),
        bounds=(math.log(1e-3), math.log(10)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    assert lam == pytest.approx(math.exp(res.x), rel=0.01)  # grid resolution 0.6%


@pytest.mark.parametrize("seed", SEEDS)
def test_pgd_recovers_k_and_v(seed):
    t, X, Y = _data(seed)
    fit = fit_pgd(jax.random.PRNGKey(seed), X, Y)
    assert abs(np.linalg.norm(fit.k) - 1) < 1e-12 and abs(np.linalg.norm(fit.v) - 1) < 1e-12
    o = overlaps(fit.k, fit.v, t.k, t.v)
    assert o["kappa_aligned"] > RECOVERY and o["nu_aligned"] > RECOVERY
    assert 0.05 < fit.lam < 0.2  # near the risk-optimal lambda at (k*, v*) for d = 20
    assert fit.info["train_loss"] <= fit.info["loss_trace"][0]
    # the fit's excess risk is that of the oracle T (same lambda) plus an estimation part
    key = jax.random.PRNGKey(50 + seed)
    e = excess_risk(key, fit.predict, t, 4096)
    oracle = excess_risk(key, lambda Z_: erf_attention(Z_, t.k, t.v, fit.lam), t, 4096)
    M, _, d = X.shape
    p = 2 * (d - 1)
    assert e.excess - oracle.excess < ERM_GAP_FACTOR * p * e.risk / M


def test_sgd_recovers_k_and_v():
    t, X, Y = _data(4)
    fit = fit_pgd(jax.random.PRNGKey(4), X, Y, PGDConfig(batch_size=100, steps=3000))
    o = overlaps(fit.k, fit.v, t.k, t.v)
    assert o["kappa_aligned"] > RECOVERY and o["nu_aligned"] > RECOVERY


@pytest.mark.parametrize("seed", SEEDS)
def test_uniform_starts_end_at_the_truth_or_at_the_swapped_point(seed):
    """From the sphere, PGD finds +-(k*, v*) or the swapped critical point +-(v*, k*)."""
    t, X, Y = _data(seed)
    fit = fit_pgd(jax.random.PRNGKey(10 + seed), X, Y, PGDConfig(init="sphere"))
    o = overlaps(fit.k, fit.v, t.k, t.v)
    s = overlaps(fit.k, fit.v, t.v, t.k)
    truth = o["kappa_aligned"] > RECOVERY and o["nu_aligned"] > RECOVERY
    swap = s["kappa_aligned"] > RECOVERY and s["nu_aligned"] > RECOVERY
    assert truth or swap


@pytest.mark.slow  # ~5 s (fast-tier budget)
def test_the_swapped_point_predicts_better_than_the_truth_when_lambda_is_free():
    """The reason for the moment start: at its best lambda, T(v*, k*) has the lower risk.

    sqrt(d/2) erf(lam <x, v*>) rescales the signal token's <x, v*> with gain
    ~1.13 lam sqrt(d/2), which erf(lam <x, k*>) <= 1 cannot; both pay the same
    noise-token variance.  Risks on the same fresh draws (paired).
    """
    t, X, Y = _data(5, d=30, M=8192)
    lam_t = profile_lambda(X, Y, t.k, t.v)
    lam_s = profile_lambda(X, Y, t.v, t.k)
    key = jax.random.PRNGKey(6)
    a = mc_terms(key, lambda Z_: erf_attention(Z_, t.k, t.v, lam_t), t, 8192)
    b = mc_terms(key, lambda Z_: erf_attention(Z_, t.v, t.k, lam_s), t, 8192)
    np.testing.assert_array_equal(a["y"], b["y"])  # same draws
    gap = (a["f"] - a["f_bayes"]) ** 2 - (b["f"] - b["f_bayes"]) ** 2
    assert gap.mean() > Z * gap.std(ddof=1) / math.sqrt(len(gap))


@pytest.mark.slow  # ~5 s, a property of cost (fast-tier budget)
def test_no_recompilation_for_a_second_fit_of_the_same_shape():
    t, X, Y = _data(6)  # the shapes of the recovery tests: compiled once per session
    fit_pgd(jax.random.PRNGKey(0), X, Y)
    before = pgd._pgd_scan_jit._cache_size()
    fit_pgd(jax.random.PRNGKey(1), X, Y, PGDConfig(lr=0.01, lambda0=0.2, init="sphere"))
    assert pgd._pgd_scan_jit._cache_size() == before


@pytest.mark.parametrize(
    "X,Y,cfg,fragment",
    [
        (np.zeros((5, 3)), np.zeros(5), PGDConfig(), "shape (M, L, d)"),
        (np.zeros((5, 3, 1)), np.zeros(5), PGDConfig(), "d >= 2"),
        (np.zeros((5, 3, 4)), np.zeros(4), PGDConfig(), "Y must have shape"),
        (np.full((5, 3, 4), np.nan), np.zeros(5), PGDConfig(), "NaN"),
        (np.zeros((5, 3, 4)), np.array([0, 1, np.inf, 0, 0]), PGDConfig(), "NaN or inf"),
        (np.zeros((5, 3, 4)), np.zeros(5), PGDConfig(steps=0), "steps"),
        (np.zeros((5, 3, 4)), np.zeros(5), PGDConfig(lr=-1.0), "lr"),
        (np.zeros((5, 3, 4)), np.zeros(5), PGDConfig(lambda0=0.0), "lambda0"),
        (np.zeros((5, 3, 4)), np.zeros(5), PGDConfig(lambda_schedule="cosine"), "schedule"),
        (np.zeros((5, 3, 4)), np.zeros(5), PGDConfig(init="spectral"), "init"),
        (np.zeros((5, 3, 4)), np.zeros(5), PGDConfig(batch_size=0), "batch size"),
    ],
)
def test_bad_input(X, Y, cfg, fragment):
    with pytest.raises(InputError, match=re.escape(fragment)) as e:
        fit_pgd(jax.random.PRNGKey(0), X, Y, cfg)
    assert "\n" not in str(e.value)
