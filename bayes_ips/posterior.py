"""Posterior summaries on identifiable quantities: Rao-Blackwellised g, bands, modes.

For each draw ``theta_s = (A_s, sigma_s, tau_s)`` the spline coefficients have an
exact Gaussian conditional (:func:`bayes_ips.collapsed.conditional_c`).  The
posterior-mean estimator

    g_PM(x, y) = E[phi_c(x^T A y) | data] = mean_s phi_{cbar_s}(x^T A_s y),
    cbar_s = E[c | theta_s, data],

is Rao-Blackwellised: it averages conditional means (phi is linear in c) instead
of noisy draws of c.  Credible bands use full draws ``c_s ~ c | theta_s``.

Everything here works on ``g`` or on the gauge-fixed ``A`` (unit Frobenius norm);
for phi, each draw is first aligned to a reference sign (``phi(u) -> phi(-u)``
when ``<A_s, A_ref> < 0``).  Raw U, V and c are never summarised.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.collapsed import conditional_c, pspline_precision, sample_conditional_c
from bayes_ips.models.lowrank_spline import KAPPA, gauge_factors
from bayes_ips.pairwise import DEFAULT_CHUNK, gram, padded_size, pairwise_mean
from bayes_ips.spline import Knots, spline_eval

__all__ = [
    "Posterior",
    "draw_errors",
    "evaluate_proposals",
    "g_draws",
    "mode_check",
    "phi_band",
    "posterior_from_run",
    "posterior_predictive_mean",
    "predict",
    "unique_draws",
]


@dataclasses.dataclass
class Posterior:
    """Draws of the identifiable quantities, shaped (chains, draws, ...).

    Attributes
    ----------
    A : (C, D, d, d) gauge-fixed draws (unit norm; sign as sampled).
    sigma, tau : (C, D)
    c_mean : (C, D, K) conditional means ``E[c | A, sigma, tau, data]``.
    c_draw : (C, D, K) draws from that conditional.
    knots : Knots
    """

    A: np.ndarray
    sigma: np.ndarray
    tau: np.ndarray
    c_mean: np.ndarray
    c_draw: np.ndarray
    knots: Knots

    @property
    def shape(self) -> tuple[int, int]:
        return self.sigma.shape


@partial(jax.jit, static_argnames=("batch",))
def _rao_blackwell(U, V, sigma, tau, keys, X, Y, knots, penalty, kappa, batch):
    """Conditional mean and one draw of c for every flattened draw (one program per shape).

    The Gram statistics of ``batch`` draws are computed together (vmap); the K x K
    Cholesky factorisations and triangular solves run one draw at a time.  That is
    deliberate: jaxlib's CPU LAPACK kernels split a *batched* call over XLA's
    intra-op thread pool and block the calling pool worker until the pieces finish.
    With batched calls here (the conditional mean's solve and the draw's solve are
    independent, so XLA may run them side by side) every worker of a 2-thread pool
    ended up waiting and the process hung forever at 0% CPU (jax 0.10.2; seen with
    600 and with 640 draws in batches of 64).  ``tests/test_posterior.py`` checks
    that this program has no batched LAPACK call.  The draws are padded to whole
    batches, so ``lax.map`` compiles one program instead of a scan plus a remainder.
    """

    def stats_one(u, v):
        un, vn = gauge_factors(u, v)
        return un @ vn.T, gram(un, vn, X, Y, knots, DEFAULT_CHUNK)

    def solve_one(args):
        st, s, t, k = args
        cond = conditional_c(st, s, pspline_precision(penalty, t, kappa))
        return cond.mean, sample_conditional_c(k, cond)

    def block(args):
        u, v, s, t, k = args
        A, st = jax.vmap(stats_one)(u, v)
        cm, cd = jax.lax.map(solve_one, (st, s, t, k))
        return A, cm, cd

    return _map_in_blocks(block, (U, V, sigma, tau, keys), batch)


def _map_in_blocks(block, arrays: tuple, batch: int) -> tuple:
    """``block`` on consecutive blocks of ``batch`` rows of ``arrays``, in a ``lax.map``.

    The rows are padded (with copies of the last) to whole blocks, so one program
    serves every block, and the padding is cut from the outputs.
    """
    n = arrays[0].shape[0]
    n_blocks = -(-n // batch)
    pad = n_blocks * batch - n

    def blocks(a):
        a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
        return a.reshape((n_blocks, batch) + a.shape[1:])

    out = jax.lax.map(block, tuple(blocks(a) for a in arrays))
    return tuple(a.reshape((n_blocks * batch,) + a.shape[2:])[:n] for a in out)


@partial(jax.jit, static_argnames=("model", "layout", "batch"))
def evaluate_proposals(flat, keys, X, Y, model_kwargs, *, model, layout, batch):
    """Potential energy, gauge-fixed ``A`` and the conditional of c at many parameter points.

    One Gram pass per point serves both the log density (the collapsed model is
    called with these ``stats``) and the Rao-Blackwellised conditional of ``c``.
    At d = 1 the gauge leaves ``A = +-1``: the statistics are computed once per
    sign and shared by all points.  As in :func:`_rao_blackwell`, the Gram
    statistics of a block are vmapped and every Cholesky factorisation runs one
    point at a time (no batched LAPACK call).

    The single-head model (:mod:`bayes_ips.models.lowrank_spline`, ``U`` of shape
    ``(d, r)`` in ``layout``) and the multi-head model
    (:mod:`bayes_ips.models.multihead_spline`, ``U`` of shape ``(H, d, r)``: every
    head's factors gauge-fixed, the heads' concatenated design and their block prior
    precision) are both served.

    Parameters
    ----------
    flat : (S, P) array
        Unconstrained ``U, V, sigma, tau`` raveled in the order of ``layout``.
    keys : (S, 2) PRNG keys, one per point (for the draw of c).
    X : (M, N, d) array
    Y : (M, N) array
    model_kwargs : dict
        The collapsed model's data keywords (``knots``, ``penalty``, ``y_scale``).
    model : the bound collapsed model (static).
    layout : see :func:`bayes_ips.laplace.flatten` (static).
    batch : int, points whose statistics are computed together (static).

    Returns
    -------
    A : (S, d, d) or (S, H, d, d); pe : (S,) potential energies; c_mean, c_draw :
    (S, K) or (S, H, nb); means : like c_mean, each basis function's mean over the
    training pairs (``F^T 1 / n``: what centres a head, see
    :func:`bayes_ips.multihead_posterior.align_draws`).
    """
    from numpyro.infer.util import potential_energy

    from bayes_ips.laplace import unravel
    from bayes_ips.models.multihead_spline import block_precision
    from bayes_ips.spline import n_basis

    knots, penalty = model_kwargs["knots"], model_kwargs["penalty"]
    y_scale = model_kwargs["y_scale"]
    kappa = KAPPA * y_scale
    heads = len(dict(layout)["U"]) == 3
    nb = n_basis(knots)

    def gauge_A(f):
        p = unravel(f, layout)
        if heads:
            un, vn = jax.vmap(gauge_factors)(p["U"], p["V"])
            return un, vn, un @ jnp.swapaxes(vn, -1, -2)
        un, vn = gauge_factors(p["U"], p["V"])
        return un, vn, un @ vn.T

    def stats_one(f):
        un, vn, A = gauge_A(f)
        return A, gram(un, vn, X, Y, knots, DEFAULT_CHUNK)

    one_dim = X.shape[-1] == 1 and not heads
    if one_dim:  # A = +-1
        one = jnp.ones((1, 1), X.dtype)
        st_pos = gram(one, one, X, Y, knots, DEFAULT_CHUNK)
        st_neg = gram(-one, one, X, Y, knots, DEFAULT_CHUNK)

    def solve_one(args):
        f, st, k = args
        p = unravel(f, layout)
        pe = potential_energy(model, (X, Y), {**model_kwargs, "stats": st}, p)
        sigma, tau = jnp.exp(p["sigma"]), jnp.exp(p["tau"])
        if heads:
            Q = block_precision(penalty, tau, y_scale)[1]
        else:
            Q = pspline_precision(penalty, tau, kappa)
        cond = conditional_c(st, sigma, Q)
        means = st.FtF[:, :nb].sum(axis=1) / st.n_obs  # F^T 1 / n: F_1 1 = 1 row by row
        shape = (-1, nb) if heads else (-1,)
        cm, cd = cond.mean, sample_conditional_c(k, cond)
        return pe, cm.reshape(shape), cd.reshape(shape), means.reshape(shape)

    def block(args):
        f, k = args
        if one_dim:
            A = jax.vmap(lambda x: gauge_A(x)[2])(f)
            pos = A[:, 0, 0] > 0
            st = jax.tree.map(
                lambda a, b: jnp.where(pos.reshape((-1,) + (1,) * jnp.ndim(a)), a, b),
                st_pos,
                st_neg,
            )
        else:
            A, st = jax.vmap(stats_one)(f)
        pe, cm, cd, means = jax.lax.map(solve_one, (f, st, k))
        return A, pe, cm, cd, means

    return _map_in_blocks(block, (flat, keys), batch)


def posterior_from_run(key: jax.Array, run, X: ArrayLike, Y: ArrayLike) -> Posterior:
    """Rao-Blackwellise a NUTS run: conditional mean and a draw of c for every draw."""
    X, Y = jnp.asarray(X), jnp.asarray(Y)
    U, V = jnp.asarray(run.samples["U"]), jnp.asarray(run.samples["V"])
    sigma, tau = jnp.asarray(run.samples["sigma"]), jnp.asarray(run.samples["tau"])
    C, D = sigma.shape
    kappa = KAPPA * run.y_scale
    flat = lambda a: a.reshape((C * D,) + a.shape[2:])  # noqa: E731
    keys = jax.random.split(key, C * D)
    A, cm, cd = _rao_blackwell(
        flat(U),
        flat(V),
        flat(sigma),
        flat(tau),
        keys,
        X,
        Y,
        run.knots,
        jnp.asarray(run.penalty),
        jnp.asarray(kappa),
        min(64, C * D),
    )
    unflat = lambda a: np.asarray(a).reshape((C, D) + a.shape[1:])  # noqa: E731
    return Posterior(
        unflat(A), np.asarray(sigma), np.asarray(tau), unflat(cm), unflat(cd), run.knots
    )


@partial(jax.jit, static_argnames=("batch",))
def _g_flat(A, coef, x, y, knots, batch):
    """``phi_{c_s}(x_p^T A_s y_p)`` for flattened draws: (S, P)."""

    def one(args):
        a, c = args
        return spline_eval(jnp.einsum("pi,ij,pj->p", x, a, y), c, knots)

    return jax.lax.map(one, (A, coef), batch_size=batch)


def g_draws(
    post: Posterior, x: ArrayLike, y: ArrayLike, *, rao_blackwell: bool = True
) -> np.ndarray:
    """``g_s(x_p, y_p)`` for every draw: (C, D, P).

    ``rao_blackwell=True`` uses the conditional means of c (for the posterior
    mean); ``False`` uses full draws of c (for credible bands).
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    coef = post.c_mean if rao_blackwell else post.c_draw
    C, D = post.shape
    A, coef, inverse = unique_draws(post.A, coef)
    out = _g_flat(jnp.asarray(A), jnp.asarray(coef), x, y, post.knots, min(64, len(A)))
    return np.asarray(out)[inverse].reshape(C, D, -1)


