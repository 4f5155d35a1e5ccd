"""Single-location regression: PGD and the posterior-predictive mean against M.

The risk of each estimator, the Bayes-optimal risk (Monte Carlo from the known data
law, marginalising the latent position) and the excess risk over it, per d, with
bands over repetitions.  Writes into --out-dir: slr_risk.png, summary.md (medians of
risk, Bayes risk, excess risk, |kappa|, |nu|), results.nc / results.csv.

    python analyses/single_location.py --out-dir out/slr [--workers 4]
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")

from bayes_ips.study.analysis import add_study_arguments, main_for  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "slr.toml")


def main(args: argparse.Namespace) -> dict:
    return main_for("study", args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, CONFIG)
    main(parser.parse_args())
