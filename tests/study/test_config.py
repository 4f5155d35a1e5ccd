"""Study configs: the documented format parses; unknown keys and bad values are refused."""

import math

import pytest

from bayes_ips.errors import InputError
from bayes_ips.study.config import config_hash, load_config, parse_config

BASE = {
    "study": {"name": "t", "estimators": ["erm"], "M": [100, 200], "d": [2]},
    "phi": [{"family": "tanh"}],
}


def _with(**changes):
    raw = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in BASE.items()}
    for path, value in changes.items():
        table, key = path.split("__")
        raw.setdefault(table, {})
        if value is _DROP:
            raw[table].pop(key)
        else:
            raw[table][key] = value
    return raw


_DROP = object()


def _named(**tables):
    """BASE with the estimator ``erm_b`` declared by ``tables`` (plus any other table)."""
    return {**BASE, "study": {**BASE["study"], "estimators": ["erm", "erm_b"]}, **tables}


def test_minimal_config_gets_documented_defaults():
    cfg = parse_config(BASE)
    assert cfg.M == (100, 200) and cfg.d == (2,) and cfg.repetitions == 1
    assert cfg.N == 6 and cfg.rank == 1 and cfg.noise == 0.1 and cfg.tokens == "cube"
    assert cfg.phi[0].family == "tanh" and math.isinf(cfg.phi[0].beta)
    assert cfg.erm.k_rule == "gcv" and cfg.erm.degree is None and cfg.erm.restarts == 5
    assert cfg.bayes_pm.sampler.chains == 4 and cfg.bayes_pm.level == 0.9
    assert cfg.bayes_pm.sampler.method == "auto"
    # the study's own default: shorter chains than SamplerConfig's; warmup is the method's
    assert cfg.bayes_pm.sampler.warmup is None and cfg.bayes_pm.sampler.draws == 300
    assert cfg.n_cells == 2


def test_erm_and_bayes_tables_build_the_real_config_classes():
    from bayes_ips.erm import ERMConfig
    from bayes_ips.inference import SamplerConfig

    raw = {
        **BASE,
        "study": {**BASE["study"], "rank": 2},
        "erm": {"ridge": 1e-6, "restarts": 2},
        "bayes_pm": {"jitter": 0.2, "target_accept": 1 / 2, "n_band_pairs": 50},
    }
    cfg = parse_config(raw)
    assert cfg.erm == ERMConfig(rank=2, ridge=1e-6, restarts=2)
    assert cfg.bayes_pm.sampler == SamplerConfig(rank=2, draws=300, jitter=0.2, target_accept=0.5)
    assert cfg.bayes_pm.n_band_pairs == 50
    # the degree rule follows beta, as in ERMConfig: multiplicity 5 needs degree >= 4
    holder6 = {**BASE, "phi": [{"family": "holder", "beta": 6}], "erm": {"multiplicity": 5}}
    assert parse_config(holder6).erm.multiplicity == 5
    with pytest.raises(InputError, match="knot multiplicity"):
        parse_config({**holder6, "phi": [{"family": "holder", "beta": 3}]})


def test_weierstrass_phi_tables():
    from bayes_ips.study import make_cells

    raw = {**BASE, "phi": [{"family": "weierstrass", "beta": 0.5}, {"family": "tanh"}]}
    cfg = parse_config(raw)
    assert [(p.family, p.beta) for p in cfg.phi] == [("weierstrass", 0.5), ("tanh", math.inf)]
    ids = [c.id for c in make_cells(cfg)]
    assert "erm_weierstrass-b0.5_d2_M100_r0" in ids


def test_log_spaced_m_range():
    cfg = parse_config(_with(study__M={"min": 100, "max": 10000, "num": 5}))
    assert cfg.M == (100, 316, 1000, 3162, 10000)


def test_every_shipped_config_parses():
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "analyses", "configs")
    paths = sorted(glob.glob(os.path.join(root, "*.toml")))
    assert paths, "no configs shipped in analyses/configs"
    for p in paths:
        cfg = load_config(p)
        assert cfg.n_cells >= 1


