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


def test_minimal_config_gets_documented_defaults():
    cfg = parse_config(BASE)
    assert cfg.M == (100, 200) and cfg.d == (2,) and cfg.repetitions == 1
    assert cfg.N == 6 and cfg.rank == 1 and cfg.noise == 0.1 and cfg.tokens == "cube"
    assert cfg.phi[0].family == "tanh" and math.isinf(cfg.phi[0].beta)
    assert cfg.erm.k_rule == "gcv" and cfg.bayes_pm.chains == 2
    assert cfg.n_cells == 2


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
    (_with(study__estimators=["mle"]), "study.estimators entries must be one of"),
    (_with(study__estimators=[]), "non-empty list"),
    (_with(study__rank=3), "rank 3 is impossible for d = 2"),
    (_with(study__tokens="sphere"), "study.tokens must be one of"),
    (_with(study__noise=-1.0), "study.noise must be >= 0"),
    (_with(study__noise=float("nan")), "study.noise must be a finite number"),
    (_with(study__N=1), "study.N must be an integer >= 2"),
    (_with(study__rho=0.5), "only for tokens = 'correlated'"),
    (_with(study__repetitions=0), "study.repetitions must be an integer >= 1"),
    (_with(study__name="a/b"), "study.name must be a plain"),
    (_with(study__M=_DROP), "[study] needs 'M'"),
    ({"study": BASE["study"]}, "at least one [[phi]]"),
    ({**BASE, "phi": [{"family": "relu"}]}, "phi[0].family must be one of"),
    ({**BASE, "phi": [{"family": "holder"}]}, "family holder needs a beta"),
    ({**BASE, "phi": [{"family": "holder", "beta": 0}]}, "phi[0].beta must be > 0"),
    ({**BASE, "phi": [{"family": "bspline", "beta": 1.5}]}, "integer degree"),
    ({**BASE, "phi": [{"family": "tanh", "beta": 2}]}, "analytic"),
    ({**BASE, "phi": [{"family": "tanh"}, {"family": "tanh"}]}, "repeat an entry"),
    ({**BASE, "erm": {"k_rule": "aic"}}, "erm.k_rule must be one of"),
    ({**BASE, "erm": {"degree": 9}}, "erm.degree must be in 0..7"),
    ({**BASE, "erm": {"multiplicity": 5}}, "erm.multiplicity must be <= degree + 1"),
    ({**BASE, "bayes_pm": {"level": 1.0}}, "must be in (0, 1)"),
    ({**BASE, "bayes_pm": {"draws": 2}}, "bayes_pm.draws must be an integer >= 4"),
    ({**BASE, "bayes_pm": {"collapsed": "yes"}}, "bayes_pm.collapsed must be true or false"),
    ({**BASE, "bayes_pm": {"init": "map"}}, "bayes_pm.init must be one of"),
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
