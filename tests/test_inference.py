"""Posterior inference: prior predictive, collapsed vs explicit, recovery, ArviZ output."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayes_ips.models.lowrank_spline import lowrank_spline
from numpyro.infer import Predictive

from bayes_ips.arviz_io import (
    load_inference_data,
    posterior_from_idata,
    save_inference_data,
    summary,
)
from bayes_ips.diagnostics import IS_ESS_MIN, diagnose, khat_limit
from bayes_ips.erm import ERMConfig, fit_erm
from bayes_ips.inference import SamplerConfig, model_knots, model_penalty, sample_posterior
from bayes_ips.metrics import l2_error
from bayes_ips.posterior import g_draws, mode_check, predict
from bayes_ips.simulate import make_truth, simulate

warnings.filterwarnings("ignore", category=FutureWarning)


def _data(seed, M=200, N=5, d=2):
    truth = make_truth(jax.random.PRNGKey(seed), d, 1, phi="tanh", tokens="cube", noise_sd=0.1)
    X, Y = simulate(jax.random.PRNGKey(seed + 100), truth, M, N)
    return truth, np.asarray(X), np.asarray(Y)


@pytest.mark.slow  # ~11 s of compilation; the model's shapes are also exercised by every fit
def test_prior_predictive_has_the_right_shapes():
    truth, X, Y = _data(0, M=70, N=4)  # the shapes of the tests below: ERM compiled once
    erm = fit_erm(jax.random.PRNGKey(0), X, Y, ERMConfig(n_intervals=5, restarts=1))
    knots = model_knots(X, erm, 5, 3)
    pred = Predictive(lowrank_spline, num_samples=7)(
        jax.random.PRNGKey(1),
        jnp.asarray(X),
        None,
        rank=1,
        knots=knots,
        penalty=model_penalty(X, erm, knots),
        y_scale=0.3,
    )
    M, N, d = X.shape
    assert pred["Y"].shape == (7, M, N)
    assert pred["U"].shape == (7, d, 1) and pred["c"].shape == (7, 5 + 3)
    assert pred["A"].shape == (7, d, d)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(pred["A"]), axis=(1, 2)), 1.0)
    assert np.all(np.isfinite(np.asarray(pred["Y"])))


# Collapsed and explicit forms are the same model: sigma and g_eval must agree within
# Monte Carlo error.  The gap of two posterior means is compared with
# Z_MC * sqrt(mcse_1^2 + mcse_2^2); Z_MC = 4.5 keeps the family-wise false-alarm rate
# below ~1e-3 over the ~20 quantities compared per seed.
Z_MC = 4.5


# slow: two NUTS programs per seed (~1 min); the collapsed algebra is exact in test_collapsed
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_collapsed_and_explicit_posteriors_agree(seed):
    truth, X, Y = _data(seed)
    erm = fit_erm(jax.random.PRNGKey(seed), X, Y, ERMConfig(n_intervals=5, restarts=1))
    out = {}
    for collapsed in (True, False):
        cfg = SamplerConfig(
            method="nuts", collapsed=collapsed, chains=2, warmup=300, draws=400, n_intervals=5
        )
        idata, _, run = sample_posterior(
            jax.random.PRNGKey(seed + 7), X, Y, cfg, erm=erm, n_eval=16, progress=False
        )
        assert int(run.extra["diverging"].sum()) == 0
        out[collapsed] = summary(idata, ["sigma", "g_eval"])
    a, b = out[True], out[False]
    gap = np.abs(a["mean"] - b["mean"])
    allowed = Z_MC * np.sqrt(a["mcse_mean"] ** 2 + b["mcse_mean"] ** 2)
    assert np.all(gap <= allowed), (gap / allowed).sort_values().tail()


# The shapes of test_cli_bayes and test_importance (M = 70, N = 4, d = 2, K = 4), whose
# programs the same pytest-xdist worker has compiled (conftest.SHARED_PROGRAMS): 43 s of
# compilation at M = 300, d = 3 and its own K became 5 s.  At these shapes the posterior
# mean's error is 0.46x ERM's (0.0008 vs 0.0018), its relative error 0.25%.
@pytest.fixture(scope="module")
def fitted():
    truth, X, Y = _data(3, M=70, N=4, d=2)
    erm = fit_erm(jax.random.PRNGKey(3), X, Y, ERMConfig())
    cfg = SamplerConfig(warmup=300, draws=300, n_intervals=4)
    idata, post, run = sample_posterior(
        jax.random.PRNGKey(4), X, Y, cfg, erm=erm, seed=4, n_eval=50, progress=False
    )
    return truth, X, Y, erm, idata, post


def test_posterior_mean_recovers_g_as_well_as_erm(fitted):
    """The issue's criterion: error of g_PM at most 1.5 x the ERM error, same data."""
    truth, X, Y, erm, idata, post = fitted
    key = jax.random.PRNGKey(5)
    e_erm = l2_error(key, erm.predict, truth)
    e_pm = l2_error(key, lambda x, y: g_draws(post, x, y).mean(axis=(0, 1)), truth)
    assert e_pm.error <= 1.5 * e_erm.error
    assert e_pm.relative < 0.01


