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

__all__ = ["plot_erm_fit", "plot_heads_fit", "plot_phi_band"]


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


def plot_heads_fit(fit, truth=None, *, key: jax.Array | None = None, n_pairs: int = 3000) -> Figure:
    """Each head of a multi-head fit against its true head, and ``G_hat`` against ``G*``.

    With a truth (:class:`bayes_ips.simulate.HeadsTruth`) the fitted heads are aligned
    to the true ones (:func:`bayes_ips.multihead.align_heads`); panel ``h`` shows, on
    held-out pairs from rho, the fitted head's values ``g_h(x, y)`` against the true
    score ``u = x^T A*_h y`` with ``phi*_h(u)`` as a curve, both centred over the
    pairs (a constant can move between heads; each head's sign is absorbed by its
    phi, so nothing else needs fixing).  The last panel is ``G_hat`` against ``G*``.
    Without a truth, each head's ``phi_h`` over its knot range.

    Parameters
    ----------
    fit : bayes_ips.multihead.HeadsFit
    truth : HeadsTruth, optional
    key : PRNG key, optional
        For the held-out pairs (default ``PRNGKey(0)``).
    """
    from bayes_ips.multihead import align_heads

    key = jax.random.PRNGKey(0) if key is None else key
    H = fit.n_heads
    ncols = H + (truth is not None)
    fig = Figure(figsize=(3.8 * ncols, 3.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, ncols))
    if truth is None:
        for h, ax in enumerate(axes[:H]):
            b = np.asarray(fit.knots.breaks[h])
            u = np.linspace(b[0], b[-1], 300)
            ax.plot(u, np.asarray(fit.phi(h, u)), "C1-", lw=2)
            ax.plot(b, np.asarray(fit.phi(h, b)), "C1|", ms=8)
            share = fit.info.get("head_share", [np.nan] * H)[h]
            ax.set_title(f"head {h + 1}: share of Var(G) {share:.2f}", fontsize=9)
            ax.set_xlabel(r"score $u = x^\top A_h y$")
            ax.set_ylabel(r"$\hat\phi_h(u)$")
        return fig
    perm, cos = align_heads(fit.A, truth.A)
    x, y = sample_pairs(key, truth.tokens, n_pairs)
    fitted = np.asarray(fit.predict_heads(x, y))
    for h, ax in enumerate(axes[:H]):
        u = np.asarray(jnp.einsum("pi,ij,pj->p", x, jnp.asarray(truth.A[h]), y))
        gh = fitted[perm[h]] - fitted[perm[h]].mean()
        t = np.asarray(phi_eval(truth.phis[h], u))
        grid = np.linspace(*np.quantile(u, [0.005, 0.995]), 300)
        ax.plot(u, gh, ".", ms=2, alpha=0.35, color="C1", label=r"$\hat g_h$ (aligned)")
        ax.plot(grid, np.asarray(phi_eval(truth.phis[h], grid)) - t.mean(), "k-", lw=1.5,
                label=r"$\phi^*_h$")  # fmt: skip
        ax.set_xlabel(r"true score $u = x^\top A^*_h y$")
        ax.set_ylabel("centred head value")
        ax.set_title(f"head {h + 1} (fitted head {perm[h] + 1}): |cos| = {cos[h]:.4f}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    ax = axes[-1]
    g = np.asarray(g_true(truth, x, y))
    gh = fitted.sum(axis=0)
    ax.plot(g, gh, ".", ms=2, alpha=0.4, color="C0")
    lim = [min(g.min(), gh.min()), max(g.max(), gh.max())]
    ax.plot(lim, lim, "k-", lw=1)
    err = float(np.mean((g - gh) ** 2))
    ax.set_xlabel(r"$G^*(x, y)$")
    ax.set_ylabel(r"$\hat G(x, y)$")
    rel = err / float(np.var(g))
    ax.set_title(rf"held-out pairs: error {err:.2e} (rel. {rel:.1e})", fontsize=9)
    return fig
