"""Benchmark the pairwise kernel against a dense implementation and a polynomial floor.

All three compute the value and gradient (in U, V and the coefficients) of the
residual sum of squares sum_{m,i} (Y_mi - 1/(N-1) sum_{j!=i} phi(X_mi^T U V^T X_mj))^2
on the same data, timed side by side in one run (interleaved repetitions,
median wall time, compilation excluded):

* ``kernel``: ``bayes_ips.pairwise.sq_loss`` (local support, chunked);
* ``dense``: the straightforward JAX version that builds the dense
  (M, N, N, n_basis) B-spline basis by the Cox--de Boor recursion;
* ``floor``: phi replaced by one global cubic polynomial (scores, a cubic at
  each score, means over j): no knots and no basis, which no spline kernel can beat.

``gram`` (the sufficient statistics F^T F, F^T Y, Y^T Y) is timed alongside (not in
the ratios).  X, Y and the knots are passed to every jitted function as arguments.

It also measures, in a fresh subprocess, the peak resident memory of
``bayes_ips.pairwise.gram`` at M = 1e6 (the whole process: data included; the data
are made with numpy and the peak is read from VmHWM, which unlike ru_maxrss is not
inherited from this parent process).

Usage::

    python analyses/benchmarks/bench_kernel.py [--M 16000] [--repeats 7] [--skip-memory]

With ``--heads 1,2,4`` (the default) it also times the multi-head kernel (H heads,
each with its own factors and knots) at each H, on the same data, and prints
``heads_cost_per_head=<float>``: the largest H's ``gram`` time over H times one
head's (1.0 means the cost is linear in H).

The last two lines are ``speedup_vs_dense=<float>`` and ``slowdown_vs_floor=<float>``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bayes_ips.pairwise import gram, pair_scores, sq_loss
from bayes_ips.spline import full_knot_vector, make_knots, n_basis, quantile_breaks


def dense_basis(u: jax.Array, t: jax.Array, degree: int) -> jax.Array:
    """All B-splines at every score by the textbook recursion: (..., n_basis)."""
    u = u[..., None]
    B = ((u >= t[:-1]) & (u < t[1:])).astype(u.dtype)
    # right end belongs to the last non-empty interval
    last = jnp.max(jnp.nonzero(t[1:] > t[:-1], size=t.shape[0] - 1, fill_value=0)[0])
    B = B.at[..., last].add(jnp.where(u[..., 0] == t[-1], 1.0, 0.0))
    for p in range(1, degree + 1):
        d1 = t[p:-1] - t[: -p - 1]
        d2 = t[p + 1 :] - t[1:-p]
        w1 = jnp.where(d1 > 0, (u - t[: -p - 1]) / jnp.where(d1 > 0, d1, 1.0), 0.0)
        w2 = jnp.where(d2 > 0, (t[p + 1 :] - u) / jnp.where(d2 > 0, d2, 1.0), 0.0)
        B = w1 * B[..., :-1] + w2 * B[..., 1:]
    return B


def dense_loss(U, V, coef, X, Y, t, degree):
    N = X.shape[1]
    S = pair_scores(X, U, V)
    B = dense_basis(S, t, degree)  # (M, N, N, n_basis)
    phi = B @ coef
    off = (1.0 - jnp.eye(N)) / (N - 1)
    return jnp.sum((Y - jnp.sum(phi * off, axis=-1)) ** 2)


def floor_loss(U, V, a, X, Y):
    N = X.shape[1]
    S = pair_scores(X, U, V)
    phi = a[0] + S * (a[1] + S * (a[2] + S * a[3]))
    off = (1.0 - jnp.eye(N)) / (N - 1)
    return jnp.sum((Y - jnp.sum(phi * off, axis=-1)) ** 2)


def _time(fn, args, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out.append(time.perf_counter() - t0)
    return out


MEMORY_SNIPPET = """
import resource, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from bayes_ips.pairwise import gram
from bayes_ips.spline import make_knots
M, N, d, K = int(sys.argv[1]), 8, 5, 40
# data made with numpy (jax.random at this size would inflate the baseline RSS)
rng = np.random.default_rng(0)
X = rng.uniform(-1.0, 1.0, (M, N, d))
Y = rng.normal(size=(M, N))
U = rng.normal(size=(d, 1)); V = rng.normal(size=(d, 1))
U = U / np.sqrt(np.sum((U @ V.T) ** 2))
knots = make_knots(np.linspace(-2.0, 2.0, K + 1), 3, 1)
def hwm_mib():
    # VmHWM is the peak RSS of this process image; ru_maxrss is not used because
    # Linux carries it over from the parent across fork + exec (the parent may have
    # run the dense benchmark, several GiB).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = hwm_mib()
