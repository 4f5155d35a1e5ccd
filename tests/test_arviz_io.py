"""The calibrated R-hat bound of ``diagnose`` (bayes_ips.diagnostics.rhat_bound)."""

import warnings

import numpy as np
import pytest

from bayes_ips.diagnostics import RHAT_ALPHA, RHAT_MAX, rhat_bound, rhat_check

warnings.filterwarnings("ignore", category=FutureWarning)


def _flags(draws: np.ndarray) -> np.ndarray:
    """Which of the (C, D, Q) quantities have an R-hat above their bound."""
    import arviz as az

    return rhat_check(az.convert_to_dataset({"x": draws}))["flagged"].to_numpy()


def _ar1(rng, shape, rho):
    from scipy.signal import lfilter

    e = rng.standard_normal(shape)
    x = lfilter([np.sqrt(1 - rho**2)], [1, -rho], e, axis=1)
    x[:, 0] = e[:, 0]
    return x


@pytest.mark.parametrize(
    "chains,draws,rho,runs",
    [
        # ~8 s each (ArviZ's R-hat and ESS over 5 x 210 quantities): the fast tier's
        # budget keeps them in the slow tier, beside the 60-run checks of the same laws
        pytest.param(2, 500, 0.0, 5, marks=pytest.mark.slow),
        pytest.param(4, 300, 0.6, 5, marks=pytest.mark.slow),
        pytest.param(2, 500, 0.0, 60, marks=pytest.mark.slow),
        pytest.param(4, 300, 0.8, 60, marks=pytest.mark.slow),
    ],
)
def test_healthy_runs_raise_no_false_alarm(chains, draws, rho, runs):
    """Healthy runs of 210 quantities each (the size of a d = 3 posterior's table).

    The bound is built for a family-wise false-alarm rate of RHAT_ALPHA = 1% per run:
    2 or more alarms in 5 runs have probability 0.001 at that rate, 4 or more in
    60 runs 0.002.  The fixed 1.01 of before flags ~15% of the independent runs and
    all correlated ones.
    """
    rng = np.random.default_rng(int(rho * 10) + chains + runs)
    alarms = sum(bool(_flags(_ar1(rng, (chains, draws, 210), rho)).any()) for _ in range(runs))
    assert RHAT_ALPHA == 0.01 and alarms <= (1 if runs <= 10 else 3)


def test_a_frozen_chain_and_a_shifted_chain_are_flagged():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 500, 20))
    frozen = x.copy()
    frozen[1] = frozen[1, :1]  # one chain stuck at a point
    assert _flags(frozen).all()
    shifted = x.copy()
    shifted[2] += 0.5  # one chain half a posterior sd away: a different mode
    assert _flags(shifted).mean() > 0.9


def test_the_bound_falls_to_the_floor_with_many_effective_draws():
    assert rhat_bound(4, 1e6, 200) == pytest.approx(RHAT_MAX)
    b = rhat_bound(2, np.array([200.0, 1000.0, 5000.0]), 200)
    assert np.all(np.diff(b) < 0) and b[0] > 1.02


def test_multi_head_files_are_diagnosed_on_aligned_heads():
    """A multi-head posterior (``heads`` attribute) is judged on its aligned heads, never
    on the raw per-head A (chains may differ by a relabelling of the heads)."""
    from types import SimpleNamespace

    from bayes_ips.arviz_io import HEADS_IDENTIFIABLE, IDENTIFIABLE, identifiable

    assert identifiable(SimpleNamespace(attrs={"heads": 2})) == HEADS_IDENTIFIABLE
    assert "A" not in HEADS_IDENTIFIABLE and "A_aligned" in HEADS_IDENTIFIABLE
    assert identifiable(SimpleNamespace(attrs={})) == IDENTIFIABLE
    assert identifiable(SimpleNamespace(attrs={"heads": 2, "identifiable": '["sigma"]'})) == [
        "sigma"
    ]
