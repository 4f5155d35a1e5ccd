"""Files: dataset and fit round trips, validation on load, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray as xr

from bayes_ips.erm import ERMConfig, ERMFit
from bayes_ips.errors import InputError
from bayes_ips.io import (
    Dataset,
    atomic_dir,
    atomic_write,
    fit_from_dataset,
    fit_from_reference,
    fit_reference,
    fit_to_dataset,
    load_dataset,
    load_fit,
    load_pairs,
    save_dataset,
    save_fit,
    save_npz,
)
from bayes_ips.simulate import HeadsTruth, TokenLaw, g_true, gauge_fix, make_truth, simulate
from bayes_ips.spline import make_knots, n_basis


@pytest.fixture(scope="module")
def sim():
    """A truth with non-trivial parameters in every part (holder kinks, anisotropic
    scales, uniform noise) so the JSON round trip has something to lose."""
    truth = make_truth(
        jax.random.PRNGKey(3),
        3,
        2,
        phi="holder",
        beta=1.5,
        tokens=TokenLaw("anisotropic", 3),
        noise_sd=0.2,
        noise="uniform",
    )
    X, Y = simulate(jax.random.PRNGKey(4), truth, 20, 4)
    return truth, np.asarray(X), np.asarray(Y)


def _no_temp_files(directory):
    return not [p for p in os.listdir(directory) if p.startswith(".tmp-")]


# ----------------------------------------------------------------------------- datasets


def test_dataset_round_trip_with_truth(sim, tmp_path):
    truth, X, Y = sim
    meta = {"seed": 4, "command": "simulate", "config": {"M": 20, "beta": 1.5}}
    path = tmp_path / "data.npz"
    save_dataset(path, Dataset(X, Y, truth, meta))
    back = load_dataset(path, need_truth=True)
    np.testing.assert_array_equal(back.X, X)
    np.testing.assert_array_equal(back.Y, Y)
    assert back.X.dtype == np.float64 and back.Y.dtype == np.float64
    np.testing.assert_array_equal(back.truth.A, truth.A)
    assert back.truth.phi == truth.phi
    assert back.truth.phi.params["kinks"] == truth.phi.params["kinks"]
    assert back.truth.tokens == truth.tokens
    assert back.truth.tokens.scales == truth.tokens.scales
    assert back.truth.noise == truth.noise
    assert back.truth.rank == 2
    assert back.meta == meta
    assert _no_temp_files(tmp_path)


def test_dataset_round_trip_infinite_beta(tmp_path):
    # tanh has beta = inf, written as the string "inf" in the JSON spec
    truth = make_truth(jax.random.PRNGKey(0), 2, 1, phi="tanh")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 3))
    save_dataset(tmp_path / "d.npz", Dataset(X, Y, truth))
    back = load_dataset(tmp_path / "d.npz").truth
    assert math.isinf(back.phi.beta)
    assert back.phi == truth.phi


def test_dataset_round_trip_without_truth(sim, tmp_path):
    _, X, Y = sim
    path = tmp_path / "data.npz"
    save_dataset(path, Dataset(X, Y))
    back = load_dataset(path)
    assert back.truth is None
    np.testing.assert_array_equal(back.X, X)
    np.testing.assert_array_equal(back.Y, Y)
    assert back.meta == {}
    with pytest.raises(InputError, match="no truth"):
        load_dataset(path, need_truth=True)


def test_dataset_with_only_x_and_y_written_by_numpy(sim, tmp_path):
    _, X, Y = sim
    np.savez(tmp_path / "xy.npz", X=X.astype(np.float32), Y=Y)
    back = load_dataset(tmp_path / "xy.npz")
    assert back.truth is None and back.meta == {}
    assert back.X.dtype == np.float64  # converted on load
    np.testing.assert_array_equal(back.X, X.astype(np.float32).astype(np.float64))


@pytest.mark.parametrize(
    "keep", [("A_true",), ("A_true", "phi_spec"), ("phi_spec", "token_law", "noise_law")]
)
def test_partial_truth_is_an_input_error(sim, tmp_path, keep):
    truth, X, Y = sim
    full = tmp_path / "full.npz"
    save_dataset(full, Dataset(X, Y, truth))
    with np.load(full) as z:
        arrays = {k: z[k] for k in ("X", "Y", *keep)}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(InputError, match="partial truth"):
        load_dataset(tmp_path / "partial.npz")


def test_truth_of_wrong_dimension_is_an_input_error(sim, tmp_path):
    truth, X, Y = sim
    full = tmp_path / "full.npz"
    save_dataset(full, Dataset(X, Y, truth))
    with np.load(full) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["A_true"] = np.eye(4)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match="A_true"):
        load_dataset(tmp_path / "bad.npz")


def test_single_truth_file_layout_is_unchanged(sim, tmp_path):
    """A single truth's phi_spec stays one JSON object and A_true (d, d): old files load."""
    truth, X, Y = sim
    save_dataset(tmp_path / "d.npz", Dataset(X, Y, truth))
    with np.load(tmp_path / "d.npz") as z:
        assert str(z["phi_spec"]) == truth.phi.to_json()
        assert z["A_true"].shape == (3, 3)


