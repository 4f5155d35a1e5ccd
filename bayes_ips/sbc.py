"""Simulation-based calibration (Talts et al. 2018) of the low-rank spline posterior.

One replication draws the parameters from the prior, simulates data from them,
samples the posterior (:func:`bayes_ips.inference.fit_posterior`) and records the
rank of the truth among ``L`` thinned posterior draws, for identifiable
quantities only: ``g(x_p, y_p) = phi_c(x_p^T A y_p)`` at a few fixed pairs of
tokens, ``sigma``, ``tau`` and the entries of the gauge-fixed ``A`` (unit
Frobenius norm, largest-magnitude entry positive, the same rule applied to the
truth and to every draw).  If the sampler draws from the exact posterior, every
rank is uniform on ``0..L``.

The prior must not look at the data
-----------------------------------
By default the model's knots, the units of its curvature penalty and its
``y_scale`` come from an ERM fit and from ``RMS(Y)``: a data-dependent prior,
for which SBC's identity does not hold.  Here they are fixed in advance
(:func:`design_prior`), from the design alone and a fixed key:

* knots: ``K`` intervals (cubic), symmetric around 0: the breaks of the positive
  half are ``0`` and the quantiles ``j / (K/2)``, ``j = 1..K/2-1``, of ``|x^T A y|``
  over prior draws of ``A`` (4000 of them, one pair of cube tokens each), and
  the ends are ``+-d``: for unit-Frobenius ``A`` and cube tokens
  ``|x^T A y| <= ||A||_2 |x| |y| <= d``, so every score of every replication lies
  inside the basis.  Symmetric knots make the prior (and the posterior) exactly
  invariant under ``(A, phi) -> (-A, phi(-.))``, which leaves ``g`` and the
  gauge-fixed ``A`` unchanged: a sampler that visits one of the two sign modes
  still gives the right law of every ranked quantity.
* penalty units: the standard deviation of those prior scores;
* ``y_scale = 1``.

The gauge factor and ``numpyro.infer.Predictive``
-------------------------------------------------
The truth is drawn by the model itself (``Y=None``) with
:class:`numpyro.infer.Predictive`, which ignores the ``numpyro.factor`` on the
radii of ``U`` and ``V``: it draws ``U, V`` from ``N(0, I)`` instead of
``N(0, I) exp(gauge)``.  At rank 1 this changes nothing that is ranked: the
factor depends on ``|U|``, ``|V|`` and ``|U|^2 - |V|^2`` only, so under both laws
the directions ``U/|U|`` and ``V/|V|`` are independent, uniform on the sphere and
independent of the radii, and ``A = u v^T / (|u| |v|)`` depends on the directions
only.  ``sigma``, ``tau`` and ``c`` do not enter the factor: their prior is
untouched.  So Predictive's ``(A, sigma, tau, c)`` are exact draws of the prior
of the identifiable quantities (and its ``Y`` an exact draw of the data given
them).

At rank r >= 2 it does not hold: ``A`` is ``O_U S_U S_V O_V^T`` (polar
decompositions), and the gauge factor's balance term ``U^T U - V^T V`` ties the
singular values of ``A`` to it.  Measured at d = r = 2: the median ratio of the
second to the first singular value of ``A`` is 0.056 under the model's prior and
0.113 under ``N(0, I)`` factors.  So at rank >= 2 the factors are drawn from the
prior with its gauge factor by one NUTS chain (:func:`factor_prior_draws`, every
10th of ``10 R`` iterations after 1000 of warmup for ``R`` replications; the lag-1
autocorrelation of that ratio was 0.02), and ``Predictive`` draws the rest given
them.

Thinning
--------
The sampler's ``chains x draws`` draws are thinned to ``L`` (default 100): the
last ``L / chains`` draws of each chain at an equal stride (every 20th of 4 x
500).  The smallest bulk ESS of the ranked quantities over all draws is
recorded per replication (``ess_min``), so one can see whether the ``L`` kept
draws are roughly independent (ESS >= L).

Uniformity test
---------------
Pearson's chi-square on binned ranks, with the exact bin probabilities of the
discrete uniform law on ``0..L`` (``B = clip(n / 5, 2, 10)`` contiguous bins of
ranks for ``n`` replications, at least 5 expected per bin).  A chi-square on bins
is the test of Talts et al.; a Kolmogorov-Smirnov test is not exact on discrete
ranks (conservative) and is most sensitive in the middle of the range, while
miscalibration often shows at the ends (U or inverted-U shapes).  The p-values
are Bonferroni-adjusted over the quantities (``min(1, n_q p)``).

The ECDF figure plots, per quantity, the ECDF of the randomised normalised ranks
``(rank + U) / (L + 1)`` (``U`` uniform on [0, 1), from a fixed generator; exactly
uniform on [0, 1] under calibration) minus the uniform CDF, with ArviZ's
simultaneous 95% band (Säilynoja, Bürkner & Vehtari 2022).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayes_ips.inference import FixedPrior, SamplerConfig, bound_model, fit_posterior
from bayes_ips.io import atomic_write, to_json
from bayes_ips.simulate import TokenLaw, sample_pairs, sample_tokens
from bayes_ips.spline import make_knots, spline_eval

__all__ = [
    "SBCDesign",
    "bonferroni",
    "design_prior",
    "draw_truth",
    "fixed_pairs",
    "normalised_ranks",
    "rank_of_truth",
    "replicate",
    "run_sbc",
    "sign_fix",
    "thin_index",
    "uniformity_pvalue",
]

CSV_FIELDS = (
    "replication",
    "quantity",
    "rank",
    "L",
    "sampler",
    "fallback",
    "ess_min",
    "wall_s",
    "khat",
    "refits",
)


@dataclasses.dataclass(frozen=True)
class SBCDesign:
    """The simulation design; ``design_seed`` fixes the knots and the pairs of tokens."""

    M: int = 200
    N: int = 6
    d: int = 2
    rank: int = 1
    n_intervals: int = 8
    degree: int = 3
    y_scale: float = 1.0
    n_pairs: int = 4
    design_seed: int = 20180101
    prior_draws: int = 4000  # prior draws of A behind the knots and the penalty's units

    def token_law(self) -> TokenLaw:
        return TokenLaw("cube", self.d)


def _prior_scores(design: SBCDesign) -> np.ndarray:
    """``x^T A y`` for draws of ``A = U V^T / |U V^T|_F``, ``U, V ~ N(0, I)`` (at rank 1:
    ``u v^T`` with uniform directions, the prior of ``A``), and cube tokens."""
    key = jax.random.fold_in(jax.random.PRNGKey(design.design_seed), 0)
    ku, kv, kt = jax.random.split(key, 3)
    n, d, r = design.prior_draws, design.d, design.rank
    U = np.array(jax.random.normal(ku, (n, d * r))).reshape(n, d, r)
    V = np.array(jax.random.normal(kv, (n, d * r))).reshape(n, d, r)
    A = U @ np.swapaxes(V, 1, 2)
    A /= np.linalg.norm(A, axis=(1, 2), keepdims=True)
    x, y = (np.asarray(a) for a in sample_pairs(kt, design.token_law(), n))
    return np.einsum("pi,pij,pj->p", x, A, y)


def design_prior(design: SBCDesign) -> FixedPrior:
    """Knots, penalty units and ``y_scale`` fixed from the design alone (module docstring)."""
    if not 1 <= design.rank <= design.d:
        raise ValueError(f"rank must be between 1 and d = {design.d}, got {design.rank}")
    if design.n_intervals % 2 or design.n_intervals < 2:
        raise ValueError(f"n_intervals must be even (symmetric knots), got {design.n_intervals}")
    S = _prior_scores(design)
    half = design.n_intervals // 2
    inner = np.quantile(np.abs(S), np.arange(1, half) / half)
    pos = np.concatenate([[0.0], inner, [float(design.d)]])
    breaks = np.concatenate([-pos[:0:-1], pos])
    knots = make_knots(breaks, design.degree, 1)
    return FixedPrior(knots, float(S.std()), float(design.y_scale))


def fixed_pairs(design: SBCDesign) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of tokens at which ``g`` is ranked: (n_pairs, d) each, from the token law."""
    key = jax.random.fold_in(jax.random.PRNGKey(design.design_seed), 1)
    x, y = sample_pairs(key, design.token_law(), design.n_pairs)
    return np.asarray(x), np.asarray(y)