def test_hash_changes_with_any_setting_and_not_otherwise():
    a = parse_config(BASE)
    assert config_hash(a) == config_hash(parse_config(BASE))
    assert config_hash(a) != config_hash(parse_config(_with(study__N=7)))
    raw = _with()
    raw["bayes_pm"] = {"draws": 100}
    assert config_hash(a) != config_hash(parse_config(raw))


BAD = [
    (_with(study__Mx=[1]), "unknown key 'Mx' in [study]"),
    ({**BASE, "extra": {}}, "unknown key 'extra' in the config"),
    ({**BASE, "erm": {"k_rul": "gcv"}}, "unknown key 'k_rul' in [erm]"),
    ({**BASE, "bayes_pm": {"chain": 2}}, "unknown key 'chain' in [bayes_pm]"),
    (_with(study__M=[]), "study.M must be a non-empty list"),
    (_with(study__M=[100, 100]), "repeated values"),
    (_with(study__M=[1]), "study.M entries must be an integer >= 2"),
    (_with(study__M={"min": 10, "max": 5, "num": 3}), "max 5 < min 10"),
    (_with(study__M={"min": 10, "num": 3}), "'max' is missing"),
    (_with(study__d=[0]), "study.d entries must be an integer >= 1"),
    (_with(study__d=[2.5]), "study.d entries must be an integer"),
    (_with(study__estimators=["mle"]), "study.estimators: 'mle' is no estimator kind"),
    (_with(study__estimators=[]), "non-empty list"),
    (_with(study__rank=3), "rank 3 is impossible for d = 2"),
    (_with(study__tokens="sphere"), "study.tokens must be one of"),
    (_with(study__noise=-1.0), "study.noise must be >= 0"),
    (_with(study__noise=float("nan")), "study.noise must be a finite number"),
    (_with(study__N=1), "study.N must be an integer >= 2"),
    (_with(study__rho=0.5), "only for tokens = 'correlated'"),
    (_with(study__tokens="correlated", study__rho=-1.0), "study.rho must be > -1.0"),
    (_with(study__tokens="correlated", study__rho=-0.5, study__N=4), "cannot have correlation"),
    (_with(study__repetitions=0), "study.repetitions must be an integer >= 1"),
    (_with(study__name="a/b"), "study.name must be a plain"),
    (_with(study__M=_DROP), "[study] needs 'M'"),
    ({"study": BASE["study"]}, "at least one [[phi]]"),
    ({**BASE, "phi": [{"family": "relu"}]}, "phi[0].family must be one of"),
    ({**BASE, "phi": [{"family": "holder"}]}, "family holder needs a beta"),
    ({**BASE, "phi": [{"family": "holder", "beta": 0}]}, "phi[0].beta must be > 0"),
    ({**BASE, "phi": [{"family": "bspline", "beta": 1.5}]}, "integer degree"),
    ({**BASE, "phi": [{"family": "weierstrass"}]}, "family weierstrass needs a beta"),
    ({**BASE, "phi": [{"family": "weierstrass", "beta": 0}]}, "phi[0].beta must be > 0"),
    (
        {**BASE, "phi": [{"family": "weierstrass", "beta": 2}]},
        "phi[0]: the weierstrass family needs a non-integer beta",
    ),
    ({**BASE, "phi": [{"family": "tanh", "beta": 2}]}, "analytic"),
    ({**BASE, "phi": [{"family": "tanh"}, {"family": "tanh"}]}, "repeat an entry"),
    # [erm] and [bayes_pm] are validated by ERMConfig and SamplerConfig themselves
    ({**BASE, "erm": {"k_rule": "aic"}}, "[erm]: unknown K rule 'aic'"),
    ({**BASE, "erm": {"degree": 9}}, "[erm]: spline degree must be in 0..7, got 9"),
    ({**BASE, "erm": {"multiplicity": 5}}, "[erm]: knot multiplicity must be in 1..degree+1"),
    ({**BASE, "erm": {"ridge": -1.0}}, "[erm]: ridge must be >= 0"),
    ({**BASE, "erm": {"k_rule": "theory"}}, "[erm]: k_rule='theory' needs beta"),
    ({**BASE, "erm": {"degree": 2.5}}, "erm.degree must be an integer, got 2.5"),
    ({**BASE, "erm": {"restarts": "4"}}, "erm.restarts must be an integer, got '4'"),
    ({**BASE, "erm": {"rank": 1}}, "unknown key 'rank' in [erm]"),  # the study's rank
    ({**BASE, "erm": {"beta": 2}}, "unknown key 'beta' in [erm]"),  # each phi's beta
    (
        {**BASE, "phi": [{"family": "holder", "beta": 6}], "erm": {"multiplicity": 7}},
        "[erm] with phi[0] = holder(beta=6): knot multiplicity must be in 1..degree+1 = 1..6",
    ),
    ({**BASE, "bayes_pm": {"level": 1.0}}, "bayes_pm.level must be in (0, 1)"),
    ({**BASE, "bayes_pm": {"n_band_pairs": 5}}, "bayes_pm.n_band_pairs must be an integer >= 10"),
    ({**BASE, "bayes_pm": {"draws": 2}}, "[bayes_pm]: draws must be >= 4"),
    ({**BASE, "bayes_pm": {"chains": 0}}, "[bayes_pm]: chains must be a positive integer"),
    ({**BASE, "bayes_pm": {"max_tree_depth": 0}}, "[bayes_pm]: max_tree_depth"),
    ({**BASE, "bayes_pm": {"n_intervals": 0}}, "[bayes_pm]: max_tree_depth and n_intervals"),
    ({**BASE, "bayes_pm": {"target_accept": 1}}, "[bayes_pm]: target_accept must be in (0, 1)"),
    ({**BASE, "bayes_pm": {"jitter": -0.5}}, "[bayes_pm]: jitter must be >= 0"),
    ({**BASE, "bayes_pm": {"collapsed": "yes"}}, "bayes_pm.collapsed must be true or false"),
    ({**BASE, "bayes_pm": {"init": "map"}}, "[bayes_pm]: unknown init 'map'"),
    ({**BASE, "bayes_pm": {"degree": 3}}, "unknown key 'degree' in [bayes_pm]"),  # ERM's
    ({**BASE, "bayes_pm": []}, "[bayes_pm] must be a table"),
    # named estimators ([name] kind = ...)
    (_with(study__estimators=["erm", "Erm-2"]), "study.estimators entries must be plain names"),
    (_with(study__estimators=["erm", "erm"]), "study.estimators has repeated values"),
    (_with(study__estimators=["phi"]), "study.estimators: 'phi' is a reserved table name"),
    (_named(erm_b={"k_rule": "theory"}), "[erm_b] needs kind = one of erm, bayes_pm"),
    (_named(erm_b={"kind": "ols"}), "erm_b.kind must be one of erm, bayes_pm; got 'ols'"),
    (_named(erm_b={"kind": "erm", "chains": 2}), "unknown key 'chains' in [erm_b]"),
    (_named(erm_b={"kind": "erm", "k_rule": "aic"}), "[erm_b]: unknown K rule 'aic'"),
    (_named(erm_b={"kind": "bayes_pm", "restarts": 2}), "unknown key 'restarts' in [erm_b]"),
    (_named(erm_b={"kind": "erm"}, erm_c={"kind": "erm"}), "[erm_c] names an estimator that"),
    (_named(erm_b=[1]), "'erm_b' is no estimator kind (erm, bayes_pm) and has no [erm_b]"),
    ({**BASE, "erm": {"kind": "erm"}}, "unknown key 'kind' in [erm]"),
    # the held-out pairs' target relative standard error
    (_with(study__error_rse=0.0), "study.error_rse must be > 0.0"),
    (_with(study__error_rse=1.0), "study.error_rse must be in (0, 1)"),
    (_with(study__error_max_pairs=10**6), "study.error_max_pairs needs study.error_rse"),
    (
        _with(study__error_rse=0.05, study__error_max_pairs=100),
        "study.error_max_pairs must be >= study.n_eval_pairs (20000), got 100",
    ),
]


