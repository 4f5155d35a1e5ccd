"""The ``bayes-ips`` command line: the round trip, determinism, and the bad-input contract.

The CLI is called in-process (``main([...])`` with ``capsys``) except for one test
that runs the installed console script.  Fitting is the slow part (JIT compile), so
one small dataset is simulated and fitted once per module and reused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from bayes_ips.cli import main
from bayes_ips.io import load_dataset, load_fit
from bayes_ips.simulate import HeadsTruth, g_true, sample_pairs

# One small, easy problem: tanh, rank 1, d = 3, noise sd 0.1.
M, N, D = 300, 5, 3
FIT_OPTS = ["--rank", "1", "--restarts", "1", "--n-intervals", "6", "--seed", "0"]


def sim_argv(out, **overrides):
    """``simulate`` arguments for the small problem; an override of None drops the option."""
    opts = {
        "M": M,
        "N": N,
        "d": D,
        "rank": 1,
        "phi": "tanh",
        "noise": 0.1,
        "seed": 0,
        **overrides,
    }
    argv = ["simulate"]
    for k, v in opts.items():
        if v is not None:
            argv += [f"--{k.replace('_', '-')}", str(v)]
    if out is not None:
        argv += ["--out", str(out)]
    return argv


def run_cli(capsys, argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Simulate one dataset and fit it once, both through the CLI."""
    d = tmp_path_factory.mktemp("cli_fit")
    data, fit = d / "data.npz", d / "fit.nc"
    # quiet: the fixture is built inside whichever test asks first, and its output
    # and progress bar would land in that test's captured stdout and stderr
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(sim_argv(data)) == 0
        assert main(["fit-erm", str(data), *FIT_OPTS, "--out", str(fit)]) == 0
    return SimpleNamespace(dir=d, data=data, fit=fit)


def _write_xy(path, X, Y=None, **extra):
    arrays = {"X": X, **extra}
    if Y is not None:
        arrays["Y"] = Y
    np.savez(path, **arrays)
    return path


def _rand_xy(M_=40, N_=4, d=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (M_, N_, d)), rng.normal(size=(M_, N_))


def _pairs(path, P=50, d=D, seed=2, **kw):
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.uniform(-1, 1, (P, d)), "y": rng.uniform(-1, 1, (P, d))}
    arrays.update(kw)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


# ----------------------------------------------------------------------------- round trip


def test_round_trip_simulate_fit_predict_evaluate(fitted, tmp_path, capsys):
    z = np.load(fitted.data)
    assert z["X"].shape == (M, N, D) and np.issubdtype(z["X"].dtype, np.floating)
    assert z["Y"].shape == (M, N) and np.issubdtype(z["Y"].dtype, np.floating)
    for key in ("A_true", "phi_spec", "token_law", "noise_law"):
        assert key in z.files, key
    assert z["A_true"].shape == (D, D)
    assert fitted.fit.is_file()

    pairs = _pairs(tmp_path / "pairs.npz")
    g_path = tmp_path / "g.npz"
    rc, out, err = run_cli(capsys, ["predict", fitted.fit, "--pairs", pairs, "--out", g_path])
    assert rc == 0, err
    assert "50 pairs" in out
    g = np.load(g_path)["g"]
    assert g.shape == (50,)
    assert np.all(np.isfinite(g))
    with np.load(pairs) as p:
        expected = np.asarray(load_fit(fitted.fit).predict(p["x"], p["y"]))
    # the CLI only loads, predicts and saves: same numbers up to rounding
    np.testing.assert_allclose(g, expected, rtol=0, atol=1e-10)

    rc, out, err = run_cli(capsys, ["evaluate", fitted.fit, "--truth", fitted.data])
    assert rc == 0, err
    assert "L2(rho) error" in out and "coercivity c_H" in out

    js = tmp_path / "res.json"
    rc, out, err = run_cli(capsys, ["evaluate", fitted.fit, "--truth", fitted.data, "--json", js])
    assert rc == 0, err
    res = json.loads(js.read_text())
    for key in ("error", "se", "relative"):
        assert key in res and np.isfinite(res[key]), key
    assert res["error"] >= 0 and res["se"] >= 0
    # c_H of the fitted space on the training tokens: the fit's own (computed before
    # the gauge was fixed: it is gauge-invariant), up to rounding
    info = load_fit(fitted.fit).info
    assert res["c_H"] == pytest.approx(info["c_H"], rel=1e-8)
    assert res["c_H_dim"] == info["c_H_dim"] == info["n_basis"]
    assert res["c_H_iid_bound"] == pytest.approx(1 / (N - 1))
    # tanh is analytic, the noise is small (sd 0.1) and rank-1 A in d = 3 has few
    # parameters, so the fit recovers g* well: the relative error err / Var(g*)
    # is ~1e-3 here; 0.05 leaves a wide margin yet fails if A or phi is not found.
    assert res["relative"] < 0.05
    # relative = error / Var_rho(g*): check against an independent Monte Carlo
    # estimate of Var(g*) (20000 pairs: relative s.e. ~1%, so 5% is safe).
    truth = load_dataset(fitted.data, need_truth=True).truth
    x, y = sample_pairs(jax.random.PRNGKey(99), truth.tokens, 20000)
    var_g = float(np.var(np.asarray(g_true(truth, x, y))))
    assert res["error"] / var_g == pytest.approx(res["relative"], rel=0.05)


