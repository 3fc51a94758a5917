"""The pure rules of a secure-aggregation round (protocol/secure.py), the aggregate over bucket
sums, the task's secure-aggregation settings and the CLI's refusals. No chain: fast."""
import json

import numpy as np
import pytest
import torch

from fedchain.node.aggregation import aggregate_round, bucket_delta, check_secure_rule
from fedchain.node.errors import ArtifactInvalid, ConfigError
from fedchain.node.protocol.artifact import decode, encode
from fedchain.node.protocol.fixedpoint import dequantize
from fedchain.node.protocol.round import Bucket, Contribution, RoundInputs
from fedchain.node.protocol.secure import (assign_buckets, dealt_ahead, key_cutoff, masked_metadata, needed_reveals, stages,
                                           validate_masked)
from fedchain.node.protocol.task import ModelSpec, SecureAggregation, Task
from fedchain.node.secagg import deal, decode_bundle, encode_unmask, identity_private, mask, mask_private, pair_keys, \
    public_key, reconstruct, round_seeds, decode_unmask, unmask_sum

from _support import clean_env, run_cli

TASK = Task(name="t", dataset="digits", model=ModelSpec(inputs=4, classes=3, hidden=(5,)), rule="fedavg-plain",
            update_reveal_blocks=0, secure_aggregation=SecureAggregation(threshold=2))


def test_key_cutoff_waits_for_every_key_in_round_one_only():
    assert key_cutoff(1, 100, 30, 5, [101, 103], members=3) == 125  # a key missing: up to 5 blocks before the close
    assert key_cutoff(1, 100, 30, 5, [101, 103, 104], members=3) == 105  # all on record: the next block
    assert key_cutoff(1, 100, 30, 5, [101, 140, 104], members=3) == 125  # the last one came too late for round 1
    # Round 2 is dealt during round 1's unmasking: round 1's holders. Later rounds: keys before the
    # previous round started (its reveals deal this round's shares).
    assert key_cutoff(2, 300, 30, 5, [101, 103, 104], members=3, previous_start=100) == 105
    assert key_cutoff(2, 300, 30, 5, [101, 140, 104], members=3, previous_start=100) == 125
    assert key_cutoff(3, 400, 30, 5, [101, 140, 104], members=3, previous_start=300) == 300
    with pytest.raises(ValueError):
        key_cutoff(3, 400, 30, 5, [101], members=3)


def test_a_round_is_dealt_ahead_only_by_reveals_of_the_previous_round_in_time():
    # the previous round started at 100 and its unmasking ends at 140; this round starts at 150
    assert dealt_ahead(2, [120], 100, 140, 150)
    assert not dealt_ahead(2, [], 100, 140, 150)  # no reveals: dealt in the round
    assert not dealt_ahead(2, [140, 145], 100, 140, 150)  # after the unmasking deadline
    assert not dealt_ahead(3, [130], 100, 140, 125)  # after this round started
    assert not dealt_ahead(1, [120], 100, 140, 150)  # round 1 has no previous round
    st = stages(100, 30, 5, ahead=True)
    assert (st.masking_ends, st.unmasking_ends) == (130, 140)  # no masking stage; the same deadline


def test_stages_follow_the_submission_window():
    st = stages(100, 30, 5)
    assert (st.masking_ends, st.unmasking_ends) == (135, 140)


def test_buckets_partition_the_dealers_and_depend_on_the_seed():
    dealers = list(range(10))
    a, b = assign_buckets(b"\x01" * 32, dealers, 3), assign_buckets(b"\x02" * 32, dealers, 3)
    assert sorted(m for g in a for m in g) == dealers and [len(g) for g in a] == [4, 3, 3]
    assert a != b and a == assign_buckets(b"\x01" * 32, dealers, 3)
    assert assign_buckets(b"", [4, 7, 9], 2) == [(4, 7, 9)]  # never a bucket of one member
    assert assign_buckets(b"", [], 2) == []


