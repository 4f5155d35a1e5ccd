"""bayes_ips: learning the pairwise interactions of attention-style models.

The model: ``Y_i = 1/(N-1) sum_{j != i} phi(X_i^T A X_j) + noise`` with ``A = U V^T`` of
low rank and ``phi`` a spline.  Only ``g(x, y) = phi(x^T A y)`` is identifiable.

float64 is not switched on by importing this package: entry points (the CLI,
scripts, tests) call :func:`enable_x64`.  With ``BAYES_IPS_XLA_EMITTERS=loop``,
importing it chooses how XLA:CPU compiles (:func:`use_loop_emitters`).
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

CACHE_ENV = "BAYES_IPS_JAX_CACHE"
# Programs that compile faster than this many seconds are not written to the cache
# (default 0: every program).  A command-line run dispatches ~250 small programs
# (array staging, reshapes, eager arithmetic) besides its few large ones; with only
# those over 0.5 s cached, a second `bayes-ips sample` of the same shapes still spent
# half its wall time compiling them (analyses/benchmarks/bench_cli.py).
CACHE_MIN_SECS_ENV = "BAYES_IPS_JAX_CACHE_MIN_SECS"
# The folder has no size cap (JAX's needs the filelock package): small programs are
# kept per data shape, about 2.4 MB per shape that `fit-erm` and `sample` have seen
# (1.3 MB with the 0.5 s threshold).  Delete it, or move it with CACHE_ENV, at will.


EMITTERS_ENV = "BAYES_IPS_XLA_EMITTERS"  # "fusion" (XLA's default) or "loop"
_LOOP_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
# jaxlib releases checked to accept the flag: XLA aborts on a flag it does not know,
# so with another jaxlib the setting is left to XLA_FLAGS.
_LOOP_EMITTERS_JAXLIB = ((0, 10),)


def use_loop_emitters() -> bool:
    """With ``BAYES_IPS_XLA_EMITTERS=loop``, have XLA:CPU compile with its loop emitters.

    Work at small sizes (demos, tests, scripts on one small dataset) is mostly XLA
    compilation, and XLA:CPU's older loop emitters compile it 1.2-1.6x faster than
    its MLIR fusion emitters, with the same numbers to the digits printed; but the
    posterior's proposal evaluation ran 16% slower with them at d = 5, M = 8000, so
    they are not the default (``analyses/benchmarks/bench_xla_flags.py``,
    ``analyses/benchmarks/RESULTS.md``).  Adds ``--xla_cpu_use_fusion_emitters=false``
    to ``XLA_FLAGS`` unless ``XLA_FLAGS`` already sets that flag, the installed jaxlib
    is not one checked to accept it, or JAX's backend has already started (XLA reads
    its flags once).  Called when the package is imported; ``make demo`` sets it.

    Returns whether the flag was added.
    """
    import sys
    from importlib import metadata

    if os.environ.get(EMITTERS_ENV, "fusion").strip().lower() != "loop":
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" in flags:
        return False
    try:
        major, minor = (int(p) for p in metadata.version("jaxlib").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    if (major, minor) not in _LOOP_EMITTERS_JAXLIB:
        return False
    if "jax" in sys.modules:
        try:
            from jax._src import xla_bridge

            if xla_bridge._backends:  # started: the flags were read already
                return False
        except (ImportError, AttributeError):
            return False
    os.environ["XLA_FLAGS"] = f"{flags} {_LOOP_EMITTERS}".strip()
    return True


def check_emitters_setting() -> None:
    """A one-line error for an unknown ``BAYES_IPS_XLA_EMITTERS`` (entry points call it)."""
    raw = os.environ.get(EMITTERS_ENV, "fusion")
    if raw.strip().lower() not in ("loop", "fusion"):
        from bayes_ips.errors import InputError

        raise InputError(f"{EMITTERS_ENV}={raw!r}: expected 'loop' or 'fusion'")


def enable_x64() -> None:
    """Switch JAX to float64 (call once, before creating arrays)."""
    import jax

    jax.config.update("jax_enable_x64", True)


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Keep compiled XLA programs on disk, so that later processes load them.

    A NUTS program takes 5-15 s to compile and is the same for every dataset of
    the same shapes (the data are arguments, not constants), so studies, CLI
    runs and worker processes reuse it.  The folder is ``path``, else the
    environment variable ``BAYES_IPS_JAX_CACHE``, else
    ``~/.cache/bayes_ips/jax``; ``BAYES_IPS_JAX_CACHE=off`` switches it off.

    Returns the folder used, or None when off.
    """
    import jax

    path = _cache_path(path)
    if path is None:
        return None
    for name, value in _cache_settings(path).items():
        jax.config.update(name, value)
    return path


def _cache_path(path: str | None) -> str | None:
    path = (
        path
        or os.environ.get(CACHE_ENV)
        or os.path.join(os.path.expanduser("~"), ".cache", "bayes_ips", "jax")
    )
    if path.lower() in ("off", "0", "none", ""):
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # an unwritable cache only costs compile time
    return path


def _cache_settings(path: str) -> dict:
    return {
        "jax_compilation_cache_dir": path,
        "jax_persistent_cache_min_compile_time_secs": _min_compile_secs(),
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }


def _min_compile_secs() -> float:
    raw = os.environ.get(CACHE_MIN_SECS_ENV, "0")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        from bayes_ips.errors import InputError

        raise InputError(f"{CACHE_MIN_SECS_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def configure_jax_before_import() -> None:
    """float64 and the compilation cache for a process that has not imported JAX yet.

    Sets JAX's environment variables instead of importing it, so a worker
    process pays for JAX's import only when one of its tasks uses it.  In a
    process that has imported JAX already, the same settings go through
    ``jax.config``.
    """
    import sys

    if "jax" in sys.modules:
        enable_x64()
        enable_compilation_cache()
        return
    os.environ["JAX_ENABLE_X64"] = "1"
    path = _cache_path(None)
    if path is not None:
        for name, value in _cache_settings(path).items():
            os.environ[name.upper()] = str(value)


__all__ = [
    "__version__",
    "check_emitters_setting",
    "configure_jax_before_import",
    "enable_compilation_cache",
    "enable_x64",
    "use_loop_emitters",
]

use_loop_emitters()
