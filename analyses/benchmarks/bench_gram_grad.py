"""Benchmark the derivative rule of ``gram``: before it (autodiff) against with it.

All three compute the value and the gradient in (U, V) of the collapsed
log-likelihood ``collapsed_loglik(gram(U, V, X, Y, knots), sigma, Q)`` -- what NUTS
evaluates at every leapfrog step of the collapsed model -- on the same data, side by
side in one run:

* ``before``: ``gram`` as it was before its derivative rule (:func:`gram_before`,
  verbatim): JAX autodiff through the Cox--de Boor triangle and the scatters of
  every chunk, and a last, shorter chunk outside the scan;
* ``autodiff``: today's chunking (one chunk size, no separate last chunk) with
  derivatives still by autodiff (:func:`gram_autodiff`): separates the two changes;
* ``rule``: ``bayes_ips.pairwise.gram``, whose tangents come from ``B'`` of the
  local basis in the same pass as the values (reverse mode transposes them).

For each setting (M, N, d, K; rank 1, cubic splines; X, Y, the knots and Q are jit
arguments; each with the model's chunk size: ``grad_chunk(N)`` before,
``grad_chunk(N, M)`` now, which keeps up to 65536 scores in one chunk):

* compile time of each jitted value-and-gradient: lower + compile, repeated
  ``--compile-repeats`` times alternately with all caches cleared; median of the
  CPU time of the process (less sensitive to other jobs than wall time, which is
  shown too);
* run time: ``--repeats`` interleaved calls, median and min;
* a check first: equal values and gradients that agree to 1e-9 (relative).

With ``--nuts``, also ``bayes_ips.inference.run_nuts`` (collapsed model, ERM start,
Laplace mass matrix) on simulated data, with each ``gram`` alternately
(``--nuts-repeats`` times each) and the same key: wall time (compilation included,
the persistent compilation cache off), divergences, leapfrog steps per iteration,
and the min bulk ESS of g on 200 evaluation pairs (Rao-Blackwellised, not timed).
``before`` is switched in by replacing the model module's ``gram`` (and its chunk
size of then) for that run only.

Usage::

    python analyses/benchmarks/bench_gram_grad.py [--repeats 21] [--compile-repeats 3]
        [--setting M N d K ...] [--nuts] [--nuts-M 500] [--warmup 300] [--draws 300]
        [--chains 2] [--nuts-repeats 1] [--skip-kernel]

The last lines are ``speedup_M<M>_N<N>_d<d>_K<K>=<float>`` (before / rule median
run time), one per setting.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np

DEFAULT_SETTINGS = ((500, 6, 3, 10), (2000, 8, 5, 20), (10000, 8, 5, 40))
SIGMA = 0.5


@partial(jax.jit, static_argnames=("chunk_size",))
def gram_before(U, V, X, Y, knots, chunk_size):
    """``bayes_ips.pairwise.gram`` before its derivative rule, verbatim (for comparison)."""
    import jax.numpy as jnp

    from bayes_ips.pairwise import GramStats, _chunk_design, _crossprod, _scan_chunks
    from bayes_ips.spline import n_basis

    X = jnp.asarray(X)
    Y = jnp.asarray(Y)
    nb = n_basis(knots)

    def body(acc, chunk):
        Xc, Yc = chunk
        F, n_out = _chunk_design(U, V, Xc, knots)
        y = Yc.reshape(-1)
        FtF, FtY, YtY, n_obs, n_outside = acc
        return (
            GramStats(
                FtF + _crossprod(F),
                FtY + y @ F,
                YtY + y @ y,
                n_obs + y.shape[0],
                n_outside + jnp.sum(n_out).astype(n_outside.dtype),
            ),
            None,
        )

    zero = jnp.zeros((), X.dtype)
    init = GramStats(
        jnp.zeros((nb, nb), X.dtype), jnp.zeros((nb,), X.dtype), zero, zero, jnp.zeros((), jnp.int_)
    )
    out, _ = _scan_chunks(body, init, (X, Y), chunk_size)
    return out


@partial(jax.jit, static_argnames=("chunk_size",))
def gram_autodiff(U, V, X, Y, knots, chunk_size):
    """Today's values of ``gram`` (same chunks), differentiated by JAX autodiff, not the rule."""
    import jax.numpy as jnp

    from bayes_ips.pairwise import GramStats, _gram_pass

    b, s, m = knots.breaks, knots.degree, knots.multiplicity
    (FtF, FtY, YtY, n_out), _ = _gram_pass(U, V, b, X, Y, chunk_size, s, m, knots.tail)
    return GramStats(FtF, FtY, YtY, jnp.asarray(X.shape[0] * X.shape[1], X.dtype), n_out)


