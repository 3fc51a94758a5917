"""The peer's view of the FedChain contract: typed views, event queries and safe transactions.

Reverts are decoded from the contract's custom errors into ``errors.ContractError`` subclasses;
connection problems become ``ChainUnavailable`` after bounded retries with backoff.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources

from eth_abi import decode as abi_decode, encode
from eth_utils import function_signature_to_4byte_selector
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from .. import errors as E
from .._utils import redact_url

__all__ = ["refusal_error", 
    "Phase", "RoundState", "MemberInfo", "Outcome", "ChainClient", "load_artifact", "deploy_contract", "quorum_fraction",
    "ZERO32",
]

ZERO32 = b"\0" * 32


class Phase(IntEnum):
    SUBMISSION = 0
    VOTING = 1
    EXPIRED = 2
    COMPLETE = 3
    REVEAL = 4  # commit-reveal votes: committed votes are revealed
    UPDATE_REVEAL = 5  # sealed updates: the submission window closed, committed updates are revealed
    SETUP = 6  # members still being registered: no round is open yet


@dataclass(frozen=True)
class RoundState:
    round: int
    phase: Phase
    start_block: int
    submit_deadline: int
    vote_deadline: int
    submissions: int  # in sealed tasks: update commitments
    total_reputation: int
    reveals: int = 0  # sealed updates revealed so far (0 in plain tasks)


@dataclass(frozen=True)
class MemberInfo:
    address: str
    index: int
    reputation: int
    submitted_round: int
    voted_round: int
    settled_round: int


@dataclass(frozen=True)
class Outcome:
    model: bytes
    included: int

    @staticmethod
    def none() -> "Outcome":
        return Outcome(ZERO32, 0)


_ERRORS = {
    "FedChainNotMember": E.NotMember,
    "FedChainRoundClosed": E.RoundClosed,
    "FedChainRoundNotOpen": E.RoundNotOpen,
    "FedChainTaskComplete": E.TaskComplete,
    "FedChainSubmissionClosed": E.WindowClosed,
    "FedChainVotingClosed": E.WindowClosed,
    "FedChainAlreadySubmitted": E.AlreadySubmitted,
    "FedChainAlreadyVoted": E.AlreadyVoted,
    "FedChainVotingNotOpen": E.VotingNotOpen,
    "FedChainQuorumNotReached": E.QuorumNotReached,
    "FedChainRoundStillOpen": E.RoundStillOpen,
    "FedChainInvalidOutcome": E.InvalidOutcome,
    "FedChainRevealNotOpen": E.VotingNotOpen,
    "FedChainNothingToReveal": E.AlreadyVoted,
    "FedChainUpdateRevealNotOpen": E.VotingNotOpen,
    "FedChainUpdateRevealClosed": E.WindowClosed,
    "FedChainNoSealedUpdate": E.AlreadySubmitted,
}


def load_artifact() -> dict:
    """The compiled contract (ABI and bytecode) from the committed ``FedChain.json``.

    The contract is compiled only by the build step (``make contracts``); a source that changed
    since the artifact was built is refused here rather than silently recompiled at run time.
    """
    import hashlib

    pkg = resources.files("fedchain.contracts")
    artifact = json.loads(pkg.joinpath("FedChain.json").read_text())
    source = pkg.joinpath("FedChain.sol")
    if source.is_file() and hashlib.sha256(source.read_bytes()).hexdigest() != artifact.get("sourceSha256"):
        raise E.ConfigError("FedChain.sol changed since FedChain.json was built: run `make contracts`")
    return artifact


class _ErrorDecoder:
    def __init__(self, abi: list[dict]):
        self._by_selector = {}
        for item in abi:
            if item.get("type") == "error":
                types = [i["type"] for i in item["inputs"]]
                sig = f"{item['name']}({','.join(types)})"
                self._by_selector[function_signature_to_4byte_selector(sig)] = (item["name"], types)

    def decode(self, data) -> E.ContractError | None:
        if isinstance(data, dict):
            data = data.get("data")
        if not isinstance(data, str) or not data.startswith("0x") or len(data) < 10:
            return None
        raw = bytes.fromhex(data[2:])
        found = self._by_selector.get(raw[:4])
        if not found:
            return None
        name, types = found
        args = abi_decode(types, raw[4:]) if types else ()
        shown = ", ".join("0x" + a.hex() if isinstance(a, bytes) else str(a) for a in args)
        cls = _ERRORS.get(name, E.ContractError)
        return cls(f"contract rejected the call: {name}({shown})", name=name, args=tuple(args))


# What a node's refusal of a transaction means, by the words Ethereum clients (geth, anvil,
# Hardhat's EDR, Erigon, Besu) use for it: (markers, error class, what to tell the user).
_REFUSALS: tuple[tuple[tuple[str, ...], type[E.FedChainError], str], ...] = (
    (("insufficient funds", "insufficient balance", "sender doesn't have enough funds"), E.InsufficientFunds,
     "account {sender} cannot pay for gas: fund it ({detail})"),
    (("replacement transaction underpriced", "transaction underpriced", "fee cap less than block base fee",
      "max fee per gas less than block base fee", "txpool is full", "nonce too high", "could not replace existing tx",
      "known transaction"), E.ChainUnavailable, "the node refused the transaction for now ({detail}); retrying"),
    (("invalid chain id", "chainid", "invalid sender", "invalid signature", "only replay-protected"), E.ConfigError,
     "the node refused the transaction as signed ({detail}): is --rpc the chain the deployment is on?"),
    (("exceeds block gas limit", "intrinsic gas too low", "gas limit reached", "exceeds the configured cap",
      "gas limit too high"), E.TransactionRefused, "the node refused the transaction's gas ({detail})"),
)


def refusal_error(detail: str, sender: str) -> E.FedChainError:
    """The fedchain error for a node's refusal of a transaction (``detail``, the node's message).

    An unfunded account is ``InsufficientFunds``, never a ``ChainUnavailable`` retried forever;
    passing conditions (an underpriced replacement, a full pool) are ``ChainUnavailable``;
    anything unknown is ``TransactionRefused``.
    """
    text = " ".join(str(detail).split())
    low = text.lower()
    for markers, cls, message in _REFUSALS:
        if any(m in low for m in markers):
            return cls(message.format(sender=sender, detail=text))
    return E.TransactionRefused(f"the node refused the transaction: {text}")


def _rpc_message(exc: Exception) -> str:
    """The node's own words from a JSON-RPC error (web3 wraps them differently across versions)."""
    for source in (getattr(exc, "rpc_response", None), *getattr(exc, "args", ())):
        if isinstance(source, dict):
            err = source.get("error", source)
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])
    return str(exc)


