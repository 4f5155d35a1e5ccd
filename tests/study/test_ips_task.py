"""The IPS task: a study cell fits the model `bayes-ips fit-erm` fits on the same data."""

import jax
import numpy as np
import pytest

from bayes_ips.cli import main
from bayes_ips.erm import fit_erm
from bayes_ips.io import Dataset, load_fit, save_dataset
from bayes_ips.study.config import parse_config
from bayes_ips.study.tasks import ips

RAW = {
    "study": {"name": "same", "seed": 3, "estimators": ["erm"], "M": [80], "d": [2], "N": 4},
    # beta > 4: ERMConfig's rule raises the degree to ceil(beta) - 1 = 5; beta = 2: cubic
    "phi": [{"family": "holder", "beta": 5.5}, {"family": "holder", "beta": 2}],
    "erm": {"restarts": 1},  # one start, the moment estimate: the fit needs no key
}


# Both in the slow tier (~18 s for beta = 5.5, the degree rule at work, and ~5 s more for
# the cubic case): the fast tier's 5-minute budget (2026-12-07).
@pytest.mark.slow
@pytest.mark.parametrize("beta, degree", [(5.5, 5), (2.0, 3)])
def test_a_study_cell_and_fit_erm_fit_the_same_model(tmp_path, capsys, beta, degree):
    config = parse_config(RAW)
    (cell,) = [c for c in ips.make_cells(config) if c.beta == beta]
    truth, X, Y, _ = ips.cell_data(cell.spec)
    data = tmp_path / "data.npz"
    save_dataset(data, Dataset(X, Y))
    out = tmp_path / "fit.nc"
    argv = ["fit-erm", str(data), "--beta", f"{beta:g}", "--restarts", "1", "--out", str(out)]
    assert main(argv) == 0
    cli_fit = load_fit(out)
    assert cli_fit.config == ips.cell_erm_config(cell.spec)  # the same ERMConfig
    rec = ips.run_cell(cell.spec)
    assert rec["degree"] == cli_fit.info["degree"] == degree
    assert rec["K"] == cli_fit.info["K"] and rec["n_basis"] == cli_fit.info["n_basis"]
    assert rec["sigma_hat"] == cli_fit.info["sigma_hat"]
    assert (rec["c_H"], rec["c_H_dim"]) == (cli_fit.info["c_H"], cli_fit.info["c_H_dim"])
    # both placed the knots by the default rule ("auto") and took the same layout
    assert cli_fit.config.knot_placement == "auto"
    assert rec["uniform_weight"] == cli_fit.info["uniform_weight"]
    # the study's fit itself (run_cell's, whose record carries no coefficients)
    study_fit = fit_erm(jax.random.PRNGKey(0), X, Y, ips.cell_erm_config(cell.spec))
    np.testing.assert_array_equal(study_fit.coef, cli_fit.coef)
    np.testing.assert_array_equal(study_fit.A, cli_fit.A)


def test_knot_placement_in_cell_specs():
    """A config's ERM knot placement reaches its cells' fits; "quantile", the placement of
    the specs written before "auto" became the default, is the one a spec leaves out (so
    their hashes and records stay), and a spec without the key fits quantile knots."""
    default = ips.make_cells(parse_config(RAW))[0].spec
    assert default["settings"]["knot_placement"] == "auto"
    assert ips.cell_erm_config(default).knot_placement == "auto"
    raw = {**RAW, "erm": {**RAW["erm"], "knot_placement": "quantile"}}
    legacy = ips.make_cells(parse_config(raw))[0].spec
    assert "knot_placement" not in legacy["settings"]
    assert ips.cell_erm_config(legacy).knot_placement == "quantile"
    assert {k: v for k, v in default["settings"].items() if k != "knot_placement"} == legacy[
        "settings"
    ]


def test_cell_sampler_config_reads_a_spec_over_its_legacy_defaults():
    """A bayes_pm cell's sampler config: its settings at the cell's rank and ERM degree;
    a spec written before ``method`` and ``basis`` existed means NUTS on ERM's basis."""
    from types import SimpleNamespace

    from bayes_ips.inference import SamplerConfig

    raw = {**RAW, "study": {**RAW["study"], "estimators": ["bayes_pm"]}}
    spec = ips.make_cells(parse_config(raw))[0].spec
    erm = SimpleNamespace(info={"degree": 4})
    cfg = ips.cell_sampler_config(spec, erm)
    assert (cfg.rank, cfg.degree) == (spec["rank"], 4)
    b = spec["settings"]["bayes"]
    assert (cfg.method, cfg.basis) == (b["method"], b["basis"])
    old = {**spec, "settings": {**spec["settings"], "bayes": dict(b)}}
    for key in ("method", "basis"):
        del old["settings"]["bayes"][key]
    legacy = ips.cell_sampler_config(old, erm)
    assert (legacy.method, legacy.basis) == (ips.LEGACY_METHOD, ips.LEGACY_BASIS)
    assert legacy.method != SamplerConfig().method  # the legacy meaning is not today's default


def test_order_fields_keep_the_deciding_and_the_fixed_a_comparison():
    """A record's order fields: the deciding z and the one at ERM's A (the same where
    nothing was refitted), NaN where the order was not questioned."""
    fixed = {"mse_diff": -0.75, "se": 0.25}
    assert ips.order_fields(fixed) == {"order_cv_z": 3.0, "order_cv_z_fixed": 3.0}
    refit = {"mse_diff": 0.5, "se": 0.25, "refit": "erm", "fixed_a": fixed}
    assert ips.order_fields(refit) == {"order_cv_z": -2.0, "order_cv_z_fixed": 3.0}
    assert all(np.isnan(v) for v in ips.order_fields(None).values())


# slow tier: ~11 s (the fast tier's 5-minute budget, 2026-12-07)
@pytest.mark.slow
def test_an_erm_estimator_with_the_true_a_fits_phi_at_it():
    """``known_a = true`` in an ERM estimator's table: the cell fits phi at the truth's A
    (the oracle that tells A's estimation error from the nonparametric rate); its spec
    says so (an ERM without it keeps the spec it had), and the posterior may not start
    from it."""
    from bayes_ips.erm import ERMConfig
    from bayes_ips.errors import InputError
    from bayes_ips.metrics import l2_error

    raw = {
        **RAW,
        "study": {**RAW["study"], "estimators": ["erm", "erm_oracle"]},
        "phi": RAW["phi"][1:],
        "erm_oracle": {"kind": "erm", "known_a": True},
    }
    cells = ips.make_cells(parse_config(raw))
    plain, oracle = (
        next(c for c in cells if c.spec["estimator"] == e) for e in ("erm", "erm_oracle")
    )
    assert "known_a" not in plain.spec["settings"] and oracle.spec["settings"]["known_a"] is True
    truth, X, Y, key = ips.cell_data(oracle.spec)
    rec = ips.run_cell(oracle.spec)
    fit = fit_erm(key, X, Y, ERMConfig(rank=1, beta=2.0, restarts=1, known_a=True), A=truth.A)
    assert rec["K"] == fit.info["K"] and rec["sigma_hat"] == fit.info["sigma_hat"]
    err = l2_error(jax.random.PRNGKey(0), fit.predict, truth)
    assert err.relative < 0.05
    bad = {**raw, "study": {**raw["study"], "estimators": ["bayes_pm"]}, "erm": {"known_a": True}}
    bad.pop("erm_oracle")
    with pytest.raises(InputError, match="start the posterior at the true A"):
        parse_config(bad)
