"""The coercivity constant c_H against the correlation of tokens, and the error that follows it.

The paper's Lemma 3.4 bounds the L2(rho) error by the excess risk over ``c_H``; for
tokens i.i.d. given what they share, ``c_H >= 1/(N-1)`` (:mod:`bayes_ips.coercivity`).
Exchangeable Gaussian tokens with within-sample correlation ``rho`` span
``-1/(N-1) <= rho < 1``: a common factor for ``rho >= 0``, negatively correlated ones
(down to centred samples) below.  For each ``rho`` on a grid this script measures, on
the same A* (rank 1) and phi* (tanh scaled to the scores):

* the population ``c_H`` of a fixed basis (K quantile knots of the scores) at A*,
  estimated on ``--pop-samples`` samples (plug-in bias about ``sqrt(dim / (M N))``);
* ERM (GCV's K, the package's defaults) on ``--reps`` data sets per M: the relative
  L2(rho) error ``||g_hat - g*||^2 / Var_rho(g*)`` on held-out pairs of the same law,
  and the data ``c_H`` of the fitted basis.

and plots ``(N-1) c_H`` against ``rho`` and the error against ``1 / ((N-1) c_H)``, with
the least-squares slope of log error on log ``1/c_H`` per M (the theory's bound has
slope 1).  ``c_H`` is the worst generalised eigenvalue; the error of a noise-driven
fit spreads over all of them, so the harmonic mean of the spectrum is plotted too.

Usage::

    python analyses/coercivity_study.py --out-dir DIR [--rho R ...] [--M 500 2000]
        [--reps 4] [--d 3] [--N 6] [--seed 0]

Writes ``DIR/coercivity.csv``, ``DIR/coercivity.json`` (seed and settings) and
``DIR/coercivity.png``; the last line printed is ``error_slope=<float>`` (the slope
on log 1/c_H at the largest M).
"""

from __future__ import annotations

import argparse
import json
import math
import os

import matplotlib

matplotlib.use("Agg")

NOISE = 0.1
K_POP = 12  # knot intervals of the basis whose population c_H is measured


def default_rhos(N: int) -> list[float]:
    """From centred samples (-1/(N-1)) through independence to a strong common factor."""
    lo = -1.0 / (N - 1)
    return [lo, 0.75 * lo, 0.5 * lo, 0.25 * lo, 0.0, 0.3, 0.6, 0.9]


def law_for(rho: float, d: int):
    from bayes_ips.simulate import TokenLaw

    return TokenLaw("gaussian", d) if rho == 0 else TokenLaw("correlated", d, rho=rho)


def population_c_H(key, truth, N: int, samples: int) -> dict:
    """c_H of K_POP quantile knots at the true A*, on ``samples`` fresh samples."""
    import numpy as np

    from bayes_ips.coercivity import coercivity
    from bayes_ips.kselect import _knots_for
    from bayes_ips.simulate import sample_tokens

    X = sample_tokens(key, truth.tokens, samples, N)
    u, s, vt = np.linalg.svd(np.asarray(truth.A))
    U, V = u[:, :1] * s[0], vt[:1].T
    knots = _knots_for(X, U, V, K_POP, 3, 1)
    c = coercivity(X, U, V, knots)
    harmonic = float(1.0 / np.mean(1.0 / c.spectrum))  # the spectrum's harmonic mean
    return {"c_H_pop": c.c_H, "c_H_pop_dim": c.dim, "c_H_pop_harmonic": harmonic}


def run_rho(rho: float, args) -> list[dict]:
    import jax
    import numpy as np

    from bayes_ips.erm import ERMConfig, fit_erm
    from bayes_ips.metrics import l2_error
    from bayes_ips.simulate import make_truth, simulate

    base = jax.random.PRNGKey(args.seed)
    k_truth = jax.random.fold_in(base, 0)  # one A* for every rho
    truth = make_truth(k_truth, args.d, 1, phi="tanh", tokens=law_for(rho, args.d), noise_sd=NOISE)
    k_rho = jax.random.fold_in(base, 1 + int(round((rho + 1) * 1e6)))
    pop = population_c_H(jax.random.fold_in(k_rho, 0), truth, args.N, args.pop_samples)
    rows = []
    for M in args.M:
        for rep in range(args.reps):
            k = jax.random.fold_in(jax.random.fold_in(k_rho, M), rep)
            k_data, k_fit, k_err = jax.random.split(k, 3)
            X, Y = (np.asarray(a) for a in simulate(k_data, truth, M, args.N))
            fit = fit_erm(k_fit, X, Y, ERMConfig())
            err = l2_error(k_err, fit.predict, truth, args.pairs)
            rows.append(
                {
                    "rho": rho,
                    "M": M,
                    "rep": rep,
                    "N": args.N,
                    "d": args.d,
                    **pop,
                    "c_H_fit": fit.info.get("c_H", math.nan),
                    "K": int(fit.knots.n_intervals),
                    "error": err.error,
                    "error_se": err.se,
                    "relative_error": err.relative,
                }
            )
    return rows


