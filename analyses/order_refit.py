"""The prior's order cross-validated with ``A`` refitted per fold, against at ERM's ``A``.

The default basis (:func:`bayes_ips.kselect.posterior_basis`) questions the
curvature prior when its evidence sits at the grid's largest K, and takes first
differences when they predict held-out folds of sequences better at ERM's ``A``
(:func:`bayes_ips.kselect.order_cv`).  At d = 30, M = 250 that check took first
differences where they made the posterior mean worse (analyses/RESULTS.md, session
20).  For the data of study cells (their records' ``spec``) this script makes the
same comparison of the same two candidates three ways:

* ``fixed``: at ERM's ``A`` (the default path);
* ``refit_erm``: at each fold's own posterior mode of ``(A, sigma, tau)`` under the
  candidate prior, searched from ERM's factors as the sampler's Laplace step is
  (:func:`bayes_ips.inference.laplace_at`, mode and Hessians);
* ``refit_mode``: the same modes searched from the full data's mode, whitened by its
  Hessian (:func:`bayes_ips.laplace.search_mode`; cheaper, and local).

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


def refit_cv(X, Y, fit, cands, scale: float, y_scale: float, start_at: str) -> dict:
    """:func:`~bayes_ips.kselect.order_cv`'s comparison of ``cands`` (two ``(knots, row)``)
    with ``A, sigma, tau`` at each fold's mode on the other folds, searched from ERM's
    factors (``start_at="erm"``) or from the full data's mode (``"mode"``)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bayes_ips.collapsed import difference_penalty
    from bayes_ips.gauge import gauge_factors
    from bayes_ips.inference import _erm_init, bound_model, laplace_at
    from bayes_ips.kselect import (
        ORDER_CV_FOLDS,
        _prior_precision,
        cv_fold_size,
        cv_summary,
        held_out_sse,
        null_space_ridge,
    )
    from bayes_ips.laplace import chart_to_flat, search_mode, unravel
    from bayes_ips.pairwise import DEFAULT_CHUNK, gram

    X, Y = np.asarray(X), np.asarray(Y)
    F, size = ORDER_CV_FOLDS, cv_fold_size(X.shape[0])
    ridge = null_space_ridge(y_scale)
    model = bound_model(fit.U.shape[1], True)
    start = {k: v[0] for k, v in _erm_init(jax.random.PRNGKey(0), fit, y_scale, 1, 0.0).items()}
    sse, n_f, steps = np.zeros((2, F)), np.zeros(F), 0
    for j, (knots, row) in enumerate(cands):
        D = difference_penalty(knots, scale, row["order"])
        data = dict(knots=knots, penalty=jnp.asarray(D), y_scale=jnp.asarray(y_scale))
        if start_at == "mode":
            approx, layout, chart, _ = laplace_at(
                model, (jnp.asarray(X), jnp.asarray(Y)), data, start
            )
            hessian = np.linalg.inv(np.asarray(approx.cov))
        for f in range(F):
            test = np.zeros(X.shape[0], dtype=bool)
            test[f * size : (f + 1) * size] = True
            X_t, Y_t = jnp.asarray(X[~test]), jnp.asarray(Y[~test])
            if start_at == "mode":
                z, n, _ = search_mode(
                    approx.mean, hessian, model, (X_t, Y_t), data, layout, chart=chart
                )
                z = jnp.asarray(z)
                m = unravel(z if chart is None else chart_to_flat(z, chart), layout)
            else:
                _, _, _, info = laplace_at(model, (X_t, Y_t), data, start)
                m, n = info["mode"], info["bfgs_steps"]
            steps += n
            Un, Vn = gauge_factors(jnp.asarray(m["U"]), jnp.asarray(m["V"]))
            fit_st = gram(Un, Vn, X_t, Y_t, knots, DEFAULT_CHUNK)
            fold = gram(Un, Vn, X[test], Y[test], knots, DEFAULT_CHUNK)
            Q = _prior_precision(D.T @ D, float(np.exp(m["tau"])), ridge)
            sigma = float(np.exp(m["sigma"]))
            sse[j, f] = held_out_sse(fit_st.FtF, fit_st.FtY, fold.FtF, fold.FtY, fold.YtY, Q, sigma)
            n_f[f] = float(fold.n_obs)
    return {**cv_summary(sse, n_f), "bfgs_steps": int(steps)}


def main(args: argparse.Namespace) -> list[dict]:
    import jax

    import bayes_ips
    from bayes_ips.erm import fit_erm
    from bayes_ips.kselect import posterior_basis
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

        def capture(cands, scale, y_scale, seen=seen):  # keep them; order_cv decides
            seen.update(cands=cands, scale=scale, y_scale=y_scale)

        t0 = time.perf_counter()
        _, table = posterior_basis(
            X, Y, erm.U, erm.V, erm.info["degree"], float(erm.info["sigma_hat"]), DEFAULT_CHUNK,
            order_check=capture,
        )  # fmt: skip
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
        cv = chosen["order_cv"] if "order_cv" in chosen else None
        for v in args.variants:
            if v == "fixed":
                res, dt = cv, t_fixed
            else:
                t0 = time.perf_counter()
                res = refit_cv(
                    X, Y, erm, seen["cands"], seen["scale"], seen["y_scale"], v.split("_")[1]
                )
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
