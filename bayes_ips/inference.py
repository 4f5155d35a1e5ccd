"""Posterior inference for the low-rank spline model: configuration, setup, sampling.

The basis of the Bayesian model is fixed before sampling, from an ERM fit on the
same data.  By default (``basis="evidence"``) it is the K, and the placement of
its knots between the quantiles and the equal-width grid of the ERM fit's
scores, of largest marginal likelihood at the ERM's ``A``
(:func:`bayes_ips.kselect.posterior_basis`); ``basis="erm"`` takes ERM's own
basis (its GCV choice of K at quantile knots), and ``n_intervals`` fixes K at
quantile knots.  A caller that needs a prior that does not look at the data
(simulation-based calibration, :mod:`bayes_ips.sbc`) passes a
:class:`FixedPrior` instead (``prior=``): its knots, penalty scale and
``y_scale`` replace the ERM- and data-derived ones; the ERM fit then only starts
the samplers.

Three samplers, chosen by ``SamplerConfig.method``:

``"is"``
    Laplace proposal and Pareto-smoothed importance sampling (PSIS, Vehtari et
    al. 2024): the mode and Hessian as for ``"imh"``, Student-t proposals drawn
    in rounds of :data:`IS_ROUND` until the PSIS effective sample size reaches
    ``ess_target`` (100 by default, the bound ``diagnose`` checks:
    :data:`bayes_ips.diagnostics.IS_ESS_MIN`) and the Pareto k is within the limit
    for that many proposals (:func:`bayes_ips.diagnostics.khat_limit`), each
    costing one pass over the data that also gives the conditional of ``c``.
    The output chains are the proposals split into ``chains`` independent groups,
    each resampled (systematic resampling of its smoothed weights) to ``draws``
    draws, so that R-hat across chains compares independent importance samplers.
    About a third of the proposals of ``"imh"`` reach the same effective size.
    Where the Pareto k exceeds ``khat_max``, the proposal is refitted to the
    weighted draws (up to :data:`IS_ADAPT_MAX` times) and every proposal is
    weighted by the mixture of all those drawn from (:func:`importance_sample`;
    ``run.info["is_refits"]``).
``"imh"``
    Laplace proposal and independence Metropolis-Hastings (:mod:`bayes_ips.laplace`):
    BFGS from the ERM start to the posterior mode of ``(U, V, log sigma, log tau)``,
    the Hessian there, Student-t proposals around the mode, and chains that
    accept or reject them exactly.  Every proposal costs one pass over the data
    (no gradients, no trajectories), and that pass also gives the conditional of
    ``c`` (Rao-Blackwellisation for free).  The Pareto k of the proposals'
    importance weights (PSIS) says whether the proposal fits the posterior.
``"nuts"``
    NUTS (:mod:`bayes_ips.nuts`) with a dense mass matrix started at the inverse
    Hessian; chains start from the ERM factors with jitter (``init="erm"``) or
    from the prior (``init="prior"``).
``"auto"`` (default)
    ``"is"``, and NUTS started at the Laplace mode when the Pareto k still exceeds
    ``khat_max`` (0.7, Vehtari et al. 2024) after the refits, or the mode search fails; what
    happened is printed and stored (``run.info["fallback"]``, and the
    InferenceData's attributes).  It also falls back when the effective sample
    size stays below its target, or the Pareto k above the limit for the number
    of proposals, after ``max_proposals`` proposals.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayes_ips import nuts
from bayes_ips.diagnostics import IS_ESS_MIN
from bayes_ips.erm import ERMConfig, ERMFit, fit_erm
from bayes_ips.errors import InputError, check_rank, check_xy
from bayes_ips.io import fit_reference
from bayes_ips.models.lowrank_spline import DEFAULT_TAU_LAW, lowrank_spline, model_setup
from bayes_ips.pairs import eval_pairs, off_diagonal_scores  # eval_pairs: re-exported
from bayes_ips.ppc import predictive_draws, thin_draws
from bayes_ips.spline import Knots

__all__ = [
    "FixedPrior",
    "NUTSRun",
    "PosteriorRun",
    "SamplerConfig",
    "bound_model",
    "eval_pairs",
    "fit_posterior",
    "model_knots",
    "run_imh",
    "run_is",
    "run_nuts",
    "sample_posterior",
]

# Adaptive importance sampling.  Where the Laplace proposal's Pareto k exceeds the
# limit (a skewed posterior whose mean lies a standard deviation or two from its mode,
# or one wider than its curvature there: rank 2 with a weak second direction), a new
# Student-t is fitted to the weighted proposals so far, and the run goes on drawing
# from it.  Every proposal is then weighted by the mixture of all the proposals
# drawn, in their fixed counts (deterministic-mixture weights, Owen and Zhou 2000;
# AMIS, Cornuet et al. 2012), so the Laplace part keeps bounding the weights where
# the refit is too narrow, and PSIS judges the whole.  At most this many refits
# before the run gives up (and ``auto`` falls back to NUTS).  Two, not more: in a
# rank-2 SBC (1000 replications, analyses/RESULTS.md) the runs that reached a reliable
# k after one or two refits were calibrated, but those that needed a third were not
# (too narrow: 16% of their ranks in the outer 10%, against 10%), and on one of them
# the posterior's spread was 0.65-0.87 of NUTS's on the same data.
IS_ADAPT_MAX = 2

INITS = ("erm", "prior")
METHODS = ("auto", "is", "imh", "nuts")
BASES = ("evidence", "erm")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Settings of a posterior run.

    Attributes
    ----------
    rank : int
    method : {"auto", "is", "imh", "nuts"}
        The sampler (module docstring).  ``is`` and ``imh`` need ``collapsed`` and
        the ERM start.
    collapsed : bool
        Integrate the spline coefficients out (recommended) or sample them.
    chains : int
    warmup : int or None
        NUTS warmup iterations, or the independence sampler's burn-in (not used by
        ``is``); None takes the method's default (:data:`DEFAULT_WARMUP`).
    draws : int or None
        Kept draws per chain (for ``is``: resampled draws per group); None takes the
        method's default (:data:`DEFAULT_DRAWS`).
    init : {"erm", "prior"}
    jitter : float
        Relative jitter of the ERM start, per chain.
    target_accept : float
    max_tree_depth : int
    n_intervals : int or None
        Knot intervals of the model's basis (at quantile knots); None chooses the
        basis by ``basis``.
    basis : {"evidence", "erm"}
        How the basis is chosen when ``n_intervals`` is None: by the model's
        marginal likelihood (:func:`bayes_ips.kselect.posterior_basis`; on 16
        paper cells K = 24-192, mostly equal-width or half-and-half knots, where
        ERM's GCV took 15-120 at quantile knots, with 0.29-0.86 times the error of
        the NUTS posterior on ERM's basis), or ERM's GCV choice at quantile knots.
    degree : int
    proposal_df : float or None
        Degrees of freedom of the Student-t proposal of ``is`` and ``imh`` (``inf``:
        Gaussian).  None: twice the proposal's dimension P, at least 8 (a t with
        few degrees of freedom spreads its radius far wider than the posterior's in
        many dimensions: at P = 60, 8 df kept 34% of the proposals' effective size,
        120 df 67%; at P = 10, 78% against 99%).
    khat_max : float
        ``auto`` falls back to NUTS when the proposals' Pareto k exceeds it.
    ess_target : int or None
        ``is`` draws proposals until their PSIS effective sample size reaches this;
        None: :data:`bayes_ips.diagnostics.IS_ESS_MIN` (100, ``diagnose``'s bound:
        the Monte Carlo error of a posterior mean is then at most 0.1 posterior sd).
    max_proposals : int
        ``is`` stops there; ``auto`` then falls back to NUTS if the target is not met.
    max_refits : int
        ``is``: how many times the proposal may be refitted to the weighted draws
        where its Pareto k exceeds ``khat_max`` (:func:`importance_sample`); 0
        keeps the Laplace proposal alone.
    """

    rank: int = 1
    method: str = "auto"
    collapsed: bool = True
    chains: int = 4
    warmup: int | None = None
    draws: int | None = None
    init: str = "erm"
    jitter: float = 0.1
    target_accept: float = 0.85
    max_tree_depth: int = 8
    n_intervals: int | None = None
    basis: str = "evidence"
    degree: int = 3
    proposal_df: float | None = None
    khat_max: float = 0.7
    ess_target: int | None = None
    max_proposals: int = 8000
    max_refits: int = IS_ADAPT_MAX

    def validate(self, d: int) -> SamplerConfig:
        check_rank(self.rank, d)
        if self.init not in INITS:
            raise InputError(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.basis not in BASES:
            raise InputError(f"unknown basis {self.basis!r}; choose from {', '.join(BASES)}")
        if self.method in ("is", "imh") and (not self.collapsed or self.init != "erm"):
            raise InputError(f"method {self.method!r} needs the collapsed model and the ERM start")
        if self.ess_target is not None and not (int(self.ess_target) == self.ess_target >= 10):
            raise InputError(f"ess_target must be an integer >= 10, got {self.ess_target}")
        if not int(self.max_proposals) == self.max_proposals >= IS_ROUND:
            raise InputError(f"max_proposals must be an integer >= {IS_ROUND}")
        if not int(self.max_refits) == self.max_refits >= 0:
            raise InputError(f"max_refits must be an integer >= 0, got {self.max_refits}")
        for name in ("chains", "warmup", "draws"):
            v = getattr(self, name)
            if v is None and name != "chains":
                continue
            if int(v) != v or v < (1 if name != "warmup" else 0):
                raise InputError(f"{name} must be a positive integer, got {v}")
        if self.draws is not None and self.draws < 4:
            raise InputError("draws must be >= 4 for diagnostics")
        if not 0 < self.target_accept < 1:
            raise InputError(f"target_accept must be in (0, 1), got {self.target_accept}")
        if not self.jitter >= 0:
            raise InputError(f"jitter must be >= 0, got {self.jitter}")
        if self.proposal_df is not None and not self.proposal_df > 2:
            raise InputError(f"proposal_df must be > 2, got {self.proposal_df}")
        if not self.khat_max > 0:
            raise InputError(f"khat_max must be > 0, got {self.khat_max}")
        if self.max_tree_depth < 1 or (self.n_intervals is not None and self.n_intervals < 1):
            raise InputError("max_tree_depth and n_intervals (if given) must be >= 1")
        return self

    def sampler(self) -> str:
        """The sampler that runs first: ``is``, ``imh`` or ``nuts``."""
        if self.method == "auto":
            return "is" if self.collapsed and self.init == "erm" else "nuts"
        return self.method

    def warmup_for(self, sampler: str) -> int:
        """Warmup (NUTS) or burn-in (IMH) iterations per chain."""
        return DEFAULT_WARMUP[sampler] if self.warmup is None else int(self.warmup)

    def draws_for(self, sampler: str) -> int:
        """Kept draws per chain."""
        return DEFAULT_DRAWS[sampler] if self.draws is None else int(self.draws)

    def proposal_df_for(self, P: int) -> float:
        """The proposal's degrees of freedom in ``P`` dimensions."""
        if self.proposal_df is None:
            return float(max(8, 2 * P))
        return float(self.proposal_df)

    def is_ess_target(self) -> int:
        """The effective sample size ``is`` draws proposals for."""
        if self.ess_target is None:
            return IS_ESS_MIN
        return int(self.ess_target)


# NUTS adapts its step size and mass matrix over its warmup; the independence
# sampler needs no adaptation, only a burn-in from its first proposal.  Its draws
# are cheaper (one pass over the data each) but repeat rejected states, and its
# tail ESS is the binding one: 4 chains of 250 gave tail ESS 160-360 (< 100 per
# chain, flagged by diagnose in 10 of 10 healthy runs at M = 400, d = 3), hence 600.
# Importance sampling resamples its weighted proposals into chains of 250 draws:
# the number of proposals is set by the effective-size target, not by the draws.
DEFAULT_WARMUP = {"nuts": 500, "imh": 50, "is": 0}
DEFAULT_DRAWS = {"nuts": 500, "imh": 600, "is": 250}
# Proposals per round of ``is`` (one compiled program per data shape).  The run
# stops at the first whole round whose effective size reaches the target, so
# the round sets how far past it a run goes: at the usual efficiency of 0.81-0.88
# (PSIS effective size over proposals) an effective size of 100 needs 114-124
# proposals, which rounds of 50 took to 150 and rounds of 25 take to 125.
IS_ROUND = 25


@dataclasses.dataclass
class PosteriorRun:
    """What a posterior run produced (raw draws; see :mod:`bayes_ips.posterior`).

    ``extra`` holds per-draw sample statistics: NumPyro's (``diverging``,
    ``num_steps``, ...) for NUTS; ``accepted``, ``potential_energy`` and
    ``log_weight`` for the independence sampler.  ``posterior`` is already
    Rao-Blackwellised for ``imh`` (every proposal's conditional of c comes with
    its log density); None for NUTS (see :func:`bayes_ips.posterior.posterior_from_run`).
    ``info`` records the Laplace step, the Pareto k, the acceptance rate, the
    timings and, for ``auto``, whether and why it fell back to NUTS.
    """

    samples: dict[str, np.ndarray]  # (chains, draws, ...)
    extra: dict[str, np.ndarray]  # sample stats, (chains, draws)
    knots: Knots
    penalty: np.ndarray
    y_scale: float
    config: SamplerConfig
    erm: ERMFit
    seed: int
    wall_time_s: float
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    method: str = "nuts"
    posterior: Any = None


NUTSRun = PosteriorRun  # the name of earlier versions


def erm_setup(X, Y, fit: ERMFit, n_intervals: int | None, degree: int) -> dict:
    """The model's data keywords (:func:`~bayes_ips.models.lowrank_spline.model_setup`)
    from an ERM fit: its training scores (first 4000 samples) and its GCV K by default."""
    S = off_diagonal_scores(X, fit.U, fit.V, max_samples=4000)
    return model_setup(Y, S, n_intervals or fit.info["K"], degree)


def evidence_setup(X, Y, fit: ERMFit, degree: int) -> tuple[dict, dict]:
    """The model's data keywords with the basis chosen by its marginal likelihood.

    :func:`bayes_ips.kselect.posterior_basis` at the ERM fit's factors and noise
    estimate; returns the keywords of :func:`erm_setup` and the choice (``K``,
    ``uniform_weight``, its table and its time) for the run's ``info``.
    """
    import time

    from bayes_ips.collapsed import difference_penalty
    from bayes_ips.kselect import posterior_basis
    from bayes_ips.pairwise import DEFAULT_CHUNK

    t0 = time.perf_counter()
    # at d = 1 the gauge leaves A = +-1: A is ERM's on every fold, nothing to refit
    check = None if np.shape(X)[-1] == 1 else partial(refit_order_cv, X, Y, fit)
    knots, table = posterior_basis(
        X, Y, fit.U, fit.V, degree, float(fit.info["sigma_hat"]), DEFAULT_CHUNK, order_check=check
    )
    scale = float(np.std(off_diagonal_scores(X, fit.U, fit.V, max_samples=4000)))
    chosen = next(t for t in table if t["chosen"])
    order = int(chosen.get("order", 2))
    setup = {
        "knots": knots,
        "penalty": difference_penalty(knots, scale, order),
        "y_scale": float(np.sqrt(np.mean(np.asarray(Y) ** 2))),
    }
    info = {
        "rule": "evidence",
        "K": chosen["K"],
        "uniform_weight": chosen["uniform_weight"],
        "penalty_order": order,
        "erm_K": int(fit.info["K"]),
        "penalty_scale": scale,
        "table": table,
        "time_s": time.perf_counter() - t0,
    }
    if "order_cv" in chosen:  # the cross-validated comparison of the two orders
        info["order_cv"] = chosen["order_cv"]
    return setup, info


def refit_order_cv(
    X, Y, fit: ERMFit, cands: list, scale: float, y_scale: float, *,
    start_at: str = "erm", chunk: int | None = None,
) -> dict | None:  # fmt: skip
    """Cross-validate two priors of phi with ``A`` refitted on every fold's complement.

    How :func:`evidence_setup` confirms (at d >= 2) a win of first differences over
    the curvature prior in :func:`bayes_ips.kselect.order_cv`, which compares them
    at ERM's ``A``.  For each candidate ``(knots, row)`` (the row's ``order``; the
    penalty in units of ``scale``) and each of
    :data:`~bayes_ips.kselect.ORDER_CV_FOLDS` contiguous folds of sequences, the
    collapsed model's posterior mode of ``(A, sigma, tau)`` on the other folds (with
    the basis choice's HalfNormal on ``tau``, :data:`~bayes_ips.kselect.SELECTION_TAU_LAW`) is
    searched as the sampler's Laplace step searches the full data's: from ERM's
    factors, by BFGS whitened by the Hessian there (:func:`bayes_ips.laplace.search_mode`;
    all the data's Hessian, computed once per prior: on a d = 5, M = 1000 cell that
    took the check from 31 to 21 s warm, with the same verdict); the posterior mean
    of ``c`` at that mode predicts the fold.

    At a fixed ``A`` the comparison cannot see what the prior does to ``A``: a
    rougher phi absorbs misfit the factors would otherwise correct, and the
    factors' posterior goes flat.  At d = 30, beta = 1.5, M = 250 first differences
    won at ERM's ``A`` by 3.1-3.8 s.e. in 3 of 4 repetitions and made the posterior
    mean 28-40% worse; with ``A`` refitted per fold the curvature prior wins in all 4
    (by 1.7-7.6 s.e.), while on the rough phi* (beta = 0.5, d = 5 and 30) first
    differences still win (analyses/RESULTS.md, session 21;
    ``analyses/order_refit.py``).  ``start_at="mode"`` starts each fold's search at
    the full data's mode, whitened by its Hessian: cheaper, but there a flat
    posterior of the factors under first differences hides (it kept them ahead at
    d = 30, beta = 1.5 in 1 of 4 repetitions).

    Returns :func:`~bayes_ips.kselect.order_cv`'s dict with ``refit: start_at``,
    the folds' BFGS steps in all and the time taken, or None when a Laplace step
    fails (the caller then keeps the fixed-``A`` comparison).
    """
    import time

    from bayes_ips.collapsed import difference_penalty
    from bayes_ips.gauge import gauge_factors
    from bayes_ips.kselect import (
        ORDER_CV_FOLDS,
        SELECTION_TAU_LAW,
        _prior_precision,
        cv_fold_size,
        cv_summary,
        held_out_sse,
        null_space_ridge,
    )
    from bayes_ips.laplace import (
        chart_point,
        chart_to_flat,
        flatten,
        potential_hessian,
        search_mode,
        unravel,
    )
    from bayes_ips.pairwise import DEFAULT_CHUNK, gram

    if start_at not in ("erm", "mode"):
        raise ValueError(f"start_at must be 'erm' or 'mode', got {start_at!r}")
    t0 = time.perf_counter()
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    X, Y = np.asarray(X), np.asarray(Y)
    XY = (jnp.asarray(X), jnp.asarray(Y))  # all the data, on the device once
    F, size = ORDER_CV_FOLDS, cv_fold_size(X.shape[0])
    ridge = null_space_ridge(y_scale)
    model = bound_model(fit.U.shape[1], True, tau_law=SELECTION_TAU_LAW)
    start = {k: v[0] for k, v in _erm_init(jax.random.PRNGKey(0), fit, y_scale, 1, 0.0).items()}
    sites = ("U", "V", "sigma", "tau")
    sse, n_f, steps = np.zeros((2, F)), np.zeros(F), 0
    for j, (knots, row) in enumerate(cands):
        D = difference_penalty(knots, scale, row["order"])
        data = dict(knots=knots, penalty=jnp.asarray(D), y_scale=jnp.asarray(y_scale))
        try:
            if start_at == "mode":
                approx, layout, chart, _ = laplace_at(model, XY, data, start)
                flat0, hessian = approx.mean, np.linalg.inv(np.asarray(approx.cov))
            else:  # laplace_at's start and chart, whitened by all the data's Hessian there
                chart = _search_chart(start)
                flat0, layout = flatten(start, sites)
                if chart is not None:
                    flat0 = chart_point(np.asarray(flat0), chart)
                hessian = potential_hessian(flat0, model, XY, data, layout, chart=chart)
            for f in range(F):
                test = np.zeros(X.shape[0], dtype=bool)
                test[f * size : (f + 1) * size] = True
                X_t, Y_t = jnp.asarray(X[~test]), jnp.asarray(Y[~test])
                z, n, _ = search_mode(flat0, hessian, model, (X_t, Y_t), data, layout, chart=chart)
                steps += n
                z = jnp.asarray(z)
                m = unravel(z if chart is None else chart_to_flat(z, chart), layout)
                Un, Vn = gauge_factors(m["U"], m["V"])
                st, fold = (
                    gram(Un, Vn, a, b, knots, chunk) for a, b in ((X_t, Y_t), (X[test], Y[test]))
                )
                Q = _prior_precision(D.T @ D, float(np.exp(m["tau"])), ridge)
                sse[j, f] = held_out_sse(
                    st.FtF, st.FtY, fold.FtF, fold.FtY, fold.YtY, Q, float(np.exp(m["sigma"]))
                )
                n_f[f] = float(fold.n_obs)
        except (FloatingPointError, np.linalg.LinAlgError):
            return None
    if not np.all(np.isfinite(sse)):
        return None
    return {
        **cv_summary(sse, n_f), "refit": start_at, "bfgs_steps": int(steps),
        "time_s": time.perf_counter() - t0,
    }  # fmt: skip


def model_knots(X: np.ndarray, fit: ERMFit, n_intervals: int | None, degree: int) -> Knots:
    """Knots at quantiles of the ERM fit's training scores (K from ERM's GCV by default)."""
    return erm_setup(X, np.zeros(1), fit, n_intervals, degree)["knots"]


def model_penalty(X: np.ndarray, fit: ERMFit, knots: Knots) -> np.ndarray:
    """The curvature penalty of the model's basis, in units of the score sd."""
    from bayes_ips.collapsed import curvature_penalty

    S = off_diagonal_scores(X, fit.U, fit.V, max_samples=4000)
    return curvature_penalty(knots, float(S.std()))


def laplace_inverse_mass(X, Y, model_kwargs: dict, point: dict) -> np.ndarray | None:
    """Initial dense inverse mass matrix: the inverse Hessian of the potential at ``point``.

    ``point`` holds unconstrained values of ``U, V, sigma, tau`` (and ``c``) at the
    ERM start.  Without it NUTS spends its first adaptation window with tiny steps
    and 30-100 leapfrog steps per iteration (the angular directions of the
    factors are ~100 times narrower than the others).  Eigenvalues of the Hessian
    are floored at 1e-6 of the largest (the radial gauge directions are flat up
    to the gauge factor); None if the Hessian is not finite.  See
    :func:`bayes_ips.nuts.laplace_inverse_mass`: the data and the basis are arguments
    of one compiled Hessian program, so datasets of equal shapes share it.
    """
    sites = [k for k in ("U", "V", "sigma", "tau", "c") if k in point]
    static, data = _split_kwargs(model_kwargs)
    return nuts.laplace_inverse_mass(bound_model(**static), (X, Y), data, point, sites)


_STATIC_KWARGS = ("rank", "collapsed", "chunk_size")


def _split_kwargs(model_kwargs: dict) -> tuple[dict, dict]:
    """Model keywords that fix shapes or branches (static) and those that are data."""
    static = {k: v for k, v in model_kwargs.items() if k in _STATIC_KWARGS}
    data = {k: v for k, v in model_kwargs.items() if k not in _STATIC_KWARGS}
    return static, data


@functools.cache
def bound_model(
    rank: int,
    collapsed: bool = True,
    chunk_size: int | None = None,
    tau_law: str = DEFAULT_TAU_LAW,
):
    """The model with its shape- and branch-fixing options bound, one object per options.

    Compiled programs (the sampler, the Hessian, the mode search, the proposal
    evaluation) take the model as a static argument, keyed by identity: a fresh
    ``functools.partial`` per call would compile them again for every dataset.
    """
    return partial(
        lowrank_spline, rank=rank, collapsed=collapsed, chunk_size=chunk_size, tau_law=tau_law
    )


def _erm_init(key, fit: ERMFit, y_scale: float, chains: int, jitter: float) -> dict:
    """Unconstrained initial values per chain: ERM factors with relative jitter."""
    ku, kv = jax.random.split(key)
    d, r = fit.U.shape
    R = math.sqrt(d * r)  # the radius the model's gauge factor prefers
    U0 = jnp.asarray(fit.U) * R / np.linalg.norm(fit.U)
    V0 = jnp.asarray(fit.V) * R / np.linalg.norm(fit.V)
    U = U0[None] * (1 + jitter * jax.random.normal(ku, (chains, d, r)))
    V = V0[None] * (1 + jitter * jax.random.normal(kv, (chains, d, r)))
    sigma = max(fit.info["sigma_hat"], 1e-3 * y_scale)
    return {
        "U": U,
        "V": V,
        "sigma": jnp.full((chains,), math.log(sigma)),  # unconstrained: log
        "tau": jnp.full((chains,), math.log(0.1 * y_scale)),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class FixedPrior:
    """The data-independent pieces of the model's prior, fixed before seeing the data.

    By default (``prior=None``) :func:`fit_posterior` derives the knots and the
    penalty's units from an ERM fit and ``y_scale`` from ``RMS(Y)``; with a
    ``FixedPrior`` these are taken as given (the ERM fit still starts the samplers
    but is no part of the prior).

    Attributes
    ----------
    knots : Knots
        The basis of phi; it must cover every score ``x^T A y`` the data can produce.
    penalty_scale : float
        The units of the penalty (:func:`bayes_ips.collapsed.difference_penalty`).
    y_scale : float
        The scale of the priors of sigma, tau and c (:mod:`bayes_ips.models.lowrank_spline`).
    penalty_order : int
        The penalty's difference order: 2 (curvature, the default) or 1.
    """

    knots: Knots
    penalty_scale: float
    y_scale: float = 1.0
    penalty_order: int = 2

    def penalty(self) -> np.ndarray:
        from bayes_ips.collapsed import difference_penalty

        return difference_penalty(self.knots, float(self.penalty_scale), self.penalty_order)


@dataclasses.dataclass
class _Setup:
    """The data-dependent pieces of the model, fixed before sampling (see :func:`model_setup`)."""

    X: jax.Array
    Y: jax.Array
    erm: ERMFit
    knots: Knots
    penalty: np.ndarray
    y_scale: float
    model: Any
    data_kwargs: dict
    basis: dict | None = None  # the evidence table of the basis choice, if one was made


def _setup(
    key, X, Y, config: SamplerConfig, erm: ERMFit | None, prior: FixedPrior | None = None
) -> _Setup:
    X, Y = check_xy(X, Y)
    d = X.shape[2]
    config.validate(d)
    if erm is None:
        erm = fit_erm(key, X, Y, ERMConfig(rank=config.rank))
    if erm.U.shape != (d, config.rank):
        raise InputError(f"the ERM fit has rank {erm.U.shape[1]}, the sampler rank {config.rank}")
    basis_info = None
    if prior is None and config.n_intervals is None and config.basis == "evidence":
        setup, basis_info = evidence_setup(X, Y, erm, config.degree)
        knots, y_scale, penalty = setup["knots"], setup["y_scale"], setup["penalty"]
    elif prior is None:
        setup = erm_setup(X, Y, erm, config.n_intervals, config.degree)
        knots, y_scale, penalty = setup["knots"], setup["y_scale"], setup["penalty"]
    else:  # given in advance (config.n_intervals and config.degree are not used)
        knots, y_scale, penalty = prior.knots, float(prior.y_scale), prior.penalty()
    # Shapes and branches are bound into the model; the data, the knots, the
    # penalty and the scale are arguments of the compiled programs
    # (``jit_model_args``), so every dataset of the same shapes reuses them.
    data_kwargs = dict(knots=knots, penalty=jnp.asarray(penalty), y_scale=jnp.asarray(y_scale))
    model = bound_model(config.rank, config.collapsed)
    return _Setup(
        jnp.asarray(X), jnp.asarray(Y), erm, knots, penalty, y_scale, model, data_kwargs, basis_info
    )


def run_nuts(
    key: jax.Array,
    X,
    Y,
    config: SamplerConfig = SamplerConfig(),
    *,
    erm: ERMFit | None = None,
    seed: int | None = None,
    progress: bool = True,
    start: tuple[dict, np.ndarray] | None = None,
    prior: FixedPrior | None = None,
) -> PosteriorRun:
    """Run NUTS on the low-rank spline model.

    Parameters
    ----------
    key : PRNG key
    X : (M, N, d) array
    Y : (M, N) array
    config : SamplerConfig
    erm : ERMFit, optional
        A fit on the same data (fitted here when not given: it sets the knots and
        the ``erm`` initialisation).
    progress : bool
        NumPyro progress bars (chains run sequentially).
    start : (point, inverse_mass), optional
        Unconstrained start (no chain axis) and dense inverse mass matrix, e.g. the
        Laplace approximation of :func:`run_imh`; chains start there with the
        config's relative jitter.  Default: the ERM start (``init="erm"``) or the prior.
    prior : FixedPrior, optional
        Knots, penalty scale and ``y_scale`` given in advance instead of derived
        from the ERM fit and the data.
    """
    import time

    k_erm, k_init, k_run = jax.random.split(key, 3)
    t0 = time.perf_counter()
    st = _setup(k_erm, X, Y, config, erm, prior)
    init = None
    inv_mass = None
    model_kwargs = dict(rank=config.rank, collapsed=config.collapsed, **st.data_kwargs)
    if start is not None:
        point, inv_mass = start
        init = _jitter(k_init, point, config.chains, config.jitter)
    elif config.init == "erm":
        init = _erm_init(k_init, st.erm, st.y_scale, config.chains, config.jitter)
        if not config.collapsed:
            init["c"] = _erm_coef_on(st.knots, st.erm, config.chains)
        inv_mass = laplace_inverse_mass(
            st.X, st.Y, model_kwargs, {k: v[0] for k, v in init.items()}
        )
    sites = ("U", "V", "sigma", "tau") + (() if config.collapsed else ("c",))
    chains = nuts.run_chains(
        k_run,
        st.model,
        (st.X, st.Y),
        st.data_kwargs,
        chains=config.chains,
        warmup=config.warmup_for("nuts"),
        draws=config.draws_for("nuts"),
        init_params=init,
        inverse_mass=inv_mass,
        dense_sites=sites,
        target_accept=config.target_accept,
        max_tree_depth=config.max_tree_depth,
        progress=progress,
    )
    return PosteriorRun(
        chains.samples,
        chains.extra,
        st.knots,
        st.penalty,
        st.y_scale,
        config,
        st.erm,
        -1 if seed is None else int(seed),
        time.perf_counter() - t0,
        info={"sampler": "nuts", "sampling_time_s": chains.wall_time_s, **_basis_info(st)},
        method="nuts",
    )


def _basis_info(st: _Setup) -> dict:
    """``{"basis": ...}``: how the model's basis was chosen, when it was (else empty)."""
    return {} if st.basis is None else {"basis": st.basis}


def _jitter(key, point: dict, chains: int, jitter: float) -> dict:
    """``chains`` copies of an unconstrained point, the factors with relative jitter."""
    out = {}
    for i, (k, v) in enumerate(sorted(point.items())):
        v = jnp.asarray(v)[None]
        if k in ("U", "V"):
            z = jax.random.normal(jax.random.fold_in(key, i), (chains,) + v.shape[1:])
            out[k] = v * (1 + jitter * z)
        else:
            out[k] = jnp.broadcast_to(v, (chains,) + v.shape[1:])
    return out


# Proposals whose Gram statistics are computed together (vmapped).  One at a time:
# on a quiet machine 1 and 4 cost the same (16 was 35% slower), but with the
# cores shared (a study's worker pool, or any other load) a vmapped block of 4
# took 20.5 ms per proposal against 10.5 ms one at a time (d = 5, M = 2000, K = 80;
# 7 interleaved repetitions, analyses/benchmarks/RESULTS.md).
IMH_BATCH = 1


def _laplace_step(key, X, Y, config: SamplerConfig, erm, prior):
    """Setup, then the posterior mode from the ERM start and the Hessian there.

    At rank 1 and d >= 2 the search runs in the gnomonic charts of the factors'
    directions (:class:`~bayes_ips.laplace.SphereChart`, centred at the ERM
    directions), where the posterior is near-Gaussian at any d; otherwise in the
    model's ``(U, V, log sigma, log tau)`` (:func:`laplace_at`); at rank r >= 2 the
    approximation is then restricted to the slice through the mode transverse to the
    factors' rotations (:class:`~bayes_ips.laplace.RotationSlice`), along which the
    posterior is flat.  Returns the setup, the Laplace approximation (in the
    proposals' coordinates), the layout of the model's flattened sites, the chart
    (a SphereChart, a RotationSlice, or None) and the first entries of the
    run's ``info`` (with the mode and an inverse mass in the model's coordinates,
    for a NUTS fallback).
    """
    import time

    t0 = time.perf_counter()
    st = _setup(key, X, Y, config, erm, prior)
    start = {k: v[0] for k, v in _erm_init(key, st.erm, st.y_scale, 1, 0.0).items()}
    approx, layout, chart, info = laplace_at(st.model, (st.X, st.Y), st.data_kwargs, start)
    if chart is None and np.shape(start["U"])[1] >= 2:  # the proposals' own coordinates
        from bayes_ips.laplace import rotation_slice

        approx, chart = rotation_slice(approx, layout)
        info["rotation_slice"] = True
    info.update(mode_time_s=time.perf_counter() - t0, **_basis_info(st))
    return st, approx, layout, chart, info


def _search_chart(start: dict):
    """The gnomonic charts the mode search runs in from ``start``: at rank 1 and d >= 2
    (:func:`bayes_ips.laplace.sphere_chart`), else None."""
    from bayes_ips.laplace import sphere_chart

    d, r = np.shape(start["U"])[-2:]
    return sphere_chart(start["U"], start["V"]) if r == 1 and d >= 2 else None


def laplace_at(model, model_args: tuple, data_kwargs: dict, start: dict):
    """The Laplace approximation of a collapsed low-rank model from an unconstrained ``start``.

    ``start`` holds ``U`` and ``V`` (``(d, r)``, or ``(H, d, r)`` for the multi-head
    model), ``sigma`` and ``tau`` (logs).  At rank 1 and d >= 2 the mode search runs in
    the gnomonic charts of every factor's direction (each head's factors carry the
    single-head radius prior, so each has its own sphere: :func:`bayes_ips.laplace.sphere_chart`),
    centred at ``start``'s directions.  Shared by the single-head (:func:`run_is`) and
    the multi-head (:func:`bayes_ips.multihead_posterior.sample_heads_posterior`) samplers.

    Returns
    -------
    approx : LaplaceApprox, in the search's coordinates.
    layout : the layout of the model's flattened ``U, V, sigma, tau``.
    chart : SphereChart or None.
    info : dict with ``bfgs_steps``, ``mode_ok``, ``chart`` and, in the model's
        coordinates, the ``mode`` (dict of sites) and an ``inverse_mass`` (for NUTS).

    Raises ``FloatingPointError`` when the Hessian at the mode is unusable.
    """
    from bayes_ips.laplace import (
        chart_covariance,
        laplace_approx,
        mode_and_hessian,
        unravel,
    )
    from bayes_ips.models.lowrank_spline import RADIUS_SD

    chart = _search_chart(start)
    mode, H, n_steps, ok, layout = mode_and_hessian(
        model, model_args, data_kwargs, start, ("U", "V", "sigma", "tau"), chart=chart
    )
    try:
        approx = laplace_approx(mode, H)
    except (FloatingPointError, np.linalg.LinAlgError) as e:
        raise FloatingPointError(f"Laplace step failed: {e}") from None
    if chart is None:
        flat_mode, inv_mass = jnp.asarray(mode), approx.cov
    else:  # the chart's covariance mapped to (U, V), plus the radii's prior spread
        flat_mode, inv_mass = chart_covariance(mode, approx.cov, chart, RADIUS_SD)
    info: dict[str, Any] = {
        "bfgs_steps": n_steps,
        "mode_ok": ok,
        "chart": chart is not None,
        "mode": unravel(np.asarray(flat_mode), layout),
        "inverse_mass": inv_mass,
    }
    return approx, layout, chart, info


# The defensive part of the proposals (Hesterberg 1995): a share of each round is
# drawn with the spread along log tau widened.  The Laplace step sees the curvature
# of log tau at the mode, but where the data are consistent with the penalty's null
# space (phi linear, often so at small M) the posterior of log tau has the prior's
# exponential tail towards tau -> 0 (a density flat at 0: ~ tau, i.e. e^{log tau}),
# much heavier than the Laplace fit: its weights then blow up there (Pareto k 0.83 on
# a d = 1, M = 150 cell of `make demo`).  The mixture's density bounds them; on a
# well-fitted posterior it costs ~8% of the effective size per proposal (0.93 -> 0.85
# on paper cells at d = 5; analyses/RESULTS.md, "The Laplace proposal's log tau tail").
DEFENSIVE_SHARE = 0.2
DEFENSIVE_WIDEN = 3.0


def _draw_proposals(key, approx, df: float, n: int, chart, n_tau: int = 0):
    """``n`` Student-t proposals as model points, and their log density.

    With ``n_tau`` (the number of ``log tau`` coordinates, the last ones) a share
    :data:`DEFENSIVE_SHARE` of them come from the Student-t with the spread along
    ``log tau`` widened by :data:`DEFENSIVE_WIDEN`, and the density is the mixture's
    (deterministic-mixture weights: fixed counts from each part, scored by both).
    The density is relative to the measure the model's potential is a density of:
    Lebesgue in ``(U, V, log sigma, log tau)``, or, with a chart, the spheres'
    surface measure for the directions (the chart's density over its Jacobian), or,
    on a rotation slice, the slice's Lebesgue measure weighted by the Faddeev-Popov
    factor (the density over it).
    """
    z = _draw_z(key, approx, df, n, n_tau)
    flat, log_j = _to_model(z, chart)
    return flat, np.asarray(_proposal_logpdf(z, approx, df, n_tau, n) - log_j)


def _n_wide(n: int, n_tau: int) -> int:
    """How many of ``n`` proposals come from the defensive (``log tau``-widened) part."""
    return int(round(DEFENSIVE_SHARE * n)) if n_tau else 0


def _draw_z(key, approx, df: float, n: int, n_tau: int = 0) -> jax.Array:
    """``n`` draws in the proposals' coordinates: the Student-t, and a share
    (:func:`_n_wide`) from it widened along ``log tau`` (see :func:`_draw_proposals`)."""
    from bayes_ips.laplace import mvt_sample, widened

    n_wide = _n_wide(n, n_tau)
    k_main, k_wide = jax.random.split(key)
    z = mvt_sample(k_main, approx, df, n - n_wide)
    if n_wide:
        P = approx.mean.shape[0]
        wide = widened(approx, np.arange(P - n_tau, P), DEFENSIVE_WIDEN)
        z = jnp.concatenate([z, mvt_sample(k_wide, wide, df, n_wide)])
    return z


def _proposal_logpdf(z, approx, df: float, n_tau: int, n: int) -> jax.Array:
    """Log density, in the proposals' coordinates, of :func:`_draw_z`'s law (``n`` draws
    fix the defensive share) at the rows of ``z``."""
    from bayes_ips.laplace import mvt_logpdf, widened

    n_wide = _n_wide(n, n_tau)
    if not n_wide:
        return mvt_logpdf(z, approx, df)
    P = approx.mean.shape[0]
    wide = widened(approx, np.arange(P - n_tau, P), DEFENSIVE_WIDEN)
    share = n_wide / n
    return jnp.logaddexp(
        np.log1p(-share) + mvt_logpdf(z, approx, df), np.log(share) + mvt_logpdf(z, wide, df)
    )


def _to_model(z, chart) -> tuple[jax.Array, jax.Array]:
    """Proposals' coordinates to the model's flat sites, and the log density factor
    of the change of measure (0; a chart's log Jacobian; a slice's Faddeev-Popov
    factor): a density in ``z`` minus it is a density for the model's potential."""
    from bayes_ips.laplace import RotationSlice, charts_to_flat, slices_to_flat

    if chart is None:
        return z, jnp.zeros(z.shape[0])
    if isinstance(chart, RotationSlice):  # the orbits' law: the Faddeev-Popov factor
        return slices_to_flat(z, chart)
    return charts_to_flat(z, chart)


def _n_tau(layout: tuple) -> int:
    """The number of ``log tau`` coordinates in a flattened layout (they come last)."""
    name, shape = layout[-1]
    if name != "tau":
        raise ValueError(f"expected the log tau sites last in the layout, got {name!r}")
    return int(np.prod(shape))


def _proposal_run(
    method, st, layout, config, seed, t0, info, idx, flat, A, pe, cm, cd, log_w, **stats
):
    """The :class:`PosteriorRun` of a Laplace-proposal sampler whose draws are the
    proposals at flat indices ``idx`` (C, D); ``stats`` are further per-draw statistics."""
    import time

    from bayes_ips.posterior import Posterior

    take = lambda a: np.asarray(a)[idx]  # noqa: E731
    samples = proposal_samples(flat, layout, A, idx)
    post = Posterior(samples["A"], samples["sigma"], samples["tau"], take(cm), take(cd), st.knots)
    extra = {**stats, "potential_energy": take(pe), "log_weight": take(log_w)}
    info["sampling_time_s"] = time.perf_counter() - t0 - info["mode_time_s"]
    seed = -1 if seed is None else int(seed)
    return PosteriorRun(
        samples,
        extra,
        st.knots,
        st.penalty,
        st.y_scale,
        config,
        st.erm,
        seed,
        time.perf_counter() - t0,
        info=info,
        method=method,
        posterior=post,
    )


def proposal_samples(flat, layout: tuple, A, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The sites ``U, V, sigma, tau`` (constrained) and ``A`` of the proposals at ``idx``.

    ``flat`` (S, P) are the proposals in the model's flattened unconstrained sites
    (``layout``), ``A`` their gauge-fixed ``A``; ``idx`` (C, D) picks the draws.
    """
    from bayes_ips.laplace import unravel

    params = unravel(np.asarray(flat), layout)
    take = lambda a: np.asarray(a)[idx]  # noqa: E731
    return {
        "U": take(params["U"]),
        "V": take(params["V"]),
        "sigma": np.exp(take(params["sigma"])),
        "tau": np.exp(take(params["tau"])),
        "A": take(A),
    }


def run_imh(
    key: jax.Array,
    X,
    Y,
    config: SamplerConfig = SamplerConfig(),
    *,
    erm: ERMFit | None = None,
    seed: int | None = None,
    progress: bool = True,
    prior: FixedPrior | None = None,
) -> PosteriorRun:
    """Laplace proposal and independence Metropolis-Hastings (see the module docstring).

    Parameters are those of :func:`run_nuts`.  The returned run carries its
    Rao-Blackwellised :class:`~bayes_ips.posterior.Posterior` and, in ``info``,
    ``khat`` (Pareto k of the proposals' importance weights), ``accept_rate``,
    ``is_ess`` (importance-sampling effective sample size), the mode search's
    ``bfgs_steps``/``mode_ok``, the Laplace ``mode`` and ``inverse_mass`` (for a
    NUTS fallback), and the timings.
    """
    import time

    from bayes_ips.diagnostics import pareto_khat
    from bayes_ips.laplace import imh_chains
    from bayes_ips.posterior import evaluate_proposals

    k_erm, k_prop, k_c, k_chain = jax.random.split(key, 4)
    t0 = time.perf_counter()
    st, approx, layout, chart, info = _laplace_step(k_erm, X, Y, config, erm, prior)
    info["sampler"] = "imh"
    C, W, D = config.chains, config.warmup_for("imh"), config.draws_for("imh")
    T = W + D
    df = config.proposal_df_for(approx.mean.shape[0])
    flat, log_q = _draw_proposals(k_prop, approx, df, C * T, chart, _n_tau(layout))
    keys = jax.random.split(k_c, C * T)
    if progress:
        print(f"imh: {C} chains x ({W} burn-in + {D} draws) = {C * T} proposals", flush=True)
    A, pe, cm, cd, _ = evaluate_proposals(
        flat,
        keys,
        st.X,
        st.Y,
        st.data_kwargs,
        model=st.model,
        layout=layout,
        batch=min(IMH_BATCH, C * T),
    )
    pe = np.asarray(pe)
    log_w = np.where(np.isfinite(pe), -pe - log_q, -np.inf)
    idx, acc = imh_chains(k_chain, jnp.asarray(log_w.reshape(C, T)))
    idx = np.asarray(idx)[:, W:] + np.arange(C)[:, None] * T  # (C, D) flat proposal index
    acc = np.asarray(acc)[:, W:]
    khat, is_ess = pareto_khat(log_w)
    info.update(
        khat=float(khat),
        is_ess=float(is_ess),
        accept_rate=float(acc.mean()),
        n_proposals=int(C * T),
        proposal_df=df,
    )
    return _proposal_run(
        "imh", st, layout, config, seed, t0, info, idx, flat, A, pe, cm, cd, log_w, accepted=acc
    )


def systematic_resample(key: jax.Array, weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn by systematic resampling of normalised ``weights``, in order.

    Each index ``i`` appears ``floor(n w_i)`` or ``ceil(n w_i)`` times, so the
    resampled mean is unbiased with less noise than multinomial resampling (Douc
    et al. 2005); copies of one index are adjacent.
    """
    u = (float(jax.random.uniform(key, dtype=jnp.float64)) + np.arange(n)) / n
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(weights) - 1)


def run_is(
    key: jax.Array,
    X,
    Y,
    config: SamplerConfig = SamplerConfig(),
    *,
    erm: ERMFit | None = None,
    seed: int | None = None,
    progress: bool = True,
    prior: FixedPrior | None = None,
) -> PosteriorRun:
    """Laplace proposal and Pareto-smoothed importance sampling (see the module docstring).

    Proposals are drawn and evaluated in rounds of :data:`IS_ROUND` until the PSIS
    effective sample size of all of them reaches ``config.is_ess_target()`` or
    ``config.max_proposals`` were drawn.  Proposal ``i`` belongs to group ``i mod
    chains``; each group's smoothed weights are resampled (systematically) to
    ``draws`` draws, its chain.  The returned run carries its Rao-Blackwellised
    :class:`~bayes_ips.posterior.Posterior` and, in ``info``, ``khat``,
    ``is_ess``, ``ess_target``, ``n_proposals``, ``unique_draws``, the mode
    search's ``bfgs_steps``/``mode_ok``, the Laplace ``mode`` and
    ``inverse_mass`` (for a NUTS fallback), and the timings.
    """
    import time

    from bayes_ips.posterior import evaluate_proposals

    k_erm, k_prop, k_c, k_res = jax.random.split(key, 4)
    t0 = time.perf_counter()
    st, approx, layout, chart, info = _laplace_step(k_erm, X, Y, config, erm, prior)
    info["sampler"] = "is"
    C, D = config.chains, config.draws_for("is")
    df = config.proposal_df_for(approx.mean.shape[0])

    def evaluate(flat, keys):
        return evaluate_proposals(
            flat, keys, st.X, st.Y, st.data_kwargs, model=st.model, layout=layout, batch=IMH_BATCH
        )

    res = importance_sample(
        k_prop, k_c, approx, df, chart, evaluate, config.is_ess_target(), config.max_proposals,
        config.khat_max, progress, n_tau=_n_tau(layout), max_refits=config.max_refits,
    )  # fmt: skip
    flat, A, pe, cm, cd, _ = res.proposals
    idx = resample_chains(k_res, res.log_smoothed, C, D)
    info.update(res.info(idx), proposal_df=df)
    return _proposal_run(
        "is", st, layout, config, seed, t0, info, idx, jnp.asarray(flat), A, pe, cm, cd,
        res.log_weights,
    )  # fmt: skip


@dataclasses.dataclass
class ImportanceSample:
    """Evaluated proposals of :func:`importance_sample` and their Pareto-smoothed weights.

    ``proposals`` is the tuple ``(flat, *evaluate's outputs)``, concatenated over the
    rounds; ``log_weights`` the raw ``log p - log q``, ``log_smoothed`` the PSIS ones
    (normalised); ``khat`` and ``ess`` their Pareto k and effective size;
    ``mixture`` the proposals drawn from and how many from each (``(approx,
    count)`` pairs: one, or more after refits).
    """

    proposals: tuple
    log_weights: np.ndarray
    log_smoothed: np.ndarray
    khat: float
    ess: float
    target: int
    mixture: tuple = ()

    def info(self, idx: np.ndarray) -> dict:
        """The run's ``info`` entries, for draws that are proposals ``idx``."""
        return dict(
            khat=float(self.khat),
            is_ess=float(self.ess),
            ess_target=int(self.target),
            n_proposals=int(self.log_weights.shape[0]),
            unique_draws=int(len(np.unique(idx))),
            is_refits=max(len(self.mixture) - 1, 0),
            **refit_distance(self.mixture),
            log_weights=self.log_weights,  # every proposal's (arrays stay out of file attributes)
            draw_index=idx,  # the proposal behind each draw, (C, D)
        )


def refit_distance(mixture) -> dict:
    """How far the refitted proposals of a mixture moved from the first (the Laplace fit).

    In the coordinates that whiten the first proposal's covariance: ``refit_shift``,
    the largest distance of a refit's mean from its mean, and ``refit_spread``, the
    largest standard deviation of a refit along any direction (1: no wider).  Empty
    without refits.
    """
    if len(mixture) < 2:
        return {}
    base = mixture[0][0]
    Li = np.linalg.inv(np.asarray(base.chol))
    shift = spread = 0.0
    for a, _ in mixture[1:]:
        shift = max(shift, float(np.linalg.norm(Li @ (np.asarray(a.mean) - base.mean))))
        lam = np.linalg.eigvalsh(Li @ np.asarray(a.cov) @ Li.T)
        spread = max(spread, float(np.sqrt(lam.max())))
    return {"refit_shift": shift, "refit_spread": spread}


def refit_proposal(approx, z: np.ndarray, log_smoothed: np.ndarray):
    """A proposal fitted to weighted draws: their weighted mean and covariance, never
    narrower than ``approx`` in any direction.

    ``z`` (S, P) are draws in the proposals' coordinates and ``log_smoothed`` their
    normalised log weights.  The covariance's eigenvalues in the coordinates that
    whiten ``approx.cov`` are floored at 1: a covariance estimated from few
    effective draws is rank-deficient or too narrow, and a proposal narrower than
    the curvature at the mode would only raise the weights' tail.
    """
    from bayes_ips.laplace import LaplaceApprox

    z = np.asarray(z, dtype=float)
    w = np.exp(np.asarray(log_smoothed, dtype=float))
    w /= w.sum()
    mean = w @ z
    dz = z - mean
    C = dz.T @ (dz * w[:, None])
    L = np.asarray(approx.chol)
    Li = np.linalg.solve(L, np.eye(L.shape[0]))
    lam, Q = np.linalg.eigh(Li @ C @ Li.T)
    B = L @ Q
    cov = (B * np.maximum(lam, 1.0)) @ B.T
    cov = 0.5 * (cov + cov.T)
    return LaplaceApprox(mean, cov, np.linalg.cholesky(cov))


def _mixture_log_weights(rounds, zs, comps, counts, df: float, n_tau: int) -> np.ndarray:
    """``log p - log q`` of every proposal drawn so far; with several proposals, ``q`` is
    their mixture in the counts drawn from each (deterministic-mixture weights)."""
    if len(comps) == 1:
        return np.concatenate([rd[-1] for rd in rounds])
    z, log_j, log_p = (np.concatenate(p) for p in zip(*zs, strict=True))
    n = sum(counts)
    log_q = np.logaddexp.reduce(
        [np.log(c / n) + np.asarray(_proposal_logpdf(z, a, df, n_tau, IS_ROUND))
         for a, c in zip(comps, counts, strict=True) if c > 0],
        axis=0,
    )  # fmt: skip
    return log_p - (log_q - log_j)


def importance_sample(
    k_prop, k_c, approx, df: float, chart, evaluate, target: int, max_proposals: int,
    khat_max: float, progress: bool, label: str = "is", n_tau: int = 0,
    max_refits: int = IS_ADAPT_MAX,
) -> ImportanceSample:  # fmt: skip
    """Student-t proposals around a Laplace approximation, in rounds, until PSIS is good enough.

    Proposals are drawn (:func:`_draw_proposals`) and evaluated in rounds of
    :data:`IS_ROUND` until the PSIS effective sample size of all of them reaches
    ``target`` with a Pareto k within the limit for their number
    (:func:`bayes_ips.diagnostics.khat_limit`: 0.5 for 100 proposals), or until
    ``max_proposals`` were drawn.  Where the Pareto k exceeds ``khat_max`` the
    proposal is refitted to the weighted draws (:func:`refit_proposal`) and the
    weights become those of the mixture of all proposals drawn (see
    :data:`IS_ADAPT_MAX`); each new proposal is judged after ``target`` draws of
    its own, and after ``max_refits`` refits a Pareto k above ``khat_max`` ends
    the run.  ``evaluate(flat, keys)`` returns a tuple whose second entry is
    the potential energy of each proposal (the first and the rest are kept:
    gauge-fixed ``A``, conditionals of ``c``, ...).  Shared by the single- and the
    multi-head samplers.
    """
    from bayes_ips.diagnostics import khat_limit, psis_weights

    rounds: list[tuple] = []
    zs: list[tuple] = []  # proposals' coordinates, log Jacobians, log densities
    comps, counts = [approx], [0]  # the proposals, and the draws of each
    khat, ess, lw_s = float("inf"), 0.0, None
    while len(rounds) * IS_ROUND < max_proposals:
        r = len(rounds)
        z = _draw_z(jax.random.fold_in(k_prop, r), comps[-1], df, IS_ROUND, n_tau)
        flat, log_j = _to_model(z, chart)
        log_q = np.asarray(_proposal_logpdf(z, comps[-1], df, n_tau, IS_ROUND) - log_j)
        keys = jax.random.split(jax.random.fold_in(k_c, r), IS_ROUND)
        out = tuple(np.asarray(a) for a in evaluate(flat, keys))
        pe = out[1]
        log_w = np.where(np.isfinite(pe), -pe - log_q, -np.inf)
        rounds.append((np.asarray(flat), *out, log_w))
        zs.append((np.asarray(z), np.asarray(log_j), -np.where(np.isfinite(pe), pe, np.inf)))
        counts[-1] += IS_ROUND
        n = len(rounds) * IS_ROUND
        if counts[-1] < target:  # the effective size cannot exceed the number of proposals
            continue
        log_w = _mixture_log_weights(rounds, zs, comps, counts, df, n_tau)
        lw_s, khat, ess = psis_weights(log_w)
        if progress:
            print(
                f"{label}: {n} proposals, Pareto k {khat:.2f}, effective size {ess:.0f} "
                f"(target {target})",
                flush=True,
            )
        if ess >= target and khat <= khat_limit(n, khat_max):
            break
        if not khat <= khat_max:
            if len(comps) > max_refits or not np.isfinite(ess) or ess <= 0:
                break
            z_all = np.concatenate([p[0] for p in zs])
            comps.append(refit_proposal(approx, z_all, lw_s))
            counts.append(0)
            if progress:
                print(f"{label}: Pareto k above {khat_max}: proposal refitted to the draws")
    *parts, _ = (np.concatenate(p) for p in zip(*rounds, strict=True))
    if lw_s is None or counts[-1] < target:  # not judged on all of them (max_proposals)
        log_w = _mixture_log_weights(rounds, zs, comps, counts, df, n_tau)
        lw_s, khat, ess = psis_weights(log_w)
    return ImportanceSample(
        tuple(parts), log_w, lw_s, float(khat), float(ess), int(target),
        tuple((a, c) for a, c in zip(comps, counts, strict=True) if c > 0),
    )  # fmt: skip


def resample_chains(key, log_smoothed: np.ndarray, chains: int, draws: int) -> np.ndarray:
    """Proposal ``i`` in group ``i mod chains``; each group resampled to ``draws``: (C, D) indices.

    Systematic resampling (:func:`systematic_resample`) of each group's normalised
    smoothed weights: the chains are independent importance samplers, so R-hat
    across them compares independent estimates.
    """
    n = log_smoothed.shape[0]
    w = np.exp(log_smoothed - log_smoothed.max())
    idx = np.empty((chains, draws), dtype=int)
    for c in range(chains):
        group = np.arange(c, n, chains)
        wg = w[group]
        idx[c] = group[systematic_resample(jax.random.fold_in(key, c), wg / wg.sum(), draws)]
    return idx


def fallback_reason(info: dict, khat_max: float) -> str | None:
    """Why ``auto`` should not trust an importance sample (None when it should).

    Pareto k above ``khat_max`` or above the limit for the number of proposals
    (:func:`bayes_ips.diagnostics.khat_limit`), or the effective size short of its
    target.
    """
    from bayes_ips.diagnostics import khat_limit

    if not info["khat"] <= khat_max:
        return f"Pareto k {info['khat']:.2f} > {khat_max}"
    n = info["n_proposals"]
    limit = khat_limit(n, khat_max)
    if not info["khat"] <= limit:
        return f"Pareto k {info['khat']:.2f} > {limit:.2f}, the limit for {n} proposals"
    if info["is_ess"] < info["ess_target"]:
        return (
            f"effective size {info['is_ess']:.0f} < {info['ess_target']} "
            f"after {info['n_proposals']} proposals"
        )
    return None


def fit_posterior(
    key: jax.Array,
    X,
    Y,
    config: SamplerConfig = SamplerConfig(),
    *,
    erm: ERMFit | None = None,
    seed: int | None = None,
    progress: bool = True,
    prior: FixedPrior | None = None,
):
    """Sample the posterior with the configured method and Rao-Blackwellise it.

    ``auto`` runs :func:`run_is` and falls back to :func:`run_nuts`, started at
    the Laplace mode with the Laplace inverse mass, when the proposals' Pareto k
    exceeds ``config.khat_max``, their effective size stays below its target or
    the Laplace step fails; the run's ``info["fallback"]`` says why (and it is
    printed when ``progress``), and ``info["first"]`` holds the first run's info.
    ``prior`` (optional) fixes the knots, the penalty's units and ``y_scale`` in
    advance (:class:`FixedPrior`); by default they come from the ERM fit and the data.

    Returns
    -------
    run : PosteriorRun
    post : bayes_ips.posterior.Posterior
    """
    k_run, k_rb = jax.random.split(key)
    return _fit_posterior(
        k_run, k_rb, X, Y, config, erm=erm, seed=seed, progress=progress, prior=prior
    )


def _fit_posterior(k_run, k_rb, X, Y, config, *, erm, seed, progress, prior=None):
    """:func:`fit_posterior` with the keys of the sampler and of the Rao-Blackwell step given."""
    from bayes_ips.posterior import posterior_from_run

    sampler = config.sampler()
    fallback = None
    if sampler in ("is", "imh"):
        runner = run_is if sampler == "is" else run_imh
        try:
            run = runner(k_run, X, Y, config, erm=erm, seed=seed, progress=progress, prior=prior)
        except FloatingPointError as e:
            if config.method != "auto":
                raise
            fallback, start, t_first, first = str(e), None, 0.0, {}
        else:
            if sampler == "is":
                fallback = fallback_reason(run.info, config.khat_max)
            elif not run.info["khat"] <= config.khat_max:
                fallback = f"Pareto k {run.info['khat']:.2f} > {config.khat_max}"
                fallback += f" (accept rate {run.info['accept_rate']:.2f})"
            if config.method != "auto" or fallback is None:
                return run, run.posterior
            start = (run.info["mode"], run.info["inverse_mass"])
            t_first, first = run.wall_time_s, run.info
            erm = run.erm
            if prior is None and "basis" in first:  # the same basis, not chosen again
                b0 = first["basis"]
                order = int(b0.get("penalty_order", 2))
                prior = FixedPrior(run.knots, b0["penalty_scale"], run.y_scale, order)
        if progress:
            print(f"auto: the Laplace proposal does not fit ({fallback}): running NUTS", flush=True)
        run = run_nuts(
            k_run, X, Y, config, erm=erm, seed=seed, progress=progress, start=start, prior=prior
        )
        run.wall_time_s += t_first
        run.info["fallback"] = fallback
        if "basis" in first:
            run.info["basis"] = first["basis"]
        run.info["first"] = {  # its diagnostics, without the arrays (mode, mass, weights)
            k: v
            for k, v in first.items()
            if k not in ("mode", "inverse_mass") and not isinstance(v, np.ndarray | dict)
        }
    else:
        run = run_nuts(k_run, X, Y, config, erm=erm, seed=seed, progress=progress, prior=prior)
    return run, posterior_from_run(k_rb, run, X, Y)


def _json_info(info: dict) -> dict:
    """The run's info without its arrays (the Laplace mode and mass), for file attributes."""
    return {
        k: v
        for k, v in info.items()
        if not isinstance(v, np.ndarray | dict) or k in ("first", "basis")
    }


def _erm_coef_on(knots: Knots, erm: ERMFit, chains: int) -> jax.Array:
    """ERM's phi projected on the model basis (least squares on a fine grid), per chain."""
    from bayes_ips.spline import design_matrix

    u = jnp.linspace(knots.breaks[0], knots.breaks[-1], 400)
    B = design_matrix(u, knots)
    c, *_ = jnp.linalg.lstsq(B, erm.phi(u))
    return jnp.broadcast_to(c, (chains,) + c.shape)


def sample_posterior(
    key: jax.Array,
    X,
    Y,
    config: SamplerConfig = SamplerConfig(),
    *,
    erm: ERMFit | None = None,
    seed: int | None = None,
    n_eval: int = 200,
    progress: bool = True,
):
    """The posterior (:func:`fit_posterior`), Rao-Blackwellised, as an ArviZ InferenceData.

    Returns
    -------
    idata : arviz.InferenceData
    post : bayes_ips.posterior.Posterior
    run : PosteriorRun
    """
    from bayes_ips.arviz_io import build_inference_data
    from bayes_ips.posterior import g_draws, mode_check, posterior_predictive_mean

    X, Y = check_xy(X, Y)
    k_run, k_rb, k_eval, k_ppc = jax.random.split(key, 4)
    run, post = _fit_posterior(k_run, k_rb, X, Y, config, erm=erm, seed=seed, progress=progress)
    x_eval, y_eval = eval_pairs(k_eval, X, n_eval)
    g_eval = g_draws(post, x_eval, y_eval, rao_blackwell=True)
    mean_draw = posterior_predictive_mean(post, X)
    C, D = post.shape
    M, N, _ = X.shape
    draw_index = thin_draws(C, D, M * N)
    y_rep = predictive_draws(k_ppc, mean_draw, post.sigma, draw_index)
    modes = mode_check(g_eval)
    attrs = {
        "kind": "posterior",
        "model": "lowrank_spline",
        "collapsed": int(config.collapsed),
        "seed": -1 if seed is None else int(seed),
        "config": dataclasses.asdict(config),
        "degree": int(run.knots.degree),
        "multiplicity": int(run.knots.multiplicity),
        "tail": str(run.knots.tail),
        "y_scale": run.y_scale,
        "wall_time_s": run.wall_time_s,
        "method": config.method,
        "sampler": run.method,
        "sampler_info": _json_info(run.info),
        "modes": modes,
        "erm": fit_reference(run.erm),
    }
    idata = build_inference_data(
        samples=run.samples,
        extra=run.extra,
        A=post.A,
        sigma=post.sigma,
        tau=post.tau,
        c_mean=post.c_mean,
        c_draw=post.c_draw,
        g_eval=g_eval,
        x_eval=x_eval,
        y_eval=y_eval,
        X=X,
        Y=Y,
        breaks=np.asarray(run.knots.breaks),
        mean_draw=mean_draw,
        draw_index=draw_index,
        y_rep=y_rep,
        attrs=attrs,
    )
    return idata, post, run
