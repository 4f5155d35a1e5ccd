"""The helpers both command groups share: one-line errors, argument types, output checks."""

import argparse

import pytest

from bayes_ips.cli_common import EXIT_INPUT_ERROR, OneLineParser, fail, finite_float, out_path
from bayes_ips.errors import InputError


def test_fail_prints_one_line_and_returns_the_input_error_status(capsys):
    assert fail("bad thing") == EXIT_INPUT_ERROR == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "bayes-ips: error: bad thing\n"


def test_parser_errors_are_one_line(capsys):
    p = OneLineParser(prog="bayes-ips x")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--n", "two"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bayes-ips: error: argument --n")
    assert "(see 'bayes-ips x --help')" in err


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "one"])
def test_finite_float_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        finite_float(text)


def test_finite_float_accepts():
    assert finite_float("-1.5e-3") == -1.5e-3


def test_out_path_checks_suffix_and_folder(tmp_path):
    good = str(tmp_path / "a.nc")
    assert out_path(good, (".nc",)) == good
    with pytest.raises(InputError, match="must end with .npz or .json"):
        out_path(good, (".npz", ".json"))
    with pytest.raises(InputError, match="does not exist"):
        out_path(str(tmp_path / "missing" / "a.nc"), (".nc",))
