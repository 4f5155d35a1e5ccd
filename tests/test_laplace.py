"""The Laplace proposal and the independence Metropolis-Hastings sampler (bayes_ips.laplace)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.stats as st

from bayes_ips.diagnostics import pareto_khat
from bayes_ips.laplace import (
    flatten,
    imh_chains,
    laplace_approx,
    mode_and_hessian,
    mvt_logpdf,
    mvt_sample,
    unravel,
)

RNG = np.random.default_rng(0)
_B = RNG.normal(size=(3, 3))
COV = _B @ _B.T + 0.5 * np.eye(3)
MEAN = np.array([0.3, -1.0, 2.0])
APPROX = laplace_approx(MEAN, np.linalg.inv(COV))


@pytest.mark.parametrize("df", [3.0, 8.0, np.inf])
def test_mvt_logpdf_matches_scipy(df):
    x = RNG.normal(size=(20, 3)) * 2
    ours = np.asarray(mvt_logpdf(jnp.asarray(x), APPROX, df))
    if np.isinf(df):
        ref = st.multivariate_normal(MEAN, COV).logpdf(x)
    else:
        ref = st.multivariate_t(MEAN, COV, df=df).logpdf(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_laplace_approx_inverts_the_hessian_and_floors_flat_directions():
    np.testing.assert_allclose(APPROX.cov, COV, rtol=1e-10)
    np.testing.assert_allclose(APPROX.chol @ APPROX.chol.T, COV, rtol=1e-10)
    flat = laplace_approx(np.zeros(2), np.diag([4.0, 0.0]))  # one flat direction
    assert np.isfinite(flat.cov).all() and flat.cov[1, 1] == pytest.approx(1 / (4.0 * 1e-6))
    with pytest.raises(FloatingPointError):
        laplace_approx(np.zeros(2), np.array([[1.0, np.nan], [np.nan, 1.0]]))


# Kolmogorov-Smirnov p-value below which a sample's law is rejected: 4 tests, so
# false alarms at about 4e-3 per run if the law is right.
KS_ALPHA = 1e-3


# the chi-square by normals (slow tier); the gamma draw
@pytest.mark.parametrize("df", [pytest.param(8.0, marks=pytest.mark.slow), 5.5])
def test_mvt_sample_has_the_student_t_moments_and_law(df):
    """Mean and covariance ``df / (df - 2) Sigma`` of 200k draws; each standardised
    coordinate, and the quadratic form's F law, against SciPy (KS).

    Tolerance: 5 Monte Carlo standard errors of each entry (the entries' s.e. are
    computed from the draws themselves); the laws at :data:`KS_ALPHA`.
    """
    x = np.asarray(mvt_sample(jax.random.PRNGKey(0), APPROX, df, 200_000))
    n = len(x)
    assert np.all(np.abs(x.mean(0) - MEAN) <= 5 * x.std(0) / np.sqrt(n))
    c = x - MEAN
    prods = c[:, :, None] * c[:, None, :]
    se = prods.std(0) / np.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - df / (df - 2) * COV) <= 5 * se)
    for i in (0, 2):
        assert st.kstest(c[:, i] / np.sqrt(COV[i, i]), st.t(df).cdf).pvalue > KS_ALPHA
    q = np.einsum("ni,ij,nj->n", c, np.linalg.inv(COV), c) / 3  # F(3, df)
    assert st.kstest(q, st.f(3, df).cdf).pvalue > KS_ALPHA


def test_imh_chains_sample_the_target_exactly():
    """Target N(1, 0.5^2), proposal t_4(0, 1.5^2): mean, sd and a tail probability.

    Tolerances: 5 Monte Carlo standard errors, with the effective sample size of
    each chain estimated by ArviZ (the chains repeat rejected states).
    """
    import arviz as az

    C, T = 4, 20_000
    key_p, key_c = jax.random.split(jax.random.PRNGKey(1))
    prop = laplace_approx(np.zeros(1), np.array([[1 / 1.5**2]]))
    x = mvt_sample(key_p, prop, 4.0, C * T)
    log_w = st.norm(1.0, 0.5).logpdf(np.asarray(x[:, 0])) - np.asarray(mvt_logpdf(x, prop, 4.0))
    idx, acc = imh_chains(key_c, jnp.asarray(log_w.reshape(C, T)))
    draws = np.asarray(x[:, 0])[np.asarray(idx) + np.arange(C)[:, None] * T]
    ess = float(az.ess(draws))
    for value, f, se in (
        (1.0, draws.mean(), 0.5 / np.sqrt(ess)),
        (0.5, draws.std(), 0.5 / np.sqrt(2 * ess)),
        (st.norm.sf(2.0, 1.0, 0.5), (draws > 2.0).mean(), np.sqrt(0.023 * 0.977 / ess)),
    ):
        assert abs(f - value) <= 5 * se, (f, value, se)
    # the acceptance rate is int int pi(x) q(y) min(1, w(y) / w(x)) dx dy (quadrature);
    # 0.01 is ~3 Monte Carlo s.e. of the mean of 80000 correlated accept indicators
    z = np.linspace(-12, 12, 3001)
    dz = z[1] - z[0]
    pi, q = st.norm(1.0, 0.5).pdf(z), st.t(4, scale=1.5).pdf(z)
    w = pi / q
    expected = float(pi @ np.minimum(1.0, w[None, :] / w[:, None]) @ q) * dz * dz
    assert abs(float(np.asarray(acc)[:, 1:].mean()) - expected) < 0.01, expected


def test_imh_never_moves_to_a_proposal_of_zero_density():
    inf = jnp.inf
    log_w = jnp.array([[0.0, -inf, 5.0, jnp.nan, -inf], [-inf, -inf, 1.0, 0.0, 9.0]])
    idx, acc = imh_chains(jax.random.PRNGKey(0), log_w)
    idx = np.asarray(idx)
    assert idx[0, 1] == 0 and idx[0, 3] == idx[0, 2] and idx[0, 4] == idx[0, 3]
    # a chain whose first proposal has zero density takes the first one that has not
    assert idx[1, 1] == 0 and idx[1, 2] == 2
    assert bool(np.asarray(acc)[1, 2])


def _normal_mean_model(y=None, *, prior_sd):
    mu = numpyro.sample("mu", dist.Normal(0.0, prior_sd).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)


def test_mode_and_hessian_of_a_conjugate_model_are_exact():
    from functools import partial

    y = jnp.array([1.5, -0.5])
    model = partial(_normal_mean_model, prior_sd=2.0)
    mode, H, n, ok, layout = mode_and_hessian(model, (y,), {}, {"mu": jnp.zeros(2)}, ["mu"])
    prec = 1 + 1 / 4.0
    np.testing.assert_allclose(mode, np.asarray(y) / prec, atol=1e-8)
    np.testing.assert_allclose(H, prec * np.eye(2), rtol=1e-10)
    assert ok and n >= 1
    np.testing.assert_allclose(unravel(jnp.asarray(mode), layout)["mu"], mode)


def test_search_mode_from_another_datasets_mode_finds_this_ones():
    """BFGS whitened by a given Hessian (another dataset's mode and Hessian, the way
    ``analyses/order_refit.py`` refits a fold) reaches the conjugate model's exact mode."""
    from functools import partial

    from bayes_ips.laplace import search_mode

    model = partial(_normal_mean_model, prior_sd=2.0)
    y0, y1 = jnp.array([1.5, -0.5]), jnp.array([0.3, 2.0])
    mode0, H0, _, _, layout = mode_and_hessian(model, (y0,), {}, {"mu": jnp.zeros(2)}, ["mu"])
    mode1, n, ok = search_mode(mode0, H0, model, (y1,), {}, layout)
    np.testing.assert_allclose(mode1, np.asarray(y1) / (1 + 1 / 4.0), atol=1e-8)
    assert ok and n >= 1


