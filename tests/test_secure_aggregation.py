"""Secure aggregation through the CLI on a real anvil, with a member that crashes mid-round, one
that crashes between rounds, one that records garbage as its masked update and one that records a
masked update nobody can fetch, masked modulo 2^16 (``--sa-bits 16``).

Seven `fedchain node run` processes, threshold 4. Round 1 is dealt in the round (four steps),
round 2 was dealt ahead in round 1's reveals (three steps). Member 3 runs `--attack dropout`: its
process ends right after it dealt its shares in round 1, before masking. Member 6 runs
`--attack dropout-ahead`: it takes part in round 1, deals round 2's shares in its reveal, and ends.
Member 4 runs `--attack badmask`: its masked updates are not ones. Member 5 runs
`--attack withhold`: it never puts its masked updates in the store. The three honest members must
unmask each round with the dropped members' mask seeds reconstructed from the holders' shares,
finalize it without them, and finish round 2 (where members 3 and 6 are silent holders) after the
unmasking stage's deadline. The members mask their rotated, scaled updates modulo 2^16, so the
dropouts' masks are removed modulo 2^16 too (the 64-bit path differs only in skipping the
encoding, ``secagg/quantize.py``). One module-scoped run serves every check; each test only reads.
"""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from fedchain.node.protocol.artifact import decode
from fedchain.node.tools.devnet import Devnet

from _support import clean_env, run_cli, wait_all

PEERS = 7
ROUNDS = 2
DROPOUT, BADMASK, WITHHOLD, DROPOUT_AHEAD = 3, 4, 5, 6
HONEST = 3

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def secure_net(tmp_path_factory):
    work = tmp_path_factory.mktemp("secagg")
    # One block a second: the masking and unmasking deadlines must pass even when nobody sends.
    with Devnet(accounts=PEERS + 2, block_time=1) as net:
        env = clean_env(FEDCHAIN_KEY=net.keys[0])
        r = run_cli(["data", "split", "--peers", str(PEERS), "--out", str(work / "shards")], env=env)
        assert r.returncode == 0, r.stderr
        # The peers start first and wait for the deployment file, so that their start-up time does
        # not eat into round 1's submission window.
        procs = []
        for i in range(PEERS):
            penv = clean_env(FEDCHAIN_KEY=net.keys[i + 1], FEDCHAIN_DEPLOYMENT=str(work / "deployment.json"), OMP_NUM_THREADS="1")
            extra = {DROPOUT: ["--attack", "dropout"], BADMASK: ["--attack", "badmask"], WITHHOLD: ["--attack", "withhold"],
                     DROPOUT_AHEAD: ["--attack", "dropout-ahead"]}.get(i, [])
            with open(work / f"peer-{i}.log", "w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "fedchain.cli.main", "node", "run", "--data", str(work / "shards" / f"peer-{i}.safetensors"),
                     "--json-log", "--poll", "0.2", "--state-dir", str(work / "state"), "--wait-deployment", "300", *extra],
                    env=penv, stdout=log, stderr=subprocess.STDOUT))
        r = run_cli(["deploy", "--rpc", net.rpc_url, "--members", ",".join(net.addresses[1: PEERS + 1]),
                     "--rounds", str(ROUNDS), "--epochs", "2", "--store", str(work / "store"),
                     "--submit-blocks", "30", "--vote-blocks", "24", "--secure-aggregation", "--threshold", "4",
                     "--stage-blocks", "5", "--sa-bits", "16", "-o", str(work / "deployment.json")], env=env)
        assert r.returncode == 0, r.stderr
        wait_all(procs, 600)
        logs = [(work / f"peer-{i}.log").read_text() for i in range(PEERS)]
        assert [p.returncode for p in procs] == [0, 0, 0, 3, 0, 0, 3], [log[-3000:] for log in logs]
        yield {"work": work, "net": net, "env": clean_env(FEDCHAIN_DEPLOYMENT=str(work / "deployment.json")), "logs": logs}


def _rounds(net):
    r = run_cli(["rounds", "list", "--json"], env=net["env"])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_every_round_finalizes_without_the_member_that_crashed(secure_net):
    rounds = _rounds(secure_net)
    assert [x["status"] for x in rounds] == ["finalized"] * ROUNDS
    # round 1: members 0, 1, 2 and 6 (which ends after it); round 2: members 0, 1 and 2
    assert [x["included"] for x in rounds] == [hex(0b1000111), hex(0b111)]
    assert all({v["model"] for v in x["votes"]} == {x["model"]} for x in rounds)


