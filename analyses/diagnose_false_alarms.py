"""How often does ``diagnose`` flag a healthy default posterior run?

Runs the new user's path (``simulate`` then ``sample`` with the defaults, M = 400,
N = 6, d = 3, phi* = tanh, cube tokens, noise 0.1) on ``--runs`` datasets of
different seeds and counts the runs that ``bayes_ips.diagnostics.diagnose`` flags, and
why.  The runs are healthy by construction (a well-posed rank-1 problem; the
samplers are checked by SBC), so every flag is a false alarm.  Goal: at most 5%.

Usage::

    python analyses/diagnose_false_alarms.py --out-dir DIR [--runs 20] [--seed 0]
        [--method auto]

The last line is ``false_alarm_rate=<float>``.
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")


def main(args: argparse.Namespace) -> dict:
    import jax
    import numpy as np
    from tqdm import tqdm

    import bayes_ips
    from bayes_ips.diagnostics import diagnose
    from bayes_ips.erm import ERMConfig, fit_erm
    from bayes_ips.inference import SamplerConfig, sample_posterior
    from bayes_ips.io import atomic_write
    from bayes_ips.simulate import make_truth, simulate

    bayes_ips.enable_x64()
    bayes_ips.enable_compilation_cache()
    os.makedirs(args.out_dir, exist_ok=True)
    rows = []
    for r in tqdm(range(args.runs), desc="runs", unit="run"):
        key = jax.random.fold_in(jax.random.PRNGKey(args.seed), r)
        k_truth, k_data, k_erm, k_post = jax.random.split(key, 4)
        truth = make_truth(k_truth, 3, 1, phi="tanh", tokens="cube", noise_sd=0.1)
        X, Y = (np.asarray(a) for a in simulate(k_data, truth, 400, 6))
        erm = fit_erm(k_erm, X, Y, ERMConfig())
        cfg = SamplerConfig(method=args.method)
        idata, _, run = sample_posterior(k_post, X, Y, cfg, erm=erm, progress=False)
        _, report = diagnose(idata)
        rows.append(
            {
                "run": r,
                "sampler": run.method,
                "rhat_max": report["rhat_max"],
                "n_rhat_flagged": len(report["rhat_flagged"]),
                "ess_bulk_min": report["ess_bulk_min"],
                "problems": report["problems"],
            }
        )
    flagged = [r for r in rows if r["problems"]]
    rate = len(flagged) / len(rows)
    out = {"seed": args.seed, "method": args.method, "runs": rows, "false_alarm_rate": rate}
    with atomic_write(os.path.join(args.out_dir, "false_alarms.json")) as tmp, open(tmp, "w") as f:
        json.dump(out, f, indent=2, default=float)
    for r in flagged:
        print(f"run {r['run']}: {'; '.join(r['problems'])}")
    rhat = max(r["rhat_max"] for r in rows)
    ess = min(r["ess_bulk_min"] for r in rows)
    print(
        f"{len(flagged)} of {len(rows)} healthy runs flagged; max R-hat over runs "
        f"{rhat:.3f}, min bulk ESS {ess:.0f}"
    )
    print(f"false_alarm_rate={rate:.3f}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="auto")
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
