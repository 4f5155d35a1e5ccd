"""The only module that knows ArviZ's API (0.2x on Python 3.11; 1.x differs).

It turns a NUTS run plus its Rao-Blackwellised posterior into an
``InferenceData`` with named dims and coords:

posterior
    ``A`` (dim, dim_col, gauge-fixed), ``sigma``, ``tau``, ``g_eval`` (eval_pair),
    ``c_mean`` (basis, conditional means), and the raw ``c_draw`` (basis, draws
    from the conditional, for bands), ``U``, ``V`` (dim, rank): kept, never diagnosed.
sample_stats
    ``diverging``, ``tree_depth``, ``n_steps``, ``energy``, ``acceptance_rate``, ``lp``.
observed_data
    ``Y`` (sample, token).
constant_data
    ``X`` (sample, token, dim), ``breaks``, ``x_eval``, ``y_eval`` (eval_pair, dim).
posterior_predictive
    ``Y`` (sample, token), for every draw (or a thinned set when large), computed
    in chunks of draws.
log_likelihood
    ``Y`` (sample): ``sum_i log N(Y_mi | (F(A) c)_mi, sigma^2)`` per sample ``m``
    with ``c`` drawn from its conditional, so ``az.loo`` treats samples as units.

:func:`build_slr_inference_data` does the same for the single-location model
(:mod:`bayes_ips.single_location.posterior`): posterior ``k``, ``v`` (dim, sign-aligned),
``sign``, ``lambda``, ``sigma``, ``rho``, ``pred`` (eval_point) and the reference overlaps
``overlap_k``, ``overlap_v``, ``overlap_kv``, plus ``abs_kappa``,
``abs_nu``, ``kappa_nu`` when the truth is known; observed ``Y`` (sample);
constant ``X`` (sample, token, dim) and ``X_eval`` (eval_point, token, dim).

An InferenceData names the quantities that may be diagnosed in its attribute
``identifiable`` (JSON list); :func:`summary` and :func:`diagnose` use it.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bayes_ips.ppc import PPC_MAX_VALUES as PPC_MAX_VALUES  # re-exported: its home is ppc
from bayes_ips.ppc import gaussian_loglik

__all__ = [
    "build_inference_data",
    "pareto_khat",
    "rhat_bound",
    "rhat_check",
    "build_slr_inference_data",
    "convergence",
    "identifiable",
    "load_inference_data",
    "plot_ecdf_difference",
    "posterior_from_idata",
    "save_inference_data",
    "summary",
]

IDENTIFIABLE = ["A", "sigma", "tau", "g_eval"]


def _az():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


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
    import warnings

    az = _az()
    lw = np.asarray(log_weights, dtype=float).ravel()
    finite = np.isfinite(lw)
    if finite.sum() < 2:
        out = np.where(finite, 0.0, -np.inf)
        return out, float("inf"), float(finite.sum())
    lw_f = np.where(finite, lw, lw[finite].min() - 1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lw_s, khat = az.psislw(lw_f - lw_f.max(), reff=1.0)
    lw_s = np.where(finite, np.asarray(lw_s, dtype=float), -np.inf)
    lw_s -= np.logaddexp.reduce(lw_s[finite])
    w = np.exp(lw_s)
    return lw_s, float(khat), float(1.0 / np.sum(w**2))


def pareto_khat(log_weights: np.ndarray) -> tuple[float, float]:
    """Pareto k of importance weights and their effective sample size (:func:`psis_weights`)."""
    _, khat, ess = psis_weights(log_weights)
    return khat, ess


def _sample_stats(extra: dict) -> dict:
    """Sample statistics under ArviZ's names: NUTS's (tree depth from the step count), IMH or IS."""
    if "num_steps" not in extra and "accepted" not in extra:  # importance sampling
        return {"lp": -extra["potential_energy"], "log_weight": extra["log_weight"]}
    if "num_steps" not in extra:  # independence Metropolis-Hastings
        return {
            "accepted": extra["accepted"].astype(bool),
            "lp": -extra["potential_energy"],
            "log_weight": extra["log_weight"],
        }
    tree_depth = np.floor(np.log2(np.maximum(extra["num_steps"], 1))).astype(int) + 1
    return {
        "diverging": extra["diverging"].astype(bool),
        "tree_depth": tree_depth,
        "n_steps": extra["num_steps"],
        "energy": extra["energy"],
        "acceptance_rate": extra["accept_prob"],
        "lp": -extra["potential_energy"],
    }


def _attrs(attrs: dict) -> dict:
    return {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in attrs.items()}


def build_inference_data(
    *,
    samples: dict,
    extra: dict,
    A: np.ndarray,
    sigma: np.ndarray,
    tau: np.ndarray,
    c_mean: np.ndarray,
    c_draw: np.ndarray,
    g_eval: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    breaks: np.ndarray,
    mean_draw: np.ndarray,
    draw_index: np.ndarray,
    y_rep: np.ndarray,
    attrs: dict,
):
    """Assemble the InferenceData (see the module docstring for the layout).

    ``mean_draw`` (C, D, M, N) are the pairwise means with c drawn from its
    conditional; ``y_rep`` (C, D', M, N) the posterior predictive for the draws
    ``draw_index`` (D' <= D).
    """
    az = _az()
    C, D = sigma.shape
    M, N, d = X.shape
    r = samples["U"].shape[-1]
    loglik = gaussian_loglik(Y, mean_draw, sigma).sum(-1)  # (C, D, M)
    coords = {
        "chain": np.arange(C),
        "draw": np.arange(D),
        "sample": np.arange(M),
        "token": np.arange(N),
        "dim": np.arange(d),
        "dim_col": np.arange(d),
        "rank": np.arange(r),
        "basis": np.arange(c_mean.shape[-1]),
        "eval_pair": np.arange(g_eval.shape[-1]),
        "brk": np.arange(len(breaks)),
    }
    posterior = {
        "A": A,
        "sigma": sigma,
        "tau": tau,
        "g_eval": g_eval,
        "c_mean": c_mean,
        "c_draw": c_draw,
        "U": samples["U"],
        "V": samples["V"],
    }
    dims = {
        "A": ["dim", "dim_col"],
        "g_eval": ["eval_pair"],
        "c_mean": ["basis"],
        "c_draw": ["basis"],
        "U": ["dim", "rank"],
        "V": ["dim", "rank"],
        "Y": ["sample", "token"],
        "X": ["sample", "token", "dim"],
        "breaks": ["brk"],
        "x_eval": ["eval_pair", "dim"],
        "y_eval": ["eval_pair", "dim"],
        "log_lik_Y": ["sample"],
    }
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=_sample_stats(extra),
        observed_data={"Y": Y},
        constant_data={"X": X, "breaks": breaks, "x_eval": x_eval, "y_eval": y_eval},
        log_likelihood={"Y": loglik},
        coords=coords,
        dims={**dims, "Y": ["sample", "token"]},
        attrs=_attrs(attrs),
    )
    # log_likelihood's Y is per sample, not per (sample, token)
    ll = idata.log_likelihood["Y"]
    if ll.dims[-1] != "sample":
        idata.log_likelihood["Y"] = ll.rename({ll.dims[-1]: "sample"})
    pp = az.from_dict(
        posterior_predictive={"Y": y_rep},
        coords={**coords, "draw": draw_index},
        dims={"Y": ["sample", "token"]},
    )
    idata.extend(pp)
    return idata


SLR_DIMS = {
    "k": ["dim"],
    "v": ["dim"],
    "pred": ["eval_point"],
    "Y": ["sample"],
    "X": ["sample", "token", "dim"],
    "X_eval": ["eval_point", "token", "dim"],
}


def build_slr_inference_data(
    *,
    posterior: dict[str, np.ndarray],
    extra: dict,
    X: np.ndarray,
    Y: np.ndarray,
    X_eval: np.ndarray,
    loglik: np.ndarray,
    y_rep: np.ndarray,
    draw_index: np.ndarray,
    attrs: dict,
):
    """InferenceData of a single-location posterior (layout in the module docstring).

    Parameters
    ----------
    posterior : dict of (C, D, ...) arrays
        ``k``, ``v`` (C, D, d), scalars per draw, ``pred`` (C, D, P).
    extra : dict of (C, D) arrays, NumPyro's extra fields.
    X : (M, L, d) array
    Y : (M,) array
    X_eval : (P, L, d) array
    loglik : (C, D, M) array
        ``log N(Y_m | T_s(X_m), sigma_s^2)``.
    y_rep : (C, D', M) array
        Posterior predictive draws for the draws ``draw_index`` (D' <= D).
    attrs : dict
        Must hold ``identifiable``; dicts and lists are stored as JSON.
    """
    az = _az()
    C, D = posterior["sigma"].shape
    M, L, d = X.shape
    coords = {
        "chain": np.arange(C),
        "draw": np.arange(D),
        "sample": np.arange(M),
        "token": np.arange(L),
        "dim": np.arange(d),
        "eval_point": np.arange(len(X_eval)),
    }
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=_sample_stats(extra),
        observed_data={"Y": Y},
        constant_data={"X": X, "X_eval": X_eval},
        log_likelihood={"Y": loglik},
        coords=coords,
        dims=SLR_DIMS,
        attrs=_attrs(attrs),
    )
    pp = az.from_dict(
        posterior_predictive={"Y": y_rep},
        coords={**coords, "draw": draw_index},
        dims={"Y": ["sample"]},
    )
    idata.extend(pp)
    return idata


def save_inference_data(path: str | os.PathLike, idata) -> None:
    """Write netCDF atomically (h5netcdf engine)."""
    from bayes_ips.io import atomic_write

    with atomic_write(path) as tmp:
        idata.to_netcdf(tmp, engine="h5netcdf")


def load_inference_data(path: str | os.PathLike):
    """Read an InferenceData written by :func:`save_inference_data`."""
    from bayes_ips.errors import InputError

    az = _az()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"file not found: {path}")
    try:
        idata = az.from_netcdf(path, engine="h5netcdf")
    except Exception as e:  # corrupt files raise many types
        raise InputError(f"cannot read {path} as InferenceData: {type(e).__name__}: {e}") from None
    if "posterior" not in idata.groups():
        raise InputError(f"{path} has no posterior group")
    return idata


def posterior_from_idata(idata):
    """Rebuild a :class:`bayes_ips.posterior.Posterior` from a saved InferenceData."""
    from bayes_ips.errors import InputError
    from bayes_ips.posterior import Posterior
    from bayes_ips.spline import make_knots

    p = idata.posterior
    for name in ("A", "sigma", "tau", "c_mean", "c_draw"):
        if name not in p:
            raise InputError(f"the posterior group has no {name!r}")
    if "constant_data" not in idata.groups() or "breaks" not in idata.constant_data:
        raise InputError("the InferenceData has no knots (constant_data/breaks)")
    try:
        knots = make_knots(
            idata.constant_data["breaks"].values,
            int(idata.attrs["degree"]),
            int(idata.attrs["multiplicity"]),
        )
    except (KeyError, ValueError) as e:
        raise InputError(f"corrupt posterior file: {e}") from None
    return Posterior(
        p["A"].values,
        p["sigma"].values,
        p["tau"].values,
        p["c_mean"].values,
        p["c_draw"].values,
        knots,
    )


def identifiable(idata) -> list[str]:
    """The quantities that may be diagnosed: the file's ``identifiable`` attribute, if any."""
    names = idata.attrs.get("identifiable")
    return json.loads(names) if isinstance(names, str) else list(names or IDENTIFIABLE)


def summary(idata, var_names=None, round_to="none"):
    """``az.summary`` on identifiable quantities only (never raw U, V, c, k or v), unrounded."""
    az = _az()
    var_names = var_names or identifiable(idata)
    return az.summary(idata, var_names=var_names, round_to=round_to)


# Thresholds for flagging non-convergence (Vehtari et al. 2021, Betancourt 2017).
RHAT_MAX = 1.01  # floor of the R-hat bound (Stan's): no quantity is flagged below it
RHAT_ALPHA = 0.01  # chance that a healthy run has any R-hat above its bound (family-wise)
ESS_MIN_PER_CHAIN = 100  # bulk and tail ESS, per chain
BFMI_MIN = 0.3  # energy Bayesian fraction of missing information, per chain
KHAT_MAX = 0.7  # Pareto k of the independence sampler's proposals (Vehtari et al. 2024)
ACCEPT_MIN = 0.1  # acceptance rate of the independence sampler


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
    import warnings

    az = _az()
    C = posterior.sizes["chain"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.summary(posterior, var_names=var_names, kind="diagnostics", round_to="none")
        ds = posterior if var_names is None else posterior[list(var_names)]
        per_chain = []
        for c in range(C):
            one = ds.isel(chain=[c])
            per_chain.append(
                np.minimum(
                    _flat(az.ess(one, method="bulk"), ds), _flat(az.ess(one, method="tail"), ds)
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
    az = _az()
    table = summary(idata)
    stats = idata.sample_stats
    C = idata.posterior.sizes["chain"]
    attrs = idata.attrs
    sampler = attrs.get("sampler", "nuts")
    cfg = json.loads(attrs["config"]) if isinstance(attrs.get("config"), str) else {}
    modes = attrs.get("modes")
    modes = json.loads(modes) if isinstance(modes, str) else (modes or {})
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
    problems = []
    if len(flagged):
        worst = table.loc[flagged].sort_values("r_hat").iloc[-1]
        problems.append(
            f"R-hat above its bound for {len(flagged)} quantities (worst "
            f"{worst['r_hat']:.3f} > {worst['rhat_bound']:.3f} at {worst.name})"
        )
    ess_min = ESS_MIN_PER_CHAIN * C
    info = attrs.get("sampler_info")
    info = json.loads(info) if isinstance(info, str) else (info or {})
    for kind in ("bulk", "tail"):
        if sampler != "is" and not report[f"ess_{kind}_min"] >= ess_min:  # NaN too
            problems.append(f"{kind} ESS down to {report[f'ess_{kind}_min']:.0f} < {ess_min}")
    if sampler == "is":
        report["khat"] = float(info.get("khat", np.nan))
        report["is_ess"] = float(info.get("is_ess", np.nan))
        report["n_proposals"] = int(info.get("n_proposals", 0))
        if not report["khat"] <= KHAT_MAX:
            problems.append(f"Pareto k of the proposals {report['khat']:.2f} > {KHAT_MAX}")
        if not report["is_ess"] >= ess_min:
            problems.append(
                f"importance-sampling effective size {report['is_ess']:.0f} < {ess_min} "
                f"({report['n_proposals']} proposals)"
            )
    elif sampler == "imh":
        report["khat"] = float(info.get("khat", np.nan))
        report["accept_rate"] = float(stats["accepted"].values.mean())
        if not report["khat"] <= KHAT_MAX:
            problems.append(f"Pareto k of the proposals {report['khat']:.2f} > {KHAT_MAX}")
        if report["accept_rate"] < ACCEPT_MIN:
            problems.append(f"acceptance rate {report['accept_rate']:.2f} < {ACCEPT_MIN}")
    else:
        depth = stats["tree_depth"].values
        max_depth = int(cfg.get("max_tree_depth", 10))
        report["divergences"] = int(stats["diverging"].values.sum())
        report["tree_depth_max"] = int(depth.max())
        report["max_tree_depth_hits"] = int((depth >= max_depth + 1).sum())
        report["bfmi"] = [float(b) for b in np.atleast_1d(az.bfmi(idata))]
        if report["divergences"]:
            problems.append(f"{report['divergences']} divergent transitions")
        if report["max_tree_depth_hits"]:
            problems.append(
                f"{report['max_tree_depth_hits']} transitions hit the maximum tree depth"
            )
        if min(report["bfmi"]) < BFMI_MIN:
            problems.append(f"E-BFMI down to {min(report['bfmi']):.2f} < {BFMI_MIN}")
    if modes.get("separated"):
        problems.append(
            f"chains sit in different, non-equivalent modes (groups {modes['groups']}, "
            f"max standardised gap {modes['max_z']:.1f}): do not average them"
        )
    report["problems"] = problems
    return table, report


def plot_rank(idata, path) -> None:
    """Rank plots of sigma, tau and a few g_eval (identifiable only).

    ArviZ titles a ``g_eval`` panel on two lines (name, then index); its default
    layout leaves no room for them, so they ran into the x labels of the row
    above.  A constrained layout makes room for titles and labels.
    """
    az = _az()
    n = min(4, idata.posterior.sizes["eval_pair"])
    axes = az.plot_rank(
        idata,
        var_names=["sigma", "tau", "g_eval"],
        coords={"eval_pair": list(range(n))},
        show=False,
    )
    fig = np.asarray(axes).ravel()[0].figure
    fig.set_layout_engine("constrained")
    fig.savefig(path, dpi=110)


def plot_ppc(idata, path) -> None:
    """Posterior predictive check of Y."""
    az = _az()
    ax = az.plot_ppc(
        idata, num_pp_samples=min(100, idata.posterior_predictive.sizes["draw"]), show=False
    )
    fig = np.asarray(ax).ravel()[0].figure
    fig.savefig(path, dpi=110)


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
    az = _az()
    ds = az.convert_to_dataset({k: np.asarray(v) for k, v in draws.items()})
    out = {}
    for name, fn in (
        ("rhat_max", lambda: az.rhat(ds)),
        ("ess_bulk_min", lambda: az.ess(ds, method="bulk")),
        ("ess_tail_min", lambda: az.ess(ds, method="tail")),
    ):
        vals = np.concatenate([np.ravel(v.values) for v in fn().data_vars.values()])
        pick = np.nanmax if name == "rhat_max" else np.nanmin
        out[name] = float(pick(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def plot_ecdf_difference(values: dict[str, np.ndarray], path, prob: float = 0.95, seed=0) -> None:
    """ECDF minus the uniform CDF, with a simultaneous band, one panel per quantity.

    ``values`` are normalised ranks (PIT values) on [0, 1], e.g. of simulation-based
    calibration; the band is ArviZ's optimised simultaneous band of level ``prob``
    (Säilynoja, Bürkner & Vehtari 2022), evaluated on a fixed grid independent of
    the values (as its calibration requires).
    """
    import matplotlib.pyplot as plt
    from scipy.stats import uniform

    az = _az()
    n = len(values)
    ncols = min(5, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.8 * ncols, 2.4 * nrows), squeeze=False, sharey=True
    )
    grid = np.linspace(0.0, 1.0, 101)[1:-1]
    for ax, (name, u) in zip(axes.flat, values.items(), strict=False):
        az.plot_ecdf(
            np.asarray(u),
            cdf=uniform(0, 1).cdf,
            eval_points=grid,
            difference=True,
            confidence_bands="optimized",
            ci_prob=prob,
            random_state=seed,
            ax=ax,
            show=False,
        )
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_title(name, fontsize=10)
    for ax in axes.flat[n:]:
        ax.remove()  # no empty panels
    fig.supxlabel("normalised rank")
    fig.supylabel("ECDF - uniform CDF")
    fig.set_layout_engine("constrained")
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