def test_bands_and_predict(fitted):
    truth, X, Y, erm, idata, post = fitted
    x = X[:20, 0]
    y = X[:20, 1]
    res = predict(post, x, y)
    assert res["g"].shape == (20,)
    assert np.all(res["g_lo"] <= res["g_hi"])
    # the Rao-Blackwellised mean lies inside the band of full draws
    assert np.all((res["g"] >= res["g_lo"] - 1e-9) & (res["g"] <= res["g_hi"] + 1e-9))


def test_inference_data_round_trip_summary_and_loo(fitted, tmp_path):
    import arviz as az

    *_, idata, post = fitted
    path = tmp_path / "post.nc"
    save_inference_data(path, idata)
    back = load_inference_data(path)
    for group in (
        "posterior",
        "sample_stats",
        "observed_data",
        "posterior_predictive",
        "log_likelihood",
        "constant_data",
    ):
        assert group in back.groups()
    C, D = post.shape
    M, N = idata.observed_data["Y"].shape
    assert back.posterior["g_eval"].dims == ("chain", "draw", "eval_pair")
    assert back.posterior["A"].dims == ("chain", "draw", "dim", "dim_col")
    assert back.log_likelihood["Y"].dims == ("chain", "draw", "sample")
    assert back.posterior_predictive["Y"].dims[-2:] == ("sample", "token")
    np.testing.assert_allclose(back.posterior["g_eval"].values, idata.posterior["g_eval"].values)
    table = summary(back)
    assert "r_hat" in table and not any(str(i).startswith(("U", "V", "c_")) for i in table.index)
    loo = az.loo(back)
    assert np.isfinite(loo.elpd_loo)
    rebuilt = posterior_from_idata(back)
    x, y = np.asarray(idata.constant_data["x_eval"]), np.asarray(idata.constant_data["y_eval"])
    np.testing.assert_allclose(g_draws(rebuilt, x, y), idata.posterior["g_eval"].values, rtol=1e-12)
    _, report = diagnose(back)
    # the default (auto) ran importance sampling on this well-posed problem
    assert report["sampler"] == "is" and report["khat"] <= khat_limit(report["n_proposals"])
    assert report["is_ess"] >= IS_ESS_MIN
    assert report["problems"] == [] and not report["modes"]["separated"]


def test_diagnose_checks_an_importance_sample_by_its_size_and_pareto_k(fitted):
    """The effective size must reach IS_ESS_MIN, and the Pareto k the limit for the
    number of proposals (0.5 for 100, 0.63 for 500; 0.7 from ~2200 on)."""
    import copy
    import json

    *_, idata, _ = fitted
    base = json.loads(idata.attrs["sampler_info"])
    for khat, ess, n, flagged in (
        (0.45, 120.0, 150, []),
        (0.55, 120.0, 100, ["Pareto k of the proposals 0.55 > 0.50 (the limit for 100)"]),
        (0.55, 120.0, 500, []),
        (0.2, 90.0, 100, ["importance-sampling effective size 90 < 100 (100 proposals)"]),
    ):
        bad = copy.copy(idata)
        bad.attrs = dict(idata.attrs)
        bad.attrs["sampler_info"] = json.dumps(
            {**base, "khat": khat, "is_ess": ess, "n_proposals": n}
        )
        _, report = diagnose(bad)
        assert [p for p in report["problems"] if "Pareto" in p or "effective" in p] == flagged


