"""Files: datasets and pair sets (``.npz``) and fits (netCDF), written atomically.

Dataset ``.npz``
    ``X`` float (M, N, d) and ``Y`` float (M, N); when simulated, also the truth:
    ``A_true`` (d, d), ``phi_spec``, ``token_law`` and ``noise_law`` (JSON strings),
    plus ``seed`` and ``config`` (JSON).  A file with only ``X`` and ``Y`` is valid.
    A multi-head truth (:class:`~bayes_ips.simulate.HeadsTruth`) has ``A_true``
    (H, d, d) and ``phi_spec`` a JSON list of H specs (a single truth's is one
    JSON object, as it always was).
Pairs ``.npz``
    ``x`` and ``y`` float (P, d).  Predictions are written as ``g`` (P,).
Fit netCDF
    An xarray Dataset with everything needed to predict: ``A`` (dim, dim_col),
    ``U``, ``V`` (dim, rank), ``coef`` (basis), ``breaks`` (brk), and attributes
    ``kind``, ``degree``, ``multiplicity``, ``tail``, ``config`` and ``info``
    (JSON) and ``seed`` (:func:`fit_to_dataset`, :func:`fit_from_dataset`).  A file
    without ``tail`` (written before it existed) loads with ``tail = "poly"``, the
    extrapolation it was fitted with.
Fit reference
    The same variables as nested lists, with ``degree``, ``multiplicity`` and
    ``tail`` (optional, as in a fit netCDF): a
    JSON dict kept inside another file (the ERM start in a posterior's ``erm``
    attribute; :func:`fit_reference`, :func:`fit_from_reference`).

Every writer goes through :func:`atomic_write`: the file appears complete under
its name or not at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import xarray as xr

from bayes_ips import __version__
from bayes_ips.activations import PhiSpec
from bayes_ips.erm import ERMConfig, ERMFit
from bayes_ips.errors import InputError, check_output_dir, check_xy
from bayes_ips.multihead import HeadsFit, stack_knots
from bayes_ips.simulate import HeadsTruth, NoiseLaw, TokenLaw, Truth
from bayes_ips.spline import make_knots, saved_tail

__all__ = [
    "Dataset",
    "atomic_write",
    "file_kind",
    "fit_from_dataset",
    "fit_from_reference",
    "fit_reference",
    "fit_to_dataset",
    "load_dataset",
    "load_fit",
    "load_pairs",
    "save_dataset",
    "save_fit",
    "save_npz",
]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Samples and outputs, with the truth when known."""

    X: np.ndarray
    Y: np.ndarray
    truth: Truth | HeadsTruth | None = None
    meta: dict = dataclasses.field(default_factory=dict)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and math.isinf(o):
        return "inf"
    raise TypeError(f"not JSON serialisable: {type(o)}")