@pytest.mark.parametrize("raw, message", BAD)
def test_bad_configs_are_refused_with_a_clear_message(raw, message):
    with pytest.raises(InputError) as e:
        parse_config(raw)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    p = tmp_path / "broken.toml"
    p.write_text("[study\nname = 1")
    with pytest.raises(InputError, match="is not valid TOML"):
        load_config(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError):
        load_config(p)


def test_a_new_sampler_field_is_a_key_and_changes_no_existing_hash(monkeypatch):
    """A field added to SamplerConfig flows into [bayes_pm] without editing the study."""
    import dataclasses

    from bayes_ips.inference import SamplerConfig
    from bayes_ips.study import make_cells
    from bayes_ips.study.tasks import ips

    @dataclasses.dataclass(frozen=True)
    class Grown(SamplerConfig):
        mass: str = "dense"

    raw = {**BASE, "study": {**BASE["study"], "estimators": ["erm", "bayes_pm"]}}
    old = parse_config(raw)
    before = config_hash(old), [c.hash for c in make_cells(old)]
    monkeypatch.setattr(ips, "SamplerConfig", Grown)
    grown = parse_config(raw)
    assert isinstance(grown.bayes_pm.sampler, Grown)
    assert (config_hash(grown), [c.hash for c in make_cells(grown)]) == before
    chosen = parse_config({**raw, "bayes_pm": {"mass": "diagonal"}})
    assert chosen.bayes_pm.sampler.mass == "diagonal"
    bayes_cells = [c for c in make_cells(chosen) if c.estimator == "bayes_pm"]
    assert all(c.spec["settings"]["bayes"]["mass"] == "diagonal" for c in bayes_cells)
    assert config_hash(chosen) != before[0]
    with pytest.raises(InputError, match="bayes_pm.mass must be a string, got 1"):
        parse_config({**raw, "bayes_pm": {"mass": 1}})


