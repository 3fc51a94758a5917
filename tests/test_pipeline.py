"""The peer's update pipeline: plugins run in order on the local update, the first ballot or
artifact a plugin returns wins, and a real peer publishes what the pipeline produced."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedchain.node.errors import ConfigError
from fedchain.node.ml.data import Dataset
from fedchain.node.peer import ABSTAIN, ClipUpdate, Pipeline, Plugin, UpdateContext, VoteContext
from fedchain.node.protocol.round import RoundInputs

pytestmark = pytest.mark.timeout(60)


def _ctx() -> UpdateContext:
    return UpdateContext(round=1, base_cid="Qm", base={}, metadata={}, peer=None)


def _norm(delta: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(v.double().pow(2).sum()) for v in delta.values() if v.is_floating_point()))


class Scale(Plugin):
    name = "scale"

    def __init__(self, factor: float):
        self.factor = factor

    def transform(self, delta, ctx):
        return {k: v * self.factor for k, v in delta.items()}


class Record(Plugin):
    name = "record"

    def __init__(self, seen: list):
        self.seen = seen

    def transform(self, delta, ctx):
        self.seen.append(_norm(delta))
        return delta


def test_clip_bounds_the_joint_float_norm_and_leaves_integer_buffers_alone():
    delta = {"w": torch.full((4,), 3.0), "b": torch.full((1,), 4.0), "n": torch.tensor(7, dtype=torch.int64)}
    out = ClipUpdate(1.0).transform(delta, _ctx())
    assert _norm(out) == pytest.approx(1.0, rel=1e-6)
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 7
    assert out["w"][0] / out["b"][0] == pytest.approx(3.0 / 4.0)  # direction kept
    small = {"w": torch.full((4,), 0.1)}
    assert ClipUpdate(1.0).transform(small, _ctx()) is small  # under the bound: untouched


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_clip_refuses_a_degenerate_bound_at_construction(bad):
    with pytest.raises(ConfigError):
        ClipUpdate(bad)


def test_plugins_run_in_order_each_on_the_previous_output():
    seen: list[float] = []
    pipe = Pipeline([Scale(10.0), Record(seen), ClipUpdate(1.0), Record(seen)])
    out = pipe.transform({"w": torch.ones(4)}, _ctx())
    assert seen == [pytest.approx(20.0), pytest.approx(1.0)]
    assert _norm(out) == pytest.approx(1.0, rel=1e-6)
    assert pipe.names == ["scale", "record", "clip", "record"]


def test_the_first_ballot_and_the_first_artifact_win_and_none_passes_through():
    class Abstain(Plugin):
        def vote(self, ctx, honest):
            return ABSTAIN

    class Other(Plugin):
        def vote(self, ctx, honest):
            return (b"\x01" * 32, 3)

        def publish(self, delta, ctx):
            return b"other"

    ctx = VoteContext(round=1, inputs=RoundInputs(1, "Qm"), peer=None, honest_cid="Qm")
    honest = (b"\x02" * 32, 7)
    assert Pipeline([]).vote(ctx, honest) is None  # honest peer: vote its own aggregate
    assert Pipeline([Plugin(), Abstain(), Other()]).vote(ctx, honest) == ABSTAIN
    assert Pipeline([Other(), Abstain()]).vote(ctx, honest) == (b"\x01" * 32, 3)
    assert Pipeline([Plugin()]).publish({}, _ctx()) is None
    assert Pipeline([Plugin(), Other()]).publish({}, _ctx()) == b"other"


def test_prepare_data_is_chained():
    class Halve(Plugin):
        def prepare_data(self, data, rng):
            return Dataset(data.name, data.x[: len(data.y) // 2], data.y[: len(data.y) // 2], data.classes)

    data = Dataset("d", np.zeros((8, 2), np.float32), np.zeros(8, np.int64), 2)
    out = Pipeline([Halve(), Halve()]).prepare_data(data, np.random.default_rng(0))
    assert len(out.y) == 2


def test_a_real_peer_publishes_the_clipped_update(devnet, tmp_path):
    """A peer with ClipUpdate in its pipeline submits an artifact whose update norm is the bound."""
    from eth_account import Account

    from fedchain.node.chain import ChainClient
    from fedchain.node.ml.data import load_dataset
    from fedchain.node.peer import Peer
    from fedchain.node.protocol.artifact import decode
    from fedchain.node.protocol.cid import digest_to_cid
    from fedchain.node.protocol.task import ModelSpec, Task, TrainConfig
    from fedchain.node.store import EmbeddedStore
    from fedchain.node.tools.deployment import deploy_task

    ds = load_dataset("digits")
    store = EmbeddedStore(tmp_path / "store")
    task = Task(name="clip", dataset="digits", model=ModelSpec(ds.features, ds.classes, (8,)), train=TrainConfig(epochs=1),
                rounds=1, submit_blocks=50, vote_blocks=50)
    deployer = ChainClient(devnet.rpc_url, account=Account.from_key(devnet.keys[0]))
    dep = deploy_task(deployer, store, task, [devnet.addresses[1]], seed=0)
    chain = ChainClient(devnet.rpc_url, dep.contract, Account.from_key(devnet.keys[1]))
    shard = Dataset("digits", ds.x[:64], ds.y[:64], ds.classes)
    peer = Peer(chain, store, task, dep.task_cid, shard, plugins=[ClipUpdate(0.01)], log=lambda *a, **k: None)
    peer.submit(1, chain.member_info(chain.address))
    (ev,) = chain.events("UpdateSubmitted", from_block=dep.deploy_block, round=1)
    art = decode(store.get(digest_to_cid(bytes(ev.args.update))), max_bytes=task.max_update_bytes)
    assert _norm(art.tensors) == pytest.approx(0.01, rel=1e-4)
