"""Deploying a task, and the deployment file that every other command reads."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..chain import ChainClient, deploy_contract
from ..protocol.cid import cid_to_digest
from ..errors import ConfigError, DeploymentNotFound
from ..store import ArtifactStore
from ..protocol.task import Task

__all__ = ["Deployment", "deploy_task"]


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    rpc_url: str
    contract: str
    deploy_block: int
    task_cid: str
    initial_model: str
    store: str
    task: dict
    version: int = 1

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        tmp.replace(p)  # readers waiting for the file never see half of it
        return p

    @classmethod
    def load(cls, path: str | Path) -> "Deployment":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise DeploymentNotFound(f"deployment file {p} not found (run `fedchain deploy` first, or pass --deployment)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"deployment file {p} is unreadable: {exc}") from None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError as exc:
            raise ConfigError(f"deployment file {p} is incomplete: {exc}") from None

    def task_object(self) -> Task:
        return Task.from_dict(self.task)


def deploy_task(
    client: ChainClient,
    store: ArtifactStore,
    task: Task,
    members: list[str],
    *,
    seed: int = 0,
    rpc_url: str | None = None,
) -> Deployment:
    """Pin the task description and initial model, deploy the contract, return the deployment."""
    if not members:
        raise ConfigError("a task needs at least one member")
    if len(set(m.lower() for m in members)) != len(members):
        raise ConfigError("member list has duplicates")
    # torch comes in only here: the commands that merely read a deployment start without it.
    from ..aggregation import rule_of
    from ..ml.models import init_state
    from ..protocol.artifact import encode
    from ..protocol.round import model_metadata

    rule = rule_of(task)  # rejects an unknown rule or bad parameters before anything is spent
    task_cid = store.add(task.to_bytes())
    initial = encode(init_state(task.model, seed), model_metadata(task_cid, 0, "", rule=task.rule))
    model_cid = store.add(initial)
    address, block = deploy_contract(
        client,
        members=members,
        initial_model=cid_to_digest(model_cid),
        task=cid_to_digest(task_cid),
        submit_blocks=task.submit_blocks,
        vote_blocks=task.vote_blocks,
        quorum_bps=task.quorum_bps,
        max_rounds=task.rounds,
        rule=rule.rule_id,
        reveal_blocks=task.reveal_blocks,
        update_reveal_blocks=task.update_reveal_blocks,
    )
    return Deployment(
        chain_id=client.chain_id(), rpc_url=rpc_url or client.rpc_url, contract=address, deploy_block=block,
        task_cid=task_cid, initial_model=model_cid, store=store.spec, task=task.to_dict(),
    )
