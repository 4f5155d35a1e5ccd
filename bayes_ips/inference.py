"""NUTS for the low-rank spline model: configuration, initialisation, running.

The knots of the Bayesian model are fixed before sampling, from an ERM fit on the
same data (quantiles of its scores, its GCV choice of K), so the basis is
data-driven in the same way as for ERM.  Chains start from the ERM factors with
jitter (``init="erm"``) or from the prior (``init="prior"``).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayes_ips import nuts
from bayes_ips.erm import ERMConfig, ERMFit, fit_erm
from bayes_ips.errors import InputError, check_rank, check_xy
from bayes_ips.io import fit_reference
from bayes_ips.models.lowrank_spline import lowrank_spline
from bayes_ips.pairs import eval_pairs  # re-exported (its home is bayes_ips.pairs)
from bayes_ips.ppc import predictive_draws, thin_draws
from bayes_ips.spline import Knots, make_knots, quantile_breaks

__all__ = ["NUTSRun", "SamplerConfig", "eval_pairs", "model_knots", "run_nuts", "sample_posterior"]

INITS = ("erm", "prior")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Settings of a posterior run.

    Attributes
    ----------
    rank : int
    collapsed : bool
        Integrate the spline coefficients out (recommended) or sample them.
    chains, warmup, draws : int
    init : {"erm", "prior"}
    jitter : float
        Relative jitter of the ERM start, per chain.
    target_accept : float
    max_tree_depth : int
    n_intervals : int or None
        Knot intervals of the model's basis; None takes the ERM fit's GCV choice.
    degree : int
    """

    rank: int = 1
    collapsed: bool = True
    chains: int = 2
    warmup: int = 500
    draws: int = 500
    init: str = "erm"
    jitter: float = 0.1
    target_accept: float = 0.85
    max_tree_depth: int = 8
    n_intervals: int | None = None
    degree: int = 3

    def validate(self, d: int) -> SamplerConfig:
        check_rank(self.rank, d)
        if self.init not in INITS:
            raise InputError(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        for name in ("chains", "warmup", "draws"):
            v = getattr(self, name)
            if int(v) != v or v < (1 if name != "warmup" else 0):
                raise InputError(f"{name} must be a positive integer, got {v}")
        if self.draws < 4:
            raise InputError("draws must be >= 4 for diagnostics")
        if not 0 < self.target_accept < 1:
            raise InputError(f"target_accept must be in (0, 1), got {self.target_accept}")
        if not self.jitter >= 0:
            raise InputError(f"jitter must be >= 0, got {self.jitter}")
        return self


@dataclasses.dataclass
class NUTSRun:
    """What a posterior run produced (raw; see :mod:`bayes_ips.posterior`)."""

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


def model_knots(X: np.ndarray, fit: ERMFit, n_intervals: int | None, degree: int) -> Knots:
    """Knots at quantiles of the ERM fit's training scores (K from ERM's GCV by default)."""
    N = X.shape[1]
    from bayes_ips.pairwise import pair_scores

    S = np.asarray(pair_scores(X[:4000], fit.U, fit.V))
    K = n_intervals or fit.info["K"]
    return make_knots(quantile_breaks(S[:, ~np.eye(N, dtype=bool)], K), degree, 1)


def model_penalty(X: np.ndarray, fit: ERMFit, knots: Knots) -> np.ndarray:
    """The curvature penalty of the model's basis, in units of the score sd."""
    from bayes_ips.collapsed import curvature_penalty
    from bayes_ips.pairwise import pair_scores

    N = X.shape[1]
    S = np.asarray(pair_scores(X[:4000], fit.U, fit.V))[:, ~np.eye(N, dtype=bool)]
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
    model = partial(lowrank_spline, **static)
    return nuts.laplace_inverse_mass(model, (X, Y), data, point, sites)


_STATIC_KWARGS = ("rank", "collapsed", "chunk_size")


def _split_kwargs(model_kwargs: dict) -> tuple[dict, dict]:
    """Model keywords that fix shapes or branches (static) and those that are data."""
    static = {k: v for k, v in model_kwargs.items() if k in _STATIC_KWARGS}
    data = {k: v for k, v in model_kwargs.items() if k not in _STATIC_KWARGS}
    return static, data


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


def run_nuts(
    key: jax.Array,
    X,
    Y,
    config: SamplerConfig = SamplerConfig(),
    *,
    erm: ERMFit | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> NUTSRun:
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
    """
    import time

    X, Y = check_xy(X, Y)
    d = X.shape[2]
    config.validate(d)
    k_erm, k_init, k_run = jax.random.split(key, 3)
    t0 = time.perf_counter()
    if erm is None:
        erm = fit_erm(k_erm, X, Y, ERMConfig(rank=config.rank))
    if erm.U.shape != (d, config.rank):
        raise InputError(f"the ERM fit has rank {erm.U.shape[1]}, the sampler rank {config.rank}")
    knots = model_knots(X, erm, config.n_intervals, config.degree)
    y_scale = float(np.sqrt(np.mean(Y**2)))
    penalty = model_penalty(X, erm, knots)
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    init = None
    inv_mass = None
    model_kwargs = dict(
        rank=config.rank,
        knots=knots,
        penalty=jnp.asarray(penalty),
        y_scale=jnp.asarray(y_scale),
        collapsed=config.collapsed,
    )
    # Shapes and branches are bound into the model; the data, the knots, the
    # penalty and the scale are arguments of the compiled sampler
    # (``jit_model_args``), so every dataset of the same shapes reuses one program.
    static, data_kwargs = _split_kwargs(model_kwargs)
    model = partial(lowrank_spline, **static)
    if config.init == "erm":
        init = _erm_init(k_init, erm, y_scale, config.chains, config.jitter)
        if not config.collapsed:
            init["c"] = _erm_coef_on(knots, erm, config.chains)
        inv_mass = laplace_inverse_mass(Xj, Yj, model_kwargs, {k: v[0] for k, v in init.items()})
    sites = ("U", "V", "sigma", "tau") + (() if config.collapsed else ("c",))
    chains = nuts.run_chains(
        k_run,
        model,
        (Xj, Yj),
        data_kwargs,
        chains=config.chains,
        warmup=config.warmup,
        draws=config.draws,
        init_params=init,
        inverse_mass=inv_mass,
        dense_sites=sites,
        target_accept=config.target_accept,
        max_tree_depth=config.max_tree_depth,
        progress=progress,
    )
    samples, extra = chains.samples, chains.extra
    return NUTSRun(
        samples,
        extra,
        knots,
        penalty,
        y_scale,
        config,
        erm,
        -1 if seed is None else int(seed),
        time.perf_counter() - t0,
    )


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
    """NUTS, then Rao-Blackwellisation, then an ArviZ InferenceData.

    Returns
    -------
    idata : arviz.InferenceData
    post : bayes_ips.posterior.Posterior
    run : NUTSRun
    """
    from bayes_ips.arviz_io import build_inference_data
    from bayes_ips.posterior import (
        g_draws,
        mode_check,
        posterior_from_run,
        posterior_predictive_mean,
    )

    X, Y = check_xy(X, Y)
    k_run, k_rb, k_eval, k_ppc = jax.random.split(key, 4)
    run = run_nuts(k_run, X, Y, config, erm=erm, seed=seed, progress=progress)
    post = posterior_from_run(k_rb, run, X, Y)
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
        "y_scale": run.y_scale,
        "wall_time_s": run.wall_time_s,
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
