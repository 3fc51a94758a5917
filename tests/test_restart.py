"""A peer keeps no state that matters: killed with SIGKILL and restarted, it catches up."""
import json
import signal
import subprocess
import sys

import pytest

from fedchain.node.chain import ChainClient
from fedchain.node.tools.deployment import Deployment
from fedchain.node.tools.devnet import Devnet
from fedchain.node.ledger.history import round_history

from _support import clean_env, deploy_with_cli, wait_for

PEERS, ROUNDS = 3, 3


def _start(i, net, work):
    env = clean_env(FEDCHAIN_KEY=net.keys[i + 1], FEDCHAIN_DEPLOYMENT=str(work / "deployment.json"))
    log = open(work / f"peer-{i}.log", "a")
    return subprocess.Popen([sys.executable, "-m", "fedchain.cli.main", "node", "run", "--json-log", "--poll", "0.2",
                             "--data", str(work / "shards" / f"peer-{i}.safetensors")], env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.timeout(900)
def test_peer_killed_mid_round_restarts_and_catches_up(tmp_path):
    with Devnet(accounts=PEERS + 1, block_time=0.5) as net:
        # Windows of 5 minutes: on a loaded machine three peers can take over 100 s to start and
        # submit, round 1 needs the restarted peer's vote (quorum 1: every member must vote), and
        # restarting Python and torch takes tens of seconds more. Rounds end when every peer has
        # voted, so long windows cost nothing when all goes well.
        deploy_with_cli(net, tmp_path, peers=PEERS, rounds=ROUNDS, windows=600, extra=["--quorum", "1"])
        procs = [_start(i, net, tmp_path) for i in range(PEERS)]
        victim_log = tmp_path / "peer-0.log"
        try:
            # Kill peer 0 right after its first submission, before it can vote.
            wait_for(lambda: '"submitted"' in victim_log.read_text(), 240, "peer 0 to submit", interval=0.05)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(timeout=30)
            procs[0] = _start(0, net, tmp_path)

            for p in procs:
                p.wait(timeout=420)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        assert [p.returncode for p in procs] == [0] * PEERS, [(tmp_path / f"peer-{i}.log").read_text()[-2000:] for i in range(PEERS)]

        dep = Deployment.load(tmp_path / "deployment.json")
        history = round_history(ChainClient(net.rpc_url, dep.contract))
        assert [h.status for h in history] == ["finalized"] * ROUNDS
        victim = net.addresses[1].lower()
        for h in history:
            assert sum(s["peer"].lower() == victim for s in h.submissions) == 1  # never submitted twice
            assert any(v["peer"].lower() == victim for v in h.votes)  # and voted every round, round 1 after restart
            assert h.included_count == PEERS
        events = [json.loads(line)["event"] for line in victim_log.read_text().splitlines() if line.startswith("{")]
        assert events.count("started") == 2
