"""Faults a real network meets: the chain going away and coming back from its saved state, and
a peer whose store is unavailable for a while. The network keeps finalizing rounds, nothing is
lost, and the affected peer rejoins."""
import subprocess
import sys
import threading
import time

import pytest
from eth_account import Account

from fedchain.node.chain import ChainClient
from fedchain.node.ml.data import load_dataset, partition, train_test_split
from fedchain.node.tools.deployment import Deployment, deploy_task
from fedchain.node.tools.devnet import Devnet
from fedchain.node.errors import StoreUnavailable
from fedchain.node.ledger.history import round_history
from fedchain.node.ml.models import ModelSpec
from fedchain.node.peer import Peer
from fedchain.node.store import EmbeddedStore
from fedchain.node.protocol.task import Task
from fedchain.node.ml.training import TrainConfig

from _support import clean_env, deploy_with_cli, wait_for

OUTAGE = 10.0  # seconds the chain is down: over 30 polls, well inside the peers' 60 s RPC retry budget


@pytest.mark.timeout(900)
def test_rpc_down_10s_and_anvil_restarted_from_its_dump(tmp_path):
    peers, rounds = 3, 3
    state = tmp_path / "anvil-state.json"
    net = Devnet(accounts=peers + 1, block_time=0.5, state_file=str(state)).start()
    procs = []
    try:
        # 600-block windows (5 minutes): starting three peers and training on a machine busy with
        # other work took over 100 s, which closed round 1 before anyone submitted. Rounds end when
        # every peer has voted, so long windows cost nothing when all goes well.
        deploy_with_cli(net, tmp_path, peers=peers, rounds=rounds, windows=600)
        for i in range(peers):
            penv = clean_env(FEDCHAIN_KEY=net.keys[i + 1], FEDCHAIN_DEPLOYMENT=str(tmp_path / "deployment.json"))
            procs.append(subprocess.Popen([sys.executable, "-m", "fedchain.cli.main", "node", "run", "--json-log", "--poll", "0.3",
                                           "--data", str(tmp_path / "shards" / f"peer-{i}.safetensors")],
                                          env=penv, stdout=open(tmp_path / f"peer-{i}.log", "w"), stderr=subprocess.STDOUT))
        dep = Deployment.load(tmp_path / "deployment.json")
        observer = ChainClient(net.rpc_url, dep.contract)
        wait_for(lambda: observer.round_state().round >= 2, 300, "round 1 to finalize")

        stopped_at = observer.block_number()
        net.stop()  # SIGTERM: anvil writes its state file
        # The fault itself: the chain stays away for OUTAGE seconds, and every peer must live through it.
        back_at = time.monotonic() + OUTAGE
        while time.monotonic() < back_at:
            assert all(p.poll() is None for p in procs), "a peer died while the chain was down"
            time.sleep(0.5)
        net = Devnet(port=net.port, accounts=peers + 1, block_time=0.5, state_file=str(state)).start(timeout=120)

        for p in procs:
            p.wait(timeout=400)
        logs = [(tmp_path / f"peer-{i}.log").read_text() for i in range(peers)]
        assert [p.returncode for p in procs] == [0] * peers, [log[-1500:] for log in logs]
        history = round_history(ChainClient(net.rpc_url, dep.contract))
        assert [h.status for h in history] == ["finalized"] * rounds
        assert all(h.included_count == peers for h in history)
        assert history[-1].end_block > stopped_at, "no round finalized after the chain came back"
        assert sum(h.start_block > stopped_at for h in history) >= 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        net.stop()


class FlakyStore(EmbeddedStore):
    """The shared embedded store, as seen by one peer whose link to it is down for a while."""

    def __init__(self, root, down_for: float):
        super().__init__(root)
        self.down_until = 0.0
        self.down_for = down_for
        self.failures = 0

    def break_now(self):
        self.down_until = time.monotonic() + self.down_for

    def _check(self):
        if time.monotonic() < self.down_until:
            self.failures += 1
            raise StoreUnavailable("store link down (injected fault)")

    def add(self, data, *, pin=True):
        self._check()
        return super().add(data, pin=pin)

    def _fetch(self, cid, **budget):
        self._check()
        return super()._fetch(cid, **budget)


