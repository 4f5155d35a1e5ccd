"""Single-location regression (Marion, Berthier, Biau, Boyer, arXiv 2410.01537).

``L`` tokens in ``R^d``; one of them, at a uniform latent position ``J0``, is drawn
around ``sqrt(d/2) k*`` and carries the output ``Y = <x_{J0}, v*> + eps xi``.  The
predictor is one attention-like layer, ``T(X) = sum_l w_l <x_l, v>`` with unit ``k``
and ``v`` and the weights of erf (``erf(lambda <x_l, k>)``, the paper's, the default),
softmax (``softmax_l(lambda <x_l, k>)``) or linear (``lambda <x_l, k>``) attention.

Modules: ``simulate`` (truth and data), ``attention`` (T), ``bayes`` (the
Bayes-optimal predictor), ``risk`` (Monte Carlo risks), ``population`` (the
closed-form risk of erf attention), ``sphere`` (the sphere and the symmetries of
each attention), ``pgd`` (the paper's estimator), ``posterior`` (NUTS on
``bayes_ips.models.single_location``), ``io`` and ``cli``.  Nothing here switches
float64 on: call :func:`bayes_ips.enable_x64` first.

The names below are re-exported; the NumPyro side (``SLRSamplerConfig``,
``sample_posterior``, ``SLRPosterior``) is imported from ``.posterior``, so that
this namespace needs no NumPyro and the model module can import ``.attention``.
"""

import importlib
import sys
import types

# name -> the submodule that defines it.  Imported on first use (PEP 562), so that the
# command line, which registers the `slr` commands from ``.cli``, does not load JAX,
# SciPy's integrators and the closed-form risk before a command needs them.
_EXPORTS = {
    "ATTENTIONS": "attention",
    "attend": "attention",
    "erf_attention": "attention",
    "bayes_conditional_variance": "bayes",
    "bayes_predict": "bayes",
    "position_log_posterior": "bayes",
    "PGDConfig": "pgd",
    "PGDFit": "pgd",
    "fit_pgd": "pgd",
    "erf_population_risk": "population",
    "ExcessRisk": "risk",
    "RiskEstimate": "risk",
    "bayes_risk": "risk",
    "excess_risk": "risk",
    "oracle_lambda": "risk",
    "risk": "risk",
    "SLRTruth": "simulate",
    "make_truth": "simulate",
    "simulate": "simulate",
    "overlaps": "sphere",
}


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Namespace(types.ModuleType):
    """Importing a submodule binds it on the package under its own name, and two of
    them (``simulate``, ``risk``) share that name with the function exported here:
    the function wins, as it did when the names were imported eagerly."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Namespace

__all__ = sorted(_EXPORTS)  # the names above, in one place
