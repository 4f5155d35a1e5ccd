"""Benchmark the posterior: the default path (``method="auto"``) against NUTS as it was.

One paper cell (``analyses/configs/paper.toml``: phi* a random cubic B-spline, beta = 3,
cube tokens, N = 6, noise 0.1; by default d = 5, M = 2000, repetition 0), the same
data for every estimator, one run:

* ``erm``: the ERM fit alone (GCV K, 4 starts), as a study cell fits it;
* ``default``: ``bayes_ips.inference.fit_posterior`` with ``SamplerConfig()`` (auto:
  Laplace-proposal importance sampling, NUTS where its Pareto k > 0.7; the model's
  basis chosen by its marginal likelihood), *its own ERM start included*;
* ``nuts_before``: the configuration of every posterior cell before 2026-12-02:
  NUTS, the ERM fit's GCV K, 2 chains x (300 warmup + 300 draws), the ERM fit not
  counted (it is shared).

Each path is first run once on the same data (compilation; timed and shown as
``cold``), then timed again (``warm``): the ratios use the warm times, which is what a
study or a script looping over datasets of one shape pays.  ``nuts_before`` runs once
(``--nuts-repeats``), cold: its compilation (~15 s) is small beside its run.  The
persistent compilation cache is off.  The errors are L2(rho) errors of the
posterior mean against g* on the same held-out pairs.

Printed at the end::

    posterior_over_erm=<float>   default path (warm, ERM start included) / ERM fit (warm)
    error_ratio=<float>          default path's posterior-mean error / nuts_before's
    posterior_speedup=<float>    nuts_before wall time / default path's (warm)

Usage::

    python analyses/benchmarks/bench_posterior.py [--d 5] [--M 2000] [--rep 0]
        [--nuts-repeats 1] [--skip-nuts] [--out-json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "paper.toml"


def paper_cell(d: int, M: int, rep: int, beta: float = 3.0) -> dict:
    """The spec of the paper's posterior cell (d, M, rep, beta)."""
    from bayes_ips.study import load_config, make_cells

    config = load_config(CONFIG)
    for cell in make_cells(config):
        s = cell.spec
        if (s["estimator"], s["d"], s["rep"]) == ("bayes_pm", d, rep) and s["M"] == M:
            if float(s["phi"]["beta"]) == beta:
                return s
    raise SystemExit(f"paper.toml has no posterior cell d={d}, M={M}, rep={rep}, beta={beta}")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(args: argparse.Namespace) -> dict:
    import bayes_ips

    bayes_ips.enable_x64()
    jax.config.update("jax_enable_compilation_cache", False)
    from bayes_ips.erm import fit_erm
    from bayes_ips.inference import SamplerConfig, fit_posterior
    from bayes_ips.metrics import l2_error
    from bayes_ips.posterior import g_draws
    from bayes_ips.study.tasks.ips import cell_data, cell_erm_config

    spec = paper_cell(args.d, args.M, args.rep)
    if args.M_override:  # tiny runs for the tests: the paper cell's truth, fewer samples
        spec = {**spec, "M": args.M_override}
    truth, X, Y, key = cell_data(spec)
    X, Y = np.asarray(X), np.asarray(Y)
    erm_cfg = cell_erm_config(spec)
    k_erm, k_post, k_err = jax.random.split(key, 3)
    print(
        f"cell: d={spec['d']} M={spec['M']} N={spec['N']} beta=3 rep={spec['rep']} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        flush=True,
    )

    def erm():
        return fit_erm(k_erm, X, Y, erm_cfg)

    def default():
        fit = fit_erm(k_erm, X, Y, erm_cfg)
        return fit_posterior(k_post, X, Y, SamplerConfig(degree=fit.info["degree"]), erm=fit)

    res: dict = {"cell": {k: spec[k] for k in ("d", "M", "N", "rep")}, "times": {}}
    fit, res["times"]["erm_cold"] = _timed(erm)
    _, res["times"]["erm_warm"] = _timed(erm)
    (run, post), res["times"]["default_cold"] = _timed(default)
    (run, post), res["times"]["default_warm"] = _timed(default)
    info = {k: v for k, v in run.info.items() if not isinstance(v, np.ndarray | dict)}
    res["default"] = {"sampler": run.method, "K": int(run.knots.n_intervals), **info}
    if "basis" in run.info:
        b = run.info["basis"]
        res["default"].update(
            uniform_weight=b["uniform_weight"], erm_K=b["erm_K"], basis_time_s=b["time_s"]
        )
    n = args.n_eval_pairs

    def pm_error(p):
        return l2_error(k_err, lambda x, y: g_draws(p, x, y).mean(axis=(0, 1)), truth, n)

    res["errors"] = {"erm": l2_error(k_err, fit.predict, truth, n).error}
    res["errors"]["default"] = pm_error(post).error
    for k, v in res["times"].items():
        print(f"  {k:>14s}: {v:8.1f} s", flush=True)
    print(f"  default path: {res['default']}", flush=True)
    if not args.skip_nuts:
        it = args.nuts_iterations
        cfg = SamplerConfig(
            method="nuts", chains=2, warmup=it, draws=it, degree=fit.info["degree"], basis="erm"
        )
        walls = []
        for _ in range(args.nuts_repeats):
            (nrun, npost), t = _timed(
                lambda: fit_posterior(k_post, X, Y, cfg, erm=fit, progress=False)
            )
            walls.append(t)
        res["times"]["nuts_before"] = float(np.median(walls))
        res["nuts_before"] = {
            "K": int(nrun.knots.n_intervals),
            "divergences": int(nrun.extra["diverging"].sum()),
            "steps_per_iter": float(nrun.extra["num_steps"].mean()),
        }
        res["errors"]["nuts_before"] = pm_error(npost).error
        print(f"  nuts_before: {res['times']['nuts_before']:8.1f} s {res['nuts_before']}")
    for k, v in res["errors"].items():
        print(f"  error {k:>12s}: {v:.4g}")
    t = res["times"]
    res["posterior_over_erm"] = t["default_warm"] / t["erm_warm"]
    print(f"posterior_over_erm={res['posterior_over_erm']:.3f}")
    if not args.skip_nuts:
        res["error_ratio"] = res["errors"]["default"] / res["errors"]["nuts_before"]
        res["posterior_speedup"] = t["nuts_before"] / t["default_warm"]
        print(f"error_ratio={res['error_ratio']:.4f}")
        print(f"posterior_speedup={res['posterior_speedup']:.2f}")
    if args.out_json:
        from bayes_ips.io import atomic_write

        with atomic_write(args.out_json) as tmp, open(tmp, "w") as f:
            json.dump({"args": vars(args), **res}, f, indent=2, default=float)
    return res


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=5)
    p.add_argument("--M", type=int, default=2000)
    p.add_argument("--rep", type=int, default=0)
    p.add_argument("--nuts-repeats", type=int, default=1)
    p.add_argument("--skip-nuts", action="store_true", help="only ERM and the default path")
    p.add_argument("--n-eval-pairs", type=int, default=20000)
    p.add_argument("--M-override", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--nuts-iterations", type=int, default=300, help=argparse.SUPPRESS)
    p.add_argument("--out-json")
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
