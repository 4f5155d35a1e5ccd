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

from bayes_ips.single_location.attention import ATTENTIONS as ATTENTIONS
from bayes_ips.single_location.attention import attend as attend
from bayes_ips.single_location.attention import erf_attention as erf_attention
from bayes_ips.single_location.bayes import bayes_conditional_variance as bayes_conditional_variance
from bayes_ips.single_location.bayes import bayes_predict as bayes_predict
from bayes_ips.single_location.bayes import position_log_posterior as position_log_posterior
from bayes_ips.single_location.pgd import PGDConfig as PGDConfig
from bayes_ips.single_location.pgd import PGDFit as PGDFit
from bayes_ips.single_location.pgd import fit_pgd as fit_pgd
from bayes_ips.single_location.population import erf_population_risk as erf_population_risk
from bayes_ips.single_location.risk import ExcessRisk as ExcessRisk
from bayes_ips.single_location.risk import RiskEstimate as RiskEstimate
from bayes_ips.single_location.risk import bayes_risk as bayes_risk
from bayes_ips.single_location.risk import excess_risk as excess_risk
from bayes_ips.single_location.risk import oracle_lambda as oracle_lambda
from bayes_ips.single_location.risk import risk as risk
from bayes_ips.single_location.simulate import SLRTruth as SLRTruth
from bayes_ips.single_location.simulate import make_truth as make_truth
from bayes_ips.single_location.simulate import simulate as simulate
from bayes_ips.single_location.sphere import overlaps as overlaps

__all__ = [
    "ATTENTIONS",
    "ExcessRisk",
    "PGDConfig",
    "PGDFit",
    "RiskEstimate",
    "SLRTruth",
    "attend",
    "bayes_conditional_variance",
    "bayes_predict",
    "bayes_risk",
    "erf_attention",
    "erf_population_risk",
    "excess_risk",
    "fit_pgd",
    "make_truth",
    "oracle_lambda",
    "overlaps",
    "position_log_posterior",
    "risk",
    "simulate",
]
