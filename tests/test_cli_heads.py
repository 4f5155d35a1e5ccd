"""``--heads`` from simulation to evaluation: the multi-head round trip on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bayes_ips.cli import main
from bayes_ips.io import load_fit
from bayes_ips.multihead import HeadsFit


def _run(capsys, argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow  # ~13 s: two ERM fits compiled (the kernel and ERM have fast tests of their own)
def test_heads_round_trip(tmp_path, capsys):
    data, fit, pairs, pred, js = (
        tmp_path / n for n in ("d.npz", "f.nc", "p.npz", "g.npz", "e.json")
    )
    argv = ["simulate", "--M", 400, "--N", 6, "--d", 3, "--heads", 2, "--phi", "tanh,sin"]
    assert _run(capsys, argv + ["--noise", 0.05, "--out", data])[0] == 0
    opts = ["--restarts", 1, "--n-intervals", 5, "--seed", 0]
    rc, out, err = _run(capsys, ["fit-erm", data, "--heads", 2, *opts, "--out", fit])
    assert rc == 0, err
    assert "2 heads" in out
    f = load_fit(fit)
    assert isinstance(f, HeadsFit) and f.A.shape == (2, 3, 3) and f.coef.shape[0] == 2
    rng = np.random.default_rng(0)
    np.savez(pairs, x=rng.uniform(-1, 1, (30, 3)), y=rng.uniform(-1, 1, (30, 3)))
    rc, _, err = _run(capsys, ["predict", fit, "--pairs", pairs, "--per-head", "--out", pred])
    assert rc == 0, err
    with np.load(pred) as z:
        np.testing.assert_allclose(z["g_heads"].sum(axis=0), z["g"], rtol=1e-12)
    rc, out, err = _run(capsys, ["evaluate", fit, "--truth", data, "--pairs", 2000, "--json", js])
    assert rc == 0, err
    rep = json.loads(js.read_text())
    assert sorted(rep["head_permutation"]) == [0, 1]
    assert len(rep["head_relative_errors"]) == 2 and rep["relative"] < 0.2
    # a one-head fit has no per-head predictions: one line, no output file
    rc, _, err = _run(capsys, ["fit-erm", data, *opts, "--out", tmp_path / "one.nc"])
    assert rc == 0
    bad = tmp_path / "bad.npz"
    rc, _, err = _run(
        capsys, ["predict", tmp_path / "one.nc", "--pairs", pairs, "--per-head", "--out", bad]
    )
    assert rc != 0 and "multi-head" in err and len(err.strip().splitlines()) == 1
    assert not bad.exists()


@pytest.mark.slow  # ~50 s: a multi-head ERM fit and its posterior (auto: Laplace-PSIS)
def test_sample_heads_round_trip(tmp_path, capsys):
    data, post, pairs, pred, js = (
        tmp_path / n for n in ("d.npz", "p.nc", "p.npz", "g.npz", "e.json")
    )
    argv = ["simulate", "--M", 300, "--N", 6, "--d", 3, "--heads", 2, "--phi", "tanh,sin"]
    assert _run(capsys, argv + ["--out", data])[0] == 0
    opts = ["--chains", 2, "--warmup", 100, "--draws", 100, "--n-intervals", 5]
    rc, out, err = _run(capsys, ["sample", data, "--heads", 2, *opts, "--out", post])
    assert rc == 0, err
    assert "2 heads" in out and "R-hat on G" in out and ("Laplace-PSIS" in out or "NUTS" in out)
    rng = np.random.default_rng(0)
    np.savez(pairs, x=rng.uniform(-1, 1, (25, 3)), y=rng.uniform(-1, 1, (25, 3)))
    rc, _, err = _run(capsys, ["predict", post, "--pairs", pairs, "--per-head", "--out", pred])
    assert rc == 0, err
    with np.load(pred) as z:
        assert z["g_heads"].shape == (2, 25)
        assert np.all(z["g_lo"] <= z["g"]) and np.all(z["g"] <= z["g_hi"])
        # the aligned heads are centred versions of G's parts: they sum to G up to a constant
        gap = z["g_heads"].sum(axis=0) - z["g"]
        assert np.ptp(gap) < 1e-8
    rc, _, err = _run(capsys, ["evaluate", post, "--truth", data, "--pairs", 2000, "--json", js])
    assert rc == 0, err
    rep = json.loads(js.read_text())
    assert rep["heads"] == 2 and rep["relative"] < 0.2 and "draw_error" in rep
    diag = tmp_path / "diag"
    rc, out, err = _run(capsys, ["diagnose", post, "--out-dir", diag])
    assert rc == 0, err
    assert "A_aligned" in out and "wrote" in out  # aligned heads, never raw per-head A
    assert sorted(p.name for p in diag.iterdir()) == [
        "diagnostics.json",
        "rank.png",
        "summary.csv",
    ]
    bad = tmp_path / "bad.nc"
    rc, _, err = _run(capsys, ["sample", data, "--heads", 2, "--method", "imh", "--out", bad])
    assert rc != 0 and "auto|is|nuts" in err and not bad.exists()
