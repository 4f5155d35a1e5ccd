"""Single-location regression as a study task: PGD and the posterior mean against M.

The config (``[study] task = "slr"``; unknown keys and bad values are refused)::

    [study]
    task = "slr"
    name = "slr"
    seed = 0
    repetitions = 4
    estimators = ["pgd", "bayes_pm"]
    M = [250, 500, 1000, 2000]     # or {min, max, num}, log-spaced
    d = [50]
    L = 10                         # tokens per sequence
    gamma = 0.7071                 # sd of the signal token around sqrt(d/2) k*
    noise = 0.1                    # eps
    n_eval = 20000                 # fresh samples for the risks

    [pgd]                          # bayes_ips.single_location.PGDConfig (all optional)
    steps = 3000
    lr = 0.5
    lambda_schedule = "constant"   # constant | linear | geometric | inverse
    lambda0 = 0.1
    lambda1 = 0.1
    batch_size = 64                # omit for full-batch gradient descent
    init = "moment"                # moment | sphere

    [bayes_pm]                     # SLRSamplerConfig (all optional)
    chains = 2
    warmup = 300
    draws = 300
    init = "pgd"                   # pgd | prior

Each cell records the risk of its predictor, the Bayes risk and the excess risk
over the Bayes-optimal predictor (on the same fresh samples, so the excess has a
small paired standard error), and the sign-invariant overlaps ``|kappa|``,
``|nu|`` with the truth.  The truth (k*, v*) depends on (seed, d); the data on
(seed, d, repetition, M), not on the estimator.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from bayes_ips.errors import InputError
from bayes_ips.study.config import _choice, _float, _int, _int_list, _m_grid, _unknown

__all__ = [
    "SLR_ESTIMATORS",
    "SLRStudyConfig",
    "make_slr_cells",
    "parse_slr_config",
    "plot_slr",
    "run_slr_cell",
    "slr_table",
]

SLR_ESTIMATORS = ("pgd", "bayes_pm")
_TRUTH, _DATA, _FIT, _NUTS, _EVAL = 0, 2, 10, 11, 12


@dataclasses.dataclass(frozen=True)
class SLRStudyConfig:
    """A validated single-location study grid."""

    name: str
    seed: int
    repetitions: int
    estimators: tuple[str, ...]
    M: tuple[int, ...]
    d: tuple[int, ...]
    L: int = 10
    gamma: float = math.sqrt(0.5)
    noise: float = 0.1
    n_eval: int = 20000
    pgd: dict = dataclasses.field(default_factory=dict)
    bayes_pm: dict = dataclasses.field(default_factory=dict)
    task: str = "slr"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k in ("estimators", "M", "d"):
            out[k] = list(out[k])
        return out

    @property
    def n_cells(self) -> int:
        return len(self.estimators) * len(self.d) * len(self.M) * self.repetitions


_STUDY_KEYS = {"task", "name", "seed", "repetitions", "estimators", "M", "d", "L", "gamma"}
_STUDY_KEYS |= {"noise", "n_eval"}


def _settings(where: str, raw: Any, cls) -> dict:
    """Validate a settings table against a config dataclass (its own ``validate``)."""
    if not isinstance(raw, dict):
        raise InputError(f"[{where}] must be a table")
    names = {f.name for f in dataclasses.fields(cls)}
    _unknown(f"[{where}]", raw, names)
    try:
        cfg = cls(**raw)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except InputError as e:
        raise InputError(f"[{where}]: {e}") from None
    except TypeError as e:
        raise InputError(f"[{where}]: {e}") from None
    return dict(raw)


def parse_slr_config(raw: dict[str, Any]) -> SLRStudyConfig:
    """Validate a parsed TOML document of ``task = "slr"``."""
    from bayes_ips.single_location.pgd import PGDConfig
    from bayes_ips.single_location.posterior import SLRSamplerConfig

    _unknown("the config", raw, {"study", "pgd", "bayes_pm"})
    st = raw["study"]
    _unknown("[study]", st, _STUDY_KEYS)
    for k in ("M", "d", "estimators"):
        if k not in st:
            raise InputError(f"[study] needs {k!r}")
    est = st["estimators"]
    if not isinstance(est, list) or not est:
        raise InputError("study.estimators must be a non-empty list")
    est = tuple(_choice("study.estimators entries", e, SLR_ESTIMATORS) for e in est)
    if len(set(est)) != len(est):
        raise InputError(f"study.estimators has repeated values: {list(est)}")
    name = st.get("name", "slr")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0"):
        raise InputError(f"study.name must be a plain non-empty string, got {name!r}")
    return SLRStudyConfig(
        name=name,
        seed=_int("study.seed", st.get("seed", 0), 0),
        repetitions=_int("study.repetitions", st.get("repetitions", 1)),
        estimators=est,
        M=_m_grid(st["M"]),
        d=_int_list("study.d", st["d"], 2),
        L=_int("study.L", st.get("L", 10)),
        gamma=_float("study.gamma", st.get("gamma", math.sqrt(0.5)), 0.0, lo_open=True),
        noise=_float("study.noise", st.get("noise", 0.1), 0.0),
        n_eval=_int("study.n_eval", st.get("n_eval", 20000), 100),
        pgd=_settings("pgd", raw.get("pgd", {}), PGDConfig),
        bayes_pm=_settings("bayes_pm", raw.get("bayes_pm", {}), SLRSamplerConfig),
    )


def make_slr_cells(config: SLRStudyConfig) -> list:
    """The cells of the grid (estimator, d, M, repetition), shapes adjacent."""
    from bayes_ips.study.cells import Cell
    from bayes_ips.study.config import PhiEntry

    common = {
        "task": "slr",
        "seed": config.seed,
        "L": config.L,
        "gamma": config.gamma,
        "noise": config.noise,
        "n_eval": config.n_eval,
    }
    cells = []
    none = PhiEntry("slr", math.inf)  # no activation in this task
    for est in config.estimators:
        settings = (
            dict(config.pgd)
            if est == "pgd"
            else {
                "pgd": dict(config.pgd),
                "bayes": dict(config.bayes_pm),
            }
        )
        for d in config.d:
            for M in config.M:
                for rep in range(config.repetitions):
                    spec = {**common, "estimator": est, "d": d, "M": M, "rep": rep}
                    spec["settings"] = settings
                    cells.append(Cell(est, none, d, M, rep, spec))
    return cells


def _keys(spec: dict):
    import jax

    base = jax.random.PRNGKey(spec["seed"])
    k_truth = jax.random.fold_in(jax.random.fold_in(base, _TRUTH), spec["d"])
    k_data = jax.random.fold_in(jax.random.fold_in(base, _DATA), spec["d"])
    k_data = jax.random.fold_in(jax.random.fold_in(k_data, spec["rep"]), spec["M"])
    return k_truth, k_data


def slr_cell_data(spec: dict):
    """``(truth, X, Y, key)`` of a cell (independent of the estimator)."""
    import jax

    from bayes_ips.single_location import make_truth, simulate

    k_truth, k_data = _keys(spec)
    truth = make_truth(k_truth, spec["d"], L=spec["L"], gamma=spec["gamma"], noise_sd=spec["noise"])
    X, Y, _ = simulate(k_data, truth, spec["M"])
    return truth, np.asarray(X), np.asarray(Y), jax.random.fold_in(k_data, 1)


def run_slr_cell(spec: dict) -> dict:
    """One cell's record: risks, Bayes risk, excess risk (paired s.e.) and overlaps."""
    import jax

    from bayes_ips.study.backends import relieve_map_pressure

    jax.config.update("jax_enable_x64", True)
    relieve_map_pressure()
    from bayes_ips.single_location import PGDConfig, excess_risk, fit_pgd, overlaps

    t0 = time.perf_counter()
    truth, X, Y, key = slr_cell_data(spec)
    k_fit, k_nuts, k_eval = (jax.random.fold_in(key, t) for t in (_FIT, _NUTS, _EVAL))
    est = spec["estimator"]
    pgd_settings = spec["settings"] if est == "pgd" else spec["settings"]["pgd"]
    fit = fit_pgd(k_fit, X, Y, PGDConfig(**pgd_settings))
    t_fit = time.perf_counter() - t0
    rec: dict[str, Any] = {
        "task": "slr",
        "estimator": est,
        "d": spec["d"],
        "M": spec["M"],
        "rep": spec["rep"],
        "L": spec["L"],
        "seed": spec["seed"],
        "fit_time_s": t_fit,
    }
    if est == "pgd":
        predict, k, v = fit.predict, fit.k, fit.v
        rec["lambda"] = float(fit.lam)
    else:
        from bayes_ips.arviz_io import convergence
        from bayes_ips.single_location.posterior import SLRSamplerConfig, sample_posterior

        t1 = time.perf_counter()
        cfg = SLRSamplerConfig(**{**spec["settings"]["bayes"]})
        idata, post, *_ = sample_posterior(k_nuts, X, Y, cfg, pgd=fit, progress=False)
        predict = post.predict
        k, v = post.mean_directions()
        conv = convergence(
            {n: idata.posterior[n].values for n in ("abs_kappa", "abs_nu", "lambda", "sigma")}
            if "abs_kappa" in idata.posterior
            else {"lambda": post.lam, "sigma": post.sigma}
        )
        rec.update(
            rhat_max=conv["rhat_max"],
            ess_bulk_min=conv["ess_bulk_min"],
            divergences=int(idata.sample_stats["diverging"].values.sum()),
            lambda_mean=float(post.lam.mean()),
            nuts_time_s=time.perf_counter() - t1,
        )
    ov = overlaps(k, v, truth.k, truth.v)
    ex = excess_risk(k_eval, predict, truth, spec["n_eval"])
    rec.update(
        abs_kappa=abs(float(ov["kappa"])),
        abs_nu=abs(float(ov["nu"])),
        risk=ex.risk,
        risk_se=ex.risk_se,
        bayes_risk=ex.bayes_risk,
        bayes_risk_se=ex.bayes_risk_se,
        excess_risk=ex.excess,
        excess_risk_se=ex.excess_se,
        wall_time_s=time.perf_counter() - t0,
    )
    return rec


