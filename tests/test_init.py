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


# slow tier: ~8 s (the fast tier's 5-minute budget, 2026-12-07)
@pytest.mark.slow
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


def _cache_run(cache: str, **env) -> subprocess.CompletedProcess:
    """A fresh process that compiles one small program with the package's cache on."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "BAYES_IPS_JAX"))}
    e.update({bayes_ips.CACHE_ENV: cache, **env})
    code = (
        "import bayes_ips; bayes_ips.configure_jax_before_import()\n"
        "import jax, jax.numpy as jnp\n"
        "print(float(jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.ones(7)).sum()))\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True)


# slow tier: ~6 s (the fast tier's 5-minute budget, 2026-12-07)
@pytest.mark.slow
def test_every_program_goes_into_the_cache_by_default(tmp_path):
    """A small program (compiled in milliseconds) is written: a later CLI run loads it."""
    run = _cache_run(str(tmp_path / "c"))
    assert run.returncode == 0, run.stderr
    assert "Error" not in run.stderr, run.stderr
    assert len(os.listdir(tmp_path / "c")) >= 1
    # with a threshold no small program reaches, nothing is written
    run = _cache_run(str(tmp_path / "d"), **{bayes_ips.CACHE_MIN_SECS_ENV: "60"})
    assert run.returncode == 0, run.stderr
    assert os.listdir(tmp_path / "d") == []


def test_a_bad_cache_threshold_is_a_clear_error(monkeypatch):
    from bayes_ips.errors import InputError

    monkeypatch.setenv(bayes_ips.CACHE_MIN_SECS_ENV, "soon")
    with pytest.raises(InputError, match="expected a number of seconds"):
        bayes_ips._cache_settings("/tmp/unused")
