"""A task: what the network trains and how. Pinned as canonical JSON; its digest is on-chain.

Pure data: which model architecture (by registry name, see ``fedchain.node.ml.models``), how a
peer trains, which aggregation rule with which parameters (see ``fedchain.node.aggregation``),
and the round timing. Nothing here imports torch, web3 or the store.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["ModelSpec", "PrivacyConfig", "SecureAggregation", "TrainConfig", "DataSchema", "Task", "UINT32_MAX", "TASK_KINDS", "OPTIMIZERS"]

UINT32_MAX = (1 << 32) - 1  # rounds and windows are uint32 in the contract
TASK_KINDS = ("classification", "regression")
OPTIMIZERS = ("sgd", "adam")
# ModelSpec parameters that describe a model instead of configuring its builder.
RESERVED_MODEL_PARAMS = ("source_sha256", "state_schema")


def _inputs(value) -> int | tuple[int, ...]:
    """A feature count (int) or an image shape (C, H, W), as JSON gives either."""
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return int(value)


def _inputs_ok(inputs) -> bool:
    if isinstance(inputs, tuple):
        return len(inputs) == 3 and all(isinstance(v, int) and v > 0 for v in inputs)
    return isinstance(inputs, int) and inputs > 0


def _strict_int(value, name: str) -> int:
    """An integer from a task description, refusing what ``int()`` would silently change
    (2.9 -> 2, True -> 1, "7" -> 7)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"malformed task description: {name} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class ModelSpec:
    """An architecture from the model registry, with its input and output sizes.

    ``params`` holds the architecture's own settings (for ``mlp``: ``hidden``, the widths of the
    hidden layers). The architecture name is checked against the registry when a model is built.
    """

    inputs: int | tuple[int, int, int]  # a feature count, or an image shape (C, H, W)
    classes: int  # logits of a classifier; 1 for a regression
    hidden: tuple[int, ...] = (64,)
    arch: str = "mlp"
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if not isinstance(self.arch, str) or not self.arch:
            raise ConfigError("model architecture must be a non-empty name")
        if not _inputs_ok(self.inputs) or self.classes < 1 or any(h <= 0 for h in self.hidden):
            raise ConfigError("model sizes must be positive: inputs a feature count or an image shape C,H,W")

    @property
    def custom(self) -> bool:
        """An organization's own ``package.module:factory`` instead of a built-in architecture."""
        return ":" in self.arch

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments for the architecture's builder beyond inputs and classes."""
        out = {k: v for k, v in self.params if k not in RESERVED_MODEL_PARAMS}
        if self.arch == "mlp":
            out["hidden"] = self.hidden
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        extra = {k: v for k, v in d.items() if k not in ("arch", "inputs", "classes", "hidden")}
        return cls(
            inputs=_inputs(d["inputs"]), classes=int(d["classes"]),
            hidden=tuple(int(h) for h in d.get("hidden", (64,))), arch=str(d.get("arch", "mlp")),
            params=tuple(sorted(extra.items())),
        )

    def to_dict(self) -> dict:
        inputs = list(self.inputs) if isinstance(self.inputs, tuple) else self.inputs
        out: dict[str, Any] = {"arch": self.arch, "inputs": inputs, "classes": self.classes}
        if self.arch == "mlp":
            out["hidden"] = list(self.hidden)
        out.update(dict(self.params))
        return out


