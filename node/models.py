"""Model architectures a task can name, and the tensor schema every artifact must match."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["ModelSpec", "build_model", "schema_of", "state_to_vector", "vector_to_state", "init_state"]


@dataclass(frozen=True)
class ModelSpec:
    """A multilayer perceptron: ``inputs`` -> hidden layers (ReLU) -> ``classes`` logits."""

    inputs: int
    classes: int
    hidden: tuple[int, ...] = (64,)
    arch: str = "mlp"

    def __post_init__(self):
        if self.arch != "mlp":
            raise ConfigError(f"unknown model architecture {self.arch!r} (known: mlp)")
        if self.inputs <= 0 or self.classes < 2 or any(h <= 0 for h in self.hidden):
            raise ConfigError("model sizes must be positive, with at least two classes")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(inputs=int(d["inputs"]), classes=int(d["classes"]), hidden=tuple(int(h) for h in d.get("hidden", (64,))), arch=d.get("arch", "mlp"))

    def to_dict(self) -> dict:
        return {"arch": self.arch, "inputs": self.inputs, "hidden": list(self.hidden), "classes": self.classes}


def build_model(spec: ModelSpec) -> nn.Module:
    layers: list[nn.Module] = []
    width = spec.inputs
    for h in spec.hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, spec.classes))
    return nn.Sequential(*layers)


def schema_of(spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, dtype) that every update and model artifact must carry."""
    return {k: (tuple(v.shape), "F32") for k, v in build_model(spec).state_dict().items()}


def init_state(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, t in build_model(spec).state_dict().items():
        fan_in = t.shape[-1] if t.dim() > 1 else t.shape[0]
        bound = 1.0 / fan_in**0.5
        state[name] = (torch.rand(t.shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound
    return state


def state_to_vector(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Flatten tensors in sorted-name order (the canonical order used everywhere)."""
    return torch.cat([state[k].reshape(-1) for k in sorted(state)])


def vector_to_state(vec: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, pos = {}, 0
    for k in sorted(like):
        n = like[k].numel()
        out[k] = vec[pos : pos + n].reshape(like[k].shape).contiguous()
        pos += n
    return out
