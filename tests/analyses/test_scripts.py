"""Every analysis script runs end to end on a tiny config (STYLE: scripts are tested)."""

import argparse
import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

ANALYSES = Path(__file__).resolve().parents[2] / "analyses"

# Tiny grids: fixed K, one ERM start, short chains, so that cells are cheap; the
# three configs share d = 2 and M, hence compiled programs and (in one folder of
# records) cells.  Only bayes_vs_erm runs the sampler.  The ERM cells have the shapes
# of the study tests' TINY config (M = 40, 60; d = 2; N = 4; K = 3; 400 pairs), whose
# programs the same pytest-xdist worker compiles (conftest.SHARED_PROGRAMS).
COMMON = """
seed = 3
repetitions = 2
M = [40, 60]
N = 4
n_eval_pairs = 400

[erm]
restarts = 1
n_intervals = 3

[bayes_pm]
warmup = 40
draws = 40
n_intervals = 3
n_band_pairs = 200
"""
TANH = '[[phi]]\nfamily = "tanh"\n'
HOLDER = '[[phi]]\nfamily = "holder"\nbeta = 1.5\n'
CONFIGS = {
    "rate_vs_dimension": ('estimators = ["erm"]\nd = [1, 2]', [TANH]),
    "rate_vs_smoothness": ('estimators = ["erm"]\nd = [2]', [TANH, HOLDER]),
    "bayes_vs_erm": ('estimators = ["erm", "bayes_pm"]\nd = [2]', [TANH]),
}


def _config(name: str) -> str:
    head, phis = CONFIGS[name]
    study, tables = COMMON.split("[erm]")
    return f'[study]\nname = "{name}"\n{head}\n{study}\n' + "\n".join(phis) + "\n[erm]" + tables


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ANALYSES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    d = tmp_path_factory.mktemp("analyses")
    for name in CONFIGS:
        (d / f"{name}.toml").write_text(_config(name))
    return d


def _args(shared, name, out):
    return argparse.Namespace(
        config=str(shared / f"{name}.toml"),
        out_dir=str(out),
        study_dir=str(shared / "records"),
        processes=None,
        workers=None,
        scheduler=None,
        attempts=1,
        quiet=True,
        only=None,
        report_only=False,
        cell_timeout=None,
    )


REQUIRED = ["estimator", "d", "beta", "N", "rank", "slope", "slope_lo", "slope_hi", "theory"]


