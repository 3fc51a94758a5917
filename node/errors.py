"""fedchain's exceptions: one base class, and subclasses that say what went wrong.

Contract reverts are decoded into these (see ``chain.py``); the CLI prints ``str(error)`` as one
line and exits non-zero.
"""
from __future__ import annotations

__all__ = [
    "FedChainError",
    "ConfigError",
    "DeploymentNotFound",
    "KeyLoadError",
    "ChainUnavailable",
    "InsufficientFunds",
    "TransactionRefused",
    "ContractError",
    "NotMember",
    "RoundClosed",
    "RoundNotOpen",
    "TaskComplete",
    "WindowClosed",
    "AlreadySubmitted",
    "AlreadyVoted",
    "DuplicateUpdate",
    "VotingNotOpen",
    "QuorumNotReached",
    "RoundStillOpen",
    "InvalidOutcome",
    "UnknownRound",
    "NotVisibleYet",
    "StoreError",
    "StoreUnavailable",
    "ArtifactNotFound",
    "InvalidCID",
    "ArtifactInvalid",
    "ArtifactTooLarge",
]


class FedChainError(Exception):
    """Base class of every error fedchain raises on purpose."""


class ConfigError(FedChainError):
    """A setting, option or file the user gave is unusable."""


class DeploymentNotFound(ConfigError):
    """No deployment file where one was expected."""


class KeyLoadError(FedChainError):
    """A private key or keystore could not be loaded (missing, malformed, wrong password)."""


class ChainUnavailable(FedChainError):
    """The Ethereum JSON-RPC endpoint cannot be reached or answered badly."""


class InsufficientFunds(FedChainError):
    """The sending account cannot pay for gas. Retrying does not help: fund the account."""


class ContractError(FedChainError):
    """The contract rejected a call; subclasses name the custom error it reverted with."""

    def __init__(self, message: str, *, name: str = "", args: tuple = ()):  # noqa: D401
        super().__init__(message)
        self.name = name
        self.revert_args = args


class NotMember(ContractError):
    pass


class RoundClosed(ContractError):
    pass


class RoundNotOpen(ContractError):
    pass


class TaskComplete(ContractError):
    pass


class WindowClosed(ContractError):
    pass


class AlreadySubmitted(ContractError):
    pass


class AlreadyVoted(ContractError):
    pass


class DuplicateUpdate(ContractError):
    pass


class VotingNotOpen(ContractError):
    pass


class QuorumNotReached(ContractError):
    pass


class RoundStillOpen(ContractError):
    pass


class InvalidOutcome(ContractError):
    pass


class UnknownRound(FedChainError):
    """The round asked about does not exist (yet) on this task's chain."""


class NotVisibleYet(FedChainError):
    """What a decision needs is not visible yet (events behind ``--confirmations``, or fewer
    submissions in view than the chain counts): wait and look again."""


class StoreError(FedChainError):
    """The artifact store failed."""


class StoreUnavailable(StoreError):
    """The store (e.g. a Kubo daemon) cannot be reached."""


class ArtifactNotFound(StoreError):
    """No block or artifact with that CID is in the store."""


class InvalidCID(FedChainError):
    """A string that is not a CIDv0 (base58btc sha2-256 multihash)."""


class ArtifactInvalid(FedChainError):
    """An artifact failed validation: wrong CID, not safetensors, bad schema, non-finite, too big."""


class ArtifactTooLarge(ArtifactInvalid):
    """An artifact's content graph exceeds a fetch budget (bytes, blocks, links or depth): it is
    refused while the graph is walked, before it is assembled in memory."""


class TransactionRefused(ContractError):
    """The node refused a transaction for a reason that is neither an outage nor a revert
    (a gas limit, an unknown refusal); peers retry with backoff, commands report it."""
