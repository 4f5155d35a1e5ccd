"""Single-location regression as a study task: config, cells, records, the analysis script."""

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bayes_ips.errors import InputError
from bayes_ips.study import load_config, make_cells
from bayes_ips.study.tasks.slr import slr_cell_data

TINY = """
[study]
task = "slr"
name = "tiny_slr"
seed = 1
repetitions = 2
estimators = ["pgd", "bayes_pm"]
M = [80]
d = [4]
L = 3
n_eval = 2000

[pgd]
steps = 300

[bayes_pm]
chains = 2
warmup = 60
draws = 60
dense_mass = false
"""


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("slr") / "tiny.toml"
    p.write_text(TINY)
    return p


def test_config_and_cells(config_path):
    cfg = load_config(config_path)
    assert cfg.task == "slr" and cfg.n_cells == 4 and cfg.L == 3
    cells = make_cells(cfg)
    assert [c.id for c in cells][:2] == ["pgd_slr-binf_d4_M80_r0", "pgd_slr-binf_d4_M80_r1"]
    by = {(c.estimator, c.rep): c for c in cells}
    t1, X1, Y1, _ = slr_cell_data(by[("pgd", 0)].spec)
    t2, X2, Y2, _ = slr_cell_data(by[("bayes_pm", 0)].spec)
    np.testing.assert_array_equal(X1, X2)  # both estimators see the same data
    np.testing.assert_array_equal(Y1, Y2)
    _, X3, _, _ = slr_cell_data(by[("pgd", 1)].spec)
    assert X1.shape == (80, 3, 4) and not np.allclose(X1, X3)
    np.testing.assert_array_equal(t1.k, slr_cell_data(by[("pgd", 1)].spec)[0].k)


@pytest.mark.parametrize(
    "change, text",
    [
        (("L = 3", "L = 0"), "study.L must be an integer >= 1"),
        (("steps = 300", "stepz = 300"), "unknown key 'stepz' in [pgd]"),
        (("chains = 2", "chains = 0"), "[bayes_pm]"),
        (('estimators = ["pgd", "bayes_pm"]', 'estimators = ["erm"]'), "must be one of"),
        (("d = [4]", "d = [1]"), "study.d entries must be an integer >= 2"),
        (('task = "slr"', 'task = "xyz"'), "study.task must be"),
    ],
)
def test_bad_slr_configs(tmp_path, change, text):
    p = tmp_path / "bad.toml"
    p.write_text(TINY.replace(*change))
    with pytest.raises(InputError) as e:
        load_config(p)
    assert text in str(e.value)


# slow: PGD and the sampler on 4 cells, compiled in this process (~16 s).  The fast tier
# covers the task's config, cells and data (above) and both estimators in
# tests/single_location; the script's outputs are checked here only.
@pytest.mark.slow
def test_single_location_script_end_to_end(config_path, tmp_path, capsys):
    path = Path(__file__).resolve().parents[2] / "analyses" / "single_location.py"
    spec = importlib.util.spec_from_file_location("single_location_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "out"
    args = argparse.Namespace(
        config=str(config_path),
        out_dir=str(out),
        study_dir=None,
        processes=None,
        workers=None,
        scheduler=None,
        attempts=1,
        quiet=True,
        only=None,
        report_only=False,
        cell_timeout=None,
    )
    res = mod.main(args)
    assert not res["result"].failures and len(res["result"].records) == 4
    for name in ("slr_risk.png", "summary.md", "results.nc", "results.csv"):
        assert (out / name).stat().st_size > 0
    ds = xr.open_dataset(out / "results.nc", engine="h5netcdf")
    assert dict(ds.sizes) == {"estimator": 2, "d": 1, "M": 1, "rep": 2}
    # the excess risk is E[(f - f_Bayes)^2] >= 0 and the risk exceeds the Bayes risk by it
    ex, risk, br = (ds[k].values for k in ("excess_risk", "risk", "bayes_risk"))
    assert np.all(ex >= 0)
    assert np.all(np.abs(risk - br - ex) < 5 * ds["risk_se"].values + 1e-12)
    assert np.all(ds["divergences"].sel(estimator="bayes_pm").values >= 0)
    assert "| pgd | 4 | 80 |" in (out / "summary.md").read_text()
    assert "single-location regression" in capsys.readouterr().out
