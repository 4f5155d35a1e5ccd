"""Pairs of distinct tokens of one sample: against naive NumPy loops."""

import jax
import numpy as np

from bayes_ips.pairs import eval_pairs, off_diagonal, off_diagonal_scores


def test_off_diagonal_against_a_double_loop():
    S = np.random.default_rng(0).normal(size=(3, 4, 4))
    naive = np.array([[S[m, i, j] for i in range(4) for j in range(4) if i != j] for m in range(3)])
    np.testing.assert_array_equal(off_diagonal(S), naive)


def test_off_diagonal_scores_against_a_loop():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, 3, 2))
    U, V = rng.normal(size=(2, 1)), rng.normal(size=(2, 1))
    A = U @ V.T
    naive = [X[m, i] @ A @ X[m, j] for m in range(4) for i in range(3) for j in range(3) if i != j]
    got = off_diagonal_scores(X, U, V, max_samples=4)
    assert got.shape == (4 * 3 * 2,)
    np.testing.assert_allclose(got, naive, rtol=1e-12)
    assert off_diagonal_scores(X, U, V).shape == (6 * 3 * 2,)


def test_eval_pairs_are_distinct_tokens_of_one_sample():
    M, N, d = 50, 3, 2
    # token (m, i) holds the numbers (m, i), so each drawn pair shows where it came from
    X = np.stack(np.meshgrid(np.arange(M), np.arange(N), indexing="ij"), -1).astype(float)
    assert X.shape == (M, N, d)
    x, y = eval_pairs(jax.random.PRNGKey(0), X, 2000)
    assert x.shape == y.shape == (2000, d)
    assert np.all(x[:, 0] == y[:, 0])  # same sample
    assert np.all(x[:, 1] != y[:, 1])  # different tokens
    # every ordered pair (i, j), i != j, is drawn, about equally often
    counts = np.zeros((N, N))
    np.add.at(counts, (x[:, 1].astype(int), y[:, 1].astype(int)), 1)
    assert np.all(np.diag(counts) == 0)
    off = counts[~np.eye(N, dtype=bool)]
    expected = 2000 / (N * (N - 1))
    assert np.all(np.abs(off - expected) < 5 * np.sqrt(expected))  # ~5 binomial sd
    x2, y2 = eval_pairs(jax.random.PRNGKey(0), X, 2000)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_eval_pairs_is_re_exported_by_inference():
    from bayes_ips import inference

    assert inference.eval_pairs is eval_pairs
