"""The sphere helpers: overlaps with the sign symmetry, and the alignment of draws."""

import jax
import numpy as np

from bayes_ips.single_location.sphere import align_signs, overlaps, random_unit, retract, tangent


def test_random_unit_tangent_and_retract():
    x = random_unit(jax.random.PRNGKey(0), 7, (100,))
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=1e-12)
    g = np.random.default_rng(0).normal(size=7)
    assert abs(float(tangent(x[0], g) @ x[0])) < 1e-12
    np.testing.assert_allclose(np.linalg.norm(retract(x[0] + 0.3 * g)), 1.0, rtol=1e-12)


def test_overlaps_report_raw_and_flip_aligned_values():
    k, v = np.eye(3)[0], np.eye(3)[1]
    o = overlaps(-2 * k, -v, k, v)  # k is normalised: kappa = -1
    assert o["kappa"] == -1.0 and o["nu"] == -1.0 and o["sign"] == -1.0
    assert o["kappa_aligned"] == 1.0 and o["nu_aligned"] == 1.0


def test_align_signs_per_chain_then_to_the_reference():
    """Chain 0 near (a, b), chain 1 its mirror, chain 2 near (b, a): orthogonal to a."""
    rng = np.random.default_rng(1)
    d, D = 6, 200
    a, b = np.eye(d)[0], np.eye(d)[1]

    def chain(k0, v0):
        k = k0 + 0.05 * rng.normal(size=(D, d))
        v = v0 + 0.05 * rng.normal(size=(D, d))
        return k / np.linalg.norm(k, axis=1, keepdims=True), v / np.linalg.norm(
            v, axis=1, keepdims=True
        )

    ks, vs = zip(chain(a, b), chain(-a, -b), chain(b, a), strict=True)
    k, v = np.stack(ks), np.stack(vs)
    # in chain 2, <k, a> is noise around 0: per-draw signs against a would be random
    assert 0.2 < np.mean(k[2] @ a > 0) < 0.8
    ka, va, sign, k_ref = align_signs(k, v, a)
    assert np.all(ka[:2] @ a > 0.9) and np.all(va[:2] @ b > 0.9)  # mirrored chains agree
    assert np.all(sign[0] == 1) and np.all(sign[1] == -1)
    assert abs(np.mean(ka[2] @ b)) > 0.95  # chain 2 is consistent: one sign for all draws
    np.testing.assert_array_equal(ka, sign[..., None] * k)
    np.testing.assert_array_equal(va, sign[..., None] * v)
    # default reference: the principal direction, largest entry positive
    *_, ref = align_signs(k[:2], v[:2])
    assert abs(abs(ref @ a) - 1) < 1e-2 and ref[np.argmax(np.abs(ref))] > 0