g = jax.block_until_ready(gram(U, V, X, Y, knots))
peak = hwm_mib()
print(f"{peak:.1f} {base:.1f} {int(g.n_obs)}")
"""


def peak_memory_mb(M: int) -> tuple[float, float]:
    """Peak RSS (MiB) of a fresh process running ``gram`` at this M, and its RSS before."""
    res = subprocess.run(
        [sys.executable, "-c", MEMORY_SNIPPET, str(M)], capture_output=True, text=True, check=True
    )
    peak, base, n_obs = res.stdout.split()
    assert int(n_obs) == M * 8
    return float(peak), float(base)


def main(args: argparse.Namespace) -> dict[str, float]:
    jax.config.update("jax_enable_x64", True)
    M, N, d, r, K, s = args.M, 8, 5, 1, 40, 3
    key = jax.random.PRNGKey(args.seed)
    kx, ky, ku, kv, kc = jax.random.split(key, 5)
    X = jax.random.uniform(kx, (M, N, d), minval=-1.0, maxval=1.0)
    U = jax.random.normal(ku, (d, r))
    V = jax.random.normal(kv, (d, r))
    U = U / jnp.sqrt(jnp.sum((U @ V.T) ** 2))
    S = pair_scores(X, U, V)
    # the linear tail: the knots' ends are the extreme scores, where the flat tail's kink
    # makes the dense reference's one-sided slope differ from the kernel's half slope
    knots = make_knots(quantile_breaks(np.asarray(S), K), s, 1, "linear")
    nb = n_basis(knots)
    coef = jax.random.normal(kc, (nb,))
    Y = jax.random.normal(ky, (M, N))
    t = full_knot_vector(knots)
    a = jax.random.normal(kc, (4,))

    # Data and knots are jit *arguments* (runtime arrays, as in the library), not
    # closed-over constants that XLA could fold into the compiled program.
    kern = jax.jit(
        jax.value_and_grad(lambda U, V, c, X, Y, kn: sq_loss(U, V, c, X, Y, kn), (0, 1, 2))
    )
    dense = jax.jit(
        jax.value_and_grad(lambda U, V, c, X, Y, t: dense_loss(U, V, c, X, Y, t, s), (0, 1, 2))
    )
    floor = jax.jit(jax.value_and_grad(floor_loss, (0, 1, 2)))
    gram_j = jax.jit(gram)
    kargs = (U, V, coef, X, Y, knots)
    dargs = (U, V, coef, X, Y, t)
    fargs = (U, V, a, X, Y)
    gargs = (U, V, X, Y, knots)

    # correctness first: kernel and dense agree on value and gradient
    vk, gk = kern(*kargs)
    vd, gd = dense(*dargs)
    np.testing.assert_allclose(vk, vd, rtol=1e-9)
    for x, y in zip(gk, gd, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-7, atol=1e-9)
    floor(*fargs)  # compile
    gram_j(*gargs)

    times = {"kernel": [], "dense": [], "floor": [], "gram": []}
    for _ in range(args.repeats):  # interleaved, so load changes hit all alike
        times["kernel"] += _time(kern, kargs, 1)
        times["dense"] += _time(dense, dargs, 1)
        times["floor"] += _time(floor, fargs, 1)
        times["gram"] += _time(gram_j, gargs, 1)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"M={M} N={N} d={d} r={r} K={K} degree={s} n_basis={nb} repeats={args.repeats}")
    for k, v in med.items():
        print(f"{k:>7s}: median {v * 1e3:9.2f} ms  (min {min(times[k]) * 1e3:.2f} ms)")
    if not args.skip_memory:
        peak, base = peak_memory_mb(1_000_000)
        print(
            f"gram at M=1e6, N=8, d=5, K=40: peak RSS {peak:.0f} MiB "
            f"(process before the call: {base:.0f} MiB, of which X is 305 MiB); "
            f"F alone would be {1e6 * 8 * (K + 3) * 8 / 2**30:.2f} GiB"
        )
    if getattr(args, "heads", None):
        heads_timings(X, Y, r, K, s, args.heads, args.repeats, args.seed)
    speedup = med["dense"] / med["kernel"]
    slowdown = med["kernel"] / med["floor"]
    print(f"speedup_vs_dense={speedup:.2f}")
    print(f"slowdown_vs_floor={slowdown:.2f}")
    return {"speedup_vs_dense": speedup, "slowdown_vs_floor": slowdown}


def heads_timings(X, Y, r, K, s, heads, repeats, seed):
    """Value and gradient of ``sq_loss``, and ``gram``, at each number of heads.

    Each head has its own random factors and knots at its own score quantiles;
    the coefficients are random.  Timed interleaved over the head counts; prints
    the median times and their ratio to one head, and ``heads_cost_per_head``:
    the largest H's ``gram`` time over ``H`` times one head's (1 = linear in H).
    """
    d = X.shape[-1]
    key = jax.random.PRNGKey(seed + 1)
    fns, argsets = {}, {}
    for H in heads:
        ku, kv, kc = jax.random.split(jax.random.fold_in(key, H), 3)
        U = jax.random.normal(ku, (H, d, r))
        V = jax.random.normal(kv, (H, d, r))
        breaks = np.stack(
            [quantile_breaks(np.asarray(pair_scores(X[:2000], U[h], V[h])), K) for h in range(H)]
        )
        knots = make_knots(breaks[0], s, 1, "linear")
        knots = type(knots)(jnp.asarray(breaks), s, 1, "linear")
        coef = jax.random.normal(kc, (H, n_basis(knots)))
        fns[H] = (
            jax.jit(
                jax.value_and_grad(lambda U, V, c, X, Y, kn: sq_loss(U, V, c, X, Y, kn), (0, 1, 2))
            ),
            jax.jit(gram),
        )
        argsets[H] = ((U, V, coef, X, Y, knots), (U, V, X, Y, knots))
        for f, a in zip(fns[H], argsets[H], strict=True):
            jax.block_until_ready(f(*a))  # compile
    times = {(H, k): [] for H in heads for k in ("loss+grad", "gram")}
    for _ in range(repeats):
        for H in heads:
            times[H, "loss+grad"] += _time(fns[H][0], argsets[H][0], 1)
            times[H, "gram"] += _time(fns[H][1], argsets[H][1], 1)
    med = {k: float(np.median(v)) for k, v in times.items()}
    base = heads[0]
    for H in heads:
        print(
            f"heads={H}: loss+grad {med[H, 'loss+grad'] * 1e3:8.2f} ms "
            f"({med[H, 'loss+grad'] / med[base, 'loss+grad']:.2f}x), "
            f"gram {med[H, 'gram'] * 1e3:8.2f} ms ({med[H, 'gram'] / med[base, 'gram']:.2f}x)"
        )
    top = heads[-1]
    per = med[top, "gram"] / (top / base * med[base, "gram"])
    print(f"heads_cost_per_head={per:.2f}")
    return med


def _heads(text: str) -> list[int]:
    out = sorted({int(h) for h in text.split(",") if h.strip()})
    if not out or out[0] < 1:
        raise argparse.ArgumentTypeError(f"heads must be positive integers, got {text!r}")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--M", type=int, default=16000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument(
        "--heads",
        type=_heads,
        default=[1, 2, 4],
        help="numbers of heads to time the multi-head kernel at ('' to skip)",
    )
    main(p.parse_args())
