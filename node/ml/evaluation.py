"""A global model evaluated on local data, in the integer form peers publish (protocol/evaluation.py)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from ..protocol.evaluation import Evaluation, mse_to_micro, to_ppm
from ..protocol.task import ModelSpec
from .models import build_model

__all__ = ["evaluate_samples", "classification_counts", "roc_auc_twice_u"]


def classification_counts(pred: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """(correct predictions, balanced accuracy x 10**6): the mean recall over the classes present in ``y``."""
    correct = int((pred == y).sum())
    recalls = [(int((pred[y == c] == c).sum()), int((y == c).sum())) for c in np.unique(y)]
    mean = sum((Fraction(h, n) for h, n in recalls), Fraction(0)) / len(recalls)  # exact
    return correct, to_ppm(mean.numerator, mean.denominator)


def roc_auc_twice_u(score: np.ndarray, y: np.ndarray) -> tuple[int, int] | None:
    """(2U, 2 x positives x negatives) of the Mann-Whitney U statistic of ``score`` for class 1
    against class 0, ties counting one half (AUC = 2U / that); None without both classes."""
    pos, neg = np.sort(score[y == 1]), np.sort(score[y == 0])
    if len(pos) == 0 or len(neg) == 0:
        return None
    below = np.searchsorted(neg, pos, side="left")
    upto = np.searchsorted(neg, pos, side="right")
    twice_u = int((2 * below + (upto - below)).sum())
    return twice_u, 2 * len(pos) * len(neg)


@torch.no_grad()
def evaluate_samples(spec: ModelSpec, state: dict[str, torch.Tensor], x: np.ndarray, y: np.ndarray, *,
                     kind: str, round_: int) -> Evaluation:
    """``state`` (the finalized model of ``round_``) evaluated on samples ``x``, ``y``."""
    if len(y) == 0:
        raise ValueError("nothing to evaluate on: no samples")
    model = build_model(spec)
    model.load_state_dict(state)
    model.eval()
    out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    if kind == "regression":
        err = out.reshape(len(y)).double() - torch.from_numpy(np.asarray(y, dtype=np.float64))
        mse = float((err * err).mean())
        return Evaluation(round_, len(y), mse_micro=mse_to_micro(mse if np.isfinite(mse) else float(2**62)))
    y = np.asarray(y, dtype=np.int64)
    pred = out.argmax(1).numpy()
    correct, balanced = classification_counts(pred, y)
    auc = None
    if spec.classes == 2:
        found = roc_auc_twice_u(torch.softmax(out.double(), 1)[:, 1].numpy(), y)
        auc = to_ppm(*found) if found else None
    return Evaluation(round_, len(y), correct=correct, balanced_accuracy_ppm=balanced, roc_auc_ppm=auc)
