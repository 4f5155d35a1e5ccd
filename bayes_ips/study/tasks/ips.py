"""The IPS task: ERM and the posterior mean of attention-style IPS against M (the default).

A study crosses sample sizes ``M`` (log-spaced), repetitions (seeds), dimensions
``d``, true activations phi* (with their smoothness beta) and estimators.  The
file (every key is checked; unknown keys and bad values are refused)::

    [study]
    task = "ips"                   # the default
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
    error_rse = 0.05               # optional: draw held-out pairs until error_se <= 5% of error
    error_max_pairs = 640000       # ... doubling up to this many (default 32 x n_eval_pairs)

    [[phi]]                        # one table per true activation
    family = "bspline"             # tanh | sin | holder | bspline | weierstrass
    beta = 2                       # smoothness (holder: any > 0; bspline: the degree;
                                   # weierstrass: any non-integer > 0)

    [erm]                          # bayes_ips.erm.ERMConfig, less rank and beta (all optional)
    k_rule = "gcv"                 # gcv | theory
    n_intervals = 12               # fix K instead (default: chosen by k_rule)
    degree = 3                     # default: ERMConfig's rule (3; ceil(beta) - 1 for beta > 4)
    multiplicity = 1
    restarts = 5

    [bayes_pm]                     # bayes_ips.inference.SamplerConfig, less rank and degree
    method = "auto"                # auto | is | imh | nuts (auto: Laplace-PSIS, NUTS past k = 0.7)
    chains = 4
    warmup = 50                    # IMH burn-in / NUTS warmup (default: the method's)
    draws = 300                    # the study's default
    collapsed = true
    init = "erm"                   # erm | prior
    n_intervals = 12               # fix K of the model's basis (default: the ERM fit's choice)
    target_accept = 0.85
    max_tree_depth = 8
    level = 0.9                    # study only: credible level of the pointwise bands
    n_band_pairs = 2000            # study only: held-out pairs for band width and coverage

Named estimators: an entry of ``estimators`` that is not a kind (``erm``,
``bayes_pm``) names a table of its own with a ``kind``, e.g. ERM twice, with
GCV's K and with the theory's::

    estimators = ["erm_gcv", "erm_theory", "bayes_pm"]

    [erm_gcv]
    kind = "erm"
    k_rule = "gcv"

    [erm_theory]
    kind = "erm"
    k_rule = "theory"              # any key of [erm]; the rest are [erm]'s

A named table is its kind's table (``[erm]`` or ``[bayes_pm]``, validated by the
same classes) with its keys changed; a ``bayes_pm`` one starts from ``[erm]``'s
fit.  Names are plain (``a-z``, ``0-9``, ``_``); a table with a ``kind`` that
``estimators`` does not list is refused.  Cell ids, records, ``--only
estimator=erm_theory`` (or ``--only kind=erm``), tables, slopes and figures use
the name; the cell specs of a kind's own estimator (``erm``, ``bayes_pm``) name
no kind, so studies from before named estimators keep their hashes.  A
posterior-mean estimator is compared, pair by pair, with the first ERM estimator
whose settings are its own ERM fit's (:meth:`StudyConfig.pairs`).

Error precision: the L2(rho) error is a Monte Carlo mean over held-out pairs,
whose squared errors are heavy-tailed (a few pairs far out carry much of it).
With ``error_rse`` the cell doubles its held-out pairs (chunks of
``n_eval_pairs``, each from the cell's evaluation key) until ``error_se <=
error_rse * error`` or the next doubling would pass ``error_max_pairs``; the
record then holds ``error_n_pairs`` and ``error_rse_met``
(:func:`bayes_ips.metrics.l2_error`).  Without it, nothing changes.

``[erm]`` and ``[bayes_pm]`` take every field of :class:`~bayes_ips.erm.ERMConfig`
and :class:`~bayes_ips.inference.SamplerConfig` (validated by those classes): a
field added there is a key here.  The study supplies the rank, phi*'s beta to
the ERM fit (so its degree and, with ``k_rule = "theory"``, its K follow the
same rules as ``bayes-ips fit-erm --beta``), and the ERM fit's degree to the
posterior.

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
import math
import time
from typing import Any

from bayes_ips.activations import FAMILIES, check_beta
from bayes_ips.erm import ERMConfig
from bayes_ips.errors import InputError
from bayes_ips.inference import SamplerConfig
from bayes_ips.metrics import DEFAULT_RSE_FACTOR
from bayes_ips.simulate import NOISE_LAWS, TOKEN_LAWS, check_correlation
from bayes_ips.study.cells import Cell, stable_int
from bayes_ips.study.parse import (
    as_choice,
    as_float,
    as_int,
    check_unknown,
    dataclass_settings,
    int_list,
    m_grid,
    settings_dict,
    study_estimators,
    study_name,
)

__all__ = [
    "TASK",
    "ESTIMATORS",
    "PhiEntry",
    "PosteriorSettings",
    "StudyConfig",
    "cell_data",
    "cell_erm_config",
    "cell_truth",
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

TASK = "ips"
name = TASK  # the protocol's attribute


def _parse_beta(v: str) -> float:
    """A smoothness on the command line: a number or ``inf``."""
    return math.inf if v == "inf" else float(v)


kinds = ("study", "dimension", "smoothness", "bayes_vs_erm", "minimax")
selectable = {
    "estimator": str,
    "kind": str,
    "d": int,
    "M": int,
    "rep": int,
    "beta": _parse_beta,
    "family": str,
}
#: the record fields that locate a cell (the leading columns of results.csv)
coordinates = ("estimator", "family", "beta", "d", "M", "rep")

ESTIMATORS = ("erm", "bayes_pm")
SMOOTH_FAMILIES = ("tanh", "sin")  # beta = inf

# The settings a cell spec always holds (other fields of the config classes appear
# only when set off their defaults): the specs, and so the records, of studies run
# before those classes grew fields keep their hashes.
_ERM_SPEC_KEYS = ("k_rule", "n_intervals", "degree", "multiplicity", "restarts")
_ERM_STUDY_SET = ("rank", "beta")
_SAMPLER_SPEC_KEYS = (
    "chains",
    "warmup",
    "draws",
    "collapsed",
    "init",
    "target_accept",
    "max_tree_depth",
    "n_intervals",
)
_SAMPLER_STUDY_SET = ("rank", "degree")
_SAMPLER_STUDY_DEFAULTS = {"draws": 300}  # shorter chains than the CLI's
LEGACY_METHOD = "nuts"  # the sampler of cell specs that name none
LEGACY_BASIS = "erm"  # the model basis of cell specs that name none
LEGACY_KNOT_PLACEMENT = "quantile"  # ERM's knot placement in cell specs that name none
# what a spec without these settings meant (settings_dict's ``legacy``): specs from
# before the sampler's method, the evidence basis and the "auto" knots keep their hashes
_SAMPLER_LEGACY = {"method": LEGACY_METHOD, "basis": LEGACY_BASIS}
_ERM_LEGACY = {"knot_placement": LEGACY_KNOT_PLACEMENT}

# fold_in tags of the key tree (fixed forever: changing one changes every number)
_PHI, _A, _DATA, _FIT, _NUTS, _EVAL, _BAND = 0, 1, 2, 10, 11, 12, 13


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

    @property
    def finite_beta(self) -> float | None:
        """beta, or None for the analytic families (as ``fit-erm`` without ``--beta``)."""
        return None if math.isinf(self.beta) else self.beta


def _default_sampler() -> SamplerConfig:
    return SamplerConfig(**_SAMPLER_STUDY_DEFAULTS)


@dataclasses.dataclass(frozen=True)
class PosteriorSettings:
    """The ``[bayes_pm]`` table: the sampler's config and the study's band settings.

    Attributes
    ----------
    sampler : SamplerConfig
        With the study's rank; each cell sets the degree of its ERM fit.
    level : float
        Credible level of the pointwise bands, in (0, 1).
    n_band_pairs : int
        Held-out pairs for band width and coverage.
    """

    sampler: SamplerConfig = dataclasses.field(default_factory=_default_sampler)
    level: float = 0.9
    n_band_pairs: int = 2000

    def to_dict(self) -> dict[str, Any]:
        """The settings a cell spec holds (see :func:`~bayes_ips.study.parse.settings_dict`)."""
        out = settings_dict(
            self.sampler, _SAMPLER_SPEC_KEYS, exclude=_SAMPLER_STUDY_SET, legacy=_SAMPLER_LEGACY
        )
        return {**out, "level": self.level, "n_band_pairs": self.n_band_pairs}


def _erm_dict(erm: ERMConfig) -> dict[str, Any]:
    return settings_dict(erm, _ERM_SPEC_KEYS, exclude=_ERM_STUDY_SET, legacy=_ERM_LEGACY)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named estimator of the grid: a table ``[name]`` with ``kind = "erm" | "bayes_pm"``.

    Its settings are its kind's table (``[erm]`` or ``[bayes_pm]``) with the keys
    of ``[name]`` changed.

    Attributes
    ----------
    name : str
        The estimator's name in ``study.estimators``, cell ids, records and reports.
    kind : {"erm", "bayes_pm"}
    settings : ERMConfig or PosteriorSettings
        The estimator's own settings (a ``bayes_pm`` variant's ERM fit is ``[erm]``'s).
    """

    name: str
    kind: str
    settings: ERMConfig | PosteriorSettings

    def to_dict(self) -> dict[str, Any]:
        if isinstance(self.settings, ERMConfig):
            settings = _erm_dict(self.settings)
        else:
            settings = self.settings.to_dict()
        return {"name": self.name, "kind": self.kind, "settings": settings}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A validated IPS study grid (see the module docstring for the file format)."""

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
    erm: ERMConfig = ERMConfig()
    bayes_pm: PosteriorSettings = PosteriorSettings()
    variants: tuple[Variant, ...] = ()
    error_rse: float | None = None
    error_max_pairs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (beta = inf written as the string "inf").

        The fields added after studies were run (``variants``, ``error_rse``,
        ``error_max_pairs``) appear only when set, so that the hashes of the
        configs that leave them out stay what they were.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["phi"] = [
            {"family": p.family, "beta": "inf" if math.isinf(p.beta) else p.beta} for p in self.phi
        ]
        for k in ("estimators", "M", "d"):
            out[k] = list(out[k])
        out["erm"] = _erm_dict(self.erm)
        out["bayes_pm"] = self.bayes_pm.to_dict()
        out["variants"] = [v.to_dict() for v in self.variants]
        for k in ("variants", "error_rse", "error_max_pairs"):
            if not out[k]:
                del out[k]
        return out

    def _variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def kind_of(self, name: str) -> str:
        """The kind (``erm`` or ``bayes_pm``) of the estimator ``name``."""
        v = self._variant(name)
        return name if v is None else v.kind

    def erm_of(self, name: str) -> ERMConfig:
        """The ERM fit of estimator ``name``: its own (kind erm) or its posterior's start."""
        v = self._variant(name)
        return v.settings if v is not None and v.kind == "erm" else self.erm

    def bayes_of(self, name: str) -> PosteriorSettings:
        """The posterior settings of estimator ``name`` (of kind ``bayes_pm``)."""
        v = self._variant(name)
        return v.settings if v is not None else self.bayes_pm

    def pairs(self) -> list[tuple[str, str]]:
        """``(posterior, erm)`` estimator names that share one ERM fit (a paired comparison).

        Each posterior-mean estimator is paired with the first ERM estimator
        whose settings are those of its own ERM fit (``[erm]``'s): both are then
        computed from the same fit on the same data and scored on the same pairs.
        """
        out = []
        for pm in self.estimators:
            if self.kind_of(pm) != "bayes_pm":
                continue
            match = [
                e
                for e in self.estimators
                if self.kind_of(e) == "erm" and self.erm_of(e) == self.erm_of(pm)
            ]
            if match:
                out.append((pm, match[0]))
        return out

    @property
    def n_cells(self) -> int:
        return len(self.estimators) * len(self.phi) * len(self.d) * len(self.M) * self.repetitions

    @property
    def task(self) -> str:
        return TASK


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
    "error_rse",
    "error_max_pairs",
}
_TOP_KEYS = {"study", "phi", "erm", "bayes_pm"}


