"""Rate studies: grids of cells of a task (phi*, d, M, repetition, estimator), resumable, on Dask.

from bayes_ips.study import load_config, run_study
config = load_config("analyses/configs/quick.toml")
result = run_study(config, "out/quick")              # or workers=4, scheduler=ADDR

The engine (:mod:`~bayes_ips.study.engine`), the store and the backends know no
task; each task (:mod:`bayes_ips.study.tasks`) parses its config, makes its
cells, runs one and reports.
"""

from bayes_ips.study.cells import Cell, select_cells
from bayes_ips.study.config import config_hash, load_config, parse_config
from bayes_ips.study.engine import StudyResult, aggregate, run_study
from bayes_ips.study.report import final_table, write_report
from bayes_ips.study.slopes import fit_slopes, theory_slope
from bayes_ips.study.store import Store, records_to_dataset
from bayes_ips.study.tasks import TASKS, StudyTask, get_task, make_cells, run_cell, task_of
from bayes_ips.study.tasks.ips import StudyConfig

__all__ = [
    "TASKS",
    "Cell",
    "Store",
    "StudyConfig",
    "StudyResult",
    "StudyTask",
    "aggregate",
    "config_hash",
    "final_table",
    "fit_slopes",
    "get_task",
    "load_config",
    "make_cells",
    "parse_config",
    "records_to_dataset",
    "run_cell",
    "run_study",
    "select_cells",
    "task_of",
    "theory_slope",
    "write_report",
]
