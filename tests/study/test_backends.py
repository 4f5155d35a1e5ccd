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


@pytest.mark.slow  # fast-tier budget (5 min on 2 cores); CI runs it
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

# The study driver of the tests below, run with ``python -c``: a pool of one worker
# on one slow cell.  It restores Python's Ctrl-C handler, as under a terminal: a job a
# script starts in the background (CI, nohup ... &) inherits SIGINT ignored, and
# Python then installs no KeyboardInterrupt handler.
_DRIVER_HEAD = """
import os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, sys.argv[1])
from sleepy import slow_cell
from bayes_ips.study.backends import open_backend
"""
_DRIVER_RUN = """
with open_backend(processes=1) as b:
    for _ in b.run(slow_cell, [{"pidfile": sys.argv[2]}]):
        pass
"""
_DRIVER = _DRIVER_HEAD + _DRIVER_RUN


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()  # a zombie has ended
    except FileNotFoundError:
        return False


def _ended_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` has ended, waiting up to ``seconds`` for it."""
    import time

    deadline = time.time() + seconds
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.parametrize(
    "sig",
    [pytest.param(s, marks=pytest.mark.slow) for s in ("SIGKILL", "SIGINT")],  # budget
)
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
        assert _ended_within(worker, 15), f"worker {worker} outlived the driver ({sig})"
    finally:
        if proc.poll() is None:
            proc.kill()


_DRIVER_OTHER_THREAD = (
    _DRIVER_HEAD
    + """
def poke():  # Ctrl-C delivered to this thread, not to the main one
    while not os.path.exists(sys.argv[2]) or not open(sys.argv[2]).read():
        time.sleep(0.05)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

threading.Thread(target=poke, daemon=True).start()
"""
    + _DRIVER_RUN
)


@pytest.mark.slow  # fast-tier budget (5 min on 2 cores); CI runs it
def test_ctrl_c_handed_to_another_thread_still_stops_the_pool(tmp_path):
    """The kernel may give a process's SIGINT to any of its threads (numpy's, XLA's);
    the main thread, blocked in a wait with no timeout, would then sleep through it
    until the cell ends (120 s here).  The driver's waits are bounded, so it stops."""
    import subprocess
    import sys
    import time

    (tmp_path / "sleepy.py").write_text(_SLEEPY)
    pidfile = tmp_path / "worker.pid"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER_OTHER_THREAD, str(tmp_path), str(pidfile)],
        capture_output=True,
        text=True,
        timeout=110,  # less than the cell's 120 s: a driver that missed the signal fails
    )
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
    worker = int(pidfile.read_text())
    assert _ended_within(worker, 15)
    assert time.monotonic() - t0 < 110


# Cells made of picklable built-ins, so spawned pool and Dask workers can run them
# without importing anything from the tests: ``operator.call(spec)`` is ``spec()``.
def _cells(*calls):
    import functools

    return [functools.partial(f, *args) for f, *args in calls]


def _outcomes(backend, specs):
    import operator

    return {i: (res, err) for i, res, err, _ in backend.run(operator.call, specs)}


@pytest.mark.slow  # fast-tier budget (5 min on 2 cores); CI runs it
def test_pool_ends_a_cell_past_the_timeout_and_the_others_finish():
    import multiprocessing
    import time

    from bayes_ips.study.backends import open_backend

    specs = _cells((time.sleep, 600), (abs, -1), (abs, -2), (abs, -3))
    t0 = time.monotonic()
    with open_backend(processes=2, cell_timeout=2.0) as b:
        out = _outcomes(b, specs)
    took = time.monotonic() - t0
    assert not multiprocessing.active_children()  # the hung worker was ended, not left
    assert {i: r for i, (r, e) in out.items() if e is None} == {1: 1, 2: 2, 3: 3}
    assert out[0][0] is None and out[0][1].startswith("CellTimeout") and "2 s" in out[0][1]
    assert took < 120  # not the 600 s of the hung cell (worker start-up included)


@pytest.mark.slow  # ~7 s of worker start-up (fast-tier budget)
def test_a_dying_worker_fails_its_cell_only():
    import os

    from bayes_ips.study.backends import open_backend

    specs = _cells((abs, -1), (os._exit, 3), (abs, -2), (abs, -3), (abs, -4))
    with open_backend(processes=2) as b:
        out = _outcomes(b, specs)
    assert {i: r for i, (r, e) in out.items() if e is None} == {0: 1, 2: 2, 3: 3, 4: 4}
    assert out[1][1].startswith("WorkerDied") and "exit code 3" in out[1][1]


def test_a_raising_cell_is_a_failure_and_the_worker_lives_on():
    from bayes_ips.study.backends import open_backend

    specs = _cells((int, "x"), (abs, -1), (int, "7"))
    with open_backend(processes=1) as b:
        out = _outcomes(b, specs)
    assert out[0][1].startswith("ValueError: invalid literal")
    assert out[1] == (1, None) and out[2] == (7, None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cell_timeout": 10.0}, "needs worker processes"),
        ({"processes": 2, "cell_timeout": 0.0}, "positive number of seconds"),
        ({"processes": 2, "cell_timeout": float("nan")}, "positive number of seconds"),
    ],
)
def test_cell_timeout_bad_uses_are_refused(kwargs, match):
    from bayes_ips.errors import InputError
    from bayes_ips.study.backends import open_backend

    with pytest.raises(InputError, match=match):
        with open_backend(**kwargs):
            pass


@pytest.mark.slow  # fast-tier budget (5 min on 2 cores); CI runs it
def test_dask_worker_ends_itself_past_the_timeout():
    pytest.importorskip("distributed")
    import time

    import dask

    from bayes_ips.study.backends import open_backend

    specs = _cells((time.sleep, 600), *((abs, -k) for k in range(1, 6)))
    # fail the cell at its first worker death (the default reschedules it 3 times);
    # no quick cell may be placed behind the hung one and die with its worker
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        t0 = time.monotonic()
        with open_backend(workers=2, cell_timeout=2.0) as b:
            out = _outcomes(b, specs)
    assert time.monotonic() - t0 < 120
    assert {i: r for i, (r, e) in out.items() if e is None} == {k: k for k in range(1, 6)}
    assert out[0][1].startswith("KilledWorker") and "cell timeout is 2 s" in out[0][1]


@pytest.mark.slow  # ~4 s of worker start-up (fast-tier budget)
def test_pool_workers_end_when_the_consumer_fails_mid_run():
    """The driver raising while it handles an outcome (e.g. a full disk) leaves no worker."""
    import multiprocessing
    import operator
    import time

    from bayes_ips.study.backends import open_backend

    specs = _cells((abs, -1), (time.sleep, 600), (time.sleep, 600))
    with pytest.raises(RuntimeError, match="consumer") as excinfo:
        with open_backend(processes=2) as b:
            outcomes = b.run(operator.call, specs)  # kept alive by the traceback's frame
            next(outcomes)
            raise RuntimeError("the consumer failed")
    assert excinfo.traceback  # the generator is still referenced, not closed
    assert not multiprocessing.active_children()
