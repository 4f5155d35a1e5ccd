"""Study configurations: a TOML file declares a grid of cells; this module validates it.

A study crosses sample sizes ``M`` (log-spaced), repetitions (seeds), dimensions
``d``, true activations phi* (with their smoothness beta) and estimators.  Each
combination is a *cell*; see :mod:`bayes_ips.study.cells`.

The file (every key is checked; unknown keys and bad values are refused)::

    [study]
    name = "quick"
    seed = 0                       # the study's root seed: every dataset derives from it
    repetitions = 3                # independent datasets per (phi, d, M)
    estimators = ["erm", "bayes_pm"]
    M = [200, 400, 800]            # or a log-spaced range: M = {min = 200, max = 3200, num = 5}
    d = [1, 5]
    N = 6                          # tokens per sample
    rank = 1
    noise = 0.1                    # noise standard deviation
    noise_law = "gaussian"         # gaussian | uniform | rademacher
    tokens = "cube"                # cube | gaussian | anisotropic | correlated
    rho = 0.3                      # within-sample correlation (tokens = "correlated")
    n_eval_pairs = 20000           # held-out pairs for the L2(rho) error

    [[phi]]                        # one table per true activation
    family = "bspline"             # tanh | sin | holder | bspline
    beta = 2                       # smoothness (holder: any > 0; bspline: the degree)

    [erm]                          # settings of the ERM estimator (all optional)
    k_rule = "gcv"                 # gcv | theory
    n_intervals = 12               # fix K instead (default: chosen by k_rule)
    degree = 3
    multiplicity = 1
    restarts = 4

    [bayes_pm]                     # settings of the posterior-mean estimator (all optional)
    chains = 2
    warmup = 300
    draws = 300
    collapsed = true
    init = "erm"                   # erm | prior
    n_intervals = 12               # fix K of the model's basis (default: the ERM fit's choice)
    target_accept = 0.85
    max_tree_depth = 8
    level = 0.9                    # credible level of the pointwise bands
    n_band_pairs = 2000            # held-out pairs for band width and coverage
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tomllib
from typing import Any

import numpy as np

from bayes_ips.activations import FAMILIES
from bayes_ips.errors import InputError
from bayes_ips.simulate import NOISE_LAWS, TOKEN_LAWS

__all__ = [
    "ESTIMATORS",
    "BayesSettings",
    "ERMSettings",
    "PhiEntry",
    "StudyConfig",
    "config_hash",
    "load_config",
    "parse_config",
]

ESTIMATORS = ("erm", "bayes_pm")
SMOOTH_FAMILIES = ("tanh", "sin")  # beta = inf


@dataclasses.dataclass(frozen=True)
class PhiEntry:
    """A true activation of the grid: ``family`` and its smoothness ``beta``."""

    family: str
    beta: float  # inf for the analytic families

    @property
    def label(self) -> str:
        if math.isinf(self.beta):
            return self.family
        return f"{self.family}(beta={self.beta:g})"


@dataclasses.dataclass(frozen=True)
class ERMSettings:
    """ERM settings of a study (see :class:`bayes_ips.erm.ERMConfig`)."""

    k_rule: str = "gcv"
    n_intervals: int | None = None
    degree: int | None = None
    multiplicity: int = 1
    restarts: int = 4


@dataclasses.dataclass(frozen=True)
class BayesSettings:
    """Posterior-mean settings of a study (see :class:`bayes_ips.inference.SamplerConfig`)."""

    chains: int = 2
    warmup: int = 300
    draws: int = 300
    collapsed: bool = True
    init: str = "erm"
    target_accept: float = 0.85
    max_tree_depth: int = 8
    level: float = 0.9
    n_band_pairs: int = 2000
    n_intervals: int | None = None


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A validated study grid (see the module docstring for the file format)."""

    name: str
    seed: int
    repetitions: int
    estimators: tuple[str, ...]
    M: tuple[int, ...]
    d: tuple[int, ...]
    phi: tuple[PhiEntry, ...]
    N: int = 6
    rank: int = 1
    noise: float = 0.1
    noise_law: str = "gaussian"
    tokens: str = "cube"
    rho: float = 0.0
    n_eval_pairs: int = 20000
    erm: ERMSettings = ERMSettings()
    bayes_pm: BayesSettings = BayesSettings()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (beta = inf written as the string "inf")."""
        out = dataclasses.asdict(self)
        out["phi"] = [
            {"family": p.family, "beta": "inf" if math.isinf(p.beta) else p.beta} for p in self.phi
        ]
        for k in ("estimators", "M", "d"):
            out[k] = list(out[k])
        return out

    @property
    def n_cells(self) -> int:
        return len(self.estimators) * len(self.phi) * len(self.d) * len(self.M) * self.repetitions

    @property
    def task(self) -> str:
        return "ips"


def config_hash(config: StudyConfig) -> str:
    """A short stable hash of everything that determines the study's numbers."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- parsing