def test_one_reveal_kind_per_dealer():
    assert needed_reveals([0, 1, 2], {0, 2}) == {0: "self", 1: "mask", 2: "self"}


def test_a_masked_update_must_be_int64_of_the_models_shapes_and_name_its_sender():
    from fedchain.node.ml.models import schema_of

    schema = schema_of(TASK.model)
    tensors = {n: torch.zeros(shape, dtype=torch.int64) for n, (shape, _) in schema.items()}
    data = encode(tensors, masked_metadata("cid", 1, "base", "0xAbC"))
    assert validate_masked(data, schema, max_bytes=1 << 20, task_cid="cid", round_=1, base_cid="base", submitter="0xabc")
    with pytest.raises(ArtifactInvalid, match="names peer"):
        validate_masked(data, schema, max_bytes=1 << 20, task_cid="cid", round_=1, base_cid="base", submitter="0xdef")
    floats = encode({n: torch.zeros(shape) for n, (shape, _) in schema.items()}, masked_metadata("cid", 1, "base", "0xabc"))
    with pytest.raises(ArtifactInvalid, match="expected I64"):
        validate_masked(floats, schema, max_bytes=1 << 20, task_cid="cid", round_=1, base_cid="base", submitter="0xabc")


def test_shares_masks_and_reveals_give_back_the_exact_bucket_sum_without_a_dropout():
    """Four members, one drops after dealing: three holders' reveals rebuild the exact sum of the
    three survivors' vectors, through the same functions the peers and auditors use."""
    keys = [bytes([i + 1]) * 32 for i in range(4)]
    contract, task, rnd = "0x" + "11" * 20, "QmTask", 3
    ids = {i: public_key(identity_private(k, contract)) for i, k in enumerate(keys)}
    bundles = {i: decode_bundle(deal(account_key=k, contract=contract, task=task, round_=rnd, dealer=i, peer=f"p{i}",
                                     threshold=3, holders=ids), max_bytes=1 << 20, task=task, round_=rnd, peer=f"p{i}",
                                dealer=i, holders=set(ids), threshold=3) for i, k in enumerate(keys)}
    rng = np.random.default_rng(0)
    q = {i: rng.integers(-(1 << 40), 1 << 40, 50) for i in range(4)}
    masked = {}
    for i in range(3):  # member 3 drops out before masking
        mseed, sseed = round_seeds(keys[i], contract, rnd)
        masked[i] = mask(q[i], me=i, mask_private=mask_private(mseed), self_seed=sseed,
                         peers={j: bundles[j].mask_public for j in range(4) if j != i}, task=task, round_=rnd)
    needed = needed_reveals([0, 1, 2, 3], {0, 1, 2})
    unmasks = []
    for h in range(3):
        revealed = {}
        for d, kind in needed.items():
            mk, sk = pair_keys(identity_private(keys[h], contract), ids[d], task=task, round_=rnd, dealer=d, holder=h)
            revealed[(d, kind)] = mk if kind == "mask" else sk
        unmasks.append(decode_unmask(encode_unmask(task=task, round_=rnd, peer=f"p{h}", holder=h, keys=revealed),
                                     max_bytes=1 << 20, task=task, round_=rnd, peer=f"p{h}", holder=h, members=4))
    seeds = reconstruct(bundles, unmasks, needed)
    total = unmask_sum(masked, self_seeds={i: seeds[i] for i in range(3)}, dropped={3: seeds[3]},
                       mask_publics={i: b.mask_public for i, b in bundles.items()}, task=task, round_=rnd)
    assert np.array_equal(np.asarray(total, dtype=np.int64), q[0] + q[1] + q[2])
    assert reconstruct(bundles, unmasks[:2], needed) == {d: None for d in needed}  # two holders are below the threshold


def _base():
    from fedchain.node.ml.models import build_model

    return {k: v.detach().clone() for k, v in build_model(TASK.model).state_dict().items()}


