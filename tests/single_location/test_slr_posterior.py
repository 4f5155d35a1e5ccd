"""The Bayesian single-location model: prior, NUTS posterior, sign alignment, modes, ArviZ I/O.

One NUTS run (three chains, sequential, one compilation) serves most tests: chain 0
starts at the PGD fit, chain 1 at its mirror image ``(-k, -v)`` (the same posterior
mode up to the sign symmetry) and chain 2 at the swapped point ``(v*, k*)`` (a
genuinely different mode, see ``bayes_ips.single_location.pgd``).
"""

import dataclasses
import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayes_ips.models.single_location import single_location
from numpyro.infer import Predictive

from bayes_ips.arviz_io import load_inference_data, save_inference_data, summary
from bayes_ips.diagnostics import diagnose
from bayes_ips.errors import InputError
from bayes_ips.posterior import mode_check
from bayes_ips.single_location.attention import erf_attention
from bayes_ips.single_location.pgd import PGDConfig, PGDFit, fit_pgd
from bayes_ips.single_location.posterior import (
    SLRPosterior,
    SLRSamplerConfig,
    initial_values,
    sample_posterior,
)
from bayes_ips.single_location.risk import excess_risk
from bayes_ips.single_location.simulate import make_truth, simulate

# Three NUTS chains from three starts (~34 s in all): slow tier (fast-tier budget; the
# attention's symmetries are tested fast in test_slr_attention.py).
pytestmark = pytest.mark.slow

warnings.filterwarnings("ignore", category=FutureWarning)

CONCENTRATION = 0.9  # |kappa|, |nu| of the aligned posterior mean direction (the bound)
# Short chains (150 warmup + 150 draws) for speed: a diagonal mass matrix adapts in
# that time, a dense one does not (measured at d = 20: 254 vs 31 leapfrog steps per draw).
SHORT = SLRSamplerConfig(chains=2, warmup=120, draws=120, dense_mass=False)
# The largest split R-hat over the 59 quantities of the chain-pair table (50 predictions,
# lambda, sigma, rho, 3 overlaps, |kappa|, |nu|, kappa nu) for 2 chains x 100 draws.  For
# *independent* draws, the ideal of mixing, its 99.9% quantile is 1.080 (4000 simulated
# tables, numpy seed 0, arviz.rhat); 1.05 is the 99.9% point of a single quantity, and the
# maximum of 59 passes it in 6.0% of those tables.  A failed alignment puts the overlaps'
# chains at opposite signs: R-hat >> 2.
RHAT_MAX_OF_59 = 1.08
# see tests/test_slr_pgd.py: the estimation part of an excess risk is ~ p risk / M
ERM_GAP_FACTOR = 4.0


def _data(seed, d=16, M=800, L=10):
    t = make_truth(jax.random.PRNGKey(seed), d, L=L)
    X, Y, _ = simulate(jax.random.PRNGKey(100 + seed), t, M)
    return t, np.asarray(X), np.asarray(Y)


def test_prior_predictive_shapes_and_uniform_directions():
    t, X, _ = _data(0, d=5, M=30, L=4)
    pred = Predictive(single_location, num_samples=3000)(jax.random.PRNGKey(1), jnp.asarray(X))
    assert pred["Y"].shape == (3000, 30) and np.all(np.isfinite(np.asarray(pred["Y"])))
    assert pred["k"].shape == pred["v"].shape == pred["z_k"].shape == (3000, 5)
    assert pred["lambda"].shape == pred["sigma"].shape == (3000,)
    k = np.asarray(pred["k"])
    np.testing.assert_allclose(np.linalg.norm(k, axis=1), 1.0, rtol=1e-12)
    # uniform on the sphere: E[k] = 0 and E[k k^T] = I / d (the radial factor changes
    # only the radius); s.e. of a mean of k_i is 1/sqrt(d n), of k_i^2 ~ sqrt(2/(d^2 n))
    n, d = k.shape
    assert np.all(np.abs(k.mean(0)) < 5 / math.sqrt(d * n))
    second = k.T @ k / n
    assert np.all(np.abs(np.diag(second) - 1 / d) < 5 * math.sqrt(2 / n) / d)
    assert np.all(np.abs(second[~np.eye(d, dtype=bool)]) < 5 / (d * math.sqrt(n)))
    # lambda ~ LogNormal(log 0.2, 1): median 0.2
    # median of 3000 draws: s.e. ~ 1.25 * 0.2 / sqrt(3000) = 0.0046 on the log-normal
    assert abs(np.median(np.asarray(pred["lambda"])) - 0.2) < 0.025