@pytest.fixture(scope="module")
def heads_sim():
    """A two-head truth (a holder head with kinks, a tanh head with beta = inf)."""
    truth = make_truth(
        jax.random.PRNGKey(3),
        3,
        1,
        heads=2,
        phi=["holder", "tanh"],
        beta=1.5,
        tokens=TokenLaw("anisotropic", 3),
        noise_sd=0.2,
    )
    X, Y = simulate(jax.random.PRNGKey(4), truth, 20, 4)
    return truth, np.asarray(X), np.asarray(Y)


def test_heads_dataset_round_trip(heads_sim, tmp_path):
    truth, X, Y = heads_sim
    path = tmp_path / "heads.npz"
    save_dataset(path, Dataset(X, Y, truth, {"config": {"heads": 2}}))
    back = load_dataset(path, need_truth=True)
    assert isinstance(back.truth, HeadsTruth) and back.truth.n_heads == 2
    np.testing.assert_array_equal(back.truth.A, truth.A)
    assert back.truth.phis == truth.phis
    assert math.isinf(back.truth.phis[1].beta)
    assert back.truth.tokens == truth.tokens and back.truth.noise == truth.noise
    assert back.meta == {"config": {"heads": 2}}
    x, y = X[:, 0], X[:, 1]
    np.testing.assert_array_equal(g_true(back.truth, x, y), g_true(truth, x, y))
    assert _no_temp_files(tmp_path)


