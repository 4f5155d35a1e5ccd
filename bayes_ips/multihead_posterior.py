"""The multi-head posterior: Laplace-PSIS or NUTS, exact conditionals of ``c``, aligned heads.

:func:`sample_heads_posterior` takes a fitted ``G(x, y) = sum_h phi_h(x^T A_h y)``
(a ``HeadsFit`` of :func:`bayes_ips.multihead.fit_erm_heads`, or anything with its
fields ``A, U, V, coef, knots, info``), chooses the model's basis by its marginal
likelihood at the fit's factors (one K and knot placement for all heads, each
head's knots on that head's training scores: :func:`bayes_ips.kselect.posterior_basis`;
``basis="erm"``: the fit's K at quantiles of each head's scores,
:func:`bayes_ips.models.multihead_spline.heads_setup`) and samples the collapsed
model as the single-head posterior is sampled
(:func:`bayes_ips.inference.fit_posterior`, whose pieces it shares).  By default
(``method="auto"``): the Laplace approximation at the posterior mode found from the
fit's factors (at rank 1 in the gnomonic charts of every head's factor directions:
each head carries the single-head radius prior), Student-t proposals, Pareto-smoothed
importance sampling, resampled into chains; NUTS when the Pareto k or the effective
size says the proposal does not fit, started at the Laplace mode with its inverse
mass (the reason in ``info["fallback"]``).  ``method="nuts"``: chains start at the
fit's factors with relative jitter, with a dense mass matrix started at the inverse
Hessian of the potential there.  Every draw gets the exact Gaussian conditional of
all heads' coefficients (block prior precision): its mean (for the
Rao-Blackwellised posterior mean of ``G``) and one draw (for bands); importance
sampling gets both from the Gram pass that weighs the proposal.

Identifiability.  Only ``G`` is identified.  Single heads are identified only up
to a permutation of the heads, a sign per head (``A_h -> -A_h`` with ``phi_h``
reflected) and constant shifts between heads, and only when the ``A_h`` differ.
So chains that differ by a head permutation are *aligned*, not flagged: every
chain (or draw) is matched to the fit's heads by the permutation maximising
``sum_h |<A_perm(h), A_ref,h>_F|`` (:func:`align_draws`), each head's sign is then
made to agree with the reference (exactly: ``A_h`` negated and ``phi_h``
reflected, which moves its knots, so aligned draws carry their own breaks), and
heads ``2..H`` are centred over the training pairs (their constants moved to
head 1, as the ERM fit does).  Convergence is judged on ``G`` at fixed pairs and
on these aligned, centred heads (:attr:`HeadsPosterior.diagnostics`); raw
factors, ``A_h`` before alignment and raw coefficients are never compared.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips import nuts
from bayes_ips.collapsed import conditional_c, sample_conditional_c
from bayes_ips.diagnostics import convergence
from bayes_ips.errors import check_xy
from bayes_ips.gauge import gauge_factors
from bayes_ips.inference import BASES, SamplerConfig, fallback_reason
from bayes_ips.models.multihead_spline import block_precision, heads_setup, multihead_spline
from bayes_ips.multihead import best_permutation
from bayes_ips.pairs import eval_pairs, off_diagonal_scores
from bayes_ips.pairwise import DEFAULT_CHUNK, gram
from bayes_ips.posterior import _map_in_blocks
from bayes_ips.spline import Knots, spline_eval

__all__ = [
    "AlignedDraws",
    "HeadsPosterior",
    "align_draws",
    "best_permutation",
    "heads_posterior_from_idata",
    "sample_heads_posterior",
]

N_EVAL = 20  # fixed training pairs at which G and the heads are diagnosed


class AlignedDraws(NamedTuple):
    """Draws relabelled, sign-fixed and centred against a reference (see :func:`align_draws`).

    Attributes
    ----------
    A : (..., H, d, d) ``A_perm(h)`` times its sign.
    coef : (..., H, nb) the matching coefficients (reversed where the sign flipped,
        shifted by ``shift``).
    breaks : (..., H, K + 1) each aligned head's breakpoints (negated and reversed
        where the sign flipped).
    perm : (..., H) int, aligned head ``h`` is the draw's head ``perm[h]``.
    sign : (..., H) +-1.
    shift : (..., H) constants added to the aligned heads (sum zero: ``G`` unchanged).
    """

    A: np.ndarray
    coef: np.ndarray
    breaks: np.ndarray
    perm: np.ndarray
    sign: np.ndarray
    shift: np.ndarray


def align_draws(
    A_draws: ArrayLike,
    coef_draws: ArrayLike,
    knots: Knots,
    reference_A: ArrayLike,
    *,
    basis_means: ArrayLike | None = None,
    by: str = "chain",
) -> AlignedDraws:
    """Align every chain's (or draw's) heads with ``reference_A``; ``G`` is unchanged.

    1. Permutation: the one maximising ``sum_h |<A_perm(h), ref_h>_F|``, per chain
       from the chain's mean of ``|<A_j, ref_h>|`` (``by="chain"``, draws shaped
       ``(C, D, H, ...)``) or per draw (``by="draw"``, any leading shape).
    2. Sign, per draw and head: where ``<A_h, ref_h> < 0``, ``A_h -> -A_h`` and
       ``phi_h -> phi_h(-.)`` exactly (:func:`bayes_ips.spline.reflect`: breaks
       negated and reversed, coefficients reversed), so the aligned head's value
       ``phi_h(x^T A_h y)`` is the draw's own.
    3. Centring (when ``basis_means`` is given): heads ``2..H`` get mean zero over
       the training pairs and head 1 takes their constants.  A constant shift of
       ``phi_h`` is a shift of all its coefficients (the B-splines sum to one).

    Parameters
    ----------
    A_draws : (..., H, d, d) array
    coef_draws : (..., H, nb) array, the coefficients on ``knots``' per-head bases.
    knots : Knots with (H, K + 1) breaks (shared by all draws).
    reference_A : (H, d, d) array
    basis_means : (..., H, nb) array, optional
        Each draw's per-head mean of its basis functions over the training pairs
        (from the Gram statistics: ``F^T 1 / n``), labelled as in ``A_draws``.
    by : {"chain", "draw"}

    Returns
    -------
    AlignedDraws
    """
    A = np.asarray(A_draws, dtype=np.float64)
    coef = np.asarray(coef_draws, dtype=np.float64)
    ref = np.asarray(reference_A, dtype=np.float64)
    H = ref.shape[0]
    if A.shape[-3] != H:
        raise ValueError(f"cannot align {A.shape[-3]} heads with {H}")
    inner = np.einsum("...jab,hab->...jh", A, ref)  # <A_j, ref_h>
    norms = np.linalg.norm(A, axis=(-2, -1))[..., :, None] * np.linalg.norm(ref, axis=(1, 2))
    cos = np.abs(inner) / np.maximum(norms, 1e-300)
    if by == "chain":
        perm = best_permutation(cos.mean(axis=1))[:, None].repeat(A.shape[1], axis=1)
    elif by == "draw":
        perm = best_permutation(cos)
    else:
        raise ValueError(f"by must be 'chain' or 'draw', got {by!r}")
    A = np.take_along_axis(A, perm[..., None, None], axis=-3)
    coef_p = np.take_along_axis(coef, perm[..., None], axis=-2)
    breaks = np.asarray(knots.breaks, dtype=np.float64)[perm]  # (..., H, K + 1)
    sign = np.diagonal(np.take_along_axis(inner, perm[..., None], axis=-2), axis1=-2, axis2=-1)
    sign = np.where(sign < 0, -1.0, 1.0)
    flip = sign < 0
    A = A * sign[..., None, None]
    coef_p = np.where(flip[..., None], coef_p[..., ::-1], coef_p)
    breaks = np.where(flip[..., None], -breaks[..., ::-1], breaks)
    shift = np.zeros(perm.shape)
    if basis_means is not None:
        means = np.sum(np.asarray(basis_means) * coef, axis=-1)  # (..., H), draw's labels
        means = np.take_along_axis(means, perm, axis=-1)  # reflection keeps a head's mean
        shift[..., 1:] = -means[..., 1:]
        shift[..., 0] = means[..., 1:].sum(-1)
        coef_p = coef_p + shift[..., None]
    return AlignedDraws(A, coef_p, breaks, perm, sign, shift)


@partial(jax.jit, static_argnames=("degree", "multiplicity", "tail", "batch"))
def _heads_flat(A, coef, breaks, x, y, degree, multiplicity, tail, batch):
    """``phi_h(x_p^T A_h y_p)`` of flattened draws, each head on its own breaks: (S, H, P)."""

    def head(a, c, b):
        return spline_eval(
            jnp.einsum("pi,ij,pj->p", x, a, y), c, Knots(b, degree, multiplicity, tail)
        )

    def one(args):
        return jax.vmap(head)(*args)

    return jax.lax.map(one, (A, coef, breaks), batch_size=batch)


@dataclasses.dataclass
class HeadsPosterior:
    """Draws of the multi-head posterior, shaped (chains, draws, ...).

    Attributes
    ----------
    A : (C, D, H, d, d) gauge-fixed draws (unit norm per head), labelled as sampled.
    coef : (C, D, H, nb) draws of ``c`` from its exact conditional.
    coef_mean : (C, D, H, nb) conditional means ``E[c | A, sigma, tau, data]``.
    sigma : (C, D)
    tau : (C, D, H)
    knots : Knots, (H, K + 1) breaks.
    aligned, aligned_mean : AlignedDraws of ``coef`` and ``coef_mean`` against the
        fit's heads (permutation, sign, centring: :func:`align_draws`).
    x_eval, y_eval : (N_EVAL, d) the training pairs of the diagnostics.
    diagnostics : dict
        ``G`` and ``heads`` (aligned, centred values at the pairs): ``rhat_max``,
        ``ess_bulk_min``, ``ess_tail_min``; ``heads_unaligned`` the same before
        alignment (for contrast only); ``permuted_chains`` (chains whose heads were
        relabelled), ``flipped`` (fraction of draws-and-heads whose sign was
        flipped), ``divergences``, ``sampling_time_s``, ``inverse_mass``
        (per group of chains started in one head order: ``"laplace"`` or ``"diagonal"``).
    extra : dict
        The sampler's per-draw statistics, (C, D) each: NUTS's (``diverging``,
        ``num_steps``, ...), or importance sampling's ``potential_energy`` and
        ``log_weight``.
    info : dict
        How it was sampled: ``method`` (asked for), ``sampler`` (``"is"`` or
        ``"nuts"``); for importance sampling ``khat``, ``is_ess``, ``ess_target``,
        ``n_proposals``, ``unique_draws``, the mode search's ``bfgs_steps``,
        ``mode_ok``, ``chart``; for ``auto`` after a fall back, ``fallback`` (why)
        and ``first`` (the importance sampler's entries).
    """

    A: np.ndarray
    coef: np.ndarray
    coef_mean: np.ndarray
    sigma: np.ndarray
    tau: np.ndarray
    knots: Knots
    aligned: AlignedDraws
    aligned_mean: AlignedDraws
    x_eval: np.ndarray
    y_eval: np.ndarray
    diagnostics: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.sigma.shape

    def _eval(self, A, coef, breaks, x, y) -> np.ndarray:
        C, D = self.shape
        H = A.shape[2]
        breaks = np.broadcast_to(breaks, (C, D) + np.shape(breaks)[-2:])
        out = _heads_flat(
            jnp.asarray(A).reshape((C * D,) + A.shape[2:]),
            jnp.asarray(coef).reshape(C * D, H, -1),
            jnp.asarray(breaks).reshape(C * D, H, -1),
            jnp.atleast_2d(jnp.asarray(x)),
            jnp.atleast_2d(jnp.asarray(y)),
            self.knots.degree,
            self.knots.multiplicity,
            self.knots.tail,
            min(64, C * D),
        )
        return np.asarray(out).reshape(C, D, H, -1)

    def head_draws(self, x: ArrayLike, y: ArrayLike, *, rao_blackwell: bool = False):
        """Aligned, centred head values ``phi_h(x_p^T A_h y_p)``: (C, D, H, P)."""
        al = self.aligned_mean if rao_blackwell else self.aligned
        return self._eval(al.A, al.coef, al.breaks, x, y)

    def g_draws(self, x: ArrayLike, y: ArrayLike, *, rao_blackwell: bool = False):
        """``G_s(x_p, y_p) = sum_h phi_h(x_p^T A_h y_p)`` per draw: (C, D, P).

        ``rao_blackwell=True`` uses the conditional means of ``c`` (the posterior
        mean), ``False`` full draws (bands).  Computed from the draws as sampled.
        """
        coef = self.coef_mean if rao_blackwell else self.coef
        return self._eval(self.A, coef, np.asarray(self.knots.breaks), x, y).sum(axis=2)

    def predict(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """The posterior mean of ``G`` (Rao-Blackwellised): (P,)."""
        return self.g_draws(x, y, rao_blackwell=True).mean(axis=(0, 1))

    def band(self, x: ArrayLike, y: ArrayLike, level: float = 0.9):
        """Pointwise ``level`` credible band of ``G``: ``(lo, hi)``, each (P,)."""
        g = self.g_draws(x, y).reshape(-1, np.shape(np.atleast_2d(x))[0])
        q = (1 - level) / 2
        return np.quantile(g, q, axis=0), np.quantile(g, 1 - q, axis=0)


@functools.cache
def _bound_model(heads: int, rank: int):
    """The collapsed model with its static options bound (one object: one compiled sampler)."""
    return partial(multihead_spline, heads=heads, rank=rank, collapsed=True)


@partial(jax.jit, static_argnames=("batch",))
def _conditionals(U, V, sigma, tau, keys, X, Y, knots, penalty, y_scale, batch):
    """Per flattened draw: conditional mean and one draw of ``c`` (H, nb), and the basis means.

    As :func:`bayes_ips.posterior._rao_blackwell`: Gram statistics of a block of
    draws together (vmap), the Cholesky solves one draw at a time (no batched
    LAPACK calls: they can deadlock XLA's CPU thread pool).
    """
    H = U.shape[1]

    def stats_one(u, v):
        un, vn = jax.vmap(gauge_factors)(u, v)
        return gram(un, vn, X, Y, knots, DEFAULT_CHUNK)

    def solve_one(args):
        st, s, t, k = args
        _, Q = block_precision(penalty, t, y_scale)
        cond = conditional_c(st, s, Q)
        nb = Q.shape[0] // H
        means = st.FtF[:, :nb].sum(axis=1) / st.n_obs  # F^T 1 / n: F_1 1 = 1 row by row
        shape = (H, nb)
        return (
            cond.mean.reshape(shape),
            sample_conditional_c(k, cond).reshape(shape),
            means.reshape(shape),
        )

    def block(args):
        u, v, s, t, k = args
        st = jax.vmap(stats_one)(u, v)
        return jax.lax.map(solve_one, (st, s, t, k))

    return _map_in_blocks(block, (U, V, sigma, tau, keys), batch)


def _init(key, fit, y_scale: float, chains: int, jitter: float, head_orders=None) -> dict:
    """Unconstrained starts per chain: the fit's factors (at the gauge's radius) with jitter.

    ``head_orders`` (chains, H): chain ``c``'s head ``h`` starts at the fit's head
    ``head_orders[c, h]`` (default: the fit's order for every chain).
    """
    ku, kv = jax.random.split(key)
    U, V = np.asarray(fit.U, dtype=np.float64), np.asarray(fit.V, dtype=np.float64)
    H, d, r = U.shape
    R = math.sqrt(d * r)
    U0 = U * R / np.linalg.norm(U, axis=(1, 2), keepdims=True)
    V0 = V * R / np.linalg.norm(V, axis=(1, 2), keepdims=True)
    order = np.broadcast_to(np.arange(H), (chains, H)) if head_orders is None else head_orders
    order = np.asarray(order)
    sigma = max(float(fit.info.get("sigma_hat", 0.1 * y_scale)), 1e-3 * y_scale)
    return {
        "U": U0[order] * (1 + jitter * jax.random.normal(ku, (chains, H, d, r))),
        "V": V0[order] * (1 + jitter * jax.random.normal(kv, (chains, H, d, r))),
        "sigma": jnp.full((chains,), math.log(sigma)),
        "tau": jnp.full((chains, H), math.log(0.1 * y_scale)),
    }


def _run_groups(key, model, args, data, init, orders, inverse_mass=None, **kw):
    """NUTS for each group of chains that start in one head order, each with its own mass.

    The dense inverse mass starts at the inverse Hessian of the potential at the
    group's first start (:func:`bayes_ips.nuts.laplace_inverse_mass`; diagonal
    adaptation where it is not finite): a Hessian taken in another head order has
    its blocks in the wrong places.  (Not measured to matter: the one mixing
    failure seen with swapped starts was the per-head knots, see
    :func:`sample_heads_posterior`'s ``shared_knots``.)  Returns the samples and
    sample statistics (chains in the given order), the wall time and the kind of
    each group's mass.  ``inverse_mass`` (one group only: a start in the fit's head
    order) replaces the Hessian at the start, e.g. the Laplace approximation's at the mode.
    """
    sites = ("U", "V", "sigma", "tau")
    groups = {}
    for c, o in enumerate(map(tuple, orders)):
        groups.setdefault(o, []).append(c)
    runs, masses, wall = [None] * len(orders), [], 0.0
    for key_g, members in zip(jax.random.split(key, len(groups)), groups.values(), strict=True):
        sub = {k: v[np.asarray(members)] for k, v in init.items()}
        point = {k: v[0] for k, v in sub.items()}
        if inverse_mass is not None:
            inv_mass = inverse_mass
        else:
            inv_mass = nuts.laplace_inverse_mass(model, args, data, point, sites)
        run = nuts.run_chains(
            key_g, model, args, data, chains=len(members), init_params=sub,
            inverse_mass=inv_mass, dense_sites=sites if inv_mass is not None else None, **kw,
        )  # fmt: skip
        masses.append("diagonal" if inv_mass is None else "laplace")
        wall += run.wall_time_s
        for i, c in enumerate(members):
            runs[c] = (
                {k: v[i] for k, v in run.samples.items()},
                {k: v[i] for k, v in run.extra.items()},
            )
    stack = lambda j: {k: np.stack([r[j][k] for r in runs]) for k in runs[0][j]}  # noqa: E731
    return stack(0), stack(1), wall, masses


METHODS = ("auto", "is", "nuts")


def sample_heads_posterior(
    key: jax.Array,
    X,
    Y,
    fit,
    *,
    method: str = "auto",
    chains: int = 2,
    warmup: int = 300,
    draws: int = 300,
    n_intervals: int | None = None,
    seed: int | None = None,
    progress: bool = False,
    jitter: float = 0.05,
    target_accept: float = 0.85,
    head_orders=None,
    shared_knots: bool = False,
    khat_max: float = 0.7,
    ess_target: int | None = None,
    max_proposals: int = 8000,
    proposal_df: float | None = None,
    basis: str = "evidence",
) -> HeadsPosterior:
    """The collapsed multi-head model's posterior, started at ``fit``; aligned summaries.

    Three methods, as the single-head :func:`bayes_ips.inference.fit_posterior`:

    ``"is"``
        Laplace proposal and Pareto-smoothed importance sampling: the posterior
        mode from the fit's factors (at rank 1 and d >= 2 in the gnomonic charts of
        every head's factor directions: each head carries the single-head radius
        prior, :func:`bayes_ips.inference.laplace_at`), Student-t proposals around
        it in rounds until the PSIS effective size reaches ``ess_target``, each
        proposal's exact conditional of all heads' ``c`` from the same Gram pass,
        and the proposals split into ``chains`` groups, each resampled
        (systematically) to ``draws`` draws.  The proposal is centred at the mode
        in the fit's head labelling; the other labellings are equivalent modes
        (head permutations and signs leave ``G`` unchanged), which ``G`` and the
        aligned heads do not need.
    ``"nuts"``
        NUTS from the fit's factors with jitter, a dense mass matrix started at the
        inverse Hessian there.
    ``"auto"`` (default)
        ``"is"``, and NUTS, started at the Laplace mode with the Laplace inverse
        mass, when the Pareto k exceeds ``khat_max``, the effective size stays
        short of its target after ``max_proposals`` proposals, or the Laplace step
        fails; ``info["fallback"]`` says why (printed when ``progress``).

    Parameters
    ----------
    key : PRNG key
    X : (M, N, d) array
    Y : (M, N) array
    fit : HeadsFit (or any object with ``A`` (H, d, d), ``U``, ``V`` (H, d, r),
        ``knots`` and ``info["sigma_hat"]``)
    method : {"auto", "is", "nuts"}
    chains, warmup, draws : int
        ``warmup`` is NUTS's only; ``draws`` per chain (resampled ones for ``is``).
    n_intervals : int, optional
        Knot intervals per head, at quantile knots; default: chosen by ``basis``.
    seed : int, optional
        Recorded in the diagnostics.
    progress : bool
    jitter : float
        Relative jitter of NUTS's starts, per chain.
    target_accept : float
    head_orders : (chains, H) int array, optional (``method="nuts"`` only)
        Chain ``c`` starts its head ``h`` at the fit's head ``head_orders[c, h]``
        (a check of the alignment: such chains differ by a head permutation).
        Default: every chain in the fit's order.
    shared_knots : bool
        Place every head's knots on all heads' scores pooled (one basis for all
        heads) instead of each head's own.  Only then is a head
        permutation an exact symmetry of the posterior: with per-head knots a
        chain whose heads are swapped carries each function on the other head's
        basis, a nearby but different posterior (measured on the slow test's data:
        R-hat 1.32 on G between a swapped and an unswapped chain, though each
        mixed).
    khat_max, ess_target, max_proposals, proposal_df
        Importance sampling's settings, as :class:`bayes_ips.inference.SamplerConfig`'s
        (``ess_target`` None: 100; ``proposal_df`` None: twice the
        proposal's dimension, at least 8).
    basis : {"evidence", "erm"}
        How the basis is chosen when ``n_intervals`` is None, as the single-head
        ``SamplerConfig.basis``: ``"evidence"`` (default) the K and knot placement
        (quantile, half-and-half or equal-width, one for all heads) of largest
        marginal likelihood of the collapsed multi-head model at the fit's factors
        (:func:`bayes_ips.kselect.posterior_basis`); ``"erm"`` the fit's K at
        quantiles of each head's scores.  ``info["basis"]``: ``rule``, ``K``,
        ``uniform_weight``, ``erm_K`` and, for the evidence, its ``table`` and ``time_s``.

    Returns
    -------
    HeadsPosterior
    """
    from bayes_ips.errors import InputError

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if head_orders is not None and method != "nuts":
        raise InputError("head_orders starts NUTS chains: it needs method='nuts'")
    if basis not in BASES:
        raise InputError(f"unknown basis {basis!r}; choose from {', '.join(BASES)}")
    X, Y = check_xy(X, Y)
    k_init, k_run, k_c, k_eval = jax.random.split(key, 4)
    t0 = time.perf_counter()
    H, d, r = np.shape(fit.U)
    scores = [off_diagonal_scores(X, fit.U[h], fit.V[h], max_samples=4000) for h in range(H)]
    if shared_knots:
        scores = [np.concatenate(scores)] * H
    setup, basis_info = _basis_setup(X, Y, fit, scores, n_intervals, basis)
    knots, y_scale = setup["knots"], setup["y_scale"]
    K = int(knots.n_intervals)
    data = dict(knots=knots, penalty=jnp.asarray(setup["penalty"]), y_scale=jnp.asarray(y_scale))
    model = _bound_model(H, r)
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    info: dict = {"method": method, "basis": basis_info}
    start, first = None, None
    if method in ("auto", "is"):
        cfg = SamplerConfig(
            chains=chains, khat_max=khat_max, ess_target=ess_target,
            max_proposals=max_proposals, proposal_df=proposal_df,
        )  # fmt: skip
        cfg.validate(d)
        try:
            res = _importance(k_run, model, Xj, Yj, data, fit, y_scale, cfg, draws, progress)
        except FloatingPointError as e:
            if method != "auto":
                raise
            fallback, first = str(e), {}
        else:
            fallback = fallback_reason(res[-1], khat_max)
            if method == "is" or fallback is None:
                s, extra, bm, cm, cd, run_info = res
                info.update(run_info)
                return _finish(
                    s, extra, cm, cd, bm, knots, fit, X, k_eval, t0, K, seed, info,
                    run_info["sampling_time_s"], ["none"],
                )  # fmt: skip
            first = res[-1]
            start = (first["mode"], first["inverse_mass"])
        info["fallback"] = fallback
        info["first"] = {
            k: v for k, v in first.items()
            if k not in ("mode", "inverse_mass") and not isinstance(v, np.ndarray | dict)
        }  # fmt: skip
        if progress:
            print(f"auto: the Laplace proposal does not fit ({fallback}): running NUTS", flush=True)
    info["sampler"] = "nuts"
    if start is None:
        init = _init(k_init, fit, y_scale, chains, jitter, head_orders)
        inv_mass = None
    else:  # the Laplace mode, the factors jittered, and its inverse mass
        from bayes_ips.inference import _jitter

        init, inv_mass = _jitter(k_init, start[0], chains, jitter), start[1]
    orders = np.broadcast_to(np.arange(H) if head_orders is None else head_orders, (chains, H))
    kw = dict(warmup=warmup, draws=draws, target_accept=target_accept, progress=progress)
    s, extra, wall, masses = _run_groups(k_run, model, (Xj, Yj), data, init, orders, inv_mass, **kw)
    if start is not None:
        masses = ["laplace-mode"] * len(masses)
    C, D = s["sigma"].shape
    flat = lambda a: jnp.asarray(a).reshape((C * D,) + a.shape[2:])  # noqa: E731
    keys = jax.random.split(k_c, C * D)
    cm, cd, bm = _conditionals(
        flat(s["U"]),
        flat(s["V"]),
        flat(s["sigma"]),
        flat(s["tau"]),
        keys,
        Xj,
        Yj,
        knots,
        data["penalty"],
        data["y_scale"],
        min(32, C * D),
    )
    unflat = lambda a: np.asarray(a).reshape((C, D) + a.shape[1:])  # noqa: E731
    info["divergences"] = int(np.sum(extra["diverging"]))
    return _finish(
        s, extra, unflat(cm), unflat(cd), unflat(bm), knots, fit, X, k_eval, t0, K, seed, info,
        wall, masses,
    )  # fmt: skip


def _basis_setup(X, Y, fit, scores, n_intervals, basis) -> tuple[dict, dict]:
    """The model's data keywords and how its basis was chosen (``info["basis"]``).

    ``n_intervals`` given: that K at quantile knots (``rule = "fixed"``); else
    ``basis="erm"``: the fit's K at quantile knots; ``basis="evidence"``: the K and
    placement of largest marginal likelihood at the fit's factors and noise
    (:func:`bayes_ips.kselect.posterior_basis`, one K and placement for all heads,
    each head's knots on its own ``scores``), with its table and time.
    """
    degree, erm_k = fit.knots.degree, int(fit.knots.n_intervals)
    t0 = time.perf_counter()
    if n_intervals is not None or basis == "erm":
        K = int(n_intervals or erm_k)
        setup = heads_setup(Y, scores, K, degree)
        rule = "erm" if n_intervals is None else "fixed"
        return setup, {"rule": rule, "K": K, "uniform_weight": 0.0, "erm_K": erm_k}
    from bayes_ips.kselect import posterior_basis

    sigma0 = float(fit.info["sigma_hat"])
    knots, table = posterior_basis(X, Y, fit.U, fit.V, degree, sigma0, DEFAULT_CHUNK, scores=scores)
    setup = heads_setup(Y, scores, knots.n_intervals, degree, knots=knots)
    chosen = next(t for t in table if t["chosen"])
    info = {
        "rule": "evidence",
        "K": int(knots.n_intervals),
        "uniform_weight": float(chosen["uniform_weight"]),
        "erm_K": erm_k,
        "table": table,
        "time_s": time.perf_counter() - t0,
    }
    return setup, info


def _importance(key, model, X, Y, data, fit, y_scale, cfg, draws, progress):
    """Laplace-PSIS on the collapsed multi-head model from the fit's factors.

    Returns the resampled draws' sites (``U, V, sigma, tau, A``: (C, D, ...)), their
    per-draw statistics, basis means, conditional means and draws of ``c`` and the
    run's info (with the Laplace ``mode`` and ``inverse_mass`` for a NUTS fall back).
    """
    from bayes_ips.inference import (
        IMH_BATCH,
        _n_tau,
        importance_sample,
        laplace_at,
        proposal_samples,
        resample_chains,
    )
    from bayes_ips.posterior import evaluate_proposals

    k_prop, k_c, k_res = jax.random.split(key, 3)
    t0 = time.perf_counter()
    start = {k: v[0] for k, v in _init(key, fit, y_scale, 1, 0.0).items()}
    approx, layout, chart, info = laplace_at(model, (X, Y), data, start)
    info["mode_time_s"] = time.perf_counter() - t0
    df = cfg.proposal_df_for(approx.mean.shape[0])

    def evaluate(flat, keys):
        return evaluate_proposals(
            flat, keys, X, Y, data, model=model, layout=layout, batch=IMH_BATCH
        )

    res = importance_sample(
        k_prop, k_c, approx, df, chart, evaluate, cfg.is_ess_target(), cfg.max_proposals,
        cfg.khat_max, progress, label="heads is", n_tau=_n_tau(layout),
        max_refits=cfg.max_refits,
    )  # fmt: skip
    flat, A, pe, cm, cd, bm = res.proposals
    idx = resample_chains(k_res, res.log_smoothed, cfg.chains, draws)
    s = proposal_samples(flat, layout, A, idx)
    take = lambda a: np.asarray(a)[idx]  # noqa: E731
    extra = {"potential_energy": take(pe), "log_weight": take(res.log_weights)}
    info.update(res.info(idx), sampler="is", proposal_df=df)
    info["sampling_time_s"] = time.perf_counter() - t0 - info["mode_time_s"]
    return s, extra, take(bm), take(cm), take(cd), info


def _finish(s, extra, cm, cd, bm, knots, fit, X, k_eval, t0, K, seed, info, wall, masses):
    """The :class:`HeadsPosterior` of draws ``s`` (C, D, ...): aligned, diagnosed."""
    H = np.shape(fit.U)[0]
    A = np.asarray(s["A"])
    ref = np.asarray(fit.A)
    aligned = align_draws(A, cd, knots, ref, basis_means=bm)
    aligned_mean = align_draws(A, cm, knots, ref, basis_means=bm)
    x_eval, y_eval = eval_pairs(k_eval, np.asarray(X), N_EVAL)
    post = HeadsPosterior(
        A, cd, cm, np.asarray(s["sigma"]), np.asarray(s["tau"]), knots, aligned, aligned_mean,
        np.asarray(x_eval), np.asarray(y_eval),
    )  # fmt: skip
    g = post.g_draws(x_eval, y_eval, rao_blackwell=True)
    heads = post.head_draws(x_eval, y_eval, rao_blackwell=True)
    raw = post._eval(A, cm, np.asarray(knots.breaks), x_eval, y_eval)
    post.extra = {k: np.asarray(v) for k, v in extra.items()}
    post.info = {k: v for k, v in info.items() if k not in ("mode", "inverse_mass")}
    post.diagnostics = {
        "G": convergence({"G": g}),
        "heads": convergence({"heads": heads}),
        "heads_unaligned": convergence({"heads": raw}),
        "sigma": convergence({"sigma": post.sigma}),
        "permuted_chains": int(np.sum(np.any(aligned.perm[:, 0] != np.arange(H), axis=-1))),
        "flipped": float(np.mean(aligned.sign < 0)),
        "divergences": info.get("divergences"),  # NUTS only
        "sampler": info["sampler"],
        "sampling_time_s": wall,
        "total_time_s": time.perf_counter() - t0,
        "inverse_mass": masses,
        "n_intervals": K,
        "seed": -1 if seed is None else int(seed),
    }
    return post


def heads_posterior_from_idata(idata):
    """Rebuild a :class:`HeadsPosterior` from its InferenceData.

    The InferenceData is :func:`bayes_ips.arviz_io.build_heads_inference_data`'s.

    The alignment's permutations, signs and shifts are not stored: the rebuilt
    posterior's ``aligned`` and ``aligned_mean`` both hold the aligned conditional
    means (what ``predict --per-head`` uses).
    """
    import json

    from bayes_ips.errors import InputError
    from bayes_ips.multihead import stack_knots
    from bayes_ips.spline import make_knots, saved_tail

    p = idata.posterior
    names = ("A", "c_draw", "c_mean", "sigma", "tau", "A_aligned", "c_aligned", "breaks_aligned")
    for name in names:
        if name not in p:
            raise InputError(f"the multi-head posterior group has no {name!r}")
    try:
        deg, mult = int(idata.attrs["degree"]), int(idata.attrs["multiplicity"])
        breaks = idata.constant_data["breaks"].values
        tail = saved_tail(idata.attrs)  # "poly" for files from before the linear tail
        knots = stack_knots([make_knots(b, deg, mult, tail) for b in breaks])
        x_eval = idata.constant_data["x_eval"].values
        y_eval = idata.constant_data["y_eval"].values
    except (KeyError, ValueError, AttributeError) as e:
        raise InputError(f"corrupt multi-head posterior file: {e}") from None
    C, D = p["sigma"].shape
    H = p["A"].shape[2]
    none = np.zeros((C, D, H))
    al = AlignedDraws(
        p["A_aligned"].values,
        p["c_aligned"].values,
        p["breaks_aligned"].values,
        np.broadcast_to(np.arange(H), (C, D, H)),
        none + 1.0,
        none,
    )
    diag = idata.attrs.get("diagnostics", "{}")
    run_info = idata.attrs.get("sampler_info", "{}")
    return HeadsPosterior(
        p["A"].values,
        p["c_draw"].values,
        p["c_mean"].values,
        p["sigma"].values,
        p["tau"].values,
        knots,
        al,
        al,
        x_eval,
        y_eval,
        json.loads(diag) if isinstance(diag, str) else dict(diag),
        info=json.loads(run_info) if isinstance(run_info, str) else dict(run_info),
    )
