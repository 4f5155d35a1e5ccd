"""The paper's estimator: projected (Riemannian) gradient descent on the sphere.

The empirical risk ``R(k, v) = mean_m (Y_m - T_lambda(X_m))^2`` is minimised over
unit ``k`` and ``v`` (the paper's Definition 1)::

    k <- retract(k - lr * (grad_k R - <grad_k R, k> k)),   retract(x) = x / ||x||

and likewise for ``v``, full-batch by default or on mini-batches (drawn with
replacement, one per step).  The step is ``lr / C`` with ``C`` the largest
eigenvalue of the token second moment ``(1/M) sum_{m,l} x_ml x_ml^T`` (a few power
iterations): since ``|erf| <= 1``, ``2 C`` bounds the curvature of the risk in ``v``,
which grows like ``d/2`` along ``k*`` (``C ~ d/2 + L`` here), so ``lr = 0.5`` is the
classical ``1 / Lipschitz`` step at every ``d``.  A fixed step does not carry over:
0.05 works at d = 50 and diverges at d = 400.  ``lambda`` follows a schedule from ``lambda0`` to
``lambda1`` over the steps (constant, linear, geometric, or the paper's
``lambda0 / (1 + c t)``, here with ``c`` set to end at ``lambda1``).  With
``refit_lambda`` (default) the fit then predicts with the ``lambda`` that minimises
the training loss at the final ``(k, v)`` (a one-dimensional profile fit on a log
grid), since the risk of ``T`` depends strongly on ``lambda``.

Attention (``attention``, :mod:`bayes_ips.single_location.attention`).  The same
descent fits ``erf``, ``softmax`` and ``linear`` attention.  Softmax weights are
convex, so ``2 C`` bounds the curvature in ``v`` as for erf.  Linear weights
``lambda <x_l, k>`` are unbounded: along ``k*`` they reach ``lambda sqrt(d/2)``, and by
Cauchy-Schwarz the curvature grows to ``~ 2 lambda^2 C^2``; the step is then
``lr / (C max(1, lambda_max^2 C))`` (measured at d = 400, lambda = 1: the plain
``lr / C`` step diverges).  The default ``lambda`` depends on the attention
(:data:`DEFAULT_LAMBDA`): 0.1 for erf and linear, 1 for softmax, whose weights are
nearly uniform at 0.1 (measured at d = 20, M = 2000, gamma^2 = 0.5 over 3 seeds:
``nu`` 0.95-0.96 at lambda = 0.1, 0.998-0.999 at 1; ``kappa`` >= 0.99 at both).

Defaults, and why (measured at L = 10, gamma = sqrt(1/2), d = 20-100, M = 1000-4000):

* ``lambda`` constant at 0.1: the risk-optimal lambda at ``(k*, v*)`` is 0.06-0.09 for
  d = 10..400.  Larger lambda makes the noise tokens dominate the empirical risk
  (their variance ``(L - 1) E[erf(lambda z)^2]`` does not depend on ``(k, v)``,
  but its sample fluctuations do), and at M = 1000, d = 30 a run at lambda >= 0.3
  drifts away from ``k*`` even from the moment start; the paper's decreasing
  schedule (lambda from 1 down) is designed for the population risk.
* ``init="moment"``: from uniform starts, PGD ends near the *swapped* critical
  point ``(k, v) = +-(v*, k*)`` in about half of the runs.  That point is a genuine
  competitor: ``T`` is symmetric in ``k <-> v`` when erf is linear, and for
  ``lambda sqrt(d/2) < ~1`` the swapped predictor has the *lower* risk
  (``sqrt(d/2) erf(lambda <x, v*>)`` rescales the signal token with gain
  ``~ 1.13 lambda sqrt(d/2)``, while ``erf(lambda <x, k*>) <= 1`` cannot).
  The moment start lies in the basin of ``(k*, v*)``.

Starts.  ``sphere`` (the paper's): uniform on the sphere from the key.
``moment``: the method-of-moments directions
``k0 ∝ sum_{m,l} x_ml`` (since ``E[sum_l x_l] = sqrt(d/2) k*``) and
``v0 ∝ (I - k0 k0^T) sum_{m,l} Y_m x_ml`` (since ``E[Y sum_l x_l] = gamma^2 v*``:
only the signal token correlates with Y).  Both are unbiased up to
normalisation; ``v0`` is noisy when ``M`` is small against ``L d``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.errors import InputError
from bayes_ips.single_location.attention import (
    attend,
    check_attention,
    profile_lambda,
    sq_loss,
)
from bayes_ips.single_location.data import check_data
from bayes_ips.single_location.sphere import random_unit, retract, tangent

__all__ = [
    "DEFAULT_LAMBDA",
    "INITS",
    "SCHEDULES",
    "PGDConfig",
    "PGDFit",
    "curvature_scale",
    "fit_pgd",
    "lambda_schedule",
    "moment_init",
    "profile_lambda",  # re-exported: its home is .attention
    "step_scale",
]

SCHEDULES = ("constant", "linear", "geometric", "inverse")
#: the default lambda0 and lambda1 of each attention (see the module docstring)
DEFAULT_LAMBDA = {"erf": 0.1, "softmax": 1.0, "linear": 0.1}
INITS = ("moment", "sphere")


@dataclasses.dataclass(frozen=True)
class PGDConfig:
    """Settings of the PGD fit.

    Attributes
    ----------
    steps : int
    lr : float
        Step size in units of ``1 / C`` (see the module docstring; 0.5 = 1 / Lipschitz
        bound of the v-gradient).
    lambda_schedule : {"constant", "linear", "geometric", "inverse"}
    lambda0, lambda1 : float or None
        First and last lambda of the schedule (``lambda1`` is ignored by
        ``constant``).  The predictor of the fit uses ``lambda1``.  None (the
        default): the attention's :data:`DEFAULT_LAMBDA`, filled in at construction.
    batch_size : int or None
        None: full-batch gradient descent; otherwise SGD on batches of this size.
    init : {"moment", "sphere"}
    refit_lambda : bool
        Predict with the training-loss-optimal lambda at the final ``(k, v)``
        instead of the schedule's last value.
    attention : {"erf", "softmax", "linear"}
        The predictor (:func:`bayes_ips.single_location.attention.attend`).
    """

    steps: int = 3000
    lr: float = 0.5
    lambda_schedule: str = "constant"
    lambda0: float | None = None
    lambda1: float | None = None
    batch_size: int | None = None
    init: str = "moment"
    refit_lambda: bool = True
    attention: str = "erf"

    def __post_init__(self) -> None:
        default = DEFAULT_LAMBDA.get(self.attention)  # an unknown attention: see validate
        for name in ("lambda0", "lambda1"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    def validate(self) -> PGDConfig:
        check_attention(self.attention)
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise InputError(f"steps must be a positive integer, got {self.steps}")
        for name in ("lr", "lambda0", "lambda1"):
            value = getattr(self, name)
            if not (value > 0) or math.isinf(value):
                raise InputError(f"{name} must be a positive finite number, got {value}")
        if self.lambda_schedule not in SCHEDULES:
            raise InputError(
                f"unknown lambda schedule {self.lambda_schedule!r}; "
                f"choose from {', '.join(SCHEDULES)}"
            )
        if self.init not in INITS:
            raise InputError(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        b = self.batch_size
        if b is not None and (isinstance(b, bool) or int(b) != b or b < 1):
            raise InputError(f"batch size must be a positive integer, got {b}")
        return self

    @property
    def final_lambda(self) -> float:
        return self.lambda0 if self.lambda_schedule == "constant" else self.lambda1


def lambda_schedule(kind: str, lambda0: float, lambda1: float, steps: int) -> np.ndarray:
    """Lambda at every step: (steps,).

    ``constant``: ``lambda0``.  ``linear``: ``lambda0 + (lambda1 - lambda0) t / (steps - 1)``.
    ``geometric``: ``lambda0 (lambda1 / lambda0)^(t / (steps - 1))``.
    ``inverse``: ``lambda0 / (1 + c t)`` with ``c = (lambda0 / lambda1 - 1) / (steps - 1)``
    (the paper's shape).  Every non-constant schedule starts at ``lambda0`` and ends
    at ``lambda1``.
    """
    t = np.arange(steps) / max(steps - 1, 1)
    if kind == "constant":
        return np.full(steps, float(lambda0))
    if kind == "linear":
        return lambda0 + (lambda1 - lambda0) * t
    if kind == "geometric":
        return lambda0 * (lambda1 / lambda0) ** t
    if kind == "inverse":
        return lambda0 / (1.0 + (lambda0 / lambda1 - 1.0) * t)
    raise InputError(f"unknown lambda schedule {kind!r}; choose from {', '.join(SCHEDULES)}")


def moment_init(X: ArrayLike, Y: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Method-of-moments directions ``(k0, v0)`` (see the module docstring): (d,), (d,)."""
    X, Y = jnp.asarray(X), jnp.asarray(Y)
    k0 = retract(jnp.sum(X, axis=(0, 1)))
    g = jnp.einsum("m,mld->d", Y, X)
    return k0, retract(tangent(k0, g))


def step_scale(C: float, lams: np.ndarray, attention: str) -> float:
    """The curvature unit of the step: ``C``, or ``C max(1, max(lambda)^2 C)`` for linear."""
    if attention == "linear":
        return C * max(1.0, float(np.max(lams)) ** 2 * C)
    return C


def curvature_scale(X: ArrayLike, iters: int = 30) -> float:
    """Largest eigenvalue of ``(1/M) sum_{m,l} x_ml x_ml^T`` by power iteration (from ``1``)."""
    X = jnp.asarray(X)
    M = X.shape[0]

    def body(_, u):
        w = jnp.einsum("mld,ml->d", X, X @ u) / M
        return w / jnp.linalg.norm(w)

    u = jax.lax.fori_loop(0, iters, body, jnp.ones(X.shape[-1]) / math.sqrt(X.shape[-1]))
    return float(u @ jnp.einsum("mld,ml->d", X, X @ u) / M)


@dataclasses.dataclass(frozen=True)
class PGDFit:
    """A fitted ``T``: unit ``k``, ``v`` (sign as found) and the ``lam`` it predicts with.

    ``info`` holds ``train_loss`` (at ``k, v, lam`` on all data), ``loss_trace``
    (the loss of every ``trace_every``-th step: full data, or the step's batch
    for SGD), ``trace_every``, ``k0``, ``v0`` (the start) and ``wall_time_s``.
    """

    k: np.ndarray
    v: np.ndarray
    lam: float
    config: PGDConfig
    seed: int
    info: dict[str, Any]

    @property
    def attention(self) -> str:
        return self.config.attention

    def predict(self, X: ArrayLike) -> jax.Array:
        """``T(X)`` for ``X`` (P, L, d): (P,)."""
        X, k, v = jnp.asarray(X), jnp.asarray(self.k), jnp.asarray(self.v)
        return attend(X, k, v, self.lam, self.config.attention)


_value_and_grad = jax.value_and_grad(sq_loss, argnums=(2, 3))


def _pgd_scan(X, Y, k0, v0, lams, lr, key, batch_size, attention):
    M = X.shape[0]

    def step(carry, inp):
        k, v = carry
        lam, t = inp
        if batch_size is None:
            Xb, Yb = X, Y
        else:
            idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, M)
            Xb, Yb = X[idx], Y[idx]
        loss, (gk, gv) = _value_and_grad(Xb, Yb, k, v, lam, attention)
        k = retract(k - lr * tangent(k, gk))
        v = retract(v - lr * tangent(v, gv))
        return (k, v), loss

    (k, v), losses = jax.lax.scan(step, (k0, v0), (lams, jnp.arange(len(lams))))
    return k, v, losses


