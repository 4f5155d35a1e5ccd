"""The only module that knows ArviZ's API (0.2x on Python 3.11; 1.x differs).

It builds, writes and reads InferenceData, and wraps the few ArviZ functions
that :mod:`bayes_ips.diagnostics` (R-hat, ESS, E-BFMI, PSIS) needs.

A NUTS run plus its Rao-Blackwellised posterior becomes an ``InferenceData``
with named dims and coords:

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
``identifiable`` (JSON list); :func:`summary` and :func:`bayes_ips.diagnostics.diagnose`
use it.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bayes_ips.ppc import PPC_MAX_VALUES as PPC_MAX_VALUES  # re-exported: its home is ppc
from bayes_ips.ppc import gaussian_loglik

__all__ = [
    "bfmi",
    "build_inference_data",
    "build_slr_inference_data",
    "diagnostics_summary",
    "ess",
    "identifiable",
    "load_inference_data",
    "plot_ecdf_difference",
    "posterior_from_idata",
    "psislw",
    "rhat",
    "save_inference_data",
    "summary",
    "to_dataset",
]

IDENTIFIABLE = ["A", "sigma", "tau", "g_eval"]
#: The multi-head posterior's: every head's A aligned to the fit's heads (permutation
#: and sign), sigma and tau (raw per-head A would differ between chains by a relabelling).
HEADS_IDENTIFIABLE = ["A_aligned", "sigma", "tau"]


def _az():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


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


IPS_DIMS = {
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


def _extend_predictive(idata, y_rep, coords: dict, draw_index, y_dims: list[str]):
    """Add the posterior predictive ``Y`` of the draws ``draw_index`` to ``idata``."""
    pp = _az().from_dict(
        posterior_predictive={"Y": y_rep},
        coords={**coords, "draw": draw_index},
        dims={"Y": y_dims},
    )
    idata.extend(pp)
    return idata


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
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=_sample_stats(extra),
        observed_data={"Y": Y},
        constant_data={"X": X, "breaks": breaks, "x_eval": x_eval, "y_eval": y_eval},
        log_likelihood={"Y": loglik},
        coords=coords,
        dims={**IPS_DIMS, "Y": ["sample", "token"]},
        attrs=_attrs(attrs),
    )
    # log_likelihood's Y is per sample, not per (sample, token)
    ll = idata.log_likelihood["Y"]
    if ll.dims[-1] != "sample":
        idata.log_likelihood["Y"] = ll.rename({ll.dims[-1]: "sample"})
    return _extend_predictive(idata, y_rep, coords, draw_index, ["sample", "token"])


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
    return _extend_predictive(idata, y_rep, coords, draw_index, ["sample"])


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
    from bayes_ips.spline import make_knots, saved_tail

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
            saved_tail(idata.attrs),  # "poly" for files from before the linear tail
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
    default = HEADS_IDENTIFIABLE if "heads" in idata.attrs else IDENTIFIABLE
    return json.loads(names) if isinstance(names, str) else list(names or default)


def summary(idata, var_names=None, round_to="none"):
    """``az.summary`` on identifiable quantities only (never raw U, V, c, k or v), unrounded."""
    az = _az()
    var_names = var_names or identifiable(idata)
    return az.summary(idata, var_names=var_names, round_to=round_to)


# Thin wrappers of ArviZ's diagnostics, for bayes_ips.diagnostics (which never imports ArviZ).


def diagnostics_summary(posterior, var_names=None):
    """``az.summary(kind="diagnostics")``, unrounded: R-hat, ESS and MCSE per quantity."""
    az = _az()
    return az.summary(posterior, var_names=var_names, kind="diagnostics", round_to="none")


def ess(data, method: str = "bulk"):
    """``az.ess``: effective sample size of every quantity (an xarray Dataset)."""
    return _az().ess(data, method=method)


def rhat(data):
    """``az.rhat``: rank-normalised split R-hat of every quantity (an xarray Dataset)."""
    return _az().rhat(data)


def bfmi(idata) -> np.ndarray:
    """``az.bfmi``: the energy Bayesian fraction of missing information, per chain."""
    return _az().bfmi(idata)


def psislw(log_weights: np.ndarray, reff: float = 1.0):
    """``az.psislw``: Pareto-smoothed log weights and their Pareto k."""
    return _az().psislw(log_weights, reff=reff)


def to_dataset(draws: dict[str, np.ndarray]):
    """``az.convert_to_dataset`` of (chains, draws, ...) arrays."""
    return _az().convert_to_dataset(draws)


def plot_rank(idata, path) -> None:
    """Rank plots of sigma, tau and a few g_eval (identifiable only; multi-head: A_aligned).

    ArviZ titles a ``g_eval`` panel on two lines (name, then index); its default
    layout leaves no room for them, so they ran into the x labels of the row
    above.  A constrained layout makes room for titles and labels.
    """
    az = _az()
    if "heads" in idata.attrs:  # multi-head: the aligned heads' A[0, 0] instead of g_eval
        names, coords = ["sigma", "tau", "A_aligned"], {"dim": [0], "dim_col": [0]}
    else:
        n = min(4, idata.posterior.sizes["eval_pair"])
        names, coords = ["sigma", "tau", "g_eval"], {"eval_pair": list(range(n))}
    axes = az.plot_rank(idata, var_names=names, coords=coords, show=False)
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


def build_heads_inference_data(post, *, attrs: dict | None = None):
    """A multi-head posterior as InferenceData.

    ``post`` is a :class:`bayes_ips.multihead_posterior.HeadsPosterior` (read back by
    :func:`bayes_ips.multihead_posterior.heads_posterior_from_idata`).

    ``posterior``: ``A`` (chain, draw, head, dim, dim_col), ``c_draw`` and ``c_mean``
    (chain, draw, head, basis), ``sigma``, ``tau`` (chain, draw, head), and the heads
    aligned to the ERM fit (``A_aligned``, ``c_aligned``, ``breaks_aligned``: permuted,
    sign-fixed and centred; ``c_aligned`` from the conditional means).
    ``constant_data``: ``breaks`` (head, brk), ``x_eval``, ``y_eval``.  Attributes:
    ``kind = "posterior"``, ``heads``, ``degree``, ``multiplicity``, the
    diagnostics (JSON), ``method`` (asked for), ``sampler`` (``is`` or ``nuts``) and
    ``sampler_info`` (JSON: Pareto k, effective size, proposals and, after ``auto``
    fell back to NUTS, ``fallback``, the reason), and how the basis was chosen:
    ``basis`` (``evidence``, ``erm`` or ``fixed``), ``basis_K``, ``uniform_weight`` and
    ``basis_info`` (JSON: the evidence table and its time).  ``sample_stats``: NUTS's, or
    importance sampling's ``lp`` and ``log_weight``.  No pointwise log-likelihood
    is stored for multi-head posteriors (``az.loo`` is not available for them).
    """
    from bayes_ips.io import to_json

    az = _az()
    C, D = post.sigma.shape
    H, d = post.A.shape[2], post.A.shape[-1]
    al = post.aligned_mean
    breaks = np.asarray(post.knots.breaks)
    coords = {
        "chain": np.arange(C),
        "draw": np.arange(D),
        "head": np.arange(H),
        "dim": np.arange(d),
        "dim_col": np.arange(d),
        "basis": np.arange(post.coef.shape[-1]),
        "brk": np.arange(breaks.shape[-1]),
        "eval_pair": np.arange(post.x_eval.shape[0]),
    }
    dims = {
        "A": ["head", "dim", "dim_col"],
        "A_aligned": ["head", "dim", "dim_col"],
        "c_draw": ["head", "basis"],
        "c_mean": ["head", "basis"],
        "c_aligned": ["head", "basis"],
        "breaks_aligned": ["head", "brk"],
        "tau": ["head"],
        "breaks": ["head", "brk"],
        "x_eval": ["eval_pair", "dim"],
        "y_eval": ["eval_pair", "dim"],
    }
    run_info = {
        k: v
        for k, v in getattr(post, "info", {}).items()
        if not isinstance(v, np.ndarray) and k not in ("mode", "inverse_mass")
    }
    info = {
        "kind": "posterior",
        "heads": H,
        "degree": int(post.knots.degree),
        "multiplicity": int(post.knots.multiplicity),
        "tail": str(post.knots.tail),
        "diagnostics": to_json(post.diagnostics),
        "method": run_info.get("method", "nuts"),
        "sampler": run_info.get("sampler", "nuts"),
        "sampler_info": to_json(run_info),
        **(attrs or {}),
    }
    if "basis" in run_info:  # how the model's basis was chosen (also in sampler_info)
        b = run_info["basis"]
        info.update(
            basis=b["rule"],
            basis_K=int(b["K"]),
            uniform_weight=float(b["uniform_weight"]),
            basis_info=to_json(b),
        )
    return az.from_dict(
        posterior={
            "A": post.A,
            "c_draw": post.coef,
            "c_mean": post.coef_mean,
            "sigma": post.sigma,
            "tau": post.tau,
            "A_aligned": al.A,
            "c_aligned": al.coef,
            "breaks_aligned": al.breaks,
        },
        sample_stats=_sample_stats(post.extra) if post.extra else {},
        constant_data={"breaks": breaks, "x_eval": post.x_eval, "y_eval": post.y_eval},
        coords=coords,
        dims=dims,
        attrs=_attrs(info),
    )
