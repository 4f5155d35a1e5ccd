"""Multi-head attention-style IPS with one P-spline interaction function per head.

    U_h, V_h ~ N(0, 1)^(d x r)             A_h = U_h V_h^T / ||U_h V_h^T||_F   (h = 1..H)
    tau_h ~ HalfCauchy(y_scale)            c_h | tau_h ~ N(0, Q_h(tau_h)^{-1})  (independent
                                           P-spline priors: Q_h = D_h^T D_h / tau_h^2
                                           + I / (10 y_scale)^2, D_h head h's curvature penalty)
    sigma ~ HalfNormal(y_scale)
    Y[m, i] ~ N( 1/(N-1) sum_{j != i} sum_h phi_{c_h}(X[m,i]^T A_h X[m,j]), sigma^2 )

Each head is the single-head model of :mod:`bayes_ips.models.lowrank_spline` (its
gauge factor on the radii and balance of ``U_h, V_h``, its unit-norm ``A_h``, its
prior on ``c_h``); the heads share the noise and add up in the mean.  Given the
``A_h`` the model is linear in ``c = (c_1, ..., c_H)``, with the concatenated design
``F = [F_1 ... F_H]`` of :func:`bayes_ips.pairwise.gram` and the block prior
precision ``Q = blockdiag(Q_1, ..., Q_H)``, so ``collapsed=True`` integrates all the
heads' coefficients out jointly (:func:`bayes_ips.collapsed.collapsed_loglik`) and
the sampler moves in ``H (2 d r + 1) + 1`` dimensions.  With ``H = 1`` the log
density is that of ``lowrank_spline``.

Identifiability.  Only ``G(x, y) = sum_h phi_h(x^T A_h y)`` is identified by the
data.  Single heads are identified only up to a permutation of the heads, a sign
per head (``A_h -> -A_h`` with ``phi_h`` reflected) and constant shifts between heads
(``phi_1 + a``, ``phi_2 - a``: the B-splines sum to one, so ``F`` has an exact null
direction, held only by the weak ridge of ``Q``), and only when the ``A_h`` differ
(two heads with proportional ``A_h`` merge into one; linear parts of the ``phi_h``
mix across heads).  Comparisons therefore use ``G``, or heads aligned to a
reference and centred (:func:`bayes_ips.multihead_posterior.align_draws`), never
the raw factors.

``stats`` (collapsed form only), as in ``lowrank_spline``: the Gram statistics of
:func:`bayes_ips.pairwise.gram` at these ``A_h``, when the caller already has them
(the Laplace-proposal sampler computes them once per proposal and reuses them for
the conditional of ``c``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayes_ips.collapsed import collapsed_loglik, curvature_penalty, pspline_precision
from bayes_ips.gauge import gauge_factors
from bayes_ips.pairwise import grad_chunk, gram, pairwise_mean
from bayes_ips.spline import Knots, make_knots, n_basis, quantile_breaks

from .lowrank_spline import KAPPA, gauge_log_factor, tau_prior

__all__ = ["block_precision", "heads_setup", "multihead_spline"]


def block_precision(penalty, tau, y_scale):
    """The per-head prior precisions ``Q_h`` ``(H, nb, nb)`` and their block diagonal ``Q``."""
    Qs = jax.vmap(lambda D, t: pspline_precision(D, t, KAPPA * y_scale))(penalty, tau)
    return Qs, jax.scipy.linalg.block_diag(*Qs)


def heads_setup(Y, scores_per_head, n_intervals: int, degree: int = 3, knots=None) -> dict:
    """The data keywords of :func:`multihead_spline`, per head as in ``model_setup``.

    Parameters
    ----------
    Y : (M, N) array
    scores_per_head : sequence of H arrays (or an (H, S) array)
        Each head's training scores ``X_mi^T A_h X_mj``, ``i != j``.
    n_intervals : int
        Intervals per head (one K for all heads: the kernel stacks the breaks).
    degree : int
    knots : Knots, optional
        (H, K + 1) breaks chosen elsewhere (e.g. by the model's marginal likelihood,
        :func:`bayes_ips.kselect.posterior_basis`); default: each head's K at
        quantiles of its scores.  The penalties are in units of each head's score sd.

    Returns
    -------
    dict with ``knots`` (Knots, breaks (H, K + 1)), ``penalty`` ((H, nb - 2, nb)) and
    ``y_scale`` (float, RMS(Y)).
    """
    breaks, penalty = [], []
    for h, s in enumerate(scores_per_head):
        s = np.asarray(s)
        if knots is None:
            kn = make_knots(quantile_breaks(s, n_intervals), degree, 1)
        else:
            kn = Knots(jnp.asarray(knots.breaks)[h], knots.degree, knots.multiplicity, knots.tail)
        breaks.append(np.asarray(kn.breaks))
        penalty.append(curvature_penalty(kn, float(np.std(s))))
    return {
        "knots": Knots(jnp.asarray(np.stack(breaks)), degree, 1, kn.tail),
        "penalty": np.stack(penalty),
        "y_scale": float(np.sqrt(np.mean(np.asarray(Y) ** 2))),
    }


def multihead_spline(
    X,
    Y=None,
    *,
    heads: int,
    rank: int,
    knots: Knots,
    penalty,
    y_scale: float = 1.0,
    collapsed: bool = True,
    chunk_size: int | None = None,
    stats=None,
):
    M, N, d = X.shape
    H, nb = heads, n_basis(knots)
    chunk_size = chunk_size or grad_chunk(N, M)
    U = numpyro.sample("U", dist.Normal(0.0, 1.0).expand([H, d, rank]).to_event(3))
    V = numpyro.sample("V", dist.Normal(0.0, 1.0).expand([H, d, rank]).to_event(3))
    numpyro.factor("gauge", jnp.sum(jax.vmap(gauge_log_factor)(U, V)))  # one per head
    Un, Vn = jax.vmap(gauge_factors)(U, V)
    numpyro.deterministic("A", Un @ jnp.swapaxes(Vn, -1, -2))
    tau = numpyro.sample("tau", tau_prior(y_scale).expand([H]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(y_scale))
    Qs, Q = block_precision(jnp.asarray(penalty), tau, y_scale)
    if collapsed and Y is not None:
        if stats is None:  # given only by callers that computed them at these A_h
            stats = gram(Un, Vn, X, Y, knots, chunk_size)  # F = [F_1 ... F_H]
        numpyro.factor("Y_marginal", collapsed_loglik(stats, sigma, Q))
        return
    c = numpyro.sample(
        "c", dist.MultivariateNormal(jnp.zeros((H, nb)), precision_matrix=Qs).to_event(1)
    )
    mean = pairwise_mean(Un, Vn, c, X, knots, chunk_size)
    numpyro.sample("Y", dist.Normal(mean, sigma).to_event(2), obs=Y)
