"""Single-location regression with an attention predictor (arXiv 2410.01537), Bayesian.

    z_k, z_v ~ N(0, I_d)                 k = z_k / ||z_k||,  v = z_v / ||z_v||
    lambda ~ LogNormal(log m_a, s_a)     sigma ~ HalfNormal(y_scale)
    Y[m] ~ N( sum_l w_l(lambda <X[m, l], k>) <X[m, l], v>, sigma^2 )

with the token weights ``w`` of the attention ``a`` (erf by default, softmax or
linear: :func:`bayes_ips.single_location.attention.attend`) and its prior on lambda
(:data:`LAMBDA_PRIORS`, ``(m_a, s_a)``).

Normalised standard Gaussians are uniform on the sphere (the law of ``z`` is
rotation-invariant, so that of ``z / ||z||`` is too), and the direction is
independent of the radius ``||z||``, which the likelihood never sees.  A weak
rotation-invariant factor pins each radius near ``sqrt(d)``: it keeps NUTS away
from the origin, where the angle of ``z`` is arbitrarily sensitive (a funnel for
small d), and leaves the uniform law of ``k`` and ``v`` exactly unchanged.  Measured
at d = 3, L = 3, M = 300, 2 x (300 + 300) from the PGD start: 10 divergences and
15 leapfrog steps per iteration without it, none and 7 with it; at d = 20 it
changes little (21 vs 17 steps, no divergences either way).

``lambda`` is positive and scale-like, hence log-normal: its median 0.2 and log-sd 1
put 95% of the prior mass on [0.03, 1.4], which covers the risk-optimal values
at ``(k*, v*)`` (0.06-0.09 for d = 10..400 at L = 10) and the paper's range
(0.08-1); ``lambda -> 0`` (where ``T -> 0`` and ``k`` is unidentified) gets little mass.
Linear attention takes the same prior: its risk-optimal lambda at ``(k*, v*)`` is
near ``1 / sqrt(d/2)`` (0.07-0.3 for d = 20..400).  Softmax attention needs a larger
lambda: ``sqrt(d/2)`` is Bayes-optimal at gamma = 1 (3.2 at d = 20, 14 at d = 400),
and ``lambda -> 0`` gives uniform weights; its prior, median 5 and log-sd 1.5, puts
95% of the mass on [0.26, 95].  The symmetries of the likelihood are those of
``T`` (:data:`bayes_ips.single_location.sphere.SYMMETRIES`): for erf,
``(k, v) -> (-k, -v)``, two mirrored modes; for linear, also ``k <-> v``, four; for
softmax none.  They are aligned at summary time.  ``Y=None`` gives the prior
predictive.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bayes_ips.single_location.attention import attend

__all__ = [
    "LAMBDA_LOG_SD",
    "LAMBDA_MEDIAN",
    "LAMBDA_PRIORS",
    "RADIUS_SD",
    "radial_log_factor",
    "single_location",
]

LAMBDA_MEDIAN = 0.2  # prior median of lambda (erf)
LAMBDA_LOG_SD = 1.0  # prior sd of log(lambda) (erf)
#: (median, log-sd) of the log-normal prior on lambda, per attention (see above)
LAMBDA_PRIORS = {
    "erf": (LAMBDA_MEDIAN, LAMBDA_LOG_SD),
    "linear": (LAMBDA_MEDIAN, LAMBDA_LOG_SD),
    "softmax": (5.0, 1.5),
}
RADIUS_SD = 0.1  # relative sd of ||z|| around sqrt(d) added by the radial factor


def radial_log_factor(z):
    """Log-density on the radius only: ``-(||z|| / sqrt(d) - 1)^2 / (2 RADIUS_SD^2)``."""
    return -0.5 * (jnp.linalg.norm(z) / math.sqrt(z.shape[-1]) - 1.0) ** 2 / RADIUS_SD**2


def single_location(
    X,
    Y=None,
    *,
    y_scale: float = 1.0,
    lambda_median: float | None = None,
    lambda_log_sd: float | None = None,
    attention: str = "erf",
    lambda_fixed: float | None = None,
):
    """The model above; ``lambda_median``, ``lambda_log_sd``: None takes :data:`LAMBDA_PRIORS`.

    ``lambda_fixed``: lambda is that constant instead of a sampled site (empirical
    Bayes, e.g. the PGD fit's lambda; recorded as the deterministic site ``lambda``).
    """
    median, log_sd = LAMBDA_PRIORS[attention]
    lambda_median = median if lambda_median is None else lambda_median
    lambda_log_sd = log_sd if lambda_log_sd is None else lambda_log_sd
    d = X.shape[-1]
    z_k = numpyro.sample("z_k", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
    z_v = numpyro.sample("z_v", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
    numpyro.factor("radius", radial_log_factor(z_k) + radial_log_factor(z_v))
    k = numpyro.deterministic("k", z_k / jnp.linalg.norm(z_k))
    v = numpyro.deterministic("v", z_v / jnp.linalg.norm(z_v))
    if lambda_fixed is None:
        lam = numpyro.sample("lambda", dist.LogNormal(jnp.log(lambda_median), lambda_log_sd))
    else:
        lam = numpyro.deterministic("lambda", jnp.asarray(lambda_fixed, dtype=X.dtype))
    sigma = numpyro.sample("sigma", dist.HalfNormal(y_scale))
    numpyro.sample("Y", dist.Normal(attend(X, k, v, lam, attention), sigma).to_event(1), obs=Y)
