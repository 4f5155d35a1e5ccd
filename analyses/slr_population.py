"""Single-location regression at the population level: where erf attention's PGD ends.

Projected gradient descent on erf attention's closed-form population risk
(:func:`bayes_ips.single_location.population.erf_population_pgd`, lambda refit
between rounds) from random starts on the spheres, next to the two stationary points
it can end at, the truth ``(k*, v*)`` and its swap ``(v*, k*)`` at their best lambda,
and the Bayes risk (Monte Carlo).  Writes population.csv and population.md into
--out-dir and prints the table.

    python analyses/slr_population.py --out-dir analyses/results/slr_population \
        [--d 50 200] [--gamma 1 0.7071067811865476] [--starts 2] [--steps 3000]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
import warnings

import jax
import numpy as np

from bayes_ips.errors import InputError
from bayes_ips.io import atomic_write
from bayes_ips.single_location.population import (
    erf_best_lambda,
    erf_population_pgd,
    erf_population_risk,
)
from bayes_ips.single_location.risk import bayes_risk
from bayes_ips.single_location.simulate import make_truth
from bayes_ips.single_location.sphere import random_unit

COLUMNS = [
    "d", "gamma", "start", "risk", "excess", "kappa", "nu", "k_dot_vstar", "v_dot_kstar",
    "lam", "steps", "grad_norm", "bayes_risk", "bayes_risk_se", "risk_truth", "lam_truth",
    "risk_swap", "lam_swap", "seconds",
]  # fmt: skip


def run(d: int, gamma: float, starts: int, steps: int, seed: int, n_bayes: int) -> list[dict]:
    key = jax.random.PRNGKey(seed)
    k_truth, k_bayes, k_start = jax.random.split(jax.random.fold_in(key, d), 3)
    truth = make_truth(k_truth, d, gamma=gamma)
    b = bayes_risk(k_bayes, truth, n_bayes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quad's roundoff notes at rtol 1e-12
        ref = {}
        for name, (k, v) in {"truth": (truth.k, truth.v), "swap": (truth.v, truth.k)}.items():
            lam = erf_best_lambda(k, v, truth)
            ref[name] = (erf_population_risk(k, v, lam, truth), lam)
    rows = []
    for s in range(starts):
        kk, kv = jax.random.split(jax.random.fold_in(k_start, s))
        t0 = time.perf_counter()
        fit = erf_population_pgd(
            truth, np.asarray(random_unit(kk, d)), np.asarray(random_unit(kv, d)), steps=steps
        )
        rows.append(
            {
                "d": d, "gamma": gamma, "start": s, "risk": fit.risk,
                "excess": fit.risk - b.mean, "kappa": fit.kappa, "nu": fit.nu,
                "k_dot_vstar": float(fit.k @ truth.v), "v_dot_kstar": float(fit.v @ truth.k),
                "lam": fit.lam, "steps": fit.steps, "grad_norm": fit.grad_norm,
                "bayes_risk": b.mean, "bayes_risk_se": b.se,
                "risk_truth": ref["truth"][0], "lam_truth": ref["truth"][1],
                "risk_swap": ref["swap"][0], "lam_swap": ref["swap"][1],
                "seconds": time.perf_counter() - t0,
            }
        )  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| d | gamma | start | PGD risk | excess | <k,k*> | <v,v*> | <k,v*> | <v,k*> | lambda "
        "| steps | Bayes risk | excess at (k*, v*) | excess at (v*, k*) |\n" + "|---" * 14 + "|\n"
    )
    body = "".join(
        f"| {r['d']} | {r['gamma']:.4g} | {r['start']} | {r['risk']:.4f} | {r['excess']:.4f} "
        f"| {r['kappa']:+.3f} | {r['nu']:+.3f} | {r['k_dot_vstar']:+.3f} | {r['v_dot_kstar']:+.3f} "
        f"| {r['lam']:.4f} | {r['steps']} | {r['bayes_risk']:.5f} "
        f"| {r['risk_truth'] - r['bayes_risk']:.4f} | {r['risk_swap'] - r['bayes_risk']:.4f} |\n"
        for r in rows
    )
    return head + body


def main(args: argparse.Namespace) -> list[dict]:
    jax.config.update("jax_enable_x64", True)
    for name in ("starts", "steps", "n_bayes"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    if any(d < 2 for d in args.d) or any(not (g > 0 and math.isfinite(g)) for g in args.gamma):
        raise InputError("--d must be >= 2 and --gamma positive and finite")
    rows = []
    for d in args.d:
        for g in args.gamma:
            rows += run(d, g, args.starts, args.steps, args.seed, args.n_bayes)
    os.makedirs(args.out_dir, exist_ok=True)
    with atomic_write(os.path.join(args.out_dir, "population.csv")) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS)
            w.writeheader()
            w.writerows(rows)
    md = (
        f"# erf attention: population PGD (seed {args.seed}, {args.steps} steps per round, "
        f"3 rounds, lambda refit; Bayes risk on {args.n_bayes} samples)\n\n" + table(rows)
    )
    with atomic_write(os.path.join(args.out_dir, "population.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(md)
    print(md)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--d", type=int, nargs="+", default=[50, 200])
    p.add_argument("--gamma", type=float, nargs="+", default=[1.0, math.sqrt(0.5)])
    p.add_argument("--starts", type=int, default=2, help="random starts per (d, gamma)")
    p.add_argument("--steps", type=int, default=3000, help="most PGD steps per round")
    p.add_argument("--n-bayes", type=int, default=20000, help="samples for the Bayes risk")
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    import sys

    try:
        main(build_parser().parse_args())
    except InputError as e:
        sys.exit(f"error: {e}")
