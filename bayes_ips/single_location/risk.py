"""Risks by Monte Carlo: of any predictor, of the Bayes predictor, and the excess between them.

All three are averages over ``n`` fresh samples ``(X, Y)`` drawn from the truth in
batches; the same ``(key, batch)`` gives the same samples (the first ``n`` of one
sequence), so two predictors evaluated with one key are compared on the same draws
(a paired design).

* ``risk(f) = E[(Y - f(X))^2]``: the mean squared error, s.e. = sd / sqrt(n).
* ``bayes_risk = E[Var(Y | X)]``: the Bayes predictor's risk, estimated by the
  mean of the closed-form conditional variance (Rao-Blackwellised: the noise of
  ``Y`` given ``X`` is integrated out exactly, which lowers the s.e.).
* ``excess(f) = risk(f) - bayes_risk = E[(f(X) - E[Y | X])^2]`` (Pythagoras:
  ``E[Y | X]`` is the L2 projection of Y).  It is estimated by the mean of
  ``(f - f_bayes)^2`` on the draws: this is the paired difference of the two
  squared losses, ``(Y - f)^2 - (Y - f_bayes)^2 = (f - f_bayes)^2 + 2 (f_bayes - f)(Y - f_bayes)``,
  with its zero-mean cross term removed, so it is never negative and its paired
  s.e. is smaller than that of the loss difference.

:func:`oracle_lambda` is the lambda at which an attention predictor at the truth
``(k*, v*)`` comes closest to the Bayes predictor: the excess risk there is the
approximation floor of the predictor class.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bayes_ips.errors import InputError
from bayes_ips.single_location.attention import check_attention, profile_lambda_scores
from bayes_ips.single_location.bayes import bayes_conditional_variance, bayes_predict
from bayes_ips.single_location.simulate import SLRTruth, simulate

__all__ = [
    "DEFAULT_N",
    "ExcessRisk",
    "RiskEstimate",
    "bayes_risk",
    "excess_risk",
    "mc_terms",
    "oracle_lambda",
    "risk",
]

DEFAULT_N = 20_000
BATCH = 4096  # samples per batch: (BATCH, L, d) floats, 131 MB at L = 10, d = 400

Predictor = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class RiskEstimate:
    """A Monte Carlo mean with its standard error over ``n`` samples."""

    mean: float
    se: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ExcessRisk:
    """Risk of a predictor, the Bayes risk and the excess, on the same ``n`` draws.

    Attributes
    ----------
    excess, excess_se : float
        ``E[(f - E[Y | X])^2]`` and its paired s.e.
    risk, risk_se : float
        ``E[(Y - f)^2]``.
    bayes_risk, bayes_risk_se : float
        ``E[Var(Y | X)]``.
    n : int
    """

    excess: float
    excess_se: float
    risk: float
    risk_se: float
    bayes_risk: float
    bayes_risk_se: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _mean_se(a: np.ndarray) -> tuple[float, float]:
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else math.inf
    return float(a.mean()), se


def mc_terms(
    key: jax.Array,
    predict: Predictor | None,
    truth: SLRTruth,
    n: int = DEFAULT_N,
    *,
    batch: int = BATCH,
) -> dict[str, np.ndarray]:
    """Per-sample terms of the Monte Carlo estimates on ``n`` fresh samples.

    Parameters
    ----------
    key : PRNG key
        Batch ``b`` is drawn with ``fold_in(key, b)`` (at full size; the last is cut).
    predict : callable or None
        ``X (B, L, d) -> (B,)``; None skips ``f``.
    truth : SLRTruth
    n : int
    batch : int

    Returns
    -------
    dict of (n,) arrays: ``y``, ``f`` (when ``predict`` is given), ``f_bayes``
    (``E[Y | X]``) and ``cond_var`` (``Var(Y | X)``).
    """
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise InputError(f"the number of Monte Carlo samples must be an integer >= 2, got {n}")
    n, batch = int(n), min(int(batch), int(n))
    out: dict[str, list[np.ndarray]] = {"y": [], "f": [], "f_bayes": [], "cond_var": []}
    for b, lo in enumerate(range(0, n, batch)):
        # every batch is drawn (and predicted) at full size, then cut: one shape, one
        # compilation, and the first n draws do not depend on n
        size = min(batch, n - lo)
        X, Y, _ = simulate(jax.random.fold_in(key, b), truth, batch)
        out["y"].append(np.asarray(Y)[:size])
        out["f_bayes"].append(np.asarray(bayes_predict(truth, X))[:size])
        out["cond_var"].append(np.asarray(bayes_conditional_variance(truth, X))[:size])
        if predict is not None:
            f = np.asarray(jnp.asarray(predict(X)), dtype=np.float64)
            if f.shape != (batch,):
                raise ValueError(f"predict must map (B, L, d) to (B,), got shape {f.shape}")
            out["f"].append(f[:size])
    return {k: np.concatenate(v) for k, v in out.items() if v}


def risk(
    key: jax.Array, predict: Predictor, truth: SLRTruth, n: int = DEFAULT_N, *, batch: int = BATCH
) -> RiskEstimate:
    """``E[(Y - f(X))^2]`` by Monte Carlo on ``n`` fresh samples."""
    t = mc_terms(key, predict, truth, n, batch=batch)
    return RiskEstimate(*_mean_se((t["y"] - t["f"]) ** 2), int(n))


def bayes_risk(
    key: jax.Array, truth: SLRTruth, n: int = DEFAULT_N, *, batch: int = BATCH
) -> RiskEstimate:
    """The Bayes risk ``E[Var(Y | X)]`` (Rao-Blackwellised Monte Carlo on ``n`` samples)."""
    t = mc_terms(key, None, truth, n, batch=batch)
    return RiskEstimate(*_mean_se(t["cond_var"]), int(n))


def excess_risk(
    key: jax.Array, predict: Predictor, truth: SLRTruth, n: int = DEFAULT_N, *, batch: int = BATCH
) -> ExcessRisk:
    """Excess risk of ``predict`` over the Bayes predictor, with its risk and the Bayes risk.

    Parameters
    ----------
    key : PRNG key
    predict : callable
        ``X (B, L, d) -> (B,)``.
    truth : SLRTruth
    n : int
        Fresh samples (default 20000).

    Returns
    -------
    ExcessRisk
    """
    t = mc_terms(key, predict, truth, n, batch=batch)
    excess = _mean_se((t["f"] - t["f_bayes"]) ** 2)
    r = _mean_se((t["y"] - t["f"]) ** 2)
    b = _mean_se(t["cond_var"])
    return ExcessRisk(*excess, *r, *b, int(n))


def oracle_lambda(
    key: jax.Array,
    truth: SLRTruth,
    attention: str = "erf",
    n: int = DEFAULT_N,
    *,
    batch: int = BATCH,
) -> float:
    """The lambda minimising the excess risk of ``attention`` at ``(k*, v*)``.

    The profile fit (:func:`bayes_ips.single_location.attention.profile_lambda`) of
    ``T_lambda(X)`` at ``(k*, v*)`` to the Bayes predictor ``E[Y | X]`` on ``n`` fresh
    samples (batch ``b`` drawn with ``fold_in(key, b)``); evaluate the excess risk
    there with another key.  At ``gamma = 1`` softmax attention gives ``sqrt(d/2)``.
    """
    check_attention(attention)
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise InputError(f"the number of Monte Carlo samples must be an integer >= 2, got {n}")
    n, batch = int(n), min(int(batch), int(n))
    S, U, F = [], [], []
    for b, lo in enumerate(range(0, n, batch)):
        size = min(batch, n - lo)
        X, _, _ = simulate(jax.random.fold_in(key, b), truth, batch)
        S.append(np.asarray(X @ truth.k)[:size])
        U.append(np.asarray(X @ truth.v)[:size])
        F.append(np.asarray(bayes_predict(truth, X))[:size])
    return profile_lambda_scores(np.concatenate(S), np.concatenate(U), np.concatenate(F), attention)