@pytest.fixture(scope="module")
def three_chains():
    """Chains from the PGD fit, its mirror image, and the swapped point; seed 0."""
    t, X, Y = _data(0)
    pgd = fit_pgd(jax.random.PRNGKey(0), X, Y)
    y_scale = float(np.sqrt(np.mean(Y**2)))
    init = initial_values(jax.random.PRNGKey(1), pgd, 3, 0.1, y_scale)
    init["z_k"] = init["z_k"].at[1].multiply(-1.0)  # chain 1: (-k, -v)
    init["z_v"] = init["z_v"].at[1].multiply(-1.0)
    swap = PGDFit(t.v, t.k, pgd.lam, pgd.config, -1, pgd.info)  # chain 2: (v*, k*)
    init_swap = initial_values(jax.random.PRNGKey(2), swap, 1, 0.1, y_scale)
    for name in ("z_k", "z_v"):
        init[name] = init[name].at[2].set(init_swap[name][0])
    cfg = SLRSamplerConfig(chains=3, warmup=100, draws=100, dense_mass=False)
    idata, post, chains = sample_posterior(
        jax.random.PRNGKey(3), X, Y, cfg, pgd=pgd, truth=t, init_params=init, seed=3,
        progress=False,
    )  # fmt: skip
    return t, X, Y, pgd, idata, post, chains


def _chain_directions(post, chains):
    kb, vb = post.k[chains].mean(axis=(0, 1)), post.v[chains].mean(axis=(0, 1))
    return kb / np.linalg.norm(kb), vb / np.linalg.norm(vb)


def test_posterior_concentrates_around_the_truth_from_the_pgd_start(three_chains):
    t, X, Y, pgd, idata, post, chains = three_chains
    kb, vb = _chain_directions(post, [0, 1])
    assert abs(kb @ t.k) > CONCENTRATION and abs(vb @ t.v) > CONCENTRATION
    assert int(chains.extra["diverging"][:2].sum()) == 0
    # Per draw, kappa = <k_s, k*> is smaller: averaging removes the spread of the draws
    # around the mean direction, and E_s <k_s, k*> = ||E_s k_s|| <kb, k*> <= <kb, k*> when
    # every aligned draw has kappa >= 0 (as here).
    kappa_draws = np.einsum("cdi,i->cd", post.k[:2], t.k) * np.sign(kb @ t.k)
    assert np.all(kappa_draws > 0)
    assert idata.posterior["abs_kappa"].values[:2].mean() <= abs(kb @ t.k) + 1e-12


def test_mirrored_chains_are_aligned_and_not_flagged(three_chains):
    t, X, Y, pgd, idata, post, chains = three_chains
    raw = chains.samples["k"]
    # the chains really sat in mirrored modes: opposite raw signs ...
    assert np.mean(raw[0] @ pgd.k > 0) == 1.0 and np.mean(raw[1] @ pgd.k < 0) == 1.0
    assert np.all(post.sign[0] == 1) and np.all(post.sign[1] == -1)
    # ... and agree after alignment, on the flip-invariant and aligned quantities
    pair = idata.sel(chain=[0, 1])
    table = summary(pair)
    assert len(table) == 59  # the count RHAT_MAX_OF_59 was computed for
    assert table["r_hat"].max() < RHAT_MAX_OF_59
    stats = np.concatenate(
        [idata.posterior["pred"].values, np.stack([idata.posterior[n].values for n in
                                                   ("overlap_k", "overlap_v", "overlap_kv")], -1)],
        -1,
    )  # fmt: skip
    assert not mode_check(stats[:2])["separated"]
    k0, k1 = post.k[0].mean(0), post.k[1].mean(0)
    assert k0 @ k1 / (np.linalg.norm(k0) * np.linalg.norm(k1)) > 0.99


