"""The B-spline basis against scipy.interpolate.BSpline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import BSpline

from bayes_ips.spline import (
    count_outside,
    design_matrix,
    full_knot_vector,
    host_knot_vector,
    local_basis,
    make_knots,
    mixed_breaks,
    n_basis,
    quantile_breaks,
    reflect,
    saved_tail,
    spline_eval,
)

# Inside the knot range basis values are in [0, 1] and both codes agree to round-off.
# Outside, extrapolated pieces of degree up to 5 reach |B| ~ 1e3 and are sums of
# terms of that size, so the agreement is relative to the largest value in the row.
RTOL = 1e-11
ROW_RTOL = 1e-12


def _case(seed, degree, mult, n_int=7, tail="poly"):
    rng = np.random.default_rng(seed)
    breaks = np.sort(rng.uniform(-1, 1, n_int + 1))
    knots = make_knots(breaks, degree, mult, tail)
    coef = rng.normal(size=n_basis(knots))
    # inside, outside on both sides, and exactly on every breakpoint
    u = np.concatenate([rng.uniform(-1.5, 1.5, 500), breaks])
    return knots, coef, u


CASES = [(s, m) for s in range(0, 6) for m in sorted({1, max(1, s // 2), s + 1})]
# Every (degree, multiplicity) compiles its own programs (~2-5 s a case and test).  The
# fast tier runs piecewise constants, the default cubic, a full multiplicity (jumps)
# and the highest degree; the slow tier all 16.
FAST_CASES = {(0, 1), (3, 1), (2, 3), (5, 3)}


def cases(fast=FAST_CASES):
    return [pytest.param(s, m, marks=() if (s, m) in fast else pytest.mark.slow) for s, m in CASES]


@pytest.mark.parametrize("degree,mult", cases({(3, 1), (2, 3)}))
def test_spline_matches_scipy_including_extrapolation(degree, mult):
    knots, coef, u = _case(degree * 10 + mult, degree, mult)
    t = np.asarray(full_knot_vector(knots))
    assert len(t) == n_basis(knots) + degree + 1
    ref = BSpline(t, coef, degree, extrapolate=True)(u)
    got = np.asarray(spline_eval(jnp.asarray(u), jnp.asarray(coef), knots))
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("degree,mult", cases())
def test_design_matrix_matches_scipy_basis(degree, mult):
    knots, _, u = _case(degree * 10 + mult + 1, degree, mult)
    t = np.asarray(full_knot_vector(knots))
    nb = n_basis(knots)
    ref = np.stack(
        [BSpline(t, np.eye(nb)[k], degree, extrapolate=True)(u) for k in range(nb)], axis=1
    )
    got = np.asarray(design_matrix(u, knots))
    row_scale = np.maximum(1.0, np.abs(ref).max(axis=1, keepdims=True))
    assert np.all(np.abs(got - ref) <= ROW_RTOL * 50 * row_scale)  # 50: ~(s+1)^2 terms
    inside = (u >= np.asarray(knots.breaks)[0]) & (u <= np.asarray(knots.breaks)[-1])
    np.testing.assert_allclose(got[inside], ref[inside], atol=1e-13)
    # local support: s + 1 functions per score, and they sum to one
    first, vals = local_basis(jnp.asarray(u), knots)
    assert vals.shape == (len(u), degree + 1)
    assert np.all(np.abs(np.asarray(vals).sum(-1) - 1.0) <= ROW_RTOL * 50 * row_scale[:, 0])
    assert np.all(np.asarray(first) + degree < nb)


def test_full_multiplicity_spans_discontinuous_piecewise_polynomials():
    """Multiplicity s+1: any piecewise cubic (jumps allowed) is reproduced exactly."""
    degree = 3
    breaks = np.array([-1.0, -0.3, 0.2, 1.0])
    knots = make_knots(breaks, degree, degree + 1)
    rng = np.random.default_rng(0)
    polys = [np.polynomial.Polynomial(rng.normal(size=4)) for _ in range(3)]

    def target(u):
        k = np.clip(np.searchsorted(breaks, u, side="right") - 1, 0, 2)
        return np.choose(k, [p(u) for p in polys])

    u_fit = np.linspace(-1, 1, 301)
    B = np.asarray(design_matrix(u_fit, knots))
    assert B.shape[1] == 3 * 4  # (s+1) per interval, no continuity constraints
    coef, *_ = np.linalg.lstsq(B, target(u_fit), rcond=None)
    u = np.random.default_rng(1).uniform(-1, 1, 200)
    ev = jax.jit(lambda x, c: spline_eval(x, c, knots))  # compiled: op by op is slow
    np.testing.assert_allclose(
        np.asarray(ev(jnp.asarray(u), jnp.asarray(coef))), target(u), atol=1e-9
    )
    # ... whereas simple knots cannot jump: the fit of a discontinuous target is not exact
    simple = make_knots(breaks, degree, 1)
    Bs = np.asarray(design_matrix(u_fit, simple))
    cs, *_ = np.linalg.lstsq(Bs, target(u_fit), rcond=None)
    assert np.max(np.abs(Bs @ cs - target(u_fit))) > 1e-3


def _naive_linear_tail(t, coef, degree, b0, bK, u):
    """Values and ``d / du`` of the spline with linear tails, by SciPy: the
    extrapolate=True spline inside ``[b0, bK]``, and outside the tangent line at
    the nearer outer knot (its value and derivative there, from SciPy)."""
    spl = BSpline(t, coef, degree, extrapolate=True)

    def dspl(x):  # nu=1: splder refuses interior knots of full multiplicity
        return spl(x, nu=1) if degree > 0 else np.zeros_like(np.asarray(x, float))

    val, der = spl(u), dspl(u)
    for b, out in ((b0, u < b0), (bK, u > bK)):
        val = np.where(out, spl(b) + dspl(b) * (u - b), val)
        der = np.where(out, dspl(b), der)
    return val, der


@pytest.mark.parametrize("degree,mult", cases({(3, 1)}))
def test_linear_tail_matches_naive_construction(degree, mult):
    """Values and derivatives (in u and in the coefficients) of the linear tail
    against SciPy's spline continued by its tangent at b_0 and b_K; inside the
    range both tails are the same spline."""
    knots, coef, u = _case(degree * 10 + mult + 2, degree, mult, tail="linear")
    assert knots.tail == "linear"
    t = np.asarray(full_knot_vector(knots))
    b = np.asarray(knots.breaks)
    ref, dref = _naive_linear_tail(t, coef, degree, b[0], b[-1], u)
    ev = jax.jit(lambda x, c: spline_eval(x, c, knots))  # compiled: op by op is slow
    got = np.asarray(ev(jnp.asarray(u), jnp.asarray(coef)))
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL)
    # d / du away from the breakpoints (one-sided there for full multiplicity)
    v = u[: -len(b)]
    dgot = np.asarray(jax.jit(jax.vmap(jax.grad(ev), (0, None)))(v, jnp.asarray(coef)))
    np.testing.assert_allclose(dgot, dref[: -len(b)], rtol=1e-9, atol=1e-9)
    # the basis: design matrix, local basis and d / dcoef all the naive basis
    nb = n_basis(knots)
    Bref = np.stack(
        [_naive_linear_tail(t, np.eye(nb)[k], degree, b[0], b[-1], u)[0] for k in range(nb)],
        axis=1,
    )
    np.testing.assert_allclose(np.asarray(design_matrix(u, knots)), Bref, rtol=RTOL, atol=RTOL)
    jac = np.asarray(jax.jit(jax.jacfwd(ev, 1))(jnp.asarray(u), jnp.asarray(coef)))
    np.testing.assert_allclose(jac, Bref, rtol=RTOL, atol=RTOL)
    first, vals = local_basis(jnp.asarray(u), knots)
    np.testing.assert_allclose(np.asarray(vals).sum(-1), 1.0, rtol=RTOL, atol=RTOL)
    # bit for bit: both through spline_eval's compiled program, whose Horner steps are
    # the same inside the range, where the linear tail adds its slope times dz = 0
    inside = jnp.asarray(u[(u >= b[0]) & (u <= b[-1])])
    poly = spline_eval(inside, jnp.asarray(coef), make_knots(b, degree, mult, "poly"))
    linear = spline_eval(inside, jnp.asarray(coef), knots)
    np.testing.assert_array_equal(np.asarray(linear), np.asarray(poly))


@pytest.mark.parametrize(
    "degree,mult",
    [(3, 4)]
    + [pytest.param(s, m, marks=pytest.mark.slow) for s, m in [(1, 1), (3, 1), (2, 1), (5, 3)]],
)
def test_linear_tail_is_continuous_with_its_slope_at_the_outer_knots(degree, mult):
    """Value and first derivative are continuous at b_0 and b_K: the line outside,
    carried back to the knot, meets the inside piece (the "poly" spline, equal to
    it inside) with its value and slope there; the second derivative is zero
    outside."""
    knots, coef, _ = _case(degree + 40, degree, mult, tail="linear")
    b = np.asarray(knots.breaks)
    c = jnp.asarray(coef)

    def f(x, kn=knots):
        return spline_eval(x, c, kn)

    def piece(x):
        return f(x, make_knots(b, degree, mult, "poly"))

    # compiled once each (op by op, the dozen scalar calls took ~6 s)
    df = jax.grad(f)
    f, df, d2f, piece, dpiece = map(jax.jit, (f, df, jax.grad(df), piece, jax.grad(piece)))
    for edge, out in ((b[0], -1.0), (b[-1], 1.0)):
        for gap in (1e-9, 0.3, 2.0):
            x = edge + out * gap
            back = float(f(x)) - out * gap * float(df(x))  # the tangent line at the knot
            assert back == pytest.approx(float(piece(edge)), rel=1e-10, abs=1e-10)
            assert float(df(x)) == pytest.approx(float(dpiece(edge)), rel=1e-10)
            assert float(d2f(x)) == 0.0


# second-order checks, forward and reverse (~6 s per tail): the old tail in the slow tier
@pytest.mark.parametrize("tail", ["linear", pytest.param("poly", marks=pytest.mark.slow)])
def test_gradient_in_u_and_coef(tail):
    from jax.test_util import check_grads

    knots, coef, u = _case(3, 3, 1, tail=tail)
    u = u[(u > -1.4) & (u < 1.4)][:50]
    check_grads(  # compiled: op by op it took ~10 s
        jax.jit(lambda uu, cc: spline_eval(uu, cc, knots)),
        (jnp.asarray(u), jnp.asarray(coef)),
        order=2,
        modes=["fwd", "rev"],
    )


@pytest.mark.parametrize(
    "degree,mult",
    [(3, 1), (2, 3)] + [pytest.param(s, m, marks=pytest.mark.slow) for s, m in [(1, 1), (3, 4)]],
)
def test_flat_tail_matches_naive_construction(degree, mult):
    """The flat tail against SciPy's spline at the nearer outer knot: values, d / du
    (zero outside), the design matrix, the local basis and d / dcoef; inside the
    range it is the same spline as the other tails."""
    knots, coef, u = _case(degree * 10 + mult + 5, degree, mult, tail="flat")
    t = np.asarray(full_knot_vector(knots))
    b = np.asarray(knots.breaks)
    uc = np.clip(u, b[0], b[-1])
    assert np.any(u < b[0]) and np.any(u > b[-1])
    spl = BSpline(t, coef, degree, extrapolate=True)
    ev = jax.jit(lambda x, c: spline_eval(x, c, knots))  # compiled: op by op is slow
    got = np.asarray(ev(jnp.asarray(u), jnp.asarray(coef)))
    np.testing.assert_allclose(got, spl(uc), rtol=RTOL, atol=RTOL)
    v = u[: -len(b)]  # away from the breakpoints
    dgot = np.asarray(jax.jit(jax.vmap(jax.grad(ev), (0, None)))(v, jnp.asarray(coef)))
    out = (v < b[0]) | (v > b[-1])
    assert np.all(dgot[out] == 0.0)
    dref = spl(v[~out], nu=1) if degree > 0 else np.zeros((~out).sum())
    np.testing.assert_allclose(dgot[~out], dref, rtol=1e-9, atol=1e-9)
    nb = n_basis(knots)
    Bref = np.stack([BSpline(t, np.eye(nb)[k], degree)(uc) for k in range(nb)], axis=1)
    np.testing.assert_allclose(np.asarray(design_matrix(u, knots)), Bref, rtol=RTOL, atol=RTOL)
    jac = np.asarray(jax.jit(jax.jacfwd(ev, 1))(jnp.asarray(u), jnp.asarray(coef)))
    np.testing.assert_allclose(jac, Bref, rtol=RTOL, atol=RTOL)
    first, vals = local_basis(jnp.asarray(u), knots)
    np.testing.assert_allclose(np.asarray(vals).sum(-1), 1.0, rtol=RTOL, atol=RTOL)


def test_outside_scores_are_counted_and_extrapolated_not_clipped():
    knots = make_knots(np.linspace(0, 1, 5), 3, 1, "flat")
    coef = np.arange(n_basis(knots), dtype=float) ** 2
    u = jnp.asarray([-0.5, 0.0, 0.5, 1.0, 1.7])
    assert int(count_outside(u, knots)) == 2
    vals = np.asarray(spline_eval(u, coef, knots))
    # the flat tail is what clipping would give: phi(0) and phi(1) at -0.5 and 1.7
    assert vals[0] == pytest.approx(vals[1]) and vals[-1] == pytest.approx(vals[-2])
    for tail in ("poly", "linear"):
        knots = make_knots(np.linspace(0, 1, 5), 3, 1, tail)
        coef = np.arange(n_basis(knots), dtype=float) ** 2
        u = jnp.asarray([-0.5, 0.0, 0.5, 1.0, 1.7])
        assert int(count_outside(u, knots)) == 2
        vals = np.asarray(spline_eval(u, coef, knots))
        # clipping would return phi(0) and phi(1) at -0.5 and 1.7
        assert vals[0] != pytest.approx(vals[1]) and vals[-1] != pytest.approx(vals[-2])


def test_flat_tail_is_the_default_and_unknown_tails_are_refused():
    assert make_knots([0.0, 1.0]).tail == "flat"
    with pytest.raises(ValueError, match="tail"):
        make_knots([0.0, 1.0], tail="cubic")
    # files written before the tail existed carry none: they extrapolated with the piece
    assert saved_tail({"degree": 3}) == "poly"
    assert saved_tail({"tail": "linear"}) == "linear"
    assert saved_tail({"tail": "flat"}) == "flat"
    with pytest.raises(ValueError, match="tail"):
        saved_tail({"tail": "spline"})


@pytest.mark.parametrize("tail", ["poly", "linear", "flat"])
def test_reflect_is_exact(tail):
    knots, coef, u = _case(7, 3, 2, tail=tail)
    rk, rc = reflect(knots, coef)
    assert rk.tail == tail
    np.testing.assert_allclose(
        np.asarray(spline_eval(jnp.asarray(-u), rc, rk)),
        np.asarray(spline_eval(jnp.asarray(u), jnp.asarray(coef), knots)),
        rtol=RTOL,
        atol=RTOL,
    )


def test_quantile_breaks_are_equal_mass_and_cover_the_data():
    u = np.random.default_rng(0).standard_t(3, size=100_000)
    b = quantile_breaks(u, 10)
    assert b[0] == u.min() and b[-1] == u.max()
    counts, _ = np.histogram(u, b)
    # equal-mass intervals, up to subsampling noise of the quantiles (200k cap not hit)
    assert np.all(np.abs(counts / len(u) - 0.1) < 0.005)
    # ties (discrete scores) are merged rather than giving empty intervals
    tied = quantile_breaks(np.repeat([0.0, 1.0, 2.0], 1000), 10)
    assert np.all(np.diff(tied) > 0)


@pytest.mark.parametrize(
    "breaks,degree,mult",
    [
        ([0.0], 3, 1),
        ([0.0, 0.0, 1.0], 3, 1),
        ([0.0, np.nan], 3, 1),
        ([0, 1], 3, 5),
        ([0, 1], -1, 1),
    ],
)
def test_bad_knots_are_refused(breaks, degree, mult):
    with pytest.raises(ValueError):
        make_knots(breaks, degree, mult)


def test_mixed_breaks_interpolate_between_quantiles_and_equal_widths():
    """w = 0: the quantile breaks; w = 1: equal widths over [min, max]; between,
    the mixture's quantiles (checked against the mixture's distribution function:
    each interval holds 1/K of its mass, to the linear interpolation of the
    empirical part, O(1/n)); coarse layouts are every (K_fine / K)-th breakpoint."""
    s = np.random.default_rng(1).standard_t(3, 20000)
    np.testing.assert_array_equal(mixed_breaks(s, 10, 0.0), quantile_breaks(s, 10))
    np.testing.assert_allclose(mixed_breaks(s, 10, 1.0), np.linspace(s.min(), s.max(), 11))
    b = mixed_breaks(s, 8, 0.5)
    assert np.all(np.diff(b) > 0) and b[0] == s.min() and b[-1] == s.max()
    mass = 0.5 * np.mean(s[:, None] <= b[None], axis=0) + 0.5 * (b - s.min()) / np.ptp(s)
    np.testing.assert_allclose(mass, np.linspace(0, 1, 9), atol=2 / s.size)
    for w in (0.5, 1.0):
        np.testing.assert_allclose(mixed_breaks(s, 48, w)[::6], mixed_breaks(s, 8, w), rtol=1e-12)
    with pytest.raises(ValueError, match="uniform_weight"):
        mixed_breaks(s, 8, 1.5)


@pytest.mark.parametrize("w", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_mixed_breaks_merge_the_ties_of_discrete_scores(w):
    """Scores of a discrete token law (Rademacher tokens: products of sums of +-1)
    take few values, each a jump of the mixture's distribution function; breakpoints
    that fall in one jump coincide and are merged, so make_knots accepts the layout.
    With weight on equal widths (w = 0.9, 1) the jumps are small and nothing ties."""
    rng = np.random.default_rng(3)
    s = rng.choice([-1.0, 1.0], (4000, 3)).sum(1) * rng.choice([-1.0, 1.0], (4000, 3)).sum(1)
    b = mixed_breaks(s, 48, w)
    assert np.all(np.diff(b) > 0) and b[0] == s.min() and b[-1] == s.max()
    assert make_knots(b, 3, 1).n_intervals == b.size - 1
    # every distinct quantile of the mixture is kept, each once
    q = np.unique(np.interp(np.linspace(0, 1, 49), *_mixture_cdf(s, w)))
    np.testing.assert_array_equal(b, q)
    if w <= 0.5:  # the jumps hold several of the 48 quantiles: fewer intervals than asked
        assert b.size < 49


def _mixture_cdf(s, w):
    """(F, u): the mixture's distribution function at the sorted scores (as mixed_breaks)."""
    u = np.sort(np.concatenate([[s.min(), s.max()], s]))
    F = (1 - w) * np.arange(u.size) / (u.size - 1) + w * (u - u[0]) / (u[-1] - u[0])
    return F, u


