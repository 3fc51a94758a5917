"""Federated evaluation in integers: what a peer publishes about a global model, and how the
published numbers combine into one federated metric per round.

There is no central test set. Every peer evaluates the global model it trains on (the base of
the round it submits to) on the holdout kept inside its own shard, and publishes the result in
its update artifact's metadata, labelled with the round whose finalized model it evaluated
(0: the initial model). Every number is an integer written as a canonical decimal string, so the
record can be audited and combined exactly:

====================================  ==============================================================
``eval_round``                        round whose finalized model was evaluated (< the update's round)
``eval_samples``                      holdout samples, 1 .. 2**32-1
``eval_correct``                      classification: correctly classified samples, <= eval_samples
``eval_balanced_accuracy_ppm``        classification: balanced accuracy x 10**6 (mean per-class recall
                                      over the classes present in the holdout), rounded half up
``eval_roc_auc_ppm``                  binary tasks, when the holdout has both classes: ROC AUC x 10**6
                                      (Mann-Whitney U over the class-1 scores, ties count one half)
``eval_mse_micro``                    regression: mean squared error x 10**6, rounded, at most 10**18-1
====================================  ==============================================================

An update either carries no ``eval_*`` key, or exactly the set its task's kind calls for. Any
other ``eval_*`` key, a missing one, a value that is not a canonical decimal integer, or one out
of range makes the *artifact* malformed, and the update is excluded like any other malformed
update (``ArtifactInvalid``): a member that cannot write its metadata correctly cannot be
trusted with its tensors either, and every honest peer decides the same from the same bytes.

The federated metric of a round is the mean of the published metrics weighted by holdout size,
each weight capped at the task's ``sample_cap`` (sample counts are self-reported, like the
training sample counts, and the same cap bounds one member's sway). Accuracy weighted this way
is exactly the pooled accuracy ``sum(correct) / sum(samples)`` whenever no weight is capped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from ..errors import ArtifactInvalid

__all__ = [
    "SCALE", "MAX_SAMPLES", "MAX_MSE_MICRO", "EVAL_KEYS", "Evaluation", "evaluation_metadata", "parse_evaluation",
    "to_ppm", "mse_to_micro", "federated_metric", "headline", "METRIC_NAMES",
]

SCALE = 10**6  # fixed-point denominator of the *_ppm and *_micro fields
MAX_SAMPLES = 2**32 - 1
MAX_MSE_MICRO = 10**18 - 1
_INT = re.compile(r"(0|[1-9][0-9]{0,18})")  # canonical, non-negative, at most 19 digits
_CLASSIFICATION = ("eval_round", "eval_samples", "eval_correct", "eval_balanced_accuracy_ppm")
_REGRESSION = ("eval_round", "eval_samples", "eval_mse_micro")
EVAL_KEYS = frozenset(_CLASSIFICATION + _REGRESSION + ("eval_roc_auc_ppm",))
METRIC_NAMES = ("accuracy", "balanced_accuracy", "roc_auc", "mse")


@dataclass(frozen=True)
class Evaluation:
    """One peer's evaluation of one global model on its holdout, in the published integer form."""

    round: int  # the round whose finalized model was evaluated (0: the initial model)
    samples: int
    correct: int | None = None  # classification
    balanced_accuracy_ppm: int | None = None  # classification
    roc_auc_ppm: int | None = None  # binary classification with both classes in the holdout
    mse_micro: int | None = None  # regression

    @property
    def kind(self) -> str:
        return "regression" if self.mse_micro is not None else "classification"

    def metrics(self) -> dict[str, float]:
        """The metrics as numbers for people (not for anything that must agree bit for bit)."""
        if self.kind == "regression":
            return {"mse": self.mse_micro / SCALE}
        out = {"accuracy": self.correct / self.samples, "balanced_accuracy": self.balanced_accuracy_ppm / SCALE}
        if self.roc_auc_ppm is not None:
            out["roc_auc"] = self.roc_auc_ppm / SCALE
        return out


