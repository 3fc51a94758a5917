"""A member's sample-level privacy budget across the rounds of a DP task (``train.dp``).

The member trains each round with DP-SGD (``ml/privacy.py``) and keeps one account of every step
it has taken in this task, in memory and, with a state folder, on disk (so a restarted peer
continues the same account instead of starting a fresh budget). Before training a round it checks
that the round's steps keep its epsilon within the task's budget; when they would not, it stops
contributing updates, says so once (``dp_budget_spent``), and keeps voting: a vote is computed
from updates everyone can already see, so it spends none of its data's privacy.

Each round it logs ``dp_spent`` (that round's epsilon on its own, the cumulative epsilon, delta,
noise multiplier, budget) and publishes the cumulative epsilon in its update's metadata
(``protocol/privacy.py``).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..ml.data import Dataset
from ..ml.privacy import PrivacyAccount, check_dp_compatible, noise_multiplier_for, poisson_sampling, train_private
from ..protocol.privacy import PrivacySpent, epsilon_to_micro, noise_to_micro
from ..protocol.task import Task

__all__ = ["SampleDP"]


class SampleDP:
    """The DP-SGD trainer and privacy account of one member in one task."""

    def __init__(self, task: Task, task_cid: str, samples: int, log, *, state_dir: str | Path | None = None):
        self.task = task
        self.dp = task.train.dp
        self.log = log
        check_dp_compatible(task.model)
        self.noise = noise_multiplier_for(self.dp, task.train, task.rounds, samples)
        self.rate, per_epoch = poisson_sampling(samples, task.train.batch_size)
        self.round_entries = [(self.noise, self.rate, task.train.epochs * per_epoch)]
        safe = re.sub(r"[^A-Za-z0-9]", "", task_cid)[:64] or "task"
        self.path = Path(state_dir) / f"privacy-{safe}.json" if state_dir is not None else None
        self.account = PrivacyAccount.load(self.path) if self.path else PrivacyAccount()
        self._done: dict[int, tuple[str, dict[str, torch.Tensor], float]] = {}  # round -> (base, delta, loss)
        self._said_spent = False
        self.log("dp_enabled", None, epsilon_budget=self.dp.epsilon, delta=self.dp.delta,
                 max_grad_norm=self.dp.max_grad_norm, noise_multiplier=round(self.noise, 6), sample_rate=round(self.rate, 6),
                 epsilon=round(self.epsilon, 6))

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon spent so far, at the task's delta."""
        return self.account.epsilon(self.dp.delta)

    @property
    def spent(self) -> PrivacySpent:
        return PrivacySpent(epsilon_to_micro(self.epsilon), noise_to_micro(self.noise))

    @property
    def exhausted(self) -> bool:
        """Whether this member has stopped contributing because its budget is spent."""
        return self._said_spent

    def admits(self, round_: int) -> bool:
        """Whether this member may train round ``round_`` within its budget; says
        ``dp_budget_spent`` once when it may not."""
        if round_ in self._done or self.account.fits(self.dp.epsilon, self.dp.delta, self.round_entries):
            return True
        if not self._said_spent:
            self._said_spent = True
            self.log("dp_budget_spent", round_, epsilon=round(self.epsilon, 6), budget=self.dp.epsilon, delta=self.dp.delta,
                     reason="another round would exceed the task's privacy budget: this member stops contributing "
                            "updates and keeps voting")
        return False

    def train(self, round_: int, base_cid: str, base: dict[str, torch.Tensor], data: Dataset, *, seed: int
              ) -> tuple[dict[str, torch.Tensor], float]:
        """The round's DP-SGD update. Training the same round again (a retried submission) returns
        the update already paid for instead of spending more."""
        done = self._done.get(round_)
        if done is not None and done[0] == base_cid:
            return done[1], done[2]
        before = self.epsilon
        delta, loss, entries = train_private(self.task.model, base, data, self.task.train, noise_multiplier=self.noise, seed=seed)
        self.account.add(entries)
        if self.path:
            self.account.save(self.path)
        self._done = {round_: (base_cid, delta, loss)}
        after = self.epsilon
        self.log("dp_spent", round_, epsilon_round=round(PrivacyAccount(entries).epsilon(self.dp.delta), 6),
                 epsilon=round(after, 6), epsilon_added=round(after - before, 6), delta=self.dp.delta,
                 noise_multiplier=round(self.noise, 6), budget=self.dp.epsilon)
        return delta, loss