def test_the_rule_runs_over_bucket_means_and_includes_their_members():
    base = _base()
    names = sorted(base)
    dim = sum(base[n].numel() for n in names)
    one = torch.full((dim,), 1 << 20, dtype=torch.int64)  # 2**-8 per coordinate
    inputs = RoundInputs(1, "base", contributions=[Contribution(m, f"c{m}", {}, 1, 1, m) for m in (0, 1, 2, 4)],
                         buckets=[Bucket((0, 1), one * 2, "c0,c1"), Bucket((2, 4), one * 6, "c2,c4")])
    data, bitmap, included = aggregate_round(base, TASK, "cid", inputs)
    assert bitmap == 0b10111 and [c.member for c in included] == [0, 1, 2, 4]
    new = decode(data, max_bytes=1 << 20)
    step = new.tensors[names[0]] - base[names[0]]
    assert torch.allclose(step, torch.full_like(step, 2 * 2 ** -8), atol=1e-6)  # the mean of the bucket means (1 and 3)
    assert new.metadata["updates"] == "c0,c1,c2,c4" and new.metadata["secure_buckets"] == "2"
    assert torch.equal(bucket_delta(Bucket((0, 1), one * 2, ""), base)[names[0]],
                       dequantize(torch.full_like(base[names[0]], 1 << 20, dtype=torch.int64)))


def test_settings_and_rules_that_cannot_run_under_masking_are_refused():
    with pytest.raises(ConfigError, match="at least 2"):
        SecureAggregation(threshold=1)
    with pytest.raises(ConfigError, match="more than the 3 members"):
        SecureAggregation(threshold=4).check_members(3)
    with pytest.raises(ConfigError, match="more than half of the 4 members"):
        SecureAggregation(threshold=2).check_members(4)
    with pytest.raises(ConfigError, match="buckets of at least two"):
        SecureAggregation(threshold=3, buckets=3).check_members(5)
    with pytest.raises(ConfigError, match="replaces sealed updates"):
        Task(name="t", dataset="digits", model=TASK.model, update_reveal_blocks=20, secure_aggregation=SecureAggregation(threshold=2))
    with pytest.raises(ConfigError, match="voting window"):
        Task(name="t", dataset="digits", model=TASK.model, vote_blocks=20, secure_aggregation=SecureAggregation(threshold=2))
    median = Task(name="t", dataset="digits", model=TASK.model, rule="median", secure_aggregation=SecureAggregation(threshold=3))
    with pytest.raises(ConfigError, match="needs individual updates"):
        check_secure_rule(median, 4)
    check_secure_rule(Task(name="t", dataset="digits", model=TASK.model, rule="median",
                           secure_aggregation=SecureAggregation(threshold=3, buckets=2)), 4)
    assert Task.from_bytes(TASK.to_bytes()) == TASK
    plain = Task(name="t", dataset="digits", model=TASK.model)
    assert "secure_aggregation" not in json.loads(plain.to_bytes())  # other tasks keep their JSON and CIDs


@pytest.mark.parametrize("args, message", [
    (["--threshold", "3"], "--threshold goes with --secure-aggregation"),
    (["--secure-aggregation", "--rule", "median"], "rule median needs individual updates"),
    (["--secure-aggregation", "--update-reveal-blocks", "20"], "secure aggregation replaces sealed updates"),
    (["--secure-aggregation", "--threshold", "9"], "threshold 9 is more than the 4 members"),
    (["--sa-bits", "16"], "--sa-bits goes with --secure-aggregation"),
    (["--secure-aggregation", "--sa-bits", "8"], "bits must be 16, 32 or 64, got 8"),
])
def test_deploy_refuses_bad_secure_aggregation_options_in_one_line(args, message):
    members = ",".join("0x" + f"{i:040x}" for i in range(1, 5))
    r = run_cli(["deploy", "--rpc", "http://127.0.0.1:1", "--members", members, *args], env=clean_env(FEDCHAIN_KEY="0x" + "11" * 32))
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