def _impls() -> dict:
    from bayes_ips.pairwise import gram

    return {"before": gram_before, "autodiff": gram_autodiff, "rule": gram}


def _problem(M: int, N: int, d: int, K: int, seed: int):
    import jax.numpy as jnp

    from bayes_ips.collapsed import curvature_penalty, pspline_precision
    from bayes_ips.pairs import off_diagonal
    from bayes_ips.pairwise import pair_scores
    from bayes_ips.spline import make_knots, quantile_breaks

    kx, ky, ku, kv = jax.random.split(jax.random.PRNGKey(seed), 4)
    X = jax.random.uniform(kx, (M, N, d), minval=-1.0, maxval=1.0)
    U = jax.random.normal(ku, (d, 1))
    V = jax.random.normal(kv, (d, 1))
    U = U / jnp.sqrt(jnp.sum((U @ V.T) ** 2))
    S = off_diagonal(pair_scores(X, U, V))  # (M, N (N - 1))
    knots = make_knots(quantile_breaks(S, K), 3, 1)
    Y = jnp.tanh(2.0 * jnp.mean(jnp.asarray(S).reshape(M, N, N - 1), axis=-1))
    Y = Y + 0.1 * jax.random.normal(ky, (M, N))
    Q = pspline_precision(curvature_penalty(knots, float(S.std())), 0.3, 10.0)
    return U, V, X, Y, knots, Q


def _value_and_grad(gram_fn, chunk: int):
    from bayes_ips.collapsed import collapsed_loglik

    def f(U, V, X, Y, knots, Q):
        return collapsed_loglik(gram_fn(U, V, X, Y, knots, chunk), SIGMA, Q)

    return jax.jit(jax.value_and_grad(f, (0, 1)))


