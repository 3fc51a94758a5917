"""The model registry: an architecture name maps to a builder; artifact schemas come from the
real ``state_dict`` (names, shapes and dtypes, non-float buffers included).

Adding a model: write a builder ``(inputs, classes, **params) -> nn.Module`` and add one line to
``MODELS`` (or call ``register_model`` from your own code before the peer starts).

An organization's own model is named ``package.module:factory`` (see ``custom_model_params``):
the factory is called as ``factory(inputs=..., classes=...)``. Trust model: code is imported only
from modules already installed on this machine, named by the operator on the command line or by
the task, and only when the module's source matches the sha256 digest the task records. Nothing
a peer or the chain sends is ever downloaded or executed as code.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import math
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..protocol.fixedpoint import state_to_vector, vector_to_state
from ..protocol.round import Schema
from ..protocol.task import ModelSpec

__all__ = [
    "ModelSpec", "ModelEntry", "MODELS", "register_model", "build_model", "schema_of", "check_model_size", "init_state",
    "state_to_vector", "vector_to_state", "custom_model_params", "source_digest", "locate_module",
]

_DTYPE_NAMES = {torch.float32: "F32", torch.int64: "I64"}


def _flat(inputs: int | tuple[int, ...]) -> tuple[list[nn.Module], int]:
    """Image inputs are flattened first; tabular inputs go straight in."""
    if isinstance(inputs, tuple):
        return [nn.Flatten()], math.prod(inputs)
    return [], inputs


def mlp(inputs: int | tuple[int, ...], classes: int, *, hidden: tuple[int, ...] = (64,)) -> nn.Module:
    """A multilayer perceptron: ``inputs`` -> hidden layers (ReLU) -> ``classes`` logits."""
    layers, width = _flat(inputs)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def logreg(inputs: int | tuple[int, ...], classes: int) -> nn.Module:
    """Logistic (softmax) regression, or linear regression with one output: a single linear layer."""
    layers, width = _flat(inputs)
    return nn.Sequential(*layers, nn.Linear(width, classes))


def cnn(inputs: int | tuple[int, ...], classes: int, *, channels: tuple[int, ...] = (16, 32)) -> nn.Module:
    """A small conv net for C x H x W images: (3x3 conv, ReLU, 2x2 max-pool) per entry of
    ``channels``, global average pooling, then a linear layer to ``classes`` logits."""
    if not isinstance(inputs, tuple):
        raise ValueError(f"cnn needs image inputs (C, H, W), got {inputs} features; use mlp or logreg for tabular data")
    layers: list[nn.Module] = []
    width = inputs[0]
    for c in channels:
        layers += [nn.Conv2d(width, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
        width = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


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
    "logreg": ModelEntry(logreg),
    "cnn": ModelEntry(cnn),
}


def register_model(name: str, build: Callable[..., nn.Module], *, init: str = "torch") -> None:
    """Make ``name`` available to tasks; ``build(inputs, classes, **params)`` returns the module."""
    if init not in ("torch", "fan-in"):
        raise ConfigError(f"unknown initialization {init!r} (known: torch, fan-in)")
    MODELS[name] = ModelEntry(build, init)


def locate_module(name: str) -> Path:
    """The source file of an installed module, found without importing (so without running) it
    or any package above it."""
    path = None
    spec = None
    parts = name.split(".")
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), path)
        if spec is None:
            raise ConfigError(f"model module {name!r} is not installed on this machine (every peer installs the "
                              f"organization's model package itself; nothing is downloaded)")
        path = spec.submodule_search_locations
    if not spec.origin or not spec.origin.endswith(".py"):
        raise ConfigError(f"model module {name!r} has no Python source file to check ({spec.origin})")
    return Path(spec.origin)


def source_digest(path: Path) -> str:
    """sha256 of a module's source text, as ``inspect.getsource(module)`` reads it."""
    with tokenize.open(path) as fh:
        return hashlib.sha256(fh.read().encode()).hexdigest()


_CUSTOM: dict[tuple[str, str], ModelEntry] = {}


def _custom_entry(spec: ModelSpec) -> ModelEntry:
    module_name, _, factory = spec.arch.partition(":")
    if not module_name or not factory.isidentifier():
        raise ConfigError(f"a custom model is named package.module:factory, got {spec.arch!r}")
    digest = source_digest(locate_module(module_name))
    expected = dict(spec.params).get("source_sha256")
    if expected and digest != expected:
        raise ConfigError(f"model {spec.arch!r}: this machine's source (sha256 {digest[:16]}) differs from the task's "
                          f"(sha256 {str(expected)[:16]}); install the version the task was deployed with")
    key = (spec.arch, digest)
    if key not in _CUSTOM:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ConfigError(f"cannot import model module {module_name!r}: {type(exc).__name__}: {exc}") from None
        fn = getattr(module, factory, None)
        if not callable(fn):
            raise ConfigError(f"module {module_name!r} has no factory function {factory!r}")

        def build(inputs, classes, **params):
            model = fn(inputs=inputs, classes=classes, **params)
            if not isinstance(model, nn.Module):
                raise TypeError(f"{spec.arch} returned {type(model).__name__}, not a torch.nn.Module")
            return model

        _CUSTOM[key] = ModelEntry(build)
    return _CUSTOM[key]


def custom_model_params(spec: ModelSpec) -> tuple[tuple[str, object], ...]:
    """The parameters a task pins for a custom model: its source digest and its state schema."""
    digest = source_digest(locate_module(spec.arch.partition(":")[0]))
    bare = ModelSpec(spec.inputs, spec.classes, spec.hidden, spec.arch, tuple((k, v) for k, v in spec.params if k != "source_sha256"))
    schema = {name: [list(shape), dtype] for name, (shape, dtype) in schema_of(bare).items()}
    params = {**dict(spec.params), "source_sha256": digest, "state_schema": schema}
    return tuple(sorted(params.items()))


def _entry(spec: ModelSpec) -> ModelEntry:
    if spec.custom:
        return _custom_entry(spec)
    try:
        return MODELS[spec.arch]
    except KeyError:
        raise ConfigError(f"unknown model architecture {spec.arch!r} (known: {', '.join(MODELS)})") from None


def build_model(spec: ModelSpec) -> nn.Module:
    try:
        return _entry(spec).build(spec.inputs, spec.classes, **spec.options)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot build model {spec.arch!r}: {exc}") from None
    except ConfigError:
        raise
    except Exception as exc:  # an organization's own factory may raise anything
        raise ConfigError(f"cannot build model {spec.arch!r}: {type(exc).__name__}: {exc}") from None


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
    recorded = dict(spec.params).get("state_schema")
    if recorded is not None:
        pinned = {name: (tuple(shape), dtype) for name, (shape, dtype) in recorded.items()}
        if pinned != out:
            diff = sorted(set(pinned.items()) ^ set(out.items()))[0][0]
            raise ConfigError(f"model {spec.arch!r}: this machine builds a state that differs from the task's schema "
                              f"(first difference at tensor {diff!r}); install the version the task was deployed with")
    return out


def init_state(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """The initial global model of a task, reproducible from the seed."""
    entry = _entry(spec)
    if entry.init == "fan-in":
        return _uniform_fan_in(build_model(spec), torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _torch_default(build_model(spec), seed)
