"""Benchmark XLA:CPU's code generators: its MLIR fusion emitters (the default) against
its older loop emitters (``--xla_cpu_use_fusion_emitters=false``).

Each setting runs in its own process (XLA reads its flags once), with the persistent
compilation cache off, and the settings alternate (``--repeats`` rounds) so that both
see the same load.  Each process times, on one core:

* ``small_cold``: one study cell of ``analyses/configs/quick.toml`` (ERM, d = 3,
  M = 150, repetition 0) from an empty cache: compile-bound, like ``make demo``, the
  tests, and any script at small sizes;
* ``erm_cold`` / ``erm_warm``: the ERM fit of a paper cell (d = 5, M = 2000 or
  ``--M``, beta = 3, repetition 0), first call (compilation included), then the
  fastest of 3 more on the same data (compiled programs reused): what a study at
  scale pays per cell;
* ``post_cold`` / ``post_warm``: the default posterior (``fit_posterior``) on it,
  from that ERM fit, likewise.

The errors of both fits are printed for each setting: the emitters change the
rounding of fused multiply-adds only, so they should agree to many digits.

Printed at the end (medians over the rounds, default over loop emitters)::

    compile_speedup_small=<float>   small_cold
    erm_cold_speedup=<float>        erm_cold
    post_cold_speedup=<float>       post_cold
    erm_warm_ratio=<float>          erm_warm (> 1: the loop emitters run faster)
    post_warm_ratio=<float>         post_warm

Usage::

    taskset -c 1 python analyses/benchmarks/bench_xla_flags.py [--repeats 2] [--M 2000]
        [--out-json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SETTINGS = {"fusion": "", "loop": "--xla_cpu_use_fusion_emitters=false"}


WARM_CALLS = 3  # warm time: the fastest of these calls after the first


def _record(out: dict, name: str, i: int, t: float) -> None:
    if i == 0:
        out[f"{name}_cold"] = t
    else:
        out[f"{name}_warm"] = min(t, out.get(f"{name}_warm", float("inf")))


def _child() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, str(HERE.parent))
    from bench_posterior import paper_cell

    from bayes_ips.erm import fit_erm
    from bayes_ips.inference import SamplerConfig, fit_posterior
    from bayes_ips.metrics import l2_error
    from bayes_ips.posterior import g_draws
    from bayes_ips.study import load_config, make_cells
    from bayes_ips.study.tasks import ips

    out = {}
    quick = load_config(HERE.parents[1] / "configs" / "quick.toml")
    spec = next(
        c.spec
        for c in make_cells(quick)
        if (c.spec["estimator"], c.spec["d"], c.spec["M"], c.spec["rep"]) == ("erm", 3, 150, 0)
    )
    t = time.perf_counter()
    rec = ips.run_cell(spec)
    out["small_cold"] = time.perf_counter() - t
    out["small_error"] = rec["error"]

    spec = paper_cell(5, int(os.environ["BENCH_M"]), 0)
    truth, X, Y, key = ips.cell_data(spec)
    cfg = ips.cell_erm_config(spec)
    for i in range(1 + WARM_CALLS):
        t = time.perf_counter()
        erm = fit_erm(jax.random.fold_in(key, 1), X, Y, cfg)
        jax.block_until_ready(erm.coef)
        _record(out, "erm", i, time.perf_counter() - t)
    k_eval = jax.random.fold_in(key, 2)
    out["erm_error"] = l2_error(k_eval, erm.predict, truth, 20000).error
    for i in range(1 + WARM_CALLS):
        t = time.perf_counter()
        run, post = fit_posterior(
            jax.random.fold_in(key, 3), X, Y, SamplerConfig(), erm=erm, progress=False
        )
        _record(out, "post", i, time.perf_counter() - t)
    out["post_error"] = l2_error(
        k_eval, lambda x, y: g_draws(post, x, y).mean(axis=(0, 1)), truth, 20000
    ).error
    out["post_method"] = run.method
    print("RESULT " + json.dumps(out), flush=True)


def _run(setting: str, M: int) -> dict:
    env = dict(os.environ, BAYES_IPS_JAX_CACHE="off", BENCH_M=str(M))
    env["XLA_FLAGS"] = (SETTINGS[setting] + " " + env.get("XLA_FLAGS", "")).strip()
    env["BAYES_IPS_XLA_EMITTERS"] = setting  # the package adds nothing of its own
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child"], env=env, capture_output=True, text=True
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{setting} run failed:\n{proc.stderr[-3000:]}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--M", type=int, default=2000, help="M of the paper cell (default 2000)")
    p.add_argument("--out-json", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child()
        return
    import numpy as np

    runs = {s: [] for s in SETTINGS}
    for r in range(args.repeats):
        for s in SETTINGS:
            res = _run(s, args.M)
            runs[s].append(res)
            print(
                f"round {r} {s}: "
                + ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()
                ),
                flush=True,
            )
    med = {
        s: {k: float(np.median([x[k] for x in v])) for k in v[0] if isinstance(v[0][k], float)}
        for s, v in runs.items()
    }
    ratios = {
        "compile_speedup_small": med["fusion"]["small_cold"] / med["loop"]["small_cold"],
        "erm_cold_speedup": med["fusion"]["erm_cold"] / med["loop"]["erm_cold"],
        "post_cold_speedup": med["fusion"]["post_cold"] / med["loop"]["post_cold"],
        "erm_warm_ratio": med["fusion"]["erm_warm"] / med["loop"]["erm_warm"],
        "post_warm_ratio": med["fusion"]["post_warm"] / med["loop"]["post_warm"],
    }
    if args.out_json:
        Path(args.out_json).write_text(
            json.dumps({"runs": runs, "median": med, "ratios": ratios}, indent=1)
        )
    for k, v in ratios.items():
        print(f"{k}={v:.3f}")


if __name__ == "__main__":
    main()
