"""`bayes-ips slr`: the round trip (simulate, fit, sample, predict, evaluate) and bad input."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from bayes_ips.cli import main
from bayes_ips.single_location.io import load_dataset, load_pgd_fit

# The single-location CLI end to end (~27 s, mostly a fit and a posterior in subprocesses):
# slow tier (fast-tier budget; the library paths are tested fast in test_slr_*.py).
pytestmark = pytest.mark.slow

warnings.filterwarnings("ignore", category=FutureWarning)

M, D = 200, 10


def run(capsys, argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One simulated dataset, its PGD fit and a tiny posterior, all through the CLI."""
    d = tmp_path_factory.mktemp("slr_cli")
    paths = SimpleNamespace(dir=d, data=d / "data.npz", fit=d / "fit.nc", post=d / "post.nc")
    sim = ["slr", "simulate", "--M", M, "--d", D, "--L", 5, "--seed", 1, "--out", paths.data]
    assert main([str(a) for a in sim]) == 0
    assert main(["slr", "fit", str(paths.data), "--seed", "2", "--out", str(paths.fit)]) == 0
    sample = ["slr", "sample", paths.data, "--warmup", 40, "--draws", 40, "--diagonal-mass"]
    assert main([str(a) for a in [*sample, "--seed", 3, "--out", paths.post]]) == 0
    X = np.random.default_rng(0).normal(size=(7, 5, D))
    np.savez(d / "inputs.npz", X=X)
    paths.inputs = d / "inputs.npz"
    return paths


def test_simulate_writes_data_with_truth_seed_and_config(files):
    data = load_dataset(files.data, need_truth=True)
    assert data.X.shape == (M, 5, D) and data.Y.shape == (M,) and data.J0.shape == (M,)
    assert data.truth.d == D and data.truth.L == 5
    assert data.meta["seed"] == 1 and data.meta["config"]["M"] == M


def test_fit_and_predict(files, capsys, tmp_path):
    fit = load_pgd_fit(files.fit)
    assert fit.seed == 2 and fit.config.init == "moment" and len(fit.info["loss_trace"]) > 0
    y_path = tmp_path / "y.npz"
    rc, out, err = run(
        capsys, ["slr", "predict", files.fit, "--inputs", files.inputs, "--out", y_path]
    )
    assert rc == 0, err
    with np.load(y_path) as z, np.load(files.inputs) as x:
        np.testing.assert_allclose(z["y"], np.asarray(fit.predict(x["X"])), rtol=0, atol=1e-12)
        assert json.loads(str(z["meta"]))["fit_seed"] == 2


def test_sample_and_predict_posterior(files, capsys, tmp_path):
    from bayes_ips.arviz_io import load_inference_data

    idata = load_inference_data(files.post)
    assert idata.attrs["kind"] == "slr_posterior" and int(idata.attrs["seed"]) == 3
    assert json.loads(idata.attrs["config"])["draws"] == 40
    assert "abs_kappa" in idata.posterior  # the data file carries the truth
    y_path = tmp_path / "yp.npz"
    rc, out, err = run(
        capsys, ["slr", "predict", files.post, "--inputs", files.inputs, "--out", y_path]
    )
    assert rc == 0, err
    with np.load(y_path) as z:
        assert z["y"].shape == z["y_lo"].shape == z["y_hi"].shape == (7,)
        assert np.all(z["y_lo"] <= z["y_hi"])


@pytest.mark.parametrize("which", ["fit", "post"])
def test_evaluate(files, capsys, tmp_path, which):
    js = tmp_path / "e.json"
    rc, out, err = run(
        capsys,
        [
            "slr",
            "evaluate",
            getattr(files, which),
            "--truth",
            files.data,
            "--n",
            2000,
            "--json",
            js,
        ],
    )
    assert rc == 0, err
    assert "excess risk" in out and "kappa" in out
    res = json.loads(js.read_text())
    for key in ("kappa", "nu", "kappa_aligned", "risk", "bayes_risk", "excess", "excess_se"):
        assert np.isfinite(res[key]), key
    assert res["kappa_aligned"] > 0.9 and res["nu_aligned"] > 0.9  # d = 10, M = 200, L = 5
    assert 0 <= res["excess"] < res["risk"] and res["seed"] == 12345


def test_softmax_fit_records_its_attention_and_evaluate_uses_it(files, capsys, tmp_path):
    fit_path, js = tmp_path / "soft.nc", tmp_path / "soft.json"
    argv = ["slr", "fit", files.data, "--attention", "softmax", "--seed", 2, "--out", fit_path]
    rc, out, err = run(capsys, argv)
    assert rc == 0 and "softmax attention" in out, err
    fit = load_pgd_fit(fit_path)
    assert fit.attention == "softmax" and fit.config.lambda0 == 1.0
    argv = ["slr", "evaluate", fit_path, "--truth", files.data, "--n", 2000, "--json", js]
    rc, out, err = run(capsys, argv)
    assert rc == 0, err
    res = json.loads(js.read_text())
    assert res["attention"] == "softmax"
    # the oracle at its best lambda (chosen on other draws) does at least as well as at the
    # fit's lambda, up to 4.5 Monte Carlo s.e.
    assert res["oracle_best_excess"] <= res["oracle_excess"] + 4.5 * res["oracle_excess_se"]
    assert res["oracle_best_lambda"] > 0 and res["kappa_aligned"] > 0.9


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


