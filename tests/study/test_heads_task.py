"""The heads task: the IPS grid crossed with numbers of heads; H = 1 is the IPS cell."""

import math

import numpy as np
import pytest

from bayes_ips.diagnostics import IS_ESS_MIN, khat_limit
from bayes_ips.errors import InputError
from bayes_ips.study.config import parse_config
from bayes_ips.study.engine import StudyResult
from bayes_ips.study.tasks import heads, ips

RAW = {
    "study": {
        "task": "heads",
        "name": "h",
        "heads": [2, 1],
        "estimators": ["erm"],
        "M": [60, 120],
        "d": [3],
        "N": 4,
        "repetitions": 2,
        "n_eval_pairs": 500,
    },
    "phi": [{"family": "tanh"}],
    "erm": {"restarts": 1, "n_intervals": 4},
}


def _raw(**study):
    return {**RAW, "study": {**RAW["study"], **study}}


def test_parse_and_cells():
    cfg = parse_config(RAW)
    assert cfg.task == "heads" and cfg.heads == (1, 2) and cfg.n_cells == 8
    base = ips.parse({**RAW, "study": {k: v for k, v in RAW["study"].items() if k != "heads"}})
    cells = heads.make_cells(cfg)
    assert len(cells) == 8 == len({c.id for c in cells}) == len({c.hash for c in cells})
    one = [c for c in cells if c.coords["heads"] == 1]
    # H = 1 cells are the IPS cells with the head count added (same data keys, same fit)
    for c, b in zip(one, ips.make_cells(base), strict=True):
        assert {k: v for k, v in c.spec.items() if k not in ("task", "heads")} == {
            k: v for k, v in b.spec.items() if k != "task"
        }
    assert heads.parse(_raw(heads=[1])).heads == (1,)
    assert parse_config(_raw(heads=[1])).to_dict()["heads"] == [1]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"heads": [0]}, "study.heads"),
        ({"heads": "two"}, "study.heads"),
        ({"d": [1, 3]}, "not distinct at d = 1"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_configs_are_refused(change, match):
    with pytest.raises(InputError, match=match):
        parse_config(_raw(**change))


def test_known_a_is_refused_in_a_heads_study():
    raw = {**RAW, "erm": {**RAW["erm"], "known_a": True}}
    with pytest.raises(InputError, match="known_a is for the single-head task"):
        parse_config(raw)


def test_multi_head_posterior_methods():
    """auto, is and nuts serve multi-head cells; imh (no multi-head sampler) is refused."""
    raw = {**_raw(estimators=["erm", "bayes_pm"]), "bayes_pm": {"method": "imh"}}
    with pytest.raises(InputError, match="more than one head take method"):
        parse_config(raw)
    for method in ("auto", "is", "nuts"):
        assert parse_config({**raw, "bayes_pm": {"method": method}}).n_cells == 16


@pytest.mark.slow  # ~40 s: a two-head ERM fit and the posterior (auto: Laplace-PSIS)
def test_a_two_head_posterior_cell():
    raw = _raw(estimators=["bayes_pm"], heads=[2], M=[150], repetitions=1)
    raw["bayes_pm"] = {"chains": 2, "warmup": 60, "draws": 60, "n_band_pairs": 200}
    (cell,) = heads.make_cells(parse_config(raw))
    rec = heads.run_cell(cell.spec)
    assert rec["heads"] == 2 and rec["sampler"] in ("is", "nuts") and rec["kind"] == "bayes_pm"
    # the sampler's checks are recorded as the IPS task records them
    if rec["sampler"] == "is":
        assert rec["khat"] <= khat_limit(rec["n_proposals"]) and rec["is_ess"] >= IS_ESS_MIN
    else:
        assert "fallback" in rec and rec["divergences"] >= 0
    assert rec["error"] > 0 and rec["erm_error"] > 0 and 0 <= rec["band_coverage"] <= 1
    assert rec["head_cos_min"] > 0.9 and math.isfinite(rec["rhat_max"])
    # the default basis: chosen by the marginal likelihood, recorded as the IPS task's
    assert rec["basis"] == "evidence" and rec["basis_time_s"] > 0
    assert rec["uniform_weight"] in (0.0, 0.5, 1.0) and rec["K"] >= 8 and rec["erm_K"] >= 2


def test_posterior_basis_reaches_the_multi_head_cells():
    """``[bayes_pm] basis`` is in the H >= 2 cells' settings (``erm``, the legacy basis,
    left out of the spec as the IPS task leaves it out), which ``run_cell`` passes on."""
    raw = _raw(estimators=["bayes_pm"], heads=[2], M=[150], repetitions=1)
    for basis, want in (("evidence", "evidence"), ("erm", None)):
        raw["bayes_pm"] = {"basis": basis}
        (cell,) = heads.make_cells(parse_config(raw))
        assert cell.spec["settings"]["bayes"].get("basis") == want


@pytest.mark.slow  # two ERM fits (~8 s); the fast tier checks the specs are the IPS specs
def test_one_head_cell_is_the_ips_cell_number_for_number():
    cfg = parse_config(_raw(heads=[1], M=[60], repetitions=1))
    (cell,) = heads.make_cells(cfg)
    rec = heads.run_cell(cell.spec)
    spec = {k: v for k, v in cell.spec.items() if k != "heads"}
    ref = ips.run_cell({**spec, "task": "ips"})
    for k in ("error", "error_se", "K", "sigma_hat", "c_H"):
        assert rec[k] == ref[k]
    assert rec["heads"] == 1 and rec["task"] == "heads"


def _records():
    """Synthetic records: H = 1 falls as M^-1, H = 2 as M^-1 at three times the level."""
    recs = []
    for H, level in ((1, 1.0), (2, 3.0)):
        for M in (100, 200, 400, 800):
            for rep in range(3):
                e = level / M * (1 + 0.05 * rep)
                recs.append({
                    "task": "heads", "estimator": "erm", "kind": "erm", "family": "tanh",
                    "beta": math.inf, "d": 5, "heads": H, "M": M, "rep": rep, "N": 6,
                    "rank": 1, "seed": 0, "theory_holds": None, "theory_rhs": None,
                    "error": e, "head_cos_min": 0.99 if H > 1 else None,
                })  # fmt: skip
    return recs


def test_dataset_and_report_have_a_line_per_head_count(tmp_path):
    ds = heads.to_dataset(_records())
    assert list(ds["phi"].values) == ["tanh, H=1", "tanh, H=2"]
    assert list(ds["heads"].values) == [1, 2] and np.all(np.isinf(ds["beta"].values))
    cfg = parse_config(_raw(d=[5], M=[100, 200, 400, 800], repetitions=3))
    result = StudyResult(_records(), [], 0, 24, str(tmp_path), "local", 0.0)
    out = heads.report(ds, str(tmp_path), cfg, result, "study")
    slopes = {r["phi"]: r["slope"] for r in out["rows"]}
    assert slopes["tanh, H=1"] == pytest.approx(-1.0, abs=1e-9)
    assert slopes["tanh, H=2"] == pytest.approx(-1.0, abs=1e-9)
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# h: heads analysis") and "(24 in the grid)" in summary
    # levels at the geometric mean M (283): 3x apart, as built
    rows = [line for line in summary.splitlines() if line.startswith("| erm | tanh | 5 |")]
    levels = [float(line.split("|")[6]) for line in rows]
    assert levels[1] / levels[0] == pytest.approx(3.0, rel=1e-6)
    assert (tmp_path / "rates.png").exists()
