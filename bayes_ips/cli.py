"""The ``bayes-ips`` command line.

Commands (a stable contract: other tools drive the package through it)::

    bayes-ips simulate --M 2000 --N 8 --d 5 --rank 1 --phi tanh --noise 0.1 \\
        --tokens cube [--heads H] --seed 0 --out data.npz
    bayes-ips fit-erm data.npz --rank 1 [--degree s] [--n-basis K] [--restarts R] \\
        [--seed S] --out erm.nc
    bayes-ips predict FIT --pairs pairs.npz --out g.npz
    bayes-ips evaluate FIT --truth data.npz
    bayes-ips plot FIT [--truth data.npz] --out fig.png
    bayes-ips sample data.npz --rank 1 [--explicit] [--chains C] ... --out post.nc
    bayes-ips diagnose post.nc --out-dir DIR [--truth data.npz] [--strict]
    bayes-ips study CONFIG.toml --out-dir DIR [--processes N | --workers N | --scheduler ADDR]
                    [--cell-timeout SECONDS]

Bad input prints one line, ``bayes-ips: error: ...``, and exits with status 2;
no output file is written (every writer is atomic).  Set ``BAYES_IPS_DEBUG=1``
to get tracebacks of unexpected errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from bayes_ips.cli_common import OneLineParser, fail, finite_float, out_path
from bayes_ips.run_options import add_run_arguments, positive_int
from bayes_ips.single_location.cli import add_commands as add_slr_commands

__all__ = ["main"]


# ----------------------------------------------------------------------------- commands


def cmd_simulate(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from bayes_ips.errors import InputError
    from bayes_ips.io import Dataset, save_dataset
    from bayes_ips.simulate import TokenLaw, make_truth, simulate

    out_path(args.out, (".npz",))
    if args.beta is not None and not args.beta > 0:
        raise InputError(f"beta must be > 0, got {args.beta}")
    A = None
    if args.A_file:
        from bayes_ips.io import _open_npz

        z = _open_npz(args.A_file)
        if "A" not in z:
            raise InputError(f"{args.A_file} has no 'A' array")
        A = z["A"]
    law = TokenLaw(args.tokens, args.d, rho=args.rho or 0.0)
    families = [f.strip() for f in args.phi.split(",")]
    phi = args.phi if len(families) == 1 else families  # one family for every head
    key = jax.random.PRNGKey(args.seed)
    k_truth, k_data = jax.random.split(key)
    truth = make_truth(
        k_truth,
        args.d,
        args.rank,
        phi=phi,
        beta=args.beta,
        tokens=law,
        noise_sd=args.noise,
        noise=args.noise_law,
        A=A,
        heads=args.heads,
    )
    X, Y = simulate(k_data, truth, args.M, args.N)
    # one head: the config of the single-head command, without a "heads" key
    drop = ("func", "command") if args.heads >= 2 else ("func", "command", "heads")
    config = {k: v for k, v in vars(args).items() if k not in drop}
    meta = {"seed": args.seed, "command": "simulate", "config": config}
    save_dataset(args.out, Dataset(np.asarray(X), np.asarray(Y), truth, meta))
    if args.heads >= 2:
        phis = truth.phis
        what = (
            f"{truth.n_heads} heads, phi* = {' + '.join(p.family for p in phis)} "
            f"(beta = {', '.join(str(p.beta) for p in phis)})"
        )
    else:
        what = f"phi* = {truth.phi.family} (beta = {truth.phi.beta})"
    print(
        f"wrote {args.out}: X {tuple(X.shape)}, Y {tuple(Y.shape)}; {what}, "
        f"tokens = {law.family}, noise sd = {args.noise}"
    )
    return 0


def _erm_config(args: argparse.Namespace, d: int):
    from bayes_ips.erm import ERMConfig
    from bayes_ips.errors import InputError

    degree = args.degree
    cfg = ERMConfig(
        rank=args.rank,
        degree=degree,
        k_rule=args.k_rule,
        multiplicity=args.knot_multiplicity,
        beta=args.beta,
        restarts=args.restarts,
        knot_placement=args.knot_placement,
    )
    s = cfg.resolved_degree()
    n_int = args.n_intervals
    if args.n_basis is not None:
        if n_int is not None:
            raise InputError("give --n-basis or --n-intervals, not both")
        m = args.knot_multiplicity
        extra = args.n_basis - (s + 1)
        if extra < 0 or extra % m:
            raise InputError(
                f"--n-basis {args.n_basis} is impossible for degree {s} and knot multiplicity "
                f"{m}: it must be {s + 1} + {m} * (K - 1) for K >= 1 intervals"
            )
        n_int = extra // m + 1
    import dataclasses

    return dataclasses.replace(cfg, n_intervals=n_int).validate(d)


def cmd_fit_erm(args: argparse.Namespace) -> int:
    import jax

    from bayes_ips.erm import fit_erm
    from bayes_ips.io import load_dataset, save_fit

    out_path(args.out, (".nc",))
    data = load_dataset(args.data)
    cfg = _erm_config(args, data.X.shape[2])
    if args.heads != 1:
        return _fit_erm_heads(args, data, cfg)
    t0 = time.perf_counter()
    fit = fit_erm(jax.random.PRNGKey(args.seed), data.X, data.Y, cfg, seed=args.seed, progress=True)
    fit.info["wall_time_s"] = time.perf_counter() - t0
    save_fit(args.out, fit)
    tc = fit.info["theory_condition"]
    cond = (
        "unknown (beta not given)"
        if tc["holds"] is None
        else (
            f"{'holds' if tc['holds'] else 'FAILS'}: r d = {tc['lhs']} vs "
            f"(M / log M)^(1/(2 beta + 1)) = {tc['rhs']:.2f}"
        )
    )
    w = fit.info.get("uniform_weight", 0.0)
    placed = "quantile knots" if w == 0 else f"knots mixed with uniform weight {w:g}"
    print(
        f"wrote {args.out}: K = {fit.info['K']} intervals ({fit.info['k_rule']}, {placed}), "
        f"degree {fit.info['degree']}, train MSE {fit.info['train_mse']:.4g}, "
        f"sigma_hat {fit.info['sigma_hat']:.4g}, {fit.info['wall_time_s']:.1f} s; "
        f"theory condition {cond}; coercivity c_H {fit.info['c_H']:.4g} "
        f"(1/(N-1) = {1 / (fit.info['N'] - 1):.4g})"
    )
    return 0


def _fit_erm_heads(args: argparse.Namespace, data, cfg) -> int:
    """``fit-erm --heads H`` with H >= 2: :func:`bayes_ips.multihead.fit_erm_heads`."""
    import jax

    from bayes_ips.io import save_fit
    from bayes_ips.multihead import check_heads, fit_erm_heads

    H = check_heads(args.heads, data.X.shape[2])
    t0 = time.perf_counter()
    fit = fit_erm_heads(
        jax.random.PRNGKey(args.seed), data.X, data.Y, cfg, heads=H, seed=args.seed, progress=True
    )
    fit.info["wall_time_s"] = time.perf_counter() - t0
    save_fit(args.out, fit)
    cos = fit.info["head_cosines"]
    worst = max((cos[h][g] for h in range(H) for g in range(h)), default=0.0)
    shares = ", ".join(f"{x:.2f}" for x in fit.info["head_share"])
    print(
        f"wrote {args.out}: {H} heads, K = {fit.info['K']} intervals each "
        f"({fit.info['k_rule']}), train MSE {fit.info['train_mse']:.4g}, "
        f"sigma_hat {fit.info['sigma_hat']:.4g}, {fit.info['wall_time_s']:.1f} s; "
        f"heads' shares of Var(G) {shares}; largest |cos(A_h, A_g)| between heads {worst:.3f}"
    )
    return 0


def _load_any(path: str):
    """('erm', ERMFit) or ('posterior', (idata, Posterior)) by the file's kind."""
    from bayes_ips.io import file_kind, load_fit

    kind = file_kind(path)
    if kind == "erm":
        return kind, load_fit(path)
    from bayes_ips.arviz_io import load_inference_data, posterior_from_idata

    idata = load_inference_data(path)
    if int(idata.attrs.get("heads", 1)) > 1:
        from bayes_ips.multihead_posterior import heads_posterior_from_idata

        return kind, (idata, heads_posterior_from_idata(idata))
    return kind, (idata, posterior_from_idata(idata))


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from bayes_ips.errors import InputError
    from bayes_ips.io import load_pairs, save_npz

    out_path(args.out, (".npz",))
    kind, obj = _load_any(args.fit)
    if kind == "erm":
        x, y = load_pairs(args.pairs, d=obj.A.shape[-1])
        g = np.asarray(obj.predict(x, y))
        extra = {}
        if args.per_head:
            if np.ndim(obj.A) != 3:
                raise InputError("--per-head needs a multi-head fit (fit-erm --heads H)")
            extra["g_heads"] = np.asarray(obj.predict_heads(x, y))
        save_npz(args.out, g=g, **extra)
        what = " and per-head g_heads (H, P)" if extra else ""
        print(f"wrote {args.out}: g for {len(g)} pairs{what}")
        return 0
    post = obj[1]
    if hasattr(post, "aligned"):  # a multi-head posterior
        x, y = load_pairs(args.pairs, d=post.A.shape[-1])
        lo, hi = post.band(x, y, level=0.9)
        extra = {}
        if args.per_head:
            extra["g_heads"] = post.head_draws(x, y, rao_blackwell=True).mean(axis=(0, 1))
        save_npz(args.out, g=post.predict(x, y), g_lo=lo, g_hi=hi, **extra)
        print(
            f"wrote {args.out}: posterior mean G and 90% band (g_lo, g_hi) for {len(x)} pairs"
            + (", and the aligned heads' posterior means g_heads (H, P)" if extra else "")
        )
        return 0
    if args.per_head:
        raise InputError("--per-head needs a multi-head fit or posterior")
    from bayes_ips.posterior import predict

    x, y = load_pairs(args.pairs, d=post.A.shape[-1])
    res = predict(post, x, y, level=0.9)
    save_npz(args.out, **res)
    print(f"wrote {args.out}: posterior mean g and 90% band (g_lo, g_hi) for {len(x)} pairs")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from bayes_ips.errors import InputError
    from bayes_ips.io import atomic_write, load_dataset
    from bayes_ips.metrics import l2_error, outside_knots

    if args.json:
        out_path(args.json, (".json",))
    kind, obj = _load_any(args.fit)
    data = load_dataset(args.truth, need_truth=True)
    d = obj.A.shape[-1] if kind == "erm" else obj[1].A.shape[-1]
    if data.truth.tokens.d != d:  # tokens.d: a multi-head truth's A is (H, d, d)
        raise InputError(f"the fit has d = {d}, the truth d = {data.truth.tokens.d}")
    # the error on G is defined whatever the heads; the heads are compared only when
    # the fit has as many as the truth
    post_heads = kind != "erm" and hasattr(obj[1], "aligned")
    fit_heads = obj.A.shape[0] if kind == "erm" and np.ndim(obj.A) == 3 else 1
    fit_heads = obj[1].A.shape[2] if post_heads else fit_heads
    true_heads = data.truth.A.shape[0] if np.ndim(data.truth.A) == 3 else 1
    key = jax.random.PRNGKey(args.seed)
    out = {"fit": args.fit, "truth": args.truth, "seed": args.seed, "kind": kind}
    if max(fit_heads, true_heads) > 1:
        out["heads"], out["true_heads"] = fit_heads, true_heads
    if fit_heads > 1 and fit_heads == true_heads and not post_heads:
        from bayes_ips.multihead import heads_report

        out.update(heads_report(key, obj, data.truth, min(args.pairs, 20000)))
    elif fit_heads == 1:
        out.update(_coercivity(kind, obj, data.X))
    if kind == "erm":
        # one head: pairs beyond the outer knots are screened for (a rare stratum
        # whose extrapolation can dominate the error, see bayes_ips.metrics)
        stratum = outside_knots(obj.A, obj.knots) if np.ndim(obj.A) == 2 else None
        res = l2_error(key, obj.predict, data.truth, args.pairs, stratum=stratum)
    elif post_heads:
        post = obj[1]
        res = l2_error(key, post.predict, data.truth, args.pairs)
        from bayes_ips.simulate import g_true, sample_pairs

        x, y = sample_pairs(key, data.truth.tokens, min(args.pairs, 5000))
        errs = ((post.g_draws(x, y) - np.asarray(g_true(data.truth, x, y))) ** 2).mean(-1)
        q = np.quantile(errs, [0.05, 0.5, 0.95])
        out["draw_error"] = {"q05": q[0], "median": q[1], "q95": q[2]}
    else:
        from bayes_ips.posterior import draw_errors, g_draws

        post = obj[1]
        res = l2_error(
            key, lambda x, y: g_draws(post, x, y).mean(axis=(0, 1)), data.truth, args.pairs
        )
        errs = draw_errors(key, post, data.truth, min(args.pairs, 5000))
        q = np.quantile(errs, [0.05, 0.5, 0.95])
        out["draw_error"] = {"q05": q[0], "median": q[1], "q95": q[2]}
    print(
        f"L2(rho) error {res.error:.6g} +- {res.se:.2g} (MC s.e., {res.n_pairs} held-out pairs); "
        f"relative to Var(g*): {res.relative:.4g}"
    )
    if res.n_screened:
        print(
            f"  stratified: {res.n_stratum} pairs with scores beyond the outer knots, found "
            f"among {res.n_screened} screened, weighted by their frequency"
        )
    if "head_permutation" in out:
        print(
            "heads aligned to the truth (permutation "
            f"{out['head_permutation']}): |cos(A_h, A*_h)| "
            + ", ".join(f"{c:.4f}" for c in out["head_cosines_to_truth"])
            + "; centred per-head error / Var(g*_h) "
            + ", ".join(f"{e:.4g}" for e in out["head_relative_errors"])
        )
    elif "c_H" in out:
        print(
            f"coercivity c_H {out['c_H']:.4g} of the fitted space on these tokens "
            f"(>= 1/(N-1) = {out['c_H_iid_bound']:.4g} for i.i.d. tokens, up to Monte Carlo "
            "error)"
        )
    if kind != "erm":
        de = out["draw_error"]
        print(
            f"posterior of ||g_theta - g*||^2: median {de['median']:.4g}, "
            f"90% interval [{de['q05']:.4g}, {de['q95']:.4g}]"
        )
    if args.json:
        with atomic_write(args.json) as tmp, open(tmp, "w") as f:
            json.dump({**res.as_dict(), **out}, f, default=float)
    return 0


