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
    attention = "erf"              # erf | softmax | linear (the posterior's too)

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
import os
import time
from typing import Any

import numpy as np

from bayes_ips.errors import InputError
from bayes_ips.io import atomic_write
from bayes_ips.study.cells import Cell
from bayes_ips.study.parse import (
    as_float,
    as_int,
    check_unknown,
    int_list,
    m_grid,
    study_estimators,
    study_name,
)

__all__ = [
    "TASK",
    "SLR_ESTIMATORS",
    "SLRStudyConfig",
    "coordinates",
    "kinds",
    "make_cells",
    "name",
    "parse",
    "plot_slr",
    "report",
    "run_cell",
    "selectable",
    "slr_cell_data",
    "slr_table",
    "to_dataset",
]

TASK = "slr"
name = TASK  # the protocol's attribute
kinds = ("study",)
selectable = {"estimator": str, "d": int, "M": int, "rep": int}
#: the record fields that locate a cell (the leading columns of results.csv)
coordinates = ("estimator", "d", "M", "rep")

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
    task: str = TASK

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
    """Validate a settings table against a config dataclass (its own ``validate``).

    Returns the table's keys as given (the cell specs hold those, not the defaults).
    """
    if not isinstance(raw, dict):
        raise InputError(f"[{where}] must be a table")
    names = {f.name for f in dataclasses.fields(cls)}
    check_unknown(f"[{where}]", raw, names)
    try:
        cfg = cls(**raw)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except InputError as e:
        raise InputError(f"[{where}]: {e}") from None
    except TypeError as e:
        raise InputError(f"[{where}]: {e}") from None
    return dict(raw)


def parse(raw: dict[str, Any]) -> SLRStudyConfig:
    """Validate a parsed TOML document of ``task = "slr"``."""
    from bayes_ips.single_location.pgd import PGDConfig
    from bayes_ips.single_location.posterior import SLRSamplerConfig

    check_unknown("the config", raw, {"study", "pgd", "bayes_pm"})
    st = raw.get("study")
    if not isinstance(st, dict):
        raise InputError("the config needs a [study] table")
    check_unknown("[study]", st, _STUDY_KEYS)
    for k in ("M", "d", "estimators"):
        if k not in st:
            raise InputError(f"[study] needs {k!r}")
    est = study_estimators(st, SLR_ESTIMATORS)
    return SLRStudyConfig(
        name=study_name(st, "slr"),
        seed=as_int("study.seed", st.get("seed", 0), 0),
        repetitions=as_int("study.repetitions", st.get("repetitions", 1)),
        estimators=est,
        M=m_grid(st["M"]),
        d=int_list("study.d", st["d"], 2),
        L=as_int("study.L", st.get("L", 10)),
        gamma=as_float("study.gamma", st.get("gamma", math.sqrt(0.5)), 0.0, lo_open=True),
        noise=as_float("study.noise", st.get("noise", 0.1), 0.0),
        n_eval=as_int("study.n_eval", st.get("n_eval", 20000), 100),
        pgd=_settings("pgd", raw.get("pgd", {}), PGDConfig),
        bayes_pm=_settings("bayes_pm", raw.get("bayes_pm", {}), SLRSamplerConfig),
    )


def make_cells(config: SLRStudyConfig) -> list[Cell]:
    """The cells of the grid (estimator, d, M, repetition), shapes adjacent.

    A cell's id is ``<estimator>_slr-binf_d<d>_M<M>_r<rep>`` (the form of the
    first single-location records, kept so that their folders resume).
    """
    common = {
        "task": TASK,
        "seed": config.seed,
        "L": config.L,
        "gamma": config.gamma,
        "noise": config.noise,
        "n_eval": config.n_eval,
    }
    cells = []
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
                    cell_id = f"{est}_slr-binf_d{d}_M{M}_r{rep}"
                    coords = {"estimator": est, "d": d, "M": M, "rep": rep}
                    cells.append(Cell(cell_id, spec, coords))
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


def run_cell(spec: dict) -> dict:
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
        "task": TASK,
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
        from bayes_ips.diagnostics import convergence
        from bayes_ips.single_location.posterior import SLRSamplerConfig, sample_posterior

        t1 = time.perf_counter()
        # the model's attention is the PGD fit's unless [bayes_pm] names one (a mismatch is refused)
        cfg = SLRSamplerConfig(**{"attention": fit.attention, **spec["settings"]["bayes"]})
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
    ov = overlaps(k, v, truth.k, truth.v, fit.attention)  # modulo the attention's symmetries
    ex = excess_risk(k_eval, predict, truth, spec["n_eval"])
    rec.update(
        abs_kappa=abs(float(ov["kappa_aligned"])),
        abs_nu=abs(float(ov["nu_aligned"])),
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


def to_dataset(records: list[dict]):
    """The records over (estimator, d, M, rep)."""
    from bayes_ips.study.store import records_to_dataset

    ds = records_to_dataset(
        records, ("estimator", "d", "M", "rep"), skip=coordinates, estimators=SLR_ESTIMATORS
    )
    ds.attrs["task"] = TASK
    return ds


def report(ds, out_dir: str, config: SLRStudyConfig, result, kind: str) -> dict:
    """``slr_risk.png`` and ``summary.md`` of a single-location study."""
    fig_path = os.path.join(out_dir, "slr_risk.png")
    with atomic_write(fig_path) as tmp:
        plot_slr(ds).savefig(tmp, dpi=130, format="png")
    lines = [f"# {config.name}: single-location regression", ""]
    lines.append(
        f"{len(result.records)} cells finished ({len(result.failures)} failed"
        + (f", {result.n_missing} not run" if result.n_missing else "")
        + "); seed "
        f"{config.seed}; L = {config.L}, gamma = {config.gamma:.4g}, noise {config.noise:g}, "
        f"{config.repetitions} repetitions, {config.n_eval} fresh samples per risk."
    )
    lines += ["", "Medians over repetitions:", "", slr_table(ds)]
    if result.failures:
        lines += ["## Failed cells", ""] + [
            f"- {f['cell_id']}: {f['error']}" for f in result.failures
        ]
    summary = "\n".join(lines) + "\n"
    path = os.path.join(out_dir, "summary.md")
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        f.write(summary)
    return {"summary": summary, "paths": [fig_path, path]}
