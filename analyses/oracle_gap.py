"""What learning A costs: an ERM estimator against the same ERM at the true A, paired.

A study with both estimators (``minimax.toml``: ``erm_mixed`` and ``erm_oracle``, the
latter with ``known_a = true``) fits them on the same data and scores them on the same
held-out pairs.  Per cell the gap ``error(est) - error(oracle)`` is what estimating A
adds; the theory's account of the d = 30 bend is that this gap is A's parametric error,
of order ``n_A / M`` (``n_A = r (2 d - r) - 1`` free directions of A: 0, 8 and 58 at
d = 1, 5 and 30 for rank 1), while the oracle's error falls at the nonparametric rate
``M^(-2 beta / (2 beta + 1))`` at every d.  Reports per (beta, d):

* the least-squares slopes of log error on log M of both estimators (every cell, the
  repetitions pooled) against the minimax slope;
* the mean gap per M (over repetitions, with its s.e.), its share of the estimator's
  error, and the slope of log mean gap on log M over the M where the gap is positive
  (the parametric prediction is -1);
* ``gap * M / n_A`` at the largest M (the parametric constant: equal across d if the
  gap is A's error alone).

Writes ``OUT/oracle_gap.md``, ``OUT/oracle_gap.csv`` and ``OUT/oracle_gap.png`` (error
against M, both estimators, one panel per beta).

Usage::

    python analyses/oracle_gap.py RESULTS_CSV --out-dir OUT [--estimator erm_mixed]
        [--oracle erm_oracle]
"""

from __future__ import annotations

import argparse
import math
import os

import matplotlib

matplotlib.use("Agg")


def _slope(M, err) -> float:
    import numpy as np

    x, y = np.log(np.asarray(M, float)), np.log(np.asarray(err, float))
    if len(x) < 2:
        return math.nan
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc)) if len(x) > 1 and xc @ xc > 0 else math.nan


def gap_table(df, estimator: str, oracle: str) -> list[dict]:
    """One row per (beta, d, M) and one summary row per (beta, d) (``M`` = -1)."""
    import numpy as np

    from bayes_ips.study.slopes import theory_slope

    keys = ["family", "beta", "d", "M", "rep"]
    a = df[df.estimator == estimator].set_index(keys)["error"]
    b = df[df.estimator == oracle].set_index(keys)["error"]
    both = a.to_frame("est").join(b.to_frame("oracle"), how="inner").reset_index()
    both = both[np.isfinite(both.est) & np.isfinite(both.oracle)]
    if both.empty:
        raise SystemExit(f"no cells with both {estimator!r} and {oracle!r} on the same data")
    rows = []
    rank = int(df["rank"].iloc[0]) if "rank" in df else 1
    for (fam, beta, d), g in both.groupby(["family", "beta", "d"]):
        n_a = rank * (2 * int(d) - rank) - 1
        per_m = []
        for M, gm in g.groupby("M"):
            gap = gm.est - gm.oracle
            se = float(gap.std(ddof=1) / math.sqrt(len(gap))) if len(gap) > 1 else math.nan
            per_m.append(
                {
                    "family": fam,
                    "beta": float(beta),
                    "d": int(d),
                    "M": int(M),
                    "n_reps": len(gm),
                    "error": float(gm.est.mean()),
                    "oracle_error": float(gm.oracle.mean()),
                    "gap": float(gap.mean()),
                    "gap_se": se,
                    "gap_share": float(gap.mean() / gm.est.mean()),
                    "ratio_gmean": float(np.exp(np.mean(np.log(gm.est / gm.oracle)))),
                }
            )
        pos = [r for r in per_m if r["gap"] > 0] if n_a > 0 else []  # d = 1: A = +-1
        top = per_m[-1]
        rows.extend(per_m)
        rows.append(
            {
                "family": fam,
                "beta": float(beta),
                "d": int(d),
                "M": -1,
                "n_A": n_a,
                "slope": _slope(g.M, g.est),
                "oracle_slope": _slope(g.M, g.oracle),
                "minimax": theory_slope(float(beta)),
                "gap_slope": _slope([r["M"] for r in pos], [r["gap"] for r in pos]),
                "gap_M_min": pos[0]["M"] if pos else -1,
                "share_first": per_m[0]["gap_share"],
                "share_last": top["gap_share"],
                "gap_const_last": top["gap"] * top["M"] / n_a if n_a > 0 else math.nan,
            }
        )
    return rows


