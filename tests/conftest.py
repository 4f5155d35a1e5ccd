"""Test configuration: float64 everywhere, switched on explicitly here.

Subprocesses started by the tests (CLI runs, study worker pools) share one
persistent compilation cache for the session, handed to them through the
environment, so that tests running the same shapes in several processes
compile once.  The pytest process itself keeps no persistent cache: it compiles
thousands of small programs, and XLA's executable serialisation segfaulted in
it (jax 0.10.2, CPU) after a few hundred tests.
"""

import os
import tempfile

import jax

from bayes_ips import CACHE_ENV

jax.config.update("jax_enable_x64", True)
os.environ.setdefault(CACHE_ENV, tempfile.mkdtemp(prefix="bayes-ips-test-jax-cache-"))
