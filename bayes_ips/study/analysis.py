"""The analyses of ``analyses/``: run a study, then write its figures and tables.

Each analysis script is a thin ``main(args)`` around :func:`run_analysis`; the
command ``bayes-ips study`` uses it too.  The kinds add a summary to the standard
report (:func:`bayes_ips.study.report.write_report`):

``study``
    slopes against theory, nothing more;
``dimension``
    the spread of the slopes over d, per estimator (parallel lines: small spread);
``smoothness``
    whether the slopes steepen with beta, per estimator and d;
``bayes_vs_erm``
    the paired error ratio posterior mean / ERM per M, the band coverage of g*
    and the band width, plus the ratio figure.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from bayes_ips.errors import InputError
from bayes_ips.io import atomic_write
from bayes_ips.run_options import add_run_arguments

__all__ = ["KINDS", "add_study_arguments", "main_for", "run_analysis"]

KINDS = ("study", "dimension", "smoothness", "bayes_vs_erm")
GOAL_SLOPE_GAP = 0.1  # the goal: every slope within 0.1 of theory, d-slopes within 0.1


def add_study_arguments(parser: argparse.ArgumentParser, default_config: str) -> None:
    """The options every analysis script takes."""
    parser.add_argument("--config", default=default_config, help="study config (.toml)")
    parser.add_argument("--out-dir", required=True, help="figures, tables and aggregated results")
    parser.add_argument(
        "--study-dir",
        help="folder of the cell records (default: --out-dir); share it between "
        "analyses of the same seed and settings to reuse cells",
    )
    add_run_arguments(parser, folder="--study-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main_for(kind: str, args: argparse.Namespace) -> dict:
    """The body of an analysis script's ``main(args)``: float64, cache, run, print."""
    from bayes_ips import enable_compilation_cache, enable_x64

    enable_x64()
    enable_compilation_cache()
    out = run_analysis(
        args.config,
        args.out_dir,
        kind=kind,
        study_dir=args.study_dir,
        processes=args.processes,
        workers=args.workers,
        scheduler=args.scheduler,
        attempts=args.attempts,
        cell_timeout=args.cell_timeout,
        progress=not args.quiet,
        only=args.only,
        report_only=args.report_only,
    )
    print(out["summary"])
    return out


def run_analysis(
    config_path: str,
    out_dir: str,
    *,
    kind: str = "study",
    study_dir: str | None = None,
    processes: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    attempts: int = 2,
    progress: bool = True,
    only: list[str] | None = None,
    report_only: bool = False,
    cell_timeout: float | None = None,
) -> dict:
    """Run (or resume) the study of ``config_path`` and write its report into ``out_dir``.

    ``only`` restricts the grid to a slice, e.g. ``["estimator=erm", "d=1,5"]``
    (keys: estimator, d, M, rep, beta, family).  ``report_only`` runs no cell and
    reports on those already finished.

    Returns a dict with the StudyResult (``result``), the error slopes (``rows``),
    the band-width slopes (``band_rows``), the summary Markdown (``summary``) and
    the files written (``paths``).
    """
    import xarray as xr

    from bayes_ips.study.config import load_config
    from bayes_ips.study.engine import run_study
    from bayes_ips.study.report import write_report

    if kind not in KINDS:
        raise InputError(f"unknown analysis kind {kind!r}; choose from {', '.join(KINDS)}")
    from bayes_ips.study.backends import check_backend_options
    from bayes_ips.study.cells import make_cells, parse_only, select_cells

    check_backend_options(processes, workers, scheduler, cell_timeout)
    config = load_config(config_path)
    selection = parse_only(only)
    cells = select_cells(make_cells(config), selection)
    if not cells:
        raise InputError(f"--only {' '.join(only or [])} selects no cell of {config.name}")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out_dir}: {e.strerror}") from None
    result = run_study(
        config,
        study_dir or out_dir,
        processes=processes,
        workers=workers,
        scheduler=scheduler,
        max_attempts=attempts,
        progress=progress,
        results_dir=out_dir,
        cells=cells,
        report_only=report_only,
        cell_timeout=cell_timeout,
    )
    out = {"result": result, "rows": [], "band_rows": [], "summary": "", "paths": []}
    if not result.records:
        return out
    with xr.open_dataset(os.path.join(out_dir, "results.nc"), engine="h5netcdf") as ds:
        ds = ds.load()
    if config.task == "slr":
        return {**out, **_slr_report(ds, out_dir, config, result)}
    rows, band_rows, paths = write_report(
        ds,
        out_dir,
        seed=config.seed,
        title=f"{config.name}: N = {config.N}, rank {config.rank}, noise {config.noise:g}, "
        f"{config.tokens} tokens, {_n_reps(ds)} repetitions",
        paired=kind in ("bayes_vs_erm", "study"),
    )
    summary = _summary(kind, ds, rows, band_rows, config, result)
    path = os.path.join(out_dir, "summary.md")
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        f.write(summary)
    out.update(rows=rows, band_rows=band_rows, summary=summary, paths=paths + [path])
    return out


