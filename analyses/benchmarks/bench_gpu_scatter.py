"""Does the pairwise kernel hit the GPU scatter-add slowdown of jaxlib 0.10.2-0.11.0?

jaxlib 0.10.2 compiles a float32 scatter-add on NVIDIA GPUs to a compare-and-swap
retry loop in place of the native atomic (jax-ml/jax#38806, openxla/xla#46225,
numpyro#2225), up to ~2000x slower where many updates hit few rows.  The kernel
(:func:`bayes_ips.pairwise.gram`, and ``sq_loss``'s gradient) scatters the local
B-spline values into the design's rows (``.at[].add``) and runs in float64.

Run on a GPU, this script:

* times the upstream repro (``zeros(size).at[idx].add(ones(n))``, n = 100000) in
  float32 and float64 at size 1 and 1024.  The contention ratio (size 1 over size
  1024) is in the hundreds or more where this jaxlib has the regression, and a few
  units where it has not;
* times the kernel's own contended scatter, the gradient's segment sum of one chunk
  (16384 scores into K = 40 pieces, float64), against the same sum into 16384 pieces;
* times ``gram`` and the value-and-gradient of ``sq_loss`` (M = 16000, N = 8, d = 5,
  K = 40, float64; median of ``--repeats``, compilation excluded).

The last line is ``repro_f32_contention_ratio=<float>``.  On a machine without a GPU
it says so and exits 0 (nothing to check).

Usage::

    python analyses/benchmarks/bench_gpu_scatter.py [--M 16000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _median_time(fn, args, repeats):
    jax.block_until_ready(fn(*args))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


def main(args: argparse.Namespace) -> int:
    jax.config.update("jax_enable_x64", True)
    backend = jax.default_backend()
    print(f"jax {jax.__version__}, backend {backend}, devices {jax.devices()}")
    if backend != "gpu":
        print("no GPU: nothing to check")
        return 0

    from bayes_ips.pairwise import gram, pair_scores, sq_loss
    from bayes_ips.spline import make_knots, n_basis, quantile_breaks

    # 1. the upstream repro
    n = 100_000
    ratios = {}
    for dtype in (jnp.float32, jnp.float64):
        times = {}
        for size in (1, 1024):
            idx = jax.random.randint(jax.random.PRNGKey(0), (n,), 0, size).astype(jnp.uint32)
            vals = jnp.ones((n,), dtype)
            f = jax.jit(lambda i, v, size=size, dtype=dtype: jnp.zeros(size, dtype).at[i].add(v))
            times[size] = _median_time(f, (idx, vals), args.repeats)
        name = jnp.dtype(dtype).name
        ratios[name] = times[1] / times[1024]
        print(
            f"repro {name}: size 1 {times[1] * 1e3:.3f} ms, "
            f"size 1024 {times[1024] * 1e3:.3f} ms, contention ratio {ratios[name]:.1f}"
        )

    # 2. the kernel's contended scatter: one chunk's segment sum into the K pieces
    n_scores = 16384
    times = {}
    for n_seg in (40, n_scores):
        k = jax.random.randint(jax.random.PRNGKey(1), (n_scores,), 0, n_seg)
        g = jax.random.normal(jax.random.PRNGKey(2), (n_scores,))
        f = jax.jit(lambda g, k, n_seg=n_seg: jax.ops.segment_sum(g, k, n_seg))
        times[n_seg] = _median_time(f, (g, k), args.repeats)
    print(
        f"segment sum float64, {n_scores} scores: into 40 pieces {times[40] * 1e3:.3f} ms, "
        f"into {n_scores} {times[n_scores] * 1e3:.3f} ms, "
        f"ratio {times[40] / times[n_scores]:.1f}"
    )

    # 3. the kernel, float64, as the library runs it
    M, N, d, K, s = args.M, 8, 5, 40, 3
    kx, ky, ku, kv, kc = jax.random.split(jax.random.PRNGKey(0), 5)
    X = jax.random.uniform(kx, (M, N, d), minval=-1.0, maxval=1.0)
    U = jax.random.normal(ku, (d, 1))
    V = jax.random.normal(kv, (d, 1))
    U = U / jnp.sqrt(jnp.sum((U @ V.T) ** 2))
    knots = make_knots(quantile_breaks(np.asarray(pair_scores(X, U, V)), K), s, 1)
    coef = jax.random.normal(kc, (n_basis(knots),))
    Y = jax.random.normal(ky, (M, N))
    gfun = jax.jit(lambda U, V, X, Y, kn: gram(U, V, X, Y, kn))
    t_gram = _median_time(gfun, (U, V, X, Y, knots), args.repeats)
    vg = jax.jit(
        jax.value_and_grad(lambda U, V, c, X, Y, kn: sq_loss(U, V, c, X, Y, kn), (0, 1, 2))
    )
    t_vg = _median_time(vg, (U, V, coef, X, Y, knots), args.repeats)
    print(f"kernel M={M}: gram {t_gram * 1e3:.2f} ms, sq_loss value+grad {t_vg * 1e3:.2f} ms")
    print(f"repro_f32_contention_ratio={ratios['float32']:.2f}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--M", type=int, default=16000)
    p.add_argument("--repeats", type=int, default=7)
    sys.exit(main(p.parse_args()))
