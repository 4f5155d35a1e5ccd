"""Rate of the error of g_hat against M for several smoothness levels beta of phi*.

Smoother phi* means a steeper rate, -2 beta / (2 beta + 1).  Writes into --out-dir:
rates.png (median, 10-90% band over repetitions, theory slopes, theory-condition
failures hollow), slopes.csv / slopes.md, summary.md (are the slopes ordered by
beta?), results.nc / results.csv.

    python analyses/rate_vs_smoothness.py --out-dir out/rate_vs_smoothness [--workers 4]
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")

from bayes_ips.study.analysis import add_study_arguments, main_for  # noqa: E402

CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "configs", "rate_vs_smoothness.toml"
)


def main(args: argparse.Namespace) -> dict:
    return main_for("smoothness", args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, CONFIG)
    main(parser.parse_args())