def test_flatten_and_unravel_round_trip():
    point = {"U": jnp.arange(6.0).reshape(3, 2), "sigma": jnp.array(2.0), "z": jnp.ones(1)}
    flat, layout = flatten(point, ["sigma", "U"])
    assert flat.shape == (7,) and float(flat[0]) == 2.0
    back = unravel(flat, layout, {"z": point["z"]})
    for k in point:
        np.testing.assert_array_equal(back[k], point[k])


def test_unravel_batch_of_points_matches_one_at_a_time():
    """A (S, P) batch (NumPy, on the host) unravels row by row as each row alone does."""
    point = {"U": jnp.arange(6.0).reshape(3, 2), "sigma": jnp.array(2.0), "v": jnp.ones(2)}
    _, layout = flatten(point, ["U", "sigma", "v"])
    rows = np.random.default_rng(0).normal(size=(5, 9))
    batch = unravel(rows, layout)
    assert batch["U"].shape == (5, 3, 2) and batch["sigma"].shape == (5,)
    assert batch["v"].shape == (5, 2)
    for s in range(5):
        one = unravel(jnp.asarray(rows[s]), layout)
        for k in one:
            np.testing.assert_array_equal(batch[k][s], np.asarray(one[k]))


def test_pareto_khat_tells_a_good_proposal_from_a_light_tailed_one():
    """Proposal wider than the target: bounded weights, k < 0.5; narrower: k > 0.7."""
    x_wide = RNG.standard_t(5, 4000) * 1.5
    good = st.norm.logpdf(x_wide) - st.t(5, scale=1.5).logpdf(x_wide)
    x_narrow = RNG.normal(size=4000) * 0.5
    bad = st.t(2).logpdf(x_narrow) - st.norm(0, 0.5).logpdf(x_narrow)
    k_good, ess_good = pareto_khat(good)
    k_bad, _ = pareto_khat(bad)
    assert k_good < 0.5 < 0.7 < k_bad
    assert 0.3 * 4000 < ess_good <= 4000
    assert pareto_khat(np.array([-np.inf, -np.inf, 0.0]))[0] == np.inf


