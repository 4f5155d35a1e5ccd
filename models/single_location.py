"""Single-location regression with the attention predictor (arXiv 2410.01537), Bayesian.

    z_k, z_v ~ N(0, I_d)                 k = z_k / ||z_k||,  v = z_v / ||z_v||
    lambda ~ LogNormal(log 0.2, 1)       sigma ~ HalfNormal(y_scale)
    Y[m] ~ N( sum_l erf(lambda <X[m, l], k>) <X[m, l], v>, sigma^2 )

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
``(k, v) -> (-k, -v)`` leaves the likelihood unchanged: the posterior has two
mirrored modes, aligned at summary time.  ``Y=None`` gives the prior predictive.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bayes_ips.single_location.attention import erf_attention

__all__ = ["LAMBDA_LOG_SD", "LAMBDA_MEDIAN", "RADIUS_SD", "radial_log_factor", "single_location"]

LAMBDA_MEDIAN = 0.2  # prior median of lambda
LAMBDA_LOG_SD = 1.0  # prior sd of log(lambda)
RADIUS_SD = 0.1  # relative sd of ||z|| around sqrt(d) added by the radial factor


def radial_log_factor(z):
    """Log-density on the radius only: ``-(||z|| / sqrt(d) - 1)^2 / (2 RADIUS_SD^2)``."""
    return -0.5 * (jnp.linalg.norm(z) / math.sqrt(z.shape[-1]) - 1.0) ** 2 / RADIUS_SD**2


def single_location(
    X,
    Y=None,
    *,
    y_scale: float = 1.0,
    lambda_median: float = LAMBDA_MEDIAN,
    lambda_log_sd: float = LAMBDA_LOG_SD,
):
    d = X.shape[-1]
    z_k = numpyro.sample("z_k", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
    z_v = numpyro.sample("z_v", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
    numpyro.factor("radius", radial_log_factor(z_k) + radial_log_factor(z_v))
    k = numpyro.deterministic("k", z_k / jnp.linalg.norm(z_k))
    v = numpyro.deterministic("v", z_v / jnp.linalg.norm(z_v))
    lam = numpyro.sample("lambda", dist.LogNormal(jnp.log(lambda_median), lambda_log_sd))
    sigma = numpyro.sample("sigma", dist.HalfNormal(y_scale))
    numpyro.sample("Y", dist.Normal(erf_attention(X, k, v, lam), sigma).to_event(1), obs=Y)
