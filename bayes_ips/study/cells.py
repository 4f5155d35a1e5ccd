"""Cells of a study: what one (phi, d, M, repetition, estimator) computes.

A cell is a plain, JSON-able *spec* (everything that determines its numbers) and
a pure function :func:`run_cell` of that spec, so that any backend (this process,
a process pool, a Dask worker on another machine) computes the same record.

Randomness derives from the study seed only, through ``jax.random.fold_in``:

* phi* depends on (seed, family, beta): the same activation for every d;
* A* depends on (seed, family, beta, d): one truth per (phi, d), fixed across M
  and repetitions;
* the data depend on (seed, family, beta, d, repetition, M), *not* on the
  estimator: ERM and the Bayesian posterior mean see the same datasets, and are
  evaluated on the same held-out pairs (a paired comparison);
* the ERM fit inside a ``bayes_pm`` cell (knots and chain starts) uses the same
  key as the ``erm`` cell, so it is the same fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from typing import Any

from bayes_ips.study.config import PhiEntry, StudyConfig, config_hash

__all__ = [
    "Cell",
    "parse_only",
    "select_cells",
    "TIMING_KEYS",
    "cell_truth",
    "cell_data",
    "make_cells",
    "run_cell",
    "spec_hash",
]

# Record fields that vary between runs of the same cell (not compared on resume).
TIMING_KEYS = ("wall_time_s", "erm_time_s", "nuts_time_s", "finished_at", "attempts")

# fold_in tags of the key tree (fixed forever: changing one changes every number)
_PHI, _A, _DATA, _FIT, _NUTS, _EVAL, _BAND = 0, 1, 2, 10, 11, 12, 13


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell: its coordinates in the grid and the spec that determines it."""

    estimator: str
    phi: PhiEntry
    d: int
    M: int
    rep: int
    spec: dict

    @property
    def id(self) -> str:
        beta = "inf" if math.isinf(self.phi.beta) else f"{self.phi.beta:g}"
        return f"{self.estimator}_{self.phi.family}-b{beta}_d{self.d}_M{self.M}_r{self.rep}"

    @property
    def hash(self) -> str:
        return spec_hash(self.spec)


SELECTABLE = ("estimator", "d", "M", "rep", "beta", "family")


def parse_only(items: list[str] | None) -> dict[str, set]:
    """Parse ``["estimator=erm", "d=1,5"]`` into ``{"estimator": {"erm"}, "d": {1, 5}}``."""
    from bayes_ips.errors import InputError

    out: dict[str, set] = {}
    for item in items or []:
        key, sep, vals = item.partition("=")
        key = key.strip()
        if not sep or not vals.strip():
            raise InputError(f"--only takes KEY=V1,V2; got {item!r}")
        if key not in SELECTABLE:
            raise InputError(f"--only: unknown key {key!r} (choose from {', '.join(SELECTABLE)})")
        parsed = set()
        for v in vals.split(","):
            v = v.strip()
            if key in ("estimator", "family"):
                parsed.add(v)
                continue
            try:
                parsed.add(int(v) if key != "beta" else (math.inf if v == "inf" else float(v)))
            except ValueError:
                raise InputError(f"--only {key}: expected numbers, got {v!r}") from None
        out.setdefault(key, set()).update(parsed)
    return out


def select_cells(cells: list[Cell], only: dict[str, set]) -> list[Cell]:
    """The cells whose coordinates are in ``only`` (every key must match)."""

    def value(c: Cell, key: str):
        if key == "beta":
            return c.phi.beta
        if key == "family":
            return c.phi.family
        return getattr(c, key)

    return [c for c in cells if all(value(c, k) in vals for k, vals in only.items())]


