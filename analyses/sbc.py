"""Simulation-based calibration of the low-rank spline posterior (Talts et al. 2018).

Design (see :mod:`bayes_ips.sbc` for the prior fixed in advance, the gauge
argument, the thinning and the test): M = 200 samples of N = 6 cube tokens in
d = 2, rank 1 (``--rank 2``: A of full rank, its factors drawn from the model's
prior by NUTS), K = 8 symmetric knot intervals fixed from the design, y_scale = 1,
noise from the prior's sigma.  Each replication draws (A, sigma, tau, c) and Y
from the prior, samples the posterior with ``--method`` and ranks the truth among
L thinned draws for g at 4 fixed pairs, sigma, tau and the gauge-fixed A.

Writes into --out-dir: ranks.csv (replication, quantity, rank, L, sampler,
fallback, ess_min, wall_s, khat, refits), summary.json (config, seed, p-values, samplers,
timings) and sbc_ecdf.png (ECDF of normalised ranks minus uniform, simultaneous
95% bands).  The last printed line is ``sbc_min_pvalue=<float>``, the smallest
Bonferroni-adjusted chi-square p-value.

    python analyses/sbc.py --method imh --replications 200 --seed 0 --out-dir out/sbc
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")


def main(args: argparse.Namespace) -> dict:
    from bayes_ips import enable_compilation_cache, enable_x64
    from bayes_ips.sbc import SBCDesign, format_pvalue_line, run_sbc

    enable_x64()
    enable_compilation_cache()
    summary = run_sbc(
        args.out_dir,
        method=args.method,
        replications=args.replications,
        seed=args.seed,
        chains=args.chains,
        draws=args.draws,
        warmup=args.warmup,
        L=args.L,
        design=SBCDesign(rank=args.rank),
        progress=not args.no_progress,
    )
    for q, p in summary["pvalues_bonferroni"].items():
        print(f"{q:>8s}  p={summary['pvalues'][q]:.4f}  bonferroni={p:.4f}")
    print(
        f"samplers: {summary['samplers']}, fallbacks: {summary['fallbacks']}, "
        f"refitted proposals: {summary['refitted']}, "
        f"Pareto k above its limit: {summary['khat_above_max']}"
    )
    w = summary["wall_s"]
    print(f"wall: {w['total']:.1f} s, median {w['per_replication_median']:.2f} s per replication")
    print(format_pvalue_line(summary), flush=True)
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=("auto", "is", "imh", "nuts"), default="auto")
    p.add_argument("--replications", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=500, help="posterior draws per chain")
    p.add_argument("--warmup", type=int, default=None, help="default: the method's")
    p.add_argument("--L", type=int, default=100, help="thinned draws the truth is ranked among")
    p.add_argument("--rank", type=int, default=1, help="rank of A (d = 2)")
    p.add_argument("--no-progress", action="store_true")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
