"""A Laplace proposal and an independence Metropolis-Hastings sampler built on it.

The fast path of the package's posteriors (:func:`bayes_ips.inference.run_imh`):

1. find the mode of the potential energy (minus the log posterior in NumPyro's
   unconstrained space) with BFGS (``optimistix``) from a given start, in
   coordinates whitened by the Hessian there;
2. take the Hessian there; its inverse is the Laplace covariance ``Sigma``
   (eigenvalues floored, as for the NUTS mass matrix: :func:`bayes_ips.nuts.laplace_inverse_mass`);
3. draw proposals from a multivariate Student-t centred at the mode with scale
   ``Sigma`` (heavier tails than the posterior's in every direction the Laplace
   approximation gets roughly right, so the importance weights stay bounded);
4. evaluate the exact log posterior of every proposal (batched: the proposals
   do not depend on the chain), and run independence Metropolis-Hastings chains
   on them: a proposal ``x'`` replaces the current ``x`` with probability
   ``min(1, w(x') / w(x))``, ``w = p / q``.  The chains are exact MCMC whatever the
   proposal; a poor proposal shows up as a low acceptance rate and a large
   Pareto k of the same importance weights (Vehtari et al. 2024, PSIS), which is
   what :func:`bayes_ips.inference.sample_posterior` checks before it trusts them.

The pieces here are pure functions of arrays; everything model-specific (how a
proposal's log density is evaluated) is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.scipy.special import gammaln

__all__ = [
    "LaplaceApprox",
    "flatten",
    "imh_chains",
    "laplace_approx",
    "mode_and_hessian",
    "mvt_logpdf",
    "mvt_sample",
    "unravel",
]


class LaplaceApprox(NamedTuple):
    """A Gaussian (or Student-t) approximation in the flattened unconstrained space.

    Attributes
    ----------
    mean : (P,) array, the mode.
    cov : (P, P) array, the inverse Hessian (eigenvalues floored).
    chol : (P, P) array, its lower Cholesky factor.
    """

    mean: np.ndarray
    cov: np.ndarray
    chol: np.ndarray


def flatten(point: dict, sites: Sequence[str]) -> tuple[jax.Array, tuple]:
    """The sites of ``point`` raveled into one vector, and the layout to undo it."""
    layout = tuple((k, tuple(jnp.shape(point[k]))) for k in sites)
    return jnp.concatenate([jnp.ravel(point[k]) for k in sites]), layout


def unravel(flat: jax.Array, layout: tuple, rest: dict | None = None) -> dict:
    """Inverse of :func:`flatten` (``rest`` holds further sites, unchanged)."""
    out, i = dict(rest or {}), 0
    for k, sh in layout:
        n = int(np.prod(sh))
        out[k] = flat[i : i + n].reshape(sh)
        i += n
    return out


def mode_and_hessian(
    model: Callable[..., Any],
    model_args: tuple,
    model_kwargs: dict[str, Any],
    point: dict[str, jax.Array],
    sites: Sequence[str],
    *,
    max_steps: int = 500,
    tol: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray, int, bool, tuple]:
    """Minimise the potential energy of a NumPyro model from ``point`` (BFGS), then its Hessian.

    ``model`` must be a stable, hashable callable (a function, or a cached
    ``functools.partial``): it keys the one compiled program, and the data in
    ``model_args``/``model_kwargs`` are its arguments.

    Returns
    -------
    mode : (P,) array, the flattened unconstrained sites at the minimum found.
    hessian : (P, P) array, the Hessian of the potential there.
    n_steps : int, BFGS steps.
    ok : bool, whether BFGS reported success.
    layout : the layout of the flattened sites (see :func:`unravel`).
    """
    flat0, layout = flatten(point, sites)
    rest = {k: v for k, v in point.items() if k not in sites}
    x, H, n, ok = _mode_and_hessian(
        flat0,
        rest,
        model_args,
        model_kwargs,
        model=model,
        layout=layout,
        max_steps=max_steps,
        tol=tol,
    )
    return np.asarray(x), np.asarray(H), int(n), bool(ok), layout


@partial(jax.jit, static_argnames=("model", "layout", "max_steps", "tol"))
def _mode_and_hessian(flat0, rest, model_args, model_kwargs, *, model, layout, max_steps, tol):
    from numpyro.infer.util import potential_energy

    def pe(flat):
        return potential_energy(model, model_args, model_kwargs, unravel(flat, layout, rest))

    # BFGS in coordinates whitened by the Hessian at the start (x = x0 + T z,
    # T^T H0 T = I up to the eigenvalue floor): the angular directions of the
    # factors are ~1e3 times stiffer than the others, which took BFGS from an
    # identity start ~230 steps at d = 5; whitened, it needs a few tens.
    w, Q = jnp.linalg.eigh(jax.hessian(pe)(flat0))
    w = jnp.abs(w)
    T = Q / jnp.sqrt(jnp.maximum(w, 1e-6 * jnp.max(w)))
    sol = optx.minimise(
        lambda z, _: pe(flat0 + T @ z),
        optx.BFGS(rtol=tol, atol=tol),
        jnp.zeros_like(flat0),
        max_steps=max_steps,
        throw=False,
    )
    x = flat0 + T @ sol.value
    return x, jax.hessian(pe)(x), sol.stats["num_steps"], (sol.result == optx.RESULTS.successful)


def laplace_approx(mode: np.ndarray, hessian: np.ndarray, floor: float = 1e-6) -> LaplaceApprox:
    """``N(mode, H^{-1})`` with the eigenvalues of ``H`` made positive and floored.

    Raises ``FloatingPointError`` when the Hessian is not finite.
    """
    H = np.asarray(hessian, dtype=float)
    if not np.all(np.isfinite(H)):
        raise FloatingPointError("the Hessian at the mode is not finite")
    w, Q = np.linalg.eigh(0.5 * (H + H.T))
    w = np.maximum(np.abs(w), floor * np.abs(w).max())
    cov = (Q / w) @ Q.T
    return LaplaceApprox(np.asarray(mode, dtype=float), cov, np.linalg.cholesky(cov))


def mvt_sample(key: jax.Array, approx: LaplaceApprox, df: float, n: int) -> jax.Array:
    """``n`` draws of the multivariate Student-t ``t_df(mean, cov)``: (n, P).

    ``df = inf`` gives the Gaussian.
    """
    kz, kg = jax.random.split(key)
    P = approx.mean.shape[0]
    z = jax.random.normal(kz, (n, P), dtype=jnp.float64)
    if np.isfinite(df):
        g = jax.random.gamma(kg, df / 2.0, (n,), dtype=jnp.float64) / (df / 2.0)
        z = z / jnp.sqrt(g)[:, None]
    return jnp.asarray(approx.mean) + z @ jnp.asarray(approx.chol).T


def mvt_logpdf(x: jax.Array, approx: LaplaceApprox, df: float) -> jax.Array:
    """Log density of ``t_df(mean, cov)`` at the rows of ``x``: (n,)."""
    P = approx.mean.shape[0]
    L = jnp.asarray(approx.chol)
    z = jax.scipy.linalg.solve_triangular(L, (x - jnp.asarray(approx.mean)).T, lower=True)
    q = jnp.sum(z**2, axis=0)
    half_logdet = jnp.sum(jnp.log(jnp.diag(L)))
    if not np.isfinite(df):
        return -0.5 * q - half_logdet - 0.5 * P * jnp.log(2 * jnp.pi)
    return (
        gammaln((df + P) / 2)
        - gammaln(df / 2)
        - 0.5 * P * jnp.log(df * jnp.pi)
        - half_logdet
        - 0.5 * (df + P) * jnp.log1p(q / df)
    )


@jax.jit
def imh_chains(key: jax.Array, log_w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Independence Metropolis-Hastings on precomputed proposals.

    Parameters
    ----------
    key : PRNG key
    log_w : (C, T) array
        ``log p - log q`` of each chain's proposals, in the order they are offered
        (``-inf`` for a proposal of zero posterior density or a failed evaluation).
        Each chain starts at its first proposal.

    Returns
    -------
    index : (C, T) int array, the proposal each chain holds after step t.
    accepted : (C, T) bool array (step 0 counts as accepted).
    """
    C, T = log_w.shape
    log_u = jnp.log(jax.random.uniform(key, (C, T), dtype=log_w.dtype))
    log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)

    def step(carry, t):
        cur, cur_lw = carry
        prop_lw = log_w[:, t]
        better = jnp.isneginf(cur_lw) | (log_u[:, t] < prop_lw - cur_lw)
        acc = (t == 0) | (~jnp.isneginf(prop_lw) & better)
        cur = jnp.where(acc, t, cur)
        cur_lw = jnp.where(acc, prop_lw, cur_lw)
        return (cur, cur_lw), (cur, acc)

    init = (jnp.zeros((C,), jnp.int_), jnp.full((C,), -jnp.inf, log_w.dtype))
    _, (idx, acc) = jax.lax.scan(step, init, jnp.arange(T, dtype=jnp.int_))
    return idx.T, acc.T
