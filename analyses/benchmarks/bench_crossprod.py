"""Benchmark the Gram pass's dense product ``F^T F`` against other ways to write it.

At the posterior's large K the product dominates an exact proposal (one Gram pass per
proposal; ``analyses/RESULTS.md``, "Why the B-spline-2 case stays above 5x").  This
asks whether XLA:CPU runs it faster written another way.  For each ``(rows, K)``
setting, on one random ``F``, interleaved ``--repeats`` times (the machine is shared,
so only side-by-side ratios mean anything):

* ``package``: :func:`bayes_ips.pairwise._crossprod`, the two row halves contracted in
  one ``einsum`` (what the kernel uses);
* ``plain``: ``F.T @ F``;
* ``dot_general``: the rows contracted directly, no transpose written;
* ``sym_blocks``: the two column halves' three distinct blocks only (3/4 of the
  multiply-adds: ``F^T F`` is symmetric), assembled;
* ``pad8``: the columns padded to a multiple of 8 first.

Every variant is checked against ``F.T @ F`` first.  Printed per setting: each
variant's median ms, its time over ``package``'s, and ``package``'s GFlop/s
(``2 rows K^2`` flops); as its last line ``best_over_package=<float>``: the fastest
other variant's time over ``package``'s, the smallest over the settings (below 1: a
faster way exists).

Usage::

    python analyses/benchmarks/bench_crossprod.py [--setting ROWS K ...] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from bayes_ips import enable_x64
from bayes_ips.pairwise import _crossprod

# (rows, K): the held-out B-spline-2 case at the evidence's K (M N = 9600, K = 195),
# the Hoelder-1.5 case (2400, 99), a d = 5, M = 2000 paper cell at ERM's K (12000, 83)
SETTINGS = ((9600, 195), (2400, 99), (12000, 83))


def _plain(F):
    return F.T @ F


def _dot_general(F):
    return jax.lax.dot_general(F, F, (((0,), (0,)), ((), ())))


def _sym_blocks(F):
    K = F.shape[1]
    h = K // 2
    A, B = F[:, :h], F[:, h:]
    AA, AB, BB = _crossprod(A), _crossprod(A, B), _crossprod(B)
    return jnp.block([[AA, AB], [AB.T, BB]])


def _pad8(F):
    K = F.shape[1]
    Fp = jnp.pad(F, ((0, 0), (0, -K % 8)))
    return _crossprod(Fp)[:K, :K]


VARIANTS = {
    "package": _crossprod,
    "plain": _plain,
    "dot_general": _dot_general,
    "sym_blocks": _sym_blocks,
    "pad8": _pad8,
}


def _time(f, F, inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        f(F).block_until_ready()
    return (time.perf_counter() - t) / inner


def run_setting(rows: int, K: int, repeats: int, seed: int) -> dict:
    F = jnp.asarray(np.random.default_rng(seed).random((rows, K)))
    ref = np.asarray(F.T @ F)
    fns = {name: jax.jit(f) for name, f in VARIANTS.items()}
    for name, f in fns.items():
        got = np.asarray(f(F))
        if not np.allclose(got, ref, rtol=1e-12, atol=1e-9 * np.abs(ref).max()):
            raise AssertionError(f"{name} differs from F^T F")
    inner = max(1, int(2e8 // (rows * K * K)))  # about 0.1 s per timing at 2 GMAC/s
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            times[name].append(_time(f, F, inner))
    med = {name: float(np.median(t)) for name, t in times.items()}
    return {
        "rows": rows,
        "K": K,
        "ms": {name: 1e3 * t for name, t in med.items()},
        "over_package": {name: t / med["package"] for name, t in med.items()},
        "gflops": 2.0 * rows * K * K / med["package"] / 1e9,
    }


def main(args) -> dict:
    enable_x64()
    out = {"settings": []}
    for rows, K in args.setting:
        r = run_setting(int(rows), int(K), args.repeats, args.seed)
        out["settings"].append(r)
        print(f"rows={rows} K={K}: package {r['ms']['package']:.2f} ms ({r['gflops']:.1f} GFlop/s)")
        for name in VARIANTS:
            if name != "package":
                print(f"  {name}: {r['ms'][name]:.2f} ms, {r['over_package'][name]:.3f}x package")
    best = min(
        min(v for k, v in r["over_package"].items() if k != "package") for r in out["settings"]
    )
    out["best_over_package"] = best
    print(f"best_over_package={best:.3f}")
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", nargs=2, type=int, action="append", metavar=("ROWS", "K"))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.setting = args.setting or [list(s) for s in SETTINGS]
    return args


if __name__ == "__main__":
    main(parse_args())
