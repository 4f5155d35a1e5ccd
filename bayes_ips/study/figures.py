"""Figures of a rate study: error against M (log-log), bands over repetitions, theory slopes.

Every function returns a matplotlib ``Figure`` (callers save it; nothing is
written to the current directory).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from bayes_ips.study.slopes import theory_slope

__all__ = ["plot_paired_ratio", "plot_rates"]

LOWER_Q, UPPER_Q = 0.1, 0.9  # the band over repetitions
LABELS = {"erm": "ERM", "bayes_pm": "Bayes posterior mean"}


def _kinds(ds) -> dict[str, str]:
    """estimator -> kind (the ``kind`` coordinate; without it, the name)."""
    names = [str(e) for e in ds["estimator"].values]
    if "kind" not in ds.coords:
        return {e: e for e in names}
    return dict(zip(names, (str(k) for k in ds["kind"].values), strict=True))


def estimator_label(name: str, kind: str) -> str:
    """``ERM`` for the kind's own estimator; ``erm_theory (ERM)`` for a named one."""
    if name == kind or kind not in LABELS:
        return LABELS.get(name, name)
    return f"{name} ({LABELS[kind]})"


def m_axis(ax, M) -> None:
    """A log x axis labelled at the study's M values only (no crowded minor labels)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    M = sorted({int(m) for m in np.asarray(M).ravel() if np.isfinite(m)})
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(M, [f"{m:,}".replace(",", " ") if m >= 10000 else str(m) for m in M])


def _lines(ds) -> list[tuple[str, int]]:
    return [(str(p), int(d)) for p in ds["phi"].values for d in ds["d"].values]


def _label(ds, phi: str, d: int) -> str:
    parts = []
    if ds.sizes["phi"] > 1:
        parts.append(phi)
    if ds.sizes["d"] > 1 or not parts:
        parts.append(f"d={d}")
    return ", ".join(parts)


def _slope_of(rows, est, phi, d):
    for r in rows:
        if r["estimator"] == est and r["phi"] == phi and r["d"] == d:
            return r
    return None


def _panel(ax, ds, est, var, rows, colors, theory_scale=1.0, ylabel=""):
    M = ds["M"].values.astype(float)
    for (phi, d), color in zip(_lines(ds), colors, strict=True):
        vals = ds[var].sel(estimator=est, phi=phi, d=d).values  # (M, rep)
        if not np.isfinite(vals).any():
            continue
        ok = np.isfinite(vals).any(axis=1)
        med = np.nanmedian(vals[ok], axis=1)
        lo, hi = np.nanquantile(vals[ok], [LOWER_Q, UPPER_Q], axis=1)
        row = _slope_of(rows, est, phi, d) if rows else None
        lab = _label(ds, phi, d)
        if row is not None and var == "error":
            lab += f": slope {row['slope']:.2f} (theory {row['theory']:.2f})"
        ax.plot(M[ok], med, "-", color=color, label=lab, lw=1.6)
        ax.fill_between(M[ok], lo, hi, color=color, alpha=0.18, lw=0)
        holds = ds["theory_holds"].sel(estimator=est, phi=phi, d=d).values
        holds = np.nanmax(np.where(np.isfinite(holds), holds, -1), axis=1)[ok]
        for m, v, h in zip(M[ok], med, holds, strict=True):
            ax.plot(
                m, v, "o", ms=5, color=color, mfc=color if h == 1 else "white", mew=1.3, zorder=3
            )
        beta = float(ds["beta"].sel(phi=phi))
        slope = theory_slope(beta) * theory_scale
        anchor_m = math.exp(np.mean(np.log(M[ok])))
        anchor_v = math.exp(np.mean(np.log(med)))
        ref = anchor_v * (M[ok] / anchor_m) ** slope
        ax.plot(M[ok], ref, ":", color=color, lw=1.2)
    m_axis(ax, M)
    ax.set_yscale("log")
    ax.set_xlabel("M (samples)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.25)


def plot_rates(ds, rows: list[dict] | None = None, title: str = "") -> Figure:
    """Error against M per estimator: median, 10-90% band over repetitions, theory slope.

    Markers are filled where the theory's condition ``r d <= (M / log M)^{1/(2 beta+1)}``
    holds and hollow where it fails (or beta is infinite).  Dotted lines have the
    theory's slope, drawn through the centre of each curve.  When the study has
    ``bayes_pm`` cells, a last panel in the same row shows the mean width of the
    pointwise credible band against M (posterior contraction), with the reference
    slope ``-beta / (2 beta + 1)`` (the rate of the error's square root).

    Parameters
    ----------
    ds : xarray.Dataset from :func:`bayes_ips.study.store.records_to_dataset`
    rows : slopes from :func:`bayes_ips.study.slopes.fit_slopes` (for the legend)
    """
    import matplotlib

    kinds = _kinds(ds)
    ests = list(kinds)
    banded = [e for e in ests if kinds[e] == "bayes_pm"] if "band_width" in ds else []
    # one row: an error panel per estimator, then a band panel per posterior; no empty cell
    n_panels = len(ests) + len(banded)
    fig = Figure(figsize=(5.2 * n_panels, 4.2), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    cmap = matplotlib.colormaps["viridis"]
    n = len(_lines(ds))
    colors = [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]
    for ax, est in zip(axes, ests, strict=False):
        _panel(ax, ds, est, "error", rows, colors, ylabel=r"$\|\hat g - g^*\|^2_{L^2(\rho)}$")
        ax.set_title(estimator_label(est, kinds[est]))
        ax.legend(fontsize=7.5, loc="lower left")
    for axb, est in zip(axes[len(ests) :], banded, strict=True):
        _panel(axb, ds, est, "band_width", None, colors, 0.5, "mean width of 90% band")
        title = "posterior contraction (credible-band width)"
        axb.set_title(title if est == "bayes_pm" else f"{est}: {title}")
    note = "filled: theory condition holds; hollow: fails.  dotted: theory slope."
    fig.suptitle((title + "\n" if title else "") + note, fontsize=9)
    return fig


def plot_paired_ratio(ds, pairs=(("bayes_pm", "erm"),)) -> Figure:
    """Error of the posterior mean over the ERM error on the same datasets, against M.

    ``pairs``: ``(posterior, erm)`` estimator names (several: one line style each).
    """
    import matplotlib

    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    M = ds["M"].values.astype(float)
    cmap = matplotlib.colormaps["viridis"]
    lines = _lines(ds)
    styles = ("o-", "s--", "^:", "d-.")
    for j, (pm, erm) in enumerate(pairs):
        for i, (phi, d) in enumerate(lines):
            color = cmap(0.85 * i / max(len(lines) - 1, 1))
            r = (
                ds["error"].sel(estimator=pm, phi=phi, d=d)
                / ds["error"].sel(estimator=erm, phi=phi, d=d)
            ).values
            ok = np.isfinite(r).any(axis=1)
            if not ok.any():
                continue
            med = np.nanmedian(r[ok], axis=1)
            lo, hi = np.nanquantile(r[ok], [LOWER_Q, UPPER_Q], axis=1)
            label = _label(ds, phi, d)
            if len(pairs) > 1:
                label = f"{pm}/{erm}, {label}"
            ax.plot(M[ok], med, styles[j % len(styles)], color=color, label=label)
            ax.fill_between(M[ok], lo, hi, color=color, alpha=0.18, lw=0)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    m_axis(ax, M)
    ax.set_yscale("log")
    ax.set_xlabel("M (samples)")
    ax.set_ylabel("error(posterior mean) / error(ERM), same data")
    ax.set_title("paired ratio: median and 10-90% band over repetitions")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    return fig
