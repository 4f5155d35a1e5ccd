"""The wheel ships every package: pyproject's explicit list against the source tree.

The list is explicit because ``models/`` is mapped to ``bayes_ips.models``
(``package-dir``), which ``packages.find`` cannot express.  An editable install
finds a subpackage missing from the list anyway, so only this test (or a regular
install) catches one; ``bayes_ips.study.tasks`` was missing until it was added.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
with open(ROOT / "pyproject.toml", "rb") as _f:
    SETUPTOOLS = tomllib.load(_f)["tool"]["setuptools"]


def _source_packages() -> set[str]:
    """Dotted names of the folders with an ``__init__.py`` under each ``package-dir`` root."""
    found = set()
    for name, folder in SETUPTOOLS["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_source_package_is_listed():
    listed = set(SETUPTOOLS["packages"])
    source = _source_packages()
    assert source - listed == set(), f"packages missing from pyproject: {sorted(source - listed)}"
    assert listed - source == set(), f"listed packages without a folder: {sorted(listed - source)}"


def test_models_map_to_bayes_ips_models():
    source = _source_packages()
    assert "bayes_ips.models" in source
    assert not any(p == "models" or p.startswith("models.") for p in source)
