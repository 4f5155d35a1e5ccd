"""The coercivity constant ``c_H`` of a hypothesis space (the paper's Lemma 3.4).

For a fixed ``A`` and a spline basis ``B = (B_1, ..., B_n)``, the hypothesis space is
``h(x, y) = sum_k c_k B_k(x^T A y)``.  Its coercivity constant is the worst ratio of
the population risk's quadratic part to the L2(rho) norm::

    c_H = min_{h != 0} E[(1/(N-1) sum_{j != i} h(X_i, X_j))^2] / ||h||^2_{L2(rho)}
        = min_c  c^T Phi c / c^T G c,

    Phi = F^T F / (M N)                          (F(A)[m, i, k], bayes_ips.pairwise)
    G   = E_rho[B(x^T A y) B(x^T A y)^T]         (rho: a pair X_i, X_j, i != j, of one sample)

the smallest generalised eigenvalue of ``(Phi, G)``.  A small ``c_H`` means a large
error constant: the excess risk controls only ``c_H ||g_hat - g*||^2``.

Both matrices are estimated on the same data: ``Phi`` by the kernel's Gram pass
(:func:`bayes_ips.pairwise.gram`), ``G`` as the mean over *all* ordered pairs
``(m, i, j)``, ``i != j``, of the data (:func:`pair_gram`).  On those data
``c^T Phi c`` is the mean over (m, i) of the squared mean over j of ``h(S_mij)`` and
``c^T G c`` the mean over (m, i, j) of ``h(S_mij)^2``, so ``c_H <= 1`` (Jensen), and:

* **Null directions.**  If ``c^T G c = 0`` then ``h`` vanishes at every score of the
  data, so ``F c = 0`` too: the ratio is 0/0 there, a function the data cannot see
  (e.g. a basis function whose support holds no score: equal-width knots in
  empty tails).  ``c_H`` is the minimum over the span where ``G`` is
  well-conditioned: the eigenvectors of ``G`` with eigenvalue above
  :data:`GRAM_RTOL` times the largest (``Coercivity.dim`` of them).
* **Bias.**  It is the plug-in (empirical) constant, the minimum over ``dim``
  directions of a ratio of two Monte Carlo averages, so it lies below the
  population constant by roughly ``sqrt(dim / (M N))`` in relative terms.

For tokens that are i.i.d. within a sample, or i.i.d. given a common factor (every
token law of :mod:`bayes_ips.simulate`, the ``correlated`` one with ``rho >= 0``
included: given ``Z_0`` and ``X_i`` the other tokens are i.i.d.), conditioning on
``G_i = (X_i, Z_0)`` gives::

    E[(1/(N-1) sum_{j != i} h_ij)^2] = E[Var(h_ij | G_i)] / (N-1) + E[E(h_ij | G_i)^2]
                                     >= ||h||^2_{L2(rho)} / (N-1),

so the population ``c_H >= 1/(N-1)``, with equality when ``E[h(X_i, X_j) | G_i] = 0``
(e.g. an odd ``h`` and tokens symmetric about 0 given ``G_i``).  A common factor
only raises it (measured, N = 6, d = 3: ``(N-1) c_H`` 0.94-0.98 at rho = 0, 1.0-1.04
at 0.3, 1.3-2.1 at 0.9).  Exchangeable laws that are no mixture of i.i.d. ones
can push it lower: negatively correlated tokens (``correlated`` with ``rho < 0``)
down to centred ones (``sum_j X_j = 0``, ``rho = -1/(N-1)``), which give
``c_H ~ 1/(N-1)^2`` (``tests/test_coercivity.py``; ``analyses/coercivity_study.py``
measures the whole range and the error constant that follows it).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.pairs import off_diagonal_scores
from bayes_ips.pairwise import DEFAULT_CHUNK, gram
from bayes_ips.spline import Knots, local_basis, n_basis

__all__ = ["GRAM_RTOL", "Coercivity", "coercivity", "coercivity_constant", "pair_gram"]

#: Directions of the L2(rho) Gram with eigenvalue below this fraction of the largest
#: are dropped: far above float64 rounding of the Gram (~1e-16 relative), far below
#: the mass of a basis function that holds a single score of a large dataset.
GRAM_RTOL = 1e-10

_PAIR_CHUNK = 4096  # samples per chunk of pair scores in pair_gram
_SCORE_BLOCK = 1 << 15  # scores per call of the compiled Gram of scores


class Coercivity(NamedTuple):
    """The coercivity constant of a hypothesis space on a dataset.

    Attributes
    ----------
    c_H : float
        ``min_c c^T Phi c / c^T G c`` over the kept span.
    coef : (n_basis,) array
        Coefficients of the minimising ``h``, scaled to ``c^T G c = 1``.
    dim : int
        Dimension of the span kept (``n_basis`` less the null directions of ``G``).
    n_basis : int
    spectrum : (dim,) array
        Every generalised eigenvalue of ``(Phi, G)`` on the kept span, ascending
        (``spectrum[0] = c_H``).  ``c_H`` bounds the error of the worst direction; a
        noise-driven error spreads over all of them, ``~ mean(1 / spectrum)``.
    """

    c_H: float
    coef: np.ndarray
    dim: int
    n_basis: int
    spectrum: np.ndarray | None = None

    def as_dict(self) -> dict[str, float | int]:
        """``c_H`` and ``c_H_dim`` (for fit info, JSON and study records)."""
        return {"c_H": self.c_H, "c_H_dim": self.dim}


def pair_gram(
    X: ArrayLike, U: ArrayLike, V: ArrayLike, knots: Knots, chunk_size: int = _PAIR_CHUNK
) -> np.ndarray:
    """L2(rho) Gram of the basis on the data's pairs: ``mean_{m, i != j} B(S_mij) B(S_mij)^T``.

    Every ordered pair of distinct tokens of every sample counts once
    (:func:`bayes_ips.pairs.off_diagonal_scores`); each score touches the ``s + 1``
    B-splines that are non-zero there (:func:`bayes_ips.spline.local_basis`), so the
    cost is ``(s + 1)^2`` products per score and the memory that of one chunk of
    samples.  The scores go through one compiled program in blocks of a fixed size,
    so a new data shape compiles nothing new (a new knot layout does).

    Parameters
    ----------
    X : (M, N, d) array
    U, V : (d, r) arrays, ``A = U V^T``
    knots : Knots
    chunk_size : int
        Samples per chunk.

    Returns
    -------
    (n_basis, n_basis) array
    """
    X = np.asarray(X)
    nb = n_basis(knots)
    total = np.zeros((nb, nb))
    count = 0
    for lo in range(0, X.shape[0], chunk_size):
        u = off_diagonal_scores(X[lo : lo + chunk_size], U, V)
        count += u.size
        # fixed-size blocks (the last one padded with weight 0): one compiled program
        # per knot layout, whatever the data's shape
        for start in range(0, u.size, _SCORE_BLOCK):
            block = u[start : start + _SCORE_BLOCK]
            w = np.zeros(_SCORE_BLOCK)
            w[: block.size] = 1.0
            padded = np.full(_SCORE_BLOCK, block[0])
            padded[: block.size] = block
            total += np.asarray(_score_gram(jnp.asarray(padded), jnp.asarray(w), knots))
    return total / count


@jax.jit
def _score_gram(u: jax.Array, w: jax.Array, knots: Knots) -> jax.Array:
    """``sum_p w_p B(u_p) B(u_p)^T``, (n_basis, n_basis): one segment sum of local products."""
    nb = n_basis(knots)
    s = knots.degree
    first, vals = local_basis(u, knots)
    local = jnp.arange(s + 1)
    rows = first[:, None, None] + local[:, None]  # (P, s + 1, 1)
    cols = first[:, None, None] + local[None, :]  # (P, 1, s + 1)
    prods = w[:, None, None] * vals[:, :, None] * vals[:, None, :]  # (P, s + 1, s + 1)
    idx = jnp.broadcast_to(rows * nb + cols, prods.shape)
    return jax.ops.segment_sum(prods.ravel(), idx.ravel(), nb * nb).reshape(nb, nb)


def coercivity_constant(
    FtF: ArrayLike, n_obs: int, G: ArrayLike, rtol: float = GRAM_RTOL
) -> Coercivity:
    """Smallest generalised eigenvalue of ``(F^T F / n_obs, G)`` on the well-conditioned span of G.

    Parameters
    ----------
    FtF : (n, n) array
        ``F^T F`` summed over the ``n_obs = M N`` (sample, token) rows.
    n_obs : int
    G : (n, n) array
        The L2(rho) Gram of the basis (:func:`pair_gram`).
    rtol : float
        Eigenvalues of ``G`` below ``rtol`` times the largest are null directions.

    Returns
    -------
    Coercivity

    Examples
    --------
    >>> coercivity_constant(np.diag([1.0, 4.0]), 4, np.diag([1.0, 1.0])).c_H
    0.25
    """
    Phi = np.asarray(FtF, dtype=np.float64) / float(n_obs)
    G = np.asarray(G, dtype=np.float64)
    Phi, G = (Phi + Phi.T) / 2, (G + G.T) / 2
    lam, Q = np.linalg.eigh(G)
    keep = lam > rtol * lam[-1]
    W = Q[:, keep] / np.sqrt(lam[keep])  # W^T G W = I on the kept span
    mu, E = np.linalg.eigh(W.T @ Phi @ W)
    return Coercivity(float(mu[0]), W @ E[:, 0], int(keep.sum()), int(G.shape[0]), mu)


def coercivity(
    X: ArrayLike, U: ArrayLike, V: ArrayLike, knots: Knots, chunk_size: int = DEFAULT_CHUNK
) -> Coercivity:
    """``c_H`` of the hypothesis space ``{sum_k c_k B_k(x^T U V^T y)}`` on the tokens ``X``.

    ``F^T F`` comes from the kernel's Gram pass (the outputs play no part), ``G``
    from :func:`pair_gram` on the same samples.

    Parameters
    ----------
    X : (M, N, d) array
    U, V : (d, r) arrays
    knots : Knots

    Returns
    -------
    Coercivity
    """
    X = jnp.asarray(X)
    M, N, _ = X.shape
    st = gram(jnp.asarray(U), jnp.asarray(V), X, jnp.zeros((M, N), X.dtype), knots, chunk_size)
    return coercivity_constant(np.asarray(st.FtF), M * N, pair_gram(X, U, V, knots))