@pytest.mark.timeout(600)
def test_store_unavailable_to_one_peer(tmp_path, devnet):
    peers, rounds = 4, 3
    ds = load_dataset("digits")
    train, _ = train_test_split(ds)
    parts = partition(train, peers)
    task = Task(name="fault", dataset="digits", model=ModelSpec(ds.features, ds.classes, (32,)), train=TrainConfig(epochs=1),
                rounds=rounds, submit_blocks=400, vote_blocks=400)
    store = EmbeddedStore(tmp_path / "store")
    deployer = ChainClient(devnet.rpc_url, account=Account.from_key(devnet.keys[0]))
    members = devnet.addresses[1 : peers + 1]
    dep = deploy_task(deployer, store, task, members)
    flaky = FlakyStore(tmp_path / "store", down_for=6.0)
    stores = [store, store, store, flaky]

    runners, errors = [], []
    for i in range(peers):
        chain = ChainClient(devnet.rpc_url, dep.contract, Account.from_key(devnet.keys[i + 1]), retry_seconds=30)
        shard = train.__class__(train.name, train.x[parts[i]], train.y[parts[i]], train.classes)
        peer = Peer(chain, stores[i], task, dep.task_cid, shard, seed=i, poll=0.1, log=lambda *a, **k: None)
        runners.append(threading.Thread(target=lambda p=peer: _run(p, errors), daemon=True))
    flaky.break_now()  # the fourth peer starts with its store unreachable
    for t in runners:
        t.start()
    # automine: nudge the chain along so the windows can pass while the flaky peer is away. About
    # 10 blocks a second: a 400-block window lasts 40 s, ample for a peer on a loaded machine, and
    # rounds in which every peer acts end sooner anyway.
    observer = ChainClient(devnet.rpc_url, dep.contract)
    deadline = time.monotonic() + 400
    while any(t.is_alive() for t in runners) and time.monotonic() < deadline:
        observer.w3.provider.make_request("anvil_mine", ["0x2"])
        time.sleep(0.2)
    assert not any(t.is_alive() for t in runners), "peers did not finish"
    assert not errors, errors
    history = round_history(observer, from_block=dep.deploy_block)
    assert [h.status for h in history] == ["finalized"] * rounds
    assert flaky.failures > 0
    flaky_addr = members[3].lower()
    late = history[-1]
    assert any(s["peer"].lower() == flaky_addr for s in late.submissions), "the affected peer did not rejoin"
    assert late.included_count == peers


def _run(peer, errors):
    try:
        peer.run()
    except Exception as exc:  # surfaced by the assertion in the test
        errors.append(repr(exc))


def _pooled(client: ChainClient, nonce: int) -> dict | None:
    """The transaction anvil's pool holds for ``client``'s account at ``nonce``, if any."""
    pending = client.w3.provider.make_request("txpool_content", [])["result"]["pending"]
    return {a.lower(): txs for a, txs in pending.items()}.get(client.address.lower(), {}).get(str(nonce))


@pytest.mark.timeout(180)
def test_a_stuck_transaction_is_replaced_with_higher_fees():
    import os

    from fedchain.node.chain import Outcome, deploy_contract

    with Devnet(accounts=3) as net:
        deployer = ChainClient(net.rpc_url, account=Account.from_key(net.keys[0]))
        address, _ = deploy_contract(deployer, members=net.addresses[1:3], initial_model=os.urandom(32), task=os.urandom(32),
                                     submit_blocks=50, vote_blocks=50, quorum_bps=6667, max_rounds=2, rule=0)
        # Three attempts of 5 s each: the first fee bump comes after 5 s, and the test then has 10 s
        # (a few RPC round trips are needed) to see the replacement in the pool and mine it.
        peer = ChainClient(net.rpc_url, address, Account.from_key(net.keys[1]), tx_timeout=15.0)
        peer.w3.provider.make_request("evm_setAutomine", [False])  # nothing gets mined until the test says so
        first_fee = peer._fees()["maxFeePerGas"]  # no block is mined meanwhile, so the base fee holds
        outcome: dict = {}

        def send():
            try:
                outcome["receipt"] = peer.submit(1, os.urandom(32), Outcome.none())
            except Exception as exc:  # surfaced by the assertions below
                outcome["error"] = exc

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        wait_for(lambda: int(_pooled(peer, 0)["maxFeePerGas"], 16) > first_fee, 60, "the fee-bumped replacement in the pool",
                 interval=0.05)
        replacement = _pooled(peer, 0)["hash"]
        peer.w3.provider.make_request("evm_mine", [])
        sender.join(timeout=60)
        assert not sender.is_alive(), "submit did not return after its transaction was mined"
        assert "error" not in outcome, outcome.get("error")
        receipt = outcome["receipt"]
        assert receipt["status"] == 1
        assert receipt["transactionHash"].to_0x_hex() == replacement  # the version the pool held is the one mined
        mined = peer.w3.eth.get_transaction(receipt["transactionHash"])
        block = peer.w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
        assert len(block.transactions) == 1  # only one version of the transaction was mined
        assert mined["nonce"] == 0 and mined["maxFeePerGas"] > first_fee  # the bumped replacement
        assert peer.member_info(peer.address).submitted_round == 1