def test_a_posterior_file_without_a_tail_loads_with_the_boundary_polynomial(fitted):
    """New posteriors are saved with their knots' tail ("flat"); a file from before
    the tail has none and loads as "poly", the extrapolation it was sampled with."""
    *_, idata, post = fitted
    assert post.knots.tail == "flat" and idata.attrs["tail"] == "flat"
    assert posterior_from_idata(idata).knots.tail == "flat"
    attrs = dict(idata.attrs)
    try:
        del idata.attrs["tail"]
        assert posterior_from_idata(idata).knots.tail == "poly"
    finally:
        idata.attrs.clear()
        idata.attrs.update(attrs)


def test_mode_check_flags_separated_chains_and_not_equivalent_ones():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(3, 200, 10)) * 0.01 + np.linspace(-1, 1, 10)
    assert not mode_check(same)["separated"]
    apart = same.copy()
    apart[2] += 0.2  # chain 2 predicts a different g: a non-equivalent mode
    res = mode_check(apart)
    assert res["separated"] and res["groups"] == [[0, 1], [2]]


# d = 1 (statistics shared per sign of A) is slow: an ERM fit and the proposal programs on
# other shapes (~8 s); d = 2 (per point) runs in the fast tier.
@pytest.mark.parametrize("d", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_proposal_evaluation_equals_the_model_potential_and_the_conditional_of_c(d):
    """One Gram pass per point gives the model's own potential energy and E[c | rest].

    At d = 1 the statistics are shared per sign of A; at d = 2 computed per point.
    Both are checked against NumPyro's potential energy of the model (which
    computes its own Gram statistics) and the conditional of c, point by point.
    """
    from bayes_ips.models.lowrank_spline import KAPPA, gauge_factors
    from numpyro.infer.util import potential_energy

    from bayes_ips.collapsed import conditional_c, pspline_precision
    from bayes_ips.inference import _setup, bound_model
    from bayes_ips.laplace import flatten
    from bayes_ips.pairwise import gram
    from bayes_ips.posterior import evaluate_proposals

    # M = 70: at d = 2 the shapes of the next test, whose ERM programs this compiles
    truth, X, Y = _data(5, M=70, N=4, d=d)
    st = _setup(jax.random.PRNGKey(0), X, Y, SamplerConfig(n_intervals=4), None)
    rng = np.random.default_rng(d)
    points = [
        {
            "U": jnp.asarray(rng.normal(size=(d, 1))),
            "V": jnp.asarray(rng.normal(size=(d, 1))),
            "sigma": jnp.asarray(rng.normal() - 2),
            "tau": jnp.asarray(rng.normal() - 1),
        }
        for _ in range(5)
    ]
    flat = jnp.stack([flatten(p, ("U", "V", "sigma", "tau"))[0] for p in points])
    layout = flatten(points[0], ("U", "V", "sigma", "tau"))[1]
    keys = jax.random.split(jax.random.PRNGKey(1), 5)
    A, pe, cm, *_ = evaluate_proposals(
        flat, keys, st.X, st.Y, st.data_kwargs, model=st.model, layout=layout, batch=2
    )
    model = bound_model(1, True)
    for i, p in enumerate(points):
        ref = potential_energy(model, (st.X, st.Y), st.data_kwargs, p)
        np.testing.assert_allclose(pe[i], ref, rtol=1e-10)
        un, vn = gauge_factors(p["U"], p["V"])
        np.testing.assert_allclose(A[i], un @ vn.T, rtol=1e-12)
        Q = pspline_precision(st.penalty, jnp.exp(p["tau"]), KAPPA * st.y_scale)
        cond = conditional_c(gram(un, vn, st.X, st.Y, st.knots), jnp.exp(p["sigma"]), Q)
        np.testing.assert_allclose(cm[i], cond.mean, rtol=1e-8, atol=1e-12)


def _dispatch(monkeypatch, config, first):
    """``_fit_posterior`` with ``run_is``/``run_imh``/``run_nuts`` replaced by recorders:
    which sampler ran, and where NUTS was started.  ``first`` is the run the Laplace
    sampler returns (or the exception it raises)."""
    from bayes_ips import inference, posterior

    calls = []

    def fake(name):
        def run(*args, **kw):
            calls.append((name, None))
            if isinstance(first, Exception):
                raise first
            return first

        return run

    def fake_nuts(*args, start=None, **kw):
        calls.append(("nuts", start))
        return inference.PosteriorRun(
            {}, {}, None, None, 1.0, config, "nuts-erm", 0, 2.0, info={"nuts": True}
        )

    monkeypatch.setattr(inference, "run_is", fake("is"))
    monkeypatch.setattr(inference, "run_imh", fake("imh"))
    monkeypatch.setattr(inference, "run_nuts", fake_nuts)
    monkeypatch.setattr(posterior, "posterior_from_run", lambda key, run, X, Y: "rb-posterior")
    run, post = inference._fit_posterior(
        None, None, None, None, config, erm="erm", seed=0, progress=True
    )
    return calls, run, post


def _laplace_run(khat, config, method="is", n_proposals=2500):
    from bayes_ips import inference

    info = {"khat": khat, "mode": "the-mode", "inverse_mass": "the-mass"}
    if method == "is":
        info.update(is_ess=450.0, ess_target=400, n_proposals=n_proposals)
    else:
        info.update(accept_rate=0.05)
    return inference.PosteriorRun(
        {}, {}, None, None, 1.0, config, "first-erm", 0, 3.0, info, method, "first-posterior"
    )


def test_auto_dispatch_falls_back_to_nuts_from_the_laplace_mode(monkeypatch, capsys):
    """The decision of ``auto`` (the end-to-end run on a rank-2 ring is in the slow tier):
    a Pareto k above ``khat_max`` runs NUTS started at the Laplace mode and mass, says
    so, and keeps the first sampler's diagnostics; below it, or with ``is`` or ``imh``,
    the first run is returned; a failed Laplace step falls back from the ERM.  (An
    effective size short of its target: ``test_importance.py``.)"""
    cfg = SamplerConfig(chains=2)
    calls, run, post = _dispatch(monkeypatch, cfg, _laplace_run(1.4, cfg))
    assert calls == [("is", None), ("nuts", ("the-mode", "the-mass"))]
    assert "Pareto k 1.40 > 0.7" in run.info["fallback"] and run.info["nuts"]
    assert run.info["first"] == {
        "khat": 1.4,
        "is_ess": 450.0,
        "ess_target": 400,
        "n_proposals": 2500,
    }
    assert run.wall_time_s == 5.0 and post == "rb-posterior"
    assert "running NUTS" in capsys.readouterr().out
    for method, khat in (("auto", 0.7), ("is", 1.4), ("imh", 1.4)):
        config = dataclasses.replace(cfg, method=method)
        first = _laplace_run(khat, config, "imh" if method == "imh" else "is")
        calls, run, post = _dispatch(monkeypatch, config, first)
        assert calls == [(config.sampler(), None)] and post == "first-posterior"
        assert "fallback" not in run.info
    # below khat_max but above the limit for its number of proposals (0.63 for 500:
    # k = 0.65 needs ~720 draws to be reliable, Vehtari et al. 2024)
    calls, run, _ = _dispatch(monkeypatch, cfg, _laplace_run(0.65, cfg, n_proposals=500))
    assert calls == [("is", None), ("nuts", ("the-mode", "the-mass"))]
    assert run.info["fallback"] == "Pareto k 0.65 > 0.63, the limit for 500 proposals"
    calls, run, _ = _dispatch(monkeypatch, cfg, _laplace_run(0.65, cfg, n_proposals=800))
    assert calls == [("is", None)] and "fallback" not in run.info
    calls, run, _ = _dispatch(monkeypatch, cfg, FloatingPointError("singular Hessian"))
    assert calls == [("is", None), ("nuts", None)]
    assert run.info["fallback"] == "singular Hessian" and run.info["first"] == {}
    with pytest.raises(FloatingPointError):
        _dispatch(monkeypatch, dataclasses.replace(cfg, method="is"), FloatingPointError("x"))


# slow: a rank-2 importance-sampling run, its NUTS fallback and an IMH run, each compiled
# (~35 s);
# the fast tier checks the decision itself (test_auto_dispatch_falls_back_...).
@pytest.mark.slow
def test_auto_falls_back_to_nuts_when_the_proposal_does_not_fit_and_says_so(capsys, monkeypatch):
    """Rank 2 with the proposal in flat (U, V), as it was before the rotation slice:
    the factors' rotations leave a ring of equal density, which no Gaussian fits.

    The Pareto k of the Laplace proposal is far above 0.7 (14 here), so ``auto``
    runs NUTS from the Laplace mode and records why; ``imh`` returns its flagged run.
    (On the slice, the default, this data's k is 0.34 and importance sampling stands:
    test_importance.py::test_rank_two_posterior_takes_the_importance_sampler.)
    """
    import bayes_ips.laplace

    monkeypatch.setattr(bayes_ips.laplace, "rotation_slice", lambda approx, layout: (approx, None))
    truth = make_truth(jax.random.PRNGKey(0), 3, 2, phi="tanh", tokens="cube", noise_sd=0.1)
    X, Y = (np.asarray(a) for a in simulate(jax.random.PRNGKey(1), truth, 80, 4))
    cfg = SamplerConfig(rank=2, chains=2, warmup=40, draws=30, n_intervals=4)
    idata, post, run = sample_posterior(jax.random.PRNGKey(0), X, Y, cfg, n_eval=8)
    assert run.method == "nuts" and "Pareto k" in run.info["fallback"]
    assert "running NUTS" in capsys.readouterr().out
    assert idata.attrs["sampler"] == "nuts" and idata.attrs["method"] == "auto"
    import json

    info = json.loads(idata.attrs["sampler_info"])
    assert "Pareto k" in info["fallback"] and info["first"]["khat"] > 0.7
    assert post.shape == (2, 30) and np.isfinite(post.c_mean).all()
    _, report = diagnose(idata)
    assert report["sampler"] == "nuts"
    # method="imh" never falls back: it returns the run, and diagnose flags it
    idata, _, run = sample_posterior(
        jax.random.PRNGKey(0), X, Y, dataclasses.replace(cfg, method="imh"), progress=False
    )
    assert run.method == "imh" and run.info["khat"] > 0.7
    _, report = diagnose(idata)
    assert any("Pareto k" in p for p in report["problems"])


@pytest.mark.slow  # ~17 s: two whole posterior runs (a property of cost, not of numbers)
def test_a_second_dataset_of_the_same_shapes_compiles_nothing_new():
    """The mode search, the Hessian and the proposal evaluation are compiled once per shapes."""
    from bayes_ips.laplace import _bfgs, _hessian
    from bayes_ips.posterior import evaluate_proposals

    cfg = SamplerConfig(chains=2, warmup=10, draws=20, n_intervals=4)
    sizes = []
    for seed in (11, 12):
        truth, X, Y = _data(seed, M=70, N=4, d=2)
        sample_posterior(jax.random.PRNGKey(seed), X, Y, cfg, n_eval=8, progress=False)
        sizes.append(
            (_bfgs._cache_size(), _hessian._cache_size(), evaluate_proposals._cache_size())
        )
    assert sizes[0] == sizes[1]


@pytest.mark.slow  # both samplers on their own data (~1.5 min)
def test_importance_sampling_and_nuts_give_the_same_posterior():
    """g_eval and sigma: posterior means within Z_MC Monte Carlo s.e., sds within 15%.

    15%: the relative s.e. of a posterior sd estimated from ESS ~ 400 is ~3.5%;
    the bound is ~4 s.e. of the ratio of two such estimates.  Importance sampling
    therefore runs to an effective size of 400 here (the default's 100 gives a
    relative s.e. of ~7%, and the largest of 51 ratios then passes 15% by chance:
    0.151 seen).  (M = 300, N = 6, d = 3: the fast tier's ``fitted`` runs on
    smaller shared shapes.)
    """
    truth, X, Y = _data(3, M=300, N=6, d=3)
    erm = fit_erm(jax.random.PRNGKey(3), X, Y, ERMConfig())
    cfg_is = SamplerConfig(warmup=300, draws=300, ess_target=400)
    idata, _, _ = sample_posterior(
        jax.random.PRNGKey(4), X, Y, cfg_is, erm=erm,
        seed=4, n_eval=50, progress=False,
    )  # fmt: skip
    cfg = SamplerConfig(method="nuts", warmup=300, draws=300)
    idata_n, _, _ = sample_posterior(
        jax.random.PRNGKey(4), X, Y, cfg, erm=erm, n_eval=50, progress=False
    )
    a, b = summary(idata, ["sigma", "g_eval"]), summary(idata_n, ["sigma", "g_eval"])
    gap = np.abs(a["mean"] - b["mean"])
    assert np.all(gap <= Z_MC * np.sqrt(a["mcse_mean"] ** 2 + b["mcse_mean"] ** 2))
    assert np.all(np.abs(a["sd"] / b["sd"] - 1) < 0.15)


@pytest.mark.slow  # ~30 s: 40 mode searches and their compilation
def test_refit_order_cv_predicts_each_fold_at_its_own_laplace_mode():
    """``refit_order_cv`` against a naive loop: for each prior and fold, the Laplace
    step's mode (``laplace_at``, from ERM's factors) on the other folds, then the
    posterior mean of ``c`` there from an explicit design matrix predicts the fold.
    The same modes (``refit_order_cv`` whitens every fold's search by all the data's
    Hessian at the start, ``laplace_at`` by the fold's own; BFGS stops within 1e-6 of
    the same point either way) and the same algebra in another order: rtol 1e-6."""
    import math

    from bayes_ips.models.lowrank_spline import KAPPA

    from bayes_ips.collapsed import difference_penalty, pspline_precision
    from bayes_ips.gauge import gauge_factors
    from bayes_ips.inference import _erm_init, bound_model, laplace_at, refit_order_cv
    from bayes_ips.kselect import ORDER_CV_FOLDS, SELECTION_TAU_LAW
    from bayes_ips.pairs import off_diagonal_scores
    from bayes_ips.pairwise import design
    from bayes_ips.spline import make_knots, quantile_breaks

    truth = make_truth(jax.random.PRNGKey(7), 2, 1, phi="weierstrass", beta=0.5, noise_sd=0.1)
    X, Y = (np.asarray(a) for a in simulate(jax.random.PRNGKey(8), truth, 205, 5))
    fit = fit_erm(jax.random.PRNGKey(9), X, Y, ERMConfig(rank=1))
    S = np.asarray(off_diagonal_scores(X, fit.U, fit.V, 4000))
    scale, ys = float(S.std()), float(np.sqrt(np.mean(Y**2)))
    knots = make_knots(quantile_breaks(S, 12), 3, 1)
    cands = [(knots, {"order": 2}), (knots, {"order": 1})]
    cv = refit_order_cv(X, Y, fit, cands, scale, ys)
    assert cv["refit"] == "erm" and cv["folds"] == ORDER_CV_FOLDS
    # the basis is chosen under the selection's prior of tau, not the posterior's
    model = bound_model(1, True, tau_law=SELECTION_TAU_LAW)
    start = {k: v[0] for k, v in _erm_init(jax.random.PRNGKey(0), fit, ys, 1, 0.0).items()}
    size = X.shape[0] // ORDER_CV_FOLDS  # 20: the last 5 sequences are in no fold
    sse = np.zeros((2, ORDER_CV_FOLDS))
    for j, (kn, row) in enumerate(cands):
        D = difference_penalty(kn, scale, row["order"])
        data = dict(knots=kn, penalty=jnp.asarray(D), y_scale=jnp.asarray(ys))
        for f in range(ORDER_CV_FOLDS):
            test = np.arange(f * size, (f + 1) * size)
            train = np.setdiff1d(np.arange(X.shape[0]), test)
            _, _, _, info = laplace_at(
                model, (jnp.asarray(X[train]), jnp.asarray(Y[train])), data, start
            )
            m = info["mode"]
            Un, Vn = gauge_factors(jnp.asarray(m["U"]), jnp.asarray(m["V"]))
            Q = np.asarray(pspline_precision(D, float(np.exp(m["tau"])), KAPPA * ys))
            F_tr = np.asarray(design(Un, Vn, X[train], kn)).reshape(-1, Q.shape[0])
            c = np.linalg.solve(
                F_tr.T @ F_tr + np.exp(2 * m["sigma"]) * Q, F_tr.T @ Y[train].ravel()
            )
            F_te = np.asarray(design(Un, Vn, X[test], kn)).reshape(-1, Q.shape[0])
            sse[j, f] = np.sum((Y[test].ravel() - F_te @ c) ** 2)
    n = size * Y.shape[1]
    np.testing.assert_allclose(cv["cv_mse"], sse.sum(axis=1) / (n * ORDER_CV_FOLDS), rtol=1e-6)
    diff = (sse[1] - sse[0]) / n
    assert cv["mse_diff"] == pytest.approx(diff.mean(), rel=1e-5, abs=1e-12)
    assert cv["se"] == pytest.approx(diff.std(ddof=1) / math.sqrt(ORDER_CV_FOLDS), rel=1e-5)
    # from the full data's mode: the same folds, another start
    assert refit_order_cv(X, Y, fit, cands, scale, ys, start_at="mode")["refit"] == "mode"
    with pytest.raises(ValueError, match="start_at"):
        refit_order_cv(X, Y, fit, cands, scale, ys, start_at="nowhere")
