"""Peer shards: every sample goes to exactly one peer, no peer is left without data, and the
Dirichlet alpha controls how skewed the labels are."""
from __future__ import annotations

import numpy as np
import pytest

from fedchain.node.errors import ConfigError
from fedchain.node.ml.data import Dataset, partition

pytestmark = pytest.mark.timeout(60)


def _labels(n: int, classes: int = 10) -> Dataset:
    y = np.arange(n, dtype=np.int64) % classes
    return Dataset("synthetic", np.zeros((n, 1), dtype=np.float32), y, classes)


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n)), "samples lost or shared between peers"
    assert all(np.array_equal(p, np.sort(p)) and p.dtype == np.int64 for p in parts)


def _skew(ds: Dataset, parts: list[np.ndarray]) -> float:
    """Mean over peers of the share of their most common label (1.0: every peer sees one label)."""
    return float(np.mean([np.bincount(ds.y[p], minlength=ds.classes).max() / len(p) for p in parts]))


def test_iid_split_covers_every_sample_once_in_near_equal_shards():
    ds = _labels(1003)
    parts = partition(ds, 4)
    _assert_exact_cover(parts, 1003)
    assert sorted(len(p) for p in parts) == [250, 251, 251, 251]


def test_iid_split_is_label_balanced():
    ds = _labels(5000)
    assert _skew(ds, partition(ds, 5)) < 0.15  # ten labels: a tenth each, give or take


@pytest.mark.parametrize("alpha", [None, 0.1, 1.0])
def test_partition_is_reproducible_from_its_seed(alpha):
    ds = _labels(600)
    a, b = partition(ds, 6, alpha=alpha, seed=3), partition(ds, 6, alpha=alpha, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    other = partition(ds, 6, alpha=alpha, seed=4)
    assert any(not np.array_equal(x, y) for x, y in zip(a, other))


@pytest.mark.parametrize("alpha", [0.01, 0.5, 100.0])
def test_dirichlet_split_covers_every_sample_once(alpha):
    ds = _labels(2000)
    _assert_exact_cover(partition(ds, 8, alpha=alpha, seed=1), 2000)


def test_small_alpha_skews_labels_and_large_alpha_does_not():
    ds = _labels(5000)
    skewed = _skew(ds, partition(ds, 10, alpha=0.05, seed=0))
    even = _skew(ds, partition(ds, 10, alpha=1000.0, seed=0))
    assert skewed > 0.6, skewed
    assert even < 0.2, even


@pytest.mark.parametrize("seed", range(5))
def test_dirichlet_split_leaves_no_peer_empty(seed):
    # Many peers, a tiny alpha and few samples: most Dirichlet draws give some peers nothing.
    ds = _labels(60, classes=3)
    parts = partition(ds, 40, alpha=0.01, seed=seed)
    assert all(len(p) >= 1 for p in parts)
    _assert_exact_cover(parts, 60)


def test_dirichlet_split_with_one_sample_per_peer_gives_each_exactly_one():
    ds = _labels(12, classes=2)
    parts = partition(ds, 12, alpha=0.05, seed=2)
    assert [len(p) for p in parts] == [1] * 12
    _assert_exact_cover(parts, 12)


def test_one_peer_gets_everything():
    ds = _labels(50)
    for alpha in (None, 0.3):
        (only,) = partition(ds, 1, alpha=alpha)
        assert np.array_equal(only, np.arange(50))


@pytest.mark.parametrize("peers", [0, -1])
def test_partition_rejects_no_peers(peers):
    with pytest.raises(ConfigError, match="at least one peer"):
        partition(_labels(10), peers)


@pytest.mark.parametrize("alpha", [0.0, -0.5])
def test_dirichlet_alpha_must_be_positive(alpha):
    with pytest.raises(ConfigError, match="alpha must be positive"):
        partition(_labels(10), 2, alpha=alpha)


def test_more_peers_than_samples_is_refused_instead_of_empty_shards():
    import numpy as np

    from fedchain.node.errors import ConfigError
    from fedchain.node.ml.data import Dataset, partition

    tiny = Dataset("tiny", np.zeros((3, 2), np.float32), np.array([0, 1, 0], np.int64), 2)
    for alpha in (None, 0.5):
        with pytest.raises(ConfigError, match="non-empty shard"):
            partition(tiny, 4, alpha=alpha)
    assert all(len(p) == 1 for p in partition(tiny, 3))