def test_the_method_is_in_every_spec_but_the_legacy_nuts_one():
    """Cells of specs from before ``method`` existed were NUTS: only "nuts" is left out."""
    from bayes_ips.study import make_cells

    raw = {**BASE, "study": {**BASE["study"], "estimators": ["bayes_pm"]}}
    specs = {
        m: [c.spec["settings"]["bayes"] for c in make_cells(parse_config(raw_m))]
        for m, raw_m in (
            ("auto", raw),
            ("nuts", {**raw, "bayes_pm": {"method": "nuts"}}),
            ("imh", {**raw, "bayes_pm": {"method": "imh"}}),
        )
    }
    assert all(s["method"] == "auto" for s in specs["auto"])
    assert all(s["method"] == "imh" for s in specs["imh"])
    assert all("method" not in s for s in specs["nuts"])
    with pytest.raises(InputError, match="unknown method"):
        parse_config({**raw, "bayes_pm": {"method": "mclmc"}})


def test_posterior_basis_in_cell_specs():
    """The default (evidence) basis is written into the specs; ERM's basis, the one
    of the specs from before the rule existed, is left out (their hashes stay)."""
    from bayes_ips.study import make_cells

    raw = {**BASE, "study": {**BASE["study"], "estimators": ["bayes_pm"]}}
    new = [c.spec["settings"]["bayes"] for c in make_cells(parse_config(raw))]
    old = [
        c.spec["settings"]["bayes"]
        for c in make_cells(parse_config({**raw, "bayes_pm": {"basis": "erm"}}))
    ]
    assert all(s["basis"] == "evidence" for s in new)
    assert all("basis" not in s for s in old)
    with pytest.raises(InputError, match="unknown basis"):
        parse_config({**raw, "bayes_pm": {"basis": "cubic"}})


def test_committed_paper_records_match_their_cells():
    """The cell ids, spec hashes and config hash of the committed records still match."""
    import glob
    import json
    import os

    from bayes_ips.study import make_cells

    root = os.path.join(os.path.dirname(__file__), "..", "..", "analyses")
    config = load_config(os.path.join(root, "configs", "paper_nuts.toml"))
    cells = {c.id: c for c in make_cells(config)}
    paths = glob.glob(os.path.join(root, "results", "paper_records", "records", "*.json"))
    assert len(paths) >= 80
    for p in paths:
        with open(p) as f:
            doc = json.load(f)
        cell = cells[doc["cell_id"]]
        assert (cell.hash, cell.spec) == (doc["spec_hash"], doc["spec"])
        assert doc["config_hash"] == config_hash(config)


# ----------------------------------------------------------- named estimators


NAMED = {
    "study": {
        "name": "named",
        "estimators": ["erm_gcv", "erm_theory", "bayes_pm"],
        "M": [100, 200],
        "d": [2],
    },
    "phi": [{"family": "weierstrass", "beta": 1.5}],
    "erm": {"restarts": 2},  # every ERM fit's, changed by the named tables' keys
    "erm_gcv": {"kind": "erm"},
    "erm_theory": {"kind": "erm", "k_rule": "theory"},
}