def spec_hash(spec: dict) -> str:
    """Stable hash of a cell spec (its record is reused only when this matches)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _stable_int(*parts: Any) -> int:
    text = json.dumps(parts, sort_keys=True, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def make_cells(config: StudyConfig) -> list[Cell]:
    """All cells of the grid, ordered so that cells of equal array shapes are adjacent.

    The order is estimator, d, M, phi, repetition: consecutive cells in one
    process then reuse compiled programs (shapes depend on d and M).
    """
    if getattr(config, "task", "ips") == "slr":
        from bayes_ips.study.slr import make_slr_cells

        return make_slr_cells(config)
    cells = []
    common = {
        "task": "ips",
        "seed": config.seed,
        "N": config.N,
        "rank": config.rank,
        "noise": config.noise,
        "noise_law": config.noise_law,
        "tokens": config.tokens,
        "rho": config.rho,
        "n_eval_pairs": config.n_eval_pairs,
    }
    for est in config.estimators:
        settings = dataclasses.asdict(config.erm)
        if est == "bayes_pm":
            settings = {"erm": settings, "bayes": dataclasses.asdict(config.bayes_pm)}
        for d in config.d:
            for M in config.M:
                for phi in config.phi:
                    for rep in range(config.repetitions):
                        spec = {
                            **common,
                            "estimator": est,
                            "phi": {
                                "family": phi.family,
                                "beta": "inf" if math.isinf(phi.beta) else phi.beta,
                            },
                            "d": d,
                            "M": M,
                            "rep": rep,
                            "settings": settings,
                        }
                        cells.append(Cell(est, phi, d, M, rep, spec))
    return cells


def _phi_entry(spec: dict) -> PhiEntry:
    b = spec["phi"]["beta"]
    return PhiEntry(spec["phi"]["family"], math.inf if b == "inf" else float(b))


def cell_truth(spec: dict):
    """The truth of a cell: phi* from (seed, phi), A* from (seed, phi, d)."""
    import jax

    from bayes_ips.activations import make_phi
    from bayes_ips.simulate import TokenLaw, make_truth

    phi = _phi_entry(spec)
    base = jax.random.PRNGKey(spec["seed"])
    tag = _stable_int(phi.family, spec["phi"]["beta"])
    k_phi = jax.random.fold_in(jax.random.fold_in(base, _PHI), tag)
    k_a = jax.random.fold_in(jax.random.fold_in(base, _A), _stable_int(tag, spec["d"]))
    beta = None if math.isinf(phi.beta) else phi.beta
    phi_spec = make_phi(k_phi, phi.family, beta=beta)
    law = TokenLaw(spec["tokens"], spec["d"], rho=spec["rho"])
    return make_truth(
        k_a,
        spec["d"],
        spec["rank"],
        phi=phi_spec,
        tokens=law,
        noise_sd=spec["noise"],
        noise=spec["noise_law"],
    )


def _data_key(spec: dict):
    import jax

    tag = _stable_int(spec["phi"]["family"], spec["phi"]["beta"], spec["d"])
    k = jax.random.fold_in(jax.random.PRNGKey(spec["seed"]), _DATA)
    k = jax.random.fold_in(jax.random.fold_in(k, tag), spec["rep"])
    return jax.random.fold_in(k, spec["M"])


def cell_data(spec: dict):
    """``(truth, X, Y, key)``: the cell's dataset (independent of the estimator)."""
    import jax
    import numpy as np

    from bayes_ips.simulate import simulate

    truth = cell_truth(spec)
    key = _data_key(spec)
    X, Y = simulate(key, truth, spec["M"], spec["N"])
    return truth, np.asarray(X), np.asarray(Y), jax.random.fold_in(key, 1)


def _erm_config(spec: dict, settings: dict):
    from bayes_ips.erm import ERMConfig

    phi = _phi_entry(spec)
    beta = None if math.isinf(phi.beta) else phi.beta
    return ERMConfig(
        rank=spec["rank"],
        degree=settings["degree"] if settings["degree"] is not None else 3,
        k_rule=settings["k_rule"],
        n_intervals=settings["n_intervals"],
        multiplicity=settings["multiplicity"],
        # beta only where the theory rule needs it: the default (GCV) does not see the truth
        beta=beta if settings["k_rule"] == "theory" else None,
        restarts=settings["restarts"],
    )


def run_cell(spec: dict) -> dict:
    """Compute one cell's record (a flat JSON-able dict).

    Every record holds the L2(rho) error of its estimator with its Monte Carlo
    standard error, K and the degree used, the theory's condition, timings, and
    for ``bayes_pm`` the posterior's own error distribution, the mean width and
    the coverage of the pointwise credible band, and convergence diagnostics.
    """
    if spec.get("task") == "slr":
        from bayes_ips.study.slr import run_slr_cell

        return run_slr_cell(spec)
    import jax

    from bayes_ips.study.backends import relieve_map_pressure

    jax.config.update("jax_enable_x64", True)
    relieve_map_pressure()
    from bayes_ips.erm import fit_erm, theory_condition
    from bayes_ips.metrics import l2_error

    t0 = time.perf_counter()
    truth, X, Y, key = cell_data(spec)
    k_fit, k_nuts, k_eval, k_band = (
        jax.random.fold_in(key, t) for t in (_FIT, _NUTS, _EVAL, _BAND)
    )
    est = spec["estimator"]
    erm_settings = spec["settings"] if est == "erm" else spec["settings"]["erm"]
    erm = fit_erm(k_fit, X, Y, _erm_config(spec, erm_settings))
    t_erm = time.perf_counter() - t0
    phi = _phi_entry(spec)
    tc = theory_condition(spec["M"], spec["d"], spec["rank"], phi.beta)
    rec: dict[str, Any] = {
        "estimator": est,
        "family": phi.family,
        "beta": phi.beta,
        "d": spec["d"],
        "M": spec["M"],
        "rep": spec["rep"],
        "N": spec["N"],
        "rank": spec["rank"],
        "seed": spec["seed"],
        "theory_holds": tc["holds"],
        "theory_lhs": tc["lhs"],
        "theory_rhs": tc["rhs"],
        "erm_time_s": t_erm,
    }
    if est == "erm":
        err = l2_error(k_eval, erm.predict, truth, spec["n_eval_pairs"])
        rec.update(
            error=err.error,
            error_se=err.se,
            relative_error=err.relative,
            K=erm.info["K"],
            degree=erm.info["degree"],
            n_basis=erm.info["n_basis"],
            sigma_hat=erm.info["sigma_hat"],
            n_outside=erm.info["n_outside"],
        )
    else:
        rec.update(_bayes_record(spec, truth, X, Y, erm, k_nuts, k_eval, k_band))
    rec["wall_time_s"] = time.perf_counter() - t0
    return rec