def test_round_show_names_the_dropout_and_its_recovery(secure_net):
    r = run_cli(["rounds", "show", "1", "--json"], env=secure_net["env"])
    assert r.returncode == 0, r.stderr
    sa = json.loads(r.stdout)["secure_aggregation"]
    assert sa["dealt_ahead"] is False and sa["dealers"] == [0, 1, 2, 3, 4, 5, 6]
    assert sa["survivors"] == [0, 1, 2, DROPOUT_AHEAD]
    assert sa["dropped"] == [DROPOUT, BADMASK, WITHHOLD] and sa["recovered"] == [DROPOUT, BADMASK, WITHHOLD]
    assert sa["reveals"] >= 4 and sa["buckets"] == [[0, 1, 2, 3, 4, 5, 6]]
    r = run_cli(["rounds", "show", "1"], env=secure_net["env"])
    assert all(f"dropped out: {m} (mask seed recovered" in r.stdout for m in (DROPOUT, BADMASK, WITHHOLD)), r.stdout
    excluded = {json.loads(line)["member"]: json.loads(line)["reason"] for line in secure_net["logs"][0].splitlines()
                if line.startswith("{") and json.loads(line).get("event") == "excluded" and json.loads(line)["round"] == 1}
    assert "masked update invalid" in excluded[BADMASK] and "dropped out" in excluded[DROPOUT], excluded
    assert "dropped out" in excluded[WITHHOLD], excluded


def test_round_two_was_dealt_ahead_and_recovers_the_member_that_dealt_then_vanished(secure_net):
    r = run_cli(["rounds", "show", "2", "--json"], env=secure_net["env"])
    assert r.returncode == 0, r.stderr
    sa = json.loads(r.stdout)["secure_aggregation"]
    # member 3 ended in round 1 before its reveal, so it dealt nothing ahead and sits round 2 out
    assert sa["dealt_ahead"] is True and sa["dealers"] == [0, 1, 2, BADMASK, WITHHOLD, DROPOUT_AHEAD]
    assert sa["survivors"] == [0, 1, 2]
    assert sa["dropped"] == sa["recovered"] == [BADMASK, WITHHOLD, DROPOUT_AHEAD]
    events = [json.loads(line) for line in secure_net["logs"][0].splitlines() if line.startswith("{")]
    # round 2's submission is the masked update itself: no masking-stage record
    assert any(e.get("event") == "submitted" and e["round"] == 2 and "masked" in e for e in events)
    assert not any(e.get("event") == "masked" and e["round"] == 2 for e in events)


def test_verify_rebuilds_every_round_from_masked_updates_and_reveals(secure_net):
    r = run_cli(["verify", "--json"], env=secure_net["env"])
    assert r.returncode == 0, r.stdout + r.stderr
    audits = json.loads(r.stdout)
    assert [a["verified"] for a in audits] == [True] * ROUNDS, audits


def test_a_masked_update_in_the_store_is_uncorrelated_with_the_round_step(secure_net):
    """What the store holds for member 0 in round 1 looks like noise next to the model's actual step,
    even rotated as the members rotated their updates (the rotation is public): int16 values."""
    from fedchain.node.protocol.fixedpoint import quantize, state_to_vector
    from fedchain.node.protocol.secure import masked_vector
    from fedchain.node.secagg.rotation import rotate, rotation_seed, rotation_signs

    work, env = secure_net["work"], secure_net["env"]
    masked_cid = next(json.loads(line)["cid"] for line in secure_net["logs"][0].splitlines()
                      if line.startswith("{") and json.loads(line).get("event") == "masked" and json.loads(line)["round"] == 1)
    rec = _rounds(secure_net)[0]
    models = {}
    for name, cid in (("base", rec["base_model"]), ("new", rec["model"])):
        out = work / f"{name}.safetensors"
        assert run_cli(["store", "get", cid, "-o", str(out), "--store", str(work / "store")], env=env).returncode == 0
        models[name] = decode(out.read_bytes(), max_bytes=1 << 26).tensors
    step = (quantize(state_to_vector(models["new"])) - quantize(state_to_vector(models["base"]))).double().numpy()
    out = work / "masked.safetensors"
    assert run_cli(["store", "get", masked_cid, "-o", str(out), "--store", str(work / "store")], env=env).returncode == 0
    art = decode(out.read_bytes(), max_bytes=1 << 26)
    assert [(t.dtype, t.numel()) for t in art.tensors.values()] == [(torch.int16, 8192)]  # 4,810 values padded
    masked = masked_vector(art).double().numpy()
    task_cid = json.loads((work / "deployment.json").read_text())["task_cid"]
    step = rotate(step.astype(np.int64), rotation_signs(rotation_seed(task_cid, 1), masked.size)).astype(np.float64)
    cosine = float(masked @ step / (np.linalg.norm(masked) * np.linalg.norm(step)))
    assert abs(cosine) < 5 / math.sqrt(step.size), cosine  # five standard deviations of a random direction
