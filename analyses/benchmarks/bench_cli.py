"""The command line as a user times it: ``bayes-ips fit-erm`` against ``bayes-ips sample``.

Each run is a fresh process (imports, tracing, the persistent compilation cache's
loads, the fit, the output file), so what the in-process benchmarks leave out is
here: in a new process every program is traced and lowered again, and the small ones
(array staging, reshapes, eager arithmetic; ~250 per ``sample``) are compiled again
unless the cache holds them.  Side by side, for each case of
``analyses/heldout_posterior.py`` (the same simulated data, written with
``bayes_ips.io.save_dataset``), two cache settings, each with its own empty folder:

* ``0.5``: only programs that took over 0.5 s to compile are cached (the default
  before 2026-12-05);
* ``0``: every program is cached (the default now, ``BAYES_IPS_JAX_CACHE_MIN_SECS``).

Per setting: one cold pair (``fit-erm`` then ``sample``, filling the folder), then
``--reps`` warm pairs, the settings interleaved (the order alternates).  Prints the
cold times, the warm medians and ``sample / fit-erm`` per case and setting, and as its
last line ``cli_warm_speedup=<float>``: the median over cases of the warm ``sample``
time at ``0.5`` over that at ``0``.

Usage::

    python analyses/benchmarks/bench_cli.py [--reps 3] [--cases NAME ...] [--cpu N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

SETTINGS = ("0.5", "0")


def _timed(cmd: list[str], env: dict, cpu: int | None) -> float:
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {run.stderr.strip().splitlines()[-1]}")
    return wall


def main(args: argparse.Namespace) -> float:
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from heldout_posterior import CASES, case_data

    import bayes_ips
    from bayes_ips.io import Dataset, save_dataset

    bayes_ips.enable_x64()
    exe = [sys.executable, "-m", "bayes_ips.cli"]
    speedups = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases or list(CASES):
            truth, X, Y, _ = case_data(name, args.seed)
            data = os.path.join(tmp, f"{name}.npz")
            save_dataset(data, Dataset(X, Y, truth))
            env0 = {k: v for k, v in os.environ.items() if not k.startswith("BAYES_IPS_JAX")}
            env0["OMP_NUM_THREADS"] = "1"
            envs = {
                s: {
                    **env0,
                    bayes_ips.CACHE_ENV: os.path.join(tmp, f"cache-{name}-{s}"),
                    bayes_ips.CACHE_MIN_SECS_ENV: s,
                }
                for s in SETTINGS
            }
            times = {(s, c): [] for s in SETTINGS for c in ("erm", "sample")}
            for r in range(args.reps + 1):
                for s in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
                    fit = os.path.join(tmp, "fit.nc")
                    post = os.path.join(tmp, "post.nc")
                    times[s, "erm"].append(
                        _timed([*exe, "fit-erm", data, "--out", fit], envs[s], args.cpu)
                    )
                    times[s, "sample"].append(
                        _timed([*exe, "sample", data, "--out", post], envs[s], args.cpu)
                    )
            line = [f"{name}:"]
            warm = {}
            for s in SETTINGS:
                e, p = times[s, "erm"], times[s, "sample"]
                warm[s] = (float(np.median(e[1:])), float(np.median(p[1:])))
                line.append(
                    f"min {s} s: cold {e[0]:.1f} / {p[0]:.1f} s, warm {warm[s][0]:.2f} / "
                    f"{warm[s][1]:.2f} s, sample/fit-erm {warm[s][1] / warm[s][0]:.2f} |"
                )
            speedups.append(warm["0.5"][1] / warm["0"][1])
            line.append(f"warm sample 0.5/0 {speedups[-1]:.2f}")
            print(" ".join(line), flush=True)
    out = float(np.median(speedups))
    print(f"cli_warm_speedup={out:.3f}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cases", nargs="*")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", type=int, default=None, help="pin every run to this core")
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
