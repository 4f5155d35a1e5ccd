"""Rates: least-squares slopes of log error on log M, with bootstrap intervals.

For every (estimator, phi, d) the slope is the ordinary least-squares fit of
``log error`` on ``log M`` over all cells (every M, every repetition), and
``slope_holds`` the same fit over the cells where the theory's condition holds
(``theory_holds``: the parametric error of A, of order d / M, below the
nonparametric rate; at least two M, else NaN), from ``M_holds_min`` on.  Where the
condition fails at small M the error there carries A's error too and the curve
bends onto its rate from above, so the slope over all cells is steeper than the
rate and ``slope_holds`` is the one the minimax claim is about.  Its 95%
interval resamples the repetitions with replacement (all M of a repetition move
together, keeping whatever correlation a repetition has across M) and refits:
the 2.5% and 97.5% quantiles of the refitted slopes.  With a single repetition
no interval is given (NaN).

The theory's slope is ``-2 beta / (2 beta + 1)`` (``-1`` for analytic phi*, the
parametric rate): the minimax rate over the Hoelder ball.  A phi* that is smooth
except at a few isolated singularities of order beta (``bspline``: the knots of a
degree-beta spline; ``holder``: three kinks) is easier: an estimator that picks
K from the data (GCV) balances ``K / M`` against the bias ``K^-(2 beta + 1)`` of
the one interval that holds a singularity, for ``-(2 beta + 1) / (2 beta + 2)``
(:func:`singularity_slope`; ``../shared/SCIENCE.md``, "Which rate a study can
show").  :func:`predicted_slopes` gives the predictions that apply to a family.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ISOLATED_SINGULARITY_FAMILIES",
    "SLOPE_COLUMNS",
    "fit_slopes",
    "predicted_slopes",
    "singularity_slope",
    "slopes_markdown",
    "theory_slope",
]

SLOPE_COLUMNS = (
    "estimator",
    "d",
    "beta",
    "N",
    "rank",
    "slope",
    "slope_lo",
    "slope_hi",
    "theory",
    "phi",
    "n_cells",
    "M_min",
    "M_max",
    "theory_holds_cells",
    "slope_holds",
    "M_holds_min",
)
N_BOOT = 2000  # bootstrap resamples: the 2.5% quantile then has ~50 resamples below it


def theory_slope(beta: float) -> float:
    """``-2 beta / (2 beta + 1)``; ``-1`` when beta is infinite."""
    return -1.0 if math.isinf(beta) else -2.0 * beta / (2.0 * beta + 1.0)


#: phi* families smooth but at a few points, where the singularity's exponent is beta
ISOLATED_SINGULARITY_FAMILIES = ("bspline", "holder")


def singularity_slope(beta: float) -> float:
    """``-(2 beta + 1) / (2 beta + 2)``: adaptive K against isolated singularities of order beta."""
    return -1.0 if math.isinf(beta) else -(2.0 * beta + 1.0) / (2.0 * beta + 2.0)


def predicted_slopes(family: str, beta: float) -> dict[str, float]:
    """The slopes the theory predicts for phi* of ``family`` with smoothness ``beta``.

    ``minimax`` (``-2 beta / (2 beta + 1)``) for every family; ``singularity``
    (:func:`singularity_slope`) too for :data:`ISOLATED_SINGULARITY_FAMILIES`,
    NaN otherwise (``weierstrass`` is rough everywhere: only the minimax exponent
    applies; analytic families have beta = inf and both are -1).
    """
    sing = singularity_slope(beta) if family in ISOLATED_SINGULARITY_FAMILIES else math.nan
    return {"minimax": theory_slope(beta), "singularity": sing}


def _ols_slope(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    den = float(xc @ xc)
    return float(xc @ (y - y.mean()) / den) if den > 0 else math.nan


def fit_slopes(
    ds, seed: int = 0, n_boot: int = N_BOOT, var: str = "error", theory_scale: float = 1.0
) -> list[dict]:
    """One row per (estimator, phi, d): the slope of ``log var`` on ``log M``.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`bayes_ips.study.store.records_to_dataset`.
    seed : int
        Seed of the bootstrap (NumPy generator; reported results are reproducible).
    n_boot : int
    var : str
        The variable whose rate is fitted (``error``; ``band_width`` for contraction).
    theory_scale : float
        Multiplies the theory slope (``0.5`` for band widths, which shrink like
        the square root of the error).

    Returns
    -------
    list of dict with the keys of :data:`SLOPE_COLUMNS`.
    """
    rng = np.random.default_rng(seed)
    rows = []
    logM = np.log(ds["M"].values.astype(float))
    for est in ds["estimator"].values:
        for phi in ds["phi"].values:
            beta = float(ds["beta"].sel(phi=phi))
            for d in ds["d"].values:
                sub = ds[var].sel(estimator=est, phi=phi, d=d).values  # (M, rep)
                ok = np.isfinite(sub) & (sub > 0)
                if ok.sum() < 2 or len(np.unique(np.nonzero(ok)[0])) < 2:
                    continue
                logy = np.where(ok, np.log(np.where(ok, sub, 1.0)), np.nan)
                x = np.broadcast_to(logM[:, None], sub.shape)
                slope = _ols_slope(x[ok], logy[ok])
                reps = np.nonzero(ok.any(axis=0))[0]
                lo = hi = math.nan
                if len(reps) > 1:
                    boot = np.empty(n_boot)
                    for b in range(n_boot):
                        pick = rng.choice(reps, size=len(reps), replace=True)
                        okb = ok[:, pick]
                        boot[b] = _ols_slope(x[:, pick][okb], logy[:, pick][okb])
                    lo, hi = np.nanquantile(boot, [0.025, 0.975])
                th = ds["theory_holds"].sel(estimator=est, phi=phi, d=d).values
                holds = int(np.nansum(th == 1)) if np.isfinite(th).any() else -1
                okh = ok & (th == 1)
                held_M = np.nonzero(okh.any(axis=1))[0]
                slope_h = _ols_slope(x[okh], logy[okh]) if len(held_M) >= 2 else math.nan
                rows.append(
                    {
                        "estimator": str(est),
                        "phi": str(phi),
                        "d": int(d),
                        "beta": beta,
                        "N": int(np.nanmax(ds["N"].sel(estimator=est, phi=phi, d=d).values)),
                        "rank": int(np.nanmax(ds["rank"].sel(estimator=est, phi=phi, d=d).values)),
                        "slope": slope,
                        "slope_lo": float(lo),
                        "slope_hi": float(hi),
                        "theory": theory_scale * theory_slope(beta),
                        "n_cells": int(ok.sum()),
                        "M_min": int(ds["M"].values[ok.any(axis=1)].min()),
                        "M_max": int(ds["M"].values[ok.any(axis=1)].max()),
                        "theory_holds_cells": holds,
                        "slope_holds": slope_h,
                        "M_holds_min": int(ds["M"].values[held_M].min()) if len(held_M) else -1,
                    }
                )
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "inf"
        return f"{v:.3f}"
    return str(v)


def slopes_markdown(rows: list[dict]) -> str:
    """The slopes table as GitHub Markdown (the columns of the CSV that matter)."""
    cols = list(SLOPE_COLUMNS)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"
