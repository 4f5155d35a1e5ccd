"""Importance sampling's round size, side by side: rounds of 50 proposals against 25.

On held-out problems of ``analyses/heldout_posterior.py``, in one process, the default
posterior path as ``bayes-ips sample`` runs it (its own ERM fit included) with
``bayes_ips.inference.IS_ROUND`` set to 50 and to 25 in turn, interleaved (the order
alternates between repetitions), and the ERM fit alone; the first repetition compiles
and is dropped.  Prints per case the medians, the ratios to ERM, the proposals drawn
and their PSIS effective size, and as its last line ``round25_over_round50=<float>``,
the median over cases of the time ratio.

Usage::

    python analyses/benchmarks/bench_is_round.py [--reps 5] [--cases NAME ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(args: argparse.Namespace) -> float:
    import jax
    import numpy as np

    import bayes_ips
    from bayes_ips import inference
    from bayes_ips.erm import ERMConfig, fit_erm
    from bayes_ips.inference import SamplerConfig, sample_posterior

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from heldout_posterior import CASES, case_data

    bayes_ips.enable_x64()
    jax.config.update("jax_enable_compilation_cache", False)
    default_round = inference.IS_ROUND
    ratios = []
    for name in args.cases or list(CASES):
        _, X, Y, (k_erm, k_post, *_) = case_data(name, args.seed)
        times: dict = {"erm": [], 50: [], 25: []}
        info = {}
        try:
            for r in range(args.reps + 1):
                t0 = time.perf_counter()
                fit_erm(k_erm, X, Y, ERMConfig())
                if r:
                    times["erm"].append(time.perf_counter() - t0)
                for size in (50, 25) if r % 2 else (25, 50):
                    inference.IS_ROUND = size
                    t0 = time.perf_counter()
                    fit = fit_erm(k_erm, X, Y, ERMConfig())  # what `bayes-ips sample` fits first
                    _, _, run = sample_posterior(
                        k_post, X, Y, SamplerConfig(), erm=fit, progress=False
                    )
                    if r:
                        times[size].append(time.perf_counter() - t0)
                    info[size] = (run.info["n_proposals"], run.info["is_ess"])
        finally:  # the module's round, whatever happened
            inference.IS_ROUND = default_round
        m = {k: float(np.median(v)) for k, v in times.items()}
        ratios.append(m[25] / m[50])
        print(
            f"{name}: ERM {m['erm']:.3f} s | rounds of 50: {m[50]:.3f} s,"
            f" {m[50] / m['erm']:.2f}x ERM,"
            f" {info[50][0]} proposals, ESS {info[50][1]:.1f} | rounds of 25: {m[25]:.3f} s,"
            f" {m[25] / m['erm']:.2f}x ERM, {info[25][0]} proposals, ESS {info[25][1]:.1f}"
            f" | 25/50 {m[25] / m[50]:.3f}",
            flush=True,
        )
    out = float(np.median(ratios))
    print(f"round25_over_round50={out:.3f}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--cases", nargs="*")
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
