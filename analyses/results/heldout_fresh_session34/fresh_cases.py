"""Held-out cases never run before (session 34): the default path on new phi*, laws, sizes.

Wraps ``analyses/heldout_external.py`` with ten new cases (its CASES replaced):
``python fresh_cases.py --out-dir DIR [--cases ...] [--seeds 0 1]``.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import heldout_external as he  # noqa: E402

he.PHI.update(
    {
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
)
_tokens = he.tokens


def tokens(rng, law, shape):
    if law == "laplace":
        return rng.laplace(0.0, 1 / np.sqrt(2), shape)
    if law == "uniform_pm1":
        return rng.uniform(-1.0, 1.0, shape)
    return _tokens(rng, law, shape)


he.tokens = tokens
# name: (phi, token law, d, rank, M, N, noise sd)
NEW = {
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
he.CASES.clear()
he.CASES.update(NEW)

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", required=True)
    p.add_argument("--cases", nargs="*")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    a = p.parse_args()
    ns = argparse.Namespace(
        out_dir=a.out_dir, cases=a.cases, seeds=a.seeds, warm=False, method="auto", max_refits=2
    )
    he.main(ns)
