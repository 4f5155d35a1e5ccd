"""The default posterior path against NUTS on the same paper cells, cell by cell.

Reads the posterior-mean records of two study folders of ``configs/paper.toml``
(same seed, hence the same data per cell): the default path (``method = "auto"``)
and NUTS (``configs/paper_nuts.toml``, the records committed in
``results/paper_records``), pairs them by (d, beta, M, rep) and prints, per cell,
both posterior-mean errors, their ratio, both 90% band coverages and their
difference, and both wall times.  Issue 13's criteria: error within 5% of NUTS's
(ratio <= 1.05) and coverage within 0.03.

Usage::

    python analyses/fast_vs_nuts.py --fast analyses/results/paper_auto \\
        --nuts analyses/results/paper_records [--out-csv PATH]

The last line is ``cells_within_criteria=<k>/<n>``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

ERROR_RATIO_MAX = 1.05
COVERAGE_GAP_MAX = 0.03
KEY = ("d", "beta", "M", "rep")


def load_records(folder: str | Path) -> dict[tuple, dict]:
    """The finished posterior-mean records of a study folder, keyed by (d, beta, M, rep)."""
    out = {}
    for path in sorted(Path(folder, "records").glob("bayes_pm_*.json")):
        rec = json.loads(path.read_text())["record"]
        out[tuple(rec[k] for k in KEY)] = rec
    return out


def compare(fast: dict, nuts: dict) -> list[dict]:
    rows = []
    for key in sorted(set(fast) & set(nuts)):
        f, n = fast[key], nuts[key]
        rows.append(
            {
                **dict(zip(KEY, key, strict=True)),
                "sampler": f.get("sampler", ""),
                "error_fast": f["error"],
                "error_nuts": n["error"],
                "error_ratio": f["error"] / n["error"],
                "coverage_fast": f["band_coverage"],
                "coverage_nuts": n["band_coverage"],
                "coverage_gap": f["band_coverage"] - n["band_coverage"],
                "time_fast_s": f["wall_time_s"],
                "time_nuts_s": n["wall_time_s"],
                "erm_error": n["erm_error"],
            }
        )
    for r in rows:
        r["within"] = (
            r["error_ratio"] <= ERROR_RATIO_MAX and abs(r["coverage_gap"]) <= COVERAGE_GAP_MAX
        )
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    rows = compare(load_records(args.fast), load_records(args.nuts))
    if not rows:
        raise SystemExit("no cell is in both folders")
    head = (
        f"{'d':>2} {'beta':>4} {'M':>5} {'rep':>3} {'sampler':>7} {'err fast':>9} {'err NUTS':>9} "
        f"{'ratio':>6} {'cov fast':>8} {'cov NUTS':>8} {'gap':>6} {'t fast':>7} {'t NUTS':>7}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['d']:>2} {r['beta']:>4} {r['M']:>5} {r['rep']:>3} {r['sampler']:>7} "
            f"{r['error_fast']:9.3e} {r['error_nuts']:9.3e} {r['error_ratio']:6.3f} "
            f"{r['coverage_fast']:8.3f} {r['coverage_nuts']:8.3f} {r['coverage_gap']:+6.3f} "
            f"{r['time_fast_s']:7.1f} {r['time_nuts_s']:7.1f}" + ("" if r["within"] else "  <-")
        )
    if args.out_csv:
        from bayes_ips.io import atomic_write

        with atomic_write(args.out_csv) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    k = sum(r["within"] for r in rows)
    print(f"cells_within_criteria={k}/{len(rows)}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", required=True, help="study folder of the default path")
    p.add_argument("--nuts", required=True, help="study folder of the NUTS records")
    p.add_argument("--out-csv")
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