def _phi_entries(v: Any) -> tuple[PhiEntry, ...]:
    if not isinstance(v, list) or not v:
        raise InputError("the study needs at least one [[phi]] table (family and beta)")
    out = []
    for i, t in enumerate(v):
        where = f"phi[{i}]"
        if not isinstance(t, dict):
            raise InputError(f"{where} must be a table with family and beta")
        check_unknown(where, t, {"family", "beta"})
        fam = as_choice(f"{where}.family", t.get("family"), FAMILIES)
        if fam in SMOOTH_FAMILIES:
            if "beta" in t and t["beta"] != "inf":
                raise InputError(f"{where}: {fam} is analytic (beta = inf); do not give a beta")
            beta = math.inf
        else:
            if "beta" not in t:
                raise InputError(f"{where}: family {fam} needs a beta")
            beta = as_float(f"{where}.beta", t["beta"], 0.0, lo_open=True)
            if fam == "bspline" and (beta != int(beta) or beta < 1):
                raise InputError(f"{where}: bspline needs an integer degree beta >= 1, got {beta}")
            try:
                check_beta(fam, beta)
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
        out.append(PhiEntry(fam, beta))
    if len(set(out)) != len(out):
        raise InputError("the [[phi]] tables repeat an entry")
    return tuple(out)