def unique_draws(A: ArrayLike, coef: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct draws of ``(A, coef)`` (C, D, ...) and the index of each draw among them.

    Importance sampling resamples its proposals, so its chains repeat draws (copies
    are bit-identical: the same proposal's ``A`` and draw of ``c``); functions of a
    draw need computing once per distinct draw.  Returns ``A`` (U, ...), ``coef``
    (U, nb) and ``inverse`` (C * D,) with ``A[inverse]`` the flattened draws; ``U``
    is the number of distinct draws rounded up to a power of two (at least 64, at
    most C * D; the extra rows repeat the first), so that the compiled programs
    that take them see few shapes.
    """
    A, coef = np.asarray(A), np.asarray(coef)
    S = A.shape[0] * A.shape[1]
    A, coef = A.reshape((S,) + A.shape[2:]), coef.reshape(S, -1)
    rows = np.ascontiguousarray(np.concatenate([A.reshape(S, -1), coef], axis=1))
    _, first, inverse = np.unique(
        rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel(),
        return_index=True,
        return_inverse=True,
    )
    # padded (with copies of the first) to a power of two, at most S: few compiled shapes
    size = min(S, padded_size(len(first)))
    first = np.concatenate([first, np.full(size - len(first), first[0])])
    return A[first], coef[first], inverse.ravel()


def predict(
    post: Posterior, x: ArrayLike, y: ArrayLike, level: float = 0.9
) -> dict[str, np.ndarray]:
    """Posterior mean ``g`` (Rao-Blackwellised) and the pointwise credible band.

    Returns
    -------
    dict with ``g``, ``g_lo``, ``g_hi`` of shape (P,): the ``(1 - level)/2`` and
    ``(1 + level)/2`` quantiles of ``g`` under the posterior.
    """
    g_rb = g_draws(post, x, y, rao_blackwell=True)
    g_full = g_draws(post, x, y, rao_blackwell=False)
    q = (1 - level) / 2
    flat = g_full.reshape(-1, g_full.shape[-1])
    return {
        "g": g_rb.mean(axis=(0, 1)),
        "g_lo": np.quantile(flat, q, axis=0),
        "g_hi": np.quantile(flat, 1 - q, axis=0),
    }


def phi_band(
    post: Posterior, grid: ArrayLike, A_ref: ArrayLike, level: float = 0.9
) -> dict[str, np.ndarray]:
    """Band for phi on a grid of scores, every draw aligned to the sign of ``A_ref``.

    Returns ``mean``, ``lo``, ``hi`` of shape (G,), and ``sign`` (C, D).
    """
    grid = jnp.asarray(grid)
    sign = np.sign(np.einsum("cdij,ij->cd", post.A, np.asarray(A_ref)))
    sign[sign == 0] = 1.0
    C, D = post.shape
    signs = jnp.asarray(sign.reshape(-1))
    vals = np.asarray(
        _phi_flat(signs, jnp.asarray(post.c_draw.reshape(C * D, -1)), grid, post.knots)
    )
    mean = np.asarray(
        _phi_flat(signs, jnp.asarray(post.c_mean.reshape(C * D, -1)), grid, post.knots)
    ).mean(0)
    q = (1 - level) / 2
    return {
        "mean": mean,
        "lo": np.quantile(vals, q, axis=0),
        "hi": np.quantile(vals, 1 - q, axis=0),
        "sign": sign,
    }


@jax.jit
def _phi_flat(signs, coef, grid, knots):
    """``phi_{c_s}(sign_s * grid)`` for flattened draws: (S, G)."""
    return jax.lax.map(lambda a: spline_eval(a[0] * grid, a[1], knots), (signs, coef))


def draw_errors(key: jax.Array, post: Posterior, truth, n_pairs: int = 5000) -> np.ndarray:
    """``||g_theta - g*||^2_{L2(rho)}`` for every draw (c drawn from its conditional): (C * D,)."""
    from bayes_ips.simulate import g_true, sample_pairs

    x, y = sample_pairs(key, truth.tokens, n_pairs)
    g = np.asarray(g_true(truth, x, y))
    gd = g_draws(post, x, y, rao_blackwell=False)
    return ((gd - g) ** 2).mean(-1).ravel()


def mode_check(g_eval: np.ndarray, threshold: float = 3.0) -> dict:
    """Are chains in different, non-equivalent modes?

    ``g`` is invariant under every symmetry of the model (the sign of A included),
    so chains that agree on the law of ``g_eval`` explore equivalent modes.  For
    each pair of chains the largest standardised difference of their means over
    the evaluation pairs is computed; above ``threshold`` (in units of the pooled
    posterior sd plus a Monte Carlo allowance) the chains are declared apart.

    Parameters
    ----------
    g_eval : (C, D, P) array

    Returns
    -------
    dict with ``separated`` (bool), ``max_z`` (float) and ``groups`` (list of
    lists of chain indices that agree).
    """
    C, D, _ = g_eval.shape
    means = g_eval.mean(axis=1)
    sds = g_eval.std(axis=1) + 1e-12
    groups: list[list[int]] = []
    max_z = 0.0
    for c in range(C):
        placed = False
        for grp in groups:
            ref = grp[0]
            pooled = np.sqrt(0.5 * (sds[c] ** 2 + sds[ref] ** 2))
            z = float(np.max(np.abs(means[c] - means[ref]) / pooled))
            max_z = max(max_z, z)
            if z <= threshold:
                grp.append(c)
                placed = True
                break
        if not placed:
            groups.append([c])
    return {"separated": len(groups) > 1, "max_z": max_z, "groups": groups}


def posterior_predictive_mean(post: Posterior, X: ArrayLike, c_kind: str = "draw") -> np.ndarray:
    """Pairwise means F(A_s) c_s for every draw: (C, D, M, N), once per distinct draw."""
    X = jnp.asarray(X)
    coef = post.c_draw if c_kind == "draw" else post.c_mean
    C, D = post.shape
    A, coef, inverse = unique_draws(post.A, coef)
    out = np.asarray(_mean_flat(jnp.asarray(A), jnp.asarray(coef), X, post.knots))
    return out[inverse].reshape((C, D) + out.shape[1:])


@jax.jit
def _mean_flat(A, coef, X, knots):
    """Pairwise means ``F(A_s) c_s`` for flattened draws: (S, M, N), 8 draws at a time."""

    def one(args):
        a, c = args
        return pairwise_mean(a, jnp.eye(a.shape[0]), c, X, knots, DEFAULT_CHUNK)

    return jax.lax.map(one, (A, coef), batch_size=8)
