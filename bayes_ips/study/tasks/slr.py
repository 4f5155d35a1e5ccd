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
    attention = ["erf", "softmax"] # erf | softmax | linear, an axis (default ["erf"])
    L = 10                         # tokens per sequence
    gamma = 0.7071                 # sd of the signal token around sqrt(d/2) k*; or a list (an axis)
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
    lambda_from = "prior"          # prior | pgd (lambda fixed at the PGD fit's)

    [bayes_pm.softmax]             # optional, per attention: overrides for its cells only
    lambda_from = "pgd"

Each cell fits PGD, and the posterior mean, with its own attention (so the
attention is a key of ``[study]``, not of ``[pgd]`` or ``[bayes_pm]``).  A config
that names one gamma and no attention (all configs from before these axes) keeps
its config hash, cell ids and spec hashes: a spec names its attention only when it
is not erf, a cell id its gamma only when it is not sqrt(1/2).

Each cell records the risk of its predictor, the Bayes risk and the excess risk
over the Bayes-optimal predictor (on the same fresh samples, so the excess has a
small paired standard error), and the sign-invariant overlaps ``|kappa|``,
``|nu|`` with the truth.  The truth (k*, v*) depends on (seed, d); the data on
(seed, d, repetition, M), not on the estimator, the attention or gamma: the
attentions are compared on the same samples, and the gammas on common random numbers.
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
    as_choice,
    as_float,
    as_int,
    check_unknown,
    int_list,
    m_grid,
    study_estimators,
    study_name,
)

