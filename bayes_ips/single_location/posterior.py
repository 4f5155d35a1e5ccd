"""Posterior inference for single-location regression: NUTS, sign alignment, the posterior mean.

The model is :func:`bayes_ips.models.single_location.single_location`, sampled by the
package's one NUTS runner (:func:`bayes_ips.nuts.run_chains`).  Chains start from
the PGD fit with a small random rotation per chain (``init="pgd"``, default) or
from the prior (``init="prior"``).

Symmetry.  The attention (``config.attention``: erf, softmax or linear) fixes which
maps of ``(k, v)`` leave the likelihood unchanged
(:data:`bayes_ips.single_location.sphere.SYMMETRIES`), and draws are aligned by
exactly those (:func:`bayes_ips.single_location.sphere.align`; ``(k_ref, v_ref)``: the
PGD fit, or a summary of the draws).  For erf, ``(k, v) -> (-k, -v)``: draws are
flipped within each chain to its principal direction, then each chain to
``<k, k_ref> >= 0``, and mirrored chains agree.  For linear, a chain at the exchanged
point ``(v, k)`` is first exchanged back (it is the same predictor).  Softmax has no
symmetry: nothing is aligned, and a chain at ``(-k, -v)`` is a different mode.
Diagnostics use only invariant quantities: ``lambda``, ``sigma``,
``rho = <k, v>``, the predictions ``pred`` at fixed evaluation inputs, the
reference overlaps ``overlap_k = |<k, k_ref>|``, ``overlap_v = |<v, v_ref>|`` and
``overlap_kv = <k, k_ref> <v, v_ref>`` and, when the truth is known, ``|kappa|``,
``|nu|`` and ``kappa nu``.

Modes.  Chains are compared (:func:`bayes_ips.posterior.mode_check`) on the
predictions *and* the reference overlaps.  Predictions alone lack power against
the one competing mode of this model, the swapped point ``+-(v*, k*)`` (see
:mod:`bayes_ips.single_location.pgd`): it predicts almost like ``(k*, v*)``
(measured at d = 16, M = 500: chain means of ``pred`` within 0.5 posterior sd)
while its overlaps are ~0 instead of ~0.9.  Mirrored chains have equal overlaps
and are never flagged.  Under linear attention the exchanged point is the same
predictor: it is aligned, not flagged.  Under softmax attention the mirrored
point ``(-k, -v)`` is a different predictor (it attends to the lowest scores), and
its predictions flag it.

The posterior-mean predictor ``y_hat(X) = E[T_theta(X) | data]`` averages the
predictor over the draws (:meth:`SLRPosterior.predict`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bayes_ips.errors import InputError
from bayes_ips.models.single_location import LAMBDA_PRIORS, single_location
from bayes_ips.nuts import run_chains
from bayes_ips.ppc import gaussian_loglik, predictive_draws, thin_draws
from bayes_ips.single_location.attention import attend_draws, check_attention
from bayes_ips.single_location.data import check_data
from bayes_ips.single_location.pgd import PGDConfig, PGDFit, fit_pgd
from bayes_ips.single_location.simulate import SLRTruth
from bayes_ips.single_location.sphere import align, symmetries

__all__ = [
    "INITS",
    "SLRPosterior",
    "SLRSamplerConfig",
    "initial_values",
    "model_for",
    "predictor_draws",
    "reference_overlaps",
    "sample_posterior",
]

INITS = ("pgd", "prior")
LAMBDA_FROM = ("prior", "pgd")
SITES = ("z_k", "z_v", "lambda", "sigma")  # the sampled sites, one dense mass block


@functools.cache
def model_for(attention: str):
    """The model with its attention bound: one object per attention (compiled samplers reused)."""
    return functools.partial(single_location, attention=check_attention(attention))


@dataclasses.dataclass(frozen=True)
class SLRSamplerConfig:
    """Settings of a single-location posterior run.

    Attributes
    ----------
    chains, warmup, draws : int
    init : {"pgd", "prior"}
    jitter : float
        Angle (radians, approximately) of the random rotation of the PGD start, per chain.
    target_accept : float
    max_tree_depth : int
    dense_mass : bool
        One dense mass matrix for all sites (default) or a diagonal one.
    lambda_median, lambda_log_sd : float or None
        The log-normal prior of lambda.  None (the default): the attention's
        (:data:`bayes_ips.models.single_location.LAMBDA_PRIORS`), filled in at
        construction.
    attention : {"erf", "softmax", "linear"}
        The predictor of the model.
    lambda_from : {"prior", "pgd"}
        ``"prior"`` (default): lambda is sampled under its log-normal prior.
        ``"pgd"``: lambda is fixed at the PGD fit's (empirical Bayes: the posterior of
        ``k``, ``v`` and ``sigma`` given it, so the bands omit lambda's uncertainty).
        For softmax attention, whose posterior over lambda does not mix (it runs up
        the ridge where the softmax saturates), this mixes where the fit's lambda is
        moderate, not where it sits at the top of the profile grid
        (analyses/RESULTS.md, "Three attentions").
    """

    chains: int = 2
    warmup: int = 500
    draws: int = 500
    init: str = "pgd"
    jitter: float = 0.1
    target_accept: float = 0.85
    max_tree_depth: int = 8
    dense_mass: bool = True
    lambda_median: float | None = None
    lambda_log_sd: float | None = None
    attention: str = "erf"
    lambda_from: str = "prior"

    def __post_init__(self) -> None:
        median, log_sd = LAMBDA_PRIORS.get(self.attention, (None, None))  # unknown: validate
        if self.lambda_median is None:
            object.__setattr__(self, "lambda_median", median)
        if self.lambda_log_sd is None:
            object.__setattr__(self, "lambda_log_sd", log_sd)

    def validate(self) -> SLRSamplerConfig:
        check_attention(self.attention)
        for name in ("chains", "warmup", "draws"):
            value = getattr(self, name)
            lowest = 0 if name == "warmup" else 1
            if isinstance(value, bool) or int(value) != value or value < lowest:
                raise InputError(f"{name} must be a positive integer, got {value}")
        if self.draws < 4:
            raise InputError("draws must be >= 4 for diagnostics")
        if self.lambda_from not in LAMBDA_FROM:
            raise InputError(
                f"unknown lambda_from {self.lambda_from!r}; choose from {', '.join(LAMBDA_FROM)}"
            )
        if self.init not in INITS:
            raise InputError(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        if not 0 < self.target_accept < 1:
            raise InputError(f"target_accept must be in (0, 1), got {self.target_accept}")
        if not (self.jitter >= 0) or math.isinf(self.jitter):
            raise InputError(f"jitter must be finite and >= 0, got {self.jitter}")
        if not (self.lambda_median > 0 and self.lambda_log_sd > 0):
            raise InputError("the lambda prior needs a positive median and log-sd")
        return self


def predictor_draws(
    X: ArrayLike,
    K: ArrayLike,
    V: ArrayLike,
    lam: ArrayLike,
    *,
    attention: str = "erf",
    chunk: int = 256,
) -> np.ndarray:
    """``T_s(X_m)`` for every draw ``s``, in blocks of draws and inputs.

    Parameters
    ----------
    X : (P, L, d) array
    K, V : (S, d) arrays
    lam : (S,) array
    attention : {"erf", "softmax", "linear"}

    Returns
    -------
    (P, S) array
    """
    X = np.asarray(X)
    K, V, lam = (np.asarray(a) for a in (K, V, lam))
    P, L, _ = X.shape
    S = len(K)
    p_chunk = max(1, min(P, (1 << 22) // max(L * chunk, 1)))  # X @ K block ~32 MB
    s_chunk = min(S, chunk)
    out = np.empty((P, S))
    # blocks are zero-padded to fixed shapes: one compilation per (p_chunk, s_chunk)
    for s0 in range(0, S, s_chunk):
        n = min(s_chunk, S - s0)
        Ks, Vs, ls = (_padded(a[s0 : s0 + n], s_chunk) for a in (K, V, lam))
        for p0 in range(0, P, p_chunk):
            m = min(p_chunk, P - p0)
            Xb = _padded(X[p0 : p0 + m], p_chunk)
            block = np.asarray(attend_draws(Xb, Ks, Vs, ls, attention))
            out[p0 : p0 + m, s0 : s0 + n] = block[:m, :n]
    return out


def _padded(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with zero rows appended up to ``n`` rows."""
    return a if len(a) == n else np.concatenate([a, np.zeros((n - len(a),) + a.shape[1:])])


