"""The Bayesian posterior mean against ERM on the same datasets, across M.

Both estimators see the same data and are scored on the same held-out pairs.
Writes into --out-dir: rates.png (error against M per estimator, and the width of
the 90% credible band against M: posterior contraction), paired_ratio.png (error of
the posterior mean over the ERM error), slopes.csv / slopes.md, contraction.csv,
summary.md (paired ratios, band coverage of g*), results.nc / results.csv.

    python analyses/bayes_vs_erm.py --out-dir out/bayes_vs_erm [--workers 4]
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")

from bayes_ips.study.analysis import add_study_arguments, main_for  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "bayes_vs_erm.toml")


def main(args: argparse.Namespace) -> dict:
    return main_for("bayes_vs_erm", args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, CONFIG)
    main(parser.parse_args())
