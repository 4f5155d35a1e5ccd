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
compile once.  (The pytest process itself keeps no persistent cache: XLA's
executable serialisation segfaulted there in CI.)
"""

import os
import tempfile

import jax
import pytest

from bayes_ips import CACHE_ENV
from bayes_ips.study.backends import relieve_map_pressure

jax.config.update("jax_enable_x64", True)
os.environ.setdefault(CACHE_ENV, tempfile.mkdtemp(prefix="bayes-ips-test-jax-cache-"))


@pytest.fixture(autouse=True)
def _relieve_map_pressure():
    yield
    relieve_map_pressure()
