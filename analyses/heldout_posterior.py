"""The default posterior on held-out problems: cost against ERM, error against ERM, coverage.

Each case is a problem none of the package's defaults was chosen on (other phi*, token
laws, dimensions and sizes).  For each, on the same simulated data and as a user runs
them (``bayes-ips fit-erm`` and ``bayes-ips sample`` with their defaults):

* ``erm_s``: the ERM fit alone; ``post_s``: the default posterior path, its own ERM
  fit included, through the InferenceData that ``bayes-ips sample`` writes (g at
  the evaluation pairs, the posterior predictive, the log-likelihood);
  ``ratio = post_s / erm_s``;
* ``erm_error``, ``pm_error``: L2(rho) errors of ERM and of the posterior mean on the
  same held-out pairs; ``coverage``: the fraction of held-out pairs whose 90% band
  covers g*;
* the sampler that ran, its Pareto k, effective size and number of proposals.

Every case runs twice (the first compiles its shapes; both timings are kept, the
ratio uses the second, as a study or a loop over datasets pays it).  The persistent
compilation cache is off.

Usage::

    python analyses/heldout_posterior.py --out-dir DIR [--cases NAME ...] [--seed 0]

Writes ``DIR/heldout.csv`` and ``DIR/heldout.json`` (with the seed and the cases).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import matplotlib

matplotlib.use("Agg")

# name: (phi, beta, tokens, d, M, N, noise)
CASES = {
    "holder1.5-gaussian-d3": ("holder", 1.5, "gaussian", 3, 400, 6, 0.1),
    "sin-anisotropic-d4": ("sin", None, "anisotropic", 4, 800, 5, 0.2),
    "bspline2-correlated-d2": ("bspline", 2, "correlated", 2, 1200, 8, 0.1),
    "holder0.8-cube-d6": ("holder", 0.8, "cube", 6, 1500, 6, 0.05),
    "tanh-gaussian-d8": ("tanh", None, "gaussian", 8, 2000, 6, 0.3),
}


def case_data(name: str, seed: int):
    """``(truth, X, Y, keys)`` of a case: its simulated data and the keys
    ``(k_erm, k_post, k_err, k_band)`` of the fits and the error estimates."""
    import jax
    import numpy as np

    from bayes_ips.simulate import make_truth, simulate

    phi, beta, tokens, d, M, N, noise = CASES[name]
    key = jax.random.fold_in(jax.random.PRNGKey(seed), sum(map(ord, name)))
    k_truth, k_data, *keys = jax.random.split(key, 6)
    truth = make_truth(k_truth, d, 1, phi=phi, beta=beta, tokens=tokens, noise_sd=noise)
    X, Y = (np.asarray(a) for a in simulate(k_data, truth, M, N))
    return truth, X, Y, keys


def run_case(name: str, seed: int, n_eval: int = 20000) -> dict:
    import numpy as np

    from bayes_ips.erm import ERMConfig, fit_erm
    from bayes_ips.inference import SamplerConfig, sample_posterior
    from bayes_ips.metrics import l2_error
    from bayes_ips.posterior import g_draws, predict
    from bayes_ips.simulate import g_true, sample_pairs

    phi, beta, tokens, d, M, N, noise = CASES[name]
    truth, X, Y, (k_erm, k_post, k_err, k_band) = case_data(name, seed)
    out: dict = {"case": name, "phi": phi, "beta": beta, "tokens": tokens, "d": d, "M": M}
    out["N"], out["noise"] = N, noise
    for attempt in ("cold", "warm"):
        t0 = time.perf_counter()
        erm = fit_erm(k_erm, X, Y, ERMConfig())
        t1 = time.perf_counter()
        fit = fit_erm(k_erm, X, Y, ERMConfig())  # what `bayes-ips sample` fits first
        _, post, run = sample_posterior(k_post, X, Y, SamplerConfig(), erm=fit, progress=False)
        t2 = time.perf_counter()
        out[f"erm_s_{attempt}"], out[f"post_s_{attempt}"] = t1 - t0, t2 - t1
    out["ratio"] = out["post_s_warm"] / out["erm_s_warm"]
    out["erm_error"] = l2_error(k_err, erm.predict, truth, n_eval).error
    pm = l2_error(k_err, lambda x, y: g_draws(post, x, y).mean(axis=(0, 1)), truth, n_eval)
    out["pm_error"], out["pm_error_se"] = pm.error, pm.se
    x, y = sample_pairs(k_band, truth.tokens, 2000)
    band = predict(post, x, y, level=0.9)
    g = np.asarray(g_true(truth, x, y))
    out["coverage"] = float(np.mean((g >= band["g_lo"]) & (g <= band["g_hi"])))
    out["sampler"] = run.method
    out["K"] = int(run.knots.n_intervals)
    if "basis" in run.info:  # the model's own basis (by marginal likelihood) and ERM's K
        b = run.info["basis"]
        out.update(uniform_weight=b["uniform_weight"], erm_K=b["erm_K"], basis_s=b["time_s"])
    for k in ("khat", "is_ess", "n_proposals", "accept_rate", "fallback"):
        if k in run.info:
            out[k] = run.info[k]
    return out


def main(args: argparse.Namespace) -> list[dict]:
    import jax

    import bayes_ips
    from bayes_ips.io import atomic_write

    bayes_ips.enable_x64()
    jax.config.update("jax_enable_compilation_cache", False)
    os.makedirs(args.out_dir, exist_ok=True)
    rows = []
    for name in args.cases or list(CASES):
        row = run_case(name, args.seed)
        rows.append(row)
        print(
            f"{name:>26s}: ratio {row['ratio']:5.2f} ({row['post_s_warm']:.1f} s / "
            f"{row['erm_s_warm']:.1f} s), PM {row['pm_error']:.3g} vs ERM {row['erm_error']:.3g}"
            f", coverage {row['coverage']:.3f}, {row['sampler']} k {row.get('khat', 'nan')}",
            flush=True,
        )
    import csv

    keys = sorted({k for r in rows for k in r})
    with atomic_write(os.path.join(args.out_dir, "heldout.csv")) as tmp, open(tmp, "w") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    with atomic_write(os.path.join(args.out_dir, "heldout.json")) as tmp, open(tmp, "w") as f:
        json.dump({"seed": args.seed, "cases": CASES, "rows": rows}, f, indent=2, default=str)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--cases", nargs="*", choices=list(CASES))
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
