"""The study engine: resume after a kill, failed cells, Dask equals local, aggregation."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from bayes_ips.study import load_config, make_cells, run_study
from bayes_ips.study.cells import TIMING_KEYS
from bayes_ips.study.store import Store
from bayes_ips.study.tasks.ips import cell_data

# ERM cells only, fixed K and one start: each cell is cheap once compiled.  M = 2
# cannot be fitted (8 observations for 9 parameters): those cells fail for real, on
# every backend.
TINY = """
[study]
name = "tiny"
seed = 7
repetitions = 2
estimators = ["erm"]
M = [2, 40, 60]
d = [2]
N = 4
n_eval_pairs = 400

[[phi]]
family = "tanh"

[erm]
restarts = 1
n_intervals = 3
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    path = d / "tiny.toml"
    path.write_text(TINY)
    return load_config(path), path


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """An uninterrupted sequential run."""
    config, _ = tiny
    out = tmp_path_factory.mktemp("reference")
    return run_study(config, out, progress=False), out


def _comparable(records):
    return {
        (r["estimator"], r["d"], r["M"], r["rep"]): {
            k: v for k, v in r.items() if k not in TIMING_KEYS and not k.endswith("_time_s")
        }
        for r in records
    }


def _record_files(out):
    recs = []
    for name in sorted(os.listdir(out / "records")):
        assert not name.startswith(".tmp-"), f"temporary file left behind: {name}"
        with open(out / "records" / name) as f:
            recs.append(json.load(f)["record"])  # every record parses: nothing corrupted
    return recs


def test_failed_cells_are_reported_and_do_not_stop_the_others(tiny, reference):
    config, _ = tiny
    result, out = reference
    # 2 repetitions x M in {40, 60} succeed; M = 2 fails twice (max_attempts = 2)
    assert len(result.records) == 4
    assert sorted(f["cell_id"] for f in result.failures) == [
        "erm_tanh-binf_d2_M2_r0",
        "erm_tanh-binf_d2_M2_r1",
    ]
    for f in result.failures:
        assert f["attempts"] == 2 and "too few" in f["error"]
    assert sorted(os.listdir(out / "failures")) == [
        "erm_tanh-binf_d2_M2_r0.json",
        "erm_tanh-binf_d2_M2_r1.json",
    ]
    ds = xr.open_dataset(out / "results.nc", engine="h5netcdf")
    assert dict(ds.sizes) == {"estimator": 1, "phi": 1, "d": 1, "M": 2, "rep": 2}
    assert np.all(np.isfinite(ds["error"].values)) and np.all(ds["error"].values > 0)
    assert "config_hash" in ds.attrs and int(ds.attrs["seed"]) == 7
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4


def test_rerun_skips_finished_cells_and_retries_failed_ones(tiny, reference, tmp_path):
    config, _ = tiny
    result, out = reference
    again = run_study(config, out, progress=False, max_attempts=1)
    assert again.n_reused == 4 and again.n_computed == 0
    assert len(again.failures) == 2 and all(f["attempts"] == 1 for f in again.failures)
    assert _comparable(again.records) == _comparable(result.records)


def test_report_only_computes_nothing_and_reports_what_is_there(tiny, reference, tmp_path):
    config, _ = tiny
    result, out = reference
    report_dir = tmp_path / "report"

    def must_not_run(spec):
        raise AssertionError("report_only ran a cell")

    again = run_study(
        config, out, progress=False, cell_fn=must_not_run, report_only=True, results_dir=report_dir
    )
    assert again.n_computed == 0 and again.n_reused == 4 and again.n_missing == 2
    assert again.failures == []
    assert _comparable(again.records) == _comparable(result.records)
    ds = xr.open_dataset(report_dir / "results.nc", engine="h5netcdf")
    assert dict(ds.sizes)["M"] == 2  # M = 2 has no record: not in the aggregate
    empty = run_study(config, tmp_path / "empty", progress=False, report_only=True)
    assert empty.records == [] and empty.n_missing == 6
    assert not (tmp_path / "empty" / "results.nc").exists()


@pytest.mark.slow  # ~7 s (fast-tier budget; resumption is also what every sliced study does)
def test_kill_mid_run_then_rerun_gives_exactly_the_uninterrupted_records(tiny, reference, tmp_path):
    config, path = tiny
    ref, _ = reference
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bayes_ips.cli", "study", str(path), "--out-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (out / "records").is_dir() and len(os.listdir(out / "records")) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    n_before = len(_record_files(out))
    assert 1 <= n_before < 4
    resumed = run_study(config, out, progress=False)
    assert resumed.n_reused == n_before
    assert not any(n.startswith(".tmp-") for n in os.listdir(out / "records"))
    files = _record_files(out)
    assert len(files) == 4  # nothing lost, nothing duplicated
    assert _comparable(files) == _comparable(ref.records)
    assert _comparable(resumed.records) == _comparable(ref.records)


# slow: a local Dask cluster of 2 workers, each importing JAX and compiling the ERM cells
# (~17 s).  The fast tier checks the process pool's records against the same reference
# (below) and the Dask backend itself on cheap cells (test_backends: its cell timeout).
@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_records(tiny, reference, tmp_path):
    pytest.importorskip("distributed")
    config, _ = tiny
    ref, _ = reference
    res = run_study(config, tmp_path / "dask", workers=2, progress=False)
    assert res.backend == "dask"
    assert _comparable(res.records) == _comparable(ref.records)
    assert len(res.failures) == 2


@pytest.mark.slow  # fast-tier budget (5 min on 2 cores); CI runs it
def test_process_pool_gives_the_same_records(tiny, reference, tmp_path):
    config, _ = tiny
    ref, _ = reference
    res = run_study(config, tmp_path / "pool", processes=2, progress=False)
    assert res.backend == "processes"
    assert _comparable(res.records) == _comparable(ref.records)


def test_stale_or_corrupt_records_are_recomputed(tiny, reference, tmp_path):
    config, _ = tiny
    ref, _ = reference
    out = tmp_path / "stale"
    cells = [c for c in make_cells(config) if c.M == 40 and c.rep == 0]
    run_study(config, out, progress=False, cells=cells)
    rec_path = out / "records" / f"{cells[0].id}.json"
    rec_path.write_text("{not json")  # corrupted by something else
    res = run_study(config, out, progress=False, cells=cells)
    assert res.n_reused == 0 and res.n_computed == 1
    assert _comparable(res.records) == {
        k: v for k, v in _comparable(ref.records).items() if k[2] == 40 and k[3] == 0
    }
    doc = json.loads(rec_path.read_text())
    doc["spec_hash"] = "0" * 16  # a record made under other settings is not reused
    rec_path.write_text(json.dumps(doc))
    assert Store(out).load(cells[0]) is None


def test_estimators_see_the_same_data_and_truth_is_shared_across_m(tiny):
    config, _ = tiny
    from dataclasses import replace

    both = replace(config, estimators=("erm", "bayes_pm"))
    cells = {(c.estimator, c.M, c.rep): c for c in make_cells(both)}
    t1, X1, Y1, _ = cell_data(cells[("erm", 40, 0)].spec)
    t2, X2, Y2, _ = cell_data(cells[("bayes_pm", 40, 0)].spec)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(Y1, Y2)
    t3, X3, _, _ = cell_data(cells[("erm", 60, 1)].spec)
    np.testing.assert_array_equal(t1.A, t3.A)  # one truth per (phi, d)
    assert X3.shape == (60, 4, 2) and not np.allclose(X1, X3[:40])
