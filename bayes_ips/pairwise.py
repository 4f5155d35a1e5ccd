"""The one pairwise kernel of the attention-style IPS model.

For samples ``X`` of shape ``(M, N, d)`` and factors ``U, V`` of shape ``(d, r)``
(``A = U V^T``) the scores are ``S[m, i, j] = X[m, i]^T A X[m, j]``.  With a spline
``phi_c = sum_k c_k B_k`` this module computes

* the pairwise means ``(F(A) c)[m, i] = 1/(N-1) sum_{j != i} phi_c(S[m, i, j])``
  (:func:`pairwise_mean`), and the residual sum of squares built on them
  (:func:`sq_loss`);
* the design tensor ``F(A)[m, i, k] = 1/(N-1) sum_{j != i} B_k(S[m, i, j])``
  (:func:`design`, for small ``M``);
* the sufficient statistics of the linear-in-``c`` model, ``F^T F``, ``F^T Y``,
  ``Y^T Y`` (:func:`gram`), accumulated chunk by chunk over ``M`` without ever
  holding ``F`` whole.

Multi-head models (``Y_i = 1/(N-1) sum_{j != i} sum_h phi_h(X_i^T A_h X_j)``) use
the same functions with a leading head axis: factors ``(H, d, r)``, coefficients
``(H, n_basis)`` and per-head breakpoints ``(H, K + 1)`` (one degree and
multiplicity).  Their design is the concatenation ``F = [F_1 ... F_H]``; every
head's basis is evaluated and scattered as for one head, so the cost of the score
and basis work grows linearly in ``H`` (``F^T F`` itself has ``(H n_basis)^2``
entries).  With one head the computation is the single-head one, operation for
operation.

Everything uses local support (each score touches ``s + 1`` basis functions; no
``(M, N, N, K)`` array is ever built) and is differentiable in ``U``, ``V`` and
``c`` (and in ``X``, ``Y``).  Reductions over ``M`` run in a ``lax.scan`` over chunks
of at most ``chunk_size`` samples whose body is rematerialised
(``jax.checkpoint``), so memory stays bounded for gradients too.  The ERM loss and
every NumPyro likelihood of the package call these functions.

How it is made fast (XLA CPU):

* the spline is evaluated through its ``(K, s + 1)`` table of per-interval
  polynomials (:func:`bayes_ips.spline.piece_coefficients`): per score an interval
  search, 1-d gathers and a Horner step, with the intermediate arrays forced to
  memory (:func:`bayes_ips.spline._materialise`) so XLA neither recomputes them in
  every consumer nor fuses gathers into slow reductions;
* derivatives are given by hand (``custom_jvp`` rules, which also serve reverse
  mode): the coefficient part is one 1-d segment sum per power of the local
  coordinate.  :func:`sq_loss` computes its gradient in the same single pass over
  the data as its value (no rematerialised second pass);
* :func:`gram` and :func:`design` evaluate the ``s + 1`` non-zero B-splines of each
  score by the Cox--de Boor triangle and add them into the flattened rows of
  ``F`` by ``s + 1`` 1-d scatters.  The tangents of :func:`gram` come from ``B'``,
  read off the triangle's last step, scattered the same way: a rule linear in
  the tangents, so that reverse mode is its transpose and no derivative ever
  goes through the triangle or the scatters;
* the reductions of :func:`gram` run over chunks of one size (no separately
  compiled last chunk), and a single chunk is not rematerialised.

Scores outside the knots follow the tail rule of the knots (``Knots.tail``,
:mod:`bayes_ips.spline`) everywhere: the piece-table kernels through
:func:`bayes_ips.spline._piece_eval`, the triangle of :func:`gram` and
:func:`design` by evaluating at the clamped score (with a first-order term for the
linear tail, with none and a zero slope for the flat one).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from bayes_ips.spline import (
    Knots,
    _flat_slope_weight,
    _interval,
    _materialise,
    _piece_eval,
    _table_eval,
    _tail_coord,
    full_knot_vector,
    n_basis,
    piece_coefficients,
)

__all__ = [
    "DEFAULT_CHUNK",
    "grad_chunk",
    "GramStats",
    "design",
    "gram",
    "pair_scores",
    "pairwise_mean",
    "sq_loss",
]

# Samples per chunk.  At N = 8 a chunk holds 2048 * 64 = 131k scores: its
# per-score temporaries (~1 MiB each) stay in cache, which measured 3-5x faster than
# chunks of 1M scores, while the per-chunk overhead of the scan stays negligible.
DEFAULT_CHUNK = 2048


def grad_chunk(n_tokens: int, n_samples: int | None = None, scores_per_chunk: int = 16384) -> int:
    """Chunk size (samples) for reverse mode through :func:`gram`.

    Differentiating the Gram statistics keeps per-score residuals of the chunk
    alive; ~16k scores per chunk keep them in cache.  Measured (value and
    gradient of the collapsed likelihood, N = 8, d = 5, K = 20, before the
    derivative rule of :func:`gram`): 42 ms at chunk 128 against 94 ms at 2048 for
    M = 10000, and 8 ms against 34 ms for M = 2000.

    With several chunks the reverse pass recomputes each chunk's basis; with one
    it reuses the forward pass's (see :func:`_reduce_chunks`).  So when
    ``n_samples`` is given and ``n_samples * n_tokens**2 <= 4 * scores_per_chunk``
    the data are one chunk: measured with the rule, 1.0 ms against 1.65 ms for
    M = 500, N = 6, d = 3, K = 10 (chunk 455), and 2.5 ms against 3.3 ms for M = 1000,
    N = 8; at M = 2000, N = 8 both take the same time.
    """
    per_chunk = max(16, scores_per_chunk // (n_tokens * n_tokens))
    if n_samples is not None and n_samples * n_tokens * n_tokens <= 4 * scores_per_chunk:
        return max(int(n_samples), 1)
    return per_chunk


class GramStats(NamedTuple):
    """Sufficient statistics of ``Y = F(A) c + noise``.

    Attributes
    ----------
    FtF : (n_basis, n_basis) array
    FtY : (n_basis,) array
    YtY : () array
    n_obs : () array, the number of (sample, token) observations summed.
    n_outside : () int array, the number of ordered pairs ``(i, j)``, ``i != j``,
        whose score lies outside the knot range (extrapolated, never clipped).
    """

    FtF: jax.Array
    FtY: jax.Array
    YtY: jax.Array
    n_obs: jax.Array
    n_outside: jax.Array


def padded_size(n: int, smallest: int = 64) -> int:
    """``n`` rounded up to a power of two (at least ``smallest``): inputs of varying
    length padded to it compile few shapes of a jitted function."""
    return max(smallest, 1 << (max(n, 1) - 1).bit_length())


def pair_scores(X: ArrayLike, U: ArrayLike, V: ArrayLike) -> jax.Array:
    """Scores ``S[..., i, j] = x_i^T U V^T x_j``.

    Parameters
    ----------
    X : (..., N, d) array
    U, V : (d, r) arrays

    Returns
    -------
    (..., N, N) array
    """
    P = jnp.matmul(X, U)
    Q = jnp.matmul(X, V)
    return jnp.matmul(P, jnp.swapaxes(Q, -1, -2))


def _offdiag(n: int, dtype) -> jax.Array:
    return (1.0 - jnp.eye(n, dtype=dtype)) / (n - 1)


def _nonzero(t) -> bool:
    """Whether a tangent given to a ``symbolic_zeros`` JVP rule may be non-zero."""
    return not isinstance(t, SymbolicZero)


def _vdot(a, b):
    return jnp.sum(a * b)


# --------------------------------------------------------------------------- #
# chunk-level pieces
# --------------------------------------------------------------------------- #


def _chunk_eval(U, V, a, b, Xc, derivative, tail):
    """``P = Xc U``, ``Q = Xc V`` and the spline pieces at the scores ``P Q^T``.

    Returns ``P, Q, k, z, phi, dphi`` (``dphi = phi'(S)`` if ``derivative``, else
    ``None``); the per-score arrays are materialised.
    """
    P = jnp.matmul(Xc, U)
    Q = jnp.matmul(Xc, V)
    S = jnp.matmul(P, jnp.swapaxes(Q, -1, -2))
    k, z, phi, dphi = _piece_eval(S, a, b, derivative, tail)
    return P, Q, k, z, phi, dphi


def _chunk_pullback(G, Xc, U, V, P, Q, k, z, dphi, n_pieces, n_pow, b, want_x, tail):
    """Cotangents of one chunk from ``G = d loss / d phi(S)``, shape (c, N, N).

    Returns ``dU, dV``, ``da`` (cotangent of the (K, s + 1) piece table: one 1-d
    segment sum per power of ``z``, each on a materialised update array; with the
    linear tail, ``d phi / d a_p = zc^p + p zc^(p-1) dz``, see
    :func:`bayes_ips.spline._tail_coord`) and ``dX`` (``None`` unless ``want_x``).
    """
    dS = G * dphi
    dP = jnp.matmul(dS, Q)
    dQ = jnp.matmul(jnp.swapaxes(dS, -1, -2), P)
    dU = jnp.einsum("cnd,cnr->dr", Xc, dP)
    dV = jnp.einsum("cnd,cnr->dr", Xc, dQ)
    zc, dz = _tail_coord(z, tail)
    kf, zf = k.reshape(-1), zc.reshape(-1)
    dzf = None if dz is None else dz.reshape(-1)
    g = G.reshape(-1)
    cols = []
    for p in range(n_pow):
        prev = g
        if p:
            g = _materialise(g * zf, b)
        upd = g if dzf is None or not p else g + (p * dzf) * prev
        cols.append(jax.ops.segment_sum(upd, kf, n_pieces))
    da = jnp.stack(cols, axis=1)
    dX = None
    if want_x:
        dX = jnp.matmul(dP, jnp.swapaxes(U, -1, -2)) + jnp.matmul(dQ, jnp.swapaxes(V, -1, -2))
    return dU, dV, da, dX


@partial(jax.custom_jvp, nondiff_argnums=(5,))
def _chunk_mean(U, V, a, b, Xc, tail):
    """(c, N) pairwise means of one chunk, for the piece table ``a``."""
    *_, phi, _ = _chunk_eval(U, V, a, b, Xc, False, tail)
    return jnp.sum(phi * _offdiag(Xc.shape[-2], phi.dtype), axis=-1)


@partial(_chunk_mean.defjvp, symbolic_zeros=True)
def _chunk_mean_jvp(tail, primals, tangents):
    # Linear in the tangents, so reverse mode transposes it; the breakpoints get
    # no derivative through the local coordinate (as in ``spline.locate``).
    U, V, a, b, Xc = primals
    tU, tV, ta, _, tX = tangents
    P, Q, k, z, phi, dphi = _chunk_eval(U, V, a, b, Xc, True, tail)
    w = _offdiag(Xc.shape[-2], phi.dtype)
    out = jnp.sum(phi * w, axis=-1)
    tP = tQ = None
    if _nonzero(tU):
        tP = jnp.matmul(Xc, tU)
    if _nonzero(tV):
        tQ = jnp.matmul(Xc, tV)
    if _nonzero(tX):
        tP = jnp.matmul(tX, U) + (0 if tP is None else tP)
        tQ = jnp.matmul(tX, V) + (0 if tQ is None else tQ)
    tphi = jnp.zeros_like(phi)
    if tP is not None:
        tphi = tphi + dphi * jnp.matmul(tP, jnp.swapaxes(Q, -1, -2))
    if tQ is not None:
        tphi = tphi + dphi * jnp.matmul(P, jnp.swapaxes(tQ, -1, -2))
    if _nonzero(ta):
        tphi = tphi + _table_eval(ta, k, z, tail, False)[0]
    return out, jnp.sum(tphi * w, axis=-1).astype(out.dtype)


def _chunk_sq(U, V, a, b, Xc, Yc, grads, want_x, want_y, tail):
    """Residual sum of squares of one chunk and (if ``grads``) its gradient.

    ``U, V, a, b`` carry a leading head axis (``(H, d, r)``, ``(H, K, s + 1)``,
    ``(H, K + 1)``): the chunk's means are the sum of the heads'.  Returns ``loss,
    dU, dV, da, dX, dY`` (gradient entries ``None`` when not asked for; ``dU, dV,
    da`` with the head axis).
    """
    N = Xc.shape[-2]
    H = U.shape[0]
    heads = [_chunk_eval(U[h], V[h], a[h], b[h], Xc, grads, tail) for h in range(H)]
    w = _offdiag(N, heads[0][4].dtype)
    r = Yc - _sum_heads([jnp.sum(e[4] * w, axis=-1) for e in heads])
    loss = _vdot(r, r)
    if not grads:
        return loss, None, None, None, None, None
    G = _materialise(-2.0 * r[:, :, None] * w, b)
    outs = [
        _chunk_pullback(
            G, Xc, U[h], V[h], P, Q, k, z, dphi, a.shape[1], a.shape[2], b[h], want_x, tail
        )
        for h, (P, Q, k, z, _, dphi) in enumerate(heads)
    ]
    dU, dV, da = (jnp.stack([o[i] for o in outs]) for i in range(3))
    dX = _sum_heads([o[3] for o in outs]) if want_x else None
    return loss, dU, dV, da, dX, (2.0 * r if want_y else None)


def _scan_chunks(body, init, arrays, chunk_size):
    """Run ``body(carry, chunk) -> (carry, out)`` over consecutive chunks of samples.

    ``arrays`` is a tuple of arrays sharing their leading (sample) axis.  The
    ``M // chunk_size`` full chunks go through a ``lax.scan`` that slices them
    out of the arrays (no padded copy of the data is made); a last, shorter chunk
    is one more call of ``body`` at its own static size.  ``body`` is
    rematerialised under differentiation (``jax.checkpoint``), so memory stays
    bounded.  Returns the final carry and the per-sample outputs (a pytree of
    arrays with leading axis ``M``, or ``None``s), concatenated in order.
    """
    M = arrays[0].shape[0]
    n, rem = divmod(M, chunk_size)
    body = jax.checkpoint(body)
    outs = []
    carry = init
    if n == 1:
        carry, out = body(carry, tuple(a[:chunk_size] for a in arrays) if rem else arrays)
        outs.append(out)
    elif n > 1:

        def step(carry, i):
            start = i * chunk_size
            chunk = tuple(jax.lax.dynamic_slice_in_dim(a, start, chunk_size) for a in arrays)
            return body(carry, chunk)

        carry, out = jax.lax.scan(step, carry, jnp.arange(n))
        outs.append(jax.tree.map(lambda o: o.reshape((n * chunk_size,) + o.shape[2:]), out))
    if rem:
        carry, out = body(carry, tuple(a[n * chunk_size :] for a in arrays))
        outs.append(out)
    if len(outs) == 1:
        return carry, outs[0]
    return carry, jax.tree.map(lambda *o: jnp.concatenate(o), *outs)


def _reduce_chunks(body, init, arrays, chunk_size):
    """Fold ``body(carry, chunk, keep) -> carry`` over chunks of samples (a reduction).

    ``arrays`` is a tuple of arrays sharing their leading (sample) axis, of length
    ``M``.  They are cut into ``n = ceil(M / chunk_size)`` chunks of one static size
    ``c = ceil(M / n) <= chunk_size``, so that the program holds a single copy of
    ``body`` (a shorter last chunk would be a second copy, for the compiler and
    for every transformation of it).  The chunks are sliced out of the arrays (no
    padded copy is made); the last one starts at ``M - c`` and so repeats the last
    ``n c - M < n`` samples of its predecessor: ``keep``, a ``(c,)`` array of ones
    and zeros, zeroes their contributions (``keep`` is None when ``n c = M``).

    With several chunks ``body`` runs in a ``lax.scan`` and is rematerialised under
    differentiation (``jax.checkpoint``), so memory stays bounded; a single chunk
    (``M <= chunk_size``) is one plain call, whose residuals are bounded by
    ``chunk_size`` anyway.
    """
    M = arrays[0].shape[0]
    n = -(-M // chunk_size)
    if n <= 1:
        return body(init, arrays, None)
    c = -(-M // n)
    body = jax.checkpoint(body)
    dt = jnp.result_type(*arrays)

    def step(carry, i):
        start = jnp.minimum(i * c, M - c)
        chunk = tuple(jax.lax.dynamic_slice_in_dim(a, start, c) for a in arrays)
        keep = None
        if n * c > M:
            keep = (start + jnp.arange(c) >= i * c).astype(dt)
        return body(carry, chunk, keep), None

    carry, _ = jax.lax.scan(step, init, jnp.arange(n))
    return carry


def _sq_pass(U, V, a, b, X, Y, chunk_size, tail, grads, want_x=False, want_y=False):
    """One pass over the data: the loss and, if ``grads``, its gradient."""

    def body(acc, chunk):
        loss, dU, dV, da, dX, dY = _chunk_sq(U, V, a, b, *chunk, grads, want_x, want_y, tail)
        acc = jax.tree.map(jnp.add, acc, (loss, dU, dV, da))
        return acc, (dX, dY)

    dt = jnp.result_type(X, Y, U, V, a)
    init = (jnp.zeros((), dt),)
    if grads:
        init += (jnp.zeros(U.shape, dt), jnp.zeros(V.shape, dt), jnp.zeros(a.shape, dt))
    else:
        init += (None, None, None)
    (loss, dU, dV, da), (dX, dY) = _scan_chunks(body, init, (X, Y), chunk_size)
    return loss, dU, dV, da, dX, dY


@partial(jax.custom_jvp, nondiff_argnums=(6, 7))
def _sq_loss(U, V, a, b, X, Y, chunk_size, tail):
    return _sq_pass(U, V, a, b, X, Y, chunk_size, tail, False)[0]


@partial(_sq_loss.defjvp, symbolic_zeros=True)
def _sq_loss_jvp(chunk_size, tail, primals, tangents):
    # The gradient is computed in the same pass as the value; the tangent output
    # is its inner product with the input tangents (linear, so reverse mode
    # transposes it for free).  dX, dY are only computed when X, Y are perturbed.
    U, V, a, b, X, Y = primals
    tU, tV, ta, _, tX, tY = tangents
    want_x, want_y = _nonzero(tX), _nonzero(tY)
    loss, dU, dV, da, dX, dY = _sq_pass(U, V, a, b, X, Y, chunk_size, tail, True, want_x, want_y)
    t = jnp.zeros_like(loss)
    for g, tg in ((dU, tU), (dV, tV), (da, ta), (dX, tX), (dY, tY)):
        if _nonzero(tg):
            t = t + _vdot(g, tg)
    return loss, t.astype(loss.dtype)


def _crossprod(F, G=None):
    """``F^T G`` (``F^T F`` if ``G`` is None) for tall ``F``, ``G``: as a sum over two
    halves, which XLA CPU runs faster than the one product with a transposed operand."""
    G = F if G is None else G
    R = F.shape[0]
    if R % 2:
        return F.T @ G
    Fb = F.reshape(2, R // 2, F.shape[1])
    Gb = G.reshape(2, R // 2, G.shape[1])
    return jnp.einsum("bri,brj->ij", Fb, Gb)


def _chunk_basis(U, V, Xc, b, degree, multiplicity, derivative, keep, stride, offset, tail):
    """Scores of one chunk and the weighted B-splines that are non-zero at each.

    The ``s + 1`` B-splines that are non-zero at each score are evaluated by the
    Cox--de Boor triangle (Piegl & Tiller A2.2; ``2 s`` 1-d gathers of knots per
    score), weighted by the off-diagonal weights ``w_ij``.  Their derivatives come
    from the last step of the same triangle (Piegl & Tiller A2.3, first order):
    ``B'_{i,s} = s (B_{i,s-1} / (t_{i+s} - t_i) - B_{i+1,s-1} / (t_{i+s+1} - t_{i+1}))``,
    whose quotients are that step's ``temp`` values, so they cost ``s + 1``
    subtractions.  The breakpoints ``b`` get no derivative (they are data).
    ``keep`` (optional, (c,) ones and zeros) multiplies the weights of each sample
    (see :func:`_reduce_chunks`).  ``stride`` (default ``n_basis``) is the length
    of a design row and ``offset`` the column of this basis's first function in
    it: a head's block of the concatenated multi-head design.

    With ``tail = "linear"`` the triangle runs at the clamped score
    ``Sc = clip(S, b_0, b_K)`` and each value gains ``B'(Sc) (S - Sc)`` (the
    linear continuation); ``B'`` is then ``B'(Sc)``, constant outside, which is
    the tail's slope.  ``"flat"`` runs it at ``Sc`` with ``B' = 0`` outside, and
    ``"poly"`` at ``S`` itself.

    Returns
    -------
    P, Q : (c, N, r) arrays, ``Xc U`` and ``Xc V``.
    idx : (c * N * N,) int array, flat index ``row * stride + offset + first`` into
        the row-major ``(c * N, stride)`` design rows, ``row = m N + i``.
    vals : list of ``s + 1`` (c * N * N,) arrays, ``w_ij B_{first + l}(S_mij)``.
    dvals : like ``vals`` with ``B'`` (``None`` unless ``derivative``).
    n_out : (c,) int array, off-diagonal scores outside ``[b_0, b_K]`` per sample.
    """
    c, N, _ = Xc.shape
    s, m = degree, multiplicity
    K = b.shape[-1] - 1
    R = c * N
    nb = n_basis(Knots(b, s, m))
    b = jax.lax.stop_gradient(b)
    P = jnp.matmul(Xc, U)
    Q = jnp.matmul(Xc, V)
    S = jnp.matmul(P, jnp.swapaxes(Q, -1, -2))
    k = _interval(S, b)
    w = jnp.broadcast_to(_offdiag(N, S.dtype), S.shape)
    if keep is not None:
        w = w * keep[:, None, None]
    linear = tail == "linear" and s > 0
    flat = tail == "flat"
    # the clamped score stays inside the interval k (the boundary ones' ends)
    Sc = jnp.clip(S, b[0], b[-1]) if linear or flat else S
    # knots t[mu + j], j = 1 - s .. s, of the span mu = s + k m of each score
    t = full_knot_vector(Knots(b, s, m))
    mu = s + jnp.arange(K) * m
    left = [None] + [Sc - t[mu + 1 - j][k] for j in range(1, s + 1)]
    right = [None] + [t[mu + j][k] - Sc for j in range(1, s + 1)]
    vals = [w]
    temps = []
    for j in range(1, s + 1):
        saved = None
        new = []
        temps = []
        for r in range(j):
            temp = vals[r] / (right[r + 1] + left[j - r])
            temps.append(temp)
            term = right[r + 1] * temp
            new.append(term if saved is None else saved + term)
            saved = left[j - r] * temp
        new.append(saved)
        vals = new
    stride = nb if stride is None else stride
    idt = jnp.int32 if R * stride < 2**31 - 1 else jnp.int64
    rows = jnp.arange(R, dtype=idt).reshape(c, N, 1)
    first = k.astype(idt) * m
    if offset:
        first = first + offset
    idx = _materialise((rows * stride + first).reshape(-1), b)
    dvals = None
    if derivative or linear:
        # temps[r] = B_{mu-s+1+r, s-1} w / (t_{mu+1+r} - t_{mu-s+1+r}), r = 0..s-1
        if s == 0:
            dvals = [jnp.zeros_like(w)]
        else:
            d = [-temps[0]] + [temps[r - 1] - temps[r] for r in range(1, s)] + [temps[s - 1]]
            dvals = [s * v for v in d]
        if linear:
            dS = S - Sc
            vals = [v + dv * dS for v, dv in zip(vals, dvals, strict=True)]
        if not derivative:
            dvals = None
        elif flat:  # constant beyond the knots: no slope there, half of it on them
            wf = _flat_slope_weight(S, b[0], b[-1])
            dvals = [dv * wf for dv in dvals]
    if derivative:
        vals, dvals = _materialise(
            ([v.reshape(-1) for v in vals], [v.reshape(-1) for v in dvals]), b
        )
    else:
        vals = _materialise([v.reshape(-1) for v in vals], b)
    outside = (S < b[0]) | (S > b[-1])
    n_out = jnp.sum(outside & (w > 0), axis=(-1, -2))
    return P, Q, idx, vals, dvals, n_out


def _scatter_rows(idx, vals, n_rows, nb, more=()):
    """``(n_rows, nb)`` rows with ``vals[l]`` added at flat positions ``idx + l``.

    ``s + 1`` 1-d scatters into the flattened rows (row-major, so that the updates
    of one row land close together).  ``more`` holds further ``(idx, vals)`` pairs
    added into the same rows (the other heads' blocks of a multi-head design).
    """
    F = jnp.zeros((n_rows * nb,), vals[0].dtype)
    for ix, vs in ((idx, vals), *more):
        for j, v in enumerate(vs):
            F = F.at[ix + j].add(v, mode="promise_in_bounds")
    return F.reshape(n_rows, nb)


def _heads_basis(U, V, Xc, b, degree, multiplicity, derivative, keep, tail):
    """:func:`_chunk_basis` of every head, into one design of ``H n_basis`` columns.

    ``U, V`` are ``(H, d, r)`` and ``b`` ``(H, K + 1)``: head ``h`` fills columns
    ``h n_basis .. (h + 1) n_basis - 1`` of the concatenated design
    ``F = [F_1 ... F_H]``.  Returns the list of per-head results and the width.
    """
    H = U.shape[0]
    nb = n_basis(Knots(b[0], degree, multiplicity))
    parts = [
        _chunk_basis(
            U[h], V[h], Xc, b[h], degree, multiplicity, derivative, keep, H * nb, h * nb, tail
        )
        for h in range(H)
    ]
    return parts, H * nb


def _heads_scatter(parts, vals, n_rows, width):
    """Scatter per-head values ``vals[h]`` (lists of ``s + 1``) at the heads' indices."""
    pairs = [(p[2], v) for p, v in zip(parts, vals, strict=True)]
    return _scatter_rows(*pairs[0], n_rows, width, pairs[1:])


def _chunk_design(U, V, Xc, knots):
    """(c * N, H n_basis) design rows of one chunk, and the (c,) outside counts."""
    c, N, _ = Xc.shape
    U, V, b = _as_heads(U, V, knots.breaks)
    parts, width = _heads_basis(
        U, V, Xc, b, knots.degree, knots.multiplicity, False, None, knots.tail
    )
    F = _heads_scatter(parts, [p[3] for p in parts], c * N, width)
    return F, _sum_heads([p[5] for p in parts])


def _sum_heads(xs):
    """``xs[0] + xs[1] + ...`` (a single head's value itself, untouched)."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _as_heads(U, V, b):
    """``(H, d, r)`` factors and ``(H, K + 1)`` breakpoints (a single head gets ``H = 1``)."""
    U, V, b = jnp.asarray(U), jnp.asarray(V), jnp.asarray(b)
    if U.ndim == 2:
        U, V = U[None], V[None]
    if b.ndim == 1:
        b = jnp.broadcast_to(b, (U.shape[0],) + b.shape)
    return U, V, b


@partial(jax.jit, static_argnames=("chunk_size",))
def pairwise_mean(
    U: ArrayLike,
    V: ArrayLike,
    coef: ArrayLike,
    X: ArrayLike,
    knots: Knots,
    chunk_size: int = DEFAULT_CHUNK,
) -> jax.Array:
    """Pairwise means ``F(A) c``.

    Parameters
    ----------
    U, V : (d, r) arrays, or (H, d, r)
        Factors of ``A = U V^T`` (of every head's ``A_h = U_h V_h^T``).
    coef : (n_basis,) array, or (H, n_basis)
        Spline coefficients ``c`` (of every head's ``phi_h``).
    X : (M, N, d) array
    knots : Knots
    chunk_size : int
        Samples per chunk (memory bound); static.

    Returns
    -------
    (M, N) array
        ``1/(N-1) sum_{j != i} phi_c(X_i^T A X_j)`` (summed over the heads).
    """
    X = jnp.asarray(X)
    M = X.shape[0]
    U, V, a, b = _heads_pieces(U, V, coef, knots)

    def mean(Xc):
        return _sum_heads(
            [_chunk_mean(U[h], V[h], a[h], b[h], Xc, knots.tail) for h in range(U.shape[0])]
        )

    if M <= chunk_size:
        return mean(X)
    _, out = _scan_chunks(lambda c, x: (c, mean(*x)), None, (X,), chunk_size)
    return out


def _heads_pieces(U, V, coef, knots: Knots):
    """Head-stacked factors, piece tables ``(H, K, s + 1)`` and breakpoints ``(H, K + 1)``.

    One head: ``U, V`` of shape ``(d, r)``, ``coef`` ``(n_basis,)`` and 1-d breaks.
    ``H`` heads: ``(H, d, r)``, ``(H, n_basis)`` and ``(H, K + 1)``.
    """
    U, V, b = _as_heads(U, V, knots.breaks)
    coef = jnp.asarray(coef)
    H = U.shape[0]
    if coef.ndim == 1:
        coef = coef[None]
    if coef.shape[0] != H or b.shape[0] != H:
        raise ValueError(
            f"{H} heads of factors, but coefficients for {coef.shape[0]} and breaks for "
            f"{b.shape[0]}"
        )
    s, m = knots.degree, knots.multiplicity
    a = jnp.stack([piece_coefficients(coef[h], Knots(b[h], s, m, knots.tail)) for h in range(H)])
    return U, V, a, b


@partial(jax.jit, static_argnames=("chunk_size",))
def sq_loss(
    U: ArrayLike,
    V: ArrayLike,
    coef: ArrayLike,
    X: ArrayLike,
    Y: ArrayLike,
    knots: Knots,
    chunk_size: int = DEFAULT_CHUNK,
) -> jax.Array:
    """Residual sum of squares ``sum_{m,i} (Y[m,i] - (F(A) c)[m,i])^2``.

    Parameters
    ----------
    U, V : (d, r) arrays, or (H, d, r)
    coef : (n_basis,) array, or (H, n_basis)
    X : (M, N, d) array
    Y : (M, N) array
    knots : Knots

    Returns
    -------
    () array
    """
    X = jnp.asarray(X)
    Y = jnp.asarray(Y)
    U, V, a, b = _heads_pieces(U, V, coef, knots)
    return _sq_loss(U, V, a, b, X, Y, chunk_size, knots.tail)


@jax.jit
def design(U: ArrayLike, V: ArrayLike, X: ArrayLike, knots: Knots) -> jax.Array:
    """Design tensor ``F(A)``, built whole: only for small ``M``.

    Parameters
    ----------
    U, V : (d, r) arrays, or (H, d, r)
    X : (M, N, d) array
    knots : Knots (breaks (H, K + 1) for H heads)

    Returns
    -------
    (M, N, n_basis) array, or (M, N, H n_basis): ``[F_1 ... F_H]``
    """
    X = jnp.asarray(X)
    F, _ = _chunk_design(U, V, X, knots)
    return F.reshape(X.shape[0], X.shape[1], -1)


def _gram_pass(U, V, b, X, Y, chunk_size, degree, multiplicity, tail, tangents=None):
    """One pass over the chunks: ``(FtF, FtY, YtY, n_outside)`` and their tangents.

    ``U, V`` are ``(d, r)`` (one head) or ``(H, d, r)`` with ``b`` ``(H, K + 1)``
    (``H`` heads: ``F = [F_1 ... F_H]``, each head's block from its own scores and
    breakpoints).  ``tangents`` is None (values only) or ``(tU, tV, tX, tY)``,
    None for a zero tangent.  The tangents of the statistics are then computed in
    the same pass, linearly in the input tangents (so that reverse mode is their
    transpose):

        tS_h = tP_h Q_h^T + P_h tQ_h^T     (tP_h = Xc tU_h + tXc U_h,  tQ_h likewise)
        tF[row_i, first_hij + l] += w_ij B'_{first_hij + l}(S_hij) tS_hij   (local support)

    (``B'`` the tail's slope outside the knots, see :func:`_chunk_basis`)
        tFtF = F^T tF + (F^T tF)^T,  tFtY = tF^T y + F^T ty,  tYtY = 2 y^T ty.

    Returns ``(stats, tangents_out)``, ``tangents_out = (tFtF, tFtY, tYtY)`` or None.
    """
    one = jnp.ndim(U) == 2
    U, V, b = _as_heads(U, V, b)
    if tangents is not None and one:
        tangents = tuple(
            None if t is None else t[None] if i < 2 else t for i, t in enumerate(tangents)
        )
    H = U.shape[0]
    nb = H * n_basis(Knots(b[0], degree, multiplicity))
    dt = X.dtype
    tU, tV, tX, tY = (None,) * 4 if tangents is None else tangents
    # scores move only with U, V, X; piecewise-constant splines have B' = 0
    want_s = degree > 0 and any(t is not None for t in (tU, tV, tX))
    extra = tuple(t for t in (tX, tY) if t is not None)

    def body(acc, chunk, keep):
        Xc, Yc, *rest = chunk
        tXc = rest.pop(0) if tX is not None else None
        tYc = rest.pop(0) if tY is not None else None
        c, N, _ = Xc.shape
        parts, _ = _heads_basis(U, V, Xc, b, degree, multiplicity, want_s, keep, tail)
        F = _heads_scatter(parts, [p[3] for p in parts], c * N, nb)
        if keep is not None:
            Yc = Yc * keep[:, None]
            tYc = None if tYc is None else tYc * keep[:, None]
        y = Yc.reshape(-1)
        (FtF, FtY, YtY, n_outside), tacc = acc
        stats = (
            FtF + _crossprod(F),
            FtY + y @ F,
            YtY + y @ y,
            n_outside + jnp.sum(_sum_heads([p[5] for p in parts])).astype(n_outside.dtype),
        )
        if tangents is None:
            return stats, None
        tFtF, tFtY, tYtY = tacc
        if want_s:
            dvals = []
            for h, (P, Q, _, _, dv, _) in enumerate(parts):
                tP = [jnp.matmul(Xc, tU[h])] if tU is not None else []
                tQ = [jnp.matmul(Xc, tV[h])] if tV is not None else []
                if tXc is not None:
                    tP.append(jnp.matmul(tXc, U[h]))
                    tQ.append(jnp.matmul(tXc, V[h]))
                tS = []
                if tP:
                    tS.append(jnp.matmul(sum(tP[1:], tP[0]), jnp.swapaxes(Q, -1, -2)))
                if tQ:
                    tS.append(jnp.matmul(P, jnp.swapaxes(sum(tQ[1:], tQ[0]), -1, -2)))
                tS = sum(tS[1:], tS[0]).reshape(-1)
                dvals.append([d * tS for d in dv])
            tF = _heads_scatter(parts, dvals, c * N, nb)
            C = _crossprod(F, tF)
            tFtF = tFtF + C + C.T
            tFtY = tFtY + y @ tF
        if tYc is not None:
            ty = tYc.reshape(-1)
            tFtY = tFtY + ty @ F
            tYtY = tYtY + 2.0 * (y @ ty)
        return stats, (tFtF, tFtY, tYtY)

    zero = jnp.zeros((), dt)
    init = (jnp.zeros((nb, nb), dt), jnp.zeros((nb,), dt), zero, jnp.zeros((), jnp.int_))
    tinit = None if tangents is None else init[:3]
    stats, tstats = _reduce_chunks(body, (init, tinit), (X, Y) + extra, chunk_size)
    return stats, tstats


@partial(jax.custom_jvp, nondiff_argnums=(5, 6, 7, 8))
def _gram(U, V, b, X, Y, chunk_size, degree, multiplicity, tail):
    return _gram_pass(U, V, b, X, Y, chunk_size, degree, multiplicity, tail)[0]


@partial(_gram.defjvp, symbolic_zeros=True)
def _gram_jvp(chunk_size, degree, multiplicity, tail, primals, tangents):
    # Values and tangents in one pass; the tangents are linear in the input
    # tangents, so reverse mode transposes this rule (a second pass over the
    # chunks, which recomputes each chunk's basis when there are several), and
    # forward-over-reverse (``jax.hessian``) differentiates it like any JAX code.
    # The breakpoints get no derivative, as before (``stop_gradient``): they are data.
    U, V, b, X, Y = primals
    tU, tV, _, tX, tY = (t if _nonzero(t) else None for t in tangents)
    stats, tstats = _gram_pass(
        U, V, b, X, Y, chunk_size, degree, multiplicity, tail, (tU, tV, tX, tY)
    )
    tstats = tuple(t.astype(s.dtype) for t, s in zip(tstats, stats[:3], strict=True))
    return stats, tstats + (np.zeros((), dtype=jax.dtypes.float0),)


@partial(jax.jit, static_argnames=("chunk_size",))
def gram(
    U: ArrayLike,
    V: ArrayLike,
    X: ArrayLike,
    Y: ArrayLike,
    knots: Knots,
    chunk_size: int = DEFAULT_CHUNK,
) -> GramStats:
    """Accumulate ``F^T F``, ``F^T Y`` and ``Y^T Y`` over chunks of samples.

    Memory beyond the data is ``O(chunk_size * N * (N (s+1) + n_basis))`` whatever
    ``M``, for the values and for derivatives of any order.

    Differentiable in ``U``, ``V``, ``X`` and ``Y`` (not in the breakpoints: they
    are data) by a hand-written rule: the tangents of the statistics are computed
    in the same pass as the values from ``B'`` of the local basis (see
    :func:`_gram_pass`), never by differentiating the basis recursion or the
    scatters.  The rule is linear in the tangents, so reverse mode (one more pass
    over the chunks) and forward-over-reverse (``jax.hessian``) work too.

    Parameters
    ----------
    U, V : (d, r) arrays, or (H, d, r) for H heads
    X : (M, N, d) array
    Y : (M, N) array
    knots : Knots (breaks (H, K + 1) for H heads: each head its own knots)
    chunk_size : int

    Returns
    -------
    GramStats, of the concatenated basis ``[F_1 ... F_H]`` for H heads
    (``FtF`` is ``(H n_basis, H n_basis)``; ``n_outside`` counts every head's
    scores outside its knots).
    """
    X = jnp.asarray(X)
    Y = jnp.asarray(Y)
    FtF, FtY, YtY, n_out = _gram(
        jnp.asarray(U),
        jnp.asarray(V),
        knots.breaks,
        X,
        Y,
        chunk_size,
        knots.degree,
        knots.multiplicity,
        knots.tail,
    )
    return GramStats(FtF, FtY, YtY, jnp.asarray(X.shape[0] * X.shape[1], X.dtype), n_out)