@dataclasses.dataclass(frozen=True)
class SLRPosterior:
    """Aligned posterior draws, shaped (chains, draws, ...).

    Attributes
    ----------
    k, v : (C, D, d) arrays, aligned by the attention's symmetries (erf, linear:
        ``<k, k_ref> >= 0``; softmax: as drawn)
    sign : (C, D) array, the flip applied (raw draw = ``sign * k``, after the exchange)
    lam, sigma : (C, D) arrays
    k_ref : (d,) array
    attention : {"erf", "softmax", "linear"}
    swap : (C, D) bool array or None, ``k <-> v`` applied (linear only)
    """

    k: np.ndarray
    v: np.ndarray
    sign: np.ndarray
    lam: np.ndarray
    sigma: np.ndarray
    k_ref: np.ndarray
    attention: str = "erf"
    swap: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.sigma.shape

    def draws(self, X: ArrayLike) -> np.ndarray:
        """``T_s(X)`` for every draw: (C, D, P) for ``X`` (P, L, d)."""
        C, D = self.shape
        d = self.k.shape[-1]
        K, V = self.k.reshape(-1, d), self.v.reshape(-1, d)
        T = predictor_draws(X, K, V, self.lam.reshape(-1), attention=self.attention)  # (P, S)
        return T.T.reshape(C, D, -1)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The posterior-mean predictor ``E[T_theta(X) | data]``: (P,) for ``X`` (P, L, d)."""
        d = self.k.shape[-1]
        K, V = self.k.reshape(-1, d), self.v.reshape(-1, d)
        return predictor_draws(X, K, V, self.lam.reshape(-1), attention=self.attention).mean(1)

    def band(self, X: ArrayLike, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise ``(1 - level)/2`` and ``(1 + level)/2`` posterior quantiles of ``T(X)``."""
        T = self.draws(X).reshape(-1, len(X))
        q = (1 - level) / 2
        return np.quantile(T, q, axis=0), np.quantile(T, 1 - q, axis=0)

    def mean_directions(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalised posterior means of the aligned ``k`` and ``v``: (d,), (d,)."""
        kb, vb = self.k.mean(axis=(0, 1)), self.v.mean(axis=(0, 1))
        return kb / np.linalg.norm(kb), vb / np.linalg.norm(vb)

    @classmethod
    def from_idata(cls, idata) -> SLRPosterior:
        """Rebuild from an InferenceData written by :func:`sample_posterior`."""
        p = idata.posterior
        for name in ("k", "v", "sign", "lambda", "sigma"):
            if name not in p:
                raise InputError(f"the posterior has no {name!r}: not a single-location file")
        try:
            k_ref = np.asarray(_json(idata.attrs["k_ref"]), dtype=float)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"corrupt single-location posterior file: {e}") from None
        attention = str(idata.attrs.get("attention", "erf"))  # files before attention: erf
        check_attention(attention)
        return cls(
            p["k"].values,
            p["v"].values,
            p["sign"].values,
            p["lambda"].values,
            p["sigma"].values,
            k_ref,
            attention,
            p["swap"].values.astype(bool) if "swap" in p else None,
        )


def _json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


def initial_values(
    key: jax.Array, pgd: PGDFit, chains: int, jitter: float, y_scale: float
) -> dict[str, jax.Array]:
    """Unconstrained starts per chain: the PGD fit, each direction rotated by ~``jitter`` rad.

    ``z = sqrt(d) normalise(k + jitter g / sqrt(d))`` with ``g ~ N(0, I_d)`` (the radius
    the model's radial factor prefers); ``log lambda`` and ``log sigma`` from the
    fit (``sigma`` = root training loss, at least ``1e-3 y_scale``).
    """
    d = len(pgd.k)
    g = jax.random.normal(key, (2, chains, d)) * jitter / math.sqrt(d)

    def start(u, noise):
        w = jnp.asarray(u)[None] + noise
        return math.sqrt(d) * w / jnp.linalg.norm(w, axis=-1, keepdims=True)

    sigma = max(math.sqrt(pgd.info["train_loss"]), 1e-3 * y_scale)
    return {
        "z_k": start(pgd.k, g[0]),
        "z_v": start(pgd.v, g[1]),
        "lambda": jnp.full((chains,), math.log(pgd.lam)),
        "sigma": jnp.full((chains,), math.log(sigma)),
    }


def reference_overlaps(
    k: np.ndarray, v: np.ndarray, k_ref: np.ndarray, v_ref: np.ndarray
) -> dict[str, np.ndarray]:
    """Flip-invariant overlaps of draws (..., d) with a reference pair: (...) arrays."""
    a, b = k @ k_ref, v @ v_ref
    return {"overlap_k": np.abs(a), "overlap_v": np.abs(b), "overlap_kv": a * b}


def _truth_quantities(
    k: np.ndarray, v: np.ndarray, truth: SLRTruth, attention: str = "erf"
) -> dict[str, np.ndarray]:
    """``|kappa|``, ``|nu|``, ``kappa nu`` of draws, modulo the exchange where it is a symmetry."""
    if "swap" in symmetries(attention):  # each draw as the member of its orbit nearest the truth
        d = k.shape[-1]
        a = align(k.reshape(-1, d), v.reshape(-1, d), attention, truth.k, truth.v)
        k, v = a.k.reshape(k.shape), a.v.reshape(v.shape)
    kappa, nu = k @ truth.k, v @ truth.v
    return {"abs_kappa": np.abs(kappa), "abs_nu": np.abs(nu), "kappa_nu": kappa * nu}


def sample_posterior(
    key: jax.Array,
    X: ArrayLike,
    Y: ArrayLike,
    config: SLRSamplerConfig = SLRSamplerConfig(),
    *,
    pgd: PGDFit | None = None,
    truth: SLRTruth | None = None,
    init_params: dict[str, jax.Array] | None = None,
    seed: int | None = None,
    n_eval: int = 50,
    progress: bool = True,
):
    """NUTS on the single-location model, sign alignment, and an ArviZ InferenceData.

    Parameters
    ----------
    key : PRNG key
    X : (M, L, d) array
    Y : (M,) array
    config : SLRSamplerConfig
    pgd : PGDFit, optional
        A fit on the same data, for ``init="pgd"`` and as the sign reference
        (fitted here with the default settings when needed and not given).
    truth : SLRTruth, optional
        When known, ``|kappa|``, ``|nu|`` and ``kappa nu`` are added to the posterior.
    init_params : dict, optional
        Unconstrained starts with a leading chains axis (overrides ``config.init``).
    seed : int, optional
        Recorded in the file.
    n_eval : int
        Training inputs (drawn at random) at which the predictions ``pred`` are kept.
    progress : bool

    Returns
    -------
    idata : arviz.InferenceData
    post : SLRPosterior  (``post.predict`` is the posterior-mean predictor)
    chains : bayes_ips.nuts.Chains
    """
    X, Y = check_data(X, Y)
    config.validate()
    d = X.shape[-1]
    if truth is not None and truth.d != d:
        raise InputError(f"the truth has d = {truth.d}, the data d = {d}")
    if isinstance(n_eval, bool) or int(n_eval) != n_eval or n_eval < 1:
        raise InputError(f"n_eval must be a positive integer, got {n_eval}")
    k_pgd, k_init, k_run, k_eval, k_ppc = jax.random.split(key, 5)
    y_scale = float(np.sqrt(np.mean(Y**2))) or 1.0
    chains, pgd = _draw_chains(
        (k_pgd, k_init, k_run), X, Y, config, pgd, init_params, seed, y_scale, progress
    )
    post, v_ref = _aligned(chains, pgd, config.attention)
    idata = _build_idata(
        (k_eval, k_ppc), X, Y, config, chains, post, v_ref, pgd, truth, seed, n_eval, y_scale
    )
    return idata, post, chains


def _draw_chains(keys, X, Y, config, pgd, init_params, seed, y_scale, progress):
    """The NUTS chains, started from the PGD fit (fitted here when needed) or as asked.

    Returns
    -------
    chains : bayes_ips.nuts.Chains
    pgd : PGDFit or None, the fit used (given or made here)
    """
    k_pgd, k_init, k_run = keys
    d = X.shape[-1]
    fixed = config.lambda_from == "pgd"
    if pgd is None and (fixed or config.init == "pgd" and init_params is None):
        pgd = fit_pgd(k_pgd, X, Y, PGDConfig(attention=config.attention), seed=seed)
    if pgd is not None and pgd.k.shape != (d,):
        raise InputError(f"the PGD fit has d = {len(pgd.k)}, the data d = {d}")
    if pgd is not None and pgd.attention != config.attention:
        raise InputError(
            f"the PGD fit uses {pgd.attention} attention, the sampler {config.attention}"
        )
    if init_params is None and config.init == "pgd":
        init_params = initial_values(k_init, pgd, config.chains, config.jitter, y_scale)
    model_kwargs = {
        "y_scale": y_scale,
        "lambda_median": config.lambda_median,
        "lambda_log_sd": config.lambda_log_sd,
        "lambda_fixed": pgd.lam if fixed else None,
    }
    sites = tuple(s for s in SITES if not (fixed and s == "lambda"))
    if fixed and init_params is not None:
        init_params = {k: v for k, v in init_params.items() if k != "lambda"}
    chains = run_chains(
        k_run,
        model_for(config.attention),
        (jnp.asarray(X), jnp.asarray(Y)),
        model_kwargs,
        chains=config.chains,
        warmup=config.warmup,
        draws=config.draws,
        init_params=init_params,
        dense_sites=sites if config.dense_mass else None,
        target_accept=config.target_accept,
        max_tree_depth=config.max_tree_depth,
        progress=progress,
    )
    return chains, pgd


def _aligned(chains, pgd: PGDFit | None, attention: str) -> tuple[SLRPosterior, np.ndarray]:
    """The aligned posterior and the reference ``v_ref`` (the PGD fit's, or the draws')."""
    s = chains.samples
    ref = (None, None) if pgd is None else (pgd.k, pgd.v)
    a = align(s["k"], s["v"], attention, *ref)
    swap = a.swap if "swap" in symmetries(attention) else None
    post = SLRPosterior(a.k, a.v, a.sign, s["lambda"], s["sigma"], a.k_ref, attention, swap)
    return post, a.v_ref


def _build_idata(keys, X, Y, config, chains, post, v_ref, pgd, truth, seed, n_eval, y_scale):
    """Predictions at ``n_eval`` training inputs, log-likelihood, posterior predictive, idata."""
    from bayes_ips.arviz_io import build_slr_inference_data

    k_eval, k_ppc = keys
    C, D = post.shape
    M = len(X)
    overlaps = reference_overlaps(post.k, post.v, post.k_ref, v_ref)
    eval_idx = np.sort(np.asarray(jax.random.choice(k_eval, M, (min(n_eval, M),), replace=False)))
    X_eval = X[eval_idx]
    pred = post.draws(X_eval)
    T_train = post.draws(X)  # (C, D, M)
    loglik = gaussian_loglik(Y, T_train, post.sigma)  # (C, D, M)
    draw_index = thin_draws(C, D, M)
    y_rep = predictive_draws(k_ppc, T_train, post.sigma, draw_index)
    posterior, identifiable = _posterior_variables(post, pred, overlaps, truth)
    if config.lambda_from == "pgd":  # a constant: nothing to diagnose
        identifiable.remove("lambda")
    attrs = _run_attrs(config, chains, pgd, seed, y_scale, pred, overlaps, identifiable)
    attrs.update(
        {"k_ref": post.k_ref.tolist(), "v_ref": v_ref.tolist(), "eval_index": eval_idx.tolist()}
    )
    if pgd is not None:
        attrs["pgd"] = _pgd_attrs(pgd)
    return build_slr_inference_data(
        posterior=posterior,
        extra=chains.extra,
        X=X,
        Y=Y,
        X_eval=X_eval,
        loglik=loglik,
        y_rep=y_rep,
        draw_index=draw_index,
        attrs=attrs,
    )


def _posterior_variables(post, pred, overlaps, truth) -> tuple[dict[str, np.ndarray], list[str]]:
    """The posterior group and the names of its identifiable (symmetry-invariant) quantities."""
    k, v = post.k, post.v
    posterior = {
        "k": k,
        "v": v,
        "sign": post.sign,
        "lambda": post.lam,
        "sigma": post.sigma,
        "rho": np.einsum("cdi,cdi->cd", k, v),
        "pred": pred,
        **overlaps,
    }
    if post.swap is not None:  # linear attention: the exchange k <-> v applied to each draw
        posterior["swap"] = post.swap.astype(np.int8)
    identifiable = ["lambda", "sigma", "rho", "pred", *overlaps]
    if truth is not None:
        posterior.update(_truth_quantities(k, v, truth, post.attention))
        identifiable += ["abs_kappa", "abs_nu", "kappa_nu"]
    return posterior, identifiable


def _run_attrs(config, chains, pgd, seed, y_scale, pred, overlaps, identifiable) -> dict:
    """The file's attributes: the run's settings, the mode check and the identifiable names."""
    from bayes_ips.posterior import mode_check

    return {
        "kind": "slr_posterior",
        "model": "single_location",
        "attention": config.attention,
        "seed": -1 if seed is None else int(seed),
        "config": dataclasses.asdict(config),
        "y_scale": y_scale,
        "wall_time_s": chains.wall_time_s,
        "modes": mode_check(np.concatenate([pred, np.stack(list(overlaps.values()), -1)], -1)),
        "identifiable": identifiable,
    }


def _pgd_attrs(pgd: PGDFit) -> dict:
    return {
        "k": np.asarray(pgd.k).tolist(),
        "v": np.asarray(pgd.v).tolist(),
        "lam": pgd.lam,
        "seed": pgd.seed,
        "config": dataclasses.asdict(pgd.config),
    }
