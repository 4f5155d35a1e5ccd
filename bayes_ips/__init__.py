"""bayes_ips: learning the pairwise interactions of attention-style models.

The model: ``Y_i = 1/(N-1) sum_{j != i} phi(X_i^T A X_j) + noise`` with ``A = U V^T`` of
low rank and ``phi`` a spline.  Only ``g(x, y) = phi(x^T A y)`` is identifiable.

float64 is not switched on by importing this package: entry points (the CLI,
scripts, tests) call :func:`enable_x64`.
"""

__version__ = "0.1.0"


def enable_x64() -> None:
    """Switch JAX to float64 (call once, before creating arrays)."""
    import jax

    jax.config.update("jax_enable_x64", True)


__all__ = ["__version__", "enable_x64"]