def _is_connection_error(exc: Exception) -> bool:
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError))


class ChainClient:
    """Views, events and transactions of one FedChain deployment, for one (optional) account."""

    def __init__(
        self,
        rpc_url: str,
        address: str | None = None,
        account=None,
        *,
        retry_seconds: float = 0.0,
        confirmations: int = 0,
        gas_cap: int = 2_000_000,
        tx_timeout: float = 120.0,
        log_range: int = 10_000,
    ):
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 15}))
        self.artifact = load_artifact()
        self._errors = _ErrorDecoder(self.artifact["abi"])
        self.account = account
        self.retry_seconds = retry_seconds
        self.confirmations = confirmations
        self.gas_cap = gas_cap
        self.tx_timeout = tx_timeout
        self.log_range = log_range
        self.contract = None
        self.gas_spent = 0
        self.tip_multiplier = 1  # priority fee = the node's suggestion times this
        self._chain_id: int | None = None
        if address:
            if not Web3.is_address(address):
                raise E.ConfigError(f"not a contract address: {address!r}")
            self.contract = self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=self.artifact["abi"])

    # ------------------------------------------------------------ plumbing
    def _rpc(self, fn, *args, **kwargs):
        """Call ``fn``, retrying connection failures with backoff for up to ``retry_seconds``."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.25
        while True:
            try:
                return fn(*args, **kwargs)
            except ContractLogicError as exc:
                decoded = self._errors.decode(exc.data)
                raise decoded or E.ContractError(f"contract rejected the call: {exc.message or exc}") from None
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise E.ChainUnavailable(f"cannot reach the chain at {redact_url(self.rpc_url)}") from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _call(self, name: str, *args):
        return self._rpc(lambda: getattr(self.contract.functions, name)(*args).call())

    @property
    def address(self) -> str:
        if self.account is None:
            raise E.KeyLoadError("this command needs a key")
        return self.account.address

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self._rpc(lambda: self.w3.eth.chain_id)
        return self._chain_id

    def block_number(self) -> int:
        return self._rpc(lambda: self.w3.eth.block_number)

    def check_deployed(self) -> None:
        code = self._rpc(lambda: self.w3.eth.get_code(self.contract.address))
        if not code:
            raise E.ConfigError(f"no contract at {self.contract.address} on {self.rpc_url}")

    # ------------------------------------------------------------ views
    def config(self) -> dict:
        task, submit, vote, num, den, rounds, members, rule, deploy_block, reveal, update_reveal = self._call("config")
        return {
            "task": bytes(task), "submit_blocks": submit, "vote_blocks": vote, "quorum": (num, den),
            "quorum_bps": -(-num * 10_000 // den),
            "max_rounds": rounds, "member_count": members, "rule": rule, "deploy_block": deploy_block,
            "reveal_blocks": reveal, "update_reveal_blocks": update_reveal,
        }

    def round_state(self) -> RoundState:
        r, phase, start, sd, vd, subs, total, reveals = self._call("roundState")
        return RoundState(r, Phase(phase), start, sd, vd, subs, total, reveals)

    def global_model(self) -> tuple[int, bytes]:
        """(round that produced it, 20-byte outcome key) of the current global model."""
        r, key = self._call("globalModel")
        return r, bytes(key)

    def initial_model(self) -> bytes:
        return bytes(self._call("initialModel"))

    def round_bases(self, *, from_block: int) -> dict[int, bytes]:
        """Base model digest of every started round; a failed round's base carries over."""
        bases: dict[int, bytes] = {}
        for ev in sorted(self.events("RoundStarted", from_block=from_block), key=lambda e: int(e.args.round)):
            r, base = int(ev.args.round), bytes(ev.args.baseModel)
            bases[r] = base if base != ZERO32 else bases.get(r - 1, self.initial_model())
        return bases

    def members(self) -> list[str]:
        return list(self._call("members"))

    def member_info(self, peer: str) -> MemberInfo:
        index, rep, sub, voted, settled = self._call("memberInfo", Web3.to_checksum_address(peer))
        return MemberInfo(Web3.to_checksum_address(peer), index, rep, sub, voted, settled)

    def update_seal(self, peer: str) -> bytes:
        """Leading 19 bytes of ``peer``'s unrevealed update commitment (sealed tasks); zeros once
        revealed or when it committed none."""
        return bytes(self._call("updateSeal", Web3.to_checksum_address(peer)))

    def vote_weight(self, peer: str) -> tuple[int, int]:
        """(weight of ``peer``'s vote in the open round, the last round it took part in)."""
        weight, active = self._call("voteWeight", Web3.to_checksum_address(peer))
        return weight, active

    def is_outcome(self, round_: int, model: bytes, included: int) -> bool:
        return bool(self._call("isOutcome", round_, model, included))

    def outcome_of(self, round_: int) -> tuple[int, bytes]:
        """(status, 20-byte key): status 0 unknown (too old), 1 finalized, 2 failed, 3 open."""
        status, key = self._call("outcomeOf", round_)
        return int(status), bytes(key)

    def outcome_matches(self, round_: int, model: bytes, included: int) -> bool:
        """Whether a RoundFinalized event agrees with the contract's stored outcome. Outcomes
        older than the contract's ring are known from the logs alone."""
        status, key = self.outcome_of(round_)
        if status == 0:
            return True
        return status == 1 and key == Web3.keccak(encode(["bytes32", "uint256"], [model, included]))[:20]

    def is_finalized(self, round_: int) -> bool:
        return bool(self._call("isFinalized", round_))

    def candidate_weight(self, round_: int, model: bytes, included: int) -> int:
        return self._call("candidateWeight", round_, model, included)

    # ------------------------------------------------------------ events
    def events(self, name: str, *, from_block: int, to_block: int | str = "latest", **filters) -> list:
        """Logs of ``name`` in block ranges of at most ``log_range`` blocks (public RPC
        providers cap a query's range), up to ``confirmations`` blocks behind the head so that a
        reorg shallower than that never shows a log that later disappears."""
        event = getattr(self.contract.events, name)
        head = self.block_number() - self.confirmations if to_block == "latest" else int(to_block)
        out: list = []
        start = max(int(from_block), 0)
        while start <= head:
            end = min(start + self.log_range - 1, head)
            out += self._rpc(lambda s=start, e=end: list(event.get_logs(argument_filters=filters or None, from_block=s, to_block=e)))
            start = end + 1
        return out

    def outcome(self, round_: int, *, from_block: int = 0) -> Outcome | None:
        """The finalized (model, included) of ``round_``, from its event checked by a view call."""
        for ev in self.events("RoundFinalized", from_block=from_block, round=round_):
            out = Outcome(bytes(ev.args.model), int(ev.args.included))
            if self.outcome_matches(round_, out.model, out.included):
                return out
        return None

    # ------------------------------------------------------------ transactions
    def _fees(self) -> dict:
        block = self._rpc(lambda: self.w3.eth.get_block("latest"))
        base = block.get("baseFeePerGas")
        if base is None:
            return {"gasPrice": self._rpc(lambda: self.w3.eth.gas_price)}
        tip = self._rpc(lambda: self.w3.eth.max_priority_fee) * self.tip_multiplier
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def transact(self, name: str, *args) -> dict:
        """Sign and send ``name(*args)``; wait for the receipt; decode any revert."""
        sender = self.address
        fn = getattr(self.contract.functions, name)(*args)
        # Judge the call by the block it will execute in (the pending one), not the latest.
        try:
            estimate = self._rpc(lambda: fn.estimate_gas({"from": sender}, block_identifier="pending"))
        except (Web3RPCError, ValueError) as exc:  # not a revert (those are decoded in _rpc)
            raise refusal_error(_rpc_message(exc), sender) from exc
        gas = min(int(estimate * 1.25) + 10_000, self.gas_cap)
        if estimate > self.gas_cap:
            raise E.ContractError(f"{name} needs {estimate} gas, over the cap of {self.gas_cap}")
        nonce = self._rpc(lambda: self.w3.eth.get_transaction_count(sender, "pending"))
        tx = fn.build_transaction(
            {"from": sender, "nonce": nonce, "gas": gas, "chainId": self.chain_id(), **self._fees()}
        )
        receipt = self._send_until_mined(name, tx)
        self.gas_spent += receipt["gasUsed"]
        if receipt["status"] != 1:
            # Transactions ahead of ours in the block changed the state; replaying against the
            # latest state usually names the custom error.
            self._rpc(lambda: fn.call({"from": sender}))
            raise E.ContractError(f"{name} reverted in block {receipt['blockNumber']}")
        self._wait_confirmations(receipt["blockNumber"])
        return receipt

    def _send_until_mined(self, name: str, tx: dict, *, attempts: int = 3) -> dict:
        """Send ``tx``; if it is not mined in time, replace it (same nonce, fees raised by a
        quarter, as EIP-1559 replacement requires at least a tenth) and wait for whichever of
        the versions lands."""
        hashes = []
        for attempt in range(attempts):
            signed = self.account.sign_transaction(tx)
            try:
                hashes.append(self._rpc(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction)))
            except (Web3RPCError, ValueError) as exc:
                text = _rpc_message(exc)
                if "already known" in text:
                    hashes.append(signed.hash)
                elif "nonce too low" not in text:
                    raise refusal_error(text, self.account.address) from exc
            deadline = time.monotonic() + self.tx_timeout / attempts
            while time.monotonic() < deadline:
                for h in hashes:
                    try:
                        return self._rpc(lambda h=h: self.w3.eth.get_transaction_receipt(h))
                    except Exception as exc:  # TransactionNotFound until it is mined
                        if isinstance(exc, E.FedChainError):
                            raise
                time.sleep(0.1)
            if "maxFeePerGas" in tx:
                tx = {**tx, "maxFeePerGas": tx["maxFeePerGas"] * 5 // 4 + 1, "maxPriorityFeePerGas": tx["maxPriorityFeePerGas"] * 5 // 4 + 1}
            else:
                tx = {**tx, "gasPrice": tx["gasPrice"] * 5 // 4 + 1}
        raise E.ChainUnavailable(f"{name}: not mined within {self.tx_timeout:.0f}s despite {attempts} fee bumps")

    def _wait_confirmations(self, block: int) -> None:
        """Wait until ``block`` has ``confirmations`` blocks on top, for at most ``tx_timeout``
        (a chain that mines only on transactions may never get there: that is an error, not a hang)."""
        deadline = time.monotonic() + self.tx_timeout
        while self.confirmations and self.block_number() < block + self.confirmations:
            if time.monotonic() > deadline:
                raise E.ChainUnavailable(f"block {block} got no {self.confirmations} confirmations within {self.tx_timeout:.0f}s "
                                         "(does the chain mine without transactions?)")
            time.sleep(0.2)

    def submit(self, round_: int, digest: bytes, previous: Outcome) -> dict:
        return self.transact("submit", round_, digest, (previous.model, previous.included))

    def reveal_update(self, round_: int, digest: bytes, salt: bytes) -> dict:
        return self.transact("revealUpdate", round_, digest, salt)

    def publish(self, round_: int, kind: int, digest: bytes) -> dict:
        """Put ``digest`` on record for ``round_`` under ``kind`` (a ``Published`` log)."""
        return self.transact("publish", round_, kind, digest)

    @staticmethod
    def update_commitment(round_: int, digest: bytes, salt: bytes, submitter: str) -> bytes:
        """What a sealed ``submit`` records: keccak256(abi.encode(round, digest, salt, submitter))."""
        return bytes(Web3.keccak(encode(["uint256", "bytes32", "bytes32", "address"],
                                        [round_, digest, salt, Web3.to_checksum_address(submitter)])))

    def vote(self, round_: int, model: bytes, included: int, previous: Outcome) -> dict:
        return self.transact("vote", round_, model, included, (previous.model, previous.included))

    def commit_vote(self, round_: int, commitment: bytes, previous: Outcome) -> dict:
        return self.transact("commitVote", round_, commitment, (previous.model, previous.included))

    def reveal_vote(self, round_: int, model: bytes, included: int, salt: bytes) -> dict:
        return self.transact("revealVote", round_, model, included, salt)

    @staticmethod
    def commitment(round_: int, model: bytes, included: int, salt: bytes, voter: str) -> bytes:
        return bytes(Web3.keccak(encode(["uint256", "bytes32", "uint256", "bytes32", "address"],
                                        [round_, model, included, salt, Web3.to_checksum_address(voter)])))

    def finalize(self, round_: int, model: bytes, included: int) -> dict:
        return self.transact("finalize", round_, model, included)

    def advance(self) -> dict:
        return self.transact("advance")

    def settle(self, peer: str, previous: Outcome) -> dict:
        return self.transact("settle", Web3.to_checksum_address(peer), (previous.model, previous.included))


def quorum_fraction(quorum_bps: int) -> tuple[int, int]:
    """The simplest fraction p/q whose share rounded up to basis points is ``quorum_bps``.

    ``deploy --quorum 2/3`` gives ceil(6666.67) = 6667 bps, and this gives back exactly 2/3, so
    that 2 of 3 equal members reach the quorum; 5000 gives 1/2 and 6000 gives 3/5.
    """
    if not 0 < quorum_bps <= 10_000:
        raise E.ConfigError(f"quorum must be in (0, 10000] basis points, not {quorum_bps}")
    for den in range(1, 10_001):
        num = den * (quorum_bps - 1) // 10_000 + 1  # the least p with p/q > (bps - 1) / 10000
        if num * 10_000 <= quorum_bps * den:
            return num, den
    raise AssertionError("unreachable: q = 10000 always qualifies")


MEMBERS_PER_TRANSACTION = 96  # the contract's constant of that name (tests/test_contract.py checks they agree)
ZERO_ADDRESS = "0x" + "0" * 40
TX_GAS_CAP = 1 << 24  # EIP-7825: the most gas one transaction may use on chains past Osaka


def deploy_contract(
    client: ChainClient,
    *,
    members: list[str],
    initial_model: bytes,
    task: bytes,
    submit_blocks: int,
    vote_blocks: int,
    quorum_bps: int,
    max_rounds: int,
    rule: int,
    reveal_blocks: int = 0,
    update_reveal_blocks: int = 0,
    admit_all: bool = True,
) -> tuple[str, int]:
    """Deploy FedChain from ``client``'s account; returns (address, block). The quorum is the
    simplest fraction that ``quorum_bps`` rounds (see ``quorum_fraction``); the contract refuses
    one below 1/2. ``update_reveal_blocks`` > 0 seals updates (commit, then reveal in a window
    this long).

    The contract registers MEMBERS_PER_TRANSACTION members in its constructor; a larger member
    list is registered by ``admitMembers`` transactions, sent here one after another, so that no
    transaction needs more than a chain's per-transaction gas cap (EIP-7825). ``admit_all=False``
    stops after the constructor (tests of the setup phase)."""
    art = client.artifact
    factory = client.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    num, den = quorum_fraction(quorum_bps)
    checksummed = [Web3.to_checksum_address(m) for m in members]
    if len(checksummed) > MEMBERS_PER_TRANSACTION and (
            len(set(checksummed)) != len(checksummed) or ZERO_ADDRESS in checksummed):
        # The constructor sees only the first batch: refuse a bad list before anything is sent,
        # so that no contract is left waiting for members it can never register.
        raise E.ConfigError("member list has a duplicate or the zero address")
    config = (checksummed, initial_model, task, submit_blocks, vote_blocks, num, den, max_rounds, rule, reveal_blocks,
              update_reveal_blocks)
    receipt = _send_setup(client, "deploy", factory.constructor(config))
    address = receipt["contractAddress"]
    client.contract = client.w3.eth.contract(address=address, abi=art["abi"])
    if admit_all:
        per_tx = client._call("MEMBERS_PER_TRANSACTION")
        for start in range(per_tx, len(checksummed), per_tx):
            _send_setup(client, "admitMembers", client.contract.functions.admitMembers(checksummed[start:]))
    return address, receipt["blockNumber"]


def _send_setup(client: ChainClient, name: str, call) -> dict:
    """Send a deployment-time transaction with a margin over its estimate, never over the
    per-transaction cap; raise if it reverted."""
    sender = client.address
    try:
        estimate = client._rpc(lambda: call.estimate_gas({"from": sender}))
        gas = max(estimate, min(int(estimate * 1.2), TX_GAS_CAP))
    except E.ContractError as exc:
        # Hardhat's node (EDR) estimates by trying a multiple of the gas used, and refuses the
        # estimate when that trial exceeds EIP-7825's cap, even though the transaction fits.
        if exc.name or "greater than the cap" not in str(exc):
            raise
        gas = TX_GAS_CAP
    tx = call.build_transaction(
        {"from": sender, "nonce": client._rpc(lambda: client.w3.eth.get_transaction_count(sender, "pending")),
         "gas": gas, "chainId": client.chain_id(), **client._fees()}
    )
    receipt = client._send_until_mined(name, tx)
    if receipt["status"] != 1:
        raise E.ContractError("deployment reverted" if name == "deploy" else f"{name} reverted")
    return receipt
