"""Pairs of distinct tokens of one sample, ``(X[m, i], X[m, j])`` with ``i != j``.

The law of such a pair is ``rho``, the measure of every error of the package
(:mod:`bayes_ips.metrics`).  Two things are built on these pairs of a dataset:

* their scores ``x^T A y``, where knots are placed and figures drawn
  (:func:`off_diagonal`, :func:`off_diagonal_scores`);
* random pairs of the training data, where the posterior of ``g`` is kept for
  diagnostics (:func:`eval_pairs`).

Pairs drawn from a *known* token law are :func:`bayes_ips.simulate.sample_pairs`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.pairwise import pair_scores

__all__ = ["eval_pairs", "off_diagonal", "off_diagonal_scores"]


def off_diagonal(S: ArrayLike) -> np.ndarray:
    """The entries ``S[..., i, j]`` with ``i != j``, row by row.

    Parameters
    ----------
    S : (..., N, N) array

    Returns
    -------
    (..., N (N - 1)) array

    Examples
    --------
    >>> off_diagonal(np.arange(9).reshape(3, 3)).tolist()
    [1, 2, 3, 5, 6, 7]
    """
    S = np.asarray(S)
    N = S.shape[-1]
    return S[..., ~np.eye(N, dtype=bool)]


def off_diagonal_scores(
    X: ArrayLike, U: ArrayLike, V: ArrayLike, max_samples: int | None = None
) -> np.ndarray:
    """The scores ``X[m, i]^T U V^T X[m, j]``, ``i != j``, of the first samples, flattened.

    Parameters
    ----------
    X : (M, N, d) array
    U, V : (d, r) arrays
    max_samples : int, optional
        Use only ``X[:max_samples]`` (all samples when None).

    Returns
    -------
    (min(M, max_samples) N (N - 1),) array
    """
    return off_diagonal(np.asarray(pair_scores(X[:max_samples], U, V))).ravel()


def eval_pairs(key: jax.Array, X: np.ndarray, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random pairs ``(X[m, i], X[m, j])``, ``i != j``, of the data: draws from rho.

    ``m`` and ``i`` are uniform, and ``j = (i + k) mod N`` with ``k`` uniform on
    ``1..N-1``, so ``j`` is uniform on the other tokens.

    Parameters
    ----------
    key : PRNG key
    X : (M, N, d) array, N >= 2
    n : int

    Returns
    -------
    x, y : (n, d) arrays
    """
    M, N, _ = X.shape
    km, ki, kj = jax.random.split(key, 3)
    m = np.asarray(jax.random.randint(km, (n,), 0, M))
    i = np.asarray(jax.random.randint(ki, (n,), 0, N))
    j = (i + np.asarray(jax.random.randint(kj, (n,), 1, N))) % N  # j != i
    return X[m, i], X[m, j]
