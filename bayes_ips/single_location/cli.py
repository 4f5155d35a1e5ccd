"""The ``bayes-ips slr`` commands (single-location regression)::

    bayes-ips slr simulate --M 2000 --d 400 [--L 10 --gamma 0.7071 --noise 0.1] --seed 0 \\
        --out data.npz
    bayes-ips slr fit data.npz [--attention erf|softmax|linear --steps 3000 --lr 0.5
        --lambda-schedule constant --lambda0 L0 --lambda1 L1 --batch-size B --init moment|sphere
        --no-refit-lambda] --seed 0 --out fit.nc
    bayes-ips slr sample data.npz [--attention erf|softmax|linear --chains 2 --warmup 500
        --draws 500 --init pgd|prior --diagonal-mass --lambda-from prior|pgd]
        --seed 0 --out post.nc
    bayes-ips slr predict FIT --inputs X.npz --out y.npz
    bayes-ips slr evaluate FIT --truth data.npz [--n 20000] [--json res.json]

``FIT`` is a PGD fit or a posterior; it records its attention (default erf), which
``predict`` and ``evaluate`` use.  Bad input prints one line,
``bayes-ips: error: ...``, exits with status 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from bayes_ips.cli_common import finite_float, out_path
from bayes_ips.run_options import positive_int

__all__ = ["add_commands"]


def _pgd_config(args: argparse.Namespace):
    from bayes_ips.single_location.pgd import PGDConfig

    return PGDConfig(
        steps=args.steps,
        lr=args.lr,
        lambda_schedule=args.lambda_schedule,
        lambda0=args.lambda0,
        lambda1=args.lambda0 if args.lambda1 is None else args.lambda1,
        batch_size=args.batch_size,
        init=args.init,
        refit_lambda=not args.no_refit_lambda,
        attention=args.attention,
    ).validate()


def cmd_simulate(args: argparse.Namespace) -> int:
    import jax

    from bayes_ips.single_location.io import SLRDataset, save_dataset
    from bayes_ips.single_location.simulate import make_truth, simulate

    out_path(args.out, (".npz",))
    k_truth, k_data = jax.random.split(jax.random.PRNGKey(args.seed))
    truth = make_truth(k_truth, args.d, L=args.L, gamma=args.gamma, noise_sd=args.noise)
    X, Y, J0 = simulate(k_data, truth, args.M)
    config = {k: v for k, v in vars(args).items() if k not in ("func", "command", "slr_command")}
    meta = {"seed": args.seed, "command": "slr simulate", "config": config}
    save_dataset(args.out, SLRDataset(np.asarray(X), np.asarray(Y), truth, np.asarray(J0), meta))
    print(
        f"wrote {args.out}: X {tuple(X.shape)}, Y {tuple(Y.shape)}; L = {truth.L}, "
        f"d = {truth.d}, gamma = {truth.gamma:.4g}, noise sd = {truth.noise_sd:.4g}"
    )
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import jax

    from bayes_ips.single_location.io import load_dataset, save_pgd_fit
    from bayes_ips.single_location.pgd import fit_pgd

    out_path(args.out, (".nc",))
    cfg = _pgd_config(args)
    data = load_dataset(args.data)
    fit = fit_pgd(jax.random.PRNGKey(args.seed), data.X, data.Y, cfg, seed=args.seed)
    save_pgd_fit(args.out, fit)
    batches = "full batch" if cfg.batch_size is None else f"batches of {cfg.batch_size}"
    print(
        f"wrote {args.out}: PGD {cfg.steps} steps ({cfg.attention} attention, {batches}, "
        f"{cfg.init} start), "
        f"lambda = {fit.lam:.4g}, train MSE {fit.info['train_loss']:.4g}, "
        f"{fit.info['wall_time_s']:.1f} s"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import jax

    from bayes_ips.arviz_io import save_inference_data
    from bayes_ips.single_location.io import load_dataset
    from bayes_ips.single_location.posterior import SLRSamplerConfig, sample_posterior

    out_path(args.out, (".nc",))
    cfg = SLRSamplerConfig(
        chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        init=args.init,
        dense_mass=not args.diagonal_mass,
        attention=args.attention,
        lambda_from=args.lambda_from,
    ).validate()
    data = load_dataset(args.data)
    idata, post, chains = sample_posterior(
        jax.random.PRNGKey(args.seed), data.X, data.Y, cfg, truth=data.truth, seed=args.seed
    )
    save_inference_data(args.out, idata)
    modes = json.loads(idata.attrs["modes"])
    print(
        f"wrote {args.out}: {cfg.attention} attention, {cfg.chains} chains x {cfg.draws} draws, "
        f"{int(chains.extra['diverging'].sum())} divergences, "
        f"{chains.extra['num_steps'].mean():.1f} leapfrog steps per draw, "
        f"{chains.wall_time_s:.1f} s; chains in {len(modes['groups'])} mode group(s)"
    )
    return 0


def _load_fit(path: str):
    """('slr_pgd', PGDFit) or ('slr_posterior', (idata, SLRPosterior)) by the file's kind."""
    from bayes_ips.single_location.io import fit_kind, load_pgd_fit

    kind = fit_kind(path)
    if kind == "slr_pgd":
        return kind, load_pgd_fit(path)
    from bayes_ips.arviz_io import load_inference_data
    from bayes_ips.single_location.posterior import SLRPosterior

    idata = load_inference_data(path)
    return kind, (idata, SLRPosterior.from_idata(idata))