def _n_reps(ds) -> int:
    """How many repetitions have at least one finished cell (a slice may run fewer)."""
    err = ds["error"].values
    finite = np.isfinite(err).reshape(-1, err.shape[-1])  # rep is the last dimension
    return int(finite.any(axis=0).sum())


def _slr_report(ds, out_dir: str, config, result) -> dict:
    """Figure and table of a single-location study."""
    from bayes_ips.study.slr import plot_slr, slr_table

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


def _summary(kind, ds, rows, band_rows, config, result) -> str:
    from bayes_ips.study.slopes import slopes_markdown

    lines = [f"# {config.name}: {kind} analysis", ""]
    lines.append(
        f"{len(result.records)} of "
        f"{len(result.records) + len(result.failures) + result.n_missing} selected cells "
        f"({config.n_cells} in the grid) finished "
        f"({len(result.failures)} failed"
        + (f", {result.n_missing} not run" if result.n_missing else "")
        + f"); seed {config.seed}."
    )
    lines += ["", "## Error slopes (log error on log M; 95% bootstrap CI over repetitions)", ""]
    lines.append(slopes_markdown(rows))
    gaps = [abs(r["slope"] - r["theory"]) for r in rows if math.isfinite(r["slope"])]
    if gaps:
        n_ok = sum(g <= GOAL_SLOPE_GAP for g in gaps)
        lines.append(
            f"{n_ok} of {len(gaps)} slopes lie within {GOAL_SLOPE_GAP} of theory "
            f"(largest gap {max(gaps):.3f})."
        )
    if band_rows:
        lines += ["", "## Credible-band width (posterior contraction; theory: half the slope)", ""]
        lines.append(slopes_markdown(band_rows))
    if kind == "dimension":
        lines += ["", "## Spread of the slopes over d", ""]
        for est in sorted({r["estimator"] for r in rows}):
            for phi in sorted({r["phi"] for r in rows}):
                s = [r["slope"] for r in rows if r["estimator"] == est and r["phi"] == phi]
                if len(s) > 1:
                    spread = max(s) - min(s)
                    verdict = "parallel" if spread <= GOAL_SLOPE_GAP else "NOT parallel"
                    lines.append(
                        f"- {est}, {phi}: d-slopes from {min(s):.3f} to {max(s):.3f}, spread "
                        f"{spread:.3f} ({verdict} at the {GOAL_SLOPE_GAP} goal)"
                    )
    if kind == "smoothness":
        lines += ["", "## Do smoother phi* give steeper slopes?", ""]
        for est in sorted({r["estimator"] for r in rows}):
            for d in sorted({r["d"] for r in rows}):
                sel = sorted(
                    (r for r in rows if r["estimator"] == est and r["d"] == d),
                    key=lambda r: r["beta"],
                )
                if len(sel) > 1:
                    steeper = all(
                        b["slope"] < a["slope"] for a, b in zip(sel, sel[1:], strict=False)
                    )
                    seq = ", ".join(f"beta {r['beta']:g}: {r['slope']:.3f}" for r in sel)
                    verdict = "steeper with beta" if steeper else "NOT monotone"
                    lines.append(f"- {est}, d = {d}: {seq} ({verdict})")
    if "bayes_pm" in ds["estimator"].values and "erm" in ds["estimator"].values:
        lines += ["", "## Posterior mean against ERM on the same data", ""]
        lines.append(
            "| phi | d | M | median error ratio PM/ERM | band coverage of g* | band width |"
        )
        lines.append("|---|---|---|---|---|---|")
        for phi in ds["phi"].values:
            for d in ds["d"].values:
                for M in ds["M"].values:
                    e_b = ds["error"].sel(estimator="bayes_pm", phi=phi, d=d, M=M).values
                    e_e = ds["error"].sel(estimator="erm", phi=phi, d=d, M=M).values
                    ratio = e_b / e_e
                    if not np.isfinite(ratio).any():
                        continue
                    cov = ds["band_coverage"].sel(estimator="bayes_pm", phi=phi, d=d, M=M).values
                    wid = ds["band_width"].sel(estimator="bayes_pm", phi=phi, d=d, M=M).values
                    lines.append(
                        f"| {phi} | {d} | {M} | {np.nanmedian(ratio):.3f} | "
                        f"{np.nanmean(cov):.3f} | {np.nanmean(wid):.4g} |"
                    )
    if result.failures:
        lines += ["", "## Failed cells", ""]
        lines += [f"- {f['cell_id']}: {f['error']}" for f in result.failures]
    return "\n".join(lines) + "\n"
