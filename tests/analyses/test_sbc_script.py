"""analyses/sbc.py runs end to end on a small design: outputs, ranks, last line, seeds."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "analyses" / "sbc.py"


def _load():
    spec = importlib.util.spec_from_file_location("sbc_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _run(mod, out, reps):
    argv = ["--method", "imh", "--replications", str(reps), "--seed", "3", "--out-dir", str(out)]
    argv += ["--chains", "2", "--draws", "40", "--warmup", "20", "--L", "20", "--no-progress"]
    return mod.main(mod.parser().parse_args(argv))


@pytest.mark.slow  # ~80 s of CPU, nearly all compilation (ERM, Laplace, proposals, Predictive)
def test_sbc_script_small_run(tmp_path, capsys):
    mod = _load()
    summary = _run(mod, tmp_path / "a", 8)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("sbc_min_pvalue=")
    p = float(lines[-1].split("=", 1)[1])
    assert 0.0 <= p <= 1.0 and p == summary["sbc_min_pvalue"]
    for name in ("ranks.csv", "summary.json", "sbc_ecdf.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    rows = _rows(tmp_path / "a" / "ranks.csv")
    assert len(rows) == 8 * 10  # 4 pairs, sigma, tau, 4 entries of A
    assert all(0 <= int(r["rank"]) <= int(r["L"]) == 20 for r in rows)
    assert {r["sampler"] for r in rows} == {"imh"}
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert saved["seed"] == 3 and saved["config"]["method"] == "imh"
    # same seed, same ranks (replication r uses the r-th key, so a shorter run is a prefix)
    _run(mod, tmp_path / "b", 2)
    again = _rows(tmp_path / "b" / "ranks.csv")
    key = lambda r: (r["replication"], r["quantity"], r["rank"], r["sampler"])  # noqa: E731
    assert [key(r) for r in again] == [key(r) for r in rows[: len(again)]]


@pytest.mark.slow  # ~60 s of CPU: NUTS on the factors' prior, then the rank-2 posterior's programs
def test_sbc_script_at_rank_two_records_refits_and_pareto_k(tmp_path, capsys):
    mod = _load()
    argv = ["--method", "is", "--rank", "2", "--replications", "3", "--seed", "0"]
    argv += ["--out-dir", str(tmp_path), "--chains", "2", "--draws", "40", "--L", "20"]
    summary = mod.main(mod.parser().parse_args(argv + ["--no-progress"]))
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("sbc_min_pvalue=")
    assert summary["design"]["rank"] == 2 and summary["samplers"] == {"is": 3}
    rows = _rows(tmp_path / "ranks.csv")
    assert len(rows) == 3 * 10  # 4 pairs, sigma, tau, 4 entries of A
    per_rep = {r["replication"]: (float(r["khat"]), int(r["refits"])) for r in rows}
    assert summary["refitted"] == sum(n > 0 for _, n in per_rep.values())
    assert summary["khat_above_max"] == sum(k > 0.7 for k, _ in per_rep.values())
