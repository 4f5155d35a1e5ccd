"""Would the Gram pass be faster with ``F^T F`` computed by the host BLAS?

A proposal of the posterior's importance sampler is one Gram pass at the model's K
(:func:`bayes_ips.posterior.evaluate_proposals`), and at large K the dense ``F^T F``
dominates it.  XLA:CPU computes the product with its own dot and has no symmetric
rank-k update, while NumPy's ``F.T @ F`` calls OpenBLAS's ``syrk``.  This benchmark
traces the package's pass (:func:`bayes_ips.pairwise._gram_pass`, values only) twice:
as it is, and with its product replaced by a ``jax.pure_callback`` to NumPy on one
BLAS thread.  Both are compiled, checked to agree, and timed interleaved
(``--repeats`` rounds; the machine is shared, so only side-by-side ratios mean
anything).  The package does not use the host product (``analyses/benchmarks/
RESULTS.md``: its gain is small and JAX leaves programs with host callbacks out of
its persistent compilation cache).

Settings ``(name, d, M, N, K, tokens)``: the held-out B-spline-2 case at the
evidence's K (``analyses/heldout_posterior.py``), the held-out Hoelder-0.8 case at
its K, a d = 5, M = 4000 paper cell at K = 64.

Printed per setting: the product alone (both ways) and the whole pass (both ways),
medians in ms; last line ``host_pass_speedup=<float>``, the largest XLA / host ratio
of a whole pass over the settings.

Usage::

    python analyses/benchmarks/bench_host_gram.py [--repeats 15] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

SETTINGS = (
    ("bspline2-heldout", 2, 1200, 8, 192, "correlated"),
    ("holder0.8-heldout", 6, 1500, 6, 96, "cube"),
    ("paper-d5-M4000", 5, 4000, 6, 64, "cube"),
)


def _host_ftf(F):
    from threadpoolctl import threadpool_limits

    F = np.asarray(F)
    with threadpool_limits(limits=1, user_api="blas"):
        return F.T @ F


def _host_crossprod(F, G=None):
    assert G is None
    out = jax.ShapeDtypeStruct((F.shape[-1], F.shape[-1]), F.dtype)
    return jax.pure_callback(_host_ftf, out, F, vmap_method="sequential")


def _pass_fn(knots, host: bool):
    from bayes_ips import pairwise

    def f(U, V, X, Y):
        saved = pairwise._crossprod
        if host:  # at trace time only: the compiled program keeps what was traced
            pairwise._crossprod = _host_crossprod
        try:
            return pairwise._gram_pass(
                U, V, knots.breaks, X, Y, pairwise.DEFAULT_CHUNK, knots.degree,
                knots.multiplicity, knots.tail,
            )[0][0]  # fmt: skip
        finally:
            pairwise._crossprod = saved

    return jax.jit(f)


def _median_ms(fns: dict, args: dict, repeats: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f(*args[k]))
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def run_setting(name, d, M, N, K, tokens, repeats: int, seed: int) -> dict:
    from bayes_ips.pairs import off_diagonal_scores
    from bayes_ips.pairwise import DEFAULT_CHUNK, _crossprod
    from bayes_ips.simulate import make_truth, simulate
    from bayes_ips.spline import make_knots, quantile_breaks

    key = jax.random.fold_in(jax.random.PRNGKey(seed), sum(map(ord, name)))
    k_truth, k_data, k_f = jax.random.split(key, 3)
    truth = make_truth(k_truth, d, 1, phi="tanh", tokens=tokens, noise_sd=0.1)
    X, Y = (np.asarray(a) for a in simulate(k_data, truth, M, N))
    U, V = np.asarray(truth.A), np.eye(d)  # A = U V^T
    S = np.asarray(off_diagonal_scores(X, U, V, 4000))
    knots = make_knots(quantile_breaks(S, K), 3, 1)
    rows, nb = min(M, DEFAULT_CHUNK) * N, K + 3
    F = jax.random.uniform(k_f, (rows, nb), dtype=X.dtype)
    fns = {
        "product_xla": jax.jit(_crossprod),
        "product_host": jax.jit(_host_crossprod),
        "pass_xla": _pass_fn(knots, False),
        "pass_host": _pass_fn(knots, True),
    }
    args = {k: (F,) if k.startswith("product") else (U, V, X, Y) for k in fns}
    got = {k: np.asarray(f(*args[k])) for k, f in fns.items()}  # compiles every one
    for a, b in (("product_xla", "product_host"), ("pass_xla", "pass_host")):
        if not np.allclose(got[a], got[b], rtol=1e-12, atol=1e-12 * np.abs(got[a]).max()):
            raise AssertionError(f"{name}: {a} and {b} differ")
    ms = _median_ms(fns, args, repeats)
    return {"name": name, "rows": rows, "n_basis": nb, "ms": ms,
            "product_speedup": ms["product_xla"] / ms["product_host"],
            "pass_speedup": ms["pass_xla"] / ms["pass_host"]}  # fmt: skip


def main(args) -> dict:
    from bayes_ips import enable_x64

    enable_x64()
    out = {"seed": args.seed, "repeats": args.repeats, "settings": []}
    for s in SETTINGS:
        r = run_setting(*s, args.repeats, args.seed)
        out["settings"].append(r)
        ms = r["ms"]
        print(
            f"{r['name']:>18s} ({r['rows']} x {r['n_basis']}): product XLA "
            f"{ms['product_xla']:.2f} ms, host {ms['product_host']:.2f} ms "
            f"({r['product_speedup']:.2f}x); pass XLA {ms['pass_xla']:.2f} ms, host "
            f"{ms['pass_host']:.2f} ms ({r['pass_speedup']:.2f}x)",
            flush=True,
        )
    out["host_pass_speedup"] = max(r["pass_speedup"] for r in out["settings"])
    print(f"host_pass_speedup={out['host_pass_speedup']:.3f}")
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
