"""Sample-level differential privacy inside a member: DP-SGD through Opacus, and its accountant.

DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016): each example's
gradient is clipped to the task's ``max_grad_norm``, the clipped gradients of a batch are summed,
and Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm`` is added before the
optimizer step. Batches are drawn by Poisson sampling, each example independently with
probability ``q`` (Opacus's default, the sampling the accountant's amplification assumes).

Accounting uses Opacus's Renyi-DP accountant (Mironov, "Renyi Differential Privacy", CSF 2017;
Mironov, Talwar and Zhang, "Renyi Differential Privacy of the Sampled Gaussian Mechanism",
2019). A member's account is the list of (noise multiplier, sample rate, steps) it has run,
across all rounds of the task; epsilon at the task's delta follows from it, and it is plain JSON
so it survives a restart.

Sampling as Opacus's ``make_private`` sets it up: a shard of ``n`` samples and batch size ``B``
gives ``k = ceil(n / B)`` steps per epoch at sample rate ``q = 1 / k``.

The noise comes from torch's seeded generator, not a cryptographically secure one (Opacus's
``secure_mode`` needs torchcsprng, which is not installed): fine for measuring, to be replaced
before relying on it against an adversary who can model the generator.

Models: the built-in ``mlp``, ``logreg`` and ``cnn`` (convolutions, pooling and linear layers)
are DP-compatible. BatchNorm is not (it mixes examples of a batch, so a per-example gradient
does not exist); a model with it is refused with Opacus's explanation.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError
from ..protocol.task import ModelSpec, PrivacyConfig, TrainConfig
from .data import Dataset
from .models import build_model

__all__ = ["ACCOUNTANT", "poisson_sampling", "noise_multiplier_for", "PrivacyAccount", "check_dp_compatible",
           "train_private"]

ACCOUNTANT = "rdp"
_SLACK = 1e-9  # float noise when comparing a spent epsilon with a budget it was computed to meet


def poisson_sampling(samples: int, batch_size: int) -> tuple[float, int]:
    """(sample rate, steps per epoch) of Poisson sampling as Opacus sets it up for a shard."""
    if samples < 1 or batch_size < 1:
        raise ConfigError("DP-SGD needs at least one training sample")
    steps = math.ceil(samples / batch_size)
    return 1.0 / steps, steps


def noise_multiplier_for(dp: PrivacyConfig, train: TrainConfig, rounds: int, samples: int) -> float:
    """The noise multiplier this member trains with: the task's, or the smallest (to Opacus's
    tolerance) whose epsilon over all ``rounds`` x epochs at this member's sample rate stays within
    the budget. Members with different shard sizes get different multipliers."""
    if dp.noise_multiplier is not None:
        return dp.noise_multiplier
    from opacus.accountants.utils import get_noise_multiplier

    q, per_epoch = poisson_sampling(samples, train.batch_size)
    try:
        return float(get_noise_multiplier(target_epsilon=dp.epsilon, target_delta=dp.delta, sample_rate=q,
                                          steps=rounds * train.epochs * per_epoch, accountant=ACCOUNTANT,
                                          epsilon_tolerance=0.01))
    except ValueError as exc:
        raise ConfigError(f"no noise multiplier reaches epsilon {dp.epsilon} at delta {dp.delta} over "
                          f"{rounds * train.epochs} epochs of {samples} samples: {exc}") from None


class PrivacyAccount:
    """One member's DP-SGD history over a task: [(noise multiplier, sample rate, steps)]."""

    def __init__(self, history: list[tuple[float, float, int]] | None = None):
        self.history: list[tuple[float, float, int]] = [tuple(h) for h in history or []]

    def epsilon(self, delta: float, extra: list[tuple[float, float, int]] = ()) -> float:
        """Epsilon at ``delta`` of the history (plus ``extra`` steps not taken yet); 0 if empty."""
        from opacus.accountants import RDPAccountant

        history = self.history + list(extra)
        if not history:
            return 0.0
        acc = RDPAccountant()
        acc.history = history
        return float(acc.get_epsilon(delta))

    def fits(self, budget: float | None, delta: float, extra: list[tuple[float, float, int]]) -> bool:
        """Whether ``extra`` steps keep epsilon within ``budget`` (None: no budget)."""
        return budget is None or self.epsilon(delta, extra) <= budget * (1 + _SLACK)

    def add(self, entries: list[tuple[float, float, int]]) -> None:
        for sigma, q, steps in entries:
            if self.history and self.history[-1][:2] == (sigma, q):
                self.history[-1] = (sigma, q, self.history[-1][2] + steps)
            else:
                self.history.append((sigma, q, steps))

    def to_json(self) -> str:
        return json.dumps({"accountant": ACCOUNTANT, "history": [list(h) for h in self.history]})

    @classmethod
    def load(cls, path: Path) -> "PrivacyAccount":
        """The account saved at ``path``; an empty one if there is none. A damaged file is an
        error, never a fresh budget."""
        if not path.exists():
            return cls()
        try:
            d = json.loads(path.read_text())
            history = [(float(s), float(q), int(n)) for s, q, n in d["history"]]
            if d.get("accountant") != ACCOUNTANT or any(not (s > 0 and 0 < q <= 1 and n >= 0) for s, q, n in history):
                raise ValueError("unexpected values")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the privacy account {path} is unreadable ({exc}); refusing to start over with a fresh budget") from None
        return cls(history)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)


