"""Test configuration: float64 everywhere, switched on explicitly here.

Compiled programs are kept in a persistent cache for the session (and handed to
subprocesses through the environment), so that tests running the same shapes
in several processes compile once.
"""

import os
import tempfile

import jax

from bayes_ips import CACHE_ENV, enable_compilation_cache

jax.config.update("jax_enable_x64", True)
os.environ.setdefault(CACHE_ENV, tempfile.mkdtemp(prefix="bayes-ips-test-jax-cache-"))
enable_compilation_cache(os.environ[CACHE_ENV])
