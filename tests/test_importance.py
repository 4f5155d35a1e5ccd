"""Laplace-proposal importance sampling (``method="is"``): resampling, PSIS, stopping, fallback."""

import dataclasses

import arviz as az
import jax
import numpy as np
import pytest

from bayes_ips import inference
from bayes_ips.diagnostics import psis_weights
from bayes_ips.inference import IS_ROUND, SamplerConfig, fit_posterior, systematic_resample
from bayes_ips.simulate import make_truth, simulate


def _data(seed, M=70, N=4, d=2):
    truth = make_truth(jax.random.PRNGKey(seed), d, 1, phi="tanh", tokens="cube", noise_sd=0.1)
    X, Y = simulate(jax.random.PRNGKey(seed + 100), truth, M, N)
    return truth, np.asarray(X), np.asarray(Y)


@pytest.mark.parametrize("n", [1, 7, 250])
def test_systematic_resampling_keeps_every_count_within_one_of_its_expectation(n):
    rng = np.random.default_rng(n)
    w = rng.gamma(0.3, size=40)
    w /= w.sum()
    for seed in range(20):
        idx = systematic_resample(jax.random.PRNGKey(seed), w, n)
        assert idx.shape == (n,) and np.all(np.diff(idx) >= 0)  # copies adjacent
        counts = np.bincount(idx, minlength=40)
        assert np.all(counts >= np.floor(n * w)) and np.all(counts <= np.ceil(n * w))


def test_psis_weights_are_arviz_smoothed_weights_normalised():
    rng = np.random.default_rng(0)
    lw = rng.standard_t(3, size=500)
    lw[[3, 17]] = -np.inf  # proposals of zero density keep zero weight
    lw_s, khat, ess = psis_weights(lw)
    finite = np.isfinite(lw)
    ref, k_ref = az.psislw(np.where(finite, lw, lw[finite].min() - 1e3) - lw[finite].max(), 1.0)
    ref = ref - np.logaddexp.reduce(ref[finite])
    np.testing.assert_allclose(lw_s[finite], ref[finite], rtol=1e-12, atol=1e-12)
    assert np.all(np.isneginf(lw_s[~finite])) and khat == pytest.approx(float(k_ref))
    w = np.exp(lw_s)
    assert np.sum(w) == pytest.approx(1.0) and ess == pytest.approx(1 / np.sum(w**2))


@pytest.fixture(scope="module")
def small():
    return _data(21)


def test_importance_sampling_stops_at_its_target_and_resamples_each_chain_from_its_group(small):
    truth, X, Y = small
    cfg = SamplerConfig(method="is", chains=3, draws=50, ess_target=150, n_intervals=4)
    run, post = fit_posterior(jax.random.PRNGKey(0), X, Y, cfg, progress=False)
    info = run.info
    n = info["n_proposals"]
    assert run.method == "is" and post.shape == (3, 50) and n % IS_ROUND == 0
    assert info["is_ess"] >= 150 and info["khat"] <= 0.7
    # it stopped at the first round that reached the target
    lw = info["log_weights"]
    assert lw.shape == (n,)
    if n > IS_ROUND:
        assert psis_weights(lw[: n - IS_ROUND])[2] < 150
    idx = info["draw_index"]
    assert idx.shape == (3, 50)
    assert np.all(idx % 3 == np.arange(3)[:, None])  # chain c resamples proposals c, c+3, ...
    # the draws are the proposals they came from, with their log weights
    np.testing.assert_array_equal(run.extra["log_weight"], lw[idx])
    # the same key gives the same run
    run2, _ = fit_posterior(jax.random.PRNGKey(0), X, Y, cfg, progress=False)
    np.testing.assert_array_equal(run2.info["draw_index"], idx)
    np.testing.assert_array_equal(run2.samples["A"], run.samples["A"])


# The importance sampler and the independence sampler target the same posterior.
# Their posterior means must agree within Monte Carlo error: the importance
# sampler's s.e. is sd / sqrt(PSIS ESS) (its chains are resampled, so ArviZ's
# mcse does not apply), the independence sampler's is ArviZ's.  Z_MC = 4.5 keeps
# the family-wise false-alarm rate below ~1e-3 over the ~20 quantities compared.
Z_MC = 4.5


# slow: two full posterior runs, each compiled (~25 s); the fast tier checks the
# proposals' exact log densities (test_inference), PSIS and the resampling above.
@pytest.mark.slow
def test_importance_sampling_and_independence_metropolis_agree(small):
    from bayes_ips.arviz_io import summary

    truth, X, Y = small
    cfg = SamplerConfig(chains=4, n_intervals=4)
    out = {}
    for method in ("is", "imh"):
        idata, _, run = inference.sample_posterior(
            jax.random.PRNGKey(5), X, Y, dataclasses.replace(cfg, method=method), n_eval=16
        )
        out[method] = (summary(idata, ["sigma", "g_eval"]), run.info["is_ess"])
    (a, ess_is), (b, _) = out["is"], out["imh"]
    se = np.sqrt(a["sd"] ** 2 / ess_is + b["mcse_mean"] ** 2)
    assert np.all(np.abs(a["mean"] - b["mean"]) <= Z_MC * se)


class _Called(Exception):
    pass


def test_auto_falls_back_to_nuts_when_the_target_size_is_out_of_reach(small, monkeypatch, capsys):
    """One round of proposals cannot reach an effective size of 400: ``auto`` runs NUTS
    from the Laplace mode (here a stand-in that records how it was called)."""
    truth, X, Y = small

    def fake_nuts(key, X, Y, config, **kw):
        raise _Called(kw)

    monkeypatch.setattr(inference, "run_nuts", fake_nuts)
    cfg = SamplerConfig(max_proposals=IS_ROUND, n_intervals=4)
    with pytest.raises(_Called) as e:
        fit_posterior(jax.random.PRNGKey(0), X, Y, cfg)
    start = e.value.args[0]["start"]
    assert set(start[0]) == {"U", "V", "sigma", "tau"} and start[1].shape == (6, 6)
    assert "effective size" in capsys.readouterr().out
    # method="is" returns its short run instead (diagnose flags it)
    run, _ = fit_posterior(
        jax.random.PRNGKey(0), X, Y, dataclasses.replace(cfg, method="is"), progress=False
    )
    assert run.method == "is" and run.info["is_ess"] < 400 == run.info["ess_target"]


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"method": "is", "collapsed": False}, "needs the collapsed model"),
        ({"ess_target": 3}, "ess_target"),
        ({"max_proposals": 10}, "max_proposals"),
    ],
)
def test_bad_importance_settings_are_one_line_errors(kw, fragment):
    from bayes_ips.errors import InputError

    with pytest.raises(InputError, match=fragment):
        SamplerConfig(**kw).validate(2)
