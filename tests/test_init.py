"""Package-level settings read at import: XLA:CPU's emitters (``bayes_ips.use_loop_emitters``).

Each case runs a fresh interpreter: XLA reads its flags once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest

import bayes_ips

FLAG = "--xla_cpu_use_fusion_emitters=false"
CHECKED = tuple(int(p) for p in metadata.version("jaxlib").split(".")[:2]) in (
    bayes_ips._LOOP_EMITTERS_JAXLIB
)


def _flags_after(code: str, **env) -> str:
    """``XLA_FLAGS`` in a fresh process after ``code`` (which imports the package)."""
    e = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", bayes_ips.EMITTERS_ENV)}
    e.update(env)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code + "\nimport os; print('FLAGS=' + os.environ.get('XLA_FLAGS', ''))",
        ],
        env=e,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line[6:] for line in out.splitlines() if line.startswith("FLAGS="))


@pytest.mark.skipif(not CHECKED, reason="this jaxlib is not one checked to accept the flag")
def test_the_loop_emitters_are_opt_in_and_the_flag_is_accepted():
    code = "import bayes_ips, jax.numpy as jnp; assert float(jnp.ones(3).sum()) == 3.0"
    loop = {bayes_ips.EMITTERS_ENV: "loop"}
    assert _flags_after(code) == ""  # XLA's default
    assert _flags_after(code, **loop) == FLAG
    assert _flags_after(code, XLA_FLAGS="--xla_cpu_enable_fast_math=false", **loop).split() == [
        "--xla_cpu_enable_fast_math=false",
        FLAG,
    ]


def test_a_users_own_choice_is_kept():
    code = "import bayes_ips"
    own = "--xla_cpu_use_fusion_emitters=true"
    assert _flags_after(code, XLA_FLAGS=own, **{bayes_ips.EMITTERS_ENV: "loop"}) == own
    assert _flags_after(code, **{bayes_ips.EMITTERS_ENV: "fusion"}) == ""


def test_nothing_changes_once_the_backend_has_started():
    """XLA has read its flags: adding one then would only mislead."""
    code = "import jax.numpy as jnp; jnp.ones(2).sum().block_until_ready(); import bayes_ips"
    assert _flags_after(code, **{bayes_ips.EMITTERS_ENV: "loop"}) == ""


def test_an_unknown_emitters_setting_is_a_one_line_cli_error():
    proc = subprocess.run(
        [sys.executable, "-m", "bayes_ips.cli", "simulate", "--help"],
        env={**os.environ, bayes_ips.EMITTERS_ENV: "fast"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0  # --help answers before any setting is read
    proc = subprocess.run(
        [sys.executable, "-m", "bayes_ips.cli", "simulate", "--M", "10", "--N", "3", "--d", "2",
         "--rank", "1", "--seed", "0", "--out", os.devnull + ".npz"],
        env={**os.environ, bayes_ips.EMITTERS_ENV: "fast"},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "BAYES_IPS_XLA_EMITTERS='fast'" in lines[0], proc.stderr
