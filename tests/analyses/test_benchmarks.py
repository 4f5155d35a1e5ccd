"""The benchmark scripts run end to end with tiny arguments (their ratios are not asserted:
speed is measured by the benchmarks themselves, not by timed tests)."""

import argparse
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "analyses" / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_kernel_tiny(capsys):
    mod = _load("bench_kernel")
    out = mod.main(argparse.Namespace(M=300, repeats=1, seed=0, skip_memory=True))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("speedup_vs_dense=") and lines[-1].startswith("slowdown_vs_floor=")
    assert out["speedup_vs_dense"] > 0 and out["slowdown_vs_floor"] > 0