def _bayes_record(spec, truth, X, Y, erm, k_nuts, k_eval, k_band) -> dict:
    import jax
    import numpy as np

    from bayes_ips.arviz_io import convergence
    from bayes_ips.inference import SamplerConfig, eval_pairs, run_nuts
    from bayes_ips.metrics import l2_error
    from bayes_ips.posterior import draw_errors, g_draws, mode_check, posterior_from_run, predict
    from bayes_ips.simulate import g_true, sample_pairs

    b = spec["settings"]["bayes"]
    cfg = SamplerConfig(
        rank=spec["rank"],
        collapsed=b["collapsed"],
        chains=b["chains"],
        warmup=b["warmup"],
        draws=b["draws"],
        init=b["init"],
        target_accept=b["target_accept"],
        max_tree_depth=b["max_tree_depth"],
        n_intervals=b["n_intervals"],
        degree=erm.info["degree"],
    )
    t0 = time.perf_counter()
    k_run, k_rb, k_pairs, k_draw = jax.random.split(k_nuts, 4)
    run = run_nuts(k_run, X, Y, cfg, erm=erm, progress=False)
    post = posterior_from_run(k_rb, run, X, Y)
    t_nuts = time.perf_counter() - t0
    err = l2_error(
        k_eval, lambda x, y: g_draws(post, x, y).mean(axis=(0, 1)), truth, spec["n_eval_pairs"]
    )
    erm_err = l2_error(k_eval, erm.predict, truth, spec["n_eval_pairs"])
    x, y = sample_pairs(k_band, truth.tokens, b["n_band_pairs"])
    band = predict(post, x, y, level=b["level"])
    g = np.asarray(g_true(truth, x, y))
    width = band["g_hi"] - band["g_lo"]
    covered = (g >= band["g_lo"]) & (g <= band["g_hi"])
    errs = draw_errors(k_draw, post, truth, n_pairs=min(spec["n_eval_pairs"], 5000))
    xe, ye = eval_pairs(k_pairs, X, 200)
    g_eval = g_draws(post, xe, ye, rao_blackwell=True)
    conv = convergence({"g_eval": g_eval, "sigma": post.sigma})
    modes = mode_check(g_eval)
    q05, q50, q95 = np.quantile(errs, [0.05, 0.5, 0.95])
    return {
        "error": err.error,
        "error_se": err.se,
        "relative_error": err.relative,
        "erm_error": erm_err.error,
        "post_error_median": float(q50),
        "post_error_q05": float(q05),
        "post_error_q95": float(q95),
        "band_width": float(width.mean()),
        "band_coverage": float(covered.mean()),
        "band_level": b["level"],
        "K": int(run.knots.n_intervals),
        "degree": int(run.knots.degree),
        "n_basis": int(post.c_mean.shape[-1]),
        "sigma_mean": float(post.sigma.mean()),
        "rhat_max": conv["rhat_max"],
        "ess_bulk_min": conv["ess_bulk_min"],
        "divergences": int(run.extra["diverging"].sum()),
        "steps_per_iter": float(run.extra["num_steps"].mean()),
        "modes_separated": bool(modes["separated"]),
        "nuts_time_s": t_nuts,
    }


def study_spec_summary(config: StudyConfig) -> dict:
    """What a results folder records about the study that made it."""
    return {"config": config.to_dict(), "config_hash": config_hash(config), "seed": config.seed}