def _heads_file(heads_sim, tmp_path, **changes):
    truth, X, Y = heads_sim
    full = tmp_path / "full.npz"
    save_dataset(full, Dataset(X, Y, truth))
    with np.load(full) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda t: {"phi_spec": np.array("[" + t.phis[0].to_json() + "]")},
            "2 heads but phi_spec 1",
        ),
        (lambda t: {"phi_spec": np.array(t.phis[0].to_json())}, "not a list"),
        (lambda t: {"phi_spec": np.array("[{")}, "corrupt phi_spec"),
        (lambda t: {"phi_spec": np.array("[1, 2]")}, "corrupt phi specification"),
        (lambda t: {"A_true": t.A[:, :2]}, r"\(H, 3, 3\)"),
        (lambda t: {"A_true": np.stack([t.A[0], np.eye(3) / np.sqrt(3)])}, "one rank"),
        (
            lambda t: {
                "phi_spec": np.array("[" + ", ".join(p.to_json() for p in t.phis) + "]"),
                "A_true": t.A[0],
            },
            "list of phi specs needs A_true of shape",
        ),
    ],
    ids=["too-few-specs", "one-spec", "bad-json", "specs-not-objects", "A-shape", "ranks", "2d-A"],
)
def test_inconsistent_heads_are_an_input_error(heads_sim, tmp_path, change, match):
    path = _heads_file(heads_sim, tmp_path, **change(heads_sim[0]))
    with pytest.raises(InputError, match=match):
        load_dataset(path)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"X": np.zeros((3, 2, 2))}, "'Y'"),
        ({"Y": np.zeros((3, 2))}, "'X'"),
        ({"X": np.zeros((3, 2, 2)), "Y": np.zeros((3, 3))}, "Y must have shape"),
        ({"X": np.full((3, 2, 2), np.nan), "Y": np.zeros((3, 2))}, "NaN"),
        ({"X": np.zeros((3, 1, 2)), "Y": np.zeros((3, 1))}, "N >= 2"),
    ],
    ids=["no-Y", "no-X", "Y-shape", "X-nan", "N-1"],
)
def test_load_dataset_validates(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(InputError, match=match):
        load_dataset(tmp_path / "d.npz")


def test_load_dataset_missing_and_corrupt(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_dataset(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip archive" * 10)
    with pytest.raises(InputError, match="cannot read"):
        load_dataset(tmp_path / "junk.npz")


# ----------------------------------------------------------------------------- fits


def _make_fit(d=4, r=2, seed=7, tail="linear"):
    """An ERMFit built directly (no optimisation): random rank-r A, degree 2 with
    double knots, so that every attribute of the file matters for predict."""
    rng = np.random.default_rng(seed)
    A, _ = gauge_fix(rng.normal(size=(d, r)) @ rng.normal(size=(d, r)).T)
    P, sv, Qt = np.linalg.svd(A)
    U, V = P[:, :r] * np.sqrt(sv[:r]), Qt[:r].T * np.sqrt(sv[:r])
    knots = make_knots(np.sort(rng.uniform(-1.5, 1.5, 6)), degree=2, multiplicity=2, tail=tail)
    coef = rng.normal(size=n_basis(knots))
    config = ERMConfig(rank=r, degree=2, n_intervals=5, multiplicity=2, beta=2.5, restarts=2)
    info = {
        "K": 5,
        "k_table": [
            {"K": 2, "n_basis": 5, "rss": 1.25, "df": 12.0, "gcv": 0.5},
            {"K": 5, "n_basis": 11, "rss": 0.75, "df": 18.0, "gcv": math.inf},
        ],
        "train_mse": np.float64(0.0123),  # numpy scalars must be written too
        "bfgs_steps": [np.int64(12), 30],
        "theory_condition": {"holds": None, "lhs": r * d, "rhs": None, "beta": None},
    }
    return ERMFit(A, U, V, coef, knots, config, seed, info)


def test_fit_round_trip(tmp_path):
    fit = _make_fit()
    path = tmp_path / "fit.nc"
    save_fit(path, fit)
    assert _no_temp_files(tmp_path)
    back = load_fit(path)

    rng = np.random.default_rng(0)
    # pairs whose scores reach beyond the knots too (extrapolation must match)
    x, y = rng.uniform(-2, 2, (500, 4)), rng.uniform(-2, 2, (500, 4))
    # same arrays in float64 and the same evaluation code: equal up to rounding
    np.testing.assert_allclose(
        np.asarray(back.predict(x, y)), np.asarray(fit.predict(x, y)), rtol=0, atol=1e-12
    )
    np.testing.assert_array_equal(back.A, fit.A)
    np.testing.assert_array_equal(back.U, fit.U)
    np.testing.assert_array_equal(back.V, fit.V)
    np.testing.assert_array_equal(back.coef, fit.coef)
    np.testing.assert_array_equal(np.asarray(back.knots.breaks), np.asarray(fit.knots.breaks))
    assert (back.knots.degree, back.knots.multiplicity, back.knots.tail) == (2, 2, "linear")
    assert back.config == fit.config
    assert back.seed == 7
    assert back.info["K"] == 5
    assert back.info["k_table"] == fit.info["k_table"]  # inf survives the JSON
    assert back.info["train_mse"] == 0.0123
    assert back.info["bfgs_steps"] == [12, 30]
    assert back.info["theory_condition"]["holds"] is None


def test_fit_round_trip_infinite_beta_config(tmp_path):
    fit = dataclasses.replace(_make_fit(), config=ERMConfig(beta=math.inf))
    save_fit(tmp_path / "f.nc", fit)
    assert load_fit(tmp_path / "f.nc").config == fit.config


def test_load_fit_rejects_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_fit(tmp_path / "absent.nc")
    (tmp_path / "junk.nc").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="cannot read"):
        load_fit(tmp_path / "junk.nc")
    # a valid netCDF that is not a fit
    xr.Dataset({"a": (("i",), np.arange(3.0))}, attrs={"kind": "other"}).to_netcdf(
        tmp_path / "other.nc", engine="h5netcdf"
    )
    with pytest.raises(InputError, match="not an ERM fit"):
        load_fit(tmp_path / "other.nc")
    # a fit with a variable missing
    save_fit(tmp_path / "fit.nc", _make_fit())
    with xr.open_dataset(tmp_path / "fit.nc", engine="h5netcdf") as ds:
        ds.load().drop_vars("coef").to_netcdf(tmp_path / "nocoef.nc", engine="h5netcdf")
    with pytest.raises(InputError, match="'coef'"):
        load_fit(tmp_path / "nocoef.nc")


# ----------------------------------------------------------------------------- atomic writes


class Boom(RuntimeError):
    pass


def test_atomic_write_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(Boom):
        with atomic_write(target) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path)  # beside the target
            with open(tmp, "wb") as f:
                f.write(b"half written")
            raise Boom
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_write_failure_keeps_existing_target(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(Boom):
        with atomic_write(target) as tmp, open(tmp, "wb") as f:
            f.write(b"new")
            raise Boom
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_dir_failure_creates_nothing(tmp_path):
    out = tmp_path / "new" / "diag"  # neither folder exists yet
    with pytest.raises(Boom):
        with atomic_dir(out) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path)  # in the nearest existing ancestor
            (Path(tmp) / "summary.csv").write_text("half of the outputs")
            raise Boom
    assert os.listdir(tmp_path) == []


def test_atomic_dir_failure_leaves_an_existing_folder_as_it_was(tmp_path):
    out = tmp_path / "diag"
    out.mkdir()
    (out / "summary.csv").write_text("old")
    with pytest.raises(Boom):
        with atomic_dir(out) as tmp:
            (Path(tmp) / "summary.csv").write_text("new")
            (Path(tmp) / "rank.png").write_bytes(b"new")
            raise Boom
    assert os.listdir(out) == ["summary.csv"] and (out / "summary.csv").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["diag"]


def test_atomic_dir_success_moves_every_file_in(tmp_path):
    out = tmp_path / "a" / "b"
    with atomic_dir(out) as tmp:
        (Path(tmp) / "x.json").write_text("1")
        (Path(tmp) / "y.png").write_bytes(b"2")
    assert sorted(os.listdir(out)) == ["x.json", "y.png"]
    assert sorted(os.listdir(tmp_path)) == ["a"] and os.listdir(tmp_path / "a") == ["b"]
    (out / "x.json").write_text("old")
    with atomic_dir(out) as tmp:
        (Path(tmp) / "x.json").write_text("new")
    assert (out / "x.json").read_text() == "new" and (out / "y.png").read_bytes() == b"2"


def test_atomic_dir_refuses_a_file_in_the_folder_s_place(tmp_path):
    (tmp_path / "diag").write_text("a file")
    with pytest.raises(InputError, match="it is a file"):
        with atomic_dir(tmp_path / "diag"):
            pass
    assert sorted(os.listdir(tmp_path)) == ["diag"]


def test_atomic_write_success(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as tmp:
        assert not os.path.samefile(tmp, target)
        with open(tmp, "wb") as f:
            f.write(b"new content")
        assert target.read_bytes() == b"old"  # not visible before the end
    assert target.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_bad_targets(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        with atomic_write(tmp_path / "missing" / "out.bin"):
            pass
    (tmp_path / "adir").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        with atomic_write(tmp_path / "adir"):
            pass
    assert sorted(os.listdir(tmp_path)) == ["adir"]


def test_save_npz_round_trip(tmp_path):
    g = np.random.default_rng(0).normal(size=7)
    save_npz(tmp_path / "g.npz", g=g)
    with np.load(tmp_path / "g.npz") as z:
        np.testing.assert_array_equal(z["g"], g)
    assert os.listdir(tmp_path) == ["g.npz"]


# ----------------------------------------------------------------------------- pairs


def test_load_pairs_valid(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(6, 3))
    np.savez(tmp_path / "p.npz", x=x, y=y)
    xb, yb = load_pairs(tmp_path / "p.npz", d=3)
    assert xb.dtype == np.float64 and yb.dtype == np.float64
    np.testing.assert_array_equal(xb, x.astype(np.float64))
    np.testing.assert_array_equal(yb, y)
    xb2, _ = load_pairs(tmp_path / "p.npz")  # d not checked when not given
    assert xb2.shape == (6, 3)


@pytest.mark.parametrize(
    "arrays, d, match",
    [
        ({"y": np.zeros((4, 3))}, None, "'x'"),
        ({"x": np.zeros((4, 3))}, None, "'y'"),
        ({"x": np.zeros((4, 3)), "y": np.zeros((5, 3))}, None, r"shape \(P, d\)"),
        ({"x": np.zeros(4), "y": np.zeros(4)}, None, r"shape \(P, d\)"),
        ({"x": np.zeros((4, 3, 1)), "y": np.zeros((4, 3, 1))}, None, r"shape \(P, d\)"),
        ({"x": np.zeros((4, 3)), "y": np.zeros((4, 3))}, 2, "dimension 3"),
        ({"x": np.full((4, 3), np.nan), "y": np.zeros((4, 3))}, None, "NaN or inf"),
        ({"x": np.zeros((4, 3)), "y": np.full((4, 3), -np.inf)}, None, "NaN or inf"),
    ],
    ids=["no-x", "no-y", "P-mismatch", "1-d", "3-d", "wrong-d", "nan", "inf"],
)
def test_load_pairs_rejects(tmp_path, arrays, d, match):
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(InputError, match=match):
        load_pairs(tmp_path / "p.npz", d=d)


def test_load_pairs_missing_and_corrupt(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_pairs(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(np.random.default_rng(1).bytes(1000))
    with pytest.raises(InputError, match="cannot read"):
        load_pairs(tmp_path / "junk.npz")


def test_load_pairs_non_numeric_is_an_input_error(tmp_path):
    np.savez(tmp_path / "p.npz", x=np.full((2, 3), "a"), y=np.full((2, 3), "b"))
    with pytest.raises(InputError):
        load_pairs(tmp_path / "p.npz")


def test_npy_file_is_an_input_error(tmp_path):
    with open(tmp_path / "a.npz", "wb") as f:
        np.save(f, np.zeros((2, 3)))
    with pytest.raises(InputError):
        load_pairs(tmp_path / "a.npz")


def test_atomic_write_to_an_unwritable_place_is_an_input_error():
    """Even root cannot create files in /proc: the failure is a clean InputError."""
    with pytest.raises(InputError, match="cannot write"):
        with atomic_write("/proc/bayes_ips_test.npz") as tmp:
            open(tmp, "w").close()


# ----------------------------------------------------------------------------- fit forms


def _assert_same_fit_arrays(a, b):
    for name in ("A", "U", "V", "coef"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(np.asarray(a.knots.breaks), np.asarray(b.knots.breaks))
    assert (a.knots.degree, a.knots.multiplicity) == (b.knots.degree, b.knots.multiplicity)
    assert a.knots.tail == b.knots.tail


@pytest.mark.parametrize("tail", ["poly", "linear"])
def test_fit_round_trip_keeps_the_tail(tmp_path, tail):
    fit = _make_fit(tail=tail)
    save_fit(tmp_path / "fit.nc", fit)
    back = load_fit(tmp_path / "fit.nc")
    assert back.knots.tail == tail
    x, y = np.random.default_rng(1).uniform(-2, 2, (2, 300, 4))
    np.testing.assert_allclose(
        np.asarray(back.predict(x, y)), np.asarray(fit.predict(x, y)), rtol=0, atol=1e-12
    )


def test_a_fit_file_without_a_tail_loads_with_the_boundary_polynomial(tmp_path):
    """Files written before the tail existed were fitted, and predict, with the
    boundary polynomial beyond the knots: they load as tail "poly", unchanged."""
    old = _make_fit(tail="poly")
    ds = fit_to_dataset(old)
    del ds.attrs["tail"]  # the layout of a file from before the tail
    path = tmp_path / "old.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    back = load_fit(path)
    assert back.knots.tail == "poly"
    x, y = np.random.default_rng(2).uniform(-2, 2, (2, 300, 4))
    u = np.einsum("pi,ij,pj->p", x, old.A, y)
    b = np.asarray(old.knots.breaks)
    assert np.any(u < b[0]) and np.any(u > b[-1])  # extrapolated scores on both sides
    np.testing.assert_array_equal(np.asarray(back.predict(x, y)), np.asarray(old.predict(x, y)))
    # ... which the linear tail would not reproduce
    new = dataclasses.replace(old, knots=dataclasses.replace(old.knots, tail="linear"))
    assert np.max(np.abs(np.asarray(new.predict(x, y)) - np.asarray(old.predict(x, y)))) > 1e-3


def test_fit_dataset_round_trip_in_memory():
    fit = _make_fit()
    ds = fit_to_dataset(fit)
    assert ds["A"].dims == ("dim", "dim_col") and ds["coef"].dims == ("basis",)
    assert ds.attrs["kind"] == "erm"
    back = fit_from_dataset(ds)
    _assert_same_fit_arrays(back, fit)
    assert back.config == fit.config and back.seed == 7 and back.info["K"] == 5


def test_fit_reference_round_trip_through_json():
    fit = _make_fit()
    ref = fit_reference(fit)
    assert list(ref) == ["A", "U", "V", "coef", "breaks", "degree", "multiplicity", "tail"]
    for back in (fit_from_reference(ref), fit_from_reference(json.dumps(ref))):
        _assert_same_fit_arrays(back, fit)
        assert back.config == ERMConfig() and back.seed == -1 and back.info == {}


def test_fit_reference_of_the_legacy_layout_loads():
    """A posterior file written before fit_reference: the same keys, written by hand
    (and before the tail: it loads as "poly", the extrapolation it was made with)."""
    fit = _make_fit(tail="poly")
    legacy = {
        "A": np.asarray(fit.A).tolist(),
        "U": np.asarray(fit.U).tolist(),
        "V": np.asarray(fit.V).tolist(),
        "coef": np.asarray(fit.coef).tolist(),
        "breaks": np.asarray(fit.knots.breaks).tolist(),
        "degree": int(fit.knots.degree),
        "multiplicity": int(fit.knots.multiplicity),
    }
    assert fit_reference(fit) == legacy | {"tail": "poly"}
    _assert_same_fit_arrays(fit_from_reference(json.dumps(legacy)), fit)


@pytest.mark.parametrize("ref", [None, "{}", "not json", {"A": [[1.0]]}])
def test_fit_reference_missing_or_corrupt_is_an_input_error(ref):
    with pytest.raises(InputError, match="the post.nc lacks its ERM reference"):
        fit_from_reference(ref, source="the post.nc")
