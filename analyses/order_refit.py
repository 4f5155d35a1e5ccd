"""The prior's order cross-validated with ``A`` refitted per fold, against at ERM's ``A``.

The default basis (:func:`bayes_ips.kselect.posterior_basis`) questions the
curvature prior when its evidence sits at the grid's largest K, and takes first
differences when they predict held-out folds of sequences better at ERM's ``A``
(:func:`bayes_ips.kselect.order_cv`).  At d = 30, M = 250 that check took first
differences where they made the posterior mean worse (analyses/RESULTS.md, session
20); since session 21 such a win is confirmed with ``A`` refitted per fold.  For the
data of study cells (their records' ``spec``) this script makes the same comparison
of the same two candidates three ways:

* ``fixed``: at ERM's ``A`` (:func:`bayes_ips.kselect.order_cv`, the default path's
  first comparison; where first differences win it, the default path confirms
  them as ``refit_erm`` does);
* ``refit_erm``: at each fold's own posterior mode of ``(A, sigma, tau)`` under the
  candidate prior, searched from ERM's factors as the sampler's Laplace step is
  (:func:`bayes_ips.inference.refit_order_cv`);
* ``refit_mode``: the same modes searched from the full data's mode, whitened by its
  Hessian (``start_at="mode"``: cheaper, and local).

Usage::

    python analyses/order_refit.py RECORD.json [RECORD.json ...] [--variants fixed refit_erm]

Prints one JSON line per record: per variant the z of first differences' gain
(``-mse_diff / se``; above :data:`~bayes_ips.kselect.ORDER_CV_SE` they are taken) and
its time.
"""

from __future__ import annotations

import argparse
import json
import time

VARIANTS = ("fixed", "refit_erm", "refit_mode")


def main(args: argparse.Namespace) -> list[dict]:
    import jax

    import bayes_ips
    import bayes_ips.kselect as ks
    from bayes_ips.erm import fit_erm
    from bayes_ips.inference import refit_order_cv
    from bayes_ips.kselect import order_cv
    from bayes_ips.pairwise import DEFAULT_CHUNK
    from bayes_ips.study.tasks import ips

    bayes_ips.enable_x64()
    out = []
    for path in args.records:
        with open(path) as f:
            spec = json.load(f)["spec"]
        _, X, Y, key = ips.cell_data(spec)
        erm = fit_erm(jax.random.fold_in(key, ips._FIT), X, Y, ips.cell_erm_config(spec))
        seen: dict = {}

        def capture(X, Y, Un, Vn, cands, scale, y_scale, chunk, seen=seen):
            seen.update(cands=[c[:2] for c in cands], scale=scale, y_scale=y_scale)
            return order_cv(X, Y, Un, Vn, cands, scale, y_scale, chunk)

        t0 = time.perf_counter()
        ks.order_cv = capture  # the default path's candidates, and its comparison
        try:
            _, table = ks.posterior_basis(
                X, Y, erm.U, erm.V, erm.info["degree"], float(erm.info["sigma_hat"]),
                DEFAULT_CHUNK,
            )  # fmt: skip
        finally:
            ks.order_cv = order_cv
        t_fixed = time.perf_counter() - t0
        row = {"record": path.split("/")[-1], "d": spec["d"], "M": spec["M"], "rep": spec["rep"]}
        chosen = next(t for t in table if t["chosen"])
        row.update(K=int(chosen["K"]), order=int(chosen.get("order", 2)))
        if "cands" not in seen:
            row["questioned"] = False
            print(json.dumps(row), flush=True)
            out.append(row)
            continue
        row["questioned"] = True
        for v in args.variants:
            if v == "fixed":
                res, dt = chosen["order_cv"], t_fixed
            else:
                t0 = time.perf_counter()
                res = refit_order_cv(
                    X, Y, erm, seen["cands"], seen["scale"], seen["y_scale"],
                    start_at=v.split("_")[1],
                )  # fmt: skip
                dt = time.perf_counter() - t0
            row[f"z_{v}"] = float(-res["mse_diff"] / res["se"])
            row[f"s_{v}"] = round(dt, 2)
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="+", help="bayes_pm records of a study (their specs are used)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