__all__ = [
    "LEGACY_ATTENTION",
    "LEGACY_GAMMA",
    "TASK",
    "SLR_ESTIMATORS",
    "SLRStudyConfig",
    "cell_id",
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


def _parse_attention(v: str) -> str:
    """An attention on the command line (``--only attention=softmax``)."""
    from bayes_ips.single_location.attention import check_attention

    return check_attention(v)


TASK = "slr"
name = TASK  # the protocol's attribute
kinds = ("study",)
selectable = {
    "estimator": str,
    "attention": _parse_attention,
    "gamma": float,
    "d": int,
    "M": int,
    "rep": int,
}
#: the record fields that locate a cell (the leading columns of results.csv)
coordinates = ("estimator", "attention", "gamma", "d", "M", "rep")

SLR_ESTIMATORS = ("pgd", "bayes_pm")
# The values of cells from before the attention and gamma axes: a spec leaves out the
# legacy attention, a cell id the legacy gamma (their hashes and record files stay).
LEGACY_ATTENTION = "erf"
LEGACY_GAMMA = math.sqrt(0.5)
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
    attention: tuple[str, ...] = (LEGACY_ATTENTION,)
    L: int = 10
    gamma: tuple[float, ...] = (LEGACY_GAMMA,)
    noise: float = 0.1
    n_eval: int = 20000
    pgd: dict = dataclasses.field(default_factory=dict)
    bayes_pm: dict = dataclasses.field(default_factory=dict)
    task: str = TASK

    def to_dict(self) -> dict[str, Any]:
        """The plain form (study.json, the config hash).

        A single gamma is written as a number and the legacy attention axis
        ``["erf"]`` not at all, as before these axes existed: old configs keep
        their hash.
        """
        out = dataclasses.asdict(self)
        for k in ("estimators", "M", "d"):
            out[k] = list(out[k])
        out["gamma"] = self.gamma[0] if len(self.gamma) == 1 else list(self.gamma)
        if self.attention == (LEGACY_ATTENTION,):
            del out["attention"]
        else:
            out["attention"] = list(self.attention)
        return out

    @property
    def n_cells(self) -> int:
        axes = (self.estimators, self.attention, self.gamma, self.d, self.M)
        return math.prod(len(a) for a in axes) * self.repetitions


_STUDY_KEYS = {"task", "name", "seed", "repetitions", "estimators", "M", "d", "L", "gamma"}
_STUDY_KEYS |= {"noise", "n_eval", "attention"}


def _attentions(v: Any) -> tuple[str, ...]:
    """``study.attention``: a non-empty list of distinct attentions, in the given order."""
    from bayes_ips.single_location.attention import ATTENTIONS

    if not isinstance(v, list) or not v:
        raise InputError(
            f"study.attention must be a non-empty list of {', '.join(ATTENTIONS)}; got {v!r}"
        )
    out = tuple(as_choice("study.attention entries", a, ATTENTIONS) for a in v)
    if len(set(out)) != len(out):
        raise InputError(f"study.attention has repeated values: {list(out)}")
    return out


def _gammas(v: Any) -> tuple[float, ...]:
    """``study.gamma``: a number > 0, or a non-empty list of distinct ones (sorted)."""
    if not isinstance(v, list):
        return (as_float("study.gamma", v, 0.0, lo_open=True),)
    if not v:
        raise InputError("study.gamma must be a number > 0 or a non-empty list of them, got []")
    out = tuple(sorted(as_float("study.gamma entries", g, 0.0, lo_open=True) for g in v))
    if len(set(out)) != len(out):
        raise InputError(f"study.gamma has repeated values: {list(out)}")
    return out


def _settings(where: str, raw: Any, cls, attentions: tuple[str, ...]) -> dict:
    """Validate a settings table against a config dataclass, at each attention.

    Returns the table's keys as given (the cell specs hold those, not the defaults).
    The attention is the study's axis, not a key of the table.  A sub-table named
    after an attention of the study (``[bayes_pm.softmax]``) overrides keys for that
    attention's cells only (:func:`attention_settings`).
    """
    if not isinstance(raw, dict):
        raise InputError(f"[{where}] must be a table")
    if "attention" in raw:
        raise InputError(
            f"[{where}] attention: the attention is an axis of the study; "
            f"set it in [study] (attention = [{', '.join(repr(a) for a in attentions)}])"
        )
    names = {f.name for f in dataclasses.fields(cls)} - {"attention"}
    subs = {k for k, v in raw.items() if isinstance(v, dict)}
    check_unknown(f"[{where}]", {k: v for k, v in raw.items() if k not in subs}, names)
    for sub in sorted(subs):
        if sub not in attentions:
            raise InputError(
                f"[{where}.{sub}]: a sub-table must name an attention of the study "
                f"({', '.join(attentions)})"
            )
        if "attention" in raw[sub]:
            raise InputError(f"[{where}.{sub}] attention: the table's name is its attention")
        check_unknown(f"[{where}.{sub}]", raw[sub], names)
    for attention in attentions:
        table = attention_settings(raw, attention)
        try:
            cfg = cls(**table, attention=attention)
            if hasattr(cfg, "validate"):
                cfg.validate()
        except (InputError, TypeError) as e:
            name = f"{where}.{attention}" if attention in subs else where
            raise InputError(f"[{name}] (attention {attention}): {e}") from None
    return {k: dict(v) if k in subs else v for k, v in raw.items()}


def attention_settings(table: dict, attention: str) -> dict:
    """The keys of a settings table for one attention's cells: the shared keys, then the
    attention's own sub-table over them.  Attentions without a sub-table get the shared
    keys alone, so their cells' specs (and hashes) do not change when another
    attention gains one."""
    shared = {k: v for k, v in table.items() if not isinstance(v, dict)}
    return {**shared, **table.get(attention, {})}


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
    attentions = _attentions(st.get("attention", [LEGACY_ATTENTION]))
    return SLRStudyConfig(
        name=study_name(st, "slr"),
        seed=as_int("study.seed", st.get("seed", 0), 0),
        repetitions=as_int("study.repetitions", st.get("repetitions", 1)),
        estimators=est,
        M=m_grid(st["M"]),
        d=int_list("study.d", st["d"], 2),
        attention=attentions,
        L=as_int("study.L", st.get("L", 10)),
        gamma=_gammas(st.get("gamma", LEGACY_GAMMA)),
        noise=as_float("study.noise", st.get("noise", 0.1), 0.0),
        n_eval=as_int("study.n_eval", st.get("n_eval", 20000), 100),
        pgd=_settings("pgd", raw.get("pgd", {}), PGDConfig, attentions),
        bayes_pm=_settings("bayes_pm", raw.get("bayes_pm", {}), SLRSamplerConfig, attentions),
    )


def cell_id(est: str, attention: str, gamma: float, d: int, M: int, rep: int) -> str:
    """``<estimator>_slr-binf[-<attention>][_g<gamma>]_d<d>_M<M>_r<rep>``.

    The form of the first single-location records, which had erf attention and
    gamma = sqrt(1/2): those two are left out, so that their folders resume.
    """
    att = "" if attention == LEGACY_ATTENTION else f"-{attention}"
    gam = "" if gamma == LEGACY_GAMMA else f"_g{gamma:.6g}"
    return f"{est}_slr-binf{att}{gam}_d{d}_M{M}_r{rep}"


def make_cells(config: SLRStudyConfig) -> list[Cell]:
    """The cells of the grid (estimator, attention, gamma, d, M, repetition), shapes adjacent.

    A cell's spec names its attention only when it is not erf (see :func:`cell_id`).
    """
    common = {
        "task": TASK,
        "seed": config.seed,
        "L": config.L,
        "noise": config.noise,
        "n_eval": config.n_eval,
    }
    cells = []
    for est in config.estimators:
        for attention in config.attention:
            pgd = attention_settings(config.pgd, attention)
            settings = (
                pgd
                if est == "pgd"
                else {
                    "pgd": pgd,
                    "bayes": attention_settings(config.bayes_pm, attention),
                }
            )
            for gamma in config.gamma:
                for d in config.d:
                    for M in config.M:
                        for rep in range(config.repetitions):
                            coords = {
                                "estimator": est,
                                "attention": attention,
                                "gamma": gamma,
                                "d": d,
                                "M": M,
                                "rep": rep,
                            }
                            spec = {**common, "gamma": gamma, "estimator": est}
                            spec.update(d=d, M=M, rep=rep, settings=settings)
                            if attention != LEGACY_ATTENTION:
                                spec["attention"] = attention
                            cid = cell_id(est, attention, gamma, d, M, rep)
                            cells.append(Cell(cid, spec, coords))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise InputError("study.gamma has values equal to 6 digits (the cell ids would repeat)")
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
    attention = spec.get("attention", LEGACY_ATTENTION)
    pgd_settings = spec["settings"] if est == "pgd" else spec["settings"]["pgd"]
    fit = fit_pgd(k_fit, X, Y, PGDConfig(**pgd_settings, attention=attention))
    t_fit = time.perf_counter() - t0
    rec: dict[str, Any] = {
        "task": TASK,
        "estimator": est,
        "attention": attention,
        "gamma": spec["gamma"],
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
        cfg = SLRSamplerConfig(**spec["settings"]["bayes"], attention=attention)
        idata, post, *_ = sample_posterior(k_nuts, X, Y, cfg, pgd=fit, progress=False)
        predict = post.predict
        k, v = post.mean_directions()
        # invariant quantities (the overlaps with the PGD fit), lambda where it is sampled
        names = ("overlap_k", "overlap_v", "sigma")
        names += ("lambda",) if cfg.lambda_from == "prior" else ()
        conv = convergence({n: idata.posterior[n].values for n in names})
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


def _rows(ds):
    """``(estimator, attention, gamma, d)`` of the Dataset, in its coordinate order."""
    for est in ds["estimator"].values:
        for att in ds["attention"].values:
            for g in ds["gamma"].values:
                for d in ds["d"].values:
                    yield str(est), str(att), float(g), int(d)


def slr_table(ds) -> str:
    """Markdown: per estimator, attention, gamma, d and M, medians over repetitions.

    The risk, the Bayes risk, the excess risk over the Bayes predictor and its
    ratio to the Bayes risk (the distance from the Bayes risk), ``|kappa|``, ``|nu|``;
    for the posterior mean, the largest R-hat and the smallest bulk ESS over the
    repetitions (the cells' :func:`bayes_ips.diagnostics.convergence`) and the
    divergences summed over them, so that a median taken over chains that did not
    converge is seen as such.
    """
    lines = [
        "| estimator | attention | gamma | d | M | reps | risk | Bayes risk | excess risk | "
        "excess / Bayes risk | abs kappa | abs nu | R-hat max | min bulk ESS | divergences |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for est, att, g, d in _rows(ds):
        for M in ds["M"].values:
            sub = ds.sel(estimator=est, attention=att, gamma=g, d=d, M=M)
            ok = np.isfinite(sub["risk"].values)  # the repetitions run
            if not ok.any():
                continue
            med = {
                k: float(np.median(sub[k].values[ok]))
                for k in sub.data_vars
                if sub[k].dims == sub["risk"].dims
            }
            lines.append(
                f"| {est} | {att} | {g:.4g} | {d} | {M} | {int(ok.sum())} | {med['risk']:.4g} | "
                f"{med['bayes_risk']:.4g} | "
                f"{med['excess_risk']:.3g} | {med['excess_risk'] / med['bayes_risk']:.3g} | "
                f"{med['abs_kappa']:.3f} | {med['abs_nu']:.3f} | {_chain_columns(sub, ok)} |"
            )
    return "\n".join(lines) + "\n"


def _chain_columns(sub, ok) -> str:
    """``R-hat max | min bulk ESS | divergences`` over a row's repetitions (``-`` for PGD)."""
    if "rhat_max" not in sub.data_vars:
        return "- | - | -"
    rhat, ess, div = (sub[k].values[ok] for k in ("rhat_max", "ess_bulk_min", "divergences"))
    if not np.isfinite(rhat).any():
        return "- | - | -"
    return f"{np.nanmax(rhat):.3f} | {np.nanmin(ess):.0f} | {int(np.nansum(div))}"


#: the estimators' markers and line styles in :func:`plot_slr` (the colour is the attention's)
_STYLES = {"pgd": ("o", "-"), "bayes_pm": ("s", "--")}
_LABELS = {"pgd": "PGD", "bayes_pm": "posterior mean"}


def plot_slr(ds):
    """Excess risk over the Bayes predictor against M: median and 10-90% band.

    One panel per (gamma, d); one curve per estimator and attention (colour: the
    attention; line style: the estimator); the Bayes risk (median over the panel's
    cells) as a dotted horizontal line, the scale of the excess.
    """
    import matplotlib
    from matplotlib.figure import Figure

    from bayes_ips.study.figures import LOWER_Q, UPPER_Q, m_axis

    gammas, ds_d = ds["gamma"].values, ds["d"].values
    fig = Figure(figsize=(5.2 * len(ds_d), 4.4 * len(gammas)), layout="constrained")
    axes = fig.subplots(len(gammas), len(ds_d), squeeze=False)
    cmap = matplotlib.colormaps["viridis"]
    from bayes_ips.single_location.attention import ATTENTIONS

    atts = [str(a) for a in ds["attention"].values]
    # one colour per attention in every study (erf dark, softmax mid, linear light)
    colors = {a: cmap(0.1 + 0.75 * ATTENTIONS.index(a) / (len(ATTENTIONS) - 1)) for a in atts}
    M = ds["M"].values.astype(float)
    for row, g in zip(axes, gammas, strict=True):
        for ax, d in zip(row, ds_d, strict=True):
            for est in ds["estimator"].values:
                marker, ls = _STYLES.get(str(est), ("^", ":"))
                for att in atts:
                    vals = ds["excess_risk"].sel(estimator=est, attention=att, gamma=g, d=d).values
                    ok = np.isfinite(vals).any(axis=1)
                    if not ok.any():
                        continue
                    med = np.nanmedian(vals[ok], axis=1)
                    lo, hi = np.nanquantile(vals[ok], [LOWER_Q, UPPER_Q], axis=1)
                    label = f"{_LABELS.get(str(est), str(est))}, {att}"
                    ax.plot(M[ok], med, marker=marker, ls=ls, color=colors[att], label=label)
                    ax.fill_between(M[ok], lo, hi, color=colors[att], alpha=0.15, lw=0)
            br = float(np.nanmedian(ds["bayes_risk"].sel(gamma=g, d=d).values))
            if np.isfinite(br):
                ax.axhline(br, color="0.3", ls=":", lw=1.2, label=f"Bayes risk {br:.3g}")
            m_axis(ax, M)
            ax.set_yscale("log")
            ax.set_xlabel("M (training sequences)")
            ax.set_ylabel("excess risk over the Bayes predictor")
            ax.set_title(f"gamma = {g:.4g}, d = {d}")
            ax.grid(True, which="both", alpha=0.25)
            ax.legend(fontsize=7)
    fig.suptitle("single-location regression: median and 10-90% band over repetitions", fontsize=9)
    return fig


def _coord(rec: dict, dim: str) -> Any:
    """The record's coordinate along ``dim``.

    Records from before the attention and gamma axes hold neither, and every one
    of them that a study reuses is at erf and gamma = sqrt(1/2): a spec of another
    attention names it (and those specs were not made then), and a cell of another
    gamma has another id (:func:`cell_id`), so its old record is never read.
    """
    if dim == "attention":
        return rec.get(dim, LEGACY_ATTENTION)
    if dim == "gamma":
        return float(rec.get(dim, LEGACY_GAMMA))
    return rec[dim] if dim == "estimator" else int(rec[dim])


def to_dataset(records: list[dict]):
    """The records over (estimator, attention, gamma, d, M, rep)."""
    from bayes_ips.study.store import records_to_dataset

    ds = records_to_dataset(
        records, coordinates, coord=_coord, skip=coordinates, estimators=SLR_ESTIMATORS
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
        f"{config.seed}; L = {config.L}, gamma {', '.join(f'{g:.4g}' for g in config.gamma)}, "
        f"attention {', '.join(config.attention)}, noise {config.noise:g}, "
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