def test_named_estimators_are_their_kinds_tables_with_keys_changed():
    from bayes_ips.erm import ERMConfig
    from bayes_ips.study import make_cells
    from bayes_ips.study.tasks import ips

    cfg = parse_config(NAMED)
    assert cfg.estimators == ("erm_gcv", "erm_theory", "bayes_pm")
    assert [cfg.kind_of(e) for e in cfg.estimators] == ["erm", "erm", "bayes_pm"]
    assert cfg.erm_of("erm_gcv") == ERMConfig(restarts=2) == cfg.erm_of("bayes_pm")
    assert cfg.erm_of("erm_theory") == ERMConfig(restarts=2, k_rule="theory")
    # the posterior mean shares its ERM fit ([erm]'s settings) with erm_gcv: a pair
    assert cfg.pairs() == [("bayes_pm", "erm_gcv")]
    cells = make_cells(cfg)
    assert len(cells) == cfg.n_cells == 6
    by_id = {c.id: c for c in cells}
    theory = by_id["erm_theory_weierstrass-b1.5_d2_M100_r0"]
    assert theory.spec["estimator"] == "erm_theory" and theory.spec["kind"] == "erm"
    assert theory.spec["settings"]["k_rule"] == "theory"
    assert ips.cell_erm_config(theory.spec) == ERMConfig(restarts=2, k_rule="theory", beta=1.5)
    gcv = by_id["erm_gcv_weierstrass-b1.5_d2_M100_r0"]
    assert gcv.spec["settings"]["k_rule"] == "gcv" and gcv.hash != theory.hash
    pm = by_id["bayes_pm_weierstrass-b1.5_d2_M100_r0"]
    assert "kind" not in pm.spec  # a kind's own estimator: the spec of old studies
    assert pm.spec["settings"]["erm"] == gcv.spec["settings"]
    # the same data for every estimator (the data key names none)
    assert ips._data_key(gcv.spec).tolist() == ips._data_key(theory.spec).tolist()
    # the config hash holds the variants; one of a different k_rule differs
    other = {**NAMED, "erm_theory": {"kind": "erm", "k_rule": "theory", "restarts": 1}}
    assert config_hash(parse_config(other)) != config_hash(cfg)
    assert cfg.to_dict()["variants"][1]["settings"]["k_rule"] == "theory"


def test_only_selects_a_named_estimator_or_a_kind():
    from bayes_ips.study import make_cells
    from bayes_ips.study.cells import parse_only, select_cells
    from bayes_ips.study.tasks import ips

    cells = make_cells(parse_config(NAMED))
    pick = select_cells(cells, parse_only(["estimator=erm_theory"], ips.selectable))
    assert {c.estimator for c in pick} == {"erm_theory"} and len(pick) == 2
    pick = select_cells(cells, parse_only(["kind=erm"], ips.selectable))
    assert {c.estimator for c in pick} == {"erm_gcv", "erm_theory"}


def test_a_named_posterior_and_its_pair():
    raw = {
        **{k: v for k, v in NAMED.items() if k not in ("erm_gcv", "erm_theory")},
        "study": {**NAMED["study"], "estimators": ["erm", "bayes_pm", "bayes_nuts"]},
        "bayes_nuts": {"kind": "bayes_pm", "method": "nuts", "draws": 100},
    }
    cfg = parse_config(raw)
    assert cfg.bayes_of("bayes_nuts").sampler.method == "nuts"
    assert cfg.bayes_of("bayes_nuts").sampler.draws == 100
    assert cfg.bayes_of("bayes_pm").sampler.method == "auto"
    assert cfg.pairs() == [("bayes_pm", "erm"), ("bayes_nuts", "erm")]