def test_a_chain_in_a_genuinely_different_mode_is_flagged(three_chains):
    t, X, Y, pgd, idata, post, chains = three_chains
    kb, vb = _chain_directions(post, [2])
    assert abs(kb @ t.v) > CONCENTRATION and abs(vb @ t.k) > CONCENTRATION  # stayed swapped
    modes = json.loads(idata.attrs["modes"])
    assert modes["separated"] and modes["groups"] == [[0, 1], [2]]
    # it predicts almost like the truth: predictions alone do not separate the modes here
    assert not mode_check(idata.posterior["pred"].values)["separated"]
    _, report = diagnose(idata)
    assert any("different, non-equivalent modes" in p for p in report["problems"])


def test_posterior_mean_predictor(three_chains):
    t, X, Y, pgd, idata, post, chains = three_chains
    two = SLRPosterior(
        *(a[:2] for a in (post.k, post.v, post.sign, post.lam, post.sigma)), post.k_ref
    )
    Xn = np.asarray(simulate(jax.random.PRNGKey(7), t, 40)[0])
    np.testing.assert_allclose(two.predict(Xn), two.draws(Xn).mean(axis=(0, 1)), rtol=1e-10)
    lo, hi = two.band(Xn)
    assert np.all(lo <= hi)
    key = jax.random.PRNGKey(8)
    e = excess_risk(key, two.predict, t, 4000)
    lam = float(two.lam.mean())
    oracle = excess_risk(key, lambda Z_: erf_attention(Z_, t.k, t.v, lam), t, 4000)
    M, _, d = X.shape
    assert e.excess - oracle.excess < ERM_GAP_FACTOR * 2 * (d - 1) * e.risk / M


def test_inference_data_round_trip_summary_and_loo(three_chains, tmp_path):
    import arviz as az

    t, X, Y, pgd, idata, post, chains = three_chains
    path = tmp_path / "post.nc"
    save_inference_data(path, idata)
    back = load_inference_data(path)
    for group in (
        "posterior",
        "sample_stats",
        "observed_data",
        "constant_data",
        "posterior_predictive",
        "log_likelihood",
    ):
        assert group in back.groups()
    C, D = post.shape
    M, L, d = X.shape
    P = back.constant_data["X_eval"].shape[0]
    assert back.posterior["k"].dims == ("chain", "draw", "dim")
    assert back.posterior["pred"].dims == ("chain", "draw", "eval_point")
    assert back.constant_data["X"].dims == ("sample", "token", "dim")
    assert back.constant_data["X_eval"].dims == ("eval_point", "token", "dim")
    assert back.log_likelihood["Y"].dims == ("chain", "draw", "sample")
    assert back.posterior_predictive["Y"].dims[-1] == "sample"
    assert back.log_likelihood["Y"].shape == (C, D, M)
    np.testing.assert_array_equal(back.posterior["pred"].values, idata.posterior["pred"].values)
    table = summary(back)
    names = set(table.index)
    allowed = {"lambda", "sigma", "rho", "pred", "abs_kappa", "abs_nu", "kappa_nu"}
    allowed |= {"overlap_k", "overlap_v", "overlap_kv"}
    assert names and all(n.split("[")[0] in allowed for n in names)
    assert not any(n.startswith(("k[", "v[", "z_")) for n in names)
    two = back.sel(chain=[0, 1])
    assert np.isfinite(az.loo(two).elpd_loo)
    rebuilt = SLRPosterior.from_idata(back)
    X_eval = back.constant_data["X_eval"].values
    np.testing.assert_allclose(rebuilt.draws(X_eval), idata.posterior["pred"].values, rtol=1e-10)
    assert P == 50


