"""Local training and evaluation on a peer's own data. Nothing here leaves the peer."""
from __future__ import annotations

import torch
from torch import nn

from .data import Dataset
from .models import build_model
from ..protocol.task import ModelSpec, TrainConfig

__all__ = ["TrainConfig", "train_local", "evaluate"]


def train_local(
    spec: ModelSpec, base: dict[str, torch.Tensor], data: Dataset, cfg: TrainConfig, *, seed: int
) -> tuple[dict[str, torch.Tensor], float]:
    """Train from ``base`` on ``data``; return (delta = trained - base, mean loss of last epoch)."""
    torch.manual_seed(seed)
    model, opt = model_and_optimizer(spec, base, cfg)
    loss_fn = _loss(cfg.kind)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    last = 0.0
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(y))
        total, batches = 0.0, 0
        for start in range(0, len(y), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        last = total / max(batches, 1)
    trained = model.state_dict()
    return {k: (trained[k] - base[k]).detach() for k in base}, last


def warm_up() -> None:
    """Take one optimizer step on a throwaway parameter. torch imports ``torch._dynamo`` and its
    dependencies (about 800 modules, sympy among them) lazily, on the first step of any
    optimizer: seconds on an idle machine, tens of seconds on a loaded one. A peer calls this when
    it starts, so that the cost does not fall inside its first submission window."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.0)
    p.sum().backward()
    opt.step()


def model_and_optimizer(spec: ModelSpec, base: dict[str, torch.Tensor], cfg: TrainConfig) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model at ``base`` and the task's optimizer over its parameters."""
    model = build_model(spec)
    model.load_state_dict(base)
    if cfg.optimizer == "adam":
        return model, torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return model, torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


def _loss(kind: str):
    if kind == "regression":
        mse = nn.MSELoss()
        return lambda out, y: mse(out.reshape(y.shape), y)
    return nn.CrossEntropyLoss()


@torch.no_grad()
def evaluate(spec: ModelSpec, state: dict[str, torch.Tensor], data: Dataset, *, kind: str = "classification") -> float:
    """Accuracy of a classifier, or mean squared error of a regression, on ``data``."""
    model = build_model(spec)
    model.load_state_dict(state)
    model.eval()
    out = model(torch.from_numpy(data.x))
    y = torch.from_numpy(data.y)
    if kind == "regression":
        return float(((out.reshape(y.shape) - y) ** 2).mean())
    return float((out.argmax(1) == y).float().mean())