def _strict_float(value, name: str) -> float:
    """A real number from a task description: an int or float, never a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"malformed task description: {name} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PrivacyConfig:
    """Sample-level differential privacy at every peer: DP-SGD (Abadi et al., "Deep Learning with
    Differential Privacy", CCS 2016), each example's gradient clipped to ``max_grad_norm`` and
    Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm`` added to each batch's
    sum, batches drawn by Poisson sampling.

    The budget is (``epsilon``, ``delta``) over the whole task. Either ``epsilon`` is given alone:
    each peer derives its noise multiplier from its own shard size so that all of the task's
    rounds x epochs spend exactly that budget; or ``noise_multiplier`` is fixed, and ``epsilon``,
    when given too, is the budget after which a peer stops contributing.
    """

    delta: float = 1e-5
    max_grad_norm: float = 1.0
    epsilon: float | None = None  # the (target) budget over the task
    noise_multiplier: float | None = None  # fixed noise; None: derived per peer from epsilon

    def __post_init__(self):
        if self.epsilon is None and self.noise_multiplier is None:
            raise ConfigError("differential privacy needs a budget epsilon or a noise multiplier (or both)")
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and 0 < self.epsilon <= 1_000):
            raise ConfigError(f"DP epsilon must be in (0, 1000], got {self.epsilon}")
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"DP delta must be in (0, 1), got {self.delta}")
        if not (math.isfinite(self.max_grad_norm) and 0 < self.max_grad_norm <= 1e6):
            raise ConfigError(f"DP clipping norm must be in (0, 1e6], got {self.max_grad_norm}")
        if self.noise_multiplier is not None and not (math.isfinite(self.noise_multiplier) and 0 < self.noise_multiplier <= 1_000):
            raise ConfigError(f"DP noise multiplier must be in (0, 1000], got {self.noise_multiplier}")

    def to_dict(self) -> dict:
        out: dict[str, float] = {"delta": self.delta, "max_grad_norm": self.max_grad_norm}
        if self.epsilon is not None:
            out["epsilon"] = self.epsilon
        if self.noise_multiplier is not None:
            out["noise_multiplier"] = self.noise_multiplier
        return out

    @classmethod
    def from_dict(cls, d) -> "PrivacyConfig":
        if not isinstance(d, dict):
            raise ConfigError("malformed task description: train.dp must be an object")
        unknown = set(d) - {"delta", "max_grad_norm", "epsilon", "noise_multiplier"}
        if unknown:
            raise ConfigError(f"malformed task description: unknown DP field {sorted(unknown)[0]!r}")
        if "delta" not in d or "max_grad_norm" not in d:
            raise ConfigError("malformed task description: train.dp needs delta and max_grad_norm")
        opt = {k: _strict_float(d[k], f"dp.{k}") for k in ("epsilon", "noise_multiplier") if d.get(k) is not None}
        return cls(delta=_strict_float(d["delta"], "dp.delta"), max_grad_norm=_strict_float(d["max_grad_norm"], "dp.max_grad_norm"), **opt)


@dataclass(frozen=True)
class SecureAggregation:
    """Secure aggregation without a coordinator (Bonawitz et al., "Practical Secure Aggregation for
    Privacy-Preserving Machine Learning", CCS 2017, double masking): members publish masked
    updates, and only the sum of each bucket is ever revealed.

    ``threshold``: Shamir threshold t, more than half the members; any t members' reveals unmask a
    round, t - 1 colluding members learn nothing. ``buckets``: members are split at random, after the submission window,
    into this many buckets; each bucket's sum is unmasked and the task's rule runs over the bucket
    means (Karimireddy, He & Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing", ICLR 2022). ``stage_blocks``: the length of the masking stage and of the
    unmasking stage, which both run inside the voting window. ``clip``: every member clips its
    update to this L2 norm before masking. ``noise_multiplier``: distributed DP: the members add
    discrete Gaussian noise so that each bucket sum carries noise of standard deviation
    ``noise_multiplier * clip`` (Kairouz, Liu & Steinke, ICML 2021); ``delta`` is the delta its
    epsilon is reported at. ``bits``: the modulus of the masking, 2**bits: 64 masks the fixed-point
    update itself; 16 or 32 mask it rotated, scaled and rounded to that many bits per value
    (``secagg/quantize.py``), so each masked value travels in 2 or 4 bytes.
    """

    threshold: int
    buckets: int = 1
    stage_blocks: int = 10
    clip: float = 10.0
    noise_multiplier: float | None = None
    delta: float = 1e-5
    bits: int = 64

    _FIELDS = ("threshold", "buckets", "stage_blocks", "clip", "noise_multiplier", "delta", "bits")

    def __post_init__(self):
        for name in ("threshold", "buckets", "stage_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65_535:
                raise ConfigError(f"secure aggregation {name} must be an integer from 1 to 65535, got {value!r}")
        if self.threshold < 2:
            raise ConfigError("the secure-aggregation threshold must be at least 2 (with 1, any single member could unmask everyone)")
        if not (math.isfinite(self.clip) and 0 < self.clip <= 1_000):
            raise ConfigError(f"the secure-aggregation clipping norm must be in (0, 1000], got {self.clip}")
        if self.noise_multiplier is not None and not (math.isfinite(self.noise_multiplier) and 0 < self.noise_multiplier <= 1_000):
            raise ConfigError(f"the distributed-DP noise multiplier must be in (0, 1000], got {self.noise_multiplier}")
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"distributed-DP delta must be in (0, 1), got {self.delta}")
        if isinstance(self.bits, bool) or self.bits not in (16, 32, 64):
            raise ConfigError(f"secure aggregation bits must be 16, 32 or 64, got {self.bits!r}")

    def check_members(self, members: int) -> None:
        """Raise ``ConfigError`` unless ``members`` members can run this: every bucket of at least
        two (a bucket of one would reveal that member's update), and a threshold they can reach
        that is more than half of them (so at most one of a dealer's two seeds can be revealed)."""
        if self.threshold > members:
            raise ConfigError(f"the secure-aggregation threshold {self.threshold} is more than the {members} members")
        if 2 * self.threshold <= members:
            raise ConfigError(f"the secure-aggregation threshold must be more than half of the {members} members, got "
                              f"{self.threshold} (with half or fewer, holders that saw a masked update differently could "
                              "reveal both of its seeds)")
        if members < 2 * self.buckets:
            raise ConfigError(f"{members} members cannot fill {self.buckets} buckets of at least two "
                              "(a bucket of one would reveal that member's update)")

    def to_dict(self) -> dict:
        out = {"threshold": self.threshold, "buckets": self.buckets, "stage_blocks": self.stage_blocks,
               "clip": self.clip, "delta": self.delta}
        if self.noise_multiplier is not None:
            out["noise_multiplier"] = self.noise_multiplier
        if self.bits != 64:  # absent at 64: a task without it keeps its description and CID
            out["bits"] = self.bits
        return out

    @classmethod
    def from_dict(cls, d) -> "SecureAggregation":
        if not isinstance(d, dict):
            raise ConfigError("malformed task description: secure_aggregation must be an object")
        unknown = set(d) - set(cls._FIELDS)
        if unknown:
            raise ConfigError(f"malformed task description: unknown secure_aggregation field {sorted(unknown)[0]!r}")
        if "threshold" not in d:
            raise ConfigError("malformed task description: secure_aggregation needs a threshold")
        ints = {k: _strict_int(d[k], f"secure_aggregation.{k}") for k in ("threshold", "buckets", "stage_blocks", "bits") if k in d}
        floats = {k: _strict_float(d[k], f"secure_aggregation.{k}") for k in ("clip", "delta", "noise_multiplier")
                  if d.get(k) is not None}
        return cls(**ints, **floats)


@dataclass(frozen=True)
class TrainConfig:
    """How each peer trains locally: SGD with momentum (or Adam), ``epochs`` passes over its shard,
    cross-entropy for classification or mean squared error for regression."""

    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    optimizer: str = "sgd"
    kind: str = "classification"
    dp: PrivacyConfig | None = None  # sample-level DP-SGD at every peer; None: plain training

    def __post_init__(self):
        if self.dp is not None and not isinstance(self.dp, PrivacyConfig):
            raise ConfigError("train.dp must be a PrivacyConfig")
        if not 1 <= self.epochs <= 10_000:
            raise ConfigError(f"epochs must be between 1 and 10000, got {self.epochs}")
        if not 1 <= self.batch_size <= 1 << 20:
            raise ConfigError(f"batch size must be between 1 and 1048576, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive finite number, got {self.lr}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})")
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"unknown task kind {self.kind!r} (known: {', '.join(TASK_KINDS)})")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        dp = PrivacyConfig.from_dict(d["dp"]) if d.get("dp") is not None else None
        return cls(**{k: type(getattr(cls, k))(v) for k, v in d.items() if k in cls.__dataclass_fields__ and k != "dp"}, dp=dp)

    def to_dict(self) -> dict:
        out = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "momentum": self.momentum}
        # Written only when not the default, so tasks from before these options keep their CIDs.
        if self.optimizer != "sgd":
            out["optimizer"] = self.optimizer
        if self.kind != "classification":
            out["kind"] = self.kind
        if self.dp is not None:
            out["dp"] = self.dp.to_dict()
        return out


@dataclass(frozen=True)
class DataSchema:
    """What every peer's shard must look like: the task's side of the shard check.

    ``inputs`` is the feature count of tabular data or the (C, H, W) shape of images; ``classes``
    the label count (1 for regression). ``mean``/``std``, when given, are per-feature constants
    every peer standardizes with: declared by the operator, never computed from data no peer holds.
    """

    inputs: int | tuple[int, int, int]
    classes: int
    kind: str = "classification"
    feature_names: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self):
        if not _inputs_ok(self.inputs):
            raise ConfigError(f"data inputs must be a positive feature count or an image shape C,H,W, got {self.inputs!r}")
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"unknown task kind {self.kind!r} (known: {', '.join(TASK_KINDS)})")
        if self.kind == "classification" and self.classes < 2:
            raise ConfigError(f"a classification task needs at least two classes, got {self.classes}")
        if self.kind == "regression" and self.classes != 1:
            raise ConfigError("a regression task has one output")
        width = self.inputs if isinstance(self.inputs, int) else None
        if self.feature_names and width is not None and len(self.feature_names) != width:
            raise ConfigError(f"{len(self.feature_names)} feature names for {width} features")
        if len(self.mean) != len(self.std):
            raise ConfigError("standardization needs as many means as standard deviations")
        if self.mean and (width is None or len(self.mean) != width):
            raise ConfigError(f"standardization constants need one mean and std per feature ({self.inputs!r}), got {len(self.mean)}")
        if any(not (math.isfinite(m) and math.isfinite(s) and s > 0) for m, s in zip(self.mean, self.std)):
            raise ConfigError("standardization constants must be finite, with positive standard deviations")

    @property
    def y_dtype(self) -> str:
        return "int64" if self.kind == "classification" else "float32"

    def to_dict(self) -> dict:
        out: dict[str, Any] = {
            "inputs": list(self.inputs) if isinstance(self.inputs, tuple) else self.inputs,
            "classes": self.classes, "kind": self.kind, "x_dtype": "float32", "y_dtype": self.y_dtype,
        }
        for name in ("feature_names", "label_names", "mean", "std"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "DataSchema":
        try:
            return cls(
                inputs=_inputs(d["inputs"]), classes=int(d["classes"]), kind=str(d.get("kind", "classification")),
                feature_names=tuple(str(n) for n in d.get("feature_names", ())),
                label_names=tuple(str(n) for n in d.get("label_names", ())),
                mean=tuple(float(v) for v in d.get("mean", ())), std=tuple(float(v) for v in d.get("std", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed data schema: {exc}") from None


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    model: ModelSpec
    train: TrainConfig = field(default_factory=TrainConfig)
    rule: str = "fedavg"
    rule_params: tuple[tuple[str, Any], ...] = ()  # the rule's named parameters, pinned with the task
    sample_cap: int = 1_000
    max_update_bytes: int = 16 << 20
    rounds: int = 5
    submit_blocks: int = 60
    vote_blocks: int = 60
    quorum_bps: int = 6_667
    reveal_blocks: int = 0  # > 0: commit-reveal voting with a reveal window this long
    update_reveal_blocks: int = 0  # > 0: sealed updates (commit, then reveal in a window this long)
    data: DataSchema | None = None  # what shards must look like; None: the built-in dataset's
    secure_aggregation: SecureAggregation | None = None  # masked updates; only bucket sums are revealed

    def __post_init__(self):
        if not 5_000 <= self.quorum_bps <= 10_000:
            raise ConfigError(f"quorum must be between 1/2 and 1 of the reputation (a minority must never finalize), got {self.quorum_bps / 10_000:g}")
        for what, value in (("rounds", self.rounds), ("submission window", self.submit_blocks),
                            ("voting window", self.vote_blocks)):
            if not 1 <= value <= UINT32_MAX:
                raise ConfigError(f"{what} must be between 1 and {UINT32_MAX}, got {value}")
        if not 0 <= self.reveal_blocks <= UINT32_MAX:
            raise ConfigError(f"reveal window must be between 0 and {UINT32_MAX}, got {self.reveal_blocks}")
        if not 0 <= self.update_reveal_blocks <= UINT32_MAX:
            raise ConfigError(f"update-reveal window must be between 0 and {UINT32_MAX}, got {self.update_reveal_blocks}")
        if self.sample_cap < 1:
            raise ConfigError("sample cap must be at least 1")
        if self.max_update_bytes < 1:
            raise ConfigError("the update size limit must be positive")
        if self.data is not None:
            if self.data.kind != self.train.kind:
                raise ConfigError(f"the data is for {self.data.kind} but training is set up for {self.train.kind}")
            if (self.data.inputs, self.data.classes) != (self.model.inputs, self.model.classes):
                raise ConfigError(f"the model takes {self.model.inputs!r} inputs and {self.model.classes} outputs, "
                                  f"the data has {self.data.inputs!r} and {self.data.classes}")
        if self.train.kind == "classification" and self.model.classes < 2:
            raise ConfigError("a classification model needs at least two classes")
        sa = self.secure_aggregation
        if sa is not None:
            if self.update_reveal_blocks or self.reveal_blocks:
                raise ConfigError("secure aggregation replaces sealed updates and needs plain votes: "
                                  "set the update-reveal and reveal windows to 0 (masked updates are never visible anyway)")
            if self.vote_blocks <= 2 * sa.stage_blocks + 2:
                raise ConfigError(f"the voting window ({self.vote_blocks} blocks) must be longer than the masking and "
                                  f"unmasking stages ({sa.stage_blocks} blocks each) plus 2 blocks to vote")

    @property
    def rule_options(self) -> dict[str, Any]:
        return dict(self.rule_params)

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "dataset": self.dataset,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "rule": self.rule,
            "sample_cap": self.sample_cap,
            "max_update_bytes": self.max_update_bytes,
            "rounds": self.rounds,
            "submit_blocks": self.submit_blocks,
            "vote_blocks": self.vote_blocks,
            "quorum_bps": self.quorum_bps,
            "reveal_blocks": self.reveal_blocks,
        }
        if self.update_reveal_blocks:  # absent when 0: plain tasks keep their JSON and CIDs
            out["update_reveal_blocks"] = self.update_reveal_blocks
        if self.rule_params:
            out["rule_params"] = dict(self.rule_params)
        if self.data is not None:
            out["data"] = self.data.to_dict()
        if self.secure_aggregation is not None:
            out["secure_aggregation"] = self.secure_aggregation.to_dict()
        return out

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        try:
            params = d.get("rule_params", {})
            if not isinstance(params, dict):
                raise TypeError("rule_params must be an object")
            return cls(
                name=str(d["name"]),
                dataset=str(d["dataset"]),
                model=ModelSpec.from_dict(d["model"]),
                train=TrainConfig.from_dict(d.get("train", {})),
                rule=str(d.get("rule", "fedavg")),
                rule_params=tuple(sorted(params.items())),
                sample_cap=_strict_int(d.get("sample_cap", 1_000), "sample_cap"),
                max_update_bytes=_strict_int(d.get("max_update_bytes", 16 << 20), "max_update_bytes"),
                rounds=_strict_int(d.get("rounds", 5), "rounds"),
                submit_blocks=_strict_int(d.get("submit_blocks", 60), "submit_blocks"),
                vote_blocks=_strict_int(d.get("vote_blocks", 60), "vote_blocks"),
                quorum_bps=_strict_int(d.get("quorum_bps", 6_667), "quorum_bps"),
                reveal_blocks=_strict_int(d.get("reveal_blocks", 0), "reveal_blocks"),
                update_reveal_blocks=_strict_int(d.get("update_reveal_blocks", 0), "update_reveal_blocks"),
                data=DataSchema.from_dict(d["data"]) if d.get("data") is not None else None,
                secure_aggregation=SecureAggregation.from_dict(d["secure_aggregation"])
                if d.get("secure_aggregation") is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"malformed task description: {exc}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> "Task":
        try:
            return cls.from_dict(json.loads(data))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"task description is not JSON: {exc}") from None
