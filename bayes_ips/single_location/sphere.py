"""The unit sphere: uniform draws, tangent projection, retraction, and the symmetries of ``T``.

Which maps of ``(k, v)`` leave ``T(X) = sum_l w_l <x_l, v>`` unchanged depends on the
attention (:data:`SYMMETRIES`), for ``lambda > 0``:

* ``erf``: the flip ``(k, v) -> (-k, -v)`` (erf is odd);
* ``softmax``: none.  ``softmax(-lambda s)`` attends to the lowest scores, not the
  highest: ``(-k, -v)`` is a different predictor;
* ``linear``: the flip and the exchange ``k <-> v`` (``T = lambda k^T (sum_l x_l x_l^T) v``
  depends on ``(k, v)`` only through ``k v^T + v k^T``, whose eigenvectors
  ``k +- v`` fix ``{k, v}`` up to exactly these two maps).

A parameter is an orbit of these maps.  :func:`overlaps` reports the raw overlaps
with a reference pair and the aligned ones (the representative of the orbit
closest to the reference); :func:`align_signs` maps posterior draws onto one
representative of their orbit.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.single_location.attention import check_attention

__all__ = [
    "SYMMETRIES",
    "Alignment",
    "align",
    "align_signs",
    "overlaps",
    "principal_direction",
    "random_unit",
    "retract",
    "symmetries",
    "tangent",
]

#: the maps of (k, v) that leave T unchanged, per attention (lambda > 0)
SYMMETRIES = {"erf": ("flip",), "softmax": (), "linear": ("flip", "swap")}


def symmetries(attention: str) -> tuple[str, ...]:
    """The symmetries of ``T`` under ``attention``: a subset of ``("flip", "swap")``."""
    return SYMMETRIES[check_attention(attention)]


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


def overlaps(
    k: ArrayLike, v: ArrayLike, k_ref: ArrayLike, v_ref: ArrayLike, attention: str = "erf"
) -> dict[str, float]:
    """Overlaps ``kappa = <k, k_ref>``, ``nu = <v, v_ref>``, raw and aligned by the symmetries.

    Parameters
    ----------
    k, v, k_ref, v_ref : (d,) arrays
        ``k, v`` are normalised here; ``k_ref, v_ref`` are taken as given.
    attention : {"erf", "softmax", "linear"}
        Selects the symmetries (:data:`SYMMETRIES`) the alignment may use.

    Returns
    -------
    dict with ``kappa``, ``nu`` (raw), ``kappa_aligned``, ``nu_aligned`` (of the
    representative of the orbit of ``(k, v)`` closest to the reference: for
    ``linear``, ``(v, k)`` when it overlaps more with ``(k_ref, v_ref)``; then, where
    the flip is a symmetry, the flip that makes ``kappa >= 0``), ``sign`` (the
    flip, +1 or -1; always +1 for ``softmax``) and ``swapped`` (``k <-> v`` applied).
    """
    sym = symmetries(attention)
    k, v = np.asarray(k, dtype=float), np.asarray(v, dtype=float)
    k, v = k / np.linalg.norm(k), v / np.linalg.norm(v)
    k_ref, v_ref = np.asarray(k_ref, dtype=float), np.asarray(v_ref, dtype=float)
    kappa, nu = float(k @ k_ref), float(v @ v_ref)
    swapped = "swap" in sym and _prefers_swap(k, v, k_ref, v_ref)
    a, b = (float(v @ k_ref), float(k @ v_ref)) if swapped else (kappa, nu)
    sign = -1.0 if "flip" in sym and a < 0 else 1.0
    return {
        "kappa": kappa,
        "nu": nu,
        "kappa_aligned": sign * a,
        "nu_aligned": sign * b,
        "sign": sign,
        "swapped": bool(swapped),
    }


def _prefers_swap(k, v, k_ref, v_ref) -> np.ndarray:
    """Does ``(v, k)`` overlap more with ``(k_ref, v_ref)`` than ``(k, v)`` (up to signs)?"""
    same = np.abs(k @ k_ref) + np.abs(v @ v_ref)
    return np.abs(v @ k_ref) + np.abs(k @ v_ref) > same


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


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Draws mapped onto one representative of their orbit under the symmetries of ``T``.

    Attributes
    ----------
    k, v : arrays shaped like the draws, aligned
    sign : array of +1 / -1 over the leading axes (all +1 without the flip)
    swap : bool array over the leading axes, ``k <-> v`` applied (all False but for linear)
    k_ref, v_ref : (d,) arrays, the reference pair
    """

    k: np.ndarray
    v: np.ndarray
    sign: np.ndarray
    swap: np.ndarray
    k_ref: np.ndarray
    v_ref: np.ndarray