# The factors' prior at rank >= 2 (module docstring): one NUTS chain on it, thinned,
# keyed by ``fold_in(PRNGKey(seed), FACTOR_KEY)`` (replication r takes ``fold_in(.., r)``).
FACTOR_KEY = 2**31 - 1
FACTOR_WARMUP = 1000
FACTOR_THIN = 10


def factor_prior_draws(key: jax.Array, design: SBCDesign, n: int) -> dict[str, np.ndarray]:
    """``n`` draws of ``U, V`` (``(n, d, r)`` each) from the model's prior, gauge factor included.

    ``N(0, I)`` times ``exp(gauge_log_factor(U, V))``, by one NUTS chain of
    :data:`FACTOR_WARMUP` warmup iterations and ``n`` draws kept every
    :data:`FACTOR_THIN`-th iteration (the prior has ``2 d r`` dimensions and no data).
    """
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    from bayes_ips.models.lowrank_spline import gauge_log_factor

    d, r = design.d, design.rank

    def factors():
        U = numpyro.sample("U", dist.Normal(0.0, 1.0).expand([d, r]).to_event(2))
        V = numpyro.sample("V", dist.Normal(0.0, 1.0).expand([d, r]).to_event(2))
        numpyro.factor("gauge", gauge_log_factor(U, V))

    mcmc = MCMC(
        NUTS(factors, dense_mass=True),
        num_warmup=FACTOR_WARMUP,
        num_samples=n * FACTOR_THIN,
        thinning=FACTOR_THIN,
        progress_bar=False,
    )
    mcmc.run(key)
    return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


