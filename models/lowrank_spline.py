"""Low-rank attention-style IPS with a P-spline interaction function.

    U, V ~ N(0, 1)^(d x r)                 A = U V^T / ||U V^T||_F   (gauge: unit norm)
    tau ~ HalfCauchy(y_scale)              c | tau ~ N(0, Q(tau)^{-1})  (P-spline prior:
                                           Q = D^T D / tau^2 + I / (10 y_scale)^2, D the
                                           curvature penalty of bayes_ips.collapsed)
    sigma ~ HalfNormal(y_scale)
    Y[m, i] ~ N( 1/(N-1) sum_{j != i} phi_c(X[m,i]^T A X[m,j]), sigma^2 )

The normalisation removes the scale ridge between A and phi (their product is all
the data sees); the sign and rotation symmetries remain and are handled at
summary time.  ``collapsed=True`` integrates ``c`` out exactly (its conditional is
Gaussian given A, sigma, tau): the sampler then moves in ``2 d r + 2`` dimensions
only, and ``c`` is drawn afterwards from its exact conditional.  Both forms call
the package's single pairwise kernel.  ``Y=None`` gives the prior predictive.

``stats`` (collapsed form only) are the Gram statistics of :func:`bayes_ips.pairwise.gram`
at this ``A``, when the caller already has them: the Laplace-IMH sampler computes
them once per proposal and reuses them for the conditional of ``c``, and at d = 1
(where ``A = +-1``) they exist once per sign.  ``tau_law`` (:data:`TAU_LAWS`) swaps the
half-Cauchy of tau for the HalfNormal with which the basis is chosen (:func:`tau_prior`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayes_ips.collapsed import collapsed_loglik, curvature_penalty, pspline_precision
from bayes_ips.gauge import gauge_factors  # re-exported: the model's gauge lives there
from bayes_ips.pairwise import grad_chunk, gram, pairwise_mean
from bayes_ips.spline import Knots, make_knots, n_basis, quantile_breaks

__all__ = [
    "gauge_factors",
    "gauge_log_factor",
    "lowrank_spline",
    "model_setup",
    "DEFAULT_TAU_LAW",
    "TAU_LAWS",
    "tau_prior",
]

KAPPA = 10.0  # weak ridge on c, in units of y_scale: prior sd of the level of phi


RADIUS_SD = 0.1  # relative sd of ||U||_F and ||V||_F around sqrt(d r)


#: Laws of the P-spline's scale ``tau`` (:func:`tau_prior`), each with scale ``y_scale``
TAU_LAWS = {"halfcauchy": dist.HalfCauchy, "halfnormal": dist.HalfNormal}
#: The model's law of ``tau`` (:func:`tau_prior`), wherever none is named
DEFAULT_TAU_LAW = "halfcauchy"


def tau_prior(y_scale: float, law: str = DEFAULT_TAU_LAW):
    """The prior of the P-spline's scale ``tau``: HalfCauchy(``y_scale``) by default.

    ``tau`` is the prior sd of the coefficients' weighted second differences, the
    curvature of phi in units of ``y_scale`` per score sd squared.  A phi* that turns
    on a finer scale than the scores' sd needs a ``tau`` many times ``y_scale``
    (sinc(3 s): 3-6).  A HalfNormal there puts ``tau`` 5-10 of its sds out and, where
    the data say little (low signal to noise), pulls it back: the bands then
    over-smooth the peaks and miss them (90% bands covering 0.59-0.78 of held-out
    pairs on a d = 1 sinc at noise 0.5; analyses/RESULTS.md, "The prior of tau").
    The half-Cauchy (Gelman 2006, for the scale of a hierarchical prior) has the
    same constant density near 0 and a tail that lets the data decide.

    ``law="halfnormal"`` is the lighter tail with which the basis and the prior's
    difference order are chosen before sampling (:func:`bayes_ips.kselect.log_evidence`,
    :func:`bayes_ips.inference.refit_order_cv`): there it keeps the order's
    cross-validation sharp on a phi* rough everywhere, which the half-Cauchy's large
    ``tau`` blurs (analyses/RESULTS.md, "The prior of tau").
    """
    if law not in TAU_LAWS:
        raise ValueError(f"unknown tau law {law!r}; choose from {sorted(TAU_LAWS)}")
    return TAU_LAWS[law](y_scale)


def gauge_log_factor(U, V):
    """Log-density on the non-identified radii and balance of the factors."""
    d, r = U.shape
    R = jnp.sqrt(d * r)
    radial = (jnp.sqrt(jnp.sum(U**2)) / R - 1.0) ** 2 + (jnp.sqrt(jnp.sum(V**2)) / R - 1.0) ** 2
    balance = jnp.sum((U.T @ U - V.T @ V) ** 2) / R**4
    return -0.5 * (radial + balance) / RADIUS_SD**2


def model_setup(Y, scores, n_intervals: int, degree: int = 3) -> dict:
    """What the prior of :func:`lowrank_spline` depends on: its data keywords, from the data.

    The prior is fixed before sampling, but three of its pieces are read off the
    data (an empirical-Bayes choice, so that the defaults fit any scale of scores
    and responses):

    * ``knots``: ``n_intervals`` intervals at equal-mass quantiles of ``scores``
      (inference passes the training scores ``X_mi^T A X_mj``, ``i != j``, under an
      ERM fit's A, and ERM's GCV choice of K), simple knots of ``degree``;
    * ``penalty``: the curvature penalty ``D`` in units of the scores' sd;
    * ``y_scale``: ``RMS(Y)``, the scale of the priors of sigma, tau and c.

    Simulation-based calibration needs a prior that does not look at the data:
    :class:`bayes_ips.inference.FixedPrior` gives all three in advance instead.

    Parameters
    ----------
    Y : (M, N) array
    scores : (S,) array
    n_intervals : int
    degree : int

    Returns
    -------
    dict with ``knots`` (Knots), ``penalty`` ((n_basis - 2, n_basis) array) and
    ``y_scale`` (float).
    """
    knots = make_knots(quantile_breaks(scores, n_intervals), degree, 1)
    return {
        "knots": knots,
        "penalty": curvature_penalty(knots, float(np.std(scores))),
        "y_scale": float(np.sqrt(np.mean(np.asarray(Y) ** 2))),
    }


def lowrank_spline(
    X,
    Y=None,
    *,
    rank: int,
    knots: Knots,
    penalty,
    y_scale: float = 1.0,
    collapsed: bool = True,
    chunk_size: int | None = None,
    stats=None,
    tau_law: str = DEFAULT_TAU_LAW,
):
    M, N, d = X.shape
    K = n_basis(knots)
    chunk_size = chunk_size or grad_chunk(N, M)
    U = numpyro.sample("U", dist.Normal(0.0, 1.0).expand([d, rank]).to_event(2))
    V = numpyro.sample("V", dist.Normal(0.0, 1.0).expand([d, rank]).to_event(2))
    # The likelihood sees only the direction of U V^T.  Pin the non-identified
    # radial parts near sqrt(d r) (rotation-invariant, so the prior of A is
    # unchanged) and balance U^T U with V^T V: this turns the cone-shaped ridge
    # of the raw factors into a near-cylinder that an adapted mass matrix handles.
    numpyro.factor("gauge", gauge_log_factor(U, V))
    Un, Vn = gauge_factors(U, V)
    numpyro.deterministic("A", Un @ Vn.T)
    tau = numpyro.sample("tau", tau_prior(y_scale, tau_law))
    sigma = numpyro.sample("sigma", dist.HalfNormal(y_scale))
    Q = pspline_precision(penalty, tau, KAPPA * y_scale)
    if collapsed and Y is not None:
        if stats is None:  # given only by callers that computed them at this A
            stats = gram(Un, Vn, X, Y, knots, chunk_size)
        numpyro.factor("Y_marginal", collapsed_loglik(stats, sigma, Q))
        return
    c = numpyro.sample("c", dist.MultivariateNormal(jnp.zeros(K), precision_matrix=Q))
    mean = pairwise_mean(Un, Vn, c, X, knots, chunk_size)
    numpyro.sample("Y", dist.Normal(mean, sigma).to_event(2), obs=Y)
