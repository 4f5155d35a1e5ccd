"""The default posterior on problems built outside the package: cost, error, coverage.

``heldout_posterior.py`` draws its problems with the package's own ``make_truth``
(its phi* families and token laws).  Here the data are made with NumPy alone, as a
user with their own simulator would make them: phi* outside the package's families
(ReLU, a square, a bump, a steep sigmoid, cos, a cube, |u|, a near-step, sinc),
token laws it does not offer (the unit sphere, Student-t, a two-cluster mixture,
uniform on [0, 1], exponential, Rademacher), rank-2 A, and sizes from N = 2 to
N = 40.  A* is a random U V^T scaled so that the scores have unit s.d.

For each case and seed, on the same data: ``fit_erm`` and ``sample_posterior`` with
their defaults (the posterior from that ERM fit, as ``bayes-ips sample`` runs it),
and on 20000 fresh pairs of the case's token law the L2(rho) errors of ERM and of
the posterior mean, and the fraction of 4000 of those pairs whose 90% band covers
g*.  ``post_s`` and ``erm_s`` are first-call times (compilation included) unless
``--warm`` reruns both and keeps the second.

Usage::

    python analyses/heldout_external.py --out-dir DIR [--set external|fresh|all]
        [--cases NAME ...] [--seeds 0 1] [--warm] [--method is] [--max-refits 0]

``--set fresh`` runs ten more problems, first run in session 34 (other phi*, Laplace
and uniform [-1, 1] tokens, d up to 12; ``FRESH_CASES``); ``--cases`` picks any.

``--method is`` keeps the importance sample where ``auto`` would fall back to NUTS
(its Pareto k shows why), and ``--max-refits 0`` turns off the proposal's refits.

Writes ``DIR/external.jsonl`` (one line per case and seed, appended as each finishes,
so a killed run keeps what it did) and ``DIR/external.json`` (the seeds, the cases
and the rows) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

PHI = {
    "relu": lambda u: np.maximum(u, 0.0),
    "tanh": np.tanh,
    "square": lambda u: u**2,
    "bump": lambda u: np.exp(-(u**2)),
    "sigmoid8": lambda u: 1 / (1 + np.exp(-8 * u)),
    "cos2": lambda u: np.cos(2 * u),
    "cube": lambda u: u**3,
    "abs": np.abs,
    "near_step": lambda u: np.tanh(20 * (u - 0.3)),
    "sinc": lambda u: np.sinc(3 * u),
    # the "fresh" set's (session 34)
    "sin3": lambda u: np.sin(3 * u),
    "softplus": lambda u: np.log1p(np.exp(2 * u)) / 2,
    "sqrtabs": lambda u: np.sqrt(np.abs(u)),
    "dgauss": lambda u: 2 * u * np.exp(-(u**2)),
    "quartic": lambda u: u**4 / 3 - u**2,
    "linear": lambda u: u,
    "lowtanh": lambda u: 0.2 * np.tanh(2 * u),
    "sin2": lambda u: np.sin(2 * u),
    "sigmoid3": lambda u: 1 / (1 + np.exp(-3 * u)),
}

TOKEN_LAWS = (
    "gauss",
    "sphere",
    "student3",
    "rademacher",
    "uniform01",
    "exp",
    "mixture",
    "laplace",
    "uniform_pm1",
)

# name: (phi, token law, d, rank, M, N, noise s.d.)
CASES = {
    "relu-gauss-d3": ("relu", "gauss", 3, 1, 1000, 5, 0.1),
    "tanh-gauss-d4": ("tanh", "gauss", 4, 1, 800, 5, 0.1),
    "cos2-gauss-d10-N2": ("cos2", "gauss", 10, 1, 3000, 2, 0.1),
    "square-sphere-d5": ("square", "sphere", 5, 1, 1500, 6, 0.1),
    "bump-student3-d4": ("bump", "student3", 4, 1, 1200, 6, 0.1),
    "sigmoid8-gauss-d2": ("sigmoid8", "gauss", 2, 1, 800, 4, 0.1),
    "cos2-mixture-d6": ("cos2", "mixture", 6, 1, 2000, 6, 0.2),
    "cube-uniform01-d3": ("cube", "uniform01", 3, 1, 1000, 5, 0.1),
    "abs-rademacher-d4": ("abs", "rademacher", 4, 1, 1000, 6, 0.1),
    "step-exp-d2": ("near_step", "exp", 2, 1, 1500, 5, 0.1),
    "sinc-gauss-d1-lowsnr": ("sinc", "gauss", 1, 1, 600, 4, 0.5),
    "bump-gauss-d3-N20": ("bump", "gauss", 3, 1, 300, 20, 0.1),
    "tanh-gauss-d20-small": ("tanh", "gauss", 20, 1, 300, 6, 0.1),
    "tanh-gauss-d2-M60": ("tanh", "gauss", 2, 1, 60, 3, 0.1),
    "tanh-gauss-d3-N40": ("tanh", "gauss", 3, 1, 100, 40, 0.1),
    "relu-gauss-d6-rank2": ("relu", "gauss", 6, 2, 2000, 6, 0.1),
    "tanh-gauss-d3-rank2": ("tanh", "gauss", 3, 2, 600, 6, 0.1),
    "tanh-student3-d5-rank2": ("tanh", "student3", 5, 2, 1500, 6, 0.1),
}

# A second set, never run before session 34 (``--set fresh``): other phi*, laws and sizes.
FRESH_CASES = {
    "sin3-laplace-d3": ("sin3", "laplace", 3, 1, 1000, 5, 0.1),
    "softplus-unif-d6": ("softplus", "uniform_pm1", 6, 1, 1200, 6, 0.1),
    "sqrtabs-student3-d3": ("sqrtabs", "student3", 3, 1, 1500, 5, 0.1),
    "dgauss-gauss-d8": ("dgauss", "gauss", 8, 1, 2000, 6, 0.1),
    "quartic-gauss-d2": ("quartic", "gauss", 2, 1, 800, 4, 0.2),
    "linear-exp-d4": ("linear", "exp", 4, 1, 600, 5, 0.1),
    "lowtanh-gauss-d5": ("lowtanh", "gauss", 5, 1, 1500, 5, 0.3),
    "sin2-mixture-d2-N3": ("sin2", "mixture", 2, 1, 2000, 3, 0.1),
    "relu-laplace-d12": ("relu", "laplace", 12, 1, 1500, 8, 0.1),
    "sigmoid3-sphere-d3-rank2": ("sigmoid3", "sphere", 3, 2, 1500, 6, 0.1),
}


def case_sets() -> dict[str, dict[str, tuple]]:
    """The named sets of cases (``--set``); ``all`` is both."""
    return {"external": CASES, "fresh": FRESH_CASES, "all": {**CASES, **FRESH_CASES}}


def tokens(rng: np.random.Generator, law: str, shape: tuple[int, ...]) -> np.ndarray:
    """Tokens of one of :data:`TOKEN_LAWS`, i.i.d. over all but the last axis."""
    if law == "gauss":
        return rng.standard_normal(shape)
    if law == "sphere":
        z = rng.standard_normal(shape)
        return z / np.linalg.norm(z, axis=-1, keepdims=True)
    if law == "student3":
        return rng.standard_t(3, shape) / np.sqrt(3)
    if law == "rademacher":
        return rng.choice([-1.0, 1.0], shape)
    if law == "uniform01":
        return rng.uniform(0.0, 1.0, shape)
    if law == "exp":
        return rng.exponential(1.0, shape)
    if law == "mixture":  # two clusters, +-1.5 (1, ..., 1), s.d. 0.3 around them
        return rng.choice([-1.5, 1.5], shape[:-1] + (1,)) + 0.3 * rng.standard_normal(shape)
    if law == "laplace":  # variance 1
        return rng.laplace(0.0, 1 / np.sqrt(2), shape)
    if law == "uniform_pm1":
        return rng.uniform(-1.0, 1.0, shape)
    raise ValueError(f"unknown token law {law!r}; choose from {', '.join(TOKEN_LAWS)}")


def case_data(name: str, seed: int, n_eval: int = 20000) -> dict:
    """The case's data ``X, Y``, its A*, and evaluation pairs ``x, y`` with ``g*``."""
    phi, law, d, r, M, N, noise = case_sets()["all"][name]
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    A = rng.standard_normal((d, r)) @ rng.standard_normal((d, r)).T
    X = tokens(rng, law, (M, N, d))
    off = ~np.eye(N, dtype=bool)
    A = A / np.einsum("mid,de,mje->mij", X, A, X)[:, off].std()  # unit-s.d. scores
    S = np.einsum("mid,de,mje->mij", X, A, X)
    f = PHI[phi]
    Y = np.where(off, f(S), 0.0).sum(-1) / (N - 1) + noise * rng.standard_normal((M, N))
    x, y = tokens(rng, law, (n_eval, d)), tokens(rng, law, (n_eval, d))
    return {
        "X": X,
        "Y": Y,
        "A": A,
        "rank": r,
        "x": x,
        "y": y,
        "g": f(np.einsum("pd,de,pe->p", x, A, y)),
    }