def _validated(where: str, config: Any, d: int) -> None:
    """Run a config class's own ``validate``, its message prefixed by ``where``."""
    try:
        config.validate(d)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def _erm(v: Any, rank: int, d: int, phis: tuple[PhiEntry, ...], table: str = "erm") -> ERMConfig:
    erm, _ = dataclass_settings(table, v, ERMConfig, given={"rank": rank}, later=("beta",))
    for i, phi in enumerate(phis):  # each cell gives its beta: the degree rule depends on it
        where = f"[{table}]"
        if phi.finite_beta is not None:
            where += f" with phi[{i}] = {phi.label}"
        _validated(where, dataclasses.replace(erm, beta=phi.finite_beta), d)
    return erm


def _level(where: str, v: Any) -> float:
    level = as_float(where, v, 0.0, lo_open=True)
    if level >= 1:
        raise InputError(f"{where} must be in (0, 1), got {v!r}")
    return level


def _bayes(v: Any, rank: int, d: int, table: str = "bayes_pm") -> PosteriorSettings:
    sampler, extra = dataclass_settings(
        table,
        v,
        SamplerConfig,
        given={"rank": rank},
        later=("degree",),  # each cell's ERM fit's
        defaults=_SAMPLER_STUDY_DEFAULTS,
        study_keys={"level": _level, "n_band_pairs": lambda w, x: as_int(w, x, 10)},
    )
    _validated(f"[{table}]", sampler, d)
    return PosteriorSettings(sampler, **extra)


