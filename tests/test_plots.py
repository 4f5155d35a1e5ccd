"""Figures: they draw what they say (axes, panels, titles) from real fits."""

import jax
import numpy as np
import pytest
from matplotlib.figure import Figure

from bayes_ips.multihead import fit_oracle_heads
from bayes_ips.plots import plot_heads_fit
from bayes_ips.simulate import make_truth, simulate


@pytest.mark.slow  # ~10 s of compilation (an oracle fit and the heads' splines)
def test_plot_heads_fit_aligns_heads_to_the_truth():
    truth = make_truth(jax.random.PRNGKey(0), d=3, phi=["tanh", "sin"], heads=2, noise_sd=0.05)
    X, Y = simulate(jax.random.PRNGKey(1), truth, 150, 5)
    fit = fit_oracle_heads(np.asarray(X), np.asarray(Y), truth.A[::-1], 5)  # heads swapped
    fig = plot_heads_fit(fit, truth, n_pairs=400)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    # the fit's heads are the truth's reversed: aligned back, each with |cos| = 1
    assert titles[0].startswith("head 1 (fitted head 2): |cos| = 1.0000")
    assert titles[1].startswith("head 2 (fitted head 1): |cos| = 1.0000")
    assert titles[2].startswith("held-out pairs: error")
    assert len(plot_heads_fit(fit).axes) == 2  # without a truth: one panel per head
