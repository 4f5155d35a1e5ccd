"""The guard against the kernel's cap on memory mappings (vm.max_map_count)."""

import os

import jax
import jax.numpy as jnp
import pytest

from bayes_ips.study.backends import relieve_map_pressure

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/maps"), reason="needs Linux /proc for the mapping count"
)


def _n_maps() -> int:
    with open("/proc/self/maps", "rb") as f:
        return sum(1 for _ in f)


def test_over_budget_drops_the_compiled_programs_and_their_mappings():
    f = jax.jit(lambda x: jnp.sin(x) + 1.0)
    for n in range(1, 41):  # 40 programs, a few mappings each
        f(jnp.ones(n)).block_until_ready()
    assert f._cache_size() == 40
    before = _n_maps()
    assert relieve_map_pressure(budget=0.0)  # any use is over a zero budget
    assert f._cache_size() == 0
    # each XLA:CPU program held >= 2 mappings; 40 programs dropped free >= 40 of them
    assert _n_maps() <= before - 40


def test_under_budget_keeps_them():
    f = jax.jit(lambda x: jnp.cos(x))
    f(jnp.ones(3)).block_until_ready()
    assert not relieve_map_pressure(budget=1.0)  # the whole cap: never reached here
    assert f._cache_size() == 1


_SLEEPY = """
import os, time

def slow_cell(spec):
    with open(spec["pidfile"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
    return {"x": 1}
"""

_DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
from sleepy import slow_cell
from bayes_ips.study.backends import open_backend
with open_backend(processes=1) as b:
    for _ in b.run(slow_cell, [{"pidfile": sys.argv[2]}]):
        pass
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_pool_workers_end_with_a_killed_driver(tmp_path, sig):
    """A killed study driver leaves no worker running its cell."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "sleepy.py").write_text(_SLEEPY)
    pidfile = tmp_path / "worker.pid"
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(tmp_path), str(pidfile)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not pidfile.exists() or not pidfile.read_text():
            assert time.time() < deadline and proc.poll() is None, "the worker never started"
            time.sleep(0.05)
        worker = int(pidfile.read_text())
        assert _alive(worker)
        proc.send_signal(getattr(signal, sig))  # SIGINT: the driver only (not its group)
        proc.wait(timeout=30)
        deadline = time.time() + 15
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), f"worker {worker} outlived the driver ({sig})"
    finally:
        if proc.poll() is None:
            proc.kill()
