"""The peer runtime: the round state machine, its plugin pipeline, logs, metrics and health."""
from .pipeline import ABSTAIN, Ballot, ClipUpdate, Pipeline, Plugin, UpdateContext, VoteContext
from .runtime import Action, EventLog, Facts, Peer, next_action

__all__ = [
    "ABSTAIN", "Ballot", "ClipUpdate", "Pipeline", "Plugin", "UpdateContext", "VoteContext",
    "Action", "EventLog", "Facts", "Peer", "next_action",
]