def _variants(
    raw: dict[str, Any], names: tuple[str, ...], rank: int, d: int, phis: tuple[PhiEntry, ...]
) -> tuple[Variant, ...]:
    """The named estimators of ``study.estimators`` (those that are not a kind)."""
    out = []
    for name in names:
        if name in ESTIMATORS:
            continue
        if name in _TOP_KEYS:
            raise InputError(f"study.estimators: {name!r} is a reserved table name")
        table = raw.get(name)
        if not isinstance(table, dict):
            raise InputError(
                f"study.estimators: {name!r} is no estimator kind ({', '.join(ESTIMATORS)}) "
                f"and has no [{name}] table with a kind"
            )
        if "kind" not in table:
            raise InputError(f"[{name}] needs kind = one of {', '.join(ESTIMATORS)}")
        kind = as_choice(f"{name}.kind", table["kind"], ESTIMATORS)
        base = raw.get(kind, {})
        if not isinstance(base, dict):
            raise InputError(f"[{kind}] must be a table")
        merged = {**base, **{k: v for k, v in table.items() if k != "kind"}}
        if kind == "erm":
            settings = _erm(merged, rank, d, phis, table=name)
        else:
            settings = _bayes(merged, rank, d, table=name)
        out.append(Variant(name, kind, settings))
    return tuple(out)


def _parse_error_target(st: dict[str, Any], n_eval: int) -> tuple[float | None, int | None]:
    """``study.error_rse`` and ``study.error_max_pairs`` (None, None when not asked for)."""
    if "error_rse" not in st:
        if "error_max_pairs" in st:
            raise InputError("study.error_max_pairs needs study.error_rse (a target to draw for)")
        return None, None
    rse = as_float("study.error_rse", st["error_rse"], 0.0, lo_open=True)
    if rse >= 1:
        raise InputError(f"study.error_rse must be in (0, 1), got {st['error_rse']!r}")
    cap = as_int("study.error_max_pairs", st.get("error_max_pairs", DEFAULT_RSE_FACTOR * n_eval))
    if cap < n_eval:
        raise InputError(
            f"study.error_max_pairs must be >= study.n_eval_pairs ({n_eval}), got {cap}"
        )
    return rse, cap


