"""What each ``fedchain`` command does, one library function per command.

The CLI (``cli/main.py``) only parses options, calls one of these and prints what it returns.
Everything here checks its inputs first, so bad input fails with one ``ConfigError`` line
before anything is spent or written.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import errors as E
from .._utils import check_bind_host, check_rpc_url
from ..chain import ChainClient
from ..chain.keys import load_account
from ..ledger.history import RoundRecord, no_such_round, participation, round_history, round_record
from ..protocol.task import UINT32_MAX, DataSchema, ModelSpec, PrivacyConfig, SecureAggregation, Task, TrainConfig
from ..store import open_store
from .deployment import Deployment, deploy_task


def parse_shape(text: str | None, option: str, length: int) -> tuple[int, ...] | None:
    """``"28,28"`` -> (28, 28): ``length`` positive integers, or one clear error naming ``option``."""
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        shape = ()
    if len(shape) != length or min(shape) < 1:
        raise E.ConfigError(f"{option} must be {length} positive comma-separated integers, got {text!r}")
    return shape

TASK_MAX_BYTES = 1 << 20  # a task description is small JSON

__all__ = [
    "connect", "open_deployment", "account_from_options", "DeployOptions", "deploy", "NodeOptions", "run_node",
    "rounds", "round_detail", "members", "verify", "pull_model", "split_dataset", "check_writable", "fetch_to_file",
    "import_data", "import_options", "parse_shape", "task_schema", "check_data_against_task", "RoundsView",
    "evaluate_model",
]


def connect(rpc: object, address: str | None = None, account=None, **kwargs) -> ChainClient:
    """A chain client that has answered once (and found the contract, given an address)."""
    client = ChainClient(check_rpc_url(rpc), address, account, **kwargs)
    client.chain_id()  # fail fast and clearly when the RPC is unreachable
    if address:
        client.check_deployed()
    return client


def open_deployment(path: str | Path, rpc: str | None = None) -> tuple[Deployment, ChainClient]:
    dep = Deployment.load(path)
    return dep, connect(rpc or dep.rpc_url, dep.contract)


def account_from_options(key_env: str | None, keystore: str | None, password_env: str | None, password_file: str | None):
    """The signing account from a raw key in ``$key_env``, or a keystore and its password."""
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise E.KeyLoadError(f"environment variable {password_env} is not set")
    elif password_file:
        try:
            password = Path(password_file).read_text().rstrip("\n")
        except (OSError, UnicodeDecodeError):
            raise E.KeyLoadError(f"cannot read password file {password_file}") from None
    return load_account(key_env=None if keystore else key_env, keystore=keystore, password=password)


def import_options(label, task_kind="classification", missing="refuse", categorical="onehot", image_size=None, grayscale=False,
                   like: str | None = None):
    """``ImportOptions`` from the CLI's strings (``--image-size H,W``; ``--like SHARD``: encode as
    that shard did, so that organizations importing separately get the same features)."""
    from ..ml.data import load_shard
    from ..ml.importers import ImportOptions  # torch and pandas load only for the data commands

    reference = None
    if like is not None:
        reference = load_shard(like).info
        if not reference:
            raise E.ConfigError(f"{like} records no schema to import like (a shard of a built-in dataset)")
    return ImportOptions(label=label, kind=task_kind, missing=missing, categorical=categorical,
                         image_size=parse_shape(image_size, "--image-size", 2), grayscale=grayscale, like=reference)


def check_writable(path: str | Path) -> Path:
    """``path`` if a file can be written there (its folder exists and is writable, and it is not a folder)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise E.ConfigError(f"{p} is a folder, not a file")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise E.ConfigError(f"folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise E.ConfigError(f"cannot write {p}: permission denied")
    return p


# ---------------------------------------------------------------------------- deploy
@dataclass(frozen=True)
class DeployOptions:
    rpc: str
    members: str  # comma-separated addresses, in index order
    dataset: str = "digits"
    hidden: str = "64"
    rule: str = "fedavg"
    rule_params: tuple[tuple[str, object], ...] = ()
    rounds: int = 5
    epochs: int = 5  # the CLI's and simulate's default
    lr: float = 0.05
    sample_cap: int = 1_000
    submit_blocks: int = 60
    vote_blocks: int = 60
    quorum: float = 2 / 3
    reveal_blocks: int = 0
    update_reveal_blocks: int = 20  # sealed updates by default; 0: plain submissions
    seed: int = 0
    output: str = "deployment.json"
    store: str = ".fedchain/store"
    model: str = "mlp"  # a built-in architecture (mlp, logreg, cnn) or package.module:factory
    schema: str | None = None  # a shard whose schema the task takes
    inputs: int | None = None  # or: the feature count ...
    image: str | None = None  # ... or the image shape C,H,W
    classes: int | None = None  # with --inputs or --image
    task_kind: str = "classification"
    optimizer: str = "sgd"
    standardize: str | None = None  # a JSON file {"mean": [...], "std": [...]}: declared constants
    standardize_from: str | None = None  # a shard to compute them from (only when the operator chooses so)
    dp: PrivacyConfig | None = None  # sample-level DP-SGD at every peer (``privacy_config``)
    secure: "SecureOptions | None" = None  # secure aggregation (``SecureOptions``)


@dataclass(frozen=True)
class SecureOptions:
    """``--secure-aggregation`` and its options; ``threshold`` None: a majority of the members."""

    threshold: int | None = None
    buckets: int = 1
    stage_blocks: int = 10
    clip: float = 10.0
    noise: float | None = None  # distributed DP noise multiplier
    delta: float = 1e-5
    bits: int = 64  # the masking modulus, 2**bits

    def config(self, members: int) -> SecureAggregation:
        """The task's ``SecureAggregation`` for ``members`` members; ``ConfigError`` if they cannot run it."""
        sa = SecureAggregation(threshold=self.threshold if self.threshold is not None else max(2, members // 2 + 1),
                               buckets=self.buckets, stage_blocks=self.stage_blocks, clip=self.clip,
                               noise_multiplier=self.noise, delta=self.delta, bits=self.bits)
        sa.check_members(members)
        return sa


def secure_options(enabled: bool, threshold: int | None = None, buckets: int | None = None, stage_blocks: int | None = None,
                   clip: float | None = None, noise: float | None = None, delta: float | None = None,
                   bits: int | None = None) -> SecureOptions | None:
    """The CLI's secure-aggregation flags; None without ``--secure-aggregation`` (and then any of
    its options alone is an error)."""
    given = {k: v for k, v in (("--threshold", threshold), ("--buckets", buckets), ("--stage-blocks", stage_blocks),
                               ("--sa-clip", clip), ("--distributed-noise", noise), ("--sa-bits", bits)) if v is not None}
    if not enabled:
        if given:
            raise E.ConfigError(f"{next(iter(given))} goes with --secure-aggregation")
        return None
    return SecureOptions(threshold=threshold, buckets=1 if buckets is None else buckets,
                         stage_blocks=10 if stage_blocks is None else stage_blocks, clip=10.0 if clip is None else clip,
                         noise=noise, delta=1e-5 if delta is None else delta, bits=64 if bits is None else bits)


def resolve_protocol(rule: str | None, update_reveal_blocks: int | None, secure: SecureOptions | None) -> tuple[str, int]:
    """(rule, update-reveal window) with the defaults filled in: sealed updates (20 blocks) and
    ``fedavg``, except under secure aggregation, which replaces sealing (0) and, with one bucket,
    defaults to ``fedavg-plain``, a rule that works on the one sum it sees."""
    if rule is None:
        rule = "fedavg-plain" if secure is not None and secure.buckets == 1 else "fedavg"
    if update_reveal_blocks is None:
        update_reveal_blocks = 0 if secure is not None else 20
    return rule, update_reveal_blocks


def privacy_config(epsilon: float | None = None, delta: float | None = None, clip: float | None = None,
                   noise: float | None = None) -> PrivacyConfig | None:
    """The task's sample-level DP from ``--dp-epsilon``, ``--dp-delta`` (default 1e-5),
    ``--dp-clip`` (default 1.0) and ``--dp-noise``; None when neither a budget nor a noise
    multiplier is given (and then ``--dp-delta`` or ``--dp-clip`` alone is an error)."""
    if epsilon is None and noise is None:
        if delta is not None or clip is not None:
            raise E.ConfigError("--dp-delta and --dp-clip go with --dp-epsilon or --dp-noise")
        return None
    return PrivacyConfig(delta=1e-5 if delta is None else delta, max_grad_norm=1.0 if clip is None else clip,
                         epsilon=epsilon, noise_multiplier=noise)


def task_schema(opts: DeployOptions) -> DataSchema | None:
    """The data schema the options declare; None for a built-in dataset (the task JSON of that
    path stays as it was, so its CIDs do not change)."""
    import json

    from ..ml.data import feature_stats, load_shard

    given = [o for o, v in (("--schema", opts.schema), ("--inputs", opts.inputs), ("--image", opts.image)) if v is not None]
    if len(given) > 1:
        raise E.ConfigError(f"{' and '.join(given)} both describe the data; give one")
    if opts.classes is not None and not (opts.inputs is not None or opts.image is not None):
        raise E.ConfigError("--classes goes with --inputs or --image")
    if not given:
        if opts.standardize or opts.standardize_from:
            raise E.ConfigError("standardization constants need a task schema (--schema, --inputs or --image)")
        return None
    if opts.schema is not None:
        ds = load_shard(opts.schema)
        schema = DataSchema(inputs=ds.inputs, classes=ds.classes, kind=ds.kind,
                            feature_names=tuple(ds.info.get("feature_names", ())), label_names=tuple(ds.info.get("label_names", ())))
        if schema.kind != opts.task_kind:
            raise E.ConfigError(f"the shard {opts.schema} holds {schema.kind} data but --task-kind is {opts.task_kind}")
    else:
        classes = 1 if opts.task_kind == "regression" else opts.classes
        if classes is None:
            raise E.ConfigError("--inputs and --image need --classes K (the number of labels)")
        if opts.inputs is not None and opts.inputs < 1:
            raise E.ConfigError(f"--inputs must be a positive feature count, got {opts.inputs}")
        inputs = opts.inputs if opts.inputs is not None else parse_shape(opts.image, "--image", 3)
        schema = DataSchema(inputs=inputs, classes=classes, kind=opts.task_kind)
    if opts.standardize and opts.standardize_from:
        raise E.ConfigError("--standardize and --standardize-from both give the constants; give one")
    mean = std = ()
    if opts.standardize:
        try:
            d = json.loads(Path(opts.standardize).read_text())
            mean, std = tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise E.ConfigError(f"--standardize {opts.standardize}: need a JSON file {{\"mean\": [...], \"std\": [...]}} ({exc})") from None
    elif opts.standardize_from:
        mean, std = feature_stats(load_shard(opts.standardize_from))
    if mean:
        from dataclasses import replace

        schema = replace(schema, mean=mean, std=std)
    return schema


def build_task(opts: DeployOptions) -> tuple[Task, list[str]]:
    """The task and member list ``opts`` describe, validated (nothing is deployed)."""
    from web3 import Web3

    from ..aggregation import check_secure_bits, check_secure_rule, pin_rule
    from ..ml.data import load_dataset
    from ..ml.models import check_model_size, schema_of

    addrs = [m.strip() for m in opts.members.split(",") if m.strip()]
    bad = [m for m in addrs if not Web3.is_address(m)]
    if bad:
        raise E.ConfigError(f"not an Ethereum address: {bad[0]}")
    try:
        widths = tuple(int(h) for h in opts.hidden.split(",") if h.strip())
    except ValueError:
        raise E.ConfigError(f"--hidden must be comma-separated integers, got {opts.hidden!r}") from None
    if not (isinstance(opts.quorum, float | int) and math.isfinite(opts.quorum) and 0.5 <= opts.quorum <= 1):
        raise E.ConfigError(f"--quorum must be a fraction between 0.5 and 1 (a minority must never finalize), got {opts.quorum}")
    if not 0 <= opts.seed < 2**63:
        raise E.ConfigError(f"--seed must be between 0 and 2**63-1, got {opts.seed}")
    schema = task_schema(opts)
    if schema is None:
        ds = load_dataset(opts.dataset)
        dataset, inputs, classes = opts.dataset, ds.features, ds.classes
        if opts.task_kind != "classification":
            raise E.ConfigError(f"the built-in dataset {opts.dataset!r} is classification; give --schema for a regression task")
    else:
        dataset = Path(opts.schema).stem if opts.schema else "custom"
        inputs, classes = schema.inputs, schema.classes
    task = Task(
        name=f"{dataset}-{model_label(opts.model)}", dataset=dataset,
        model=model_spec(opts.model, inputs, classes, widths),
        train=TrainConfig(epochs=opts.epochs, lr=opts.lr, optimizer=opts.optimizer, kind=opts.task_kind, dp=opts.dp),
        rule=opts.rule, rule_params=opts.rule_params, sample_cap=opts.sample_cap, rounds=opts.rounds, submit_blocks=opts.submit_blocks,
        vote_blocks=opts.vote_blocks, quorum_bps=math.ceil(opts.quorum * 10_000 - 1e-9), reveal_blocks=opts.reveal_blocks,
        update_reveal_blocks=opts.update_reveal_blocks, data=schema,
        secure_aggregation=opts.secure.config(len(addrs)) if opts.secure is not None else None,
    )
    task = pin_rule(task)
    check_secure_rule(task, len(addrs))
    check_secure_bits(task.secure_aggregation, schema_of(task.model), len(addrs))
    check_model_size(task.model, task.max_update_bytes)
    return task, addrs


def model_label(model: str) -> str:
    """A short name for task names: the architecture, or a custom factory's function name."""
    return model.rpartition(":")[2] if ":" in model else model


def model_spec(model: str, inputs, classes: int, hidden: tuple[int, ...] = (64,)) -> ModelSpec:
    """The model a task pins: a built-in architecture, or an organization's own factory whose
    source digest and state schema are recorded so that a peer with other code refuses."""
    from ..ml.models import MODELS, custom_model_params, schema_of

    if ":" not in model and model not in MODELS:
        raise E.ConfigError(f"unknown model {model!r} (built in: {', '.join(MODELS)}; or your own as package.module:factory)")
    spec = ModelSpec(inputs, classes, hidden if model == "mlp" else (64,), model)
    if spec.custom:
        spec = ModelSpec(inputs, classes, spec.hidden, model, custom_model_params(spec))
    schema_of(spec)  # builds on the meta device: a model that cannot take these inputs fails here
    return spec


def deploy(opts: DeployOptions, account) -> Deployment:
    """Deploy a task; the output path is checked first, and the contract's address survives a
    failure to write the file (it is in the error)."""
    task, addrs = build_task(opts)
    out = check_writable(opts.output)
    client = connect(opts.rpc, account=account, retry_seconds=5)
    dep = deploy_task(client, open_store(opts.store), task, addrs, seed=opts.seed, rpc_url=opts.rpc)
    try:
        dep.save(out)
    except OSError as exc:
        raise E.ConfigError(f"deployed FedChain at {dep.contract} (block {dep.deploy_block}) but could not write {out}: "
                            f"{exc.strerror or exc}") from None
    return dep


# ---------------------------------------------------------------------------- node run
@dataclass(frozen=True)
class NodeOptions:
    deployment: str
    data: str
    rpc: str | None = None
    store: str | None = None
    seed: int = 0
    poll: float = 0.5
    json_log: bool = False
    confirmations: int = 0
    gas_cap: int = 2_000_000
    attack: str | None = None
    colluders: tuple[str, ...] = ()  # adaptive attacks: the members attacking together
    wait_deployment: float = 0.0
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    state_dir: str | None = "~/.fedchain/state"  # where a sealed update waits for its reveal, and a DP task's privacy account


def run_node(opts: NodeOptions, account, *, echo=print) -> None:
    """Run one peer until the task's last round (or until stopped)."""
    from ..ml.data import load_shard
    from ..peer import EventLog, Peer
    from ..peer.observability import HealthServer
    from .attacks import make_attack

    if opts.health_port is not None and not 0 <= opts.health_port <= 65535:
        raise E.ConfigError(f"--health-port must be between 0 and 65535, got {opts.health_port}")
    if opts.health_port is not None:
        check_bind_host(opts.health_host)
    if not (math.isfinite(opts.poll) and 0 < opts.poll <= 3600):
        raise E.ConfigError(f"--poll must be between 0 and 3600 seconds, got {opts.poll}")
    bad = [a for a in opts.colluders if not (a[:2] in ("0x", "0X") and len(a) == 42 and all(c in "0123456789abcdefABCDEF" for c in a[2:]))]
    if bad:
        raise E.ConfigError(f"--colluders must be 0x-prefixed 20-byte addresses, got {bad[0]!r}")
    plugins = make_attack(opts.attack, colluders=opts.colluders)
    shard = load_shard(opts.data)
    from ..ml.training import warm_up

    warm_up()  # torch's lazy imports now, not inside the first submission window
    deadline = time.monotonic() + opts.wait_deployment
    while not Path(opts.deployment).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    dep = Deployment.load(opts.deployment)
    # Retries stay short: the peer's own loop logs every failure and backs off.
    chain = connect(opts.rpc or dep.rpc_url, dep.contract, account, retry_seconds=5,
                    confirmations=opts.confirmations, gas_cap=opts.gas_cap)
    chain.retry_seconds = 0  # from now on the peer's loop logs the first failure and backs off itself
    store = open_store(opts.store or dep.store)
    task = Task.from_bytes(store.get(dep.task_cid, max_bytes=TASK_MAX_BYTES))
    shard = check_data_against_task(shard, task, opts.data)
    log = EventLog(account.address, json_lines=opts.json_log)
    peer = Peer(chain, store, task, dep.task_cid, shard, seed=opts.seed, poll=opts.poll, log=log, plugins=plugins,
                state_dir=opts.state_dir)
    if opts.attack:
        log("adversarial", None, attack=opts.attack)
    server = None
    if opts.health_port is not None:
        server = HealthServer(peer.metrics, peer.health, host=opts.health_host, port=opts.health_port).start()
        base = f"http://{server.host}:{server.port}"
        log("serving", None, livez=f"{base}/livez", readyz=f"{base}/readyz", metrics=f"{base}/metrics")
    try:
        peer.run()
    finally:
        if server:
            server.stop()


def check_data_against_task(shard, task: Task, where: str = "the shard"):
    """The shard, checked against the task's schema and standardized with its declared
    constants; a mismatch is one line naming both sides, before the peer joins."""
    from ..ml.data import check_shard, standardize
    from ..ml.models import schema_of

    schema = task.data or DataSchema(task.model.inputs, task.model.classes, kind=task.train.kind)
    check_shard(shard, schema, shard=f"data shard {where}")
    schema_of(task.model)  # a custom model: installed, same source, same state schema
    return standardize(shard, schema.mean, schema.std)


# ---------------------------------------------------------------------------- history and audit
@dataclass
class RoundsView:
    """What `rounds list` shows: the history, the federated metric per round, the member count."""

    history: list[RoundRecord]
    metrics: dict  # round -> ledger.evaluation.RoundMetric
    members: int
    kind: str  # the task's kind: accuracy or MSE is the headline metric
    note: str = ""  # why no metrics are shown, when the store could not be read

    def rows(self) -> list[dict]:
        out = []
        for r in self.history:
            m = self.metrics.get(r.round)
            out.append(r.to_dict() | {"submitted_count": len(r.submissions), "members": self.members,
                                      "federated_metric": m.to_dict() if m else None})
        return out


def _peer_logs(logs: str | None) -> list[Path]:
    """The peer log files under ``logs`` (a folder of ``*.log`` files, or one file)."""
    if logs is None:
        return []
    p = Path(logs)
    if p.is_dir():
        return sorted(p.glob("*.log"))
    if p.is_file():
        return [p]
    raise E.ConfigError(f"--logs {logs}: no such file or folder")


def federated_view(dep, chain, store: str | None = None, logs: str | None = None) -> RoundsView:
    """History plus the federated metric of every round that has one (chain and store; the
    peers' logs, when given, for the last round's model)."""
    from ..ledger.evaluation import evaluations_from_logs, federated_metrics, published_evaluations

    history = round_history(chain)
    members_ = chain.members()
    kind = Task.from_dict(dep.task).train.kind
    try:
        st = open_store(store or dep.store)
        task = Task.from_bytes(st.get(dep.task_cid, max_bytes=TASK_MAX_BYTES))
    except E.StoreError as exc:  # the history stands on the chain alone; only the metrics need the store
        return RoundsView(history, {}, len(members_), kind, f"no federated metrics: the store is unusable ({exc})")
    published = published_evaluations(chain, st, task, dep.task_cid, history, members_, dep.initial_model)
    logged = evaluations_from_logs(_peer_logs(logs), task, members_) if logs else None
    return RoundsView(history, federated_metrics(history, task, published, logged), len(members_), task.train.kind)


def rounds(deployment: str, rpc: str | None = None, store: str | None = None, logs: str | None = None) -> RoundsView:
    """`rounds list`: every round with its federated metric."""
    dep, chain = open_deployment(deployment, rpc)
    return federated_view(dep, chain, store, logs)


def round_detail(deployment: str, number: int, rpc: str | None = None, store: str | None = None
                 ) -> tuple[RoundRecord, list[str], dict[str, dict], dict | None]:
    """One round, the member list (to show who was included), in a DP task the privacy each
    valid update reports: {member: {"epsilon", "noise_multiplier"}} (from the store), and in a
    secure-aggregation task what ``ledger.secure.secure_summary`` says of the round (else None)."""
    from ..ledger.privacy import round_privacy

    dep, chain = open_deployment(deployment, rpc)
    rec, members_ = round_record(chain, number), chain.members()
    privacy: dict[str, dict] = {}
    if Task.from_dict(dep.task).train.dp is not None:
        st = open_store(store or dep.store)
        task = Task.from_bytes(st.get(dep.task_cid, max_bytes=TASK_MAX_BYTES))
        privacy = {m: {"epsilon": p.epsilon, "noise_multiplier": p.noise_multiplier}
                   for m, p in round_privacy(chain, st, task, dep.task_cid, rec, members_).items()}
    secure = None
    if Task.from_dict(dep.task).secure_aggregation is not None:
        from ..ledger.secure import secure_summary

        st = open_store(store or dep.store)
        task = Task.from_bytes(st.get(dep.task_cid, max_bytes=TASK_MAX_BYTES))
        try:
            secure = secure_summary(chain, st, task, dep.task_cid, number, start_block=rec.start_block, members=members_,
                                    deploy_block=chain.config()["deploy_block"], base_cid=rec.base_model)
        except E.NotVisibleYet as exc:
            secure = {"pending": str(exc)}
    return rec, [m.lower() for m in members_], privacy, secure


def members(deployment: str, rpc: str | None = None) -> list[dict]:
    _, chain = open_deployment(deployment, rpc)
    return participation(chain, round_history(chain))


def verify(deployment: str, round_: int | None = None, rpc: str | None = None, store: str | None = None):
    """Audit every finalized round (or one); raises when any fails verification."""
    from .audit import audit_round

    dep, chain = open_deployment(deployment, rpc)
    st = open_store(store or dep.store)
    task = Task.from_bytes(st.get(dep.task_cid, max_bytes=TASK_MAX_BYTES))
    history = [r for r in round_history(chain) if r.status == "finalized" and (round_ is None or r.round == round_)]
    if round_ is not None and not history:
        raise E.UnknownRound(f"round {round_} is not a finalized round of this task")
    members_ = chain.members()
    return [audit_round(chain, st, task, dep.task_cid, rec, members_) for rec in history]


def pull_model(deployment: str, round_: int | None, output: str, rpc: str | None = None, store: str | None = None) -> tuple[int, str, int]:
    """Fetch a round's finalized model (default: the latest), verified against the chain; returns
    (round, CID, bytes written)."""
    out = check_writable(output)
    dep, chain = open_deployment(deployment, rpc)
    round_, cid = _model_of_round(dep, chain, round_)
    st = open_store(store or dep.store)
    task = Task.from_bytes(st.get(dep.task_cid, max_bytes=TASK_MAX_BYTES))
    data = st.get(cid, max_bytes=task.max_update_bytes)
    out.write_bytes(data)
    return round_, cid, len(data)


def _model_of_round(dep, chain, round_: int | None) -> tuple[int, str]:
    """(round, model CID) of ``round_``'s finalized model (None: the latest; 0: the initial
    model), with the same errors as `rounds show` for a round that does not exist."""
    history = round_history(chain)
    finalized = [r for r in history if r.status == "finalized"]
    if round_ is None:
        round_ = finalized[-1].round if finalized else 0
    if round_ == 0:
        return 0, dep.initial_model
    if round_ < 0 or round_ > UINT32_MAX:
        raise E.UnknownRound(f"round {round_} does not exist on this task")
    rec = next((r for r in history if r.round == round_), None)
    if rec is None:
        raise no_such_round(round_, history, chain.round_state())
    if rec.status in ("open", "expired"):
        raise E.UnknownRound(f"round {round_} has not ended yet: it has no model (the open round is {round_})")
    if rec.status != "finalized":
        raise E.UnknownRound(f"round {round_} failed without a finalized model")
    return round_, rec.model


def evaluate_model(deployment: str, round_: int | None, data: str, rpc: str | None = None, store: str | None = None) -> dict:
    """`model eval`: a round's finalized model (default: the latest) evaluated on the samples of
    the shard ``data`` (checked against the task first). Returns the metrics, and the integer form."""
    from ..ledger.updates import load_model
    from ..ml.data import load_shard
    from ..ml.evaluation import evaluate_samples
    from ..protocol.evaluation import evaluation_metadata

    shard = load_shard(data)
    dep, chain = open_deployment(deployment, rpc)
    st = open_store(store or dep.store)
    task = Task.from_bytes(st.get(dep.task_cid, max_bytes=TASK_MAX_BYTES))
    shard = check_data_against_task(shard, task, data)
    round_, cid = _model_of_round(dep, chain, round_)
    ev = evaluate_samples(task.model, load_model(st, cid, task), shard.x, shard.y, kind=task.train.kind, round_=round_)
    return {"round": round_, "model": cid, "data": str(data), "kind": task.train.kind, "samples": ev.samples,
            **ev.metrics(), "published_form": evaluation_metadata(ev)}


# ---------------------------------------------------------------------------- data
def import_data(source: str, out: str, opts, *, holdout: float = 0.0, seed: int = 0) -> dict:
    """Turn ``source`` into one validated shard at ``out``; returns the schema it recorded."""
    from ..ml.data import load_shard, save_shard, schema_of_data
    from ..ml.importers import import_source, with_holdout

    if not (math.isfinite(holdout) and 0 <= holdout < 1):
        raise E.ConfigError(f"--holdout must be a fraction in [0, 1), got {holdout}")
    path = check_writable(out)
    ds = import_source(source, opts)
    if holdout:
        ds = with_holdout(ds, holdout, seed=seed)
    save_shard(path, ds)
    return schema_of_data(load_shard(path)) | {"path": str(path)}


def split_dataset(dataset: str, peers: int, partition: str, alpha: float, seed: int, out_dir: str,
                  opts=None, *, holdout: float = 0.0) -> tuple[list[int], int, Path]:
    """Write one shard per peer plus the held-out test split; returns (shard sizes, test size, folder).
    ``dataset`` is a built-in name or a file or folder ``fedchain data import`` reads. With
    ``holdout``, each peer's shard keeps that fraction of its own samples as its local holdout
    (``x_holdout``, ``y_holdout``: what it evaluates global models on); sizes count the rest."""
    import numpy as np

    from ..ml.data import Dataset, partition as split, save_shard, train_test_split
    from ..ml.importers import ImportOptions, import_source, with_holdout

    if partition == "dirichlet" and not (math.isfinite(alpha) and alpha > 0):
        raise E.ConfigError(f"--alpha must be a positive finite number, got {alpha}")
    if not (math.isfinite(holdout) and 0 <= holdout < 1):
        raise E.ConfigError(f"--holdout must be a fraction in [0, 1), got {holdout}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise E.ConfigError(f"{out} exists and is not a folder")
    ds = import_source(dataset, opts or ImportOptions())
    train, test = train_test_split(ds, seed=seed)
    parts = split(train, peers, alpha=None if partition == "iid" else alpha, seed=seed)
    if min(len(p) for p in parts) == 0 or len(test.y) == 0:
        raise E.ConfigError(f"{len(ds.y)} samples are too few for {peers} peers and a test split")
    shards = [Dataset(train.name, train.x[idx], train.y[idx], train.classes, info=train.info) for idx in parts]
    if holdout:
        shards = [with_holdout(s, holdout, seed=seed * 1000 + i) for i, s in enumerate(shards)]
    out.mkdir(parents=True, exist_ok=True)
    for i, shard in enumerate(shards):
        save_shard(out / f"peer-{i}.safetensors", shard)
    save_shard(out / "test.safetensors", test, np.arange(len(test.y)))
    return [len(s.y) for s in shards], len(test.y), out


def fetch_to_file(store, cid: str, output: str, *, max_bytes: int) -> int:
    """``store get``: fetch and verify ``cid`` within ``max_bytes``, write it to ``output``."""
    from ..protocol.cid import validate_cid

    out = check_writable(output)
    data = store.get(validate_cid(cid), max_bytes=max_bytes)
    out.write_bytes(data)
    return len(data)