def run_case(
    name: str, seed: int, warm: bool = False, n_band: int = 4000, **sampler: object
) -> dict:
    import jax

    from bayes_ips.erm import ERMConfig, fit_erm
    from bayes_ips.inference import SamplerConfig, sample_posterior
    from bayes_ips.posterior import predict

    D = case_data(name, seed)
    X, Y, r, x, y, g = (D[k] for k in ("X", "Y", "rank", "x", "y", "g"))
    k_erm, k_post = jax.random.split(jax.random.PRNGKey(seed))
    out: dict = {"case": name, "seed": seed}
    for _ in range(2 if warm else 1):
        t0 = time.perf_counter()
        erm = fit_erm(k_erm, X, Y, ERMConfig(rank=r))
        t1 = time.perf_counter()
        fit = fit_erm(k_erm, X, Y, ERMConfig(rank=r))  # what `bayes-ips sample` fits first
        _, post, run = sample_posterior(
            k_post, X, Y, SamplerConfig(rank=r, **sampler), erm=fit, progress=False
        )
        out["erm_s"], out["post_s"] = t1 - t0, time.perf_counter() - t1
    out["ratio"] = out["post_s"] / out["erm_s"]

    def rms(e) -> float:
        return float(np.sqrt(np.mean(np.square(e))))

    out["erm_error"] = rms(np.asarray(erm.predict(x, y)) - g)
    out["pm_error"] = rms(predict(post, x, y)["g"] - g)
    out["g_sd"] = float(np.std(g))
    band = predict(post, x[:n_band], y[:n_band], level=0.9)
    gb = g[:n_band]
    out["coverage"] = float(np.mean((gb >= band["g_lo"]) & (gb <= band["g_hi"])))
    out.update(sampler=run.method, K=int(run.knots.n_intervals), erm_K=int(erm.info["K"]))
    for k in ("khat", "is_ess", "n_proposals", "is_refits", "fallback"):
        if k in run.info:
            out[k] = run.info[k]
    return out


