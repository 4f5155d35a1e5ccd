"""Rate studies: grids of (phi*, d, M, repetition, estimator) cells, resumable, on Dask.

from bayes_ips.study import load_config, run_study, write_report
config = load_config("analyses/configs/quick.toml")
result = run_study(config, "out/quick")              # or workers=4, scheduler=ADDR
"""

from bayes_ips.study.cells import Cell, make_cells, run_cell
from bayes_ips.study.config import StudyConfig, config_hash, load_config, parse_config
from bayes_ips.study.engine import StudyResult, aggregate, run_study
from bayes_ips.study.report import final_table, write_report
from bayes_ips.study.slopes import fit_slopes, theory_slope
from bayes_ips.study.store import Store, records_to_dataset

__all__ = [
    "Cell",
    "Store",
    "StudyConfig",
    "StudyResult",
    "aggregate",
    "config_hash",
    "final_table",
    "fit_slopes",
    "load_config",
    "make_cells",
    "parse_config",
    "records_to_dataset",
    "run_cell",
    "run_study",
    "theory_slope",
    "write_report",
]