def test_fit_erm_accepts_data_with_only_x_and_y(fitted, tmp_path, capsys):
    with np.load(fitted.data) as z:
        X, Y = z["X"], z["Y"]
    data = _write_xy(tmp_path / "xy.npz", X, Y)
    fit = tmp_path / "fit.nc"
    rc, out, err = run_cli(capsys, ["fit-erm", data, *FIT_OPTS, "--out", fit])
    assert rc == 0, err
    assert out.startswith(f"wrote {fit}") and "coercivity c_H" in out
    f_xy, f_full = load_fit(fit), load_fit(fitted.fit)
    assert f_xy.info["K"] == 6 and f_xy.info["M"] == M
    # The truth is never used by the fit: same X, Y, options and seed must give
    # the same fit (deterministic on CPU; 1e-8 allows for reduction-order noise).
    np.testing.assert_allclose(f_xy.A, f_full.A, rtol=0, atol=1e-8)
    np.testing.assert_allclose(f_xy.coef, f_full.coef, rtol=0, atol=1e-8)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_data_different_seed_different(tmp_path, capsys):
    paths = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        paths[name] = tmp_path / f"{name}.npz"
        rc, _, err = run_cli(capsys, sim_argv(paths[name], M=50, seed=seed))
        assert rc == 0, err
    a, b, c = (np.load(paths[k]) for k in "abc")
    np.testing.assert_array_equal(a["X"], b["X"])
    np.testing.assert_array_equal(a["Y"], b["Y"])
    np.testing.assert_array_equal(a["A_true"], b["A_true"])
    assert not np.array_equal(a["X"], c["X"])
    assert not np.array_equal(a["Y"], c["Y"])
    assert not np.array_equal(a["A_true"], c["A_true"])


def test_simulate_weierstrass(tmp_path, capsys):
    out = tmp_path / "w.npz"
    rc, stdout, err = run_cli(capsys, sim_argv(out, M=50, phi="weierstrass", beta=1.5))
    assert rc == 0, err
    assert "phi* = weierstrass (beta = 1.5)" in stdout
    data = load_dataset(out, need_truth=True)
    assert data.truth.phi.family == "weierstrass" and np.all(np.isfinite(data.Y))
    rc, stdout, _ = run_cli(capsys, ["simulate", "--help"])
    assert rc == 0 and "weierstrass" in stdout


def test_simulate_heads_round_trip(tmp_path, capsys):
    paths = {name: tmp_path / f"{name}.npz" for name in ("default", "one", "two")}
    rc, _, err = run_cli(capsys, sim_argv(paths["default"], M=50))
    assert rc == 0, err
    rc, _, err = run_cli(capsys, sim_argv(paths["one"], M=50, heads=1))
    assert rc == 0, err
    rc, stdout, err = run_cli(capsys, sim_argv(paths["two"], M=50, heads=2, phi="tanh,sin"))
    assert rc == 0, err
    assert "2 heads, phi* = tanh + sin" in stdout
    # --heads 1 is the single-head command: same arrays, same config (no "heads" key)
    default, one = load_dataset(paths["default"]), load_dataset(paths["one"])
    np.testing.assert_array_equal(default.X, one.X)
    np.testing.assert_array_equal(default.Y, one.Y)
    np.testing.assert_array_equal(default.truth.A, one.truth.A)
    assert "heads" not in one.meta["config"]
    assert {**one.meta["config"], "out": None} == {**default.meta["config"], "out": None}
    two = load_dataset(paths["two"], need_truth=True)
    assert isinstance(two.truth, HeadsTruth) and two.truth.A.shape == (2, D, D)
    assert [p.family for p in two.truth.phis] == ["tanh", "sin"]
    assert two.meta["config"]["heads"] == 2
    assert two.X.shape == (50, N, D) and np.all(np.isfinite(two.Y))
    # one family serves every head
    rc, _, err = run_cli(capsys, sim_argv(tmp_path / "same.npz", M=50, heads=2))
    assert rc == 0, err
    same = load_dataset(tmp_path / "same.npz").truth
    assert [p.family for p in same.phis] == ["tanh", "tanh"]


