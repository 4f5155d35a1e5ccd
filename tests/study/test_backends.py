"""The guard against the kernel's cap on memory mappings (vm.max_map_count)."""

import os

import jax
import jax.numpy as jnp
import pytest

from bayes_ips.study.backends import relieve_map_pressure

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/maps"), reason="needs Linux /proc for the mapping count"
)


def _n_maps() -> int:
    with open("/proc/self/maps", "rb") as f:
        return sum(1 for _ in f)


def test_over_budget_drops_the_compiled_programs_and_their_mappings():
    f = jax.jit(lambda x: jnp.sin(x) + 1.0)
    for n in range(1, 41):  # 40 programs, a few mappings each
        f(jnp.ones(n)).block_until_ready()
    assert f._cache_size() == 40
    before = _n_maps()
    assert relieve_map_pressure(budget=0.0)  # any use is over a zero budget
    assert f._cache_size() == 0
    # each XLA:CPU program held >= 2 mappings; 40 programs dropped free >= 40 of them
    assert _n_maps() <= before - 40


def test_under_budget_keeps_them():
    f = jax.jit(lambda x: jnp.cos(x))
    f(jnp.ones(3)).block_until_ready()
    assert not relieve_map_pressure(budget=1.0)  # the whole cap: never reached here
    assert f._cache_size() == 1
