"""Rate of the error against M when phi* is rough everywhere: the minimax exponent.

phi* is a lacunary Weierstrass sum of exact Hoelder exponent beta (non-integer) at
every point and every scale the knots resolve, so no estimator can beat the minimax
rate M^(-2 beta / (2 beta + 1)); ERM with GCV's K, ERM with the theory's K and the
posterior mean should all reach it, in every d.  ``erm_oracle`` (ERM at the true A)
is the control: its slopes are the nonparametric rate without A's estimation error
(``analyses/oracle_gap.py`` pairs it with an estimator).  Writes into --out-dir: summary.md
(per estimator, beta and d the slope with its 95% interval beside the minimax slope,
and for B-spline or Hoelder phi* the isolated-singularity slope
-(2 beta + 1) / (2 beta + 2); the spread of the slopes over d), rates.png,
slopes.csv / slopes.md, results.nc / results.csv.

    python analyses/minimax.py --out-dir out/minimax [--workers 4] [--only estimator=erm_gcv]
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")

from bayes_ips.study.analysis import add_study_arguments, main_for  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "minimax.toml")


def main(args: argparse.Namespace) -> dict:
    return main_for("minimax", args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, CONFIG)
    main(parser.parse_args())