def test_evaluate_against_a_heads_truth(fitted, tmp_path, capsys):
    """A one-head fit is scored against the sum of the heads (the truth's d is its tokens')."""
    data = tmp_path / "heads.npz"
    rc, _, err = run_cli(capsys, sim_argv(data, M=50, heads=2, phi="tanh,sin"))
    assert rc == 0, err
    rc, out, err = run_cli(capsys, ["evaluate", fitted.fit, "--truth", data])
    assert rc == 0, err
    assert "L2(rho) error" in out


# ----------------------------------------------------------------------------- bad input
#
# Each case builds its inputs in ``tmp`` and returns (argv, out): ``out`` is the
# path the command would write (None when there is none).  ``get`` returns a
# fixture by name (only the predict/evaluate cases need the fitted module fixture).


def _data(tmp, **kw):
    X, Y = _rand_xy()
    return _write_xy(tmp / "data.npz", X, Y, **kw)


def _fit_cmd(tmp, data, *extra, out=None):
    out = tmp / "fit.nc" if out is None else out
    return ["fit-erm", data, "--restarts", "1", *extra, "--out", out], out


def _corrupt(path):
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    return path


def _simulate_case(out_name="data.npz", **kw):
    def build(tmp, get):
        out = tmp / out_name
        return sim_argv(out, **{"M": 50, **kw}), out

    return build


def _fit_case(*extra, data=None, X=None, Y="default", out=None):
    """fit-erm on random valid data, or on the given X / Y (Y=None: no Y at all)."""

    def build(tmp, get):
        if data is not None:
            path = data(tmp)
        elif X is None:
            path = _data(tmp)
        else:
            Xa = X()
            Ya = _rand_xy()[1] if isinstance(Y, str) else (None if Y is None else Y())
            path = _write_xy(tmp / "data.npz", Xa, Ya)
        return _fit_cmd(tmp, path, *extra, out=None if out is None else out(tmp))

    return build


def _x_with(value):
    def make():
        X = _rand_xy()[0]
        X[3, 1, 2] = value
        return X

    return make


def _predict_case(pairs=None, fit=None):
    def build(tmp, get):
        fit_path = get("fitted").fit if fit is None else fit(tmp)
        pairs_path = _pairs(tmp / "pairs.npz") if pairs is None else pairs(tmp)
        out = tmp / "g.npz"
        return ["predict", fit_path, "--pairs", pairs_path, "--out", out], out

    return build


def _evaluate_no_truth(tmp, get):
    data = _write_xy(tmp / "xy.npz", *_rand_xy())
    out = tmp / "res.json"
    return ["evaluate", get("fitted").fit, "--truth", data, "--json", out], out


def _evaluate_bad_json(tmp, get):
    f = get("fitted")
    out = tmp / "res.txt"
    return ["evaluate", f.fit, "--truth", f.data, "--json", out], out


def _plot_heads_truth(tmp, get):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(sim_argv(tmp / "heads.npz", M=50, heads=2)) == 0
    out = tmp / "fig.png"
    return ["plot", get("fitted").fit, "--truth", tmp / "heads.npz", "--out", out], out


def _unwritable_out(tmp):
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores the mode bits
        ro.chmod(0o700)
        pytest.skip("running as a user that can write a 0o500 directory (root)")
    return ro / "fit.nc"


def _npy_as_npz(tmp):
    path = tmp / "array.npz"
    with open(path, "wb") as f:
        np.save(f, _rand_xy()[0])
    return path


