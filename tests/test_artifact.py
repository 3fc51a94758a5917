"""Artifacts are canonical safetensors; every malformed artifact is rejected, never executed."""
import pickle
import struct

import pytest
import torch

from fedchain.node.protocol.artifact import decode, encode, validate
from fedchain.node.errors import ArtifactInvalid
from fedchain.node.ml.models import ModelSpec, init_state, schema_of

SPEC = ModelSpec(inputs=8, classes=3, hidden=(4,))
SCHEMA = schema_of(SPEC)
META = {"kind": "update", "task": "QmTask", "round": 1, "base": "QmBase", "samples": 10}


def _state():
    return init_state(SPEC, seed=1)


def test_encoding_is_canonical_whatever_the_dict_order():
    state = _state()
    reordered = dict(reversed(list(state.items())))
    assert encode(state, META) == encode(reordered, dict(reversed(list(META.items()))))


def test_round_trip_keeps_values_and_metadata():
    art = validate(decode(encode(_state(), META), max_bytes=1 << 20), SCHEMA, expect={"kind": "update", "round": "1"})
    assert torch.equal(art.tensors["0.weight"], _state()["0.weight"])
    assert art.metadata["samples"] == "10"


@pytest.mark.parametrize("mutate, message", [
    (lambda s: {**s, "0.weight": torch.full_like(s["0.weight"], float("nan"))}, "NaN"),
    (lambda s: {**s, "0.bias": torch.full_like(s["0.bias"], float("inf"))}, "NaN or Inf"),
    (lambda s: {**s, "0.weight": torch.zeros(5, 8)}, "expected F32"),
    (lambda s: {**s, "0.weight": s["0.weight"].to(torch.int64)}, "I64"),
    (lambda s: {k: v for k, v in s.items() if k != "2.bias"}, "missing"),
    (lambda s: {**s, "extra": torch.zeros(1)}, "unexpected"),
])
def test_schema_violations_are_rejected(mutate, message):
    data = encode(mutate(_state()), META)
    with pytest.raises(ArtifactInvalid, match=message):
        validate(decode(data, max_bytes=1 << 20), SCHEMA)


def test_oversized_artifact_is_rejected_before_parsing():
    with pytest.raises(ArtifactInvalid, match="limit"):
        decode(encode(_state(), META), max_bytes=100)


def test_pickle_is_not_safetensors():
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    with pytest.raises(ArtifactInvalid, match="not safetensors"):
        decode(pickle.dumps(Boom()), max_bytes=1 << 20)


@pytest.mark.parametrize("data", [b"", b"\x00" * 7, struct.pack("<Q", 1 << 40) + b"{}", struct.pack("<Q", 2) + b"{"])
def test_garbage_is_rejected(data):
    with pytest.raises(ArtifactInvalid):
        decode(data, max_bytes=1 << 20)


def test_wrong_metadata_is_rejected():
    with pytest.raises(ArtifactInvalid, match="round"):
        validate(decode(encode(_state(), META), max_bytes=1 << 20), SCHEMA, expect={"round": "2"})