def slr_table(ds) -> str:
    """Markdown: per estimator, d and M, the median risk, Bayes risk and excess (over reps)."""
    lines = [
        "| estimator | d | M | reps | risk | Bayes risk | excess risk | excess / Bayes risk | "
        "abs kappa | abs nu |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for est in ds["estimator"].values:
        for d in ds["d"].values:
            for M in ds["M"].values:
                sub = ds.sel(estimator=est, d=d, M=M)
                if not np.isfinite(sub["risk"].values).any():
                    continue
                ok = np.isfinite(sub["risk"].values)  # the repetitions run
                med = {
                    k: float(np.median(sub[k].values[ok]))
                    for k in sub.data_vars
                    if sub[k].dims == sub["risk"].dims
                }
                lines.append(
                    f"| {est} | {d} | {M} | {int(ok.sum())} | {med['risk']:.4g} | "
                    f"{med['bayes_risk']:.4g} | "
                    f"{med['excess_risk']:.3g} | {med['excess_risk'] / med['bayes_risk']:.3g} | "
                    f"{med['abs_kappa']:.3f} | {med['abs_nu']:.3f} |"
                )
    return "\n".join(lines) + "\n"


def plot_slr(ds):
    """Excess risk over the Bayes-optimal predictor against M, per d: median and 10-90% band."""
    import matplotlib
    from matplotlib.figure import Figure

    from bayes_ips.study.figures import LOWER_Q, UPPER_Q, m_axis

    ds_d = ds["d"].values
    fig = Figure(figsize=(5.2 * len(ds_d), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(ds_d), squeeze=False)[0])
    cmap = matplotlib.colormaps["viridis"]
    M = ds["M"].values.astype(float)
    labels = {"pgd": "PGD (the paper's estimator)", "bayes_pm": "posterior-predictive mean"}
    for ax, d in zip(axes, ds_d, strict=True):
        for i, est in enumerate(ds["estimator"].values):
            vals = ds["excess_risk"].sel(estimator=est, d=d).values
            ok = np.isfinite(vals).any(axis=1)
            if not ok.any():
                continue
            color = cmap(0.15 + 0.6 * i)
            med = np.nanmedian(vals[ok], axis=1)
            lo, hi = np.nanquantile(vals[ok], [LOWER_Q, UPPER_Q], axis=1)
            ax.plot(M[ok], med, "o-", color=color, label=labels.get(str(est), str(est)))
            ax.fill_between(M[ok], lo, hi, color=color, alpha=0.2, lw=0)
        br = float(np.nanmedian(ds["bayes_risk"].sel(d=d).values))
        m_axis(ax, M)
        ax.set_yscale("log")
        ax.set_xlabel("M (training sequences)")
        ax.set_ylabel("excess risk over the Bayes predictor")
        ax.set_title(f"d = {d} (Bayes risk {br:.3g})")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8)
    fig.suptitle("single-location regression: median and 10-90% band over repetitions", fontsize=9)
    return fig
