"""Session 35: where the low-amplitude tanh's posterior mean loses to ERM.

``python probe_lowtanh_A.py CASE SEED [SEED ...]``: the default path, the |cos| of ERM's
and the posterior's gauge-fixed A with A*, and both errors by true-score bins.
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import heldout_external as he  # noqa: E402  (its FRESH_CASES)

import bayes_ips  # noqa: E402
from bayes_ips.erm import ERMConfig, fit_erm  # noqa: E402
from bayes_ips.inference import SamplerConfig, sample_posterior  # noqa: E402
from bayes_ips.posterior import g_draws, predict  # noqa: E402


def cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b)


def rms(e):
    return float(np.sqrt(np.mean(np.square(e))))


def main(name, seeds):
    bayes_ips.enable_x64()
    for seed in seeds:
        D = he.case_data(name, seed)
        X, Y, r, x, y, g, A = (D[k] for k in ("X", "Y", "rank", "x", "y", "g", "A"))
        k_erm, k_post = jax.random.split(jax.random.PRNGKey(seed))
        erm = fit_erm(k_erm, X, Y, ERMConfig(rank=r))
        _, post, run = sample_posterior(
            k_post, X, Y, SamplerConfig(rank=r), erm=erm, progress=False
        )
        pe = predict(post, x, y)["g"]
        ee = np.asarray(erm.predict(x, y))
        Ad = np.asarray(post.A).reshape(-1, *post.A.shape[2:])
        cosd = np.array([cos(a, A) for a in Ad])
        print(
            name,
            seed,
            "K",
            run.knots.n_intervals,
            "ermK",
            erm.info["K"],
            "method",
            run.method,
            "PM",
            round(rms(pe - g), 5),
            "ERM",
            round(rms(ee - g), 5),
            "ratio",
            round(rms(pe - g) / rms(ee - g), 3),
        )
        print(
            "  A cos: ERM",
            round(cos(np.asarray(erm.A), A), 5),
            "draws mean",
            round(cosd.mean(), 5),
            "min",
            round(cosd.min(), 5),
            "PM-of-A",
            round(cos(Ad.mean(0), A), 5),
        )
        print(
            "  sigma",
            np.round(np.percentile(post.sigma, [5, 50, 95]), 4),
            "tau",
            np.round(np.percentile(post.tau, [5, 50, 95]), 4),
        )
        s = np.einsum("pd,de,pe->p", x, A, y)
        for lo, hi in [(0, 0.08), (0.08, 0.3), (0.3, 1), (1, 2), (2, 99)]:
            m = (np.abs(s) >= lo) & (np.abs(s) < hi)
            print(
                f"  |s| in [{lo},{hi}) n={m.sum()}: PM {rms((pe - g)[m]):.4f} "
                f"ERM {rms((ee - g)[m]):.4f}"
            )
        gd = g_draws(post, x[:4000], y[:4000], rao_blackwell=True).reshape(-1, 4000)
        print(
            "  sd of RB g over draws (mean over pairs)",
            round(float(gd.std(0).mean()), 5),
            "bias of PM",
            round(rms(gd.mean(0) - g[:4000]), 5),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2:]])