def to_json(obj: Any) -> str:
    """JSON with numpy scalars and arrays converted (infinities as 'inf')."""
    return json.dumps(obj, default=_json_default, sort_keys=True, allow_nan=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = os.fspath(path)
    directory = check_output_dir(path)
    if os.path.isdir(path):
        raise InputError(f"cannot write {path}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder for a command's output files; move them into ``path`` on success.

    The temporary folder sits in the nearest existing ancestor of ``path`` (the same
    file system, so each move is a rename).  On success ``path`` is created if needed
    and every file is moved into it (each replacing a file of the same name); on any
    error the temporary folder is removed, and ``path`` is neither created nor touched.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"cannot write into {path}: it is a file, not a folder")
    parent = os.path.dirname(path)
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    try:
        tmp = tempfile.mkdtemp(prefix=".tmp-", suffix=os.path.basename(path), dir=parent)
    except OSError as e:
        raise InputError(f"cannot create {path}: {e.strerror}") from None
    try:
        yield tmp
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create {path}: {e.strerror}") from None
        for name in sorted(os.listdir(tmp)):
            os.chmod(os.path.join(tmp, name), 0o666 & ~_umask())
            os.replace(os.path.join(tmp, name), os.path.join(path, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Write an ``.npz`` atomically."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _open_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"file not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise InputError(f"cannot read {path} as .npz: {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError(f"cannot read {path} as .npz: it holds a single array (.npy?)")
    try:
        with z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise InputError(f"cannot read {path} as .npz: {e}") from None


def _float_array(path: str | os.PathLike, name: str, a: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{path}: {name!r} must be numeric, got dtype {a.dtype}")
    return np.asarray(a, dtype=np.float64)


def save_dataset(path: str | os.PathLike, data: Dataset) -> None:
    """Write a dataset (and its truth, when known) to ``.npz``."""
    arrays: dict[str, Any] = {"X": np.asarray(data.X), "Y": np.asarray(data.Y)}
    if data.truth is not None:
        t = data.truth
        if isinstance(t, HeadsTruth):
            phi_json = "[" + ", ".join(spec.to_json() for spec in t.phis) + "]"
        else:
            phi_json = t.phi.to_json()
        arrays.update(
            A_true=np.asarray(t.A),
            phi_spec=np.array(phi_json),
            token_law=np.array(t.tokens.to_json()),
            noise_law=np.array(t.noise.to_json()),
        )
    arrays["meta"] = np.array(to_json(data.meta))
    save_npz(path, **arrays)


def load_dataset(path: str | os.PathLike, *, need_truth: bool = False) -> Dataset:
    """Read and validate a dataset file."""
    z = _open_npz(path)
    for key in ("X", "Y"):
        if key not in z:
            raise InputError(
                f"{path} has no {key!r} array (keys: {', '.join(sorted(z)) or 'none'})"
            )
    X, Y = check_xy(z["X"], z["Y"])
    truth = None
    truth_keys = ("A_true", "phi_spec", "token_law", "noise_law")
    present = [k for k in truth_keys if k in z]
    if present and len(present) < len(truth_keys):
        missing = sorted(set(truth_keys) - set(present))
        raise InputError(f"{path} has a partial truth: missing {', '.join(missing)}")
    if present:
        A = _float_array(path, "A_true", z["A_true"])
        d = X.shape[2]
        if A.ndim == 3:
            truth = _heads_truth(path, A, d, z)
        else:
            if A.shape != (d, d) or not np.all(np.isfinite(A)):
                raise InputError(f"{path}: A_true must be a finite ({d}, {d}) array, got {A.shape}")
            phi_text = str(z["phi_spec"])
            if phi_text.lstrip().startswith("["):
                raise InputError(f"{path}: a list of phi specs needs A_true of shape (H, d, d)")
            truth = Truth(
                A,
                PhiSpec.from_json(phi_text),
                TokenLaw.from_json(str(z["token_law"])),
                NoiseLaw.from_json(str(z["noise_law"])),
            )
        if truth.tokens.d != d:
            raise InputError(f"{path}: the token law has d = {truth.tokens.d}, X has d = {d}")
    elif need_truth:
        raise InputError(f"{path} holds no truth (A_true, phi_spec, token_law, noise_law)")
    meta = {}
    if "meta" in z:
        try:
            meta = json.loads(str(z["meta"]))
        except ValueError:
            raise InputError(f"{path}: corrupt meta entry") from None
    return Dataset(X, Y, truth, meta)


def _heads_truth(
    path: str | os.PathLike, A: np.ndarray, d: int, z: dict[str, np.ndarray]
) -> HeadsTruth:
    """The multi-head truth of a dataset file whose ``A_true`` is (H, d, d)."""
    if A.shape[0] < 1 or A.shape[1:] != (d, d) or not np.all(np.isfinite(A)):
        raise InputError(
            f"{path}: A_true of a multi-head truth must be a finite (H, {d}, {d}) array, "
            f"got {A.shape}"
        )
    try:
        items = json.loads(str(z["phi_spec"]))
    except ValueError:
        raise InputError(f"{path}: corrupt phi_spec entry") from None
    if not isinstance(items, list):
        raise InputError(f"{path}: A_true holds {A.shape[0]} heads but phi_spec is not a list")
    if len(items) != A.shape[0]:
        raise InputError(f"{path}: A_true holds {A.shape[0]} heads but phi_spec {len(items)}")
    try:
        phis = tuple(PhiSpec.from_json(json.dumps(item)) for item in items)
        return HeadsTruth(
            A,
            phis,
            TokenLaw.from_json(str(z["token_law"])),
            NoiseLaw.from_json(str(z["noise_law"])),
        )
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def load_pairs(path: str | os.PathLike, d: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read pairs ``x, y`` (P, d) from ``.npz``."""
    z = _open_npz(path)
    for key in ("x", "y"):
        if key not in z:
            raise InputError(
                f"{path} has no {key!r} array (keys: {', '.join(sorted(z)) or 'none'})"
            )
    x = _float_array(path, "x", z["x"])
    y = _float_array(path, "y", z["y"])
    if x.ndim != 2 or x.shape != y.shape:
        raise InputError(f"pairs x and y must both have shape (P, d); got {x.shape} and {y.shape}")
    if d is not None and x.shape[1] != d:
        raise InputError(f"pairs have dimension {x.shape[1]} but the fit has d = {d}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InputError("pairs contain NaN or inf")
    return x, y


def read_kind(path: str | os.PathLike):
    """The ``kind`` attribute of a netCDF fit file (None if absent), or a one-line error."""
    import h5netcdf

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"file not found: {path}")
    try:
        with h5netcdf.File(path, "r") as f:
            kind = f.attrs.get("kind")
    except Exception as e:  # corrupt files raise many types
        raise InputError(f"cannot read {path} as a netCDF fit: {type(e).__name__}: {e}") from None
    return kind.decode() if isinstance(kind, bytes) else kind


def read_fit_dataset(path: str | os.PathLike):
    """A netCDF fit file loaded into memory, or a one-line error."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"file not found: {path}")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except Exception as e:  # h5py/xarray raise many types on corrupt files
        raise InputError(f"cannot read {path} as a netCDF fit: {type(e).__name__}: {e}") from None


def file_kind(path: str | os.PathLike) -> str:
    """The ``kind`` attribute of a netCDF fit file: ``erm`` or ``posterior``."""
    path = os.fspath(path)
    kind = read_kind(path)
    if kind not in ("erm", "posterior"):
        raise InputError(f"{path} is neither an ERM fit nor a posterior (kind = {kind!r})")
    return str(kind)


# The variables of an ERM fit and their dims: one table for every form of a fit.
FIT_VARIABLES = {
    "A": ("dim", "dim_col"),
    "U": ("dim", "rank"),
    "V": ("dim", "rank"),
    "coef": ("basis",),
    "breaks": ("brk",),
}
KNOT_ATTRS = ("degree", "multiplicity", "tail")


def fit_to_dataset(fit: ERMFit | HeadsFit) -> xr.Dataset:
    """An ERM fit as an xarray Dataset (the layout of a fit netCDF, module docstring).

    Parameters
    ----------
    fit : ERMFit

    Returns
    -------
    xarray.Dataset
        ``A`` (dim, dim_col), ``U``, ``V`` (dim, rank), ``coef`` (basis), ``breaks``
        (brk); attributes ``kind = "erm"``, ``bayes_ips_version``, ``degree``,
        ``multiplicity``, ``tail``, ``seed``, and ``config`` and ``info`` as JSON.  A
        multi-head fit (:class:`bayes_ips.multihead.HeadsFit`) has a leading
        ``head`` dimension on every variable and the attribute ``heads``.
    """
    arrays = {
        "A": fit.A,
        "U": fit.U,
        "V": fit.V,
        "coef": fit.coef,
        "breaks": fit.knots.breaks,
    }
    heads = np.ndim(fit.A) == 3  # a multi-head fit: every variable gains a "head" axis
    lead = ("head",) if heads else ()
    return xr.Dataset(
        {name: (lead + dims, np.asarray(arrays[name])) for name, dims in FIT_VARIABLES.items()},
        attrs={
            **({"heads": int(fit.A.shape[0])} if heads else {}),
            "kind": "erm",
            "bayes_ips_version": __version__,
            "degree": int(fit.knots.degree),
            "multiplicity": int(fit.knots.multiplicity),
            "tail": str(fit.knots.tail),
            "seed": int(fit.seed),
            "config": to_json(dataclasses.asdict(fit.config)),
            "info": to_json(fit.info),
        },
    )


def fit_from_dataset(
    ds: xr.Dataset, *, source: str = "the fit", provenance: bool = True
) -> ERMFit | HeadsFit:
    """The ERM fit held by a Dataset written by :func:`fit_to_dataset`.

    Parameters
    ----------
    ds : xarray.Dataset
    source : str
        Names the data in error messages (a path).
    provenance : bool
        Read ``config``, ``info`` (required) and ``seed`` (default -1).  When False
        (a reference fit, :func:`fit_from_reference`) the fit gets the default
        ``ERMConfig()``, seed -1 and an empty ``info``.

    Returns
    -------
    ERMFit, or HeadsFit for a multi-head fit (variables with a ``head`` axis)

    Raises
    ------
    InputError
        Not an ERM fit, a variable missing, or corrupt attributes.
    """
    kind = ds.attrs.get("kind")
    if kind != "erm":
        raise InputError(f"{source} is not an ERM fit (kind = {kind!r})")
    for key in FIT_VARIABLES:
        if key not in ds:
            raise InputError(f"{source} has no {key!r} variable")
    try:
        if provenance:
            config = ERMConfig(**json.loads(ds.attrs["config"]))
            info = json.loads(ds.attrs["info"])
            seed = int(ds.attrs.get("seed", -1))
        else:
            config, info, seed = ERMConfig(), {}, -1
        heads = "head" in ds["A"].dims
        tail = saved_tail(ds.attrs)  # "poly" for files from before the linear tail
        if heads:
            H = int(ds.attrs["heads"])
            breaks = np.asarray(ds["breaks"].values)
            for key in FIT_VARIABLES:
                if ds[key].dims[0] != "head" or ds[key].shape[0] != H:
                    raise ValueError(f"{key!r} does not have {H} heads")
            per_head = [
                make_knots(b, int(ds.attrs["degree"]), int(ds.attrs["multiplicity"]), tail)
                for b in breaks
            ]
            knots = stack_knots(per_head)
        else:
            knots = make_knots(
                ds["breaks"].values,
                int(ds.attrs["degree"]),
                int(ds.attrs["multiplicity"]),
                tail,
            )
    except (KeyError, ValueError) as e:
        raise InputError(f"{source}: corrupt fit attributes: {e}") from None
    cls = HeadsFit if heads else ERMFit
    return cls(
        np.asarray(ds["A"].values),
        np.asarray(ds["U"].values),
        np.asarray(ds["V"].values),
        np.asarray(ds["coef"].values),
        knots,
        config,
        seed,
        info,
    )


def fit_reference(fit: ERMFit) -> dict[str, Any]:
    """The JSON form of a fit kept inside another file (the ERM start of a posterior).

    The variables of :func:`fit_to_dataset` as nested lists, and its knot
    attributes; no config, info or seed.

    Returns
    -------
    dict
        ``A``, ``U``, ``V``, ``coef``, ``breaks`` (lists), ``degree``,
        ``multiplicity`` (int) and ``tail`` (str).
    """
    ds = fit_to_dataset(fit)
    ref: dict[str, Any] = {name: ds[name].values.tolist() for name in FIT_VARIABLES}
    ref.update((key, ds.attrs[key]) for key in KNOT_ATTRS)
    return ref


def fit_from_reference(ref: str | dict, *, source: str = "the file") -> ERMFit:
    """The fit of :func:`fit_reference` (as a dict, or its JSON string).

    Raises
    ------
    InputError
        ``{source} lacks its ERM reference: ...`` when ``ref`` is absent or corrupt.
    """
    try:
        ref = json.loads(ref) if isinstance(ref, str) else ref
        ds = xr.Dataset(
            {name: (dims, np.asarray(ref[name])) for name, dims in FIT_VARIABLES.items()},
            # a reference from before the linear tail has no "tail": "poly"
            attrs={"kind": "erm", **{key: ref[key] for key in KNOT_ATTRS if key != "tail"}}
            | ({"tail": ref["tail"]} if "tail" in ref else {}),
        )
        return fit_from_dataset(ds, source=source, provenance=False)
    except (TypeError, KeyError, ValueError) as err:
        raise InputError(f"{source} lacks its ERM reference: {err}") from None


def save_fit(path: str | os.PathLike, fit: ERMFit | HeadsFit) -> None:
    """Write an ERM fit to netCDF (:func:`fit_to_dataset`)."""
    ds = fit_to_dataset(fit)
    with atomic_write(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def load_fit(path: str | os.PathLike) -> ERMFit | HeadsFit:
    """Read a fit written by :func:`save_fit`."""
    path = os.fspath(path)
    return fit_from_dataset(read_fit_dataset(path), source=path)
