"""Where a posterior cell spends its time, stage by stage, cold and warm.

For paper cells (``configs/paper.toml``: phi* a random cubic B-spline, beta = 3, cube
tokens, N = 6, noise 0.1, repetition 0), by default (d, M) = (1, 4000) and (5, 4000),
each stage of the default posterior path is timed twice in one process: ``cold``
(the first call, compiling) and ``warm`` (the second, what a study or a loop over
datasets of one shape pays); ``cold - warm`` is the compilation.

Stages:

* ``erm``: the ERM fit (GCV K, 4 starts) that starts the posterior;
* ``laplace``: the model setup, the mode search (BFGS) and the Hessian;
* ``proposals``: the importance sampler's proposals, one Gram pass each, which also
  gives the conditional of c (the Rao-Blackwellisation);
* ``summaries``: what a study cell computes from the draws: the posterior-mean error
  on 20000 pairs, the 90% bands on 2000, the per-draw errors on 5000, g at 200 pairs;
* ``inference_data``: what ``bayes-ips sample`` adds: g at the evaluation pairs, the
  posterior predictive, the per-sample log-likelihood, the InferenceData.

Usage::

    python analyses/benchmarks/profile_posterior.py [--cells 1:4000 5:4000] [--out-json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def profile_cell(d: int, M: int, rep: int = 0, M_override: int | None = None) -> dict:
    from bench_posterior import paper_cell

    from bayes_ips.erm import fit_erm
    from bayes_ips.inference import SamplerConfig, run_is, sample_posterior
    from bayes_ips.metrics import l2_error
    from bayes_ips.posterior import draw_errors, g_draws, predict
    from bayes_ips.simulate import sample_pairs
    from bayes_ips.study.tasks.ips import cell_data, cell_erm_config

    spec = paper_cell(d, M, rep)
    if M_override:  # tiny runs for the tests: the paper cell's truth, fewer samples
        spec = {**spec, "M": M_override}
    truth, X, Y, key = cell_data(spec)
    X, Y = np.asarray(X), np.asarray(Y)
    k_erm, k_post, k_err = jax.random.split(key, 3)
    out: dict = {"d": d, "M": M, "rep": rep}
    for attempt in ("cold", "warm"):
        t = {}
        t0 = time.perf_counter()
        erm = fit_erm(k_erm, X, Y, cell_erm_config(spec))
        t["erm"] = time.perf_counter() - t0
        cfg = SamplerConfig(degree=erm.info["degree"])
        run = run_is(k_post, X, Y, cfg, erm=erm, progress=False)
        t["laplace"] = run.info["mode_time_s"]
        t["proposals"] = run.info["sampling_time_s"]
        post = run.posterior
        t0 = time.perf_counter()
        l2_error(k_err, lambda x, y, p=post: g_draws(p, x, y).mean(axis=(0, 1)), truth, 20000)
        x, y = sample_pairs(k_err, truth.tokens, 2000)
        predict(post, x, y, level=0.9)
        draw_errors(k_err, post, truth, n_pairs=5000)
        g_draws(post, x[:200], y[:200], rao_blackwell=True)
        t["summaries"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, _, run2 = sample_posterior(k_post, X, Y, cfg, erm=erm, progress=False)
        t["inference_data"] = time.perf_counter() - t0 - run2.wall_time_s
        out[attempt] = t
        out["info"] = {
            k: run.info[k] for k in ("bfgs_steps", "khat", "is_ess", "n_proposals", "unique_draws")
        } | {"K": int(run.knots.n_intervals)}
    return out


def main(args: argparse.Namespace) -> list[dict]:
    import bayes_ips

    bayes_ips.enable_x64()
    jax.config.update("jax_enable_compilation_cache", False)
    rows = []
    for cell in args.cells:
        d, M = (int(v) for v in cell.split(":"))
        res = profile_cell(d, M, M_override=args.M_override)
        rows.append(res)
        print(f"d = {d}, M = {M}: {res['info']}")
        print(f"  {'stage':>15s} {'cold':>8s} {'warm':>8s} {'compile':>8s} {'share':>6s}")
        total = sum(res["warm"].values())
        for stage, warm in res["warm"].items():
            cold = res["cold"][stage]
            print(
                f"  {stage:>15s} {cold:8.2f} {warm:8.2f} {cold - warm:8.2f} "
                f"{100 * warm / total:5.1f}%"
            )
        print(f"  {'total':>15s} {sum(res['cold'].values()):8.2f} {total:8.2f}", flush=True)
    if args.out_json:
        from bayes_ips.io import atomic_write

        with atomic_write(args.out_json) as tmp, open(tmp, "w") as f:
            json.dump({"args": vars(args), "cells": rows}, f, indent=2, default=float)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", default=["1:4000", "5:4000"], help="d:M pairs")
    p.add_argument("--out-json")
    p.add_argument("--M-override", type=int, default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
