"""The package's one NUTS runner, for any NumPyro model, and a Laplace start for its mass matrix.

Every posterior of the package (the low-rank spline IPS model of
:mod:`bayes_ips.inference`, the single-location model of
:mod:`bayes_ips.single_location.posterior`) is sampled by :func:`run_chains`, so
the sampler settings, the recorded sample statistics and the timing mean the
same thing everywhere.

Compilation.  The model's arguments (data, knots, scales) are arguments of the
compiled sampler (NumPyro's ``jit_model_args``) and of the compiled Hessian, not
constants baked into them: every dataset of the same shapes reuses one program,
in memory and through the persistent compilation cache
(:func:`bayes_ips.enable_compilation_cache`).  Options that fix shapes or
branches must therefore be bound into the model (``functools.partial``); the
arguments passed here must be arrays or numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS, init_to_sample
from numpyro.infer.hmc_util import euclidean_kinetic_energy

from bayes_ips.laplace import flatten, laplace_approx, unravel

__all__ = [
    "EXTRA_FIELDS",
    "Chains",
    "finite_kinetic_energy",
    "laplace_inverse_mass",
    "make_kernel",
    "run_chains",
]

# Per-transition statistics kept for diagnostics (divergences, tree depth, E-BFMI).
EXTRA_FIELDS = ("diverging", "num_steps", "energy", "accept_prob", "potential_energy")


class Chains(NamedTuple):
    """Raw output of :func:`run_chains`.

    Attributes
    ----------
    samples : dict of (chains, draws, ...) arrays
        Every sample and deterministic site, in constrained space.
    extra : dict of (chains, draws) arrays
        The :data:`EXTRA_FIELDS`.
    wall_time_s : float
        Warmup and sampling, all chains (compilation included).
    """

    samples: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]
    wall_time_s: float


def finite_kinetic_energy(inverse_mass_matrix, r) -> jax.Array:
    """NumPyro's Euclidean kinetic energy, with an overflowed value mapped to ``+inf``.

    ``1/2 r^T M^{-1} r`` is never negative for a positive definite ``M^{-1}``: a
    negative, ``-inf`` or NaN value is floating-point overflow or cancellation,
    which happens when one leapfrog step lands where the potential's gradient is
    astronomically large (momenta of 1e150 and beyond).  NumPyro's tree builder
    (0.22) turns a NaN energy into a divergence but takes ``-inf`` at face value:
    the proposal then has infinite weight, it is accepted, and the chain is
    stranded there for good.  That froze one chain of a d = 5 study cell at
    ``sigma = 3.7e-49``, ``tau = 3e146`` and factor norms near 1000 in its second
    warmup iteration (``analyses/RESULTS.md``).  Returning ``+inf`` makes such a
    step an ordinary divergence, rejected.  The velocity (the gradient in ``r``)
    is NumPyro's own: it is only used on steps whose energy is finite.
    """
    ke = euclidean_kinetic_energy(inverse_mass_matrix, r)
    return jnp.where(ke >= 0, ke, jnp.inf)


finite_kinetic_energy._kinetic_grad = euclidean_kinetic_energy._kinetic_grad


def make_kernel(
    model: Callable[..., Any],
    *,
    inverse_mass: np.ndarray | None = None,
    dense_sites: Sequence[str] | None = None,
    target_accept: float = 0.85,
    max_tree_depth: int = 8,
) -> NUTS:
    """The package's NUTS kernel (see :func:`run_chains` for the arguments)."""
    if inverse_mass is not None and not dense_sites:
        raise ValueError("an initial inverse_mass needs its dense_sites")
    block = tuple(dense_sites) if dense_sites else None
    return NUTS(
        model,
        kinetic_fn=finite_kinetic_energy,
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        dense_mass=[block] if block else False,
        inverse_mass_matrix=None if inverse_mass is None else {block: jnp.asarray(inverse_mass)},
        init_strategy=init_to_sample,
    )


