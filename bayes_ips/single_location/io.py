"""Files of single-location regression, written atomically (:func:`bayes_ips.io.atomic_write`).

Dataset ``.npz``
    ``X`` float (M, L, d) and ``Y`` float (M,); when simulated, also the truth
    ``k_star``, ``v_star`` (d,), ``gamma``, ``noise_sd``, the latent positions ``J0``
    (M,), ``kind = "single_location"`` and ``meta`` (JSON: seed and config).  A file
    with only ``X`` and ``Y`` is valid.
Inputs ``.npz``
    ``X`` float (P, L, d).  Predictions are written as ``y`` (P,) (posteriors add the
    90% band ``y_lo``, ``y_hi``) with ``meta`` (JSON).
PGD fit netCDF
    ``k``, ``v`` (dim), ``k0``, ``v0`` (dim, the start), ``loss_trace`` (trace_step), and
    attributes ``kind = "slr_pgd"``, ``attention``, ``lam``, ``seed``, ``config`` and
    ``info`` (JSON; ``config`` holds the attention too).  Files written before the
    attention was recorded are erf fits.
Posterior netCDF
    An ArviZ InferenceData with ``kind = "slr_posterior"`` (see
    :mod:`bayes_ips.single_location.posterior`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import xarray as xr

from bayes_ips import __version__
from bayes_ips.errors import InputError
from bayes_ips.io import _open_npz, atomic_write, read_fit_dataset, read_kind, save_npz, to_json
from bayes_ips.single_location.attention import check_attention
from bayes_ips.single_location.data import check_data
from bayes_ips.single_location.pgd import PGDConfig, PGDFit
from bayes_ips.single_location.simulate import SLRTruth

__all__ = [
    "FIT_KINDS",
    "SLRDataset",
    "fit_kind",
    "load_dataset",
    "load_inputs",
    "load_pgd_fit",
    "save_dataset",
    "save_pgd_fit",
]

FIT_KINDS = ("slr_pgd", "slr_posterior")
TRUTH_KEYS = ("k_star", "v_star", "gamma", "noise_sd")


@dataclasses.dataclass(frozen=True)
class SLRDataset:
    """Samples ``X`` (M, L, d), outputs ``Y`` (M,), and the truth and ``J0`` when known."""

    X: np.ndarray
    Y: np.ndarray
    truth: SLRTruth | None = None
    J0: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)


def save_dataset(path: str | os.PathLike, data: SLRDataset) -> None:
    """Write a dataset (and its truth, when known) to ``.npz``."""
    arrays: dict[str, Any] = {"X": np.asarray(data.X), "Y": np.asarray(data.Y)}
    if data.truth is not None:
        t = data.truth
        arrays.update(
            k_star=t.k, v_star=t.v, gamma=np.float64(t.gamma), noise_sd=np.float64(t.noise_sd)
        )
    if data.J0 is not None:
        arrays["J0"] = np.asarray(data.J0)
    arrays["kind"] = np.array("single_location")
    arrays["meta"] = np.array(to_json(data.meta))
    save_npz(path, **arrays)


def _number(path, name: str, a: np.ndarray) -> np.ndarray:
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{path}: {name!r} must be numeric, got dtype {a.dtype}")
    return np.asarray(a, dtype=np.float64)


def load_dataset(path: str | os.PathLike, *, need_truth: bool = False) -> SLRDataset:
    """Read and validate a single-location dataset file."""
    z = _open_npz(path)
    for key in ("X", "Y"):
        if key not in z:
            raise InputError(
                f"{path} has no {key!r} array (keys: {', '.join(sorted(z)) or 'none'})"
            )
    X, Y = check_data(z["X"], z["Y"])
    present = [k for k in TRUTH_KEYS if k in z]
    if present and len(present) < len(TRUTH_KEYS):
        missing = sorted(set(TRUTH_KEYS) - set(present))
        raise InputError(f"{path} has a partial truth: missing {', '.join(missing)}")
    truth = None
    if present:
        d = X.shape[2]
        k, v = _number(path, "k_star", z["k_star"]), _number(path, "v_star", z["v_star"])
        if k.shape != (d,) or v.shape != (d,):
            raise InputError(f"{path}: k_star and v_star must have shape ({d},) to match X")
        gamma = float(_number(path, "gamma", z["gamma"]))
        noise = float(_number(path, "noise_sd", z["noise_sd"]))
        truth = SLRTruth(k, v, X.shape[1], gamma, noise)
    elif need_truth:
        raise InputError(f"{path} holds no truth (k_star, v_star, gamma, noise_sd)")
    J0 = np.asarray(z["J0"]) if "J0" in z else None
    meta = {}
    if "meta" in z:
        try:
            meta = json.loads(str(z["meta"]))
        except ValueError:
            raise InputError(f"{path}: corrupt meta entry") from None
    return SLRDataset(X, Y, truth, J0, meta)


def load_inputs(path: str | os.PathLike, d: int | None = None) -> np.ndarray:
    """Read inputs ``X`` (P, L, d) from ``.npz`` (``d`` checked against the fit's)."""
    z = _open_npz(path)
    if "X" not in z:
        raise InputError(f"{path} has no 'X' array (keys: {', '.join(sorted(z)) or 'none'})")
    X, _ = check_data(z["X"])
    if d is not None and X.shape[2] != d:
        raise InputError(f"inputs have dimension {X.shape[2]} but the fit has d = {d}")
    return X


def save_pgd_fit(path: str | os.PathLike, fit: PGDFit) -> None:
    """Write a PGD fit to netCDF."""
    info = {k: v for k, v in fit.info.items() if k not in ("loss_trace", "k0", "v0")}
    ds = xr.Dataset(
        {
            "k": (("dim",), np.asarray(fit.k)),
            "v": (("dim",), np.asarray(fit.v)),
            "k0": (("dim",), np.asarray(fit.info["k0"])),
            "v0": (("dim",), np.asarray(fit.info["v0"])),
            "loss_trace": (("trace_step",), np.asarray(fit.info["loss_trace"])),
        },
        attrs={
            "kind": "slr_pgd",
            "attention": fit.config.attention,
            "bayes_ips_version": __version__,
            "lam": float(fit.lam),
            "seed": int(fit.seed),
            "config": to_json(dataclasses.asdict(fit.config)),
            "info": to_json(info),
        },
    )
    with atomic_write(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def load_pgd_fit(path: str | os.PathLike) -> PGDFit:
    """Read a fit written by :func:`save_pgd_fit`."""
    path = os.fspath(path)
    ds = read_fit_dataset(path)
    if ds.attrs.get("kind") != "slr_pgd":
        kind = ds.attrs.get("kind")
        raise InputError(f"{path} is not a single-location PGD fit (kind = {kind!r})")
    for key in ("k", "v", "k0", "v0", "loss_trace"):
        if key not in ds:
            raise InputError(f"{path} has no {key!r} variable")
    try:
        config = PGDConfig(**json.loads(ds.attrs["config"]))
        check_attention(config.attention)
        info = json.loads(ds.attrs["info"])
        lam = float(ds.attrs["lam"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: corrupt fit attributes: {e}") from None
    info.update(
        loss_trace=ds["loss_trace"].values.tolist(),
        k0=ds["k0"].values.tolist(),
        v0=ds["v0"].values.tolist(),
    )
    k, v = np.asarray(ds["k"].values), np.asarray(ds["v"].values)
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(v)) and lam > 0):
        raise InputError(f"{path}: the fit holds non-finite k, v or a non-positive lambda")
    return PGDFit(k, v, lam, config, int(ds.attrs.get("seed", -1)), info)


def fit_kind(path: str | os.PathLike) -> str:
    """The ``kind`` attribute of a single-location file: ``slr_pgd`` or ``slr_posterior``."""
    path = os.fspath(path)
    kind = read_kind(path)
    if kind not in FIT_KINDS:
        raise InputError(f"{path} is not a single-location fit or posterior (kind = {kind!r})")
    return str(kind)