@pytest.mark.parametrize(
    "script, section",
    [
        # ~21 s, and the report-only test below reads its records: both slow (budget)
        pytest.param("rate_vs_dimension", "Spread of the slopes over d", marks=pytest.mark.slow),
        # ~21 s: slow tier too (fast-tier budget; the study machinery every script
        # drives is tested fast in tests/study)
        pytest.param(
            "rate_vs_smoothness", "Do smoother phi* give steeper slopes?", marks=pytest.mark.slow
        ),
        # the sampler's run, ~21 s: slow tier (the posterior itself is tested fast in
        # test_inference, the report's panels in study/test_figures; the paired-ratio
        # figure and the contraction table only here)
        pytest.param(
            "bayes_vs_erm",
            "Posterior mean against ERM on the same data",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_analysis_script_runs_end_to_end(shared, script, section, capsys):
    out = shared / script
    res = _load(script).main(_args(shared, script, out))
    assert not res["result"].failures
    assert len(res["result"].records) == 8
    for name in ("rates.png", "slopes.csv", "slopes.md", "summary.md", "results.nc"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "slopes.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[: len(REQUIRED)] == REQUIRED
    assert len(rows) == 2  # estimator x phi x d
    theory = {r["beta"]: float(r["theory"]) for r in rows}
    assert theory["inf"] == -1.0
    if script == "rate_vs_smoothness":
        assert abs(theory["1.5"] - (-3 / 4)) < 1e-12  # -2 beta / (2 beta + 1)
    assert section in (out / "summary.md").read_text()
    ds = xr.open_dataset(out / "results.nc", engine="h5netcdf")
    assert sum(ds.sizes[k] > 1 for k in ("estimator", "phi", "d")) == 1
    assert ds.sizes["M"] == 2 and ds.sizes["rep"] == 2
    if script == "bayes_vs_erm":
        assert (out / "paired_ratio.png").stat().st_size > 0
        assert (out / "contraction.csv").stat().st_size > 0
    assert section in capsys.readouterr().out


@pytest.mark.slow  # fast-tier budget (5 min on 2 cores); CI runs it
def test_report_only_runs_no_cell_and_reports_the_finished_ones(shared, tmp_path):
    # the dimension study's 8 cells are in shared/records (the test above); M = 160 is not
    config = _config("rate_vs_dimension").replace("M = [40, 60]", "M = [40, 60, 160]")
    (tmp_path / "wider.toml").write_text(config)
    args = _args(shared, "rate_vs_dimension", tmp_path / "out")
    args.config, args.report_only = str(tmp_path / "wider.toml"), True
    res = _load("rate_vs_dimension").main(args)
    result = res["result"]
    assert result.n_computed == 0 and result.n_missing == 4 and len(result.records) == 8
    assert "8 of 12 selected cells" in res["summary"] and "4 not run" in res["summary"]
    records = shared / "records" / "records"
    assert (records / "erm_tanh-binf_d1_M40_r0.json").exists()  # the folder it reads
    assert not list(records.glob("*_M160_*"))


# The minimax analysis on named estimators: erm_gcv and erm_theory, both at the fixed
# K = 3 of COMMON (so that the cells are cheap; their names, not their K, are tested
# here), and a target relative s.e. of the error that the first 400 held-out pairs
# miss in some cells.  16 cells, ~4 s; the bspline phi*'s second prediction is tested
# on synthetic records in study/test_report.
MINIMAX = f"""
[study]
name = "minimax"
estimators = ["erm_gcv", "erm_theory"]
d = [1, 2]
error_rse = 0.1
error_max_pairs = 3200
{COMMON.split("[erm]")[0]}
[[phi]]
family = "weierstrass"
beta = 1.5

[erm]
{COMMON.split("[erm]")[1].split("[bayes_pm]")[0]}
[erm_gcv]
kind = "erm"

[erm_theory]
kind = "erm"
k_rule = "theory"
"""


@pytest.mark.slow  # fast-tier budget (5 min on 2 cores); CI runs it
def test_minimax_script_tells_named_estimators_apart(shared, tmp_path, capsys):
    (tmp_path / "minimax.toml").write_text(MINIMAX)
    args = _args(shared, "minimax", tmp_path / "out")
    args.config = str(tmp_path / "minimax.toml")
    res = _load("minimax").main(args)
    records = res["result"].records
    assert not res["result"].failures and len(records) == 16
    assert {r["estimator"] for r in records} == {"erm_gcv", "erm_theory"}
    assert {r["kind"] for r in records} == {"erm"}
    folder = shared / "records" / "records"
    assert (folder / "erm_theory_weierstrass-b1.5_d2_M60_r1.json").exists()
    # the error target: met where the pairs sufficed, pairs doubled from 400, capped
    pairs = {r["error_n_pairs"] for r in records}
    assert pairs <= {400, 800, 1600, 3200} and len(pairs) > 1
    for r in records:
        assert r["error_rse_met"] == (r["error_se"] <= 0.1 * r["error"])
        assert r["error_rse_met"] or r["error_n_pairs"] == 3200
    pred = res["prediction_rows"]
    assert len(pred) == 4  # estimator x phi x d
    for r in pred:
        assert r["minimax"] == pytest.approx(-3 / 4, abs=1e-12)  # -2 beta / (2 beta + 1)
        assert r["family"] == "weierstrass" and math.isnan(r["singularity"])
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| erm_theory | weierstrass(beta=1.5) | 2 |" in summary
    assert "- erm_gcv, weierstrass(beta=1.5): d-slopes from" in summary
    assert "cells met se/error <= 0.1" in summary
    with open(tmp_path / "out" / "slopes.csv") as f:
        assert {r["estimator"] for r in csv.DictReader(f)} == {"erm_gcv", "erm_theory"}
    ds = xr.open_dataset(tmp_path / "out" / "results.nc", engine="h5netcdf")
    assert ds["estimator"].values.tolist() == ["erm_gcv", "erm_theory"]
    assert ds["kind"].values.tolist() == ["erm", "erm"]
    assert "Slopes against the predicted exponents" in capsys.readouterr().out


@pytest.mark.slow  # two default posterior runs at M = 400 (compiled once)
def test_diagnose_false_alarms_script(tmp_path, capsys):
    mod = _load("diagnose_false_alarms")
    out = mod.main(mod.build_parser().parse_args(["--out-dir", str(tmp_path), "--runs", "2"]))
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("false_alarm_rate=")
    assert len(out["runs"]) == 2 and (tmp_path / "false_alarms.json").exists()


@pytest.mark.slow  # ERM twice and the posterior twice on a tiny held-out case
def test_heldout_posterior_script(tmp_path, monkeypatch, capsys):
    mod = _load("heldout_posterior")
    monkeypatch.setattr(mod, "CASES", {"tiny": ("holder", 1.5, "gaussian", 2, 120, 4, 0.1)})
    rows = mod.main(mod.build_parser().parse_args(["--out-dir", str(tmp_path)]))
    assert rows[0]["case"] == "tiny" and 0 <= rows[0]["coverage"] <= 1
    assert rows[0]["ratio"] > 0 and (tmp_path / "heldout.csv").exists()
    assert "tiny" in capsys.readouterr().out


def _record(folder, cell, **rec):
    path = folder / "records" / f"{cell}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"record": rec}))


def test_fast_vs_nuts_pairs_cells_and_applies_the_criteria(tmp_path, capsys):
    """Error ratio <= 1.05 and coverage gap <= 0.03, cell by cell, on cells in both folders."""
    fast, nuts = tmp_path / "fast", tmp_path / "nuts"
    base = {"d": 5, "beta": 3.0, "rep": 0, "wall_time_s": 1.0, "erm_error": 1.0}
    for M, (ef, cf) in {1000: (1.04, 0.90), 4000: (1.06, 0.90), 8000: (1.0, 0.86)}.items():
        _record(fast, f"bayes_pm_b3_d5_M{M}_r0", **base, M=M, error=ef, band_coverage=cf)
        _record(nuts, f"bayes_pm_b3_d5_M{M}_r0", **base, M=M, error=1.0, band_coverage=0.9)
    _record(nuts, "bayes_pm_b3_d5_M250_r0", **base, M=250, error=1.0, band_coverage=0.9)
    mod = _load("fast_vs_nuts")
    rows = mod.main(mod.build_parser().parse_args(["--fast", str(fast), "--nuts", str(nuts)]))
    assert [r["M"] for r in rows] == [1000, 4000, 8000]  # M = 250 is in one folder only
    assert [r["within"] for r in rows] == [True, False, False]
    assert rows[2]["coverage_gap"] == pytest.approx(-0.04)
    assert capsys.readouterr().out.strip().splitlines()[-1] == "cells_within_criteria=1/3"


@pytest.mark.slow  # population PGD and a Bayes risk on a tiny case, ~5 s
def test_slr_population_script(tmp_path, capsys):
    mod = _load("slr_population")
    args = mod.build_parser().parse_args(
        ["--out-dir", str(tmp_path), "--d", "4", "--gamma", "1", "--starts", "2",
         "--steps", "200", "--n-bayes", "400"]
    )  # fmt: skip
    rows = mod.main(args)
    assert len(rows) == 2 and (tmp_path / "population.md").stat().st_size > 0
    with open(tmp_path / "population.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    for r in rows:  # each start ends at one of the two stationary points, at a lower risk
        assert min(abs(r["risk"] - r["risk_truth"]), abs(r["risk"] - r["risk_swap"])) < 1e-7
        assert r["excess"] == pytest.approx(r["risk"] - r["bayes_risk"])
    assert "population PGD" in capsys.readouterr().out
    with pytest.raises(mod.InputError, match="starts"):
        mod.main(mod.build_parser().parse_args(["--out-dir", str(tmp_path), "--starts", "0"]))


@pytest.mark.slow  # ERM, the Laplace step and 40 proposals on a tiny cell
def test_laplace_fit_script(tmp_path, capsys):
    """The script reads a record's spec, may change its M, and reports the proposal's fit."""
    settings = {
        "bayes": {"method": "auto", "basis": "evidence", "chains": 4, "collapsed": True},
        "erm": {"k_rule": "gcv", "restarts": 1, "multiplicity": 1},
    }
    spec = {
        "M": 500, "N": 4, "d": 2, "rank": 1, "rep": 0, "seed": 5, "noise": 0.1,
        "noise_law": "gaussian", "phi": {"family": "tanh", "beta": "inf"}, "rho": 0.0,
        "tokens": "cube", "estimator": "bayes_pm", "task": "ips", "settings": settings,
    }  # fmt: skip
    path = tmp_path / "cell.json"
    path.write_text(json.dumps({"record": {}, "spec": spec}))
    mod = _load("laplace_fit")
    out = mod.main(mod.build_parser().parse_args([str(path), "--M", "150", "--proposals", "40"]))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert out["M"] == 150 and out["d"] == 2 and out["P"] == 4 and out["proposals"] == 40
    assert 0 <= out["r2_linear"] <= out["r2_linear_square"] <= 1 and out["shift"] >= 0
    assert out["grad_at_mode"] < 0.1  # the mode is found: a whitened gradient near 0


@pytest.mark.slow  # two ERM fits, 40 mode searches and one posterior cell, on a tiny cell
def test_order_refit_and_order_forced_scripts(tmp_path, capsys):
    """On a phi* rough everywhere the curvature prior's evidence sits at the top of the
    grid, so the order is questioned: ``order_refit.py`` reports first differences'
    gain at ERM's A (a clear win on this rough phi*) and with A refitted both ways;
    ``order_forced.py`` reruns the cell on the curvature prior and writes its record."""
    settings = {
        "bayes": {
            "method": "auto",
            "basis": "evidence",
            "chains": 4,
            "collapsed": True,
            "draws": 300,
            "level": 0.9,
            "n_band_pairs": 500,
        },
        "erm": {"k_rule": "gcv", "restarts": 1, "multiplicity": 1},
    }
    spec = {
        "M": 400, "N": 6, "d": 2, "rank": 1, "rep": 0, "seed": 5, "noise": 0.1,
        "noise_law": "gaussian", "phi": {"family": "weierstrass", "beta": 0.5}, "rho": 0.0,
        "tokens": "gaussian", "estimator": "bayes_pm", "task": "ips", "settings": settings,
        "n_eval_pairs": 2000, "error_rse": 0.2, "error_max_pairs": 4000,
    }  # fmt: skip
    path = tmp_path / "cell.json"
    path.write_text(json.dumps({"record": {}, "spec": spec}))
    mod = _load("order_refit")
    (row,) = mod.main(mod.build_parser().parse_args([str(path)]))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == row
    assert row["questioned"] and row["order"] == 1 and row["z_fixed"] > 2
    for v in ("refit_erm", "refit_mode"):
        assert math.isfinite(row[f"z_{v}"]) and row[f"s_{v}"] > 0
    forced = _load("order_forced")
    out = tmp_path / "forced"
    (rec,) = forced.main(forced.build_parser().parse_args([str(path), "--out-dir", str(out)]))
    doc = json.loads((out / "records" / "cell.json").read_text())
    assert doc["forced_order"] == 2 and doc["spec"] == spec
    assert rec["penalty_order"] == doc["record"]["penalty_order"] == 2
    # written whole, then renamed: no temporary file left beside the record
    assert [p.name for p in (out / "records").iterdir()] == ["cell.json"]


def test_oracle_gap_pairs_cells_and_recovers_a_parametric_gap(tmp_path, capsys):
    """On errors built as ``a M^-r`` (A known) plus ``b n_A / M`` (A estimated) the
    script gives back both slopes, a gap of slope -1 and the constant ``b`` at every d,
    and a gap of 0 at d = 1; cells of one estimator only are left out."""
    rows, b = [], 0.02
    for beta in (0.5, 1.5):
        r = 2 * beta / (2 * beta + 1)
        for d in (1, 5, 30):
            n_a = 2 * d - 2
            for M in (250, 1000, 4000, 16000):
                for rep in range(3):
                    oracle = 0.3 * M**-r * (1 + 0.01 * rep)
                    base = {"family": "weierstrass", "beta": beta, "d": d, "M": M, "rep": rep}
                    rows.append({**base, "estimator": "erm_oracle", "rank": 1, "error": oracle})
                    est = oracle + b * n_a / M
                    rows.append({**base, "estimator": "erm_mixed", "rank": 1, "error": est})
    rows.append({**base, "M": 32000, "estimator": "erm_mixed", "rank": 1, "error": 1.0})
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    mod = _load("oracle_gap")
    out = mod.main(mod.build_parser().parse_args([str(path), "--out-dir", str(tmp_path / "o")]))
    summary = {(r["beta"], r["d"]): r for r in out if r["M"] == -1}
    assert all(r["M"] != 32000 for r in out)  # no oracle cell there
    for (_, d), r in summary.items():
        assert r["oracle_slope"] == pytest.approx(r["minimax"], abs=1e-3)
        if d == 1:
            assert r["share_first"] == r["share_last"] == 0.0 and math.isnan(r["gap_slope"])
        else:
            assert r["gap_slope"] == pytest.approx(-1.0, abs=1e-9)
            assert r["gap_const_last"] == pytest.approx(b, rel=1e-9)
            assert r["slope"] < r["oracle_slope"]  # the gap steepens the estimated-A curve
    assert (tmp_path / "o" / "oracle_gap.png").stat().st_size > 0
    assert "| 0.5 | 30 | 58 |" in capsys.readouterr().out


def test_external_cases_are_built_as_documented():
    """The NumPy-only data of heldout_external.py: Y is the partner average of phi*
    at the pair scores plus noise (against a naive loop), the scores have unit s.d.,
    and g* at the evaluation pairs is phi*(x^T A y); the same seed, the same data."""
    mod = _load("heldout_external")
    D = mod.case_data("relu-gauss-d3", 0, n_eval=50)
    X, Y, A = D["X"], D["Y"], D["A"]
    M, N, _ = X.shape
    G = np.array(
        [[np.mean([max(X[m, i] @ A @ X[m, j], 0.0) for j in range(N) if j != i])
          for i in range(N)] for m in range(M)]
    )  # fmt: skip
    resid = Y - G
    assert abs(resid.std() - 0.1) < 0.01  # noise s.d. 0.1; 5000 draws: s.e. 0.001
    S = np.einsum("mid,de,mje->mij", X, A, X)[:, ~np.eye(N, dtype=bool)]
    assert S.std() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(
        D["g"], [max(a @ A @ b, 0.0) for a, b in zip(D["x"], D["y"], strict=True)], rtol=1e-12
    )
    np.testing.assert_array_equal(mod.case_data("relu-gauss-d3", 0, n_eval=50)["Y"], Y)
    for law in mod.TOKEN_LAWS:
        assert mod.tokens(np.random.default_rng(0), law, (7, 3, 2)).shape == (7, 3, 2)
    with pytest.raises(ValueError, match="unknown token law"):
        mod.tokens(np.random.default_rng(0), "cauchy", (2, 2))


def test_every_external_case_builds_with_unit_score_sd():
    """Both named sets (``--set external`` and ``fresh``) build their data: the token law
    and phi* of every case exist, the scores have unit s.d. and A* has the case's rank.
    The fresh set's new laws have unit variance (Laplace) and [-1, 1] support (uniform)."""
    mod = _load("heldout_external")
    sets = mod.case_sets()
    assert set(sets["all"]) == set(sets["external"]) | set(sets["fresh"])
    assert not set(sets["external"]) & set(sets["fresh"])
    for name, (_, _, d, r, M, N, _) in sets["all"].items():
        D = mod.case_data(name, 0, n_eval=10)
        assert D["X"].shape == (M, N, d) and D["Y"].shape == (M, N)
        S = np.einsum("mid,de,mje->mij", D["X"], D["A"], D["X"])[:, ~np.eye(N, dtype=bool)]
        assert S.std() == pytest.approx(1.0, rel=1e-12), name
        assert np.linalg.matrix_rank(D["A"]) == r, name
    z = mod.tokens(np.random.default_rng(0), "laplace", (200000,))
    assert z.var() == pytest.approx(1.0, abs=0.02)  # s.e. of the variance: sqrt(5 / n) = 0.005
    u = mod.tokens(np.random.default_rng(0), "uniform_pm1", (1000,))
    assert u.min() >= -1 and u.max() <= 1 and u.min() < -0.99 and u.max() > 0.99


@pytest.mark.slow  # ERM and the default posterior on one small external case
def test_heldout_external_script(tmp_path, monkeypatch, capsys):
    mod = _load("heldout_external")
    monkeypatch.setattr(mod, "CASES", {"tiny": ("relu", "student3", 2, 1, 120, 4, 0.1)})
    rows = mod.main(mod.build_parser().parse_args(["--out-dir", str(tmp_path)]))
    assert rows[0]["case"] == "tiny" and 0 <= rows[0]["coverage"] <= 1
    assert rows[0]["pm_error"] < rows[0]["g_sd"] and rows[0]["erm_error"] < rows[0]["g_sd"]
    assert (tmp_path / "external.json").exists() and "tiny" in capsys.readouterr().out
    assert len((tmp_path / "external.jsonl").read_text().splitlines()) == 1
