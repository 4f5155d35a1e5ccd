"""CLI round trip of the Bayesian commands: sample, diagnose, predict, evaluate."""

import json
import os
import warnings

import numpy as np
import pytest

from bayes_ips.cli import main

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="module")
def posterior_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("bayes")
    data = d / "data.npz"
    assert (
        main(["simulate", "--M", "70", "--N", "4", "--d", "2", "--seed", "3", "--out", str(data)])
        == 0
    )
    post = d / "post.nc"
    # the shapes of test_inference and test_importance (M = 70, N = 4, d = 2, K = 4),
    # whose programs the same pytest-xdist worker has compiled (conftest.SHARED_PROGRAMS)
    rc = main(
        ["sample", str(data), "--ess-target", "60", "--draws", "60", "--seed", "1"]
        + ["--n-intervals", "4", "--out", str(post)]
    )
    assert rc == 0
    return d, data, post


def test_sample_writes_inference_data(posterior_file):
    from bayes_ips.arviz_io import load_inference_data

    _, _, post = posterior_file
    idata = load_inference_data(post)
    assert idata.posterior.sizes["chain"] == 4 and idata.posterior.sizes["draw"] == 60
    assert json.loads(idata.attrs["config"])["collapsed"] is True
    # the default path: Laplace-PSIS, its Pareto k and effective size stored with the draws
    assert idata.attrs["method"] == "auto" and idata.attrs["sampler"] == "is"
    info = json.loads(idata.attrs["sampler_info"])
    assert info["khat"] <= 0.7 and info["is_ess"] >= 60 and info["ess_target"] == 60
    assert int(idata.attrs["seed"]) == 1


# slow tier: ~16 s (the fast tier's 5-minute budget, 2026-12-07)
@pytest.mark.slow
def test_diagnose_writes_table_and_figures_and_strict_fails_short_runs(posterior_file, capsys):
    d, data, post = posterior_file
    out = d / "diag"
    assert main(["diagnose", str(post), "--out-dir", str(out), "--truth", str(data)]) == 0
    for name in ("summary.csv", "diagnostics.json", "rank.png", "ppc.png", "phi_band.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "diagnostics.json").read_text())
    # an effective size of 60 is below diagnose's 100 per chain: flagged, loudly
    assert any("effective size" in p for p in report["problems"])
    assert "NOT CONVERGED" in capsys.readouterr().err
    assert main(["diagnose", str(post), "--out-dir", str(out), "--strict"]) == 3
    import pandas as pd

    names = pd.read_csv(out / "summary.csv", index_col=0).index
    assert len(names) > 0
    assert all(n.startswith(("A[", "sigma", "tau", "g_eval[")) for n in names)


def test_diagnose_that_fails_leaves_no_output_folder(posterior_file, tmp_path, capsys):
    """A file that is no posterior: a one-line error, exit code 2, and no folder made."""
    _, data, _ = posterior_file
    erm = tmp_path / "erm.nc"
    assert main(["fit-erm", str(data), "--seed", "0", "--out", str(erm)]) == 0
    out = tmp_path / "diag"
    assert main(["diagnose", str(erm), "--out-dir", str(out)]) == 2
    assert "has no posterior group" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["erm.nc"]


def test_predict_and_evaluate_posterior(posterior_file, capsys):
    d, data, post = posterior_file
    rng = np.random.default_rng(0)
    np.savez(d / "pairs.npz", x=rng.uniform(-1, 1, (9, 2)), y=rng.uniform(-1, 1, (9, 2)))
    assert (
        main(["predict", str(post), "--pairs", str(d / "pairs.npz"), "--out", str(d / "g.npz")])
        == 0
    )
    z = np.load(d / "g.npz")
    assert z["g"].shape == z["g_lo"].shape == z["g_hi"].shape == (9,)
    assert np.all(z["g_lo"] <= z["g_hi"])
    assert main(["evaluate", str(post), "--truth", str(data), "--json", str(d / "e.json")]) == 0
    res = json.loads((d / "e.json").read_text())
    assert res["kind"] == "posterior" and res["error"] > 0
    # c_H of the model's basis at the ERM reference's A: in (0, 1] on the data (Jensen)
    assert 0 < res["c_H"] <= 1 and res["c_H_dim"] >= 1
    assert res["draw_error"]["q05"] <= res["draw_error"]["median"] <= res["draw_error"]["q95"]
    assert "posterior of ||g_theta - g*||^2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["sample", "{data}", "--init", "magic", "--out", "{d}/x.nc"], "unknown init"),
        (["sample", "{data}", "--method", "magic", "--out", "{d}/x.nc"], "unknown method"),
        (["sample", "{data}", "--basis", "magic", "--out", "{d}/x.nc"], "unknown basis"),
        (
            ["sample", "{data}", "--method", "imh", "--explicit", "--out", "{d}/x.nc"],
            "needs the collapsed model",
        ),
        (["sample", "{data}", "--chains", "0", "--out", "{d}/x.nc"], "positive integer"),
        (["sample", "{data}", "--rank", "3", "--out", "{d}/x.nc"], "rank 3"),
        (["sample", "{data}", "--draws", "2", "--out", "{d}/x.nc"], "draws"),
        (["sample", "{d}/missing.npz", "--out", "{d}/x.nc"], "not found"),
        (["sample", "{data}", "--collapsed", "--explicit", "--out", "{d}/x.nc"], "not allowed"),
        (["diagnose", "{d}/junk.nc", "--out-dir", "{d}/dd"], "cannot read"),
        (
            ["predict", "{d}/junk.nc", "--pairs", "{d}/pairs.npz", "--out", "{d}/x.npz"],
            "cannot read",
        ),
    ],
)
def test_bad_bayes_input_is_one_line(posterior_file, capsys, argv, fragment):
    d, data, _ = posterior_file
    (d / "junk.nc").write_bytes(b"not a netcdf file at all")
    argv = [a.format(d=d, data=data) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bayes-ips: error:") and fragment in err[0]
    assert not (d / "x.nc").exists() and not (d / "x.npz").exists()