def draw_truth(
    key: jax.Array, X, prior: FixedPrior, design: SBCDesign, factors: dict | None = None
) -> dict[str, np.ndarray]:
    """One prior draw of ``A, sigma, tau, c`` and of ``Y`` given ``X``, by the model itself.

    ``factors`` (``U`` and ``V``, ``(d, r)``) are given at rank >= 2, drawn from the
    factors' prior with its gauge factor (:func:`factor_prior_draws`); the rest is
    drawn by ``Predictive`` given them.
    """
    from numpyro.infer import Predictive

    model = bound_model(design.rank, True)
    given = None if factors is None else {k: np.asarray(v)[None] for k, v in factors.items()}
    out = Predictive(model, posterior_samples=given, num_samples=1)(
        key,
        jnp.asarray(X),
        None,
        knots=prior.knots,
        penalty=jnp.asarray(prior.penalty()),
        y_scale=prior.y_scale,
    )
    keep = ("A", "sigma", "tau", "c", "Y")
    return {k: np.asarray(out[k][0]) for k in keep}


def sign_fix(A: np.ndarray) -> np.ndarray:
    """Largest-magnitude entry of each ``(..., d, d)`` matrix made positive."""
    A = np.asarray(A)
    flat = A.reshape(A.shape[:-2] + (-1,))
    big = np.take_along_axis(flat, np.argmax(np.abs(flat), axis=-1)[..., None], axis=-1)
    return A * np.where(big >= 0, 1.0, -1.0)[..., None]


def quantity_names(design: SBCDesign) -> list[str]:
    d = design.d
    return (
        [f"g[{p}]" for p in range(design.n_pairs)]
        + ["sigma", "tau"]
        + [f"A[{i},{j}]" for i in range(d) for j in range(d)]
    )


def _truth_quantities(truth: dict, x, y, prior: FixedPrior) -> np.ndarray:
    A = truth["A"]
    g = spline_eval(jnp.einsum("pi,ij,pj->p", x, A, y), truth["c"], prior.knots)
    return np.concatenate(
        [np.asarray(g), [truth["sigma"], truth["tau"]], sign_fix(A).ravel()]
    ).astype(float)


def _draw_quantities(post, x, y) -> np.ndarray:
    """(C, D, n_quantities): g with full draws of c, sigma, tau, sign-fixed A."""
    from bayes_ips.posterior import g_draws

    g = g_draws(post, x, y, rao_blackwell=False)
    C, D = post.shape
    A = sign_fix(post.A).reshape(C, D, -1)
    return np.concatenate([g, post.sigma[..., None], post.tau[..., None], A], axis=-1)


def thin_index(C: int, D: int, L: int) -> np.ndarray:
    """Flat (chain-major) indices of ``L`` draws: the last ``L / C`` of each chain, equal stride."""
    if L % C:
        raise ValueError(f"L = {L} must be a multiple of the number of chains {C}")
    per = L // C
    stride = D // per
    if stride < 1:
        raise ValueError(f"{D} draws per chain cannot give {per} thinned draws")
    within = D - 1 - stride * np.arange(per)[::-1]
    return (np.arange(C)[:, None] * D + within[None]).ravel()