def main(args: argparse.Namespace) -> list[dict]:
    import bayes_ips
    from bayes_ips.io import atomic_write
    from bayes_ips.study.backends import relieve_map_pressure

    bayes_ips.enable_x64()
    os.makedirs(args.out_dir, exist_ok=True)
    rows = []
    cases = case_sets()[args.set]
    for name in args.cases or list(cases):
        for seed in args.seeds:
            # dozens of compiled programs per case: past ~27 cases in one process LLVM ran
            # out of memory mappings ("Cannot allocate memory") and the run died
            relieve_map_pressure()
            row = run_case(name, seed, args.warm, method=args.method, max_refits=args.max_refits)
            rows.append(row)
            with open(os.path.join(args.out_dir, "external.jsonl"), "a") as f:
                f.write(json.dumps(row, default=str) + "\n")
            print(
                f"{name:>22s} seed {seed}: K {row['K']:3d} (ERM {row['erm_K']:3d}), PM / ERM "
                f"error {row['pm_error'] / row['erm_error']:.3f}, coverage "
                f"{row['coverage']:.3f}, ratio {row['ratio']:.2f}, {row['sampler']}"
                + (
                    f" (k {row['khat']:.2f}, refits {row.get('is_refits', 0)})"
                    if "khat" in row
                    else ""
                ),
                flush=True,
            )
    with atomic_write(os.path.join(args.out_dir, "external.json")) as tmp, open(tmp, "w") as f:
        meta = {"seeds": args.seeds, "method": args.method, "max_refits": args.max_refits}
        every = case_sets()["all"]
        ran = {row["case"]: every[row["case"]] for row in rows}
        json.dump({**meta, "set": args.set, "cases": ran, "rows": rows}, f, indent=2, default=str)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True)
    sets = case_sets()
    p.add_argument("--set", default="external", choices=list(sets), help="the cases to run")
    p.add_argument(
        "--cases",
        nargs="*",
        choices=list(sets["all"]),
        metavar="NAME",
        help="these cases (any set's): " + ", ".join(sets["all"]),
    )
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--warm", action="store_true", help="time a second run of each case")
    p.add_argument("--method", default="auto", choices=("auto", "is", "imh", "nuts"))
    p.add_argument(
        "--max-refits", type=int, default=2, help="is: proposal refits (0: the Laplace fit only)"
    )
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