def _markdown(rows: list[dict], estimator: str, oracle: str) -> str:
    def f(v, fmt=".3f"):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = [
        f"Paired: `{estimator}` (A estimated) against `{oracle}` (A known), same data.\n",
        "| beta | d | n_A | slope (A estimated) | slope (A known) | minimax | "
        "gap share, first M | gap share, last M | gap slope | gap x M / n_A, last M |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["M"] != -1:
            continue
        lines.append(
            f"| {r['beta']:g} | {r['d']} | {r['n_A']} | {f(r['slope'])} | "
            f"{f(r['oracle_slope'])} | {f(r['minimax'])} | {f(r['share_first'], '.2f')} | "
            f"{f(r['share_last'], '.2f')} | {f(r['gap_slope'])} | "
            f"{f(r['gap_const_last'], '.3g')} |"
        )
    lines += [
        "",
        "Per M (means over repetitions):",
        "",
        "| beta | d | M | error (A estimated) | error (A known) | gap | gap s.e. | share | "
        "ratio (geometric mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["M"] == -1:
            continue
        lines.append(
            f"| {r['beta']:g} | {r['d']} | {r['M']} | {r['error']:.3e} | "
            f"{r['oracle_error']:.3e} | {r['gap']:.2e} | {f(r['gap_se'], '.1e')} | "
            f"{r['gap_share']:.2f} | {r['ratio_gmean']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _figure(rows: list[dict], estimator: str, oracle: str, path: str) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    per = [r for r in rows if r["M"] != -1]
    betas = sorted({r["beta"] for r in per})
    ds = sorted({r["d"] for r in per})
    colors = dict(zip(ds, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, axes = plt.subplots(1, len(betas), figsize=(4.2 * len(betas), 3.8), squeeze=False)
    for ax, beta in zip(axes[0], betas, strict=True):
        for d in ds:
            rs = sorted((r for r in per if r["beta"] == beta and r["d"] == d), key=lambda r: r["M"])
            M = np.array([r["M"] for r in rs])
            ax.loglog(
                M, [r["error"] for r in rs], "o-", color=colors[d], label=f"d = {d}, A estimated"
            )
            ax.loglog(
                M,
                [r["oracle_error"] for r in rs],
                "s--",
                color=colors[d],
                mfc="none",
                label=f"d = {d}, A known",
            )
        M = np.array(sorted({r["M"] for r in per}), float)
        ref = [r["oracle_error"] for r in per if r["beta"] == beta and r["M"] == M[0]]
        slope = -2 * beta / (2 * beta + 1)
        ax.loglog(
            M,
            np.exp(np.mean(np.log(ref))) * (M / M[0]) ** slope,
            "k:",
            label=f"minimax slope {slope:.3f}",
        )
        ax.set(title=f"beta = {beta:g}", xlabel="M", ylabel="L2(rho) error (mean over reps)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{estimator} against {oracle} (the same data)")
    fig.tight_layout()
    from bayes_ips.io import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> list[dict]:
    import csv

    import pandas as pd

    from bayes_ips.io import atomic_write

    try:
        df = pd.read_csv(args.results)
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read {args.results}: {e}") from None
    missing = {"estimator", "family", "beta", "d", "M", "rep", "error"} - set(df.columns)
    if missing:
        raise SystemExit(f"{args.results} is no study results table (missing {sorted(missing)})")
    rows = gap_table(df, args.estimator, args.oracle)
    os.makedirs(args.out_dir, exist_ok=True)
    md = _markdown(rows, args.estimator, args.oracle)
    with atomic_write(os.path.join(args.out_dir, "oracle_gap.md")) as tmp, open(tmp, "w") as fh:
        fh.write(md)
    keys = sorted({k for r in rows for k in r})
    with atomic_write(os.path.join(args.out_dir, "oracle_gap.csv")) as tmp, open(tmp, "w") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        w.writerows(rows)
    _figure(rows, args.estimator, args.oracle, os.path.join(args.out_dir, "oracle_gap.png"))
    print(md.split("\n\nPer M")[0])
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="a study's results.csv with both estimators")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--estimator", default="erm_mixed")
    p.add_argument("--oracle", default="erm_oracle")
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