def check_dp_compatible(spec: ModelSpec) -> None:
    """``ConfigError`` if DP-SGD cannot train this model (e.g. BatchNorm)."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(build_model(spec), strict=False)
    if errors:
        raise ConfigError(f"model {spec.arch!r} cannot be trained with DP-SGD: {errors[0]}")


def train_private(
    spec: ModelSpec, base: dict[str, torch.Tensor], data: Dataset, cfg: TrainConfig, *, noise_multiplier: float,
    seed: int,
) -> tuple[dict[str, torch.Tensor], float, list[tuple[float, float, int]]]:
    """DP-SGD from ``base`` on ``data`` for ``cfg.epochs`` epochs; returns (delta = trained - base,
    mean loss of the last epoch, the accountant entries this run added)."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from .training import _loss, model_and_optimizer

    dp = cfg.dp
    if dp is None:
        raise ConfigError("train_private needs a task with differential privacy")
    torch.manual_seed(seed)
    model, opt = model_and_optimizer(spec, base, cfg)
    loader = DataLoader(TensorDataset(torch.from_numpy(data.x), torch.from_numpy(data.y)), batch_size=cfg.batch_size)
    q, per_epoch = poisson_sampling(len(data.y), cfg.batch_size)
    engine = PrivacyEngine(accountant=ACCOUNTANT)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")  # see the module's note
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        private, opt, loader = engine.make_private(module=model, optimizer=opt, data_loader=loader,
                                                   noise_multiplier=noise_multiplier, max_grad_norm=dp.max_grad_norm,
                                                   poisson_sampling=True)
        if len(loader) != per_epoch or not math.isclose(loader.sample_rate, q):
            raise RuntimeError(f"Opacus sampled at {loader.sample_rate} x {len(loader)}, accounted {q} x {per_epoch}")
        loss_fn = _loss(cfg.kind)
        last = 0.0
        private.train()
        for _ in range(cfg.epochs):
            total, batches = 0.0, 0
            for xb, yb in loader:
                opt.zero_grad()
                loss = loss_fn(private(xb), yb)
                loss.backward()
                opt.step()  # an empty Poisson batch still takes a (pure-noise) step, as accounted
                if len(yb):
                    total += loss.item()
                    batches += 1
            last = total / max(batches, 1)
    trained = model.state_dict()  # the wrapped module's parameters are the model's own
    entries = [(float(s), float(r), int(n)) for s, r, n in engine.accountant.history]
    return {k: (trained[k] - base[k]).detach() for k in base}, last, entries
