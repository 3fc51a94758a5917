"""`fedchain experiment domains`: the data writers and the bound computations, on tiny subsets and
without a network (the end-to-end run is `make demo-domains`)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from fedchain.node.errors import ConfigError
from fedchain.node.ml.data import Dataset, load_dataset
from fedchain.node.ml.importers import ImportOptions, import_source
from fedchain.node.ml.models import init_state
from fedchain.node.ml.training import evaluate, train_local
from fedchain.node.protocol.task import ModelSpec, TrainConfig
from fedchain.node.tools import domains as D

pytestmark = pytest.mark.timeout(120)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------- metrics
def test_balanced_accuracy_is_the_mean_recall_over_present_classes():
    y = np.array([0] * 8 + [1] * 2)
    assert D.balanced_accuracy(y, np.zeros(10, dtype=int)) == 0.5  # the majority guess: 80% accuracy, 0.5 balanced
    assert D.balanced_accuracy(y, np.array([0] * 8 + [1, 0])) == pytest.approx((1 + 0.5) / 2)
    assert D.balanced_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 2])) == 1.0
    # A class absent from the test labels does not count (a prediction of it is simply wrong).
    assert D.balanced_accuracy(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="empty"):
        D.balanced_accuracy(np.array([], dtype=int), np.array([], dtype=int))


def _blobs(n=80, seed=0, shift=3.0):
    """Two well separated Gaussian blobs in 4 features."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 4)).astype(np.float32) + (shift * y)[:, None].astype(np.float32)
    return Dataset("blobs", x, y.astype(np.int64), 2)


def test_test_metrics_accuracy_is_the_librarys_evaluate():
    spec = ModelSpec(4, 2, arch="logreg")
    state = init_state(spec, 3)
    data = _blobs(40, seed=1)
    got = D.test_metrics(spec, state, data)
    assert got["accuracy"] == evaluate(spec, state, data)
    assert 0 <= got["balanced_accuracy"] <= 1


def test_bounds_train_centralized_on_the_union_and_each_peer_alone():
    spec = ModelSpec(4, 2, arch="logreg")
    init = init_state(spec, 0)
    train, test = _blobs(120, seed=0), _blobs(60, seed=1)
    # Peer 0 holds both classes; peers 1 and 2 hold one class each (the extreme label skew).
    shards = [Dataset("blobs", train.x[i::3], train.y[i::3], 2) for i in range(1)]
    shards += [Dataset("blobs", train.x[train.y == c][:20], train.y[train.y == c][:20], 2) for c in (0, 1)]
    cfg = TrainConfig(epochs=2, lr=0.1, optimizer="sgd")
    out = D.bounds(spec, init, shards, test, cfg, rounds=3, seed=0)
    assert out["epochs"] == 6  # rounds x epochs, as many passes as the federated run makes
    assert out["centralized"]["accuracy"] >= 0.9
    assert len(out["local_only"]) == 3
    # A peer that only ever saw one class is worse than the pooled data, in balanced accuracy too.
    for one_class in out["local_only"][1:]:
        assert one_class["balanced_accuracy"] < out["centralized"]["balanced_accuracy"] - 0.2
    assert out["local_only_mean"]["balanced_accuracy"] == pytest.approx(np.mean([m["balanced_accuracy"] for m in out["local_only"]]))
    assert out["centralized"]["balanced_accuracy"] > out["local_only_mean"]["balanced_accuracy"]
    # The centralized bound is exactly the library's local training on the pooled shards.
    pooled = D.union(shards)
    assert len(pooled.y) == sum(len(s.y) for s in shards)
    delta, _ = train_local(spec, init, pooled, TrainConfig(epochs=6, lr=0.1, optimizer="sgd"), seed=0)
    expected = D.test_metrics(spec, {k: init[k] + delta[k] for k in init}, test)
    assert out["centralized"] == expected


# ---------------------------------------------------------------------------- writers
def test_breast_cancer_csv_imports_as_a_labeled_table(tmp_path):
    path = D.write_breast_cancer(tmp_path, limit=40)
    rows = _rows(path)
    assert len(rows) == 40 and {r["diagnosis"] for r in rows} == {"benign", "malignant"}
    ds = import_source(path, ImportOptions(label="diagnosis"))
    assert ds.x.shape == (40, 30) and ds.classes == 2 and ds.info["label_names"] == ["benign", "malignant"]
    # The same numbers scikit-learn ships (the built-in dataset standardizes them; the CSV does not).
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer().data.astype(np.float32)
    assert all(any(np.allclose(row, r) for r in raw) for row in ds.x[:5])


