"""The IPS report: named estimators told apart, slopes beside the predicted exponents."""

import itertools
import math

import matplotlib
import pytest

from bayes_ips.study.config import parse_config
from bayes_ips.study.engine import StudyResult
from bayes_ips.study.report import final_table, prediction_rows, write_ips_report
from bayes_ips.study.slopes import predicted_slopes, singularity_slope
from bayes_ips.study.tasks.ips import to_dataset

matplotlib.use("Agg")

EXACT = 1e-12  # closed forms


def test_predicted_slopes():
    # SCIENCE.md: -0.75, -0.83, -0.875 for beta = 1, 2, 3 (minimax -0.67, -0.80, -0.86)
    assert [singularity_slope(b) for b in (1, 2, 3)] == pytest.approx(
        [-0.75, -5 / 6, -0.875], abs=EXACT
    )
    assert predicted_slopes("bspline", 2) == pytest.approx(
        {"minimax": -0.8, "singularity": -5 / 6}, abs=EXACT
    )
    assert predicted_slopes("holder", 1.5)["singularity"] == pytest.approx(-0.8, abs=EXACT)
    rough = predicted_slopes("weierstrass", 0.5)  # rough everywhere: minimax only
    assert rough["minimax"] == pytest.approx(-0.5, abs=EXACT) and math.isnan(rough["singularity"])
    assert predicted_slopes("tanh", math.inf)["minimax"] == -1.0


# Synthetic records, error = M^slope exactly (so each fitted slope is that slope): erm_gcv
# follows the isolated-singularity exponent on bspline phi*, erm_theory the minimax one,
# and the posterior mean shares erm_gcv's fit (its [erm] settings) at half the error.
PHIS = {"bspline": 2.0, "weierstrass": 1.5}
SLOPES = {
    ("erm_gcv", "bspline"): -5 / 6,
    ("erm_theory", "bspline"): -0.8,
    ("erm_gcv", "weierstrass"): -0.75,
    ("erm_theory", "weierstrass"): -0.75,
    ("bayes_pm", "bspline"): -5 / 6,
    ("bayes_pm", "weierstrass"): -0.75,
}
KINDS = {"erm_gcv": "erm", "erm_theory": "erm", "bayes_pm": "bayes_pm"}
RAW = {
    "study": {
        "name": "synthetic",
        "estimators": list(KINDS),
        "M": [100, 400, 1600],
        "d": [1, 5],
        "repetitions": 2,
        "error_rse": 0.05,
    },
    "phi": [{"family": f, "beta": b} for f, b in PHIS.items()],
    "erm_gcv": {"kind": "erm"},
    "erm_theory": {"kind": "erm", "k_rule": "theory"},
}


def _records():
    out = []
    for (est, kind), (fam, beta), d, M, rep in itertools.product(
        KINDS.items(), PHIS.items(), (1, 5), (100, 400, 1600), range(2)
    ):
        err = M ** SLOPES[est, fam] * (0.5 if kind == "bayes_pm" else 1.0)
        rec = {
            "estimator": est,
            "kind": kind,
            "family": fam,
            "beta": beta,
            "d": d,
            "M": M,
            "rep": rep,
            "N": 6,
            "rank": 1,
            "error": err,
            "error_se": 0.04 * err,
            "error_n_pairs": 20000 * (1 + rep),
            "error_rse_met": not (M == 1600 and rep == 1),  # 12 cells miss the target
            "theory_holds": d == 1,
        }
        if kind == "bayes_pm":
            rec.update(band_width=M**-0.4, band_coverage=0.9)
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    records = _records()
    ds = to_dataset(records)
    result = StudyResult(records, [], 0, len(records), str(out), "synthetic", 0.0)
    return ds, write_ips_report(ds, str(out), parse_config(RAW), result, "minimax"), out


def test_the_dataset_orders_estimators_and_knows_their_kinds(report):
    ds, _, _ = report
    assert ds["estimator"].values.tolist() == ["erm_gcv", "erm_theory", "bayes_pm"]
    assert ds["kind"].values.tolist() == ["erm", "erm", "bayes_pm"]
    assert ds["phi"].values.tolist() == ["bspline(beta=2)", "weierstrass(beta=1.5)"]
    assert ds["family"].values.tolist() == ["bspline", "weierstrass"]


def test_minimax_report_shows_slopes_beside_both_predictions(report):
    _, out, folder = report
    pred = {(r["estimator"], r["family"], r["d"]): r for r in out["prediction_rows"]}
    assert len(pred) == 12  # estimator x phi x d
    for (est, fam, _), r in pred.items():
        assert r["slope"] == pytest.approx(SLOPES[est, fam], abs=1e-9)
        assert r["minimax"] == pytest.approx(-2 * PHIS[fam] / (2 * PHIS[fam] + 1), abs=EXACT)
    assert pred["erm_gcv", "bspline", 5]["nearer"] == "singularity"
    assert pred["erm_theory", "bspline", 5]["nearer"] == "minimax"
    assert math.isnan(pred["erm_gcv", "weierstrass", 1]["singularity"])
    summary = (folder / "summary.md").read_text()
    assert summary == out["summary"]
    assert "| erm_gcv | bspline(beta=2) | 5 | -0.833 |" in summary
    assert "| -0.800 | -0.833 | singularity |" in summary
    assert "| erm_theory | weierstrass(beta=1.5) | 1 | -0.750 |" in summary
    assert "| -0.750 | - | minimax |" in summary
    # parallel lines: the d-slopes of each (estimator, phi) coincide
    assert "- erm_theory, bspline(beta=2): d-slopes from -0.800 to -0.800, spread 0.000" in summary
    # the posterior mean against the ERM estimator of its own fit, by name
    assert "bayes_pm against erm_gcv (the same ERM fit):" in summary
    assert "| bspline(beta=2) | 1 | 100 | 0.500 | 0.900 |" in summary
    assert "Error precision: 60 of 72 cells met se/error <= 0.05" in summary
    # the posterior's band slopes; the terminal table names every estimator in full
    assert {r["estimator"] for r in out["band_rows"]} == {"bayes_pm"}
    table = final_table(out["rows"], out["band_rows"]).splitlines()
    assert sum(line.split()[0] == "erm_theory" for line in table) == 4
    assert (folder / "rates.png").stat().st_size > 0


def test_rates_figure_and_paired_ratio_name_the_estimators(report):
    from bayes_ips.study.figures import plot_paired_ratio, plot_rates

    ds, out, _ = report
    titles = [ax.get_title() for ax in plot_rates(ds, out["rows"]).get_axes()]
    assert titles == [
        "erm_gcv (ERM)",
        "erm_theory (ERM)",
        "Bayes posterior mean",
        "posterior contraction (credible-band width)",
    ]
    (ax,) = plot_paired_ratio(ds, [("bayes_pm", "erm_gcv")]).get_axes()
    medians = [line.get_ydata() for line in ax.lines if len(line.get_ydata()) == 3]
    assert len(medians) == 4  # phi x d
    assert all(m == pytest.approx(0.5, rel=1e-9) for med in medians for m in med)


def test_prediction_rows_take_the_family_from_the_label_without_a_coordinate():
    row = {"estimator": "erm", "phi": "holder(beta=1)", "beta": 1.0, "d": 1, "slope": -0.76}
    (r,) = prediction_rows([{**row, "slope_lo": -0.8, "slope_hi": -0.7}], {})
    assert r["family"] == "holder" and r["singularity"] == pytest.approx(-0.75, abs=EXACT)
    assert r["nearer"] == "singularity"  # -0.76: 0.01 from -0.75, 0.09 from -2/3
