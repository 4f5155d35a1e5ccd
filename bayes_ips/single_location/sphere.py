"""The unit sphere: uniform draws, tangent projection, retraction, and the sign symmetry.

The predictor ``T(X) = sum_l erf(lambda <x_l, k>) <x_l, v>`` is unchanged by
``(k, v) -> (-k, -v)`` (erf is odd), so a parameter is an orbit ``{(k, v), (-k, -v)}``.
:func:`overlaps` reports the raw overlaps with a reference pair and the
sign-aligned ones (the flip that makes ``kappa >= 0``); :func:`align_signs` maps
draws onto one representative of their orbit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["align_signs", "overlaps", "principal_direction", "random_unit", "retract", "tangent"]


def random_unit(key: jax.Array, d: int, shape: tuple[int, ...] = ()) -> jax.Array:
    """Uniform draws on the unit sphere of ``R^d`` (normalised Gaussians).

    Returns
    -------
    (*shape, d) array
    """
    z = jax.random.normal(key, (*shape, d))
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True)


def tangent(x: jax.Array, g: jax.Array) -> jax.Array:
    """Project ``g`` (d,) on the tangent space at ``x`` (d,): the Riemannian gradient."""
    return g - jnp.dot(g, x) * x


def retract(x: jax.Array) -> jax.Array:
    """Map a point back to the sphere by normalisation (the projection retraction)."""
    return x / jnp.linalg.norm(x)


def overlaps(k: ArrayLike, v: ArrayLike, k_ref: ArrayLike, v_ref: ArrayLike) -> dict[str, float]:
    """Overlaps ``kappa = <k, k_ref>``, ``nu = <v, v_ref>``, raw and sign-aligned.

    Parameters
    ----------
    k, v, k_ref, v_ref : (d,) arrays
        ``k, v`` are normalised here; ``k_ref, v_ref`` are taken as given.

    Returns
    -------
    dict with ``kappa``, ``nu`` (raw), ``kappa_aligned``, ``nu_aligned`` (after the
    global flip that makes ``kappa >= 0``; ``kappa * nu`` is flip-invariant) and
    ``sign`` (the flip, +1 or -1).
    """
    k, v = np.asarray(k, dtype=float), np.asarray(v, dtype=float)
    kappa = float(k @ np.asarray(k_ref) / np.linalg.norm(k))
    nu = float(v @ np.asarray(v_ref) / np.linalg.norm(v))
    sign = 1.0 if kappa >= 0 else -1.0
    return {
        "kappa": kappa,
        "nu": nu,
        "kappa_aligned": sign * kappa,
        "nu_aligned": sign * nu,
        "sign": sign,
    }


def principal_direction(u: np.ndarray) -> np.ndarray:
    """Leading eigenvector of ``mean u u^T`` over all leading axes (sign-free): (d,)."""
    flat = u.reshape(-1, u.shape[-1])
    return np.linalg.eigh(flat.T @ flat / len(flat))[1][:, -1]


def align_signs(
    k: ArrayLike, v: ArrayLike, k_ref: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flip draws ``(k, v) -> (-k, -v)`` onto one representative of their orbit.

    For draws shaped (chains, draws, d), in two stages: within each chain, every draw
    is flipped to ``<k, u_c> >= 0`` with ``u_c`` the chain's principal direction;
    then each chain as a whole is flipped to ``<u_c, k_ref> >= 0``.  The first stage
    keeps a chain consistent even when it sits in a mode orthogonal to ``k_ref``
    (the swapped point ``(v*, k*)``), where per-draw signs against ``k_ref`` would be
    noise.  Other shapes (..., d) are flipped draw by draw to ``<k, k_ref> >= 0``.

    Parameters
    ----------
    k, v : (C, D, d) or (..., d) arrays
    k_ref : (d,) array, optional
        The reference direction.  By default the leading eigenvector of the
        pooled second moment ``mean_s k_s k_s^T`` (a sign-free summary of all
        draws, mirrored chains included), with its largest-magnitude entry
        made positive.

    Returns
    -------
    k_aligned, v_aligned : arrays shaped like ``k``, ``v``
    sign : (C, D) or (...) array of +1 / -1, with ``k_aligned = sign * k``
    k_ref : (d,) array, the reference used
    """
    k, v = np.asarray(k, dtype=float), np.asarray(v, dtype=float)
    if k_ref is None:
        k_ref = principal_direction(k)
        k_ref = k_ref * (1.0 if k_ref[np.argmax(np.abs(k_ref))] >= 0 else -1.0)
    k_ref = np.asarray(k_ref, dtype=float)
    if k.ndim == 3:
        sign = np.empty(k.shape[:2])
        for c in range(k.shape[0]):
            u = principal_direction(k[c])
            u = u if u @ k_ref >= 0 else -u
            sign[c] = np.where(k[c] @ u >= 0, 1.0, -1.0)
    else:
        sign = np.where(k @ k_ref >= 0, 1.0, -1.0)
    return sign[..., None] * k, sign[..., None] * v, sign, k_ref
