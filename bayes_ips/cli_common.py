"""What every ``bayes-ips`` command group shares: the one-line error, argument types, outputs.

The main command line (:mod:`bayes_ips.cli`) and the ``slr`` group
(:mod:`bayes_ips.single_location.cli`) both import from here, so neither imports
the other's internals.  Bad input is reported as one line,
``bayes-ips: error: ...``, with exit status 2 (:data:`EXIT_INPUT_ERROR`).
"""

from __future__ import annotations

import argparse
import math
import sys

from bayes_ips.errors import InputError, check_output_dir

__all__ = ["EXIT_INPUT_ERROR", "OneLineParser", "fail", "finite_float", "out_path"]

EXIT_INPUT_ERROR = 2  # the status of a one-line input error (argparse's usage status)


def fail(message: str) -> int:
    """Print ``bayes-ips: error: message`` to stderr; returns :data:`EXIT_INPUT_ERROR`."""
    print(f"bayes-ips: error: {message}", file=sys.stderr)
    return EXIT_INPUT_ERROR


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (:func:`fail`), not usage + message."""

    def error(self, message: str) -> None:
        raise SystemExit(fail(f"{message} (see '{self.prog} --help')"))


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return v


def out_path(path: str, suffixes: tuple[str, ...]) -> str:
    """Check an output path before any work: its suffix, and a writable folder.

    Parameters
    ----------
    path : str
    suffixes : tuple of str
        The endings allowed, e.g. ``(".nc",)``.

    Returns
    -------
    str
        ``path`` unchanged.

    Raises
    ------
    InputError
        Wrong suffix, missing or unwritable folder.
    """
    if not path.endswith(suffixes):
        raise InputError(f"output {path!r} must end with {' or '.join(suffixes)}")
    check_output_dir(path)
    return path