def align(
    k: ArrayLike,
    v: ArrayLike,
    attention: str = "erf",
    k_ref: ArrayLike | None = None,
    v_ref: ArrayLike | None = None,
) -> Alignment:
    """Align draws ``(k, v)`` by the symmetries of ``attention`` (:data:`SYMMETRIES`).

    * ``erf``: the flip, by :func:`align_signs` (per chain, then to ``k_ref``).
    * ``softmax``: no symmetry; the draws are returned as they are.
    * ``linear``: first the exchange ``k <-> v``, per chain for (C, D, d) draws (from
      the chain's principal directions) or per draw otherwise, whichever of
      ``(k, v)`` and ``(v, k)`` overlaps more with ``(k_ref, v_ref)``; then the flip.

    Parameters
    ----------
    k, v : (C, D, d) or (..., d) arrays
    attention : {"erf", "softmax", "linear"}
    k_ref, v_ref : (d,) arrays, optional
        The reference pair.  By default: for the flip alone, as in
        :func:`align_signs`; for ``softmax``, the normalised mean of the draws; for
        ``linear``, the principal directions of chain 0 (of all draws when not
        shaped by chains), since pooled draws of exchanged chains mix ``k`` and ``v``.
        ``v_ref`` defaults to the principal direction of the aligned ``v``, signed
        to ``mean <v, v_ref> >= 0``.

    Returns
    -------
    Alignment
    """
    sym = symmetries(attention)
    k, v = np.asarray(k, dtype=float), np.asarray(v, dtype=float)
    swap = np.zeros(k.shape[:-1], dtype=bool)
    if "swap" in sym:
        first = (k[0], v[0]) if k.ndim == 3 else (k, v)
        if k_ref is None:
            k_ref = principal_direction(first[0])
            k_ref = k_ref * (1.0 if k_ref[np.argmax(np.abs(k_ref))] >= 0 else -1.0)
        if v_ref is None:
            v_ref = principal_direction(first[1])
        if k.ndim == 3:
            for c in range(k.shape[0]):
                uk, uv = principal_direction(k[c]), principal_direction(v[c])
                swap[c] = _prefers_swap(uk, uv, np.asarray(k_ref), np.asarray(v_ref))
        else:
            swap = _prefers_swap(k, v, np.asarray(k_ref), np.asarray(v_ref))
        k, v = np.where(swap[..., None], v, k), np.where(swap[..., None], k, v)
    if "flip" in sym:
        k, v, sign, k_ref = align_signs(k, v, k_ref)
    else:
        sign = np.ones(k.shape[:-1])
        if k_ref is None:
            mean = k.reshape(-1, k.shape[-1]).mean(axis=0)
            k_ref = mean / np.linalg.norm(mean)
    if v_ref is None:
        v_ref = principal_direction(v)
        v_ref = v_ref if np.mean(v @ v_ref) >= 0 else -v_ref
    k_ref, v_ref = np.asarray(k_ref, dtype=float), np.asarray(v_ref, dtype=float)
    return Alignment(k, v, sign, swap, k_ref, v_ref)