def run_chains(
    key: jax.Array,
    model: Callable[..., Any],
    model_args: tuple = (),
    model_kwargs: dict[str, Any] | None = None,
    *,
    chains: int = 2,
    warmup: int = 500,
    draws: int = 500,
    init_params: dict[str, jax.Array] | None = None,
    inverse_mass: np.ndarray | None = None,
    dense_sites: Sequence[str] | None = None,
    target_accept: float = 0.85,
    max_tree_depth: int = 8,
    progress: bool = True,
    jit_model_args: bool = True,
) -> Chains:
    """Run NUTS chains (sequentially) on a NumPyro model.

    Parameters
    ----------
    key : PRNG key
    model : callable
        A NumPyro program, called as ``model(*model_args, **model_kwargs)``.
    model_args : tuple
    model_kwargs : dict, optional
    chains, warmup, draws : int
    init_params : dict, optional
        Unconstrained initial values with a leading ``chains`` axis; None starts
        every chain from a prior draw.
    inverse_mass : (P, P) array, optional
        Initial inverse mass matrix of the dense block ``dense_sites`` (P is the
        total unconstrained size of those sites, in the order given).
    dense_sites : sequence of str, optional
        Sites adapted with one dense mass matrix block; None adapts a diagonal
        mass matrix for all sites.
    target_accept : float
    max_tree_depth : int
    progress : bool
        NumPyro progress bars.
    jit_model_args : bool
        Pass the model's arguments to the compiled sampler (default) rather than
        baking them in as constants (see the module docstring).

    Returns
    -------
    Chains
    """
    kernel = make_kernel(
        model,
        inverse_mass=inverse_mass,
        dense_sites=dense_sites,
        target_accept=target_accept,
        max_tree_depth=max_tree_depth,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=progress,
        jit_model_args=jit_model_args,
    )
    if init_params is not None and chains == 1:
        # NumPyro reads a single chain's init_params without the chains axis
        init_params = {k: jnp.asarray(v)[0] for k, v in init_params.items()}
    t0 = time.perf_counter()
    mcmc.run(
        key,
        *model_args,
        **(model_kwargs or {}),
        extra_fields=EXTRA_FIELDS,
        init_params=init_params,
    )
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    return Chains(samples, extra, time.perf_counter() - t0)


def laplace_inverse_mass(
    model: Callable[..., Any],
    model_args: tuple,
    model_kwargs: dict[str, Any],
    point: dict[str, jax.Array],
    sites: Sequence[str],
    *,
    floor: float = 1e-6,
) -> np.ndarray | None:
    """Inverse Hessian of the potential energy at ``point``: a dense initial inverse mass.

    Parameters
    ----------
    model, model_args, model_kwargs
        The NumPyro program and its arguments.
    point : dict
        Unconstrained values of (at least) ``sites``, without a chain axis.
    sites : sequence of str
        The sites of the block, in the order of the matrix.
    floor : float
        Eigenvalues of the Hessian are replaced by their absolute values and
        floored at ``floor`` times the largest (flat directions stay finite).

    Returns
    -------
    (P, P) array, or None when the Hessian is not finite.
    """
    flat0, layout = flatten(point, sites)
    rest = {k: v for k, v in point.items() if k not in sites}
    H = np.asarray(_hessian(flat0, rest, model_args, model_kwargs, model=model, layout=layout))
    if not np.all(np.isfinite(H)):
        return None
    return laplace_approx(flat0, H, floor).cov


@partial(jax.jit, static_argnames=("model", "layout"))
def _hessian(flat0, rest, model_args, model_kwargs, *, model, layout):
    """The Hessian of the potential in the flattened block (one program per shapes)."""
    from numpyro.infer.util import potential_energy

    def pe(flat):
        return potential_energy(model, model_args, model_kwargs, unravel(flat, layout, rest))

    return jax.hessian(pe)(flat0)
