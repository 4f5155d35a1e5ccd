"""The tail of the spline beyond its outer knots: effect on the L2 error and its s.e.

Held-out scores fall beyond the outer knots (the extremes of the training
scores), often so for Gaussian tokens.  Each cell is fitted once by ERM (the
package's defaults); the fit's coefficients are then scored with each tail
(``Knots.tail``: ``"poly"``, the boundary polynomial; ``"linear"``, the tangent
at the outer knot; ``"flat"``, the value there) on the same held-out pairs (the
same evaluation key and number of pairs).  Inside the knots the predictions are
identical, so the difference is the extrapolation alone.  The cells follow the study's key tree
(:func:`bayes_ips.study.tasks.ips.cell_data`); the output is a JSON list of
per-cell records and a summary (medians over cells) on stdout.

Usage::

    python analyses/tail_effect.py --family holder --beta 1.5 --tokens gaussian \\
        --d 3 --M 400 --seeds 0 1 2 3 4 5 --out analyses/results/tail/holder.json

The tail does not enter the fit when every training score lies inside the knots
(``n_outside = 0``; ERM puts the outer knots at the extremes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from bayes_ips.erm import fit_erm  # noqa: E402
from bayes_ips.metrics import l2_error  # noqa: E402
from bayes_ips.simulate import sample_pairs  # noqa: E402
from bayes_ips.spline import count_outside  # noqa: E402
from bayes_ips.study.tasks.ips import _EVAL, _FIT, cell_data, cell_erm_config  # noqa: E402


def cell_spec(args, seed: int, rep: int) -> dict:
    """A study cell's spec (the fields :func:`cell_data` and :func:`cell_erm_config` read)."""
    return {
        "seed": seed,
        "rep": rep,
        "phi": {"family": args.family, "beta": args.beta},
        "d": args.d,
        "M": args.M,
        "N": args.N,
        "rank": 1,
        "tokens": args.tokens,
        "rho": 0.0,
        "noise": args.noise,
        "noise_law": "gaussian",
        "estimator": "erm",
        "settings": {"knot_placement": args.knot_placement},
    }


def run_cell(args, seed: int, rep: int) -> dict:
    spec = cell_spec(args, seed, rep)
    truth, X, Y, key = cell_data(spec)
    k_fit, k_eval = (jax.random.fold_in(key, t) for t in (_FIT, _EVAL))
    t0 = time.perf_counter()
    fit = fit_erm(k_fit, X, Y, cell_erm_config(spec))
    rec = {"seed": seed, "rep": rep, "K": fit.info["K"], "fit_time_s": time.perf_counter() - t0}
    # the held-out pairs l2_error draws with k_eval (its first chunk)
    x, y = sample_pairs(k_eval, truth.tokens, args.pairs)
    u = jnp.einsum("pi,ij,pj->p", x, jnp.asarray(fit.A), y)
    rec["frac_outside"] = float(count_outside(u, fit.knots)) / args.pairs
    for tail in args.tails:
        f = dataclasses.replace(fit, knots=dataclasses.replace(fit.knots, tail=tail))
        err = l2_error(k_eval, f.predict, truth, args.pairs)
        rec[f"error_{tail}"] = err.error
        rec[f"se_{tail}"] = err.se
        rec[f"rse_{tail}"] = err.se / err.error
    return rec


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="holder")
    p.add_argument("--beta", type=float, default=1.5)
    p.add_argument("--tokens", default="gaussian")
    p.add_argument("--d", type=int, default=3)
    p.add_argument("--M", type=int, default=400)
    p.add_argument("--N", type=int, default=6)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--reps", type=int, nargs="+", default=[0])
    p.add_argument("--pairs", type=int, default=20000)
    p.add_argument("--tails", nargs="+", default=["poly", "linear", "flat"])
    p.add_argument(
        "--knot-placement",
        default="auto",
        choices=["auto", "quantile"],
        help="ERM's knots: the package's default (auto, as the minimax study's erm_mixed) "
        "or quantile (the study specs' default before 2026-12-04, as the first table)",
    )
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.family == "bspline":
        args.beta = int(args.beta)
    recs = []
    for seed in args.seeds:
        for rep in args.reps:
            rec = run_cell(args, seed, rep)
            recs.append(rec)
            print(json.dumps(rec), flush=True)
    summary = {"config": vars(args), "n_cells": len(recs)}
    for tail in args.tails:
        summary[f"median_error_{tail}"] = float(np.median([r[f"error_{tail}"] for r in recs]))
        summary[f"median_rse_{tail}"] = float(np.median([r[f"rse_{tail}"] for r in recs]))
    summary["median_frac_outside"] = float(np.median([r["frac_outside"] for r in recs]))
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"summary": summary, "cells": recs}, fh, indent=1)


if __name__ == "__main__":
    main()