def cmd_predict(args: argparse.Namespace) -> int:
    from bayes_ips.io import save_npz, to_json
    from bayes_ips.single_location.io import load_inputs

    out_path(args.out, (".npz",))
    kind, obj = _load_fit(args.fit)
    d = len(obj.k) if kind == "slr_pgd" else obj[1].k.shape[-1]
    X = load_inputs(args.inputs, d)
    meta = {"command": "slr predict", "fit": args.fit, "inputs": args.inputs, "kind": kind}
    if kind == "slr_pgd":
        meta["fit_seed"] = obj.seed
        save_npz(args.out, y=np.asarray(obj.predict(X)), meta=np.array(to_json(meta)))
        print(f"wrote {args.out}: y for {len(X)} inputs")
        return 0
    idata, post = obj
    meta["fit_seed"] = int(idata.attrs.get("seed", -1))
    lo, hi = post.band(X, 0.9)
    save_npz(args.out, y=post.predict(X), y_lo=lo, y_hi=hi, meta=np.array(to_json(meta)))
    print(f"wrote {args.out}: posterior mean y and 90% band (y_lo, y_hi) for {len(X)} inputs")
    return 0


def _directions(kind: str, obj) -> tuple[np.ndarray, np.ndarray]:
    if kind == "slr_pgd":
        return np.asarray(obj.k), np.asarray(obj.v)
    return obj[1].mean_directions()


