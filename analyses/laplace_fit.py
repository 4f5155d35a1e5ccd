"""How well the Laplace proposal fits a study cell's posterior, and in what way it misses.

For the data of one ``bayes_pm`` cell of a study (its record's ``spec``; ``--M``
overrides the sample size), this runs the default path's Laplace step (the ERM fit,
the basis, the mode and the Hessian) and draws ``--proposals`` Student-t proposals
from it, as ``is`` does (without the defensive share).  Besides their Pareto k and
PSIS effective size it prints how the log weights ``log p - log q`` depend on the
proposal in whitened coordinates ``w = L^-1 (z - mode)`` (``L L^T`` the proposal's
covariance):

* ``r2_linear``: the share of their variance that a linear function of ``w`` explains.
  If ``p`` were the proposal tilted by ``exp(b^T w)``, its mean would sit ``b`` away
  from the mode: ``shift`` is ``|b|``, in proposal standard deviations.
* ``r2_linear_square``: with the squares ``w_j^2`` added (a spread along an axis that
  is off as well);
* ``grad_at_mode``: the whitened gradient of the potential at the mode (by central
  differences), to show the mode itself is found.

Usage::

    python analyses/laplace_fit.py RECORD.json [--M 4000] [--proposals 400] [--seed 0]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json


def main(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import bayes_ips
    from bayes_ips import inference as inf
    from bayes_ips.diagnostics import psis_weights
    from bayes_ips.erm import fit_erm
    from bayes_ips.laplace import charts_to_flat, mvt_logpdf, mvt_sample
    from bayes_ips.posterior import evaluate_proposals
    from bayes_ips.study.tasks import ips

    bayes_ips.enable_x64()
    with open(args.record) as f:
        spec = json.load(f)["spec"]
    if args.M is not None:
        spec["M"] = args.M
    truth, X, Y, key = ips.cell_data(spec)
    erm = fit_erm(jax.random.fold_in(key, ips._FIT), X, Y, ips.cell_erm_config(spec))
    cfg = ips.cell_sampler_config(spec, erm)
    k_lap, k_prop, k_c = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    st, approx, layout, chart, info = inf._laplace_step(k_lap, X, Y, cfg, erm, None)
    P = approx.mean.shape[0]
    df = cfg.proposal_df_for(P)

    def potential(z):
        """Potential energies at proposal-space points z (chart: less the log Jacobian)."""
        z = jnp.asarray(z)
        flat, log_j = charts_to_flat(z, chart) if chart is not None else (z, 0.0)
        keys = jax.random.split(k_c, z.shape[0])
        out = evaluate_proposals(
            flat, keys, st.X, st.Y, st.data_kwargs, model=st.model, layout=layout, batch=1
        )
        return np.asarray(out[1]) + np.asarray(log_j)

    z = mvt_sample(k_prop, approx, df, args.proposals)
    log_w = -potential(z) - np.asarray(mvt_logpdf(z, approx, df))
    _, khat, ess = psis_weights(log_w)
    L = np.asarray(approx.chol)
    w = np.linalg.solve(L, (np.asarray(z) - approx.mean).T).T
    ok = np.isfinite(log_w)
    lw = log_w[ok] - np.median(log_w[ok])

    def r2(design):
        coef, *_ = np.linalg.lstsq(design, lw, rcond=None)
        return 1.0 - np.var(lw - design @ coef) / np.var(lw), coef

    ones = np.ones((ok.sum(), 1))
    r2_lin, coef = r2(np.hstack([ones, w[ok]]))
    r2_sq, _ = r2(np.hstack([ones, w[ok], w[ok] ** 2]))
    h = 1e-4
    steps = [approx.mean + np.outer([-h, h], L[:, j]) for j in range(P)]
    grad = np.array([np.diff(potential(z2))[0] / (2 * h) for z2 in steps])
    out = {
        "d": spec["d"],
        "M": spec["M"],
        "rep": spec["rep"],
        "K": int(st.knots.n_intervals),
        "penalty_order": int(info["basis"].get("penalty_order", 2)),
        "P": int(P),
        "proposals": int(args.proposals),
        "khat": float(khat),
        "ess": float(ess),
        "log_w_q05_q95": [float(q) for q in np.quantile(lw, [0.05, 0.95])],
        "r2_linear": float(r2_lin),
        "shift": float(np.linalg.norm(coef[1:])),
        "r2_linear_square": float(r2_sq),
        "grad_at_mode": float(np.linalg.norm(grad)),
        "bfgs_steps": int(info["bfgs_steps"]),
        "seed": int(args.seed),
    }
    print(json.dumps(out), flush=True)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("record", help="a bayes_pm record of a study (its spec is used)")
    p.add_argument("--M", type=int, default=None, help="another sample size for the same cell")
    p.add_argument("--proposals", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