# ~2.5 s of compilation a d: d = 2 and 6 in the slow tier
@pytest.mark.parametrize(
    "d", [pytest.param(2, marks=pytest.mark.slow), 3, pytest.param(6, marks=pytest.mark.slow)]
)
def test_sphere_chart_maps_onto_the_sphere_with_the_stated_jacobian(d):
    """u(z) has norm 1 (times sqrt(d)), chart_point inverts it, and the log Jacobian is
    log sqrt(det(J^T J)) of the map z -> u (the surface element), computed by autodiff."""
    from bayes_ips.laplace import chart_log_jacobian, chart_point, chart_to_flat, sphere_chart

    rng = np.random.default_rng(d)
    chart = sphere_chart(rng.normal(size=(d, 1)), rng.normal(size=(d, 1)))
    k = d - 1
    for _ in range(5):
        z = jnp.asarray(rng.normal(size=2 * k + 2))
        flat = chart_to_flat(z, chart)
        np.testing.assert_allclose(np.linalg.norm(flat[:d]), np.sqrt(d), rtol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(flat[d : 2 * d]), np.sqrt(d), rtol=1e-12)
        np.testing.assert_allclose(flat[2 * d :], z[2 * k :])
        np.testing.assert_allclose(chart_point(np.asarray(flat), chart), z, rtol=1e-10)
        J = jax.jacfwd(lambda x: chart_to_flat(x, chart))(z) / np.sqrt(d)
        surface = sum(
            0.5 * np.linalg.slogdet(np.asarray(Jb.T @ Jb))[1]
            for Jb in (J[:d, :k], J[d : 2 * d, k : 2 * k])
        )
        np.testing.assert_allclose(chart_log_jacobian(z, chart), surface, rtol=1e-10)


