"""Test configuration: float64 everywhere, switched on explicitly here."""

import jax

jax.config.update("jax_enable_x64", True)