def test_flat_tail_takes_half_the_slope_exactly_on_the_outer_knots():
    """The kink of the flat tail: slope inside, none outside, half of it on the knot
    (JAX's ``clip`` convention, and what central differences give there)."""
    knots, coef, _ = _case(11, 3, 1, tail="flat")
    b = np.asarray(knots.breaks)
    c = jnp.asarray(coef)
    poly = make_knots(b, 3, 1, "poly")
    for edge, step in ((b[0], -1e-3), (b[-1], 1e-3)):
        slope = float(jax.grad(lambda x: spline_eval(x, c, poly))(edge))
        assert float(jax.grad(lambda x: spline_eval(x, c, knots))(edge)) == pytest.approx(
            0.5 * slope, rel=1e-12
        )
        assert float(jax.grad(lambda x: spline_eval(x, c, knots))(edge + step)) == 0.0
        assert float(jax.grad(lambda x: spline_eval(x, c, knots))(edge - step)) == pytest.approx(
            float(jax.grad(lambda x: spline_eval(x, c, poly))(edge - step)), rel=1e-12
        )


@pytest.mark.parametrize("degree, mult, K", [(0, 1, 1), (1, 1, 4), (3, 1, 9), (3, 4, 3), (5, 2, 6)])
def test_host_knot_vector_is_the_full_knot_vector(degree, mult, K):
    knots = make_knots(np.sort(np.random.default_rng(K).normal(size=K + 1)), degree, mult)
    t = host_knot_vector(knots)
    assert t.shape == (n_basis(knots) + degree + 1,)
    np.testing.assert_array_equal(t, np.asarray(full_knot_vector(knots)))