def test_per_head_charts_are_the_single_head_charts_side_by_side():
    """H stacked charts (the multi-head model at rank 1): every head's U_h and V_h on its own
    sphere of radius sqrt(d), flattened as the model's (H, d, 1) factors, chart_point
    inverting the map, the log Jacobian the sum of the heads', and the rest passed through."""
    from bayes_ips.laplace import chart_log_jacobian, chart_point, chart_to_flat, sphere_chart

    rng = np.random.default_rng(0)
    H, d = 3, 4
    k = d - 1
    U, V = rng.normal(size=(H, d, 1)), rng.normal(size=(H, d, 1))
    chart = sphere_chart(U, V)
    heads = [sphere_chart(U[h], V[h]) for h in range(H)]
    assert chart.n_heads == H and chart.dim == 2 * H * k + 1 + H
    z = jnp.asarray(0.3 * rng.normal(size=chart.dim))
    zu, zv, rest = z[: H * k].reshape(H, k), z[H * k : 2 * H * k].reshape(H, k), z[2 * H * k :]
    flat = np.asarray(chart_to_flat(z, chart))
    Uf, Vf = flat[: H * d].reshape(H, d), flat[H * d : 2 * H * d].reshape(H, d)
    for h in range(H):  # head h's own chart gives head h's factors
        one = np.asarray(chart_to_flat(jnp.concatenate([zu[h], zv[h], rest[:2]]), heads[h]))
        np.testing.assert_allclose(Uf[h], one[:d], rtol=1e-12)
        np.testing.assert_allclose(Vf[h], one[d : 2 * d], rtol=1e-12)
    np.testing.assert_allclose(flat[2 * H * d :], rest)
    np.testing.assert_allclose(chart_point(flat, chart), z, rtol=1e-10, atol=1e-12)
    jac = sum(
        chart_log_jacobian(jnp.concatenate([zu[h], zv[h], rest[:2]]), heads[h]) for h in range(H)
    )
    np.testing.assert_allclose(chart_log_jacobian(z, chart), jac, rtol=1e-12)


# Monte Carlo tolerance of the rotation-slice identity: 6 standard errors of a
# self-normalised importance-sampling mean (s.e. from its effective size)
SLICE_Z = 6.0


def test_rotation_slice_weights_give_the_law_of_the_orbits():
    """Rank 2, d = 2: (U, V) ~ N(0, I_8) is invariant under (U Q, V Q).  The slice
    through a point x0, transverse to the rotation, is a hyperplane through 0 that
    meets every orbit twice (x, -x), so the Faddeev-Popov weight |<t(x), t(x0)>| on it
    reproduces E ||U V^T||_F^2 = d^2 r = 8 (measured: 7.93 +- 0.035); without the
    weight the slice's own mean is 6.19 +- 0.019."""
    from bayes_ips.laplace import LaplaceApprox, rotation_slice, slices_to_flat

    d, r = 2, 2
    layout = (("U", (d, r)), ("V", (d, r)), ("sigma", ()), ("tau", ()))
    x0 = np.r_[np.random.default_rng(0).standard_normal(2 * d * r), 0.0, 0.0]
    P = x0.size
    approx = LaplaceApprox(x0, np.eye(P), np.eye(P))
    sub, sl = rotation_slice(approx, layout)
    B = np.asarray(sl.B)
    assert sub.mean.shape == (P - 1,) and B.shape == (P, P - 1)
    np.testing.assert_allclose(B.T @ B, np.eye(P - 1), atol=1e-12)
    U0, V0 = x0[:4].reshape(2, 2), x0[4:8].reshape(2, 2)
    J = np.array([[0.0, 1.0], [-1.0, 0.0]])
    t0 = np.r_[(U0 @ J).ravel(), (V0 @ J).ravel(), 0.0, 0.0]
    np.testing.assert_allclose(B.T @ t0, 0.0, atol=1e-12)  # transverse to the orbit
    n = 200_000
    # the hyperplane holds 0 (<x0, t0> = 0), so N(0, I_8) restricted to it is, in slice
    # coordinates x = x0 + B z, z ~ N(-B^T x0, I): drawn exactly, the weight is the factor
    z = -B.T @ x0 + np.random.default_rng(1).standard_normal((n, P - 1))
    flat, log_fp = (np.asarray(a) for a in slices_to_flat(jnp.asarray(z), sl))
    U, V = flat[:, :4].reshape(n, 2, 2), flat[:, 4:8].reshape(n, 2, 2)
    # the Faddeev-Popov factor against its definition, |<(U J, V J), t0>|
    fp = np.abs(np.einsum("nij,ij->n", U @ J, U0 @ J) + np.einsum("nij,ij->n", V @ J, V0 @ J))
    np.testing.assert_allclose(log_fp, np.log(fp), rtol=1e-10, atol=1e-10)
    f = np.sum((U @ np.swapaxes(V, 1, 2)) ** 2, axis=(1, 2))
    for log_w, should_hold in ((log_fp, True), (np.zeros(n), False)):
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        mean = float(w @ f)
        se = float(np.sqrt(w**2 @ (f - mean) ** 2))
        assert (abs(mean - d * d * r) < SLICE_Z * se) is should_hold, (mean, se)
