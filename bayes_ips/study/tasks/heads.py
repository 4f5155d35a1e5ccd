"""The heads task: multi-head IPS against M, for a grid of head counts H (issue 15).

The config is an IPS study's (:mod:`bayes_ips.study.tasks.ips`, every key and table
the same) with ``task = "heads"`` and a ``heads`` axis::

    [study]
    task = "heads"
    heads = [1, 2, 3]              # numbers of heads H (default [1])
    estimators = ["erm"]
    M = {min = 500, max = 8000, num = 5}
    d = [5]
    ...

A cell with ``H = 1`` is the IPS task's cell: the same truth, data, fit and
record, number for number (its spec is the IPS spec with ``heads`` added, and
:func:`run_cell` hands it to the IPS task).  A cell with ``H >= 2`` draws a
truth of H distinct heads (:func:`bayes_ips.simulate.make_truth` with
``heads=H``; every head's phi* of the grid's family, scaled to its own scores,
its A*_h from the same key tree), simulates from it with the IPS cell's data key,
and fits ``H`` heads by :func:`bayes_ips.multihead.fit_erm_heads`.  Errors are on
the total interaction ``G``; the record also says how well the heads were
recovered (their ``|cos|`` to the truth after alignment, and their centred errors).

The report is the IPS report with one line per (phi, H): the slopes table and the
rates figure then compare the head counts directly, and ``summary.md`` gains a
table of each H's slope and error level.  Posterior-mean cells with ``H >= 2``
sample the collapsed multi-head model from the cell's multi-head ERM fit
(:func:`bayes_ips.multihead_posterior.sample_heads_posterior`: ``[bayes_pm]``'s
``method`` (``auto``: Laplace-PSIS with a NUTS fall back, ``is`` or ``nuts``; a spec
that names none is NUTS, as the IPS task's), ``chains``, ``warmup``, ``draws``,
``n_intervals``, ``khat_max``, ``ess_target``, ``max_proposals``, ``proposal_df``,
``level``, ``n_band_pairs`` and ``basis`` (``evidence``: the K and knot placement of
largest marginal likelihood, one for all heads; ``erm``: the ERM fit's K at quantile
knots; a spec that names none is ``erm``, as the IPS task's)) and are scored, like
the IPS task's, against that
ERM fit on the same held-out pairs.  Their records say how they were sampled as
the IPS task's do: ``sampler``, and ``khat``, ``is_ess``, ``n_proposals`` (importance
sampling), or ``divergences`` (NUTS) with ``fallback`` (why) and the first
attempt's ``khat``, ``is_ess``, ``n_proposals`` after a fall back; and how the basis
was chosen, as the IPS task's: ``basis`` (``evidence``, ``erm`` or ``fixed``), ``K`` and
``n_basis`` (the model's, per head), ``uniform_weight``, ``basis_time_s``, with ``erm_K``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from bayes_ips.errors import InputError
from bayes_ips.study.cells import Cell
from bayes_ips.study.parse import int_list
from bayes_ips.study.tasks import ips

__all__ = [
    "HeadsStudyConfig",
    "TASK",
    "coordinates",
    "kinds",
    "make_cells",
    "name",
    "parse",
    "report",
    "run_cell",
    "selectable",
    "to_dataset",
]

TASK = "heads"
name = TASK
kinds = ("study",)
selectable = {**ips.selectable, "heads": int}
coordinates = ("estimator", "family", "beta", "d", "heads", "M", "rep")
HEADS_METHODS = ("auto", "is", "nuts")  # sample_heads_posterior's (no "imh")


@dataclasses.dataclass(frozen=True)
class HeadsStudyConfig:
    """An IPS study grid (``base``) crossed with numbers of heads."""

    base: ips.StudyConfig
    heads: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def seed(self) -> int:
        return self.base.seed

    @property
    def task(self) -> str:
        return TASK

    @property
    def n_cells(self) -> int:
        return self.base.n_cells * len(self.heads)

    def to_dict(self) -> dict[str, Any]:
        return {**self.base.to_dict(), "task": TASK, "heads": list(self.heads)}


def parse(raw: dict[str, Any]) -> HeadsStudyConfig:
    """The IPS config of the document, and its ``[study] heads``."""
    st = raw.get("study")
    if not isinstance(st, dict):
        raise InputError("the config needs a [study] table")
    st = dict(st)
    heads = int_list("study.heads", st.pop("heads", [1]), 1)
    st.pop("task", None)
    base = ips.parse({**raw, "study": st})
    for e in base.estimators:
        if base.erm_of(e).known_a:
            raise InputError(
                f"estimator {e!r}: known_a is for the single-head task; a heads study fits "
                "every head's A"
            )
    if max(heads) > 1:
        if min(base.d) == 1:
            raise InputError("heads are not distinct at d = 1: every A_h is +-1 (study.d)")
        for e in base.estimators:
            method = base.bayes_of(e).sampler.method
            if base.kind_of(e) == "bayes_pm" and method not in HEADS_METHODS:
                raise InputError(
                    f"estimator {e!r}: posterior-mean cells with more than one head take "
                    f"method = {' | '.join(repr(m) for m in HEADS_METHODS)}, not {method!r}"
                )
    return HeadsStudyConfig(base, tuple(sorted(set(heads))))


def make_cells(config: HeadsStudyConfig) -> list[Cell]:
    """The IPS task's cells for every H (H outermost: shapes stay adjacent)."""
    cells = []
    for H in config.heads:
        for c in ips.make_cells(config.base):
            spec = {**c.spec, "task": TASK, "heads": H}
            cells.append(Cell(f"{c.id}_H{H}", spec, {**c.coords, "heads": H}))
    return cells