def parse(raw: dict[str, Any]) -> StudyConfig:
    """Validate a parsed TOML document into a :class:`StudyConfig`."""
    st = raw.get("study")
    if not isinstance(st, dict):
        raise InputError("the config needs a [study] table")
    check_unknown("[study]", st, _STUDY_KEYS)
    for k in ("M", "d", "estimators"):
        if k not in st:
            raise InputError(f"[study] needs {k!r}")
    est = study_estimators(st, ESTIMATORS, named=True)
    for k, v in raw.items():
        if k not in _TOP_KEYS and k not in est and isinstance(v, dict) and "kind" in v:
            raise InputError(
                f"[{k}] names an estimator that study.estimators does not list (list it; "
                "--only estimator=... runs a part of the grid)"
            )
    check_unknown("the config", raw, _TOP_KEYS | set(est))
    study = study_name(st, "study")
    d = int_list("study.d", st["d"], 1)
    rank = as_int("study.rank", st.get("rank", 1))
    if rank > min(d):
        raise InputError(f"study.rank {rank} is impossible for d = {min(d)} (need rank <= d)")
    tokens = as_choice("study.tokens", st.get("tokens", "cube"), TOKEN_LAWS)
    rho = as_float("study.rho", st.get("rho", 0.3 if tokens == "correlated" else 0.0), -1.0, True)
    if rho >= 1 or (rho and tokens != "correlated"):
        raise InputError("study.rho must be in (-1, 1) and is only for tokens = 'correlated'")
    check_correlation(rho, as_int("study.N", st.get("N", 6), 2))
    phis = _phi_entries(raw.get("phi"))
    n_eval = as_int("study.n_eval_pairs", st.get("n_eval_pairs", 20000), 100)
    error_rse, error_max_pairs = _parse_error_target(st, n_eval)
    config = StudyConfig(
        name=study,
        seed=as_int("study.seed", st.get("seed", 0), 0),
        repetitions=as_int("study.repetitions", st.get("repetitions", 1)),
        estimators=est,
        M=m_grid(st["M"]),
        d=d,
        phi=phis,
        N=as_int("study.N", st.get("N", 6), 2),
        rank=rank,
        noise=as_float("study.noise", st.get("noise", 0.1), 0.0),
        noise_law=as_choice("study.noise_law", st.get("noise_law", "gaussian"), NOISE_LAWS),
        tokens=tokens,
        rho=rho,
        n_eval_pairs=n_eval,
        erm=_erm(raw.get("erm", {}), rank, min(d), phis),
        bayes_pm=_bayes(raw.get("bayes_pm", {}), rank, min(d)),
        variants=_variants(raw, est, rank, min(d), phis),
        error_rse=error_rse,
        error_max_pairs=error_max_pairs,
    )
    if config.erm.known_a and any(config.kind_of(e) == "bayes_pm" for e in est):
        raise InputError(
            "[erm] known_a = true would start the posterior at the true A: set it in an "
            'ERM estimator\'s own table (e.g. [erm_oracle] kind = "erm") instead'
        )
    return config


# ------------------------------------------------------------------------------- cells


def _cell_id(est: str, phi: PhiEntry, d: int, M: int, rep: int) -> str:
    beta = "inf" if math.isinf(phi.beta) else f"{phi.beta:g}"
    return f"{est}_{phi.family}-b{beta}_d{d}_M{M}_r{rep}"


