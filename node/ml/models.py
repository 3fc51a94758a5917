"""The model registry: an architecture name maps to a builder; artifact schemas come from the
real ``state_dict`` (names, shapes and dtypes, non-float buffers included).

Adding a model: write a builder ``(inputs, classes, **params) -> nn.Module`` and add one line to
``MODELS`` (or call ``register_model`` from your own code before the peer starts).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..protocol.fixedpoint import state_to_vector, vector_to_state
from ..protocol.round import Schema
from ..protocol.task import ModelSpec

__all__ = [
    "ModelSpec", "ModelEntry", "MODELS", "register_model", "build_model", "schema_of", "check_model_size", "init_state",
    "state_to_vector", "vector_to_state",
]

_DTYPE_NAMES = {torch.float32: "F32", torch.int64: "I64"}


def mlp(inputs: int, classes: int, *, hidden: tuple[int, ...] = (64,)) -> nn.Module:
    """A multilayer perceptron: ``inputs`` -> hidden layers (ReLU) -> ``classes`` logits."""
    layers: list[nn.Module] = []
    width = inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def _uniform_fan_in(module: nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Every tensor uniform in +-1/sqrt(fan_in), drawn in state_dict order (the MLP's init)."""
    state = {}
    for name, t in module.state_dict().items():
        fan_in = t.shape[-1] if t.dim() > 1 else t.shape[0]
        bound = 1.0 / fan_in**0.5
        state[name] = (torch.rand(t.shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound
    return state


def _torch_default(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The module's own initialization, under a fixed seed."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[..., nn.Module]  # (inputs, classes, **params) -> nn.Module
    init: str = "torch"  # "torch": the module's own init, seeded; "fan-in": _uniform_fan_in


MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(mlp, init="fan-in"),
}


def register_model(name: str, build: Callable[..., nn.Module], *, init: str = "torch") -> None:
    """Make ``name`` available to tasks; ``build(inputs, classes, **params)`` returns the module."""
    if init not in ("torch", "fan-in"):
        raise ConfigError(f"unknown initialization {init!r} (known: torch, fan-in)")
    MODELS[name] = ModelEntry(build, init)


def _entry(spec: ModelSpec) -> ModelEntry:
    try:
        return MODELS[spec.arch]
    except KeyError:
        raise ConfigError(f"unknown model architecture {spec.arch!r} (known: {', '.join(MODELS)})") from None


def build_model(spec: ModelSpec) -> nn.Module:
    try:
        return _entry(spec).build(spec.inputs, spec.classes, **spec.options)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot build model {spec.arch!r}: {exc}") from None


def _meta_state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The model's state_dict on the meta device: shapes and dtypes, no memory allocated."""
    with torch.device("meta"):
        return build_model(spec).state_dict()


def check_model_size(spec: ModelSpec, max_bytes: int) -> int:
    """The model's parameter bytes; ``ConfigError`` if an update could not fit in ``max_bytes``."""
    size = sum(t.numel() * t.element_size() for t in _meta_state(spec).values())
    if size > max_bytes:
        raise ConfigError(f"model {spec.arch!r} has {size} bytes of parameters, over the update limit of {max_bytes} bytes")
    return size


def schema_of(spec: ModelSpec) -> Schema:
    """Tensor name -> (shape, dtype) that every update and model artifact must carry."""
    out = {}
    for name, t in _meta_state(spec).items():
        if t.dtype not in _DTYPE_NAMES:
            raise ConfigError(f"model {spec.arch!r}: tensor {name} has dtype {t.dtype}; artifacts carry float32 and int64")
        out[name] = (tuple(t.shape), _DTYPE_NAMES[t.dtype])
    return out


def init_state(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """The initial global model of a task, reproducible from the seed."""
    entry = _entry(spec)
    if entry.init == "fan-in":
        return _uniform_fan_in(build_model(spec), torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _torch_default(build_model(spec), seed)