def cell_truth(spec: dict):
    """The truth of a cell: the IPS cell's with ``heads`` heads (the same keys)."""
    import jax

    from bayes_ips.activations import make_phi
    from bayes_ips.simulate import TokenLaw, make_truth
    from bayes_ips.study.cells import stable_int

    phi = ips._phi_entry(spec)
    base = jax.random.PRNGKey(spec["seed"])
    tag = stable_int(phi.family, spec["phi"]["beta"])
    k_phi = jax.random.fold_in(jax.random.fold_in(base, ips._PHI), tag)
    k_a = jax.random.fold_in(jax.random.fold_in(base, ips._A), stable_int(tag, spec["d"]))
    return make_truth(
        k_a,
        spec["d"],
        spec["rank"],
        phi=make_phi(k_phi, phi.family, beta=phi.finite_beta),
        tokens=TokenLaw(spec["tokens"], spec["d"], rho=spec["rho"]),
        noise_sd=spec["noise"],
        noise=spec["noise_law"],
        heads=spec["heads"],
    )


def run_cell(spec: dict) -> dict:
    """One cell's record: the IPS task's for ``H = 1``, a multi-head ERM fit otherwise."""
    H = spec["heads"]
    if H == 1:
        rec = ips.run_cell({**{k: v for k, v in spec.items() if k != "heads"}, "task": ips.TASK})
        return {**rec, "task": TASK, "heads": 1}
    import jax
    import numpy as np

    from bayes_ips.study.backends import relieve_map_pressure

    jax.config.update("jax_enable_x64", True)
    relieve_map_pressure()
    from bayes_ips.kselect import theory_condition
    from bayes_ips.metrics import l2_error
    from bayes_ips.multihead import fit_erm_heads, heads_report
    from bayes_ips.simulate import simulate

    t0 = time.perf_counter()
    truth = cell_truth(spec)
    k_data = ips._data_key(spec)
    X, Y = simulate(k_data, truth, spec["M"], spec["N"])
    key = jax.random.fold_in(k_data, 1)
    k_fit, k_eval = (jax.random.fold_in(key, t) for t in (ips._FIT, ips._EVAL))
    fit = fit_erm_heads(k_fit, np.asarray(X), np.asarray(Y), ips.cell_erm_config(spec), heads=H)
    t_erm = time.perf_counter() - t0
    if ips._kind(spec) == "bayes_pm":
        k_nuts, k_band = (jax.random.fold_in(key, t) for t in (ips._NUTS, ips._BAND))
        more = _bayes_fields(spec, truth, X, Y, fit, k_nuts, k_eval, k_band)
    else:
        err = l2_error(k_eval, fit.predict, truth, spec["n_eval_pairs"], **ips._error_target(spec))
        more = ips._error_fields(spec, err)
    rep = heads_report(k_eval, fit, truth, min(spec["n_eval_pairs"], 20000))
    phi = ips._phi_entry(spec)
    tc = theory_condition(spec["M"], spec["d"], H * spec["rank"], phi.beta)
    return {
        "task": TASK,
        "estimator": spec["estimator"],
        "kind": ips._kind(spec),
        "family": phi.family,
        "beta": phi.beta,
        "d": spec["d"],
        "heads": H,
        "M": spec["M"],
        "rep": spec["rep"],
        "N": spec["N"],
        "rank": spec["rank"],
        "seed": spec["seed"],
        "theory_holds": tc["holds"],
        "theory_lhs": tc["lhs"],
        "theory_rhs": tc["rhs"],
        "erm_time_s": t_erm,
        "K": fit.info["K"],
        "degree": fit.info["degree"],
        "n_basis": fit.info["n_basis"],
        **more,  # a posterior's K and n_basis are its model's (ERM's K as erm_K)
        "sigma_hat": fit.info["sigma_hat"],
        "n_outside": fit.info["n_outside"],
        "head_cos_min": min(rep["head_cosines_to_truth"]),
        "head_error_max": max(rep["head_relative_errors"]),
        "wall_time_s": time.perf_counter() - t0,
    }


