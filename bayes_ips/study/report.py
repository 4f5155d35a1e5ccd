"""The written outcome of an IPS study: slopes (CSV and Markdown), figures, summary, table.

The kinds of analysis (:func:`write_ips_report`) add a summary to the standard
report (:func:`write_report`):

``study``
    slopes against theory, nothing more;
``dimension``
    the spread of the slopes over d, per estimator (parallel lines: small spread);
``smoothness``
    whether the slopes steepen with beta, per estimator and d;
``bayes_vs_erm``
    the paired error ratio posterior mean / ERM per M, the band coverage of g*
    and the band width, plus the ratio figure;
``minimax``
    per (estimator, phi, d) the slope with its interval beside the slopes the
    theory predicts (:func:`~bayes_ips.study.slopes.predicted_slopes`: the
    minimax exponent, and for phi* with isolated singularities the adaptive
    one), plus the spread of the slopes over d per (estimator, phi).

Estimators are told apart by name (``erm_gcv``, ``erm_theory``, ...); their kind
(``erm`` or ``bayes_pm``), the Dataset's ``kind`` coordinate, decides which
have credible bands, and a posterior mean is paired with the ERM estimator that
shares its ERM fit (:meth:`~bayes_ips.study.tasks.ips.StudyConfig.pairs`).
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from bayes_ips.io import atomic_write
from bayes_ips.study.slopes import SLOPE_COLUMNS, fit_slopes, predicted_slopes, slopes_markdown

__all__ = [
    "GOAL_SLOPE_GAP",
    "LEGACY_PAIR",
    "estimators_of_kind",
    "final_table",
    "prediction_rows",
    "write_ips_report",
    "write_report",
    "write_slopes",
]

GOAL_SLOPE_GAP = 0.1  # the goal: every slope within 0.1 of theory, d-slopes within 0.1
LEGACY_PAIR = ("bayes_pm", "erm")  # the (posterior, ERM) pair of a study without named estimators


def estimators_of_kind(ds, kind: str) -> list[str]:
    """The estimators of ``ds`` of ``kind`` (by its ``kind`` coordinate; else by name)."""
    names = [str(e) for e in ds["estimator"].values]
    if "kind" not in ds.coords:
        return [e for e in names if e == kind]
    return [e for e, k in zip(names, ds["kind"].values, strict=True) if str(k) == kind]


def write_slopes(rows: list[dict], csv_path: str, md_path: str | None = None) -> None:
    """``rows`` as CSV (all of :data:`SLOPE_COLUMNS`) and optionally Markdown, atomically."""
    with atomic_write(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(SLOPE_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in SLOPE_COLUMNS})
    if md_path:
        with atomic_write(md_path) as tmp, open(tmp, "w") as f:
            f.write(slopes_markdown(rows))


def _save(fig, path: str) -> None:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=130, format=os.path.splitext(path)[1][1:])


def write_report(
    ds,
    out_dir: str,
    *,
    seed: int = 0,
    title: str = "",
    paired: bool = False,
    pairs: list[tuple[str, str]] | None = None,
):
    """Slopes and figures of an aggregated study into ``out_dir``.

    Writes ``slopes.csv`` and ``slopes.md`` (error rates), ``contraction.csv`` and
    ``contraction.md`` (credible-band widths, when there are Bayes cells),
    ``rates.png``, and ``paired_ratio.png`` when ``paired`` and both estimators of
    a pair ran (``pairs``: ``(posterior, erm)`` names; default ``bayes_pm``, ``erm``).

    Returns
    -------
    rows : list of dict (error slopes)
    band_rows : list of dict (band-width slopes; empty without Bayes cells)
    paths : list of str (files written)
    """
    from bayes_ips.study.figures import plot_paired_ratio, plot_rates

    rows = fit_slopes(ds, seed=seed)
    paths = [os.path.join(out_dir, n) for n in ("slopes.csv", "slopes.md")]
    write_slopes(rows, *paths)
    band_rows: list[dict] = []
    posteriors = estimators_of_kind(ds, "bayes_pm")
    if "band_width" in ds and posteriors:
        band_rows = fit_slopes(
            ds.sel(estimator=posteriors), seed=seed, var="band_width", theory_scale=0.5
        )
        more = [os.path.join(out_dir, n) for n in ("contraction.csv", "contraction.md")]
        write_slopes(band_rows, *more)
        paths += more
    fig = plot_rates(ds, rows, title=title)
    paths.append(os.path.join(out_dir, "rates.png"))
    _save(fig, paths[-1])
    ests = set(ds["estimator"].values.tolist())
    ran = [p for p in (pairs or [LEGACY_PAIR]) if set(p) <= ests]
    if paired and ran:
        paths.append(os.path.join(out_dir, "paired_ratio.png"))
        _save(plot_paired_ratio(ds, ran), paths[-1])
    return rows, band_rows, paths


def final_table(rows: list[dict], band_rows: list[dict] | None = None) -> str:
    """A plain-text table of the slopes for the terminal."""
    w = max([9] + [len(r["estimator"]) for r in rows])  # named estimators may be longer
    head = (
        f"{'estimator':>{w}s} {'phi':>18s} {'d':>3s} {'slope':>7s} {'95% CI':>17s} {'theory':>7s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = (
            f"[{r['slope_lo']:.2f}, {r['slope_hi']:.2f}]" if r["slope_lo"] == r["slope_lo"] else "-"
        )
        lines.append(
            f"{r['estimator']:>{w}s} {r['phi']:>18s} {r['d']:3d} {r['slope']:7.3f} {ci:>17s} "
            f"{r['theory']:7.3f}"
        )
    several = len({r["estimator"] for r in band_rows or []}) > 1
    for r in band_rows or []:
        name = f"band {r['estimator']}" if several else "band"
        lines.append(
            f"{name:>{w}s} {r['phi']:>18s} {r['d']:3d} {r['slope']:7.3f} "
            f"{'(width)':>17s} {r['theory']:7.3f}"
        )
    return "\n".join(lines)


def write_ips_report(ds, out_dir: str, config, result, kind: str) -> dict:
    """The report of an IPS study's ``kind`` of analysis: slopes, figures, ``summary.md``.

    Parameters
    ----------
    ds : xarray.Dataset
        The aggregated records (:func:`bayes_ips.study.tasks.ips.to_dataset`).
    out_dir : str
    config : bayes_ips.study.tasks.ips.StudyConfig
    result : bayes_ips.study.engine.StudyResult
    kind : {"study", "dimension", "smoothness", "bayes_vs_erm", "minimax"}

    Returns
    -------
    dict
        ``rows`` (error slopes), ``band_rows`` (band-width slopes), ``summary``
        (the Markdown) and ``paths`` (the files written); for ``minimax`` also
        ``prediction_rows`` (:func:`prediction_rows`).
    """
    pairs = config.pairs()
    rows, band_rows, paths = write_report(
        ds,
        out_dir,
        seed=config.seed,
        title=f"{config.name}: N = {config.N}, rank {config.rank}, noise {config.noise:g}, "
        f"{config.tokens} tokens, {_n_reps(ds)} repetitions",
        paired=kind in ("bayes_vs_erm", "study"),
        pairs=pairs,
    )
    pred = prediction_rows(rows, _families(ds)) if kind == "minimax" else []
    summary = _summary(kind, ds, rows, band_rows, config, result, pairs, pred)
    path = os.path.join(out_dir, "summary.md")
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        f.write(summary)
    out = {"rows": rows, "band_rows": band_rows, "summary": summary, "paths": paths + [path]}
    if kind == "minimax":
        out["prediction_rows"] = pred
    return out


def _families(ds) -> dict[str, str]:
    """phi label -> family (the ``family`` coordinate; the label's head without it)."""
    phis = [str(p) for p in ds["phi"].values]
    if "family" in ds.coords:
        return dict(zip(phis, (str(f) for f in ds["family"].values), strict=True))
    return {p: p.split("(")[0] for p in phis}


def prediction_rows(rows: list[dict], families: dict[str, str]) -> list[dict]:
    """Each error slope beside the slopes the theory predicts for its phi*.

    Parameters
    ----------
    rows : list of dict
        Error slopes (:func:`~bayes_ips.study.slopes.fit_slopes`).
    families : dict
        phi label -> family (a label missing there: its head, ``holder(beta=1)`` -> holder).

    Returns
    -------
    list of dict
        Per row: ``estimator``, ``phi``, ``family``, ``beta``, ``d``, ``slope``,
        ``slope_lo``, ``slope_hi``, ``minimax`` (``-2 beta / (2 beta + 1)``),
        ``singularity`` (``-(2 beta + 1) / (2 beta + 2)`` for phi* with isolated
        singularities, NaN otherwise), and ``nearer``: the prediction the slope
        lies closer to (``minimax`` where the other is NaN or both coincide).
    """
    out = []
    for r in rows:
        fam = families.get(r["phi"], r["phi"].split("(")[0])  # the label: family(beta=..)
        pred = predicted_slopes(fam, r["beta"])
        nearer = "minimax"
        if math.isfinite(pred["singularity"]) and pred["singularity"] != pred["minimax"]:
            gap_s = abs(r["slope"] - pred["singularity"])
            if gap_s < abs(r["slope"] - pred["minimax"]):
                nearer = "singularity"
        out.append(
            {
                **{k: r[k] for k in ("estimator", "phi", "beta", "d", "slope")},
                **{k: r[k] for k in ("slope_lo", "slope_hi")},
                **{k: r.get(k, math.nan) for k in ("slope_holds", "M_holds_min")},
                "family": fam,
                **pred,
                "nearer": nearer,
            }
        )
    return out


def _predictions_markdown(pred: list[dict]) -> list[str]:
    def f(v):
        return "-" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"

    lines = [
        "| estimator | phi | d | slope | 95% CI | slope where the condition holds (from M) | "
        "minimax -2b/(2b+1) | isolated singularity -(2b+1)/(2b+2) | nearer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in pred:
        ci = "-" if math.isnan(r["slope_lo"]) else f"[{r['slope_lo']:.3f}, {r['slope_hi']:.3f}]"
        sh = r.get("slope_holds", math.nan)
        held = "-" if math.isnan(sh) else f"{sh:.3f} ({r['M_holds_min']})"
        lines.append(
            f"| {r['estimator']} | {r['phi']} | {r['d']} | {r['slope']:.3f} | {ci} | {held} | "
            f"{f(r['minimax'])} | {f(r['singularity'])} | {r['nearer']} |"
        )
    return lines


def _d_spread_lines(rows: list[dict]) -> list[str]:
    """Per (estimator, phi): the range of the slopes over d, against the goal."""
    lines = []
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
    return lines


def _n_reps(ds) -> int:
    """How many repetitions have at least one finished cell (a slice may run fewer)."""
    err = ds["error"].values
    finite = np.isfinite(err).reshape(-1, err.shape[-1])  # rep is the last dimension
    return int(finite.any(axis=0).sum())


def _summary(kind, ds, rows, band_rows, config, result, pairs=None, pred=()) -> str:
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
    held = [r for r in rows if math.isfinite(r.get("slope_holds", math.nan))]
    if held:
        n_ok = sum(abs(r["slope_holds"] - r["theory"]) <= GOAL_SLOPE_GAP for r in held)
        lines.append(
            f"Where the theory's condition holds (at least two M): {n_ok} of {len(held)} "
            f"slopes (`slope_holds`) lie within {GOAL_SLOPE_GAP} of theory."
        )
    if band_rows:
        lines += ["", "## Credible-band width (posterior contraction; theory: half the slope)", ""]
        lines.append(slopes_markdown(band_rows))
    if kind in ("dimension", "minimax"):
        if kind == "minimax":
            lines += ["", "## Slopes against the predicted exponents", ""]
            lines += [
                "The minimax exponent holds over the Hoelder ball (and is forced by the "
                "theory's K rule through the variance K/M); phi* smooth but at isolated "
                "singularities (bspline, holder) allow -(2b+1)/(2b+2) to an adaptive K "
                "(GCV); weierstrass phi* are rough everywhere: minimax only.",
                "",
            ]
            lines += _predictions_markdown(pred)
        lines += ["", "## Spread of the slopes over d", ""]
        lines += _d_spread_lines(rows)
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
    ests = set(ds["estimator"].values.tolist())
    ran = [p for p in (pairs if pairs is not None else [LEGACY_PAIR]) if set(p) <= ests]
    if ran:
        lines += ["", "## Posterior mean against ERM on the same data", ""]
    for pm, erm in ran:
        if (pm, erm) != LEGACY_PAIR:
            lines += [f"{pm} against {erm} (the same ERM fit):", ""]
        lines.append(
            "| phi | d | M | median error ratio PM/ERM | band coverage of g* | band width |"
        )
        lines.append("|---|---|---|---|---|---|")
        for phi in ds["phi"].values:
            for d in ds["d"].values:
                for M in ds["M"].values:
                    e_b = ds["error"].sel(estimator=pm, phi=phi, d=d, M=M).values
                    e_e = ds["error"].sel(estimator=erm, phi=phi, d=d, M=M).values
                    ratio = e_b / e_e
                    if not np.isfinite(ratio).any():
                        continue
                    cov = ds["band_coverage"].sel(estimator=pm, phi=phi, d=d, M=M).values
                    wid = ds["band_width"].sel(estimator=pm, phi=phi, d=d, M=M).values
                    lines.append(
                        f"| {phi} | {d} | {M} | {np.nanmedian(ratio):.3f} | "
                        f"{np.nanmean(cov):.3f} | {np.nanmean(wid):.4g} |"
                    )
        if len(ran) > 1:
            lines.append("")
    if getattr(config, "error_rse", None) is not None and "error_rse_met" in ds:
        met = ds["error_rse_met"].values
        n = int(np.isfinite(met).sum())
        n_met = int(np.nansum(met == 1))
        lines += [
            "",
            f"Error precision: {n_met} of {n} cells met se/error <= {config.error_rse:g} "
            f"(held-out pairs doubled from {config.n_eval_pairs} up to "
            f"{config.error_max_pairs}; median pairs used "
            f"{np.nanmedian(ds['error_n_pairs'].values):.0f}).",
        ]
    if result.failures:
        lines += ["", "## Failed cells", ""]
        lines += [f"- {f['cell_id']}: {f['error']}" for f in result.failures]
    return "\n".join(lines) + "\n"
