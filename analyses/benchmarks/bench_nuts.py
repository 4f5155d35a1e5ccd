"""Benchmark NUTS: effective samples of g per second, three samplers side by side.

All three samplers fit the same simulated data with the same knots, chains,
warmup and draws, one after the other in one run (so that load from other
processes hits them alike):

* ``collapsed``: ``bayes_ips.inference.run_nuts`` with ``collapsed=True`` (the
  spline coefficients integrated out; g Rao-Blackwellised afterwards);
* ``explicit``: ``run_nuts`` with ``collapsed=False`` (c sampled explicitly; g is
  still Rao-Blackwellised afterwards, as the package does);
* ``straightforward``: a NumPyro model written the obvious way, defined here:
  the dense (M, N, N, n_basis) B-spline basis by the Cox--de Boor recursion,
  c ~ N(0, y_scale^2) iid, U, V ~ N(0, 1) with A = U V^T and no gauge fixing,
  sigma ~ HalfNormal(y_scale), Y ~ N(mean, sigma); NUTS with NumPyro's defaults
  (diagonal mass matrix), ``init_to_median``.  g is evaluated from its own draws
  of c and A = U V^T.

The score of a sampler is

    ESS/s = min over the evaluation pairs of the bulk ESS of g(x_p, y_p)
            / wall time of the whole sampler run (compilation + warmup + sampling).

``g`` is evaluated on the same 200 pairs ``eval_pairs(PRNGKey(4), X, 200)`` for all
three.  The ERM fit that places the knots (and starts the package's chains) is
shared set-up, fitted once before any timing; its time, and the time of the
post-processing of each run (Rao-Blackwellisation, g), are reported but not
counted.  The persistent compilation cache is switched off, and every sampler is
a different program, so each one pays its own compilation.

Usage::

    python analyses/benchmarks/bench_nuts.py [--M 500] [--warmup 500] [--draws 500]
        [--chains 2] [--seed 3] [--out-json PATH]

The last two lines are ``explicit_speedup_vs_straightforward=<float>`` and
``collapsed_speedup_vs_straightforward=<float>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernel import dense_basis  # noqa: E402  (the same dense recursion)

N_TOKENS, D, RANK, N_INTERVALS, DEGREE = 6, 3, 1, 10, 3
N_EVAL = 200
DATA_KEYS = {"truth": 0, "simulate": 1, "erm": 2, "eval_pairs": 4, "rao_blackwell": 5}


# ------------------------------------------------------------ the straightforward model


def straightforward_model(X, Y, t, *, degree: int, rank: int, n_coef: int, y_scale: float):
    """The obvious NumPyro program: dense basis, explicit c, raw factors."""
    import numpyro
    import numpyro.distributions as dist

    M, N, d = X.shape
    U = numpyro.sample("U", dist.Normal(0.0, 1.0).expand([d, rank]).to_event(2))
    V = numpyro.sample("V", dist.Normal(0.0, 1.0).expand([d, rank]).to_event(2))
    c = numpyro.sample("c", dist.Normal(0.0, y_scale).expand([n_coef]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(y_scale))
    A = U @ V.T
    S = jnp.einsum("mia,ab,mjb->mij", X, A, X)  # (M, N, N)
    phi = dense_basis(S, t, degree) @ c  # (M, N, N)
    off = (1.0 - jnp.eye(N)) / (N - 1)
    mean = jnp.sum(phi * off, axis=-1)
    numpyro.sample("Y", dist.Normal(mean, sigma).to_event(2), obs=Y)


def run_straightforward(key, X, Y, knots, y_scale, chains, warmup, draws, init, progress=False):
    """Build and run the straightforward sampler; everything in here is timed."""
    from numpyro.infer import MCMC, NUTS, init_to_median, init_to_sample

    from bayes_ips.spline import full_knot_vector, n_basis

    strategy = {"median": init_to_median, "sample": init_to_sample}[init]
    kernel = NUTS(straightforward_model, init_strategy=strategy)
    mcmc = MCMC(
        kernel,
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=progress,
    )
    mcmc.run(
        key,
        jnp.asarray(X),
        jnp.asarray(Y),
        full_knot_vector(knots),
        degree=knots.degree,
        rank=RANK,
        n_coef=n_basis(knots),
        y_scale=y_scale,
        extra_fields=("diverging", "num_steps"),
    )
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    return samples, extra


def g_from_factors(A, c, knots, x, y):
    """g_s(x_p, y_p) = phi_{c_s}(x_p^T A_s y_p) for draws A (C, D, d, d), c (C, D, K)."""
    from bayes_ips.spline import spline_eval

    C, D = A.shape[:2]
    x, y = jnp.asarray(x), jnp.asarray(y)

    @jax.jit
    def ev(A, c):
        return jax.vmap(lambda a, cc: spline_eval(jnp.einsum("pi,ij,pj->p", x, a, y), cc, knots))(
            A, c
        )

    out = ev(jnp.asarray(A).reshape((C * D,) + A.shape[2:]), jnp.asarray(c).reshape(C * D, -1))
    return np.asarray(out).reshape(C, D, -1)


# ------------------------------------------------------------------- diagnostics


def diagnostics(g: np.ndarray, extra: dict) -> dict:
    """Min bulk ESS and max R-hat over the pairs; divergences; leapfrog steps."""
    import arviz as az

    ds = az.convert_to_dataset({"g": g})  # (chain, draw, pair)
    ess = np.asarray(az.ess(ds, method="bulk")["g"])
    rhat = np.asarray(az.rhat(ds)["g"])
    return {
        "min_bulk_ess": float(np.nanmin(ess)) if np.isfinite(ess).any() else float("nan"),
        "median_bulk_ess": float(np.nanmedian(ess)) if np.isfinite(ess).any() else float("nan"),
        "rhat_max": float(np.nanmax(rhat)) if np.isfinite(rhat).any() else float("nan"),
        "divergences": int(np.sum(extra["diverging"])),
        "steps_per_iter": float(np.mean(extra["num_steps"])),
        "max_steps": int(np.max(extra["num_steps"])),
    }


def _progress(name: str, r: dict, results: dict, path: str | None) -> None:
    """One line as soon as a sampler is done; the partial numbers to ``path``."""
    if path:  # overwritten by the full record at the end
        with open(path, "w") as f:
            json.dump({"partial": True, "results": results}, f, indent=2)
    print(
        f"[done] {name}: wall {r['wall_s']:.1f} s, min bulk ESS {r['min_bulk_ess']:.1f}, "
        f"{r['divergences']} divergences, {r['steps_per_iter']:.1f} steps/iteration, "
        f"1-min load average at start/end {r['loadavg_1min_start_end']}",
        flush=True,
    )


# -------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict:
    jax.config.update("jax_enable_x64", True)
    # every sampler pays its own compilation, on every invocation of this script
    jax.config.update("jax_enable_compilation_cache", False)

    from bayes_ips.erm import ERMConfig, fit_erm
    from bayes_ips.inference import SamplerConfig, eval_pairs, model_knots, run_nuts
    from bayes_ips.posterior import g_draws, posterior_from_run
    from bayes_ips.simulate import make_truth, simulate
    from bayes_ips.spline import count_outside, n_basis

    t_script = time.perf_counter()
    M = args.M
    truth = make_truth(
        jax.random.PRNGKey(DATA_KEYS["truth"]), D, RANK, phi="tanh", tokens="cube", noise_sd=0.1
    )
    X, Y = simulate(jax.random.PRNGKey(DATA_KEYS["simulate"]), truth, M, N_TOKENS)
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)

    # shared set-up, not timed against any sampler
    t0 = time.perf_counter()
    erm = fit_erm(
        jax.random.PRNGKey(DATA_KEYS["erm"]), X, Y, ERMConfig(rank=RANK, n_intervals=N_INTERVALS)
    )
    t_erm = time.perf_counter() - t0
    knots = model_knots(X, erm, N_INTERVALS, DEGREE)
    y_scale = float(np.sqrt(np.mean(Y**2)))
    x_eval, y_eval = eval_pairs(jax.random.PRNGKey(DATA_KEYS["eval_pairs"]), X, N_EVAL)
    key = jax.random.PRNGKey(args.seed)

    print(
        f"M={M} N={N_TOKENS} d={D} r={RANK} K={knots.n_intervals} degree={knots.degree} "
        f"n_basis={n_basis(knots)} chains={args.chains} warmup={args.warmup} "
        f"draws={args.draws} seed={args.seed} n_eval={N_EVAL} "
        f"straightforward_init={args.plain_init} plain_progress={args.plain_progress}",
        flush=True,
    )
    print(
        f"ERM fit (shared set-up, not counted): {t_erm:.2f} s, "
        f"train_mse={erm.info['train_mse']:.5f}, sigma_hat={erm.info['sigma_hat']:.4f}",
        flush=True,
    )

    results: dict[str, dict] = {}
    g_eval: dict[str, np.ndarray] = {}

    # ---- 1, 2: the package's model, collapsed and explicit
    for name, collapsed in (("collapsed", True), ("explicit", False)):
        cfg = SamplerConfig(
            rank=RANK,
            collapsed=collapsed,
            chains=args.chains,
            warmup=args.warmup,
            draws=args.draws,
            n_intervals=N_INTERVALS,
            degree=DEGREE,
        )
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        run = run_nuts(key, X, Y, cfg, erm=erm, seed=args.seed, progress=False)
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()[0]
        t0 = time.perf_counter()
        post = posterior_from_run(jax.random.PRNGKey(DATA_KEYS["rao_blackwell"]), run, X, Y)
        g = g_draws(post, x_eval, y_eval, rao_blackwell=True)
        t_post = time.perf_counter() - t0
        g_eval[name] = g
        results[name] = {"wall_s": wall, "post_s": t_post, **diagnostics(g, run.extra)}
        results[name]["run_wall_time_s"] = run.wall_time_s
        results[name]["loadavg_1min_start_end"] = [load0, load1]
        _progress(name, results[name], results, args.out_json)
        if not collapsed:
            # for reference only: g from the explicit run's own draws of c (not RB)
            from bayes_ips.models.lowrank_spline import gauge_factors

            Un, Vn = jax.vmap(jax.vmap(gauge_factors))(
                jnp.asarray(run.samples["U"]), jnp.asarray(run.samples["V"])
            )
            A = np.asarray(jnp.einsum("cdir,cdjr->cdij", Un, Vn))
            g_own = g_from_factors(A, run.samples["c"], run.knots, x_eval, y_eval)
            results[name]["min_bulk_ess_own_c"] = diagnostics(g_own, run.extra)["min_bulk_ess"]

    # ---- 3: the straightforward model
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    samples, extra = run_straightforward(
        key,
        X,
        Y,
        knots,
        y_scale,
        args.chains,
        args.warmup,
        args.draws,
        args.plain_init,
        args.plain_progress,
    )
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    t0 = time.perf_counter()
    A = np.einsum("cdir,cdjr->cdij", samples["U"], samples["V"])
    g = g_from_factors(A, samples["c"], knots, x_eval, y_eval)
    t_post = time.perf_counter() - t0
    g_eval["straightforward"] = g
    results["straightforward"] = {"wall_s": wall, "post_s": t_post, **diagnostics(g, extra)}
    results["straightforward"]["loadavg_1min_start_end"] = [load0, load1]
    # scores of the evaluation pairs outside the knots: spline_eval extrapolates
    # them, while the model's dense basis is zero there (should be ~0 of them)
    u_eval = np.einsum("pi,cdij,pj->cdp", x_eval, A, y_eval)
    outside = int(count_outside(jnp.asarray(u_eval), knots))
    results["straightforward"]["eval_scores_outside_knots"] = outside
    results["straightforward"]["A_frobenius_median"] = float(
        np.median(np.sqrt(np.sum(A**2, axis=(-2, -1))))
    )
    _progress("straightforward", results["straightforward"], results, args.out_json)

    for r in results.values():
        r["ess_per_s"] = r["min_bulk_ess"] / r["wall_s"]

    # ---- report
    print()
    hdr = (
        f"{'sampler':>16s} {'wall_s':>9s} {'min_ESS':>9s} {'ESS/s':>9s} {'diverg':>7s} "
        f"{'steps/it':>9s} {'Rhat_max':>9s} {'post_s':>8s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, r in results.items():
        print(
            f"{name:>16s} {r['wall_s']:9.2f} {r['min_bulk_ess']:9.1f} {r['ess_per_s']:9.3f} "
            f"{r['divergences']:7d} {r['steps_per_iter']:9.1f} {r['rhat_max']:9.4f} "
            f"{r['post_s']:8.2f}"
        )
    print()
    print(
        "wall_s: whole sampler run (compilation + warmup + sampling); post_s: "
        "Rao-Blackwellisation + g (package) or g from the draws (straightforward), not counted"
    )
    print(
        f"explicit: min bulk ESS of g from its own draws of c (not Rao-Blackwellised): "
        f"{results['explicit']['min_bulk_ess_own_c']:.1f}"
    )
    sf = results["straightforward"]
    print(
        f"straightforward: median ||U V^T||_F = {sf['A_frobenius_median']:.3f}; "
        f"evaluation scores outside the knots: {outside} of {u_eval.size}"
    )
    # posterior means of g agree? (a sanity check that all three target the same g)
    gm = {k: v.mean(axis=(0, 1)) for k, v in g_eval.items()}
    for k in ("explicit", "straightforward"):
        diff = float(np.sqrt(np.mean((gm[k] - gm["collapsed"]) ** 2)))
        print(f"rms difference of posterior-mean g, {k} vs collapsed: {diff:.4f}")
    print(f"total script time: {time.perf_counter() - t_script:.1f} s")
    print()
    c_, e_, s_ = (results[k]["ess_per_s"] for k in ("collapsed", "explicit", "straightforward"))
    ratios = {
        "collapsed_vs_explicit": c_ / e_ if e_ > 0 else float("inf"),
        "explicit_speedup_vs_straightforward": e_ / s_ if s_ > 0 else float("inf"),
        "collapsed_speedup_vs_straightforward": c_ / s_ if s_ > 0 else float("inf"),
    }
    print(f"ESS/s ratio collapsed / explicit = {ratios['collapsed_vs_explicit']:.2f}")
    print(
        f"explicit_speedup_vs_straightforward={ratios['explicit_speedup_vs_straightforward']:.4g}"
    )
    print(
        f"collapsed_speedup_vs_straightforward={ratios['collapsed_speedup_vs_straightforward']:.4g}"
    )

    out = {
        "config": {
            "M": M,
            "N": N_TOKENS,
            "d": D,
            "rank": RANK,
            "n_intervals": N_INTERVALS,
            "degree": DEGREE,
            "n_basis": int(n_basis(knots)),
            "chains": args.chains,
            "warmup": args.warmup,
            "draws": args.draws,
            "n_eval": N_EVAL,
            "straightforward_init": args.plain_init,
            "straightforward_progress_bar": args.plain_progress,
            "truth": {"phi": "tanh", "tokens": "cube", "noise_sd": 0.1},
        },
        "seed": args.seed,
        "data_keys": DATA_KEYS,
        "erm_s": t_erm,
        "results": results,
        "ratios": ratios,
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "numpyro": __import__("numpyro").__version__,
            "arviz": __import__("arviz").__version__,
        },
    }
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--M", type=int, default=500)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--seed", type=int, default=3, help="key of the sampler runs")
    p.add_argument(
        "--plain-init",
        choices=("median", "sample"),
        default="median",
        help="init strategy of the straightforward model",
    )
    p.add_argument(
        "--plain-progress",
        action="store_true",
        help="NumPyro progress bar (stderr) for the straightforward sampler (shows its pace)",
    )
    p.add_argument("--out-json", default=None, help="save the numbers, config and seed here")
    main(p.parse_args())