def _bayes_fields(spec, truth, X, Y, fit, k_nuts, k_eval, k_band) -> dict:
    """The posterior mean of ``G`` (the collapsed multi-head model's posterior) against ERM.

    Scored on the pairs ERM is scored on (a paired ratio), with the band's width and
    coverage on ``n_band_pairs`` pairs, and the convergence of ``G`` and of the
    aligned heads.
    """
    import numpy as np

    from bayes_ips.metrics import l2_error
    from bayes_ips.multihead_posterior import sample_heads_posterior
    from bayes_ips.simulate import g_true, sample_pairs

    b = spec["settings"]["bayes"]
    t0 = time.perf_counter()
    post = sample_heads_posterior(
        k_nuts,
        X,
        Y,
        fit,
        method=b.get("method", ips.LEGACY_METHOD),
        chains=b.get("chains", 4),
        warmup=b.get("warmup") or 300,
        draws=b.get("draws") or 300,
        n_intervals=b.get("n_intervals"),
        khat_max=b.get("khat_max", 0.7),
        ess_target=b.get("ess_target"),
        max_proposals=b.get("max_proposals", 8000),
        proposal_df=b.get("proposal_df"),
        basis=b.get("basis", ips.LEGACY_BASIS),
    )
    t_nuts = time.perf_counter() - t0
    err = l2_error(k_eval, post.predict, truth, spec["n_eval_pairs"], **ips._error_target(spec))
    erm_err = l2_error(k_eval, fit.predict, truth, spec["n_eval_pairs"], min_pairs=err.n_pairs)
    x, y = sample_pairs(k_band, truth.tokens, b["n_band_pairs"])
    lo, hi = post.band(x, y, level=b["level"])
    g = np.asarray(g_true(truth, x, y))
    dg = post.diagnostics
    basis = post.info["basis"]
    return {
        **_sampler_fields(post.info),
        "basis": basis["rule"],
        "uniform_weight": basis["uniform_weight"],
        "basis_time_s": basis.get("time_s", 0.0),
        "K": int(post.knots.n_intervals),
        "n_basis": int(post.coef.shape[-1]),
        "erm_K": basis["erm_K"],
        **ips._error_fields(spec, err),
        "erm_error": erm_err.error,
        "band_width": float(np.mean(hi - lo)),
        "band_coverage": float(np.mean((g >= lo) & (g <= hi))),
        "band_level": b["level"],
        "rhat_max": dg["G"]["rhat_max"],
        "ess_bulk_min": dg["G"]["ess_bulk_min"],
        "rhat_heads_max": dg["heads"]["rhat_max"],
        "permuted_chains": dg["permuted_chains"],
        "sigma_mean": float(post.sigma.mean()),
        "nuts_time_s": t_nuts,
    }


def _sampler_fields(info: dict) -> dict:
    """``sampler`` and its checks, under the IPS task's names (see the module docstring)."""
    out = {"sampler": info["sampler"]}
    if info["sampler"] == "is":
        out.update({k: info[k] for k in ("khat", "is_ess", "n_proposals")})
        return out
    out["divergences"] = info["divergences"]
    if "fallback" in info:
        first = info.get("first", {})
        out["fallback"] = info["fallback"]
        out.update({k: first.get(k, float("nan")) for k in ("khat", "is_ess", "n_proposals")})
    return out