def make_cells(config: StudyConfig) -> list[Cell]:
    """All cells of the grid, ordered so that cells of equal array shapes are adjacent.

    The order is estimator, d, M, phi, repetition: consecutive cells in one
    process then reuse compiled programs (shapes depend on d and M).
    """
    cells = []
    common = {
        "task": TASK,
        "seed": config.seed,
        "N": config.N,
        "rank": config.rank,
        "noise": config.noise,
        "noise_law": config.noise_law,
        "tokens": config.tokens,
        "rho": config.rho,
        "n_eval_pairs": config.n_eval_pairs,
    }
    if config.error_rse is not None:  # absent from the specs that leave it out
        common.update(error_rse=config.error_rse, error_max_pairs=config.error_max_pairs)
    for est in config.estimators:
        kind = config.kind_of(est)
        settings = _erm_dict(config.erm_of(est))
        if kind == "bayes_pm":
            settings = {"erm": settings, "bayes": config.bayes_of(est).to_dict()}
        # a named estimator's spec names its kind; a kind's own (est == kind) does not,
        # so that the specs of studies from before named estimators keep their hashes
        named = {"kind": kind} if est != kind else {}
        for d in config.d:
            for M in config.M:
                for phi in config.phi:
                    for rep in range(config.repetitions):
                        spec = {
                            **common,
                            **named,
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
                        coords = {
                            "estimator": est,
                            "kind": kind,
                            "d": d,
                            "M": M,
                            "rep": rep,
                            "beta": phi.beta,
                            "family": phi.family,
                            "phi": phi,
                        }
                        cells.append(Cell(_cell_id(est, phi, d, M, rep), spec, coords))
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
    tag = stable_int(phi.family, spec["phi"]["beta"])
    k_phi = jax.random.fold_in(jax.random.fold_in(base, _PHI), tag)
    k_a = jax.random.fold_in(jax.random.fold_in(base, _A), stable_int(tag, spec["d"]))
    phi_spec = make_phi(k_phi, phi.family, beta=phi.finite_beta)
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

    tag = stable_int(spec["phi"]["family"], spec["phi"]["beta"], spec["d"])
    k = jax.random.fold_in(jax.random.PRNGKey(spec["seed"]), _DATA)
    k = jax.random.fold_in(jax.random.fold_in(k, tag), spec["rep"])
    return jax.random.fold_in(k, spec["M"])


def cell_data(spec: dict):
    """``(truth, X, Y, key)``: the cell's dataset (independent of the estimator).

    ``X`` is ``(M, N, d)``, ``Y`` is ``(M, N)``; ``key`` derives the fit's keys.
    """
    import jax
    import numpy as np

    from bayes_ips.simulate import simulate

    truth = cell_truth(spec)
    key = _data_key(spec)
    X, Y = simulate(key, truth, spec["M"], spec["N"])
    return truth, np.asarray(X), np.asarray(Y), jax.random.fold_in(key, 1)


def _kind(spec: dict) -> str:
    """The kind of a cell's estimator (specs of a kind's own estimator name none)."""
    return spec.get("kind", spec["estimator"])


def cell_erm_config(spec: dict) -> ERMConfig:
    """The ERM fit's config of a cell: its ``[erm]`` settings, the rank and phi*'s beta.

    The same config ``bayes-ips fit-erm --beta BETA`` builds from the same
    settings, so a study cell and the command fit the same model.
    """
    settings = spec["settings"] if _kind(spec) == "erm" else spec["settings"]["erm"]
    settings = {**_ERM_LEGACY, **settings}  # what a spec without them meant
    return ERMConfig(rank=spec["rank"], beta=_phi_entry(spec).finite_beta, **settings)


def cell_sampler_config(spec: dict, erm) -> SamplerConfig:
    """The posterior sampler's config of a ``bayes_pm`` cell: its ``[bayes_pm]`` settings
    (less the band's), read over what a spec without them meant, at the cell's rank and
    the degree of its ERM fit ``erm``."""
    sampler = dict(_SAMPLER_LEGACY)
    b = spec["settings"]["bayes"]
    sampler.update((k, v) for k, v in b.items() if k not in ("level", "n_band_pairs"))
    return SamplerConfig(rank=spec["rank"], degree=erm.info["degree"], **sampler)


def run_cell(spec: dict) -> dict:
    """Compute one cell's record (a flat JSON-able dict).

    Every record holds the L2(rho) error of its estimator with its Monte Carlo
    standard error, K and the degree used (an ERM record also the knots' uniform
    weight, 0 for quantile knots; records before it read as NaN), the coercivity
    constant ``c_H`` of its hypothesis space on the training tokens (``c_H_dim``:
    the span it was taken over; records written before it existed lack both, which
    read as NaN), the theory's condition, timings, and
    for ``bayes_pm`` the posterior's own error distribution, the mean width and
    the coverage of the pointwise credible band, and convergence diagnostics.
    """
    import jax

    from bayes_ips.study.backends import relieve_map_pressure

    jax.config.update("jax_enable_x64", True)
    relieve_map_pressure()
    from bayes_ips.erm import fit_erm
    from bayes_ips.kselect import theory_condition
    from bayes_ips.metrics import l2_error, outside_knots

    t0 = time.perf_counter()
    truth, X, Y, key = cell_data(spec)
    k_fit, k_nuts, k_eval, k_band = (
        jax.random.fold_in(key, t) for t in (_FIT, _NUTS, _EVAL, _BAND)
    )
    est = spec["estimator"]
    kind = _kind(spec)
    cfg = cell_erm_config(spec)  # known_a: the oracle fit at the true A (ERM estimators only)
    erm = fit_erm(k_fit, X, Y, cfg, A=truth.A if cfg.known_a else None)
    t_erm = time.perf_counter() - t0
    phi = _phi_entry(spec)
    tc = theory_condition(spec["M"], spec["d"], spec["rank"], phi.beta)
    rec: dict[str, Any] = {
        "estimator": est,
        "kind": kind,
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
    if kind == "erm":
        err = l2_error(
            k_eval,
            erm.predict,
            truth,
            spec["n_eval_pairs"],
            stratum=outside_knots(erm.A, erm.knots),  # where the fit extrapolates
            **_error_target(spec),
        )
        rec.update(
            **_error_fields(spec, err),
            error_n_screened=err.n_screened,
            error_n_stratum=err.n_stratum,
            tail=erm.info["tail"],
            K=erm.info["K"],
            degree=erm.info["degree"],
            n_basis=erm.info["n_basis"],
            sigma_hat=erm.info["sigma_hat"],
            n_outside=erm.info["n_outside"],
            c_H=erm.info["c_H"],
            c_H_dim=erm.info["c_H_dim"],
            uniform_weight=erm.info["uniform_weight"],  # the knots' placement (0: quantile)
        )
    else:
        rec.update(_bayes_record(spec, truth, X, Y, erm, k_nuts, k_eval, k_band))
    rec["wall_time_s"] = time.perf_counter() - t0
    return rec


def _error_target(spec: dict) -> dict[str, Any]:
    """``l2_error``'s target settings of a cell (none for specs without ``error_rse``)."""
    if "error_rse" not in spec:
        return {}
    return {"rse": spec["error_rse"], "max_pairs": spec["error_max_pairs"]}


def _error_fields(spec: dict, err) -> dict[str, Any]:
    """The record's error fields; with a target, the pairs used and whether it was met."""
    out = {"error": err.error, "error_se": err.se, "relative_error": err.relative}
    if "error_rse" in spec:
        out["error_n_pairs"] = err.n_pairs
        out["error_rse_met"] = bool(err.se <= spec["error_rse"] * err.error)
    return out


def _bayes_record(spec, truth, X, Y, erm, k_nuts, k_eval, k_band) -> dict:
    import jax
    import numpy as np

    from bayes_ips.coercivity import coercivity
    from bayes_ips.diagnostics import convergence
    from bayes_ips.inference import _fit_posterior, eval_pairs
    from bayes_ips.metrics import l2_error
    from bayes_ips.posterior import draw_errors, g_draws, mode_check, predict
    from bayes_ips.simulate import g_true, sample_pairs

    b = spec["settings"]["bayes"]
    cfg = cell_sampler_config(spec, erm)
    t0 = time.perf_counter()
    k_run, k_rb, k_pairs, k_draw = jax.random.split(k_nuts, 4)
    run, post = _fit_posterior(k_run, k_rb, X, Y, cfg, erm=erm, seed=None, progress=False)
    t_nuts = time.perf_counter() - t0
    err = l2_error(
        k_eval,
        lambda x, y: g_draws(post, x, y).mean(axis=(0, 1)),
        truth,
        spec["n_eval_pairs"],
        **_error_target(spec),
    )
    # ERM's fit on the very pairs the posterior mean was scored on (a paired ratio)
    erm_err = l2_error(k_eval, erm.predict, truth, spec["n_eval_pairs"], min_pairs=err.n_pairs)
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
    if run.method in ("is", "imh"):
        how = {
            "khat": run.info["khat"],
            "accept_rate": run.info.get("accept_rate", float("nan")),  # imh only
            "is_ess": run.info["is_ess"],
            "n_proposals": run.info["n_proposals"],
        }
    else:
        how = {
            "divergences": int(run.extra["diverging"].sum()),
            "steps_per_iter": float(run.extra["num_steps"].mean()),
        }
        if "fallback" in run.info:
            how.update(fallback=run.info["fallback"], khat=run.info["first"].get("khat", np.nan))
    basis = run.info.get("basis", {})
    # the model's basis at the ERM fit's A, where its knots were placed (as `evaluate`)
    coerc = coercivity(X, erm.U, erm.V, run.knots)
    return {
        "sampler": run.method,
        **how,
        "basis": basis.get("rule", "erm" if b.get("n_intervals") is None else "fixed"),
        "uniform_weight": basis.get("uniform_weight", 0.0),
        "penalty_order": int(basis.get("penalty_order", 2)),
        **order_fields(basis.get("order_cv")),
        "basis_time_s": basis.get("time_s", 0.0),
        **_error_fields(spec, err),
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
        **coerc.as_dict(),
        "sigma_mean": float(post.sigma.mean()),
        "rhat_max": conv["rhat_max"],
        "ess_bulk_min": conv["ess_bulk_min"],
        "modes_separated": bool(modes["separated"]),
        "nuts_time_s": t_nuts,
    }


# ------------------------------------------------------------------------------ report


def _phi_label(rec: dict) -> str:
    beta = rec["beta"]
    if beta is None or (isinstance(beta, float) and math.isinf(beta)) or beta == "inf":
        return rec["family"]
    return f"{rec['family']}(beta={float(beta):g})"


def _coord(rec: dict, dim: str) -> Any:
    if dim == "phi":
        return _phi_label(rec)
    if dim == "estimator":
        return rec["estimator"]
    return int(rec[dim])


def to_dataset(records: list[dict]):
    """The records over (estimator, phi, d, M, rep), ``beta`` a coordinate along ``phi``."""
    from bayes_ips.study.store import records_to_dataset

    # records from before named estimators have no kind: theirs is their name
    kind_of = {r["estimator"]: r.get("kind", r["estimator"]) for r in records}
    # the kinds' own estimators first (erm, bayes_pm), then named ones by kind and name
    order = sorted(
        kind_of,
        key=lambda e: (ESTIMATORS.index(kind_of[e]), e != kind_of[e], e),
    )
    ds = records_to_dataset(
        records,
        ("estimator", "phi", "d", "M", "rep"),
        coord=_coord,
        skip=(*coordinates, "kind"),
        estimators=order,
        always=("theory_holds", "theory_rhs"),  # None (NaN) when beta = inf
    )
    beta_of = {
        _phi_label(r): math.inf if r["beta"] in (None, "inf") else float(r["beta"]) for r in records
    }
    family_of = {_phi_label(r): r["family"] for r in records}
    phis = ds["phi"].values
    ds = ds.assign_coords(
        beta=("phi", [beta_of[p] for p in phis]),
        family=("phi", [family_of[p] for p in phis]),
        kind=("estimator", [kind_of[e] for e in ds["estimator"].values]),
    )
    ds.attrs["task"] = TASK
    return ds


def report(ds, out_dir: str, config: StudyConfig, result, kind: str) -> dict:
    """Slopes, figures and ``summary.md`` of an IPS study (:mod:`bayes_ips.study.report`)."""
    from bayes_ips.study.report import write_ips_report

    return write_ips_report(ds, out_dir, config, result, kind)


def order_fields(cv: dict | None) -> dict[str, float]:
    """A record's fields of the prior's order check (the ``order_cv`` of the basis info):
    first differences' cross-validated gain in standard errors, ``order_cv_z`` the
    deciding one (with ``A`` refitted per fold where a win at ERM's ``A`` was
    confirmed so) and ``order_cv_z_fixed`` the first, at ERM's ``A``; NaN where the
    order was not questioned."""
    return {
        "order_cv_z": _order_z(cv),
        "order_cv_z_fixed": _order_z(cv.get("fixed_a", cv) if cv else None),
    }


def _order_z(cv: dict | None) -> float:
    """``-mse_diff / se`` of :func:`bayes_ips.kselect.order_cv` or of
    :func:`bayes_ips.inference.refit_order_cv` (NaN where not run)."""
    if not cv or not cv.get("se"):
        return float("nan")
    return -float(cv["mse_diff"]) / float(cv["se"])
