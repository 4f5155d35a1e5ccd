"""The task protocol: a task added to the registry runs through the engine untouched."""

import ast
import dataclasses
import inspect

import numpy as np
import pytest
import xarray as xr

from bayes_ips.errors import InputError
from bayes_ips.study import analysis, backends, cells, config, engine, store, tasks
from bayes_ips.study.analysis import run_analysis
from bayes_ips.study.cells import Cell
from bayes_ips.study.parse import as_float, as_int, check_unknown, m_grid, study_name


@dataclasses.dataclass(frozen=True)
class CoinConfig:
    name: str
    seed: int
    repetitions: int
    M: tuple[int, ...]
    p: float
    task: str = "coin"

    @property
    def n_cells(self) -> int:
        return len(self.M) * self.repetitions

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "M": list(self.M)}


class CoinTask:
    """The bias of a coin estimated by the mean of M flips: error ~ M^(-1/2)."""

    name = "coin"
    selectable = {"estimator": str, "M": int, "rep": int}
    kinds = ("study",)
    coordinates = ("estimator", "M", "rep")

    def parse(self, raw: dict) -> CoinConfig:
        check_unknown("the config", raw, {"study", "coin"})
        st = raw["study"]
        check_unknown("[study]", st, {"task", "name", "seed", "repetitions", "M"})
        coin = raw.get("coin", {})
        check_unknown("[coin]", coin, {"p"})
        return CoinConfig(
            name=study_name(st, "coin"),
            seed=as_int("study.seed", st.get("seed", 0), 0),
            repetitions=as_int("study.repetitions", st.get("repetitions", 1)),
            M=m_grid(st["M"]),
            p=as_float("coin.p", coin.get("p", 0.5), 0.0),
        )

    def make_cells(self, config: CoinConfig) -> list[Cell]:
        out = []
        for M in config.M:
            for rep in range(config.repetitions):
                spec = {"task": "coin", "seed": config.seed, "p": config.p, "M": M, "rep": rep}
                coords = {"estimator": "mean", "M": M, "rep": rep}
                out.append(Cell(f"mean_M{M}_r{rep}", spec, coords))
        return out

    @staticmethod
    def run_cell(spec: dict) -> dict:
        rng = np.random.default_rng([spec["seed"], spec["M"], spec["rep"]])
        flips = rng.random(spec["M"]) < spec["p"]
        est = float(flips.mean())
        return {
            "task": "coin",
            "estimator": "mean",
            "M": spec["M"],
            "rep": spec["rep"],
            "estimate": est,
            "error": abs(est - spec["p"]),
        }

    def to_dataset(self, records: list[dict]):
        return store.records_to_dataset(records, ("estimator", "M", "rep"), skip=self.coordinates)

    def report(self, ds, out_dir, config, result, kind) -> dict:
        err = ds["error"].mean("rep").sel(estimator="mean")
        lines = [f"# {config.name}"]
        lines += [
            f"M = {M}: mean error {e:.4f}" for M, e in zip(ds["M"].values, err.values, strict=True)
        ]
        summary = "\n".join(lines) + "\n"
        path = f"{out_dir}/summary.md"
        with open(path, "w") as f:
            f.write(summary)
        return {"summary": summary, "paths": [path]}


COIN = """
[study]
task = "coin"
name = "coin"
seed = 5
repetitions = 3
M = [100, 400, 1600]

[coin]
p = 0.3
"""


@pytest.fixture
def coin(monkeypatch, tmp_path):
    monkeypatch.setitem(tasks.TASKS, "coin", CoinTask())
    path = tmp_path / "coin.toml"
    path.write_text(COIN)
    return path


def test_a_registered_task_runs_through_the_engine(coin, tmp_path):
    out = tmp_path / "out"
    res = run_analysis(str(coin), str(out), progress=False, only=["M=100,1600"])
    result = res["result"]
    assert result.n_computed == 6 and not result.failures and res["paths"]
    assert "M = 1600: mean error" in res["summary"]
    assert sorted(p.name for p in (out / "records").iterdir())[:2] == [
        "mean_M100_r0.json",
        "mean_M100_r1.json",
    ]
    ds = xr.open_dataset(out / "results.nc", engine="h5netcdf")
    assert dict(ds.sizes) == {"estimator": 1, "M": 2, "rep": 3}
    for M in (100, 1600):  # the task's records, where its dimensions put them
        for r in range(3):
            rec = CoinTask.run_cell({"seed": 5, "p": 0.3, "M": M, "rep": r})
            assert float(ds["estimate"].sel(estimator="mean", M=M, rep=r)) == rec["estimate"]
            assert float(ds["error"].sel(estimator="mean", M=M, rep=r)) == rec["error"]
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["estimator", "M", "rep"]
    again = run_analysis(str(coin), str(out), progress=False)  # resumes: only M = 400 runs
    assert again["result"].n_reused == 6 and again["result"].n_computed == 3


def test_a_task_parses_its_own_tables_and_selects_by_its_own_coordinates(coin, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(COIN.replace("p = 0.3", "q = 0.3"))
    with pytest.raises(InputError, match=r"unknown key 'q' in \[coin\]"):
        run_analysis(str(bad), str(tmp_path / "o"), progress=False)
    with pytest.raises(InputError, match="unknown key 'd'"):
        run_analysis(str(coin), str(tmp_path / "o"), progress=False, only=["d=1"])
    with pytest.raises(InputError, match="unknown analysis kind 'smoothness' for task 'coin'"):
        run_analysis(str(coin), str(tmp_path / "o"), kind="smoothness", progress=False)
    other = tmp_path / "other.toml"
    other.write_text(COIN.replace('task = "coin"', 'task = "dice"'))
    with pytest.raises(InputError, match="study.task must be one of 'ips', 'slr', 'heads', 'coin'"):
        run_analysis(str(other), str(tmp_path / "o"), progress=False)


def _code(module) -> str:
    """A module's code without its docstrings and comments."""
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                body[0] = ast.Pass()
    return ast.unparse(tree)


def test_the_engine_names_no_task():
    """The engine, store, backends, cells, config loader and analyses know no task."""
    for module in (engine, store, backends, cells, config, analysis):
        code = _code(module)
        assert "def " in code  # not vacuous: the code itself is checked
        for word in ("'ips'", "'slr'", "PhiEntry", "bspline", "single_location", "beta"):
            assert word not in code, f"{module.__name__} names {word}"
