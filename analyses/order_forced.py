"""Study cells rerun with the prior's difference order fixed at the curvature prior.

The default basis (:func:`bayes_ips.kselect.posterior_basis`) may take first
differences where the curvature prior's evidence sits at the grid's largest K.
This reruns ``bayes_pm`` cells from their records' specs with that question
switched off (``rough_order=False``: the curvature prior at its evidence-best
basis), so the two priors' posterior means can be compared on the same data.
Each record is written to ``OUT_DIR/records/`` under its own name (to a temporary
file, then renamed) with its spec and ``"forced_order": 2``.

Usage::

    python analyses/order_forced.py RECORD.json [RECORD.json ...] --out-dir OUT

Prints one JSON line per cell.
"""

from __future__ import annotations

import argparse
import functools
import json
import os


def main(args: argparse.Namespace) -> list[dict]:
    import bayes_ips
    import bayes_ips.kselect as ks
    from bayes_ips.io import atomic_write
    from bayes_ips.study.tasks import ips

    bayes_ips.enable_x64()
    out_dir = os.path.join(args.out_dir, "records")
    os.makedirs(out_dir, exist_ok=True)
    default = ks.posterior_basis
    ks.posterior_basis = functools.partial(default, rough_order=False)
    rows = []
    try:
        for path in args.records:
            with open(path) as f:
                spec = json.load(f)["spec"]
            rec = ips.run_cell(spec)
            doc = {"record": rec, "spec": spec, "forced_order": 2}
            with atomic_write(os.path.join(out_dir, os.path.basename(path))) as tmp:
                with open(tmp, "w") as f:
                    json.dump(doc, f)
            keys = ("d", "M", "rep", "error", "erm_error", "band_coverage", "sampler", "khat")
            row = {"record": os.path.basename(path), **{k: rec.get(k) for k in keys}}
            row.update(K=rec["K"], penalty_order=rec["penalty_order"], s=rec["wall_time_s"])
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        ks.posterior_basis = default
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="+", help="bayes_pm records of a study (their specs are used)")
    p.add_argument("--out-dir", required=True)
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
