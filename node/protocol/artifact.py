"""The artifact format: safetensors files with fedchain metadata, written canonically.

Artifacts are never pickled: a malicious peer must not get code execution. The writer is our
own so that the bytes are canonical (sorted tensor names, sorted JSON keys, fixed padding): every
honest peer that computes the same aggregate writes the same bytes, hence the same CID. The
reader is the safetensors library, behind checks of size, header, metadata, schema and values.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import torch

from ..errors import ArtifactInvalid

__all__ = ["FORMAT", "Artifact", "encode", "decode", "validate"]

FORMAT = "fedchain/1"
_DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16"}  # I16/I32: masked updates below 64 bits
_MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class Artifact:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    @property
    def kind(self) -> str:
        return self.metadata.get("kind", "")


def encode(tensors: dict[str, torch.Tensor], metadata: dict[str, object]) -> bytes:
    """Serialize to safetensors bytes, canonically."""
    meta = {"format": FORMAT, **{k: str(v) for k, v in metadata.items()}}
    header: dict[str, object] = {"__metadata__": meta}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype not in _DTYPES:
            raise ValueError(f"unsupported dtype {t.dtype} for {name}")
        raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def decode(data: bytes, *, max_bytes: int) -> Artifact:
    """Parse safetensors bytes without executing anything; raise ``ArtifactInvalid`` if unusable."""
    from safetensors.torch import load

    if len(data) > max_bytes:
        raise ArtifactInvalid(f"artifact is {len(data)} bytes, over the {max_bytes}-byte limit")
    if len(data) < 8:
        raise ArtifactInvalid("not safetensors: too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ArtifactInvalid("not safetensors: bad header length")
    try:
        header = json.loads(data[8 : 8 + n])
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("metadata must map strings to strings")
        tensors = load(bytes(data))
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactInvalid(f"not safetensors: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ArtifactInvalid(f"unknown artifact format {meta.get('format')!r}")
    return Artifact(tensors, meta)


def validate(
    artifact: Artifact,
    schema: dict[str, tuple[tuple[int, ...], str]],
    *,
    expect: dict[str, str] | None = None,
) -> Artifact:
    """Check tensor names, shapes, dtypes, finiteness and the metadata fields in ``expect``."""
    names = set(artifact.tensors)
    if names != set(schema):
        missing, extra = sorted(set(schema) - names), sorted(names - set(schema))
        raise ArtifactInvalid(f"tensor names differ from the model (missing {missing}, unexpected {extra})")
    for name, (shape, dtype) in schema.items():
        t = artifact.tensors[name]
        if tuple(t.shape) != shape or _DTYPES.get(t.dtype) != dtype:
            raise ArtifactInvalid(f"{name}: {_DTYPES.get(t.dtype, t.dtype)}{list(t.shape)}, expected {dtype}{list(shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ArtifactInvalid(f"{name}: contains NaN or Inf")
    for key, value in (expect or {}).items():
        if artifact.metadata.get(key) != value:
            raise ArtifactInvalid(f"metadata {key}={artifact.metadata.get(key)!r}, expected {value!r}")
    return artifact
