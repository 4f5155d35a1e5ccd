"""Test configuration: float64 everywhere, switched on explicitly here.

Every compiled XLA:CPU program keeps a few memory mappings alive for as long as
JAX caches it, and the kernel allows a process 65530 of them
(``vm.max_map_count``).  One pytest process compiles tens of thousands of
programs (every eager operation on a new shape is one), and past the limit
XLA's compiler segfaults (seen twice, at different tests).  So after every test
the process checks how many mappings it holds and drops the compiled programs
only when it nears the limit (:func:`bayes_ips.study.backends.relieve_map_pressure`):
the programs that several test modules share (ERM, the samplers, the kernel) are
compiled once per session, not once per module.

Subprocesses started by the tests (CLI runs, study worker pools) share one
persistent compilation cache for the session, handed to them through the
environment, so that tests running the same shapes in several processes
compile once; every compiled program is written to it, not only those that took
over half a second.  (The pytest processes themselves keep no persistent cache:
XLA's executable serialisation segfaulted there in CI.)

Tests run over many parametrisations run a few of them in the fast tier
(:data:`FAST_TIER_PARAMS`); the others carry the ``slow`` mark and run in ``make
test-all`` (CI), so the fast tier keeps its five minutes and CI still runs every case.

``make test`` runs the tests in two pytest-xdist workers.  A whole test file, or a
whole group of files that share programs (:data:`SHARED_PROGRAMS`), goes to one
worker (:func:`pytest_xdist_make_scheduler`), so a module fixture is built once; the
environment set here, in the controlling process, reaches both workers.
"""

import os
import tempfile
import warnings

import jax
import pytest

from bayes_ips import CACHE_ENV, CACHE_MIN_SECS_ENV
from bayes_ips.study.backends import relieve_map_pressure

jax.config.update("jax_enable_x64", True)
os.environ.setdefault(CACHE_ENV, tempfile.mkdtemp(prefix="bayes-ips-test-jax-cache-"))
# every program, small ones included: a worker pool then loads what the CLI subprocess
# of an earlier test compiled (the process-pool test: 16 s -> 8 s)
os.environ.setdefault(CACHE_MIN_SECS_ENV, "0")


@pytest.fixture(autouse=True)
def _relieve_map_pressure():
    yield
    relieve_map_pressure()


# Test files that run the same programs on the same shapes (the IPS posterior at
# M = 70, N = 4, d = 2, K = 4; the tiny ERM study at d = 2, K = 3; the single-location
# sampler) go to one pytest-xdist worker together, so the programs are compiled once;
# every other file is a group of its own, so its module fixtures are built once.
SHARED_PROGRAMS = {
    "tests/test_inference.py": "ips-posterior",
    "tests/test_importance.py": "ips-posterior",
    "tests/test_cli_bayes.py": "ips-posterior",
    "tests/study/test_engine.py": "erm-study",
    "tests/study/test_cli_study.py": "erm-study",
    "tests/analyses/test_scripts.py": "erm-study",
    "tests/single_location/test_slr_posterior.py": "slr-posterior",
    "tests/single_location/test_slr_cli.py": "slr-posterior",
}


# Test -> the parametrisation ids that the fast tier runs; its other cases are marked
# slow (make test-all, CI).  Each kept case covers the code paths of the dropped ones
# (the default tail, the default kernel, an interior multiplicity above one); what the
# dropped ones add is more shapes of the same paths, each of them compiled anew (1-3 s
# apiece; 2026-12-08, make test at 281 s of its 300 on an idle machine, 320-343 s on a
# loaded one).
FAST_TIER_PARAMS = {
    "tests/test_spline.py::test_spline_matches_scipy_including_extrapolation": ("2-3", "3-1"),
    "tests/test_spline.py::test_linear_tail_matches_naive_construction": ("3-1",),
    "tests/test_spline.py::test_linear_tail_is_continuous_with_its_slope_at_the_outer_knots": (
        "3-4",
    ),
    "tests/test_spline.py::test_flat_tail_matches_naive_construction": ("3-1", "2-3"),
    "tests/test_pairwise.py::test_pairwise_mean_and_loss_match_naive_loop_for_any_chunking": (
        "cubic-flat-tail-5",
        "cubic-flat-tail-64",
        "pw-quadratic-5",
        "linear-64",
        "cubic-poly-tail-5",
    ),
    "tests/test_pairwise.py::test_gram_matches_explicit_products": (
        "cubic-flat-tail-4",
        "cubic-flat-tail-13",
        "cubic-4",
        "pw-quadratic-4",
        "linear-13",
        "cubic-poly-tail-4",
    ),
    "tests/test_pairwise.py::test_gram_has_no_derivative_in_the_breakpoints": (
        "cubic-flat-tail",
        "pw-quadratic",
        "linear",
    ),
    "tests/test_pairwise.py::test_gram_rule_matches_autodiff": ("3-1-5-flat",),
    "tests/single_location/test_slr_population.py::test_closed_form_matches_the_monte_carlo_risk": (
        "5-3-1.3-0.5-0.2",
    ),
    "tests/test_coercivity.py::test_c_h_is_at_least_one_over_n_minus_one": ("cube", "correlated"),
    "tests/single_location/test_slr_attention.py::test_softmax_at_the_truth_is_the_bayes_predictor_at_gamma_1": (  # noqa: E501
        "2-3",
    ),
    "tests/test_posterior.py::test_rao_blackwell_matches_a_loop_over_draws": ("5-8",),
    "tests/test_activations.py::test_weierstrass_has_exact_exponent_at_every_point": ("1.5",),
    "tests/single_location/test_slr_risk.py::test_bayes_predictor_matches_naive_enumeration": (
        "3-5-1.3",
    ),
    "tests/test_simulate.py::test_noise_laws_have_the_asked_sd_and_are_independent_of_x": (
        "gaussian",
        "rademacher",
    ),
    "tests/test_simulate.py::test_weierstrass_truth_has_the_fixed_l2_rho_norm": (
        "cube",
        "correlated",
    ),
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by the marks
def pytest_collection_modifyitems(config, items):
    """Mark the cases of :data:`FAST_TIER_PARAMS` that the fast tier does not run as slow."""
    collected: dict[str, set[str]] = {}
    for item in items:
        name, _, param = item.nodeid.partition("[")
        keep = FAST_TIER_PARAMS.get(name)
        if keep is None:
            continue
        collected.setdefault(name, set()).add(param[:-1])
        if param[:-1] not in keep:
            item.add_marker(pytest.mark.slow)
    # a renamed case must not silently drop its test from the fast tier
    for name, ids in collected.items():
        stale = set(FAST_TIER_PARAMS[name]) - ids
        if stale and len(ids) > len(FAST_TIER_PARAMS[name]):
            warnings.warn(
                pytest.PytestConfigWarning(
                    f"FAST_TIER_PARAMS names cases of {name} that were not collected: "
                    f"{sorted(stale)}; collected: {sorted(ids)}"
                ),
                stacklevel=1,
            )


@pytest.hookimpl(optionalhook=True)  # pytest-xdist may be absent or switched off
def pytest_xdist_make_scheduler(config, log):
    """Whole files, or whole groups of :data:`SHARED_PROGRAMS`, to one worker at a time.

    (xdist's own ``--dist loadgroup`` marks cannot take effect under pytest 9.2, whose
    node ids xdist can no longer rename; its scheduler hook is the supported way.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class SharedProgramsScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_PROGRAMS.get(path, path)

    return SharedProgramsScheduling(config, log)
