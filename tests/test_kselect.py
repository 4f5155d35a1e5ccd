"""The Bayesian model's own basis: its marginal likelihood and the choice by it."""

import math

import jax
import numpy as np
import pytest
from bayes_ips.models.lowrank_spline import KAPPA

from bayes_ips.collapsed import collapsed_loglik, curvature_penalty, pspline_precision
from bayes_ips.erm import ERMConfig, fit_erm
from bayes_ips.gauge import gauge_factors
from bayes_ips.kselect import _log_marginal_np, log_evidence, posterior_basis
from bayes_ips.pairs import off_diagonal_scores
from bayes_ips.pairwise import gram
from bayes_ips.simulate import make_truth, simulate
from bayes_ips.spline import make_knots, mixed_breaks

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def problem():
    truth = make_truth(jax.random.PRNGKey(3), 3, 1, phi="tanh", noise_sd=0.1)
    X, Y = simulate(jax.random.PRNGKey(4), truth, 400, 6)
    X, Y = np.asarray(X), np.asarray(Y)
    fit = fit_erm(jax.random.PRNGKey(5), X, Y, ERMConfig(rank=1))
    return X, Y, fit


def _stats(X, Y, fit, knots):
    Un, Vn = gauge_factors(fit.U, fit.V)
    return gram(Un, Vn, X, Y, knots)


def test_numpy_marginal_equals_the_model_collapsed_likelihood(problem):
    """The NumPy twin used for the basis search against the JAX likelihood the
    samplers use, at several (sigma, tau): same formula, so to round-off."""
    X, Y, fit = problem
    knots = make_knots(mixed_breaks(off_diagonal_scores(X, fit.U, fit.V), 12, 0.5), 3, 1)
    st = _stats(X, Y, fit, knots)
    D = curvature_penalty(knots, 0.7)
    ridge = 1.0 / (KAPPA * 0.8) ** 2
    for sigma, tau in [(0.1, 1.0), (0.5, 0.01), (0.02, 20.0)]:
        ref = float(collapsed_loglik(st, sigma, pspline_precision(D, tau, KAPPA * 0.8)))
        got = _log_marginal_np(
            np.asarray(st.FtF),
            np.asarray(st.FtY),
            float(st.YtY),
            float(st.n_obs),
            D.T @ D,
            sigma,
            tau,
            ridge,
        )
        assert got == pytest.approx(ref, rel=1e-10, abs=1e-8)


def test_log_evidence_is_a_maximum_over_sigma_and_tau(problem):
    """Perturbing log sigma or log tau from the reported optimum lowers the
    objective (the search stops at 1e-3 in the log coordinates), and the
    noise at the optimum is the simulated 0.1 to within its sampling error and the
    fit's degrees of freedom (n = 2400: relative sd ~ 1.5%; 5% allowed)."""
    X, Y, fit = problem
    S = off_diagonal_scores(X, fit.U, fit.V)
    knots = make_knots(mixed_breaks(S, 16, 1.0), 3, 1)
    st = _stats(X, Y, fit, knots)
    D = curvature_penalty(knots, float(np.std(S)))
    ys = float(np.sqrt(np.mean(Y**2)))
    ev = log_evidence(st, D, ys, fit.info["sigma_hat"])
    ridge = 1.0 / (KAPPA * ys) ** 2
    args = (np.asarray(st.FtF), np.asarray(st.FtY), float(st.YtY), float(st.n_obs), D.T @ D)

    def objective(ls, lt):
        s, t = math.exp(ls), math.exp(lt)
        return _log_marginal_np(*args, s, t, ridge) + ls + lt - (s**2 + t**2) / (2 * ys**2)

    best = objective(math.log(ev["sigma"]), math.log(ev["tau"]))
    assert best == pytest.approx(ev["log_evidence"], rel=1e-12)
    for dls, dlt in [(0.05, 0), (-0.05, 0), (0, 0.3), (0, -0.3)]:
        assert objective(math.log(ev["sigma"]) + dls, math.log(ev["tau"]) + dlt) < best
    assert ev["sigma"] == pytest.approx(0.1, rel=0.05)


def test_posterior_basis_nested_statistics_equal_a_direct_pass(problem):
    """The table's evidence for coarse K comes from the finest layout's Gram pass
    through the refinement matrices; a direct pass at the coarse knots must give
    the same number (to the search's tolerance, 0.01 nats in the objective)."""
    X, Y, fit = problem
    knots, table = posterior_basis(X, Y, fit.U, fit.V, 3, fit.info["sigma_hat"], 64)
    assert sum(t["chosen"] for t in table) == 1
    chosen = next(t for t in table if t["chosen"])
    assert chosen["log_evidence"] == max(t["log_evidence"] for t in table)
    assert knots.n_intervals == chosen["K"]
    S = np.asarray(off_diagonal_scores(X, fit.U, fit.V, 4000))
    ys = float(np.sqrt(np.mean(Y**2)))
    for row in (table[1], table[-2], chosen):
        kn = make_knots(mixed_breaks(S, row["K"], row["uniform_weight"]), 3, 1)
        direct = log_evidence(
            _stats(X, Y, fit, kn),
            curvature_penalty(kn, float(S.std())),
            ys,
            fit.info["sigma_hat"],
        )
        assert direct["log_evidence"] == pytest.approx(row["log_evidence"], abs=2e-2)
    # n = 2400 observations allow K up to 96 (25 per interval): its divisors >= 8
    assert sorted({t["K"] for t in table}) == [8, 12, 16, 24, 32, 48, 96]
    assert {t["uniform_weight"] for t in table} == {0.0, 0.5, 1.0}
    # k_max leaves out the larger K; the smaller ones keep their numbers
    capped, capped_table = posterior_basis(X, Y, fit.U, fit.V, 3, fit.info["sigma_hat"], 64, 20)
    assert sorted({t["K"] for t in capped_table}) == [8, 12, 16]
    assert capped.n_intervals <= 16
    small = {(t["K"], t["uniform_weight"]): t["log_evidence"] for t in table if t["K"] <= 16}
    for t in capped_table:
        assert t["log_evidence"] == pytest.approx(small[t["K"], t["uniform_weight"]], abs=1e-9)
