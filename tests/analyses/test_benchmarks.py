"""The benchmark scripts run end to end with tiny arguments (their ratios are not asserted:
speed is measured by the benchmarks themselves, not by timed tests)."""

import argparse
import importlib.util
from pathlib import Path

import pytest

from bayes_ips.inference import IS_ROUND

BENCH = Path(__file__).resolve().parents[2] / "analyses" / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # every benchmark runs in the slow tier (fast-tier budget)
@pytest.mark.parametrize("heads", [None, [1, 2]])
def test_bench_kernel_tiny(capsys, heads):
    mod = _load("bench_kernel")
    args = argparse.Namespace(M=300, repeats=1, seed=0, skip_memory=True, heads=heads)
    out = mod.main(args)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("speedup_vs_dense=") and lines[-1].startswith("slowdown_vs_floor=")
    assert out["speedup_vs_dense"] > 0 and out["slowdown_vs_floor"] > 0
    if heads:
        assert lines[-3].startswith("heads_cost_per_head=")
        assert [line.split(":")[0] for line in lines[-5:-3]] == ["heads=1", "heads=2"]


@pytest.mark.slow  # every benchmark runs in the slow tier (fast-tier budget)
@pytest.mark.parametrize("nuts", [False, True])
def test_bench_gram_grad_tiny(capsys, nuts):
    mod = _load("bench_gram_grad")
    args = argparse.Namespace(
        setting=[[40, 3, 2, 3]],
        repeats=1,
        compile_repeats=1,
        seed=0,
        nuts=nuts,
        nuts_M=40,
        warmup=2,
        draws=4,
        chains=2,  # run_nuts with one chain and the ERM start fails (init shapes)
        nuts_repeats=1,
    )
    out = mod.main(args)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("compile_ratio_M40_N3_d2_K3=")
    assert lines[-1].startswith("speedup_M40_N3_d2_K3=")
    assert out["kernel"][0]["speedup"] > 0
    if nuts:
        assert set(out["nuts"]) == {"before", "rule"}
        assert all(r["wall_s"] > 0 for runs in out["nuts"].values() for r in runs)
    else:
        assert "nuts" not in out


@pytest.mark.slow  # ERM twice, the default path twice and a short NUTS run, each compiled
def test_bench_posterior_tiny(capsys):
    mod = _load("bench_posterior")
    argv = ["--M-override", "150", "--n-eval-pairs", "500", "--nuts-iterations", "30"]
    args = mod.build_parser().parse_args(argv)
    out = mod.main(args)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3].startswith("posterior_over_erm=") and lines[-2].startswith("error_ratio=")
    assert lines[-1].startswith("posterior_speedup=")
    assert out["posterior_over_erm"] > 0 and out["posterior_speedup"] > 0
    assert out["default"]["sampler"] in ("is", "nuts") and out["errors"]["default"] > 0


@pytest.mark.slow  # two paper cells' posterior paths, each compiled (cold) then warm
def test_profile_posterior_tiny(capsys, tmp_path):
    mod = _load("profile_posterior")
    argv = ["--cells", "1:1000", "5:1000", "--M-override", "120"]
    argv += ["--out-json", str(tmp_path / "p.json")]
    rows = mod.main(mod.build_parser().parse_args(argv))
    stages = {"erm", "laplace", "proposals", "summaries", "inference_data"}
    for row in rows:
        assert set(row["cold"]) == set(row["warm"]) == stages
        assert all(v > 0 for v in row["warm"].values())
        assert row["info"]["n_proposals"] % IS_ROUND == 0
    assert (tmp_path / "p.json").exists() and "inference_data" in capsys.readouterr().out


@pytest.mark.slow  # every benchmark runs in the slow tier (fast-tier budget)
def test_bench_crossprod_tiny(capsys):
    mod = _load("bench_crossprod")
    argv = ["--setting", "40", "7", "--setting", "64", "10", "--repeats", "1"]
    out = mod.main(mod.parse_args(argv))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("best_over_package=")
    assert [r["K"] for r in out["settings"]] == [7, 10]
    assert all(r["ms"]["package"] > 0 for r in out["settings"])


@pytest.mark.slow  # four programs compiled, each timed once
def test_bench_host_gram_tiny(capsys, monkeypatch):
    """The host-BLAS pass must agree with the package's (the script checks it before
    timing) and print its ratio line."""
    mod = _load("bench_host_gram")
    monkeypatch.setattr(mod, "SETTINGS", (("tiny", 2, 60, 4, 8, "gaussian"),))
    out = mod.main(argparse.Namespace(repeats=1, seed=0))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("host_pass_speedup=") and lines[0].lstrip().startswith("tiny")
    r = out["settings"][0]
    assert r["rows"] == 240 and r["n_basis"] == 11 and r["pass_speedup"] > 0


@pytest.mark.slow  # ERM and the default path at both round sizes on a tiny case, compiled
def test_bench_is_round_tiny(capsys, monkeypatch):
    from bayes_ips import inference

    monkeypatch.syspath_prepend(str(BENCH.parent))
    import heldout_posterior

    tiny = {"tiny": ("tanh", None, "cube", 2, 100, 4, 0.1)}
    monkeypatch.setattr(heldout_posterior, "CASES", tiny)
    mod = _load("bench_is_round")
    ratio = mod.main(mod.build_parser().parse_args(["--reps", "1", "--cases", "tiny"]))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("tiny: ERM") and lines[-1] == f"round25_over_round50={ratio:.3f}"
    assert ratio > 0 and inference.IS_ROUND == IS_ROUND  # the module's round size restored