def to_ppm(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` x 10**6, rounded half up, in integers."""
    if denominator <= 0 or numerator < 0:
        raise ValueError("to_ppm needs a non-negative numerator and a positive denominator")
    return (2 * numerator * SCALE + denominator) // (2 * denominator)


def mse_to_micro(mse: float) -> int:
    """A mean squared error in the published fixed-point form (clamped to the field's range)."""
    if not mse == mse or mse < 0:  # NaN, or a negative error cannot come from squares
        raise ValueError(f"not a mean squared error: {mse!r}")
    return min(int(round(mse * SCALE)), MAX_MSE_MICRO) if mse < MAX_MSE_MICRO else MAX_MSE_MICRO


def evaluation_metadata(ev: Evaluation) -> dict[str, str]:
    """The metadata fields that carry ``ev`` (decimal strings)."""
    out = {"eval_round": ev.round, "eval_samples": ev.samples}
    if ev.kind == "regression":
        out["eval_mse_micro"] = ev.mse_micro
    else:
        out["eval_correct"] = ev.correct
        out["eval_balanced_accuracy_ppm"] = ev.balanced_accuracy_ppm
        if ev.roc_auc_ppm is not None:
            out["eval_roc_auc_ppm"] = ev.roc_auc_ppm
    return {k: str(int(v)) for k, v in out.items()}


def _int(meta: dict, key: str, low: int, high: int) -> int:
    value = meta[key]
    if not isinstance(value, str) or not _INT.fullmatch(value):
        raise ArtifactInvalid(f"metadata {key} is not a canonical decimal integer")
    n = int(value)
    if not low <= n <= high:
        raise ArtifactInvalid(f"metadata {key}={n} is out of range [{low}, {high}]")
    return n


def parse_evaluation(meta: dict, *, round_: int, kind: str, classes: int) -> Evaluation | None:
    """The evaluation an update's metadata carries, None if it carries none; ``ArtifactInvalid``
    if the ``eval_*`` fields are malformed for an update of ``round_`` in a task of ``kind``
    with ``classes`` classes (see the module's table)."""
    present = {k for k in meta if isinstance(k, str) and k.startswith("eval_")}
    if not present:
        return None
    unknown = present - EVAL_KEYS
    if unknown:
        raise ArtifactInvalid(f"metadata has unknown evaluation field {sorted(unknown)[0][:40]!r}")
    required = set(_REGRESSION if kind == "regression" else _CLASSIFICATION)
    allowed = required | ({"eval_roc_auc_ppm"} if kind == "classification" and classes == 2 else set())
    if not required <= present or not present <= allowed:
        missing, extra = sorted(required - present), sorted(present - allowed)
        raise ArtifactInvalid(f"metadata evaluation fields do not fit a {kind} task (missing {missing}, unexpected {extra})")
    if round_ < 1:
        raise ArtifactInvalid("metadata carries an evaluation in a round before any model was evaluated")
    ev_round = _int(meta, "eval_round", 0, round_ - 1)
    samples = _int(meta, "eval_samples", 1, MAX_SAMPLES)
    if kind == "regression":
        return Evaluation(ev_round, samples, mse_micro=_int(meta, "eval_mse_micro", 0, MAX_MSE_MICRO))
    return Evaluation(
        ev_round, samples, correct=_int(meta, "eval_correct", 0, samples),
        balanced_accuracy_ppm=_int(meta, "eval_balanced_accuracy_ppm", 0, SCALE),
        roc_auc_ppm=_int(meta, "eval_roc_auc_ppm", 0, SCALE) if "eval_roc_auc_ppm" in present else None,
    )


def federated_metric(evaluations: list[Evaluation], *, cap: int | None = None) -> dict[str, Fraction | int]:
    """The holdout-size-weighted mean of each metric over ``evaluations`` (of one model), exact.

    Each weight is ``min(samples, cap)``. Returns ``{"samples": total holdout samples, "peers":
    count, metric: Fraction}``; ``roc_auc`` averages only the evaluations that carry one.
    """
    if not evaluations:
        return {}
    w = [min(e.samples, cap) if cap else e.samples for e in evaluations]
    total = sum(w)
    out: dict[str, Fraction | int] = {"samples": sum(e.samples for e in evaluations), "peers": len(evaluations)}
    if evaluations[0].kind == "regression":
        out["mse"] = Fraction(sum(wi * e.mse_micro for wi, e in zip(w, evaluations) if e.mse_micro is not None), total * SCALE)
        return out
    out["accuracy"] = sum((Fraction(wi * e.correct, e.samples) for wi, e in zip(w, evaluations)), Fraction(0)) / total
    out["balanced_accuracy"] = Fraction(sum(wi * e.balanced_accuracy_ppm for wi, e in zip(w, evaluations)), total * SCALE)
    auc = [(wi, e.roc_auc_ppm) for wi, e in zip(w, evaluations) if e.roc_auc_ppm is not None]
    if auc:
        out["roc_auc"] = Fraction(sum(wi * a for wi, a in auc), sum(wi for wi, _ in auc) * SCALE)
    return out


def headline(kind: str) -> str:
    """The metric a round is summarized by: accuracy for classification, MSE for regression."""
    return "mse" if kind == "regression" else "accuracy"