def test_sampler_config_and_inputs_are_validated():
    t, X, Y = _data(0, d=4, M=20, L=3)
    for cfg, fragment in [
        (SLRSamplerConfig(chains=0), "chains"),
        (SLRSamplerConfig(draws=2), "draws"),
        (SLRSamplerConfig(init="erm"), "unknown init"),
        (SLRSamplerConfig(target_accept=1.0), "target_accept"),
        (SLRSamplerConfig(lambda_median=-1.0), "lambda prior"),
        (SLRSamplerConfig(lambda_from="mle"), "unknown lambda_from 'mle'"),
    ]:
        with pytest.raises(InputError, match=fragment):
            sample_posterior(jax.random.PRNGKey(0), X, Y, cfg, progress=False)
    with pytest.raises(InputError, match="Y must have shape"):
        sample_posterior(jax.random.PRNGKey(0), X, Y[:-1], progress=False)
    with pytest.raises(InputError, match="the truth has d"):
        sample_posterior(
            jax.random.PRNGKey(0), X, Y, truth=make_truth(jax.random.PRNGKey(0), 5), progress=False
        )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_posterior_concentrates_from_the_pgd_start_more_seeds(seed):
    t, X, Y = _data(seed)
    _, post, chains = sample_posterior(jax.random.PRNGKey(seed), X, Y, SHORT, progress=False)
    kb, vb = post.mean_directions()
    assert abs(kb @ t.k) > CONCENTRATION and abs(vb @ t.v) > CONCENTRATION


@pytest.mark.slow
def test_prior_starts_end_in_the_truth_or_the_swapped_mode_and_mixed_runs_are_flagged():
    """From the prior, each chain settles at +-(k*, v*) or at the swapped +-(v*, k*).

    (With one token, L = 1, no mode is unique: once lambda is large any k with
    <x_m, k> > 0 for all m gives T = <x, v>, so k is not identified; not tested.)
    """
    t, X, Y = _data(3)
    cfg = SLRSamplerConfig(chains=4, warmup=300, draws=150, init="prior", dense_mass=False)
    idata, post, _ = sample_posterior(jax.random.PRNGKey(3), X, Y, cfg, truth=t, progress=False)
    kinds = []
    for c in range(4):
        kb, vb = _chain_directions(post, [c])
        truth = abs(kb @ t.k) > CONCENTRATION and abs(vb @ t.v) > CONCENTRATION
        swap = abs(kb @ t.v) > CONCENTRATION and abs(vb @ t.k) > CONCENTRATION
        assert truth or swap, c
        kinds.append(truth)
    assert json.loads(idata.attrs["modes"])["separated"] == (len(set(kinds)) > 1)