def cmd_evaluate(args: argparse.Namespace) -> int:
    import jax

    from bayes_ips.errors import InputError
    from bayes_ips.io import atomic_write
    from bayes_ips.single_location.attention import attend
    from bayes_ips.single_location.io import load_dataset
    from bayes_ips.single_location.risk import excess_risk, oracle_lambda
    from bayes_ips.single_location.sphere import align, overlaps, symmetries

    if args.json:
        out_path(args.json, (".json",))
    kind, obj = _load_fit(args.fit)
    truth = load_dataset(args.truth, need_truth=True).truth
    k, v = _directions(kind, obj)
    if len(k) != truth.d:
        raise InputError(f"the fit has d = {len(k)}, the truth d = {truth.d}")
    predict = obj.predict if kind == "slr_pgd" else obj[1].predict
    lam = obj.lam if kind == "slr_pgd" else float(np.mean(obj[1].lam))
    att = obj.attention if kind == "slr_pgd" else obj[1].attention
    key = jax.random.PRNGKey(args.seed)
    res = excess_risk(key, predict, truth, args.n)

    def at_truth(lam_):
        return lambda X: attend(X, truth.k, truth.v, lam_, att)

    oracle = excess_risk(key, at_truth(lam), truth, args.n)
    # the best lambda is chosen on other draws than those it is evaluated on
    lam_best = oracle_lambda(jax.random.fold_in(key, 1), truth, att, args.n)
    best = excess_risk(key, at_truth(lam_best), truth, args.n)
    ov = overlaps(k, v, truth.k, truth.v, att)
    swap = overlaps(k, v, truth.v, truth.k)
    out = {
        "fit": args.fit,
        "truth": args.truth,
        "kind": kind,
        "attention": att,
        "seed": args.seed,
        **ov,
        "swap_kappa": abs(swap["kappa"]),
        "swap_nu": abs(swap["nu"]),
        "lambda": lam,
        **res.as_dict(),
        "oracle_excess": oracle.excess,
        "oracle_excess_se": oracle.excess_se,
        "oracle_best_lambda": lam_best,
        "oracle_best_excess": best.excess,
        "oracle_best_excess_se": best.excess_se,
    }
    what = "PGD fit" if kind == "slr_pgd" else "posterior mean direction"
    aligned = {"erf": "sign-aligned", "softmax": "no symmetry", "linear": "aligned"}[att]
    print(
        f"{what} ({att} attention): kappa = {ov['kappa']:+.4f}, nu = {ov['nu']:+.4f} ({aligned}: "
        f"{ov['kappa_aligned']:.4f}, {ov['nu_aligned']:.4f}); swapped overlaps |<k, v*>| = "
        f"{out['swap_kappa']:.4f}, |<v, k*>| = {out['swap_nu']:.4f}; lambda = {lam:.4g}"
    )
    if kind == "slr_posterior":
        post = obj[1]
        k_draws = post.k
        if "swap" in symmetries(att):  # each draw as the member of its orbit nearest the truth
            d = truth.d
            a = align(post.k.reshape(-1, d), post.v.reshape(-1, d), att, truth.k, truth.v)
            k_draws = a.k.reshape(post.k.shape)
        kappa = np.abs(np.einsum("cdi,i->cd", k_draws, truth.k))
        q = np.quantile(kappa, [0.05, 0.5, 0.95])
        out["abs_kappa_draws"] = {"q05": q[0], "median": q[1], "q95": q[2]}
        print(f"posterior of |kappa|: median {q[1]:.4f}, 90% interval [{q[0]:.4f}, {q[2]:.4f}]")
    print(
        f"risk {res.risk:.5g} +- {res.risk_se:.2g}; Bayes risk {res.bayes_risk:.5g} +- "
        f"{res.bayes_risk_se:.2g}; excess risk {res.excess:.5g} +- {res.excess_se:.2g} "
        f"(paired MC s.e., {res.n} fresh samples); T at (k*, v*, lambda): excess "
        f"{oracle.excess:.5g} +- {oracle.excess_se:.2g}; at (k*, v*) and its best lambda "
        f"{lam_best:.4g}: excess {best.excess:.5g} +- {best.excess_se:.2g}"
    )
    if args.json:
        with atomic_write(args.json) as tmp, open(tmp, "w") as f:
            json.dump(out, f, default=float, indent=2)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``slr`` command group to the ``bayes-ips`` subparsers ``sub``."""
    group = sub.add_parser("slr", help="single-location regression (arXiv 2410.01537)")
    slr = group.add_subparsers(dest="slr_command", required=True, parser_class=type(group))

    s = slr.add_parser("simulate", help="simulate a dataset with its truth")
    s.add_argument("--M", type=positive_int, required=True, help="number of samples")
    s.add_argument("--d", type=positive_int, required=True, help="token dimension (>= 2)")
    s.add_argument("--L", type=positive_int, default=10, help="tokens per sample")
    s.add_argument("--gamma", type=finite_float, default=math.sqrt(0.5), help="signal token sd")
    s.add_argument("--noise", type=finite_float, default=0.1, help="output noise sd")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_simulate)

    f = slr.add_parser("fit", help="fit (k, v) by projected gradient descent on the sphere")
    f.add_argument("data")
    f.add_argument("--attention", default="erf", help="erf (default) | softmax | linear")
    f.add_argument("--steps", type=positive_int, default=3000)
    f.add_argument("--lr", type=finite_float, default=0.5, help="step size, in units of 1/C")
    f.add_argument(
        "--lambda-schedule", default="constant", help="constant | linear | geometric | inverse"
    )
    f.add_argument("--lambda0", type=finite_float, help="first lambda (default: 0.1; softmax: 1)")
    f.add_argument("--lambda1", type=finite_float, help="last lambda (default: lambda0)")
    f.add_argument("--batch-size", type=positive_int, help="SGD batch size (default: full batch)")
    f.add_argument("--init", default="moment", help="moment (default) | sphere")
    f.add_argument("--no-refit-lambda", action="store_true", help="predict with the last lambda")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True)
    f.set_defaults(func=cmd_fit)

    m = slr.add_parser("sample", help="posterior inference by NUTS")
    m.add_argument("data")
    m.add_argument("--attention", default="erf", help="erf (default) | softmax | linear")
    m.add_argument("--chains", type=positive_int, default=2)
    m.add_argument("--warmup", type=positive_int, default=500)
    m.add_argument("--draws", type=positive_int, default=500)
    m.add_argument("--init", default="pgd", help="pgd (default) | prior")
    m.add_argument("--diagonal-mass", action="store_true", help="diagonal mass matrix")
    m.add_argument(
        "--lambda-from",
        default="prior",
        help="prior (default: lambda sampled) | pgd (lambda fixed at the PGD fit's)",
    )
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True)
    m.set_defaults(func=cmd_sample)

    q = slr.add_parser("predict", help="predict Y for new inputs")
    q.add_argument("fit")
    q.add_argument("--inputs", required=True, help=".npz with X (P, L, d)")
    q.add_argument("--out", required=True)
    q.set_defaults(func=cmd_predict)

    e = slr.add_parser("evaluate", help="overlaps and excess risk against the truth")
    e.add_argument("fit")
    e.add_argument("--truth", required=True, help="a simulated data file")
    e.add_argument("--n", type=positive_int, default=20000, help="fresh Monte Carlo samples")
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--json", help="also write the result to this .json")
    e.set_defaults(func=cmd_evaluate)
