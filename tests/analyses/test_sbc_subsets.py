"""analyses/sbc_subsets.py: calibration of the replications a Pareto-k rule accepts."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "analyses" / "sbc_subsets.py"
FIELDS = ("replication", "quantity", "rank", "L", "sampler", "fallback", "ess_min", "wall_s")


def _load():
    spec = importlib.util.spec_from_file_location("sbc_subsets", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(path, n_ok=300, n_bad=150, L=100, seed=0):
    """Accepted replications (k 0.3) with uniform ranks; the others (k 0.9) with ranks of
    a posterior too narrow: a quarter of them at the extremes 0 or L."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS + ("khat", "refits"))
        w.writeheader()
        for r in range(n_ok + n_bad):
            bad = r >= n_ok
            for q in ("g[0]", "sigma"):
                rank = int(rng.integers(0, L + 1))
                if bad and rng.uniform() < 0.25:
                    rank = int(rng.choice([0, L]))
                w.writerow(
                    dict(replication=r, quantity=q, rank=rank, L=L, sampler="is", fallback="",
                         ess_min="100", wall_s="0.5", khat="0.9" if bad else "0.3",
                         refits=int(r % 3 == 0))
                )  # fmt: skip


def test_subsets_tell_the_accepted_replications_from_the_others(tmp_path, capsys):
    """Uniform ranks pass (Bonferroni p > 0.01 on this seed; a uniform p is below it 1% of
    the time over 2 quantities) and keep the outer tenth near 10/101; the narrow ones
    fail with p < 1e-4 (1.2e-6 measured) and about 0.1 + 0.25 * 0.9 = 0.32 of their
    ranks outside."""
    path = tmp_path / "ranks.csv"
    _write(path)
    out = _load().main([str(path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"sbc_min_pvalue_accepted={out['accepted']['min_pvalue']}"
    acc, bad = out["accepted"], out["k > 0.7"]
    assert acc["n"] == 300 and bad["n"] == 150 and out["all"]["n"] == 450
    assert out["accepted after refits"]["n"] == 100
    assert acc["min_pvalue"] > 0.01 and abs(acc["outer"] - 10 / 101) < 0.03
    assert bad["min_pvalue"] < 1e-4 and 0.25 < bad["outer"] < 0.4
    assert (tmp_path / "sbc_ecdf_accepted.png").stat().st_size > 0


def test_a_ranks_file_without_pareto_k_is_a_one_line_error(tmp_path):
    path = tmp_path / "ranks.csv"
    path.write_text("replication,quantity,rank,L,sampler\n0,sigma,3,100,nuts\n")
    with pytest.raises(SystemExit, match="khat column"):
        _load().main([str(path)])
