"""Rate of the error of g_hat against M for several dimensions d at fixed smoothness.

The theory's rate M^(-2 beta / (2 beta + 1)) does not depend on d: the log-log lines
of the error against M should be parallel.  Writes into --out-dir: rates.png (per
estimator: median, 10-90% band over repetitions, theory slopes, cells where the
theory's condition fails hollow), slopes.csv / slopes.md, summary.md (the spread of
the d-slopes), results.nc / results.csv.

    python analyses/rate_vs_dimension.py --out-dir out/rate_vs_dimension [--workers 4]
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")

from bayes_ips.study.analysis import add_study_arguments, main_for  # noqa: E402

CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "configs", "rate_vs_dimension.toml"
)


def main(args: argparse.Namespace) -> dict:
    return main_for("dimension", args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, CONFIG)
    main(parser.parse_args())
