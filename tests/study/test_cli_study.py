"""`bayes-ips study`: bad input gets one line and exit 2; failures exit 1 and are listed."""

import os

import pytest

from bayes_ips.cli import main

TINY = """
[study]
name = "cli"
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


def _one_line_error(capsys, rc, text):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("bayes-ips: error:") and text in err[0]


@pytest.mark.parametrize(
    "content, text",
    [
        (None, "config file not found"),
        ("[study\n", "is not valid TOML"),
        (TINY.replace("seed = 7", "sed = 7"), "unknown key 'sed' in [study]"),
        (TINY.replace("N = 4", "N = 1"), "study.N must be an integer >= 2"),
        (TINY.replace("restarts = 1", "restarts = 0"), "[erm]: restarts must be a positive"),
    ],
)
def test_bad_configs(tmp_path, capsys, content, text):
    cfg = tmp_path / "c.toml"
    if content is not None:
        cfg.write_text(content)
    out = tmp_path / "out"
    rc = main(["study", str(cfg), "--out-dir", str(out)])
    _one_line_error(capsys, rc, text)
    assert not out.exists()  # nothing written


def test_conflicting_backends_and_bad_counts(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    rc = main(["study", str(cfg), "--out-dir", str(tmp_path), "--workers", "2", "--processes", "2"])
    _one_line_error(capsys, rc, "not allowed with argument")
    rc = main(["study", str(cfg), "--out-dir", str(tmp_path), "--workers", "0"])
    _one_line_error(capsys, rc, "expected a positive integer")


def test_unwritable_study_folder(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        rc = main(["study", str(cfg), "--out-dir", str(locked / "study")])
        _one_line_error(capsys, rc, "cannot use")
    finally:
        os.chmod(locked, 0o700)


@pytest.mark.slow  # ~26 s: a whole study through the CLI (fast-tier budget)
def test_study_runs_reports_failures_and_exits_1(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    rc = main(["study", str(cfg), "--out-dir", str(out), "--attempts", "1"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "4 of 6 cells finished" in captured.out
    assert "slope" in captured.out and "theory" in captured.out
    assert "2 cell(s) FAILED" in captured.err and "erm_tanh-binf_d2_M2_r0" in captured.err
    names = set(os.listdir(out))
    assert {"results.nc", "results.csv", "slopes.csv", "slopes.md", "rates.png"} <= names
    assert not [n for n in names if n.startswith(".tmp-")]


@pytest.mark.parametrize(
    "only, text",
    [
        ("foo=1", "unknown key 'foo'"),
        ("d=one", "expected numbers"),
        ("d", "takes KEY=V1,V2"),
        ("M=999", "selects no cell"),
    ],
)
def test_bad_slices(tmp_path, capsys, only, text):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    rc = main(["study", str(cfg), "--out-dir", str(tmp_path / "o"), "--only", only])
    _one_line_error(capsys, rc, text)


# slow tier: ~16 s (the fast tier's 5-minute budget, 2026-12-07)
@pytest.mark.slow
def test_only_runs_a_slice(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    rc = main(["study", str(cfg), "--out-dir", str(out), "--only", "M=40,60", "--only", "rep=1"])
    assert rc == 0
    assert "2 of 2 cells finished" in capsys.readouterr().out
    assert sorted(os.listdir(out / "records")) == [
        "erm_tanh-binf_d2_M40_r1.json",
        "erm_tanh-binf_d2_M60_r1.json",
    ]


@pytest.mark.parametrize(
    "extra, text",
    [
        ([], "a cell timeout needs worker processes"),
        (["--processes", "2"], None),
    ],
)
def test_cell_timeout_options(tmp_path, capsys, extra, text):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    if text is None:  # a bad value, refused by the parser
        rc = main(["study", str(cfg), "--out-dir", str(out), "--cell-timeout", "-1", *extra])
        _one_line_error(capsys, rc, "expected a positive number of seconds")
    else:
        rc = main(["study", str(cfg), "--out-dir", str(out), "--cell-timeout", "60", *extra])
        _one_line_error(capsys, rc, text)
    assert not out.exists()  # refused before anything was written