_STUDY_KEYS = {
    "task",
    "name",
    "seed",
    "repetitions",
    "estimators",
    "M",
    "d",
    "N",
    "rank",
    "noise",
    "noise_law",
    "tokens",
    "rho",
    "n_eval_pairs",
}
_TOP_KEYS = {"study", "phi", "erm", "bayes_pm"}


def _unknown(where: str, got: dict, allowed: set[str]) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        raise InputError(
            f"unknown key {extra[0]!r} in {where} (allowed: {', '.join(sorted(allowed))})"
        )


def _int(where: str, v: Any, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise InputError(f"{where} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _float(where: str, v: Any, lo: float | None = None, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InputError(f"{where} must be a finite number, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise InputError(f"{where} must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    return float(v)


def _choice(where: str, v: Any, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise InputError(f"{where} must be one of {', '.join(choices)}; got {v!r}")
    return v


def _int_list(where: str, v: Any, lo: int) -> tuple[int, ...]:
    if not isinstance(v, list) or not v:
        raise InputError(f"{where} must be a non-empty list of integers, got {v!r}")
    out = tuple(_int(f"{where} entries", x, lo) for x in v)
    if len(set(out)) != len(out):
        raise InputError(f"{where} has repeated values: {list(out)}")
    return tuple(sorted(out))


def _m_grid(v: Any) -> tuple[int, ...]:
    if isinstance(v, dict):
        _unknown("study.M", v, {"min", "max", "num"})
        for k in ("min", "max", "num"):
            if k not in v:
                raise InputError(f"study.M as a range needs min, max and num; {k!r} is missing")
        lo, hi, num = (
            _int("M.min", v["min"], 2),
            _int("M.max", v["max"], 2),
            _int("M.num", v["num"]),
        )
        if hi < lo:
            raise InputError(f"study.M: max {hi} < min {lo}")
        grid = sorted({int(round(m)) for m in np.geomspace(lo, hi, num)})
        return tuple(grid)
    return _int_list("study.M", v, 2)


def _phi_entries(v: Any) -> tuple[PhiEntry, ...]:
    if not isinstance(v, list) or not v:
        raise InputError("the study needs at least one [[phi]] table (family and beta)")
    out = []
    for i, t in enumerate(v):
        where = f"phi[{i}]"
        if not isinstance(t, dict):
            raise InputError(f"{where} must be a table with family and beta")
        _unknown(where, t, {"family", "beta"})
        fam = _choice(f"{where}.family", t.get("family"), FAMILIES)
        if fam in SMOOTH_FAMILIES:
            if "beta" in t and t["beta"] != "inf":
                raise InputError(f"{where}: {fam} is analytic (beta = inf); do not give a beta")
            beta = math.inf
        else:
            if "beta" not in t:
                raise InputError(f"{where}: family {fam} needs a beta")
            beta = _float(f"{where}.beta", t["beta"], 0.0, lo_open=True)
            if fam == "bspline" and (beta != int(beta) or beta < 1):
                raise InputError(f"{where}: bspline needs an integer degree beta >= 1, got {beta}")
        out.append(PhiEntry(fam, beta))
    if len(set(out)) != len(out):
        raise InputError("the [[phi]] tables repeat an entry")
    return tuple(out)


def _erm(v: Any) -> ERMSettings:
    if not isinstance(v, dict):
        raise InputError("[erm] must be a table")
    _unknown("[erm]", v, {f.name for f in dataclasses.fields(ERMSettings)})
    s = ERMSettings()
    k_rule = _choice("erm.k_rule", v.get("k_rule", s.k_rule), ("gcv", "theory"))
    degree = v.get("degree", s.degree)
    if degree is not None:
        degree = _int("erm.degree", degree, 0)
        if degree > 7:
            raise InputError(f"erm.degree must be in 0..7, got {degree}")
    mult = _int("erm.multiplicity", v.get("multiplicity", s.multiplicity))
    if mult > (3 if degree is None else degree) + 1:
        raise InputError(f"erm.multiplicity must be <= degree + 1, got {mult}")
    n_int = v.get("n_intervals")
    if n_int is not None:
        n_int = _int("erm.n_intervals", n_int)
    restarts = _int("erm.restarts", v.get("restarts", s.restarts))
    return ERMSettings(k_rule, n_int, degree, mult, restarts)


def _bayes(v: Any) -> BayesSettings:
    if not isinstance(v, dict):
        raise InputError("[bayes_pm] must be a table")
    _unknown("[bayes_pm]", v, {f.name for f in dataclasses.fields(BayesSettings)})
    s = BayesSettings()
    collapsed = v.get("collapsed", s.collapsed)
    if not isinstance(collapsed, bool):
        raise InputError(f"bayes_pm.collapsed must be true or false, got {collapsed!r}")
    level = _float("bayes_pm.level", v.get("level", s.level), 0.0, lo_open=True)
    target = _float("bayes_pm.target_accept", v.get("target_accept", s.target_accept), 0.0, True)
    if level >= 1 or target >= 1:
        raise InputError("bayes_pm.level and bayes_pm.target_accept must be in (0, 1)")
    return BayesSettings(
        chains=_int("bayes_pm.chains", v.get("chains", s.chains)),
        warmup=_int("bayes_pm.warmup", v.get("warmup", s.warmup)),
        draws=_int("bayes_pm.draws", v.get("draws", s.draws), 4),
        collapsed=collapsed,
        init=_choice("bayes_pm.init", v.get("init", s.init), ("erm", "prior")),
        target_accept=target,
        max_tree_depth=_int("bayes_pm.max_tree_depth", v.get("max_tree_depth", s.max_tree_depth)),
        level=level,
        n_band_pairs=_int("bayes_pm.n_band_pairs", v.get("n_band_pairs", s.n_band_pairs), 10),
        n_intervals=None
        if v.get("n_intervals") is None
        else _int("bayes_pm.n_intervals", v["n_intervals"]),
    )


def parse_config(raw: dict[str, Any]) -> StudyConfig:
    """Validate a parsed TOML document into a :class:`StudyConfig`."""
    st = raw.get("study")
    if not isinstance(st, dict):
        raise InputError("the config needs a [study] table")
    if st.get("task", "ips") != "ips":
        raise InputError(f"study.task must be 'ips' or 'slr', got {st.get('task')!r}")
    _unknown("the config", raw, _TOP_KEYS)
    _unknown("[study]", st, _STUDY_KEYS)
    for k in ("M", "d", "estimators"):
        if k not in st:
            raise InputError(f"[study] needs {k!r}")
    name = st.get("name", "study")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0"):
        raise InputError(f"study.name must be a plain non-empty string, got {name!r}")
    est = st["estimators"]
    if not isinstance(est, list) or not est:
        raise InputError("study.estimators must be a non-empty list")
    est = tuple(_choice("study.estimators entries", e, ESTIMATORS) for e in est)
    if len(set(est)) != len(est):
        raise InputError(f"study.estimators has repeated values: {list(est)}")
    d = _int_list("study.d", st["d"], 1)
    rank = _int("study.rank", st.get("rank", 1))
    if rank > min(d):
        raise InputError(f"study.rank {rank} is impossible for d = {min(d)} (need rank <= d)")
    tokens = _choice("study.tokens", st.get("tokens", "cube"), TOKEN_LAWS)
    rho = _float("study.rho", st.get("rho", 0.3 if tokens == "correlated" else 0.0), 0.0)
    if rho >= 1 or (rho and tokens != "correlated"):
        raise InputError("study.rho must be in [0, 1) and is only for tokens = 'correlated'")
    cfg = StudyConfig(
        name=name,
        seed=_int("study.seed", st.get("seed", 0), 0),
        repetitions=_int("study.repetitions", st.get("repetitions", 1)),
        estimators=est,
        M=_m_grid(st["M"]),
        d=d,
        phi=_phi_entries(raw.get("phi")),
        N=_int("study.N", st.get("N", 6), 2),
        rank=rank,
        noise=_float("study.noise", st.get("noise", 0.1), 0.0),
        noise_law=_choice("study.noise_law", st.get("noise_law", "gaussian"), NOISE_LAWS),
        tokens=tokens,
        rho=rho,
        n_eval_pairs=_int("study.n_eval_pairs", st.get("n_eval_pairs", 20000), 100),
        erm=_erm(raw.get("erm", {})),
        bayes_pm=_bayes(raw.get("bayes_pm", {})),
    )
    return cfg


def load_config(path: str | os.PathLike):
    """Read and validate a study TOML file; bad files raise :class:`InputError`.

    ``[study] task`` picks the task: ``"ips"`` (default; :class:`StudyConfig`) or
    ``"slr"`` (single-location regression; :class:`bayes_ips.study.slr.SLRStudyConfig`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    try:
        study = raw.get("study")
        if isinstance(study, dict) and study.get("task") == "slr":
            from bayes_ips.study.slr import parse_slr_config

            return parse_slr_config(raw)
        return parse_config(raw)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