SIM = ["slr", "simulate", "--M", 5, "--d", 3]


def _cases():
    """(argv builder, fragment of the message, name of the output that must not appear)."""
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(20, 3, 4)), rng.normal(size=20)

    def fit(data):
        return lambda d, f: ["slr", "fit", data(d), "--out", d / "o.nc"]

    def fit_opts(*opts):
        return lambda d, f: ["slr", "fit", f.data, *opts, "--out", d / "o.nc"]

    def xy(**arrays):
        return lambda d: _npz(d / "x.npz", **arrays)

    def predict(fit_path, inputs):
        return lambda d, f: ["slr", "predict", fit_path(d, f), "--inputs", inputs(d, f),
                             "--out", d / "o.npz"]  # fmt: skip

    inputs = lambda d, f: f.inputs  # noqa: E731
    return [
        (
            lambda d, f: ["slr", "simulate", "--M", 5, "--d", 1, "--out", d / "o.npz"],
            "d must",
            "o.npz",
        ),
        (
            lambda d, f: ["slr", "simulate", "--M", 0, "--d", 3, "--out", d / "o.npz"],
            "positive",
            "o.npz",
        ),
        (lambda d, f: [*SIM, "--gamma", 0, "--out", d / "o.npz"], "gamma", "o.npz"),
        (lambda d, f: [*SIM, "--noise", -1, "--out", d / "o.npz"], "noise", "o.npz"),
        (lambda d, f: [*SIM, "--gamma", "nan", "--out", d / "o.npz"], "finite", "o.npz"),
        (lambda d, f: [*SIM, "--out", d / "o.txt"], "must end with", "o.txt"),
        (lambda d, f: [*SIM, "--out", d / "no" / "o.npz"], "does not exist", "o.npz"),
        (fit(lambda d: d / "missing.npz"), "not found", "o.nc"),
        (fit(_corrupt), "cannot read", "o.nc"),
        (fit(xy(X=X)), "no 'Y'", "o.nc"),
        (fit(xy(X=X, Y=Y[:-1])), "Y must have shape", "o.nc"),
        (fit(xy(X=X[..., 0], Y=Y)), "shape (M, L, d)", "o.nc"),
        (fit(xy(X=np.where(X > 2, np.nan, X), Y=Y)), "NaN", "o.nc"),
        (fit(xy(X=X, Y=np.full(20, np.inf))), "NaN or inf", "o.nc"),
        (fit(xy(X=X, Y=Y, k_star=np.eye(4)[0])), "partial truth", "o.nc"),
        (fit_opts("--lambda-schedule", "cosine"), "unknown lambda schedule", "o.nc"),
        (fit_opts("--init", "spectral"), "unknown init", "o.nc"),
        (fit_opts("--lr", -1), "lr must be", "o.nc"),
        (fit_opts("--steps", 0), "positive integer", "o.nc"),
        (fit_opts("--batch-size", 0), "positive integer", "o.nc"),
        (fit_opts("--magic"), "unrecognized", "o.nc"),
        (fit_opts("--attention", "relu"), "unknown attention 'relu'", "o.nc"),
        (
            lambda d, f: ["slr", "sample", f.data, "--attention", "relu", "--out", d / "o.nc"],
            "unknown attention",
            "o.nc",
        ),
        (
            lambda d, f: ["slr", "sample", f.data, "--init", "erm", "--out", d / "o.nc"],
            "unknown init",
            "o.nc",
        ),
        (
            lambda d, f: ["slr", "sample", f.data, "--lambda-from", "mle", "--out", d / "o.nc"],
            "unknown lambda_from 'mle'",
            "o.nc",
        ),
        (
            lambda d, f: ["slr", "sample", f.data, "--draws", 2, "--out", d / "o.nc"],
            "draws",
            "o.nc",
        ),
        (predict(lambda d, f: _corrupt(d), inputs), "cannot read", "o.npz"),
        (predict(lambda d, f: f.data, inputs), "cannot read", "o.npz"),
        (
            predict(lambda d, f: f.fit, lambda d, f: _npz(d / "i.npz", X=X)),
            "the fit has d",
            "o.npz",
        ),
        (predict(lambda d, f: f.fit, lambda d, f: _npz(d / "i.npz", Z=X)), "no 'X'", "o.npz"),
        (lambda d, f: ["slr", "evaluate", f.fit, "--truth", xy(X=X, Y=Y)(d)], "no truth", None),
        (
            lambda d, f: ["slr", "evaluate", f.fit, "--truth", f.data, "--json", d / "o.csv"],
            "must end with",
            "o.csv",
        ),  # fmt: skip
        (lambda d, f: ["slr", "bogus"], "invalid choice", None),
    ]


def _corrupt(d):
    path = d / "junk.nc"
    path.write_bytes(np.random.default_rng(0).bytes(1024))
    return path


@pytest.mark.parametrize("case", range(len(_cases())))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(files, capsys, tmp_path, case):
    build, fragment, out_name = _cases()[case]
    argv = build(tmp_path, files)
    rc, out, err = run(capsys, argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("bayes-ips: error:") and fragment in lines[0], lines[0]
    if out_name is not None:
        assert not (tmp_path / out_name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
