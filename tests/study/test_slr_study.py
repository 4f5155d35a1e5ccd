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
    assert dict(ds.sizes) == {"estimator": 2, "attention": 1, "gamma": 1, "d": 1, "M": 1, "rep": 2}
    # the excess risk is E[(f - f_Bayes)^2] >= 0 and the risk exceeds the Bayes risk by it
    ex, risk, br = (ds[k].values for k in ("excess_risk", "risk", "bayes_risk"))
    assert np.all(ex >= 0)
    assert np.all(np.abs(risk - br - ex) < 5 * ds["risk_se"].values + 1e-12)
    assert np.all(ds["divergences"].sel(estimator="bayes_pm").values >= 0)
    assert "| pgd | erf | 0.7071 | 4 | 80 |" in (out / "summary.md").read_text()
    assert "single-location regression" in capsys.readouterr().out


# ------------------------------------------------------------- the attention axis

AXES = TINY.replace(
    "d = [4]\n", 'd = [4]\nattention = ["erf", "softmax", "linear"]\ngamma = [1, 0.5]\n'
)


def _cfg(text, tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load_config(p)


def test_attention_and_gamma_axes_make_cells(tmp_path):
    cfg = _cfg(AXES, tmp_path)
    assert cfg.attention == ("erf", "softmax", "linear") and cfg.gamma == (0.5, 1.0)
    cells = make_cells(cfg)
    assert len(cells) == cfg.n_cells == 2 * 3 * 2 * 2  # estimators, attentions, gammas, reps
    assert len({c.id for c in cells}) == len(cells) and len({c.hash for c in cells}) == len(cells)
    by = {(c.estimator, c.attention, c.gamma, c.rep): c for c in cells}
    # a spec names its attention unless it is erf; an id its gamma unless it is sqrt(1/2)
    assert "attention" not in by[("pgd", "erf", 1.0, 0)].spec
    assert by[("bayes_pm", "softmax", 0.5, 1)].spec["attention"] == "softmax"
    assert by[("pgd", "linear", 0.5, 0)].id == "pgd_slr-binf-linear_g0.5_d4_M80_r0"
    assert by[("pgd", "erf", 1.0, 1)].id == "pgd_slr-binf_g1_d4_M80_r1"
    # the attentions see the same data; the gammas the same draws under their own law
    _, X1, Y1, _ = slr_cell_data(by[("pgd", "erf", 1.0, 0)].spec)
    _, X2, Y2, _ = slr_cell_data(by[("bayes_pm", "linear", 1.0, 0)].spec)
    _, X3, _, _ = slr_cell_data(by[("pgd", "erf", 0.5, 0)].spec)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(Y1, Y2)
    assert not np.allclose(X1, X3)


def test_legacy_slr_config_keeps_its_hashes(tmp_path):
    """analyses/configs/slr.toml: the config hash of its committed study.json, and the
    cell ids and spec hashes of the code before the axes (a digest taken then)."""
    import hashlib
    import json

    from bayes_ips.study.config import config_hash

    root = Path(__file__).resolve().parents[2] / "analyses"
    cfg = load_config(root / "configs" / "slr.toml")
    committed = json.loads((root / "results" / "slr" / "study.json").read_text())
    assert config_hash(cfg) == committed["config_hash"] == "c9034c082bd017c6"
    cells = make_cells(cfg)
    digest = hashlib.sha256("".join(c.id + c.hash for c in cells).encode()).hexdigest()[:16]
    assert digest == "6241ee9de35c53cf"
    # naming the defaults explicitly is the same study
    st = (root / "configs" / "slr.toml").read_text()
    explicit = st.replace(
        "gamma = 0.7071067811865476", 'gamma = [0.7071067811865476]\nattention = ["erf"]'
    )
    assert explicit != st
    cfg2 = _cfg(explicit, tmp_path)
    assert config_hash(cfg2) == config_hash(cfg)
    assert [(c.id, c.hash) for c in make_cells(cfg2)] == [(c.id, c.hash) for c in cells]
    # every committed result row is a cell of the config
    import csv

    with open(root / "results" / "slr" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    ids = {c.id for c in cells}
    assert len(rows) >= 56  # the cells run so far
    assert all(f"{r['estimator']}_slr-binf_d{r['d']}_M{r['M']}_r{r['rep']}" in ids for r in rows)


def test_only_selects_an_attention(tmp_path):
    from bayes_ips.study.cells import parse_only, select_cells
    from bayes_ips.study.tasks import slr

    cells = make_cells(_cfg(AXES, tmp_path))
    only = parse_only(["attention=softmax", "gamma=1"], slr.selectable)
    picked = select_cells(cells, only)
    assert len(picked) == 4 and {(c.attention, c.gamma) for c in picked} == {("softmax", 1.0)}
    assert all(c.spec["attention"] == "softmax" and c.spec["gamma"] == 1.0 for c in picked)
    with pytest.raises(InputError, match="^--only attention: unknown attention 'sigmoid'; choose"):
        parse_only(["attention=sigmoid"], slr.selectable)


@pytest.mark.parametrize(
    "change, text",
    [
        (
            ('"linear"]', '"sigmoid"]'),
            "study.attention entries must be one of erf, softmax, linear; got 'sigmoid'",
        ),
        (
            ('attention = ["erf", "softmax", "linear"]', 'attention = "softmax"'),
            "study.attention must be a non-empty list",
        ),
        (('"softmax", "linear"]', '"softmax", "erf"]'), "study.attention has repeated values"),
        (("gamma = [1, 0.5]", "gamma = [1, 1.0]"), "study.gamma has repeated values"),
        (("gamma = [1, 0.5]", "gamma = [1, 0]"), "study.gamma entries must be > 0.0"),
        (
            ("steps = 300", 'steps = 300\nattention = "softmax"'),
            "[pgd] attention: the attention is an axis of the study",
        ),
    ],
)
def test_bad_attention_configs(tmp_path, change, text):
    assert change[0] in AXES
    with pytest.raises(InputError) as e:
        _cfg(AXES.replace(*change), tmp_path)
    msg = str(e.value)
    assert text in msg and "\n" not in msg


def test_an_attention_sub_table_overrides_settings_for_its_cells_only(tmp_path):
    """``[bayes_pm.softmax]``: softmax's posterior cells take its keys over the shared
    ones; every other cell keeps the spec (and hash) it had without the sub-table."""
    plain = make_cells(_cfg(AXES, tmp_path))
    text = AXES + '\n[bayes_pm.softmax]\nlambda_from = "pgd"\ndraws = 80\n'
    cfg = _cfg(text, tmp_path)
    cells = make_cells(cfg)
    assert [c.id for c in cells] == [c.id for c in plain]
    changed = {c.id for c, p in zip(cells, plain, strict=True) if c.hash != p.hash}
    expected = {c.id for c in cells if (c.estimator, c.attention) == ("bayes_pm", "softmax")}
    assert changed == expected and len(expected) == 4
    for c in cells:
        if c.id in expected:
            bayes = c.spec["settings"]["bayes"]
            assert bayes == {
                "chains": 2,
                "warmup": 60,
                "draws": 80,
                "dense_mass": False,
                "lambda_from": "pgd",
            }
            assert c.spec["settings"]["pgd"] == {"steps": 300}


@pytest.mark.parametrize(
    "table, text",
    [
        (
            "[bayes_pm.sigmoid]\nchains = 2",
            "[bayes_pm.sigmoid]: a sub-table must name an attention of the study (erf, softmax, "
            "linear)",
        ),
        ("[bayes_pm.softmax]\nchainz = 2", "unknown key 'chainz' in [bayes_pm.softmax]"),
        (
            '[bayes_pm.softmax]\nlambda_from = "mle"',
            "[bayes_pm.softmax] (attention softmax): unknown lambda_from 'mle'",
        ),
        ('[bayes_pm.softmax]\nattention = "erf"', "the table's name is its attention"),
    ],
)
def test_bad_attention_sub_tables(tmp_path, table, text):
    with pytest.raises(InputError) as e:
        _cfg(AXES + "\n" + table + "\n", tmp_path)
    assert text in str(e.value) and "\n" not in str(e.value)
    # an attention that exists but is not an axis of this study is refused too
    erf_only = AXES.replace('attention = ["erf", "softmax", "linear"]', 'attention = ["erf"]')
    with pytest.raises(
        InputError,
        match=r"c\.toml: \[bayes_pm.linear\]: a sub-table must name an "
        r"attention of the study \(erf\)",
    ):
        _cfg(erf_only + "\n[bayes_pm.linear]\nchains = 2\n", tmp_path)


def _record(est, att, gamma, rep, excess, legacy=False):
    rec = {
        "task": "slr",
        "estimator": est,
        "d": 4,
        "M": 80,
        "rep": rep,
        "risk": 0.1 + excess,
        "bayes_risk": 0.1,
        "excess_risk": excess,
        "abs_kappa": 0.9,
        "abs_nu": 0.95,
    }
    return rec if legacy else {**rec, "attention": att, "gamma": gamma}


def test_report_has_a_row_and_a_curve_per_attention(tmp_path):
    """From records (no fitting): the Dataset, summary rows and figure curves per attention,
    and a record from before the axes (no attention, no gamma) at erf, sqrt(1/2)."""
    from bayes_ips.single_location.simulate import DEFAULT_GAMMA
    from bayes_ips.study.tasks import slr

    excess = {"erf": 0.3, "softmax": 0.05, "linear": 0.4}
    records = [
        _record(est, att, DEFAULT_GAMMA, rep, excess[att] * (1 + 0.1 * rep))
        for est in ("pgd", "bayes_pm")
        for att in ("softmax", "linear")
        for rep in (0, 1)
    ]
    records += [
        _record(est, None, None, rep, 0.3 * (1 + 0.1 * rep), legacy=True)
        for est in ("pgd", "bayes_pm")
        for rep in (0, 1)
    ]
    ds = slr.to_dataset(records)
    assert dict(ds.sizes) == {"estimator": 2, "attention": 3, "gamma": 1, "d": 1, "M": 1, "rep": 2}
    assert list(ds["estimator"].values) == ["pgd", "bayes_pm"]
    assert float(ds["gamma"].values[0]) == DEFAULT_GAMMA
    sel = ds["excess_risk"].sel(estimator="pgd", d=4, M=80, gamma=DEFAULT_GAMMA)
    np.testing.assert_allclose(sel.sel(attention="erf").values, [0.3, 0.33])
    np.testing.assert_allclose(sel.sel(attention="softmax").values, [0.05, 0.055])
    table = slr.slr_table(ds)
    for att in ("erf", "softmax", "linear"):
        for est in ("pgd", "bayes_pm"):
            assert (
                sum(
                    line.startswith(f"| {est} | {att} | 0.7071 | 4 | 80 | 2 |")
                    for line in table.splitlines()
                )
                == 1
            )
    assert (
        "| pgd | softmax | 0.7071 | 4 | 80 | 2 | 0.1525 | 0.1 | 0.0525 | 0.525 | 0.900 | "
        "0.950 | - | - | - |" in table
    )
    fig = slr.plot_slr(ds)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert sorted(labels[:-1]) == sorted(
        f"{e}, {a}" for e in ("PGD", "posterior mean") for a in ("erf", "linear", "softmax")
    )
    assert labels[-1] == "Bayes risk 0.1"
    np.testing.assert_allclose(ax.get_lines()[-1].get_ydata(), [0.1, 0.1])
    assert len(ax.collections) == 6  # one band per curve
    # the CSV holds a legacy record too (blank attention, sorted after the others)
    from bayes_ips.study.store import write_csv

    write_csv(records, tmp_path / "r.csv", head=slr.coordinates)
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("estimator,attention,gamma,d,M,rep,")
    assert lines[1].startswith("bayes_pm,linear,") and lines[-1].startswith("pgd,,,4,80,1,")


def test_the_table_shows_the_worst_chains_of_the_posterior_cells():
    """R-hat max and min bulk ESS over the repetitions, divergences summed: the worst
    repetition shows even where the median excess risk looks fine."""
    from bayes_ips.study.tasks import slr

    records = [_record("pgd", "softmax", 1.0, rep, 0.01) for rep in (0, 1, 2)]
    for rep, (rhat, ess, div) in enumerate([(1.004, 300.0, 0), (1.184, 8.4, 12), (1.02, 90.0, 1)]):
        rec = _record("bayes_pm", "softmax", 1.0, rep, 0.02)
        records.append({**rec, "rhat_max": rhat, "ess_bulk_min": ess, "divergences": div})
    table = slr.slr_table(slr.to_dataset(records))
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    assert rows["bayes_pm"].endswith("| 0.900 | 0.950 | 1.184 | 8 | 13 |")
    assert rows["pgd"].endswith("| 0.900 | 0.950 | - | - | - |")


def test_a_cell_fits_with_its_attention(monkeypatch):
    """run_cell hands the spec's attention to PGD and records it (one tiny softmax cell)."""
    import bayes_ips.single_location as sl
    from bayes_ips.study.tasks import slr

    seen = []
    real = sl.fit_pgd

    def spy(key, X, Y, config):
        seen.append(config)
        return real(key, X, Y, config)

    monkeypatch.setattr(sl, "fit_pgd", spy)
    spec = {
        "task": "slr",
        "seed": 0,
        "L": 3,
        "gamma": 1.0,
        "noise": 0.1,
        "n_eval": 500,
        "estimator": "pgd",
        "d": 4,
        "M": 40,
        "rep": 0,
        "settings": {"steps": 50},
        "attention": "softmax",
    }
    rec = slr.run_cell(spec)
    assert [c.attention for c in seen] == ["softmax"] and seen[0].steps == 50
    assert (rec["attention"], rec["gamma"], rec["estimator"]) == ("softmax", 1.0, "pgd")
    assert 0 <= rec["excess_risk"] and rec["risk"] > rec["bayes_risk"] > 0
    # softmax's default lambda (1, refitted on its own grid), not erf's 0.1
    assert seen[0].lambda0 == 1.0


# slow: PGD on 6 cells and the sampler on 2, compiled in this process.  The fast tier
# covers the cells, the selection, the report and one cell's attention (above).
@pytest.mark.slow
def test_attention_study_end_to_end(tmp_path):
    from bayes_ips.study.analysis import run_analysis

    text = AXES.replace("repetitions = 2", "repetitions = 1").replace(
        "gamma = [1, 0.5]", "gamma = [1]"
    )
    p = tmp_path / "att.toml"
    p.write_text(text)
    out = tmp_path / "out"
    res = run_analysis(
        str(p), str(out), progress=False, attempts=1, only=["attention=softmax,linear"]
    )
    assert not res["result"].failures and len(res["result"].records) == 4
    ds = xr.open_dataset(out / "results.nc", engine="h5netcdf")
    assert dict(ds.sizes) == {"estimator": 2, "attention": 2, "gamma": 1, "d": 1, "M": 1, "rep": 1}
    assert np.all(ds["excess_risk"].values >= 0)
    summary = (out / "summary.md").read_text()
    assert (
        "| pgd | softmax | 1 | 4 | 80 | 1 |" in summary and "| bayes_pm | linear | 1 |" in summary
    )
    assert (out / "slr_risk.png").stat().st_size > 0


def test_the_attention_config():
    """analyses/configs/slr_attention.toml: the grid of issue 16, sharing slr.toml's erf cells."""
    configs = Path(__file__).resolve().parents[2] / "analyses" / "configs"
    cfg = load_config(configs / "slr_attention.toml")
    assert cfg.attention == ("erf", "softmax", "linear") and cfg.d == (50, 200)
    np.testing.assert_allclose(np.square(cfg.gamma), [0.5, 1.0], rtol=1e-15)
    assert cfg.estimators == ("pgd", "bayes_pm") and cfg.n_cells == 288
    legacy = {c.id: c.hash for c in make_cells(load_config(configs / "slr.toml"))}
    shared = [c for c in make_cells(cfg) if legacy.get(c.id) == c.hash]
    assert len(shared) == 24 and {(c.attention, c.d) for c in shared} == {("erf", 50)}
    # softmax's posterior cells fix lambda at the PGD fit's; no other cell does
    fixed = {
        c.attention
        for c in make_cells(cfg)
        if c.estimator == "bayes_pm" and c.spec["settings"]["bayes"].get("lambda_from") == "pgd"
    }
    assert fixed == {"softmax"}