def _compile_times(makers: dict, args: tuple, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (CPU s, wall s) of lower + compile of each program, alternately, caches cleared."""
    cpu: dict[str, list[float]] = {k: [] for k in makers}
    wall: dict[str, list[float]] = {k: [] for k in makers}
    for _ in range(repeats):
        for name, make in makers.items():
            jax.clear_caches()
            c0, w0 = time.process_time(), time.perf_counter()
            make().lower(*args).compile()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    return {k: (float(np.median(cpu[k])), float(np.median(wall[k]))) for k in makers}


def bench_setting(M: int, N: int, d: int, K: int, repeats: int, compile_repeats: int, seed: int):
    from bayes_ips.pairwise import grad_chunk

    chunks = {"before": grad_chunk(N), "autodiff": grad_chunk(N, M), "rule": grad_chunk(N, M)}
    args = _problem(M, N, d, K, seed)
    impls = _impls()
    compile_s = _compile_times(
        {k: (lambda k=k, g=g: _value_and_grad(g, chunks[k])) for k, g in impls.items()},
        args,
        compile_repeats,
    )
    fns = {k: _value_and_grad(g, chunks[k]) for k, g in impls.items()}
    # correctness first: the same value and gradient (to rounding) from all three
    out = {k: jax.block_until_ready(f(*args)) for k, f in fns.items()}
    v_ref, g_ref = out["before"]
    for v, g in out.values():
        np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-12)
        for a, b in zip(g, g_ref, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=0)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved, so load changes hit all alike
        for name, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "setting": (M, N, d, K),
        "chunk": chunks,
        "median_s": med,
        "min_s": {k: float(np.min(v)) for k, v in times.items()},
        "compile_cpu_s": {k: v[0] for k, v in compile_s.items()},
        "compile_wall_s": {k: v[1] for k, v in compile_s.items()},
        "speedup": med["before"] / med["rule"],
        "compile_ratio": compile_s["before"][0] / compile_s["rule"][0],
    }


# ----------------------------------------------------------------------------- NUTS


@contextlib.contextmanager
def _model_gram(impl: str):
    """Swap the model module's ``gram`` for one of :func:`_impls` (for one run)."""
    import bayes_ips.models.lowrank_spline as model

    from bayes_ips.pairwise import grad_chunk

    saved = model.gram, model.grad_chunk
    model.gram = _impls()[impl]
    if impl == "before":  # and the model's chunk size of then
        model.grad_chunk = lambda n_tokens, n_samples=None: grad_chunk(n_tokens)
    jax.clear_caches()  # no program traced with the other gram may be reused
    try:
        yield
    finally:
        model.gram, model.grad_chunk = saved
        jax.clear_caches()


def bench_nuts(
    M: int, warmup: int, draws: int, chains: int, seed: int, repeats: int = 1
) -> dict[str, list[dict]]:
    """``run_nuts`` with each ``gram``, alternately, ``repeats`` times each."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_nuts import DATA_KEYS, diagnostics

    from bayes_ips.erm import ERMConfig, fit_erm
    from bayes_ips.inference import SamplerConfig, eval_pairs, run_nuts
    from bayes_ips.posterior import g_draws, posterior_from_run
    from bayes_ips.simulate import make_truth, simulate

    N, d, K = 6, 3, 10
    truth = make_truth(
        jax.random.PRNGKey(DATA_KEYS["truth"]), d, 1, phi="tanh", tokens="cube", noise_sd=0.1
    )
    X, Y = simulate(jax.random.PRNGKey(DATA_KEYS["simulate"]), truth, M, N)
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    erm = fit_erm(jax.random.PRNGKey(DATA_KEYS["erm"]), X, Y, ERMConfig(rank=1, n_intervals=K))
    x_eval, y_eval = eval_pairs(jax.random.PRNGKey(DATA_KEYS["eval_pairs"]), X, 200)
    cfg = SamplerConfig(rank=1, chains=chains, warmup=warmup, draws=draws, n_intervals=K, degree=3)
    out: dict[str, list[dict]] = {"before": [], "rule": []}
    for impl in [k for _ in range(repeats) for k in out]:
        with _model_gram(impl):
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            run = run_nuts(jax.random.PRNGKey(seed), X, Y, cfg, erm=erm, progress=False)
            wall = time.perf_counter() - t0
        post = posterior_from_run(jax.random.PRNGKey(DATA_KEYS["rao_blackwell"]), run, X, Y)
        g = g_draws(post, x_eval, y_eval, rao_blackwell=True)
        r = {"wall_s": wall, "load_1min_start": load0, **diagnostics(g, run.extra)}
        out[impl].append(r)
        print(
            f"[nuts {impl}] wall {wall:.1f} s, min bulk ESS(g) {r['min_bulk_ess']:.0f} "
            f"({r['min_bulk_ess'] / wall:.1f}/s), "
            f"{r['divergences']} divergences, {r['steps_per_iter']:.1f} steps/iteration, "
            f"load {load0:.1f}",
            flush=True,
        )
    return out


# ----------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict:
    jax.config.update("jax_enable_x64", True)
    # every program pays its own compilation
    jax.config.update("jax_enable_compilation_cache", False)
    settings = [tuple(s) for s in args.setting] if args.setting else DEFAULT_SETTINGS
    if getattr(args, "skip_kernel", False):
        settings = []
    results = []
    print(f"repeats={args.repeats} compile_repeats={args.compile_repeats} seed={args.seed}")
    for M, N, d, K in settings:
        r = bench_setting(M, N, d, K, args.repeats, args.compile_repeats, args.seed)
        results.append(r)
        print(f"M={M} N={N} d={d} K={K} load={os.getloadavg()[0]:.1f}")
        for k in r["median_s"]:
            print(
                f"  {k:>8s} (chunk {r['chunk'][k]:5d}): value+grad median "
                f"{r['median_s'][k] * 1e3:8.2f} ms "
                f"(min {r['min_s'][k] * 1e3:8.2f} ms); compile {r['compile_cpu_s'][k]:5.2f} s "
                f"CPU ({r['compile_wall_s'][k]:5.2f} s wall)",
                flush=True,
            )
    out = {"kernel": results}
    if args.nuts:
        out["nuts"] = bench_nuts(
            args.nuts_M, args.warmup, args.draws, args.chains, args.seed, args.nuts_repeats
        )
    for r in results:
        M, N, d, K = r["setting"]
        print(f"compile_ratio_M{M}_N{N}_d{d}_K{K}={r['compile_ratio']:.2f}")
    for r in results:
        M, N, d, K = r["setting"]
        print(f"speedup_M{M}_N{N}_d{d}_K{K}={r['speedup']:.2f}")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--compile-repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--setting",
        type=int,
        nargs=4,
        action="append",
        metavar=("M", "N", "d", "K"),
        help="a setting to time (repeatable); default: the three of the docstring",
    )
    p.add_argument("--nuts", action="store_true", help="also time run_nuts with each gram")
    p.add_argument("--skip-kernel", action="store_true", help="time NUTS only")
    p.add_argument("--nuts-M", type=int, default=500)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--nuts-repeats", type=int, default=1, help="NUTS runs per gram, alternating")
    main(p.parse_args())