_pgd_scan_jit = jax.jit(_pgd_scan, static_argnames=("batch_size", "attention"))


def fit_pgd(
    key: jax.Array,
    X: ArrayLike,
    Y: ArrayLike,
    config: PGDConfig = PGDConfig(),
    *,
    seed: int | None = None,
    trace_every: int = 10,
) -> PGDFit:
    """Fit ``(k, v)`` by projected gradient descent on the empirical squared risk.

    Parameters
    ----------
    key : PRNG key
        Draws the start (``sphere``) and the mini-batches.
    X : (M, L, d) array
    Y : (M,) array
    config : PGDConfig
    seed : int, optional
        Recorded in the fit (the key's seed, for files).
    trace_every : int
        Keep the loss of every ``trace_every``-th step.

    Returns
    -------
    PGDFit
    """
    X, Y = check_data(X, Y)
    config.validate()
    M, _, d = X.shape
    batch = None if config.batch_size is None or config.batch_size >= M else config.batch_size
    k_init, k_batch = jax.random.split(key)
    t0 = time.perf_counter()
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    if config.init == "sphere":
        k0, v0 = random_unit(k_init, d, (2,))
    else:
        k0, v0 = moment_init(Xj, Yj)
    lams = lambda_schedule(config.lambda_schedule, config.lambda0, config.lambda1, config.steps)
    C = curvature_scale(Xj)
    scale = step_scale(C, lams, config.attention)
    k, v, losses = _pgd_scan_jit(
        Xj,
        Yj,
        k0,
        v0,
        jnp.asarray(lams),
        config.lr / scale,
        k_batch,
        batch_size=batch,
        attention=config.attention,
    )
    k, v = np.asarray(k), np.asarray(v)
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(v))):
        raise InputError(
            f"PGD diverged (non-finite k or v); lower the step size (lr = {config.lr})"
        )
    attention = config.attention
    lam = profile_lambda(Xj, Yj, k, v, attention) if config.refit_lambda else float(lams[-1])
    info = {
        "schedule_final_lambda": float(lams[-1]),
        "curvature_scale": C,
        "step": config.lr / scale,
        "train_loss": float(sq_loss(Xj, Yj, k, v, lam, attention)),
        "loss_trace": np.asarray(losses)[::trace_every].tolist(),
        "trace_every": int(trace_every),
        "k0": np.asarray(k0).tolist(),
        "v0": np.asarray(v0).tolist(),
        "M": int(M),
        "wall_time_s": time.perf_counter() - t0,
    }
    return PGDFit(k, v, lam, config, -1 if seed is None else int(seed), info)