def _coercivity(kind: str, obj, X) -> dict:
    """``c_H`` of the fitted space on the tokens ``X`` (:mod:`bayes_ips.coercivity`).

    An ERM fit: its A and basis.  A posterior: the model's basis at the A of its ERM
    reference fit (the A its knots were placed at).
    """
    from bayes_ips.coercivity import coercivity
    from bayes_ips.io import fit_from_reference

    if kind == "erm":
        fit, knots = obj, obj.knots
    else:
        idata, post = obj
        fit = fit_from_reference(idata.attrs.get("erm"), source="the posterior file")
        knots = post.knots
    res = coercivity(X, fit.U, fit.V, knots)
    return {**res.as_dict(), "c_H_iid_bound": 1.0 / (X.shape[1] - 1)}


def cmd_plot(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from bayes_ips.errors import InputError
    from bayes_ips.io import atomic_write, load_dataset, load_fit
    from bayes_ips.pairs import off_diagonal_scores
    from bayes_ips.plots import plot_erm_fit, plot_heads_fit
    from bayes_ips.simulate import HeadsTruth

    out_path(args.out, (".png", ".pdf", ".svg"))
    fit = load_fit(args.fit)
    truth, scores = None, None
    if np.ndim(fit.A) == 3:  # a multi-head fit: a panel per head (aligned to the truth's)
        if args.truth:
            truth = load_dataset(args.truth).truth
            heads = truth.n_heads if isinstance(truth, HeadsTruth) else 1
            if truth is not None and heads != fit.n_heads:
                raise InputError(f"the fit has {fit.n_heads} heads, the truth {heads}")
        fig = plot_heads_fit(fit, truth, key=jax.random.PRNGKey(args.seed))
        with atomic_write(args.out) as tmp:
            fig.savefig(tmp, dpi=130, format=os.path.splitext(args.out)[1][1:])
        print(f"wrote {args.out}")
        return 0
    if args.truth:
        data = load_dataset(args.truth)
        truth = data.truth
        if truth is None:
            scores = off_diagonal_scores(data.X, fit.U, fit.V, 2000)
        elif isinstance(truth, HeadsTruth):
            raise InputError(
                f"plot draws one phi* against the fit; {args.truth} holds a truth of "
                f"{truth.n_heads} heads"
            )
    fig = plot_erm_fit(fit, truth, scores, key=jax.random.PRNGKey(args.seed))
    with atomic_write(args.out) as tmp:
        fig.savefig(tmp, dpi=130, format=os.path.splitext(args.out)[1][1:])
    print(f"wrote {args.out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import jax

    from bayes_ips.arviz_io import save_inference_data
    from bayes_ips.erm import ERMConfig, fit_erm
    from bayes_ips.inference import SamplerConfig, sample_posterior
    from bayes_ips.io import load_dataset

    out_path(args.out, (".nc",))
    data = load_dataset(args.data)
    if args.heads != 1:
        return _sample_heads(args, data)
    cfg = SamplerConfig(
        rank=args.rank,
        method=args.method,
        collapsed=not args.explicit,
        chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        ess_target=args.ess_target,
        init=args.init,
        n_intervals=args.n_intervals,
        basis=args.basis,
    ).validate(data.X.shape[2])
    key = jax.random.PRNGKey(args.seed)
    k_erm, k_post = jax.random.split(key)
    erm = fit_erm(k_erm, data.X, data.Y, ERMConfig(rank=args.rank), seed=args.seed, progress=True)
    idata, post, run = sample_posterior(
        k_post, data.X, data.Y, cfg, erm=erm, seed=args.seed, progress=True
    )
    save_inference_data(args.out, idata)
    modes = idata.attrs["modes"]
    info = run.info
    if run.method == "is":
        how = (
            f"Laplace-PSIS, Pareto k {info['khat']:.2f}, effective size {info['is_ess']:.0f} "
            f"of {info['n_proposals']} proposals"
        )
    elif run.method == "imh":
        how = (
            f"Laplace-IMH, Pareto k {info['khat']:.2f}, acceptance {info['accept_rate']:.2f}, "
            f"{info['n_proposals']} proposals"
        )
    else:
        how = f"NUTS, {int(run.extra['diverging'].sum())} divergences"
        if "fallback" in info:
            how += f" (fell back from the Laplace proposal: {info['fallback']})"
    print(
        f"wrote {args.out}: {cfg.chains} chains x {post.shape[1]} draws "
        f"({'collapsed' if cfg.collapsed else 'explicit'} model, {_basis_words(run)}), "
        f"{how}, {run.wall_time_s:.1f} s; modes: {modes}"
    )
    return 0


def _sample_heads(args: argparse.Namespace, data) -> int:
    """``sample --heads H`` (H >= 2): multi-head ERM, then the collapsed model's posterior."""
    import jax

    from bayes_ips.arviz_io import build_heads_inference_data, save_inference_data
    from bayes_ips.erm import ERMConfig
    from bayes_ips.errors import InputError
    from bayes_ips.multihead import check_heads, fit_erm_heads
    from bayes_ips.multihead_posterior import METHODS, sample_heads_posterior

    H = check_heads(args.heads, data.X.shape[2])
    if args.method not in METHODS or args.explicit or args.init != "erm":
        raise InputError(
            "a multi-head posterior is sampled on the collapsed model from the ERM start: "
            f"--method {'|'.join(METHODS)}, no --explicit, --init erm"
        )
    ERMConfig(rank=args.rank).validate(data.X.shape[2])
    key = jax.random.PRNGKey(args.seed)
    k_erm, k_post = jax.random.split(key)
    erm = fit_erm_heads(
        k_erm, data.X, data.Y, ERMConfig(rank=args.rank), heads=H, seed=args.seed, progress=True
    )
    post = sample_heads_posterior(
        k_post,
        data.X,
        data.Y,
        erm,
        method=args.method,
        chains=args.chains,
        warmup=args.warmup or 300,
        draws=args.draws or 300,
        n_intervals=args.n_intervals,
        seed=args.seed,
        progress=True,
        ess_target=args.ess_target,
        basis=args.basis,
    )
    attrs = {"seed": args.seed, "command": "sample", "rank": args.rank}
    save_inference_data(args.out, build_heads_inference_data(post, attrs=attrs))
    dg, info = post.diagnostics, post.info
    if info["sampler"] == "is":
        how = (
            f"Laplace-PSIS, Pareto k {info['khat']:.2f}, effective size {info['is_ess']:.0f} "
            f"of {info['n_proposals']} proposals"
        )
    else:
        how = f"NUTS, {dg['divergences']} divergences"
        if "fallback" in info:
            how += f" (fell back from the Laplace proposal: {info['fallback']})"
    print(
        f"wrote {args.out}: {H} heads, {args.chains} chains x {post.shape[1]} draws "
        f"(collapsed, K = {dg['n_intervals']} per head), {how}, "
        f"R-hat on G {dg['G']['rhat_max']:.3f}, on the aligned heads "
        f"{dg['heads']['rhat_max']:.3f} ({dg['permuted_chains']} chains relabelled), "
        f"{dg['total_time_s']:.1f} s"
    )
    return 0


def _basis_words(run) -> str:
    """``K = 64 intervals (equal-width knots, by marginal likelihood; ERM's K = 240)``."""
    words = f"K = {run.knots.n_intervals} intervals"
    basis = run.info.get("basis")
    if basis is None:
        return words
    w = basis["uniform_weight"]
    where = {0.0: "quantile", 1.0: "equal-width"}.get(w, f"{w:g} equal-width / quantile")
    prior = ", first-difference prior" if basis.get("penalty_order", 2) == 1 else ""
    return f"{words} ({where} knots{prior}, by marginal likelihood; ERM's K = {basis['erm_K']})"


def cmd_diagnose(args: argparse.Namespace) -> int:
    import numpy as np

    from bayes_ips.arviz_io import load_inference_data, plot_ppc, plot_rank, posterior_from_idata
    from bayes_ips.diagnostics import diagnose
    from bayes_ips.io import atomic_dir, fit_from_reference, load_dataset
    from bayes_ips.pairs import off_diagonal
    from bayes_ips.plots import plot_phi_band
    from bayes_ips.posterior import phi_band
    from bayes_ips.simulate import HeadsTruth

    out = args.out_dir
    idata = load_inference_data(args.post)
    heads = "heads" in idata.attrs  # a multi-head posterior: no phi band, no y_rep
    post = None if heads else posterior_from_idata(idata)
    table, report = diagnose(idata)
    # every file is made in a temporary folder and moved into `out` at the end:
    # a command that fails leaves `out` as it was (not even created)
    with atomic_dir(out) as tmp:
        table.to_csv(os.path.join(tmp, "summary.csv"))
        with open(os.path.join(tmp, "diagnostics.json"), "w") as f:
            json.dump(report, f, indent=2, default=float)
        plots = (("rank.png", plot_rank),)
        if not heads:
            plots += (("ppc.png", plot_ppc),)
        for name, fn in plots:
            fn(idata, os.path.join(tmp, name))
        if heads:
            files = "summary.csv diagnostics.json rank.png"
        else:  # phi band against ERM (and the truth), in the ERM's gauge
            erm = fit_from_reference(idata.attrs.get("erm"), source="the posterior file")
            A_ref = erm.A
            X = idata.constant_data["X"].values
            S = off_diagonal(np.einsum("mid,de,mje->mij", X[:2000], A_ref, X[:2000])).ravel()
            grid = np.linspace(*np.quantile(S, [0.005, 0.995]), 300)
            band = phi_band(post, grid, A_ref)
            truth = load_dataset(args.truth).truth if args.truth else None
            if isinstance(truth, HeadsTruth):  # no single phi* to draw in the band
                truth = None
            fig = plot_phi_band(band, grid, erm=erm, truth=truth, A_ref=A_ref, scores=S)
            fig.savefig(os.path.join(tmp, "phi_band.png"), dpi=130, format="png")
            files = "summary.csv diagnostics.json rank.png ppc.png phi_band.png"
    return _report_diagnosis(args, out, table, report, files)


def _report_diagnosis(args, out: str, table, report: dict, files: str) -> int:
    """Print the table and the verdict of :func:`bayes_ips.diagnostics.diagnose`; exit code."""
    print(table.to_string(max_rows=20))
    if report["sampler"] == "is":
        how = f"Pareto k {report['khat']:.2f}, effective size {report['is_ess']:.0f}"
    elif report["sampler"] == "imh":
        how = f"Pareto k {report['khat']:.2f}, acceptance {report['accept_rate']:.2f}"
    else:
        how = (
            f"divergences {report['divergences']}, max tree depth {report['tree_depth_max']}, "
            f"E-BFMI {', '.join(f'{b:.2f}' for b in report['bfmi'])}"
        )
    print(
        f"{report['sampler']}: {how}, R-hat max {report['rhat_max']:.3f} "
        f"({len(report['rhat_flagged'])} above their bound), "
        f"bulk ESS min {report['ess_bulk_min']:.0f}"
    )
    print(f"wrote {out}/: {files}")
    if report["problems"]:
        print("NOT CONVERGED:", file=sys.stderr)
        for p in report["problems"]:
            print(f"  - {p}", file=sys.stderr)
        return 3 if args.strict else 0
    print("no convergence problems found")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from bayes_ips.study.analysis import run_analysis
    from bayes_ips.study.report import final_table

    out = run_analysis(
        args.config,
        args.out_dir,
        kind="study",
        processes=args.processes,
        workers=args.workers,
        scheduler=args.scheduler,
        attempts=args.attempts,
        only=args.only,
        report_only=args.report_only,
        cell_timeout=args.cell_timeout,
    )
    result = out["result"]
    n_cells = len(result.records) + len(result.failures) + result.n_missing
    print(
        f"{len(result.records)} of {n_cells} cells finished ({result.n_reused} reused, "
        f"{result.n_computed} computed now, backend {result.backend}), "
        f"{result.wall_time_s:.1f} s"
        + (f"; {result.n_missing} not run (--report-only)" if result.n_missing else "")
    )
    if out["rows"]:
        print(final_table(out["rows"], out["band_rows"]))
    elif out["summary"]:
        print(out["summary"])
    if out["paths"]:
        names = ["results.nc", "results.csv"] + [os.path.basename(p) for p in out["paths"]]
        print(f"wrote {args.out_dir}/: {' '.join(names)}")
    if result.failures:
        print(
            f"{len(result.failures)} cell(s) FAILED (rerun the command to retry them):",
            file=sys.stderr,
        )
        for f in result.failures:
            print(f"  - {f['cell_id']}: {f['error']} ({f['attempts']} attempts)", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="bayes-ips", description="Learn pairwise interactions of attention-style IPS."
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    s = sub.add_parser("simulate", help="simulate a dataset with its truth")
    s.add_argument("--M", type=positive_int, required=True, help="number of samples")
    s.add_argument("--N", type=positive_int, required=True, help="tokens per sample (>= 2)")
    s.add_argument("--d", type=positive_int, required=True, help="token dimension")
    s.add_argument("--rank", type=positive_int, default=1)
    s.add_argument(
        "--phi",
        default="tanh",
        help="tanh | sin | holder | bspline | weierstrass; with --heads H, one family for "
        "every head or H of them, comma-separated (tanh,sin)",
    )
    s.add_argument(
        "--beta", type=finite_float, help="smoothness (holder, bspline, weierstrass: non-integer)"
    )
    s.add_argument("--noise", type=finite_float, default=0.1, help="noise sd")
    s.add_argument("--noise-law", default="gaussian", help="gaussian | uniform | rademacher")
    s.add_argument("--tokens", default="cube", help="cube | gaussian | anisotropic | correlated")
    s.add_argument(
        "--rho",
        type=finite_float,
        help="within-sample correlation of tokens = correlated, in [-1/(N-1), 1) (default 0.3)",
    )
    s.add_argument("--A-file", help=".npz with a user-given A (d, d), or (H, d, d) with --heads H")
    s.add_argument(
        "--heads",
        type=positive_int,
        default=1,
        help="number of attention heads H: Y sums H interactions phi*_h(x^T A*_h y)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_simulate)

    f = sub.add_parser("fit-erm", help="fit by variable-projection ERM")
    f.add_argument("data")
    f.add_argument("--rank", type=positive_int, default=1)
    f.add_argument("--degree", type=int, help="spline degree (default 3)")
    f.add_argument("--n-basis", type=positive_int, help="number of basis functions")
    f.add_argument("--n-intervals", type=positive_int, help="number of knot intervals K")
    f.add_argument("--k-rule", default="gcv", help="gcv (default) | theory")
    f.add_argument("--knot-multiplicity", type=positive_int, default=1)
    f.add_argument(
        "--knot-placement",
        default="auto",
        help="auto (default: GCV also chooses knots mixed with equal widths) | quantile",
    )
    f.add_argument("--beta", type=finite_float, help="smoothness of phi*, if known")
    f.add_argument("--restarts", type=positive_int, default=5)
    f.add_argument("--heads", type=positive_int, default=1, help="number of heads H (default 1)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True)
    f.set_defaults(func=cmd_fit_erm)

    q = sub.add_parser("predict", help="predict g on pairs")
    q.add_argument("fit")
    q.add_argument("--pairs", required=True, help=".npz with x (P, d) and y (P, d)")
    q.add_argument(
        "--per-head",
        action="store_true",
        help="also save each head's g_h (a multi-head fit; g is their sum G)",
    )
    q.add_argument("--out", required=True)
    q.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="L2(rho) error against the truth")
    e.add_argument("fit")
    e.add_argument("--truth", required=True, help="a simulated data file")
    e.add_argument("--pairs", type=positive_int, default=20000, help="held-out pairs")
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--json", help="also write the result to this .json")
    e.set_defaults(func=cmd_evaluate)

    m = sub.add_parser("sample", help="posterior inference (Laplace-PSIS, Laplace-IMH or NUTS)")
    m.add_argument("data")
    m.add_argument("--rank", type=positive_int, default=1)
    m.add_argument(
        "--method",
        default="auto",
        help="auto (default: Laplace-proposal importance sampling, NUTS where its Pareto k "
        "> 0.7) | is | imh (Laplace-proposal independence MH) | nuts",
    )
    form = m.add_mutually_exclusive_group()
    form.add_argument("--collapsed", action="store_true", help="integrate c out (default)")
    form.add_argument("--explicit", action="store_true", help="sample c explicitly")
    m.add_argument("--chains", type=positive_int, default=4)
    m.add_argument(
        "--warmup", type=positive_int, help="NUTS warmup / IMH burn-in (default 500 / 50)"
    )
    m.add_argument(
        "--draws",
        type=positive_int,
        help="draws per chain (default: NUTS 500, IMH 600, IS 250 resampled)",
    )
    m.add_argument(
        "--ess-target",
        type=positive_int,
        help="IS: draw proposals until their effective size reaches this (default 100)",
    )
    m.add_argument("--init", default="erm", help="erm (default) | prior")
    m.add_argument(
        "--heads",
        type=positive_int,
        default=1,
        help="number of heads H (default 1; H >= 2: the collapsed multi-head model, "
        "--method auto|is|nuts)",
    )
    m.add_argument(
        "--basis",
        default="evidence",
        help="evidence (default: the K and knot placement of largest marginal likelihood) "
        "| erm (ERM's GCV K at quantile knots)",
    )
    m.add_argument(
        "--n-intervals", type=positive_int, help="fix K, at quantile knots (default: --basis)"
    )
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True)
    m.set_defaults(func=cmd_sample)

    dg = sub.add_parser("diagnose", help="convergence table and plots of a posterior")
    dg.add_argument("post")
    dg.add_argument("--out-dir", required=True)
    dg.add_argument("--truth", help="the data file, to draw phi* in the band figure")
    dg.add_argument("--strict", action="store_true", help="exit 3 when not converged")
    dg.set_defaults(func=cmd_diagnose)

    st = sub.add_parser("study", help="run a rate study from a TOML config (resumable)")
    st.add_argument("config", help="study config (.toml), e.g. analyses/configs/quick.toml")
    st.add_argument("--out-dir", required=True, help="study folder (records, results, figures)")
    add_run_arguments(st)
    st.set_defaults(func=cmd_study)

    g = sub.add_parser("plot", help="figure of the fit (against the truth when known)")
    g.add_argument("fit")
    g.add_argument("--truth", help="the data file (with or without truth)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True)
    g.set_defaults(func=cmd_plot)

    add_slr_commands(sub)  # the `slr` group: single-location regression
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from bayes_ips import check_emitters_setting, enable_compilation_cache, enable_x64
    from bayes_ips.errors import InputError

    enable_x64()
    try:
        check_emitters_setting()
        enable_compilation_cache()
        return int(args.func(args) or 0)
    except InputError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return fail("interrupted")
    except Exception as e:  # unexpected: still one line unless debugging
        if os.environ.get("BAYES_IPS_DEBUG"):
            raise
        print(
            f"bayes-ips: internal error: {type(e).__name__}: {e} "
            "(set BAYES_IPS_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
