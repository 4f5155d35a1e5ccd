"""Convergence and importance-sampling diagnostics of a posterior run.

:func:`diagnose` checks a saved run (an InferenceData from :mod:`bayes_ips.arviz_io`):
R-hat against its calibrated bound (:func:`rhat_bound`, :func:`rhat_check`), bulk
and tail ESS (:data:`ESS_MIN_PER_CHAIN`), the sampler's own checks (NUTS:
divergences, tree depth, E-BFMI; IMH and IS: Pareto k of the proposals, the
acceptance rate or the PSIS effective size) and chains in non-equivalent modes.
:func:`psis_weights` and :func:`pareto_khat` smooth and check importance weights;
:func:`convergence` summarises R-hat and ESS of bare draws.

ArviZ is reached only through :mod:`bayes_ips.arviz_io`, the one module that knows its API.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np

from bayes_ips import arviz_io
from bayes_ips.arviz_io import identifiable, summary

__all__ = [
    "ACCEPT_MIN",
    "BFMI_MIN",
    "ESS_MIN_PER_CHAIN",
    "IS_ESS_MIN",
    "KHAT_MAX",
    "RHAT_ALPHA",
    "RHAT_MAX",
    "convergence",
    "diagnose",
    "khat_limit",
    "pareto_khat",
    "psis_weights",
    "rhat_bound",
    "rhat_check",
]

# Thresholds for flagging non-convergence (Vehtari et al. 2021, Betancourt 2017).
RHAT_MAX = 1.01  # floor of the R-hat bound (Stan's): no quantity is flagged below it
RHAT_ALPHA = 0.01  # chance that a healthy run has any R-hat above its bound (family-wise)
ESS_MIN_PER_CHAIN = 100  # bulk and tail ESS, per chain
BFMI_MIN = 0.3  # energy Bayesian fraction of missing information, per chain
KHAT_MAX = 0.7  # Pareto k of the independence sampler's proposals (Vehtari et al. 2024)
# Importance sampling's effective size, over all its (independent) proposals.  Its chains
# are groups of one sample, resampled, so the MCMC bound (100 per chain, which makes
# R-hat and the ESS estimates of 4 autocorrelated chains reliable) does not apply; what
# matters is the Monte Carlo error of the estimates: with an effective size of 100 the
# MCSE of a posterior mean is at most 0.1 posterior sd (less for the Rao-Blackwellised
# g, whose conditional spread in c is exact), and of a 5% quantile's probability 0.022.
IS_ESS_MIN = 100
ACCEPT_MIN = 0.1  # acceptance rate of the independence sampler


def psis_weights(log_weights: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Pareto-smoothed log importance weights (``az.psislw``), their Pareto k and effective size.

    Parameters
    ----------
    log_weights : (S,) array, ``log p - log q`` of independent proposals (``-inf``
        for a proposal of zero density).

    Returns
    -------
    log_smoothed : (S,) array, normalised (``logsumexp = 0``); ``-inf`` stays ``-inf``.
    khat : float (``inf`` when fewer than two weights are positive)
    ess : float, ``1 / sum w^2`` of the smoothed, normalised weights.
    """
    lw = np.asarray(log_weights, dtype=float).ravel()
    finite = np.isfinite(lw)
    if finite.sum() < 2:
        out = np.where(finite, 0.0, -np.inf)
        return out, float("inf"), float(finite.sum())
    lw_f = np.where(finite, lw, lw[finite].min() - 1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lw_s, khat = arviz_io.psislw(lw_f - lw_f.max(), reff=1.0)
    lw_s = np.where(finite, np.asarray(lw_s, dtype=float), -np.inf)
    lw_s -= np.logaddexp.reduce(lw_s[finite])
    w = np.exp(lw_s)
    return lw_s, float(khat), float(1.0 / np.sum(w**2))


def khat_limit(n_draws: int, khat_max: float = KHAT_MAX) -> float:
    """The largest Pareto k at which ``n_draws`` importance draws are reliable.

    ``min(khat_max, 1 - 1 / log10(S))`` (Vehtari et al. 2024, sec. 3): the sample
    size that makes PSIS estimates reliable grows like ``10^(1 / (1 - k))``, so 100
    draws allow k <= 0.5, 300 draws 0.6, and only ~2200 draws reach 0.7.
    """
    S = int(n_draws)
    return float(min(khat_max, 1.0 - 1.0 / math.log10(S))) if S >= 10 else -math.inf


def pareto_khat(log_weights: np.ndarray) -> tuple[float, float]:
    """Pareto k of importance weights and their effective sample size (:func:`psis_weights`)."""
    _, khat, ess = psis_weights(log_weights)
    return khat, ess


def rhat_bound(n_chains: int, ess, n_quantities: int, alpha: float = RHAT_ALPHA) -> np.ndarray:
    """The R-hat a healthy run exceeds by chance with probability ``alpha`` over all quantities.

    Split R-hat of ``m = 2 C`` half-chains of ``n`` effective draws each satisfies
    ``R^2 = (n - 1 + F) / n`` with ``F = B / W`` approximately ``F(m - 1, m (n - 1))``
    for exchangeable chains (Gelman and Rubin 1992).  Taking ``n`` from the
    quantity's *within-chain* effective sample size (``n = ESS / m``, see
    :func:`rhat_check`) accounts for autocorrelation, and the ``1 - alpha / (2 Q)``
    quantile (Bonferroni over the ``Q`` quantities and their bulk and folded
    R-hats) bounds the chance of any false alarm by ``alpha``.  The bound never
    falls below :data:`RHAT_MAX`; an unknown ESS (NaN) gives the floor.

    A fixed 1.01 on the maximum over ~200 quantities of two chains flags 15% of
    healthy runs of independent draws, and nearly all of the autocorrelated ones
    (simulated: 200 runs of 2 x 500 draws, 210 quantities); this bound flagged
    none of 800 simulated healthy runs with 2 or 4 chains and autocorrelation up
    to 0.8 (``tests/test_arviz_io.py``).

    Parameters
    ----------
    n_chains : int
    ess : float or array, effective sample size of each quantity (all chains).
    n_quantities : int

    Returns
    -------
    array like ``ess``
    """
    from scipy.stats import f as f_dist

    m = 2 * int(n_chains)
    ess = np.asarray(ess, dtype=float)
    n = np.maximum(np.where(np.isfinite(ess), ess, 1e12) / m, 2.0)
    F = f_dist.ppf(1 - alpha / (2 * max(int(n_quantities), 1)), m - 1, m * (n - 1))
    return np.maximum(RHAT_MAX, np.sqrt((n - 1 + F) / n))


def rhat_check(posterior, var_names=None):
    """R-hat of every quantity against its calibrated bound (:func:`rhat_bound`).

    The bound's effective sample size is the *within-chain* one (the mean over
    chains of each chain's own ESS, times the number of chains): chains that
    disagree lower the all-chain ESS, which would raise the bound exactly when
    R-hat should flag them.  A chain of constant draws has no ESS of its own and
    is left out of the mean.

    Parameters
    ----------
    posterior : xarray.Dataset with ``chain`` and ``draw`` dims
    var_names : list of str, optional

    Returns
    -------
    pandas.DataFrame indexed like ``az.summary``: ``r_hat``, ``ess_within``,
    ``rhat_bound`` and ``flagged``.
    """
    C = posterior.sizes["chain"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = arviz_io.diagnostics_summary(posterior, var_names)
        ds = posterior if var_names is None else posterior[list(var_names)]
        per_chain = []
        for c in range(C):
            one = ds.isel(chain=[c])
            per_chain.append(
                np.minimum(
                    _flat(arviz_io.ess(one, method="bulk"), ds),
                    _flat(arviz_io.ess(one, method="tail"), ds),
                )
            )
        ess = np.nanmean(np.stack(per_chain), axis=0) * C
    out = table[["r_hat"]].copy()
    out["ess_within"] = ess
    out["rhat_bound"] = rhat_bound(C, ess, len(out))
    out["flagged"] = ~(out["r_hat"].to_numpy() <= out["rhat_bound"].to_numpy())
    return out


def _flat(values, ds) -> np.ndarray:
    """The variables of ``values`` raveled in the order of ``ds``'s variables: az.summary's rows."""
    return np.concatenate([np.ravel(values[k].values) for k in ds.data_vars])


def diagnose(idata) -> tuple:
    """Convergence table on identifiable quantities and the list of problems.

    NUTS runs are checked for divergences, the tree depth and E-BFMI; runs of the
    independence sampler (``sampler = "imh"``) for the Pareto k of their
    proposals and the acceptance rate; importance-sampling runs (``"is"``) for
    the Pareto k and the PSIS effective sample size of their proposals (their
    chains are resampled, so the within-chain ESS of ArviZ does not measure them
    and is reported, not checked).  Every run is checked for R-hat above its
    calibrated bound (:func:`rhat_bound`), too few effective draws and chains in
    non-equivalent modes.

    Returns
    -------
    table : pandas.DataFrame
        ``az.summary`` rows for the identifiable quantities (``A``, ``sigma``,
        ``tau`` and ``g_eval`` for the IPS model), with the column ``rhat_bound``.
    report : dict
        ``sampler``, ``rhat_max``, ``rhat_flagged`` (quantities above their
        bound), ``ess_bulk_min``, ``ess_tail_min``, ``modes`` and ``problems``
        (one-line strings; empty when fine); for NUTS ``divergences``,
        ``tree_depth_max``, ``max_tree_depth_hits``, ``bfmi`` (per chain); for
        IMH ``khat``, ``accept_rate``; for IS ``khat``, ``is_ess``, ``n_proposals``.
    """
    table = summary(idata)
    stats = idata.sample_stats
    C = idata.posterior.sizes["chain"]
    attrs = idata.attrs
    sampler = attrs.get("sampler", "nuts")
    modes = _json_attr(attrs, "modes")
    check = rhat_check(idata.posterior, identifiable(idata))
    table["rhat_bound"] = check["rhat_bound"]
    flagged = table.index[check["flagged"].to_numpy()]
    report = {
        "sampler": sampler,
        "rhat_max": float(table["r_hat"].max()),
        "rhat_flagged": [str(i) for i in flagged],
        "ess_bulk_min": float(table["ess_bulk"].min()),
        "ess_tail_min": float(table["ess_tail"].min()),
        "modes": modes,
    }
    problems = _rhat_problems(table, flagged)
    ess_min = ESS_MIN_PER_CHAIN * C
    info = _json_attr(attrs, "sampler_info")
    if sampler != "is":
        problems += _ess_problems(report, ess_min)
    if sampler == "is":
        problems += _is_checks(report, info)
    elif sampler == "imh":
        problems += _imh_checks(report, info, stats)
    else:
        cfg = json.loads(attrs["config"]) if isinstance(attrs.get("config"), str) else {}
        problems += _nuts_checks(report, idata, stats, cfg)
    problems += _mode_problems(modes)
    report["problems"] = problems
    return table, report


def _json_attr(attrs, name: str) -> dict:
    """An attribute stored as JSON (or already a dict); ``{}`` when absent."""
    value = attrs.get(name)
    return json.loads(value) if isinstance(value, str) else (value or {})


def _rhat_problems(table, flagged) -> list[str]:
    if not len(flagged):
        return []
    worst = table.loc[flagged].sort_values("r_hat").iloc[-1]
    return [
        f"R-hat above its bound for {len(flagged)} quantities (worst "
        f"{worst['r_hat']:.3f} > {worst['rhat_bound']:.3f} at {worst.name})"
    ]


def _ess_problems(report: dict, ess_min: float) -> list[str]:
    problems = []
    for kind in ("bulk", "tail"):
        if not report[f"ess_{kind}_min"] >= ess_min:  # NaN too
            problems.append(f"{kind} ESS down to {report[f'ess_{kind}_min']:.0f} < {ess_min}")
    return problems


def _is_checks(report: dict, info: dict) -> list[str]:
    """Importance sampling: Pareto k (for the number of proposals) and the PSIS effective size."""
    report["khat"] = float(info.get("khat", np.nan))
    report["is_ess"] = float(info.get("is_ess", np.nan))
    report["n_proposals"] = n = int(info.get("n_proposals", 0))
    problems = []
    limit = khat_limit(n)
    if not report["khat"] <= limit:
        problems.append(
            f"Pareto k of the proposals {report['khat']:.2f} > {limit:.2f} (the limit for {n})"
        )
    if not report["is_ess"] >= IS_ESS_MIN:
        problems.append(
            f"importance-sampling effective size {report['is_ess']:.0f} < {IS_ESS_MIN} "
            f"({n} proposals)"
        )
    return problems


def _imh_checks(report: dict, info: dict, stats) -> list[str]:
    """Independence Metropolis-Hastings: Pareto k of the proposals and the acceptance rate."""
    report["khat"] = float(info.get("khat", np.nan))
    report["accept_rate"] = float(stats["accepted"].values.mean())
    problems = []
    if not report["khat"] <= KHAT_MAX:
        problems.append(f"Pareto k of the proposals {report['khat']:.2f} > {KHAT_MAX}")
    if report["accept_rate"] < ACCEPT_MIN:
        problems.append(f"acceptance rate {report['accept_rate']:.2f} < {ACCEPT_MIN}")
    return problems


def _nuts_checks(report: dict, idata, stats, cfg: dict) -> list[str]:
    """NUTS: divergences, transitions at the maximum tree depth and E-BFMI per chain."""
    depth = stats["tree_depth"].values
    max_depth = int(cfg.get("max_tree_depth", 10))
    report["divergences"] = int(stats["diverging"].values.sum())
    report["tree_depth_max"] = int(depth.max())
    report["max_tree_depth_hits"] = int((depth >= max_depth + 1).sum())
    report["bfmi"] = [float(b) for b in np.atleast_1d(arviz_io.bfmi(idata))]
    problems = []
    if report["divergences"]:
        problems.append(f"{report['divergences']} divergent transitions")
    if report["max_tree_depth_hits"]:
        problems.append(f"{report['max_tree_depth_hits']} transitions hit the maximum tree depth")
    if min(report["bfmi"]) < BFMI_MIN:
        problems.append(f"E-BFMI down to {min(report['bfmi']):.2f} < {BFMI_MIN}")
    return problems


def _mode_problems(modes: dict) -> list[str]:
    if not modes.get("separated"):
        return []
    return [
        f"chains sit in different, non-equivalent modes (groups {modes['groups']}, "
        f"max standardised gap {modes['max_z']:.1f}): do not average them"
    ]


def convergence(draws: dict[str, np.ndarray]) -> dict[str, float]:
    """Worst rank-normalised split R-hat and smallest bulk/tail ESS over some draws.

    Parameters
    ----------
    draws : dict of name -> (chains, draws, ...) arrays
        Identifiable quantities only (``g_eval``, ``sigma``, ...).

    Returns
    -------
    dict with ``rhat_max``, ``ess_bulk_min`` and ``ess_tail_min``.
    """
    ds = arviz_io.to_dataset({k: np.asarray(v) for k, v in draws.items()})
    out = {}
    for name, fn in (
        ("rhat_max", lambda: arviz_io.rhat(ds)),
        ("ess_bulk_min", lambda: arviz_io.ess(ds, method="bulk")),
        ("ess_tail_min", lambda: arviz_io.ess(ds, method="tail")),
    ):
        vals = np.concatenate([np.ravel(v.values) for v in fn().data_vars.values()])
        pick = np.nanmax if name == "rhat_max" else np.nanmin
        out[name] = float(pick(vals)) if np.isfinite(vals).any() else float("nan")
    return out
