"""SBC by subset: the replications a Pareto-k rule accepts, and the rest.

Ranks of the truth stay uniform within any subset of replications chosen from the
data alone (given the data, the truth is a posterior draw), so the replications
whose importance sampler ended with Pareto k <= ``--khat-max`` (those ``auto``
keeps) are a valid calibration test of their own, as are the others (those
``auto`` hands to NUTS).  Reads the ``ranks.csv`` of ``analyses/sbc.py`` (with its
``khat`` and ``refits`` columns), prints per subset the number of replications,
the share of ranks in the outer tenth (uniform: 10/(L+1); a posterior too narrow
puts more there) and the smallest Bonferroni-adjusted chi-square p-value, writes
the ECDF-difference figure of the accepted subset, and ends with
``sbc_min_pvalue_accepted=<float>``.

    python analyses/sbc_subsets.py analyses/results/sbc_is_rank2/ranks.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402


def read_ranks(path: str) -> tuple[list[str], dict[int, dict], int]:
    """Quantities, ``{replication: {"ranks": {q: rank}, "khat": float, "refits": int}}`` and L."""
    reps: dict[int, dict] = defaultdict(lambda: {"ranks": {}})
    names: list[str] = []
    L = None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows or "khat" not in rows[0]:
        raise ValueError(f"{path}: not a ranks.csv with a khat column (analyses/sbc.py)")
    for row in rows:
        if row["sampler"] == "failed":
            continue
        r = reps[int(row["replication"])]
        r["ranks"][row["quantity"]] = int(row["rank"])
        r["khat"] = float(row["khat"]) if row["khat"] else float("nan")
        r["refits"] = int(row.get("refits") or 0)
        L = int(row["L"])
        if row["quantity"] not in names:
            names.append(row["quantity"])
    return names, dict(reps), int(L)


def subset_stats(names, reps: dict, ids, L: int) -> dict:
    """Replications, outer-tenth share and the Bonferroni-adjusted p-values of a subset."""
    from bayes_ips.sbc import bonferroni, uniformity_pvalue

    R = np.array([[reps[i]["ranks"][q] for q in names] for i in ids]).reshape(len(ids), -1)
    edge = (L + 1) // 20  # ranks 0..edge-1 and L-edge+1..L
    outer = float(np.mean((R < edge) | (R > L - edge))) if len(ids) else float("nan")
    p = {q: uniformity_pvalue(R[:, j], L) for j, q in enumerate(names)} if len(ids) else {}
    adj = bonferroni(p) if p else {}
    return {
        "n": len(ids),
        "outer": outer,
        "outer_uniform": 2 * edge / (L + 1),
        "pvalues": p,
        "min_pvalue": min(adj.values()) if adj else float("nan"),
        "argmin": min(p, key=p.get) if p else "",
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ranks", help="ranks.csv of analyses/sbc.py")
    p.add_argument("--khat-max", type=float, default=0.7)
    p.add_argument("--out", help="figure path (default: sbc_ecdf_accepted.png beside ranks)")
    args = p.parse_args(argv)
    from bayes_ips.arviz_io import plot_ecdf_difference
    from bayes_ips.io import atomic_write
    from bayes_ips.sbc import normalised_ranks

    try:
        names, reps, L = read_ranks(args.ranks)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: {e}")
    ok = sorted(i for i, r in reps.items() if r["khat"] <= args.khat_max)
    subsets = {
        "all": sorted(reps),
        "accepted, no refit": [i for i in ok if reps[i]["refits"] == 0],
        "accepted after refits": [i for i in ok if reps[i]["refits"] > 0],
        "accepted": ok,
        f"k > {args.khat_max}": sorted(set(reps) - set(ok)),
    }
    out = {}
    for label, ids in subsets.items():
        s = out[label] = subset_stats(names, reps, ids, L)
        print(
            f"{label:>24s}: {s['n']:5d} replications, outer tenth {s['outer']:.3f} "
            f"(uniform {s['outer_uniform']:.3f}), min p {s['min_pvalue']:.3f} ({s['argmin']})"
        )
    if ok:
        rng = np.random.default_rng(0)
        pit = {q: normalised_ranks([reps[i]["ranks"][q] for i in ok], L, rng) for q in names}
        path = args.out or os.path.join(os.path.dirname(args.ranks), "sbc_ecdf_accepted.png")
        with atomic_write(path) as tmp:
            plot_ecdf_difference(pit, tmp, prob=0.95, seed=0)
    print(f"sbc_min_pvalue_accepted={out['accepted']['min_pvalue']}", flush=True)
    return out


if __name__ == "__main__":
    main()