def test_error_rse_is_in_the_specs_only_when_set():
    from bayes_ips.study import make_cells

    plain = make_cells(parse_config(BASE))
    assert all("error_rse" not in c.spec for c in plain)
    cfg = parse_config(_with(study__error_rse=0.05))
    assert (cfg.error_rse, cfg.error_max_pairs) == (0.05, 32 * cfg.n_eval_pairs)
    cells = make_cells(cfg)
    assert all(c.spec["error_rse"] == 0.05 for c in cells)
    assert all(c.spec["error_max_pairs"] == 640000 for c in cells)
    assert [c.id for c in cells] == [c.id for c in plain]
    assert {c.hash for c in cells}.isdisjoint(c.hash for c in plain)
    assert config_hash(cfg) != config_hash(parse_config(BASE))


# The config hash of every shipped config, and a digest of its cells' ids and spec
# hashes, as they were before named estimators and error targets existed (and for
# minimax.toml, as written): records under analyses/results name these cells.  The
# configs with records fix ERM's knot placement to "quantile", the default they were
# fitted with; quick.toml (the demo, no records) takes the default, "auto" since
# 2026-12-04, which changed its hashes from ("59104b372aa8da13", "e7246a48cbe6"), and
# dropped M = 300 on 2026-12-07 (was ("b5c94b87e9cdbea7", "2221463f88bf")).
# slr_attention.toml gained [bayes_pm.softmax] lambda_from = "pgd" on 2026-12-07 (was
# ("7c42e7171c7d34f2", "fe33487b60d5")): only its 48 softmax posterior cells changed
# hash (test_slr_study checks which); the 24 at d = 50 were rerun.
SHIPPED = {
    "bayes_vs_erm.toml": ("5dcaca0e826b91ab", "c75ca8ef951e"),
    "paper.toml": ("3f6073d4710d3e6b", "5b98c46bfd8b"),
    "paper_nuts.toml": ("14c2f1ca533d1a6a", "45d1f4fab1cb"),
    "quick.toml": ("61304b176c917c19", "28a325588271"),
    "rate_vs_dimension.toml": ("9898f5cc2f509ef4", "13cde5ba3646"),
    "rate_vs_smoothness.toml": ("b27a693c48eb7b68", "1822ffca6a4e"),
    "slr.toml": ("c9034c082bd017c6", "540517bcbecd"),
    "slr_attention.toml": ("edd9e78052cafe9a", "f3137ad59732"),
}


def test_shipped_configs_keep_their_hashes_and_cells():
    import hashlib
    import json
    import os

    from bayes_ips.study import make_cells

    root = os.path.join(os.path.dirname(__file__), "..", "..", "analyses", "configs")
    for name, (chash, cells_digest) in SHIPPED.items():
        cfg = load_config(os.path.join(root, name))
        cells = json.dumps([[c.id, c.hash] for c in make_cells(cfg)])
        got = (config_hash(cfg), hashlib.sha256(cells.encode()).hexdigest()[:12])
        assert got == (chash, cells_digest), name


def test_minimax_config_is_the_documented_grid():
    import os

    from bayes_ips.study import make_cells

    path = os.path.join(os.path.dirname(__file__), "..", "..", "analyses", "configs")
    cfg = load_config(os.path.join(path, "minimax.toml"))
    assert cfg.estimators == ("erm_gcv", "erm_theory", "erm_mixed", "erm_oracle", "bayes_pm")
    rules = [cfg.erm_of(e).k_rule for e in cfg.estimators]
    assert rules == ["gcv", "theory", "gcv", "gcv", "gcv"]
    placement = [cfg.erm_of(e).knot_placement for e in cfg.estimators]
    assert placement == ["quantile", "quantile", "auto", "auto", "quantile"]
    # the oracle alone knows A (the posterior's start, [erm], does not)
    assert [cfg.erm_of(e).known_a for e in cfg.estimators] == [False] * 3 + [True, False]
    assert cfg.pairs() == [("bayes_pm", "erm_gcv")]
    assert [(p.family, p.beta) for p in cfg.phi] == [("weierstrass", b) for b in (0.5, 1.5, 2.5)]
    assert cfg.d == (1, 5, 30) and cfg.M == (250, 500, 1000, 2000, 4000, 8000, 16000)
    assert (cfg.N, cfg.rank, cfg.noise, cfg.tokens, cfg.repetitions) == (6, 1, 0.1, "cube", 4)
    assert (cfg.error_rse, cfg.error_max_pairs) == (0.05, 32 * 20000)
    assert cfg.n_cells == len(make_cells(cfg)) == 5 * 3 * 3 * 7 * 4
