"""The written outcome of a study: slopes (CSV and Markdown), figures, a final table."""

from __future__ import annotations

import csv
import os

from bayes_ips.io import atomic_write
from bayes_ips.study.slopes import SLOPE_COLUMNS, fit_slopes, slopes_markdown

__all__ = ["final_table", "write_report", "write_slopes"]


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


def write_report(ds, out_dir: str, *, seed: int = 0, title: str = "", paired: bool = False):
    """Slopes and figures of an aggregated study into ``out_dir``.

    Writes ``slopes.csv`` and ``slopes.md`` (error rates), ``contraction.csv`` and
    ``contraction.md`` (credible-band widths, when there are Bayes cells),
    ``rates.png``, and ``paired_ratio.png`` when ``paired`` and both estimators ran.

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
    if "band_width" in ds and "bayes_pm" in ds["estimator"].values:
        band_rows = fit_slopes(
            ds.sel(estimator=["bayes_pm"]), seed=seed, var="band_width", theory_scale=0.5
        )
        more = [os.path.join(out_dir, n) for n in ("contraction.csv", "contraction.md")]
        write_slopes(band_rows, *more)
        paths += more
    fig = plot_rates(ds, rows, title=title)
    paths.append(os.path.join(out_dir, "rates.png"))
    _save(fig, paths[-1])
    ests = set(ds["estimator"].values.tolist())
    if paired and {"erm", "bayes_pm"} <= ests:
        paths.append(os.path.join(out_dir, "paired_ratio.png"))
        _save(plot_paired_ratio(ds), paths[-1])
    return rows, band_rows, paths


def final_table(rows: list[dict], band_rows: list[dict] | None = None) -> str:
    """A plain-text table of the slopes for the terminal."""
    head = f"{'estimator':>9s} {'phi':>18s} {'d':>3s} {'slope':>7s} {'95% CI':>17s} {'theory':>7s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = (
            f"[{r['slope_lo']:.2f}, {r['slope_hi']:.2f}]" if r["slope_lo"] == r["slope_lo"] else "-"
        )
        lines.append(
            f"{r['estimator']:>9s} {r['phi']:>18s} {r['d']:3d} {r['slope']:7.3f} {ci:>17s} "
            f"{r['theory']:7.3f}"
        )
    for r in band_rows or []:
        lines.append(
            f"{'band':>9s} {r['phi']:>18s} {r['d']:3d} {r['slope']:7.3f} "
            f"{'(width)':>17s} {r['theory']:7.3f}"
        )
    return "\n".join(lines)