# name -> (builder, a fragment of the expected message)
BAD_INPUT = {
    # simulate
    "simulate-N-1": (_simulate_case(N=1), "N >= 2"),
    "simulate-rank-gt-d": (_simulate_case(rank=4), "rank 4"),
    "simulate-unknown-phi": (_simulate_case(phi="relu"), "phi family 'relu'"),
    "simulate-unknown-tokens": (_simulate_case(tokens="sphere"), "token law 'sphere'"),
    "simulate-unknown-noise-law": (_simulate_case(noise_law="cauchy"), "noise law 'cauchy'"),
    "simulate-holder-beta-0": (_simulate_case(phi="holder", beta=0), "beta must be > 0"),
    "simulate-holder-beta-negative": (_simulate_case(phi="holder", beta=-1.5), "beta must be > 0"),
    "simulate-holder-without-beta": (_simulate_case(phi="holder"), "needs beta"),
    "simulate-weierstrass-without-beta": (_simulate_case(phi="weierstrass"), "needs beta"),
    "simulate-weierstrass-integer-beta": (
        _simulate_case(phi="weierstrass", beta=2),
        "needs a non-integer beta",
    ),
    "simulate-noise-nan": (_simulate_case(noise="nan"), "--noise"),
    "simulate-M-0": (_simulate_case(M=0), "--M"),
    "simulate-out-dir-missing": (_simulate_case(out_name="missing/data.npz"), "does not exist"),
    "simulate-out-not-npz": (_simulate_case(out_name="data.csv"), ".npz"),
    "simulate-noise-law-typo": (_simulate_case(noise_law="gausian"), "'gausian'"),
    "simulate-tokens-typo": (_simulate_case(tokens="cueb"), "'cueb'"),
    "simulate-heads-0": (_simulate_case(heads=0), "--heads"),
    "simulate-heads-negative": (_simulate_case(heads=-1), "--heads"),
    "simulate-heads-not-integer": (_simulate_case(heads="two"), "'two'"),
    "simulate-heads-at-d-1": (_simulate_case(d=1, heads=2), "not distinct at d = 1"),
    "simulate-heads-phi-list-length": (
        _simulate_case(heads=2, phi="tanh,sin,tanh"),
        "3 families for 2 head",
    ),
    "simulate-phi-list-without-heads": (_simulate_case(phi="tanh,sin"), "2 families for 1 head"),
    # fit-erm
    "fit-missing-data": (_fit_case(data=lambda tmp: tmp / "absent.npz"), "not found"),
    "fit-corrupt-data": (_fit_case(data=lambda tmp: _corrupt(tmp / "junk.npz")), "cannot read"),
    "fit-npz-without-Y": (_fit_case(X=lambda: _rand_xy()[0], Y=None), "'Y'"),
    "fit-X-nan": (_fit_case(X=_x_with(np.nan)), "NaN or inf"),
    "fit-X-inf": (_fit_case(X=_x_with(np.inf)), "NaN or inf"),
    "fit-Y-wrong-shape": (
        _fit_case(X=lambda: _rand_xy()[0], Y=lambda: np.zeros((40, 3))),
        "Y must have shape",
    ),
    "fit-X-2d": (
        _fit_case(X=lambda: np.zeros((40, 3)), Y=lambda: np.zeros((40, 3))),
        "X must have shape",
    ),
    "fit-N-1": (_fit_case(X=lambda: _rand_xy(N_=1)[0], Y=lambda: _rand_xy(N_=1)[1]), "N >= 2"),
    "fit-rank-gt-d": (_fit_case("--rank", "4"), "rank 4"),
    "fit-M-too-small": (
        _fit_case(X=lambda: _rand_xy(M_=2, N_=2)[0], Y=lambda: _rand_xy(M_=2, N_=2)[1]),
        "too few",
    ),
    "fit-unknown-k-rule": (_fit_case("--k-rule", "aic"), "'aic'"),
    "fit-unknown-knot-placement": (_fit_case("--knot-placement", "equal"), "'equal'"),
    "fit-theory-without-beta": (_fit_case("--k-rule", "theory"), "needs beta"),
    "fit-impossible-n-basis": (
        _fit_case("--degree", "3", "--n-basis", "2"),
        "--n-basis 2 is impossible",
    ),
    "fit-multiplicity-gt-degree+1": (
        _fit_case("--degree", "3", "--knot-multiplicity", "5"),
        "multiplicity",
    ),
    "fit-out-dir-missing": (
        _fit_case(out=lambda tmp: tmp / "missing" / "fit.nc"),
        "does not exist",
    ),
    "fit-out-unwritable": (_fit_case(out=_unwritable_out), "not writable"),
    "fit-n-basis-and-n-intervals": (_fit_case("--n-basis", "10", "--n-intervals", "6"), "not both"),
    "fit-data-is-npy": (_fit_case(data=_npy_as_npz), "cannot read"),
    # predict
    "predict-pairs-without-x": (
        _predict_case(pairs=lambda tmp: _pairs(tmp / "p.npz", x=None)),
        "'x'",
    ),
    "predict-pairs-wrong-d": (
        _predict_case(pairs=lambda tmp: _pairs(tmp / "p.npz", d=D + 1)),
        "dimension 4",
    ),
    "predict-pairs-nan": (
        _predict_case(pairs=lambda tmp: _pairs(tmp / "p.npz", y=np.full((50, D), np.nan))),
        "NaN or inf",
    ),
    "predict-fit-corrupt": (
        _predict_case(fit=lambda tmp: _corrupt(tmp / "junk.nc")),
        "cannot read",
    ),
    "predict-fit-missing": (_predict_case(fit=lambda tmp: tmp / "absent.nc"), "not found"),
    "predict-pairs-strings": (
        _predict_case(
            pairs=lambda tmp: _pairs(tmp / "p.npz", x=np.full((5, D), "a"), y=np.full((5, D), "b"))
        ),
        "numeric",
    ),
    # evaluate
    "evaluate-truth-without-truth": (_evaluate_no_truth, "no truth"),
    "evaluate-json-not-json": (_evaluate_bad_json, ".json"),
    # plot
    "plot-heads-truth": (_plot_heads_truth, "truth of 2 heads"),
    # argparse
    "argparse-unknown-option": (_simulate_case(bogus=1), "unrecognized arguments"),
    "argparse-missing-out": (lambda tmp, get: (sim_argv(None, M=50), None), "--out"),
    "argparse-non-integer-M": (_simulate_case(M="ten"), "'ten'"),
}


