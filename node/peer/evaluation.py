"""Federated evaluation on the peer's side: evaluate each global model on the holdout kept inside
this peer's shard, publish the result with the next update, and keep the federated metric of
the latest round (from every valid update's published evaluation) as a Prometheus gauge.

The runtime calls three methods: ``of_base`` when it builds an update's metadata, ``observe``
when it has the round's validated updates, and ``final`` when the task is complete (the last
round's model has no next update to carry its evaluation, so it is logged: ``evaluated``).
"""
from __future__ import annotations

import math

from ..ledger.updates import load_model
from ..ml.evaluation import evaluate_samples
from ..protocol.cid import digest_to_cid
from ..protocol.evaluation import Evaluation, METRIC_NAMES, evaluation_metadata, federated_metric
from ..protocol.round import RoundInputs

__all__ = ["HoldoutEvaluation"]


class HoldoutEvaluation:
    """Evaluates global models on ``data``'s holdout for one peer; publishes nothing without one."""

    def __init__(self, peer):
        self.peer = peer
        data = peer.data
        self.x, self.y = data.x_holdout, data.y_holdout
        self.enabled = self.x is not None and self.y is not None and len(self.y) > 0
        self._cache: dict[str, Evaluation] = {}  # model CID -> its evaluation
        if not self.enabled:
            peer.log("no_holdout", None, reason="the shard has no holdout (x_holdout, y_holdout): this peer publishes "
                     "no evaluation of the global models; make shards with `data split --holdout` or `data import --holdout`")

    def _evaluate(self, cid: str, state, round_: int) -> Evaluation:
        if cid not in self._cache:
            task = self.peer.task
            ev = evaluate_samples(task.model, state, self.x, self.y, kind=task.train.kind, round_=round_)
            self._cache = {cid: ev}  # only the latest model is asked for again
            self.peer.metrics.inc("holdout_evaluations_total")
            self.peer.log("evaluated", round_, model=cid, **evaluation_metadata(ev),
                          **{k: round(v, 6) for k, v in ev.metrics().items()})
        return self._cache[cid]

    def _round_of_base(self, round_: int) -> int:
        """The round whose finalized model round ``round_`` trains on (0: the initial model)."""
        for k in range(round_ - 1, 0, -1):
            if self.peer.chain.is_finalized(k):
                return k
        return 0

    def of_base(self, round_: int, base_cid: str, base) -> Evaluation | None:
        """This peer's evaluation of the base model of ``round_``, to publish with its update."""
        if not self.enabled:
            return None
        return self._evaluate(base_cid, base, self._round_of_base(round_))

    def observe(self, inputs: RoundInputs) -> None:
        """Set the gauges from the evaluations the valid updates of a round carry."""
        evs = [c.evaluation for c in inputs.contributions if c.evaluation is not None]
        if not evs:
            return
        latest = max(e.round for e in evs)
        fed = federated_metric([e for e in evs if e.round == latest], cap=self.peer.task.sample_cap)
        for name in METRIC_NAMES:
            self.peer.metrics.set("federated_metric", float(fed[name]) if name in fed else math.nan, metric=name)
        self.peer.metrics.set("federated_metric_round", latest)

    def final(self, last_round: int) -> None:
        """Evaluate the last round's finalized model (logged: no update will carry it)."""
        if not self.enabled or last_round < 1:
            return
        found = self.peer.chain.outcome(last_round, from_block=self.peer.deploy_block)
        if found is None:
            return  # the last round failed: its base was evaluated already
        cid = digest_to_cid(found.model)
        self._evaluate(cid, load_model(self.peer.store, cid, self.peer.task, self.peer.schema), last_round)
