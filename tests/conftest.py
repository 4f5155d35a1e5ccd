"""Test configuration: float64 everywhere, switched on explicitly here.

Every compiled XLA:CPU program keeps a few memory mappings alive for as long as
JAX caches it, and the kernel allows a process 65530 of them
(``vm.max_map_count``).  One pytest process compiles tens of thousands of
programs (every eager operation on a new shape is one), and past the limit
XLA's compiler segfaults (seen twice, at different tests).  So after every test
the process checks how many mappings it holds and drops the compiled programs
only when it nears the limit (:func:`bayes_ips.study.backends.relieve_map_pressure`):
the programs that several test modules share (ERM, the samplers, the kernel) are
compiled once per session, not once per module.

Subprocesses started by the tests (CLI runs, study worker pools) share one
persistent compilation cache for the session, handed to them through the
environment, so that tests running the same shapes in several processes
compile once; every compiled program is written to it, not only those that took
over half a second.  (The pytest processes themselves keep no persistent cache:
XLA's executable serialisation segfaulted there in CI.)

``make test`` runs the tests in two pytest-xdist workers.  A whole test file, or a
whole group of files that share programs (:data:`SHARED_PROGRAMS`), goes to one
worker (:func:`pytest_xdist_make_scheduler`), so a module fixture is built once; the
environment set here, in the controlling process, reaches both workers.
"""

import os
import tempfile

import jax
import pytest

from bayes_ips import CACHE_ENV, CACHE_MIN_SECS_ENV
from bayes_ips.study.backends import relieve_map_pressure

jax.config.update("jax_enable_x64", True)
os.environ.setdefault(CACHE_ENV, tempfile.mkdtemp(prefix="bayes-ips-test-jax-cache-"))
# every program, small ones included: a worker pool then loads what the CLI subprocess
# of an earlier test compiled (the process-pool test: 16 s -> 8 s)
os.environ.setdefault(CACHE_MIN_SECS_ENV, "0")


@pytest.fixture(autouse=True)
def _relieve_map_pressure():
    yield
    relieve_map_pressure()


# Test files that run the same programs on the same shapes (the IPS posterior at
# M = 70, N = 4, d = 2, K = 4; the tiny ERM study at d = 2, K = 3; the single-location
# sampler) go to one pytest-xdist worker together, so the programs are compiled once;
# every other file is a group of its own, so its module fixtures are built once.
SHARED_PROGRAMS = {
    "tests/test_inference.py": "ips-posterior",
    "tests/test_importance.py": "ips-posterior",
    "tests/test_cli_bayes.py": "ips-posterior",
    "tests/study/test_engine.py": "erm-study",
    "tests/study/test_cli_study.py": "erm-study",
    "tests/analyses/test_scripts.py": "erm-study",
    "tests/single_location/test_slr_posterior.py": "slr-posterior",
    "tests/single_location/test_slr_cli.py": "slr-posterior",
}


@pytest.hookimpl(optionalhook=True)  # pytest-xdist may be absent or switched off
def pytest_xdist_make_scheduler(config, log):
    """Whole files, or whole groups of :data:`SHARED_PROGRAMS`, to one worker at a time.

    (xdist's own ``--dist loadgroup`` marks cannot take effect under pytest 9.2, whose
    node ids xdist can no longer rename; its scheduler hook is the supported way.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class SharedProgramsScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_PROGRAMS.get(path, path)

    return SharedProgramsScheduling(config, log)