@pytest.mark.slow  # two short NUTS runs (~20 s); in `make test-all`
@pytest.mark.parametrize("attention", ["linear", "softmax"])
def test_chains_at_an_image_of_the_fit_are_aligned_or_flagged_by_the_attention(attention):
    """Chain 0 at the PGD fit; chain 1 at its exchanged image (v, k) for linear attention,
    where it is the same predictor (aligned, not flagged), or at its mirror image (-k, -v)
    for softmax attention, where it is a different one: never aligned, and flagged while
    it stays there (it is no mode of the softmax likelihood, and may walk back to +k)."""
    t, X, Y = _data(0, d=8, M=300, L=5)
    pgd = fit_pgd(jax.random.PRNGKey(0), X, Y, PGDConfig(attention=attention))
    y_scale = float(np.sqrt(np.mean(Y**2)))
    init = initial_values(jax.random.PRNGKey(1), pgd, 2, 0.1, y_scale)
    image = (pgd.v, pgd.k) if attention == "linear" else (-pgd.k, -pgd.v)
    other = initial_values(jax.random.PRNGKey(2), dataclasses.replace(pgd, k=image[0], v=image[1]),
                           1, 0.1, y_scale)  # fmt: skip
    for name in ("z_k", "z_v"):
        init[name] = init[name].at[1].set(other[name][0])
    cfg = SLRSamplerConfig(chains=2, warmup=100, draws=100, dense_mass=False, attention=attention)
    idata, post, chains = sample_posterior(
        jax.random.PRNGKey(3), X, Y, cfg, pgd=pgd, truth=t, init_params=init, progress=False
    )
    assert post.attention == idata.attrs["attention"] == attention
    modes = json.loads(idata.attrs["modes"])
    kb = [_chain_directions(post, [c])[0] for c in (0, 1)]
    if attention == "linear":
        np.testing.assert_array_equal(post.swap.all(axis=1), [False, True])
        assert kb[0] @ kb[1] > 0.99 and not modes["separated"]
        assert np.all(idata.posterior["swap"].values[1] == 1)
    else:
        assert post.swap is None and np.all(post.sign == 1)
        np.testing.assert_array_equal(post.k, chains.samples["k"])  # nothing aligned
        assert modes["separated"] == (kb[0] @ kb[1] < 0.9)
    # the posterior-mean predictor uses the attention, also when rebuilt from the file
    rebuilt = SLRPosterior.from_idata(idata)
    assert rebuilt.attention == attention
    X_eval = idata.constant_data["X_eval"].values
    np.testing.assert_allclose(rebuilt.draws(X_eval), idata.posterior["pred"].values, rtol=1e-10)


def test_the_sampler_refuses_a_pgd_fit_of_another_attention():
    t, X, Y = _data(0, d=4, M=20, L=3)
    pgd = fit_pgd(jax.random.PRNGKey(0), X, Y, PGDConfig(steps=10))
    cfg = SLRSamplerConfig(attention="softmax", draws=4, warmup=0)
    with pytest.raises(InputError, match="the PGD fit uses erf attention, the sampler softmax"):
        sample_posterior(jax.random.PRNGKey(0), X, Y, cfg, pgd=pgd, progress=False)


@pytest.mark.slow  # two short NUTS runs (~25 s); in `make test-all`
def test_lambda_fixed_at_the_pgd_fit_is_not_sampled_and_the_chains_concentrate():
    """``lambda_from = "pgd"``: lambda is the PGD fit's in every draw (a deterministic
    site, not a sampled one, and not among the diagnosed quantities), only ``k``, ``v``
    and ``sigma`` move, and the posterior still concentrates on the truth."""
    truth, X, Y = _data(3, d=8, M=400, L=5)
    pgd = fit_pgd(jax.random.PRNGKey(1), X, Y, PGDConfig(attention="softmax"))
    cfg = dataclasses.replace(SHORT, attention="softmax", lambda_from="pgd")
    idata, post, chains = sample_posterior(
        jax.random.PRNGKey(2), X, Y, cfg, pgd=pgd, truth=truth, progress=False
    )
    np.testing.assert_array_equal(post.lam, np.full(post.shape, pgd.lam))
    assert "lambda" not in json.loads(idata.attrs["identifiable"])
    assert json.loads(idata.attrs["config"])["lambda_from"] == "pgd"
    assert np.std(post.sigma) > 0 and np.std(post.k[..., 0]) > 0
    kb, vb = post.mean_directions()
    assert abs(kb @ truth.k) > CONCENTRATION and abs(vb @ truth.v) > CONCENTRATION
    # the model itself: no lambda site to sample, and lambda recorded as given
    from numpyro.handlers import seed, trace

    tr = trace(seed(single_location, 0)).get_trace(
        jnp.asarray(X), attention="softmax", lambda_fixed=2.5
    )
    assert tr["lambda"]["type"] == "deterministic" and float(tr["lambda"]["value"]) == 2.5