def slopes(rows: list[dict], key: str) -> dict[int, float]:
    """Per M: least-squares slope of log median relative error on log 1/((N-1) rows[key])."""
    import numpy as np

    out = {}
    for M in sorted({r["M"] for r in rows}):
        xs, ys = [], []
        for rho in sorted({r["rho"] for r in rows}):
            sel = [r for r in rows if r["M"] == M and r["rho"] == rho]
            xs.append(-math.log((sel[0]["N"] - 1) * sel[0][key]))
            ys.append(math.log(float(np.median([r["relative_error"] for r in sel]))))
        out[M] = float(np.polyfit(xs, ys, 1)[0])
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from bayes_ips.io import atomic_write

    rhos = sorted({r["rho"] for r in rows})
    N = rows[0]["N"]
    first = [next(r for r in rows if r["rho"] == x) for x in rhos]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    a = axes[0]
    a.plot(rhos, [(N - 1) * r["c_H_pop"] for r in first], "o-", label="c_H (population, A*)")
    a.plot(
        rhos,
        [(N - 1) * r["c_H_pop_harmonic"] for r in first],
        "^-",
        label="harmonic mean of the spectrum",
    )
    fitted = [np.median([r["c_H_fit"] for r in rows if r["rho"] == x]) * (N - 1) for x in rhos]
    a.plot(rhos, fitted, "s--", label="c_H on the data, ERM's basis")
    a.axhline(1.0, color="gray", lw=0.8, ls=":")
    a.axvline(-1 / (N - 1), color="gray", lw=0.8, ls=":")
    a.set_yscale("log")
    a.set_xlabel("within-sample correlation of tokens rho")
    a.set_ylabel("(N - 1) x constant")
    a.set_title(f"coercivity (N = {N}; 1 = the i.i.d. bound)")
    a.legend(fontsize=8)
    for ax, key, name in (
        (axes[1], "c_H_pop", "c_H"),
        (axes[2], "c_H_pop_harmonic", "harmonic mean"),
    ):
        x = [1 / ((N - 1) * r[key]) for r in first]
        for M, s in slopes(rows, key).items():
            y = [
                np.median([r["relative_error"] for r in rows if r["rho"] == v and r["M"] == M])
                for v in rhos
            ]
            ax.loglog(x, y, "o-", label=f"ERM, M = {M} (slope {s:.2f})")
        ax.set_xlabel(f"1 / ((N - 1) {name})")
        ax.set_ylabel("relative L2(rho) error (median)")
        ax.set_title(f"error against 1 / {name}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    import csv

    import bayes_ips
    from bayes_ips.io import atomic_write
    from bayes_ips.simulate import check_correlation

    bayes_ips.enable_x64()
    rhos = default_rhos(args.N) if args.rho is None else args.rho
    for rho in rhos:
        check_correlation(rho, args.N)
    os.makedirs(args.out_dir, exist_ok=True)
    rows = []
    for rho in rhos:
        new = run_rho(rho, args)
        rows += new
        print(
            f"rho {rho:+.3f}: (N-1) c_H {(args.N - 1) * new[0]['c_H_pop']:.3f}, harmonic "
            f"{(args.N - 1) * new[0]['c_H_pop_harmonic']:.3f}; relative error "
            + ", ".join(f"M = {r['M']} {r['relative_error']:.3g}" for r in new[:: args.reps]),
            flush=True,
        )
    slope = slopes(rows, "c_H_pop")
    slope_h = slopes(rows, "c_H_pop_harmonic")
    with atomic_write(os.path.join(args.out_dir, "coercivity.csv")) as tmp, open(tmp, "w") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    settings = {k: v for k, v in vars(args).items() if k != "out_dir"}
    result = {
        "seed": args.seed,
        "settings": {**settings, "rho": rhos},
        "slopes_c_H": slope,
        "slopes_harmonic": slope_h,
    }
    with atomic_write(os.path.join(args.out_dir, "coercivity.json")) as tmp, open(tmp, "w") as f:
        json.dump({**result, "rows": rows}, f, indent=2)
    plot(rows, os.path.join(args.out_dir, "coercivity.png"))
    for M, s in slope.items():
        print(
            f"M = {M}: slope of log error on log 1/c_H {s:.3f}, on log 1/harmonic {slope_h[M]:.3f}"
        )
    print(f"error_slope={slope[max(slope)]:.4f}")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--rho", type=float, nargs="+", help="correlations (default: 8 from -1/(N-1))")
    p.add_argument("--M", type=int, nargs="+", default=[500, 2000])
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--d", type=int, default=3)
    p.add_argument("--N", type=int, default=6)
    p.add_argument("--pairs", type=int, default=20000, help="held-out pairs per error")
    p.add_argument("--pop-samples", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    return p


if __name__ == "__main__":
    from bayes_ips.errors import InputError

    try:
        main(build_parser().parse_args())
    except InputError as e:
        raise SystemExit(f"error: {e}") from None