def test_image_folder_round_trips_pixels_exactly(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 4 * 5))
    y = np.array([0, 1, 2, 0, 1, 2])
    root = D.write_image_folder(x, y, tmp_path / "imgs", shape=(4, 5))
    assert sorted(p.name for p in root.iterdir()) == ["0", "1", "2"]
    assert len(list((root / "1").glob("*.png"))) == 2
    ds = import_source(root, ImportOptions(grayscale=True))
    assert ds.x.shape == (6, 1, 4, 5) and ds.info["label_names"] == ["0", "1", "2"]
    # ImageFolder order is class by class; every written image comes back bit for bit (/255).
    back = {(int(lbl), tuple(np.rint(img.ravel() * 255).astype(int))) for img, lbl in zip(ds.x, ds.y)}
    assert back == {(int(lbl), tuple(row)) for row, lbl in zip(x, y)}


def test_mnist_folder_holds_mlxtends_images(tmp_path):
    root = D.write_mnist_folder(tmp_path, limit=25)
    ds = import_source(root, ImportOptions(grayscale=True, image_size=(28, 28)))
    mnist = load_dataset("mnist")  # the same 5,000 images, scaled to [0, 1]
    assert ds.x.shape == (25, 1, 28, 28) and ds.info["label_names"] == [str(c) for c in range(10)]
    keep = np.linspace(0, 4999, 25).astype(int)
    for img, label in zip(ds.x, ds.y):  # each image is one of the chosen ones, under its own class
        match = [i for i in keep if np.allclose(img.ravel(), mnist.x[i], atol=1e-6)]
        assert match and mnist.y[match[0]] == label


def test_default_csv_from_islp(tmp_path):
    pytest.importorskip("ISLP", reason="ISLP (the `domains` extra) is not installed: make demo-domains installs it")
    path = D.write_default(tmp_path, limit=60)
    ds = import_source(path, ImportOptions(label="default"))
    assert ds.info["feature_names"] == ["student=No", "student=Yes", "balance", "income"]
    assert ds.info["label_names"] == ["No", "Yes"] and set(ds.y.tolist()) == {0, 1}
    assert len(ds.y) == 60


def test_shuttle_csv_from_river(tmp_path):
    pytest.importorskip("river", reason="river (the `domains` extra) is not installed: make demo-domains installs it")
    path = D.write_shuttle(tmp_path, limit=50)
    ds = import_source(path, ImportOptions(label="anomaly"))
    assert ds.info["feature_names"] == [f"f{i}" for i in range(1, 10)]
    assert ds.classes == 2 and set(ds.y.tolist()) == {0, 1} and len(ds.y) == 50


# ---------------------------------------------------------------------------- the run around them
def test_missing_packages_and_unknown_domains_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown domain 'space'"):
        D.run_domains(["space"], tmp_path)
    monkeypatch.setitem(D.DOMAINS, "x", D.Domain("x", "x", D.write_breast_cancer, label="diagnosis", needs=("no_such_package_zz",)))
    with pytest.raises(ConfigError, match="needs the package 'no_such_package_zz'"):
        D.run_domains(["healthcare", "x"], tmp_path)  # refused before anything runs
    assert not (tmp_path / "data").exists()


def test_markdown_table_shows_the_headline_metric():
    m = {"accuracy": 0.97, "balanced_accuracy": 0.61}
    row = {"domain": "finance", "data": "Default", "rows": 10000, "features": 4, "classes": 2, "headline": "balanced_accuracy",
           "federated": m, "centralized": m, "local_only_mean": m, "rounds": 10, "rounds_finalized": 10,
           "epochs_per_round": 2, "federated_wall_seconds": 61.2}
    text = D.markdown_table([row, {**row, "domain": "images", "headline": "accuracy", "features": "1x28x28"}])
    lines = text.splitlines()
    assert lines[0].startswith("| domain |") and "federated model (test split)" in lines[0]
    assert "| balanced accuracy | 0.6100 (acc 0.9700) |" in lines[2]
    assert "| 1x28x28 | 2 | accuracy | 0.9700 |" in lines[3] and "10/10 x 2 ep" in lines[3]


def test_simulation_declares_the_published_constants_of_one_peer():
    from fedchain.node.ml.data import feature_stats
    from fedchain.node.tools.simulate import SimulationConfig, _task

    data = Dataset("t", np.arange(24, dtype=np.float32).reshape(8, 3) ** 2, np.array([0, 1] * 4), 2,
                   info={"kind": "classification", "feature_names": ["a", "b", "c"], "label_names": ["n", "y"]})
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5, 6, 7])]
    for who, expected in (("largest", 1), (0, 0)):
        cfg = SimulationConfig(peers=2, data="t.csv", standardize_peer=who)
        task = _task(cfg, data, data, parts)
        shard = Dataset("t", data.x[parts[expected]], data.y[parts[expected]], 2)
        assert (task.data.mean, task.data.std) == feature_stats(shard)
    assert _task(SimulationConfig(peers=2, data="t.csv"), data, data, parts).data.mean == ()
    with pytest.raises(ConfigError, match="index 0..1 or 'largest'"):
        SimulationConfig(peers=2, data="t.csv", standardize_peer=2)
    with pytest.raises(ConfigError, match="needs your own tabular data"):
        SimulationConfig(peers=2, standardize_peer=0)