def _param(name, value):
    if hasattr(value, "marks"):  # already a pytest.param (a namedtuple itself)
        return pytest.param(*value.values, marks=value.marks, id=name)
    return pytest.param(value, id=name)


def _assert_one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bayes-ips: error:"), err
    assert "Traceback" not in err


def _listing(path):
    return sorted(p.relative_to(path) for p in path.rglob("*"))


@pytest.mark.parametrize("case", [_param(k, v) for k, v in BAD_INPUT.items()])
def test_bad_input_one_line_no_output(case, tmp_path, capsys, request):
    build, fragment = case
    argv, out = build(tmp_path, request.getfixturevalue)
    before = _listing(tmp_path)
    try:
        rc, stdout, err = run_cli(capsys, argv)
    finally:
        for p in tmp_path.rglob("*"):  # undo a chmod so that tmp_path can be cleaned
            if p.is_dir():
                p.chmod(0o700)
    # the documented contract: bad input exits with status 2 (argparse errors too)
    assert rc == 2
    _assert_one_error_line(err)
    assert fragment in err  # failed for the intended reason
    assert stdout == ""
    if out is not None:
        assert not Path(out).exists()
    # nothing new anywhere under tmp_path: no output, no stray .tmp-* file
    assert _listing(tmp_path) == before


@pytest.mark.parametrize(
    "build",
    [
        # fails while reading the data
        lambda tmp, out: _fit_cmd(
            tmp, _write_xy(tmp / "d.npz", _x_with(np.nan)(), _rand_xy()[1]), out=out
        )[0],
        # fails inside fit_erm (too few observations), after the data was read
        lambda tmp, out: _fit_cmd(tmp, _write_xy(tmp / "d.npz", *_rand_xy(M_=2, N_=2)), out=out)[0],
        # simulate fails after building the truth
        lambda tmp, out: sim_argv(out.with_suffix(".npz"), M=50, N=1),
    ],
    ids=["fit-bad-data", "fit-too-few-observations", "simulate-N-1"],
)
def test_failing_command_does_not_clobber_existing_output(build, tmp_path, capsys):
    out = tmp_path / "precious.nc"
    npz = out.with_suffix(".npz")
    out.write_bytes(b"keep me")
    npz.write_bytes(b"keep me too")
    rc, _, err = run_cli(capsys, build(tmp_path, out))
    assert rc == 2
    _assert_one_error_line(err)
    assert out.read_bytes() == b"keep me"
    assert npz.read_bytes() == b"keep me too"
    assert not list(tmp_path.glob(".tmp-*"))


def test_the_command_line_loads_no_numerics_before_a_command_needs_them():
    """``bayes-ips --help`` and the parser (the ``slr`` group's included) import neither
    JAX nor SciPy: each command imports what it uses, so the parser costs no seconds."""
    code = (
        "import sys, bayes_ips.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('jax', 'scipy', 'numpyro', 'arviz') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_console_script_bad_input_one_line(tmp_path):
    exe = Path(sys.executable).parent / "bayes-ips"
    assert exe.is_file()
    out = tmp_path / "data.npz"
    env = {k: v for k, v in os.environ.items() if k != "BAYES_IPS_DEBUG"}
    proc = subprocess.run(
        [str(exe), *sim_argv(out, M=50, N=1)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.returncode == 2
    _assert_one_error_line(proc.stderr)
    assert "N >= 2" in proc.stderr
    assert not out.exists()
    assert not list(tmp_path.iterdir())