def _phi_label(rec: dict) -> str:
    return f"{ips._phi_label(rec)}, H={int(rec.get('heads', 1))}"


def to_dataset(records: list[dict]):
    """The records over (estimator, phi, d, M, rep), one ``phi`` entry per (phi*, H).

    ``beta``, ``family`` and ``heads`` are coordinates along ``phi``: every slope,
    table and figure of the IPS report then has one line per head count.
    """
    from bayes_ips.study.store import records_to_dataset

    kind_of = {r["estimator"]: r.get("kind", r["estimator"]) for r in records}
    order = sorted(kind_of, key=lambda e: (ips.ESTIMATORS.index(kind_of[e]), e != kind_of[e], e))

    def coord(rec: dict, dim: str) -> Any:
        return _phi_label(rec) if dim == "phi" else ips._coord(rec, dim)

    ds = records_to_dataset(
        records,
        ("estimator", "phi", "d", "M", "rep"),
        coord=coord,
        skip=(*coordinates, "kind"),
        estimators=order,
        always=("theory_holds", "theory_rhs"),
    )
    by_label = {_phi_label(r): r for r in records}
    phis = ds["phi"].values
    beta = [by_label[p]["beta"] for p in phis]
    ds = ds.assign_coords(
        beta=("phi", [math.inf if b in (None, "inf") else float(b) for b in beta]),
        family=("phi", [by_label[p]["family"] for p in phis]),
        heads=("phi", [int(by_label[p].get("heads", 1)) for p in phis]),
        kind=("estimator", [kind_of[e] for e in ds["estimator"].values]),
    )
    ds.attrs["task"] = TASK
    return ds


def report(ds, out_dir: str, config: HeadsStudyConfig, result, kind: str) -> dict:
    """The IPS report (a line per (phi*, H)) and a table of slope and level against H."""
    import os

    from bayes_ips.io import atomic_write
    from bayes_ips.study.report import write_ips_report

    out = write_ips_report(ds, out_dir, config.base, result, "study")
    lines = heads_lines(ds, out["rows"])
    summary = (
        out["summary"]
        .replace(f"# {config.name}: study analysis", f"# {config.name}: heads analysis", 1)
        .replace(f"({config.base.n_cells} in the grid)", f"({config.n_cells} in the grid)", 1)
    )
    summary = summary.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    path = os.path.join(out_dir, "summary.md")
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        f.write(summary)
    return {**out, "summary": summary}


def heads_lines(ds, rows: list[dict]) -> list[str]:
    """Markdown: per (estimator, phi*, d), each H's slope [CI] and its error at a common M.

    The level is the OLS line of that H evaluated at the geometric mean of the
    study's M (so levels of different H are compared at one M), with the median
    over repetitions of the heads' recovery where it was recorded.
    """
    import numpy as np

    lines = ["## Does the slope depend on the number of heads?", ""]
    lines.append(
        "| estimator | phi* | d | H | slope [95% CI] | error at M = {Mg} | min |cos| to A*_h "
        "| max centred head error |"
    )
    M = ds["M"].values.astype(float)
    Mg = float(np.exp(np.mean(np.log(M))))
    lines[-1] = lines[-1].replace("{Mg}", f"{Mg:.0f}")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["estimator"], r["d"], r["phi"])):
        sub = ds.sel(estimator=r["estimator"], phi=r["phi"], d=r["d"])
        err = sub["error"].values
        ok = np.isfinite(err) & (err > 0)
        x = np.broadcast_to(np.log(M)[:, None], err.shape)[ok]
        y = np.log(err[ok])
        level = float(np.exp(y.mean() + r["slope"] * (np.log(Mg) - x.mean())))
        cos = _median(sub, "head_cos_min")
        herr = _median(sub, "head_error_max")
        H = int(sub["heads"].values)
        lines.append(
            f"| {r['estimator']} | {r['phi'].split(', H=')[0]} | {r['d']} | {H} | "
            f"{r['slope']:.3f} [{r['slope_lo']:.3f}, {r['slope_hi']:.3f}] | {level:.4g} | "
            f"{cos} | {herr} |"
        )
    return lines


def _median(sub, var: str) -> str:
    import numpy as np

    if var not in sub:
        return "-"
    v = sub[var].values
    return f"{np.nanmedian(v):.4g}" if np.isfinite(v).any() else "-"
