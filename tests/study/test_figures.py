"""The rate figure lays out one panel per quantity, with no empty cell."""

import itertools

import matplotlib
import numpy as np
import pytest

from bayes_ips.study.figures import plot_rates
from bayes_ips.study.tasks.ips import to_dataset

matplotlib.use("Agg")


def _records(estimators):
    rng = np.random.default_rng(0)
    out = []
    for est, d, M, rep in itertools.product(estimators, (1, 3), (100, 200, 400), range(2)):
        rec = {
            "estimator": est,
            "family": "tanh",
            "beta": None,
            "d": d,
            "M": M,
            "rep": rep,
            "error": float(M**-0.8 * rng.uniform(0.8, 1.2)),
            "theory_holds": None,
        }
        if est == "bayes_pm":
            rec["band_width"] = float(M**-0.4 * rng.uniform(0.8, 1.2))
        out.append(rec)
    return out


@pytest.mark.parametrize(
    ("estimators", "titles"),
    [
        (["erm"], ["ERM"]),
        (["bayes_pm"], ["Bayes posterior mean", "posterior contraction (credible-band width)"]),
        (
            ["erm", "bayes_pm"],
            ["ERM", "Bayes posterior mean", "posterior contraction (credible-band width)"],
        ),
    ],
)
def test_plot_rates_has_one_row_of_non_empty_panels(estimators, titles):
    fig = plot_rates(to_dataset(_records(estimators)))
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == titles
    assert all(ax.get_visible() and ax.lines for ax in axes)  # no hidden or empty panel
    rows = {ax.get_subplotspec().rowspan.start for ax in axes}
    assert rows == {0}
