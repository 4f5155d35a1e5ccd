"""Figures: the fitted interaction against the truth.

All functions return a matplotlib Figure and never save to the current
directory; callers pass paths.  They compare phi only in a common gauge: both
A's have unit Frobenius norm, and the fitted phi is reflected when the fitted A
points the other way (``<A_hat, A*>_F < 0``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from bayes_ips.activations import phi_eval
from bayes_ips.erm import ERMFit
from bayes_ips.simulate import Truth, g_true, sample_pairs

__all__ = ["plot_erm_fit", "plot_phi_band"]


def plot_erm_fit(
    fit: ERMFit,
    truth: Truth | None = None,
    scores: np.ndarray | None = None,
    *,
    key: jax.Array | None = None,
    n_pairs: int = 3000,
) -> Figure:
    """phi_hat vs phi* over the score range, g_hat vs g* on held-out pairs, and the K choice.

    Parameters
    ----------
    fit : ERMFit
    truth : Truth, optional
        When given, phi* and g* are drawn and scores are drawn from rho.
    scores : array, optional
        Scores to show as a histogram when there is no truth (training scores).
    key : PRNG key, optional
        For the held-out pairs (default ``PRNGKey(0)``).
    """
    key = jax.random.PRNGKey(0) if key is None else key
    ncols = 3 if truth is not None else 2
    fig = Figure(figsize=(4.2 * ncols, 3.6), layout="constrained")
    axes = fig.subplots(1, ncols)
    ax = axes[0]
    sign = 1.0
    if truth is not None:
        x, y = sample_pairs(key, truth.tokens, n_pairs)
        scores = np.asarray(jnp.einsum("pi,ij,pj->p", x, jnp.asarray(truth.A), y))
        sign = 1.0 if float(np.sum(fit.A * truth.A)) >= 0 else -1.0
    if scores is not None and len(scores):
        lo, hi = np.quantile(scores, [0.005, 0.995])
    else:
        lo, hi = float(fit.knots.breaks[0]), float(fit.knots.breaks[-1])
    u = np.linspace(lo, hi, 400)
    if scores is not None and len(scores):
        hx = ax.twinx()
        hx.hist(scores, bins=60, range=(lo, hi), color="0.85")
        hx.set_yticks([])
        ax.set_zorder(hx.get_zorder() + 1)
        ax.patch.set_visible(False)
    if truth is not None:
        ax.plot(u, np.asarray(phi_eval(truth.phi, u)), "k-", lw=2, label=r"$\phi^*$")
    ax.plot(u, np.asarray(fit.phi(sign * u)), "C1--", lw=2, label=r"$\hat\phi$ (ERM)")
    b = np.asarray(fit.knots.breaks) * sign
    b = b[(b >= lo) & (b <= hi)]
    ax.plot(b, np.asarray(fit.phi(sign * b)), "C1|", ms=8, label="knots")
    ax.set_xlabel(r"score $u = x^\top A y$  (gauge $\|A\|_F = 1$)")
    ax.set_ylabel(r"$\phi(u)$")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(r"interaction function (grey: scores under $\rho$)", fontsize=9)

    if truth is not None:
        ax = axes[1]
        g = np.asarray(g_true(truth, x, y))
        gh = np.asarray(fit.predict(x, y))
        err = float(np.mean((g - gh) ** 2))
        ax.plot(g, gh, ".", ms=2, alpha=0.4, color="C0")
        lim = [min(g.min(), gh.min()), max(g.max(), gh.max())]
        ax.plot(lim, lim, "k-", lw=1)
        ax.set_xlabel(r"$g^*(x, y)$")
        ax.set_ylabel(r"$\hat g(x, y)$")
        rel = err / float(np.var(g))
        ax.set_title(
            rf"held-out pairs: $\|\hat g - g^*\|^2_{{L^2(\rho)}}$ = {err:.2e} (rel. {rel:.1e})",
            fontsize=9,
        )

    ax = axes[-1]
    table = fit.info.get("k_table", [])
    if len(table) > 1:
        Ks = [t["K"] for t in table]
        gcv = [t["gcv"] for t in table]
        ax.semilogx(Ks, gcv, "o-", color="C2")
        ax.axvline(fit.info["K"], color="C1", ls="--", label=f"chosen K = {fit.info['K']}")
        ax.set_xticks(Ks, [str(k) for k in Ks], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("number of intervals K")
        ax.set_ylabel("GCV score")
        ax.legend(fontsize=8)
        ax.set_title("data-driven choice of K", fontsize=9)
    else:
        ax.text(0.5, 0.5, f"K = {fit.info.get('K')} ({fit.info.get('k_rule')})", ha="center")
        ax.set_axis_off()
    return fig


def plot_phi_band(
    band: dict,
    grid: np.ndarray,
    *,
    erm: ERMFit | None = None,
    truth: Truth | None = None,
    A_ref: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    level: float = 0.9,
) -> Figure:
    """The posterior band for phi (draws aligned to the sign of ``A_ref``), with ERM and phi*.

    Parameters
    ----------
    band : dict from :func:`bayes_ips.posterior.phi_band`
    grid : (G,) scores
    erm : ERMFit, optional (its phi is reflected if its A points against ``A_ref``)
    truth : Truth, optional (likewise)
    A_ref : (d, d) the reference gauge the band was aligned to
    scores : optional histogram of scores in the background
    """
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    if scores is not None and len(scores):
        hx = ax.twinx()
        hx.hist(scores, bins=60, range=(grid[0], grid[-1]), color="0.88")
        hx.set_yticks([])
        ax.set_zorder(hx.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.fill_between(grid, band["lo"], band["hi"], color="C0", alpha=0.3, label=f"{level:.0%} band")
    ax.plot(grid, band["mean"], "C0-", lw=2, label="posterior mean")
    if erm is not None:
        s = 1.0 if A_ref is None or float(np.sum(erm.A * A_ref)) >= 0 else -1.0
        ax.plot(grid, np.asarray(erm.phi(s * grid)), "C1--", lw=1.5, label="ERM")
    if truth is not None:
        s = 1.0 if A_ref is None or float(np.sum(truth.A * A_ref)) >= 0 else -1.0
        ax.plot(grid, np.asarray(phi_eval(truth.phi, s * grid)), "k:", lw=2, label=r"$\phi^*$")
    ax.set_xlabel(r"score $u = x^\top A y$  (gauge $\|A\|_F = 1$)")
    ax.set_ylabel(r"$\phi(u)$")
    ax.legend(fontsize=8)
    ax.set_title(r"posterior of $\phi$ (grey: scores)", fontsize=9)
    return fig