def rank_of_truth(truth: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Number of draws below the truth, per quantity: ``draws`` (L, Q), ``truth`` (Q,) -> (Q,)."""
    return np.sum(np.asarray(draws) < np.asarray(truth)[None], axis=0).astype(int)


def normalised_ranks(ranks: np.ndarray, L: int, rng: np.random.Generator) -> np.ndarray:
    """``(rank + U) / (L + 1)``: exactly uniform on [0, 1] when the ranks are uniform on 0..L."""
    ranks = np.asarray(ranks, dtype=float)
    return (ranks + rng.uniform(size=ranks.shape)) / (L + 1)


def uniformity_pvalue(ranks: np.ndarray, L: int, n_bins: int | None = None) -> float:
    """Pearson chi-square p-value of ranks against the discrete uniform law on 0..L.

    The ``L + 1`` rank values are split into ``n_bins`` contiguous groups of near-equal
    size (default ``clip(n / 5, 2, 10)``); the expected counts use the exact
    group sizes.
    """
    from scipy.stats import chi2

    ranks = np.asarray(ranks, dtype=int)
    n = ranks.size
    if n == 0:
        return float("nan")
    if np.any((ranks < 0) | (ranks > L)):
        raise ValueError(f"ranks must lie in 0..{L}")
    B = n_bins or int(np.clip(n // 5, 2, 10))
    B = min(B, L + 1)
    edges = np.round(np.linspace(0, L + 1, B + 1)).astype(int)  # bin b: edges[b] <= r < edges[b+1]
    observed = np.histogram(ranks, bins=edges)[0]
    expected = n * np.diff(edges) / (L + 1)
    stat = float(np.sum((observed - expected) ** 2 / expected))
    return float(chi2.sf(stat, B - 1))


def bonferroni(pvalues: dict[str, float]) -> dict[str, float]:
    n = len(pvalues)
    return {k: min(1.0, n * p) for k, p in pvalues.items()}


def replicate(
    r: int,
    key: jax.Array,
    design: SBCDesign,
    prior: FixedPrior,
    pairs: tuple[np.ndarray, np.ndarray],
    config: SamplerConfig,
    L: int,
    factors: dict | None = None,
) -> dict[str, Any]:
    """One replication: truth from the prior, data, posterior, ranks of the truth.

    ``factors``: the replication's ``U, V`` from :func:`factor_prior_draws` (rank >= 2).
    """
    from bayes_ips.diagnostics import convergence

    k_tok, k_truth, k_fit = jax.random.split(key, 3)
    t0 = time.perf_counter()
    X = np.asarray(sample_tokens(k_tok, design.token_law(), design.M, design.N))
    truth = draw_truth(k_truth, X, prior, design, factors)
    x, y = pairs
    true_q = _truth_quantities(truth, x, y, prior)
    names = quantity_names(design)
    try:
        run, post = fit_posterior(k_fit, X, truth["Y"], config, progress=False, prior=prior)
    except Exception as e:  # recorded, never silently dropped (the report counts them)
        return {
            "replication": r,
            "ranks": np.full(len(names), -1),
            "sampler": "failed",
            "fallback": f"{type(e).__name__}: {e}",
            "ess_min": float("nan"),
            "wall_s": time.perf_counter() - t0,
            "truth": true_q,
        }
    draws = _draw_quantities(post, x, y)
    C, D = post.shape
    kept = draws.reshape(C * D, -1)[thin_index(C, D, L)]
    ess = convergence({"q": draws})["ess_bulk_min"]
    return {
        "replication": r,
        "ranks": rank_of_truth(true_q, kept),
        "sampler": run.method,
        "fallback": run.info.get("fallback") or "",
        "ess_min": ess,
        "wall_s": time.perf_counter() - t0,
        "truth": true_q,
        "khat": run.info.get("khat", run.info.get("first", {}).get("khat")),
        "refits": int(run.info.get("is_refits", run.info.get("first", {}).get("is_refits", 0))),
    }


def _plot(pit: dict[str, np.ndarray], path: str, seed: int) -> None:
    from bayes_ips.arviz_io import plot_ecdf_difference

    with atomic_write(path) as tmp:
        plot_ecdf_difference(pit, tmp, prob=0.95, seed=seed)


def run_sbc(
    out_dir: str,
    *,
    method: str = "auto",
    replications: int = 200,
    seed: int = 0,
    chains: int = 4,
    draws: int = 500,
    warmup: int | None = None,
    L: int = 100,
    design: SBCDesign = SBCDesign(),
    progress: bool = True,
) -> dict[str, Any]:
    """Run the replications and write ``ranks.csv``, ``summary.json``, ``sbc_ecdf.png``.

    Returns the summary (also written), whose ``sbc_min_pvalue`` is the smallest
    Bonferroni-adjusted p-value (capped at 1).
    """
    from tqdm import tqdm

    from bayes_ips.study.backends import relieve_map_pressure

    config = SamplerConfig(
        rank=design.rank, method=method, chains=chains, draws=draws, warmup=warmup
    ).validate(design.d)
    thin_index(chains, draws, L)  # fail early on an impossible thinning
    prior = design_prior(design)
    pairs = fixed_pairs(design)
    names = quantity_names(design)
    root = jax.random.PRNGKey(seed)
    reps = []
    t0 = time.perf_counter()
    factors = None
    if design.rank > 1:
        k_f = jax.random.fold_in(root, FACTOR_KEY)
        factors = factor_prior_draws(k_f, design, replications)
    for r in tqdm(range(replications), desc=f"sbc ({method})", disable=not progress):
        f_r = None if factors is None else {k: v[r] for k, v in factors.items()}
        reps.append(replicate(r, jax.random.fold_in(root, r), design, prior, pairs, config, L, f_r))
        # NUTS compiles programs per replication; past vm.max_map_count XLA's compiler
        # fails ("Cannot allocate memory": seen at replication 20 of a NUTS run)
        relieve_map_pressure()
    total = time.perf_counter() - t0

    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, "ranks.csv")) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for rep in reps:
                for q, rank in zip(names, rep["ranks"], strict=True):
                    w.writerow(
                        {
                            "replication": rep["replication"],
                            "quantity": q,
                            "rank": int(rank),
                            "L": L,
                            "sampler": rep["sampler"],
                            "fallback": rep["fallback"],
                            "ess_min": f"{rep['ess_min']:.1f}",
                            "wall_s": f"{rep['wall_s']:.3f}",
                            "khat": "" if rep.get("khat") is None else f"{rep['khat']:.3f}",
                            "refits": rep.get("refits", 0),
                        }
                    )

    ok = [rep for rep in reps if rep["sampler"] != "failed"]
    R = np.array([rep["ranks"] for rep in ok]).reshape(len(ok), len(names))
    pvals = {q: uniformity_pvalue(R[:, i], L) for i, q in enumerate(names)}
    adjusted = bonferroni(pvals)
    rng = np.random.default_rng(seed)
    pit = {q: normalised_ranks(R[:, i], L, rng) for i, q in enumerate(names)}
    if ok:
        _plot(pit, os.path.join(out_dir, "sbc_ecdf.png"), seed)
    walls = np.array([rep["wall_s"] for rep in reps])
    ess = np.array([rep["ess_min"] for rep in ok])
    samplers: dict[str, int] = {}
    for rep in reps:
        samplers[rep["sampler"]] = samplers.get(rep["sampler"], 0) + 1
    summary = {
        "seed": seed,
        "method": method,
        "replications": replications,
        "L": L,
        "design": dataclasses.asdict(design),
        "config": dataclasses.asdict(config),
        "prior": {
            "breaks": np.asarray(prior.knots.breaks).tolist(),
            "degree": prior.knots.degree,
            "penalty_scale": prior.penalty_scale,
            "y_scale": prior.y_scale,
        },
        "pairs": {"x": pairs[0].tolist(), "y": pairs[1].tolist()},
        "test": "Pearson chi-square on binned ranks, Bonferroni over quantities",
        "pvalues": pvals,
        "pvalues_bonferroni": adjusted,
        "sbc_min_pvalue": min(adjusted.values()) if ok else float("nan"),
        "samplers": samplers,
        "fallbacks": sum(bool(rep["fallback"]) and rep["sampler"] != "failed" for rep in reps),
        "refitted": sum(rep.get("refits", 0) > 0 for rep in reps),
        "khat_above_max": sum(  # importance weights judged unreliable (auto falls back)
            (rep.get("khat") or 0.0) > config.khat_max for rep in reps if rep["sampler"] == "is"
        ),
        "failures": [
            {"replication": rep["replication"], "error": rep["fallback"]}
            for rep in reps
            if rep["sampler"] == "failed"
        ],
        "ess_min": {
            "median": float(np.median(ess)) if ok else None,
            "fraction_below_L": float(np.mean(ess < L)) if ok else None,
        },
        "wall_s": {
            "total": total,
            "per_replication_median": float(np.median(walls)),
            "per_replication_mean": float(np.mean(walls)),
            "first": float(walls[0]),
        },
    }
    with atomic_write(os.path.join(out_dir, "summary.json")) as tmp:
        with open(tmp, "w") as f:
            f.write(json.dumps(json.loads(to_json(summary)), indent=2, sort_keys=True) + "\n")
    return summary


def format_pvalue_line(summary: dict) -> str:
    p = summary["sbc_min_pvalue"]
    return f"sbc_min_pvalue={min(1.0, p) if math.isfinite(p) else p}"
