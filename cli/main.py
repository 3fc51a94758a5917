"""fedchain's command line. Each command parses options, calls into ``fedchain.node``, prints.

Errors that fedchain raises on purpose become one line on stderr and exit status 1; anything
else is reported as an internal error (exit 2). ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click

from fedchain.node import errors as E

from ._output import emit_json, table

DEPLOYMENT_HELP = "Deployment file written by `fedchain deploy`."


class _Group(click.Group):
    """Turns fedchain errors into one clear line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except E.FedChainError as exc:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug, or a library error we have not mapped yet
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for details)", err=True)
            sys.exit(2)


def _deployment_option(f):
    return click.option("--deployment", "-d", default="deployment.json", envvar="FEDCHAIN_DEPLOYMENT", show_default=True, help=DEPLOYMENT_HELP)(f)


RULES_HELP = "fedavg, median, trimmed-mean, multi-krum, trust-cosine, fedavg-plain"
DATASETS = ["digits", "breast_cancer", "wine", "mnist"]


def _store_read_option(f):
    return click.option("--store", "store_spec", default=None, envvar="FEDCHAIN_STORE", help="Override the deployment's store.")(f)


def _rpc_read_option(f):
    return click.option("--rpc", default=None, envvar="FEDCHAIN_RPC", help="Override the deployment's RPC URL.")(f)


def _json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)


def _key_options(f):
    f = click.option("--password-file", type=click.Path(dir_okay=False), help="File holding the keystore password.")(f)
    f = click.option("--password-env", default=None, help="Environment variable holding the keystore password.")(f)
    f = click.option("--keystore", type=click.Path(dir_okay=False), envvar="FEDCHAIN_KEYSTORE", help="eth-account encrypted keystore file.")(f)
    f = click.option("--key-env", default="FEDCHAIN_KEY", show_default=True, help="Environment variable holding a raw private key.")(f)
    return f


def _account(key_env, keystore, password_env, password_file):
    from fedchain.node.tools.operations import account_from_options

    return account_from_options(key_env, keystore, password_env, password_file)


def _rule_params(pairs: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    """``--rule-param name=value`` pairs; values are JSON (numbers, null) or plain strings."""
    import json

    out = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise E.ConfigError(f"--rule-param must look like name=value, got {pair!r}")
        try:
            out[name.strip()] = json.loads(raw)
        except ValueError:
            out[name.strip()] = raw
    return tuple(sorted(out.items()))


def _dp_options(f):
    """Sample-level differential privacy (DP-SGD at every peer), pinned with the task."""
    for opt in reversed([
        click.option("--dp-epsilon", type=float, default=None, help="DP-SGD at every peer with this privacy budget over the whole task (each peer derives its noise from its shard size)."),
        click.option("--dp-delta", type=float, default=None, help="DP delta (default 1e-5 when DP is on)."),
        click.option("--dp-clip", type=float, default=None, help="DP-SGD per-example gradient clipping norm (default 1.0 when DP is on)."),
        click.option("--dp-noise", type=float, default=None, help="DP-SGD noise multiplier, fixed (with --dp-epsilon: a peer stops contributing once its budget is spent)."),
    ]):
        f = opt(f)
    return f


def _secure_options(f):
    """Secure aggregation (masked updates; only bucket sums are revealed), pinned with the task."""
    for opt in reversed([
        click.option("--secure-aggregation", "secure", is_flag=True, help="Mask every update so that only the sum of each bucket is ever revealed (pairwise masks, Shamir-shared seeds; replaces sealed updates)."),
        click.option("--threshold", type=int, default=None, help="Secure aggregation: members whose reveals unmask a round (default: a majority); fewer learn nothing."),
        click.option("--buckets", type=int, default=None, help="Secure aggregation: random buckets whose sums are unmasked; the rule runs over the bucket means (default 1)."),
        click.option("--stage-blocks", type=int, default=None, help="Secure aggregation: blocks for the masking stage and for the unmasking stage (default 10)."),
        click.option("--sa-clip", type=float, default=None, help="Secure aggregation: each member clips its update to this L2 norm before masking (default 10)."),
        click.option("--distributed-noise", type=float, default=None, help="Secure aggregation with distributed DP: members add discrete Gaussian noise so each bucket sum carries noise of std Z x the clip norm."),
        click.option("--sa-bits", type=int, default=None, help="Secure aggregation: mask modulo 2^BITS (16, 32 or 64, default 64); below 64 each member rotates, scales and rounds its update to fit, and each value travels in BITS/8 bytes."),
    ]):
        f = opt(f)
    return f


def _import_options(f):
    """How `data import`, `data split` and `simulate --data` read an organization's own files."""
    f = click.option("--grayscale/--rgb", default=False, help="Image folders: one gray channel or three RGB channels (default RGB).")(f)
    f = click.option("--image-size", default=None, metavar="H,W", help="Image folders: resize every image to H,W (default: the first image's size).")(f)
    f = click.option("--categorical", default="onehot", show_default=True, type=click.Choice(["onehot", "ordinal"]), help="Tables: how text columns become numbers.")(f)
    f = click.option("--missing", default="refuse", show_default=True, type=click.Choice(["refuse", "impute"]), help="Tables: refuse empty cells, or fill them (median, or most frequent category).")(f)
    f = click.option("--task-kind", default="classification", show_default=True, type=click.Choice(["classification", "regression"]), help="Regression: a numeric label, trained with MSE.")(f)
    f = click.option("--label", default=None, help="Tables: the column that holds the label.")(f)
    return f


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="fedchain")
def cli(debug):
    """fedchain: decentralized federated learning on IPFS and an Ethereum contract."""


# ---------------------------------------------------------------------------- devnet
@cli.command()
@click.option("--port", type=int, default=0, help="Port (default: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; loopback by default.")
@click.option("--accounts", type=click.IntRange(1, 1000), default=10, show_default=True, help="Funded development accounts to create.")
@click.option("--block-time", type=float, default=1.0, show_default=True, help="Seconds per block; 0 mines a block per transaction.")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), help="Load and save chain state in this file (anvil only).")
@click.option("--engine", type=click.Choice(["anvil", "hardhat"]), default="anvil", show_default=True, envvar="FEDCHAIN_DEVNET_ENGINE", help="Dev chain engine.")
def devnet(port, host, accounts, block_time, state_file, engine):
    """Start a local devnet (anvil or Hardhat) in the foreground; print its RPC URL and numbered dev keys."""
    from fedchain.node.tools.devnet import Devnet

    net = Devnet(port=port, host=host, accounts=accounts, block_time=block_time, state_file=state_file, engine=engine).start()
    click.echo(f"RPC URL: {net.rpc_url}  (chain id {net.chain_id})")
    click.echo(f"Funded development accounts ({engine}'s public test keys; never use them on a real chain):")
    for i, (addr, key) in enumerate(zip(net.addresses, net.keys)):
        click.echo(f"  {i:>2}  {addr}  {key}")
    click.echo("Ctrl-C to stop.")
    net.wait()


# ---------------------------------------------------------------------------- deploy
@cli.command()
@click.option("--rpc", default="http://127.0.0.1:8545", envvar="FEDCHAIN_RPC", show_default=True, help="JSON-RPC URL.")
@_key_options
@click.option("--store", "store_spec", default=".fedchain/store", envvar="FEDCHAIN_STORE", show_default=True, help="Store: a path (embedded) or kubo:MULTIADDR.")
@click.option("--members", required=True, envvar="FEDCHAIN_MEMBERS", help="Comma-separated member addresses, in index order.")
@click.option("--dataset", default="digits", show_default=True, type=click.Choice(["digits", "breast_cancer", "wine", "mnist"]), help="Built-in dataset the task trains on (fixes the model's inputs and classes).")
@click.option("--hidden", default="64", show_default=True, help="Hidden layer widths, comma-separated.")
@click.option("--model", default="mlp", show_default=True, help="Built-in model (mlp, logreg, cnn) or your own as package.module:factory, installed on every peer.")
@click.option("--schema", "schema_shard", type=click.Path(dir_okay=False), help="Take the task's data schema from this shard (`fedchain data import`) instead of a built-in dataset.")
@click.option("--inputs", type=int, default=None, help="The task's feature count (tabular data), with --classes.")
@click.option("--image", default=None, metavar="C,H,W", help="The task's image shape, with --classes.")
@click.option("--classes", type=int, default=None, help="Number of classes, with --inputs or --image.")
@click.option("--task-kind", default="classification", show_default=True, type=click.Choice(["classification", "regression"]), help="Classification (cross-entropy) or regression (MSE).")
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adam"]), help="Local optimizer.")
@click.option("--standardize", "standardize_file", type=click.Path(dir_okay=False), help="Declared per-feature constants every peer standardizes with: JSON {\"mean\": [...], \"std\": [...]}.")
@click.option("--standardize-from", type=click.Path(dir_okay=False), help="Compute the constants from this one shard (only when you choose to reveal its statistics).")
@click.option("--rule", default=None, help=f"Aggregation rule: {RULES_HELP} (default fedavg; fedavg-plain under secure aggregation with one bucket).")
@click.option("--rule-param", multiple=True, metavar="NAME=VALUE", help="A named parameter of the rule, pinned with the task (repeatable), e.g. beta=0.1.")
@click.option("--rounds", type=int, default=5, show_default=True, help="Rounds the task runs.")
@click.option("--epochs", type=int, default=5, show_default=True, help="Local epochs per round (same default as simulate).")
@click.option("--lr", type=float, default=0.05, show_default=True, help="Local learning rate (same default as simulate).")
@click.option("--sample-cap", type=int, default=1000, show_default=True, help="Largest sample count an update is weighted by.")
@click.option("--submit-blocks", type=int, default=60, show_default=True, help="Length of each round's submission window, in blocks.")
@click.option("--vote-blocks", type=int, default=60, show_default=True, help="Length of each round's voting window, in blocks.")
@click.option("--quorum", type=float, default=2 / 3, show_default=True, help="Fraction of total reputation needed to finalize (at least this much).")
@click.option("--reveal-blocks", type=click.IntRange(0), default=0, show_default=True, help="Commit-reveal voting with a reveal window this long (0: plain votes).")
@click.option("--update-reveal-blocks", type=click.IntRange(0), default=None, help="Sealed updates: members commit to their update, and reveal it in a window this long after submissions close (default 20; 0: plain, visible submissions; secure aggregation needs 0).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the initial model.")
@click.option("--output", "-o", default="deployment.json", show_default=True, help="Where to write the deployment file.")
@_dp_options
@_secure_options
def deploy(rpc, key_env, keystore, password_env, password_file, store_spec, members, dataset, hidden, model, schema_shard, inputs, image,
           classes, task_kind, optimizer, standardize_file, standardize_from, rule, rule_param, rounds, epochs, lr, sample_cap,
           submit_blocks, vote_blocks, quorum, reveal_blocks, update_reveal_blocks, seed, output, dp_epsilon, dp_delta, dp_clip, dp_noise,
           secure, threshold, buckets, stage_blocks, sa_clip, distributed_noise, sa_bits):
    """Deploy a task: pin its description and initial model, deploy the contract."""
    from fedchain.node.tools.operations import (DeployOptions, build_task, deploy as deploy_, privacy_config, resolve_protocol,
                                                secure_options)

    sa = secure_options(secure, threshold, buckets, stage_blocks, sa_clip, distributed_noise, dp_delta, sa_bits)
    rule, update_reveal_blocks = resolve_protocol(rule, update_reveal_blocks, sa)

    opts = DeployOptions(rpc=rpc, members=members, dataset=dataset, hidden=hidden, rule=rule, rule_params=_rule_params(rule_param),
                         rounds=rounds, epochs=epochs, lr=lr, sample_cap=sample_cap, submit_blocks=submit_blocks,
                         vote_blocks=vote_blocks, quorum=quorum, reveal_blocks=reveal_blocks, update_reveal_blocks=update_reveal_blocks,
                         seed=seed, output=output,
                         store=store_spec, model=model, schema=schema_shard, inputs=inputs, image=image, classes=classes,
                         task_kind=task_kind, optimizer=optimizer, standardize=standardize_file, standardize_from=standardize_from,
                         dp=privacy_config(dp_epsilon, dp_delta, dp_clip, dp_noise), secure=sa)
    build_task(opts)  # bad options fail before a key is even asked for
    dep = deploy_(opts, _account(key_env, keystore, password_env, password_file))
    click.echo(f"deployed FedChain at {dep.contract} on chain {dep.chain_id} (block {dep.deploy_block})")
    click.echo(f"task {dep.task_cid}, initial model {dep.initial_model}, {len(build_task(opts)[1])} members")
    click.echo(f"wrote {output}")


# ---------------------------------------------------------------------------- node
@cli.group()
def node():
    """Run a peer."""


@node.command("run")
@_deployment_option
@_key_options
@click.option("--rpc", default=None, envvar="FEDCHAIN_RPC", help="Override the deployment's RPC URL.")
@click.option("--store", "store_spec", default=None, envvar="FEDCHAIN_STORE", help="Override the deployment's store.")
@click.option("--data", "data_path", required=True, envvar="FEDCHAIN_DATA", type=click.Path(dir_okay=False), help="This peer's private data shard.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed for local training.")
@click.option("--poll", type=click.FloatRange(0, 3600, min_open=True), default=0.5, show_default=True, help="Seconds between chain polls.")
@click.option("--json-log", is_flag=True, envvar="FEDCHAIN_JSON_LOG", help="Log one JSON object per line.")
@click.option("--confirmations", type=click.IntRange(0), default=0, envvar="FEDCHAIN_CONFIRMATIONS", show_default=True, help="Blocks to wait after a transaction and to stay behind the head when reading events.")
@click.option("--gas-cap", type=click.IntRange(21_000), default=2_000_000, show_default=True, help="Refuse any transaction estimated above this much gas.")
@click.option("--attack", default=None, envvar="FEDCHAIN_ATTACK", help="Behave adversarially (for robustness tests): signflip, scaling, noise, labelflip, backdoor, freeride, malformed, lazyvote, collude, dagbomb, alie, ipm, minmax.")
@click.option("--colluders", default="", envvar="FEDCHAIN_COLLUDERS", help="With an adaptive --attack: comma-separated addresses of the members attacking together.")
@click.option("--wait-deployment", type=float, default=0, show_default=True, help="Seconds to wait for the deployment file to appear.")
@click.option("--health-port", type=click.IntRange(0, 65535), default=None, envvar="FEDCHAIN_HEALTH_PORT", help="Serve /livez, /readyz, /healthz and /metrics on this port (0: any free port).")
@click.option("--health-host", default="127.0.0.1", envvar="FEDCHAIN_HEALTH_HOST", show_default=True, help="Interface for /healthz and /metrics.")
@click.option("--state-dir", default="~/.fedchain/state", envvar="FEDCHAIN_STATE_DIR", show_default=True, help="Private folder where a sealed update waits for its reveal, so a restarted peer can still reveal it, and where a DP task's privacy account is kept, so a restarted peer continues it.")
def node_run(deployment, key_env, keystore, password_env, password_file, rpc, store_spec, data_path, seed, poll, json_log, confirmations, gas_cap, attack, colluders, wait_deployment, health_port, health_host,
             state_dir):
    """Run one peer until the task's last round (or until stopped)."""
    from fedchain.node.tools.operations import NodeOptions, run_node

    opts = NodeOptions(deployment=deployment, data=data_path, rpc=rpc, store=store_spec, seed=seed, poll=poll,
                       json_log=json_log, confirmations=confirmations, gas_cap=gas_cap, attack=attack,
                       colluders=tuple(a.strip() for a in colluders.split(",") if a.strip()), wait_deployment=wait_deployment, health_port=health_port, health_host=health_host,
                       state_dir=state_dir)
    run_node(opts, _account(key_env, keystore, password_env, password_file))


# ---------------------------------------------------------------------------- simulate
@cli.command()
@click.option("--peers", type=click.IntRange(1, 256), default=4, show_default=True, help="Peer processes (members) to start.")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Rounds the task runs.")
@click.option("--dataset", default="digits", show_default=True, type=click.Choice(DATASETS), help="Built-in dataset, split among the peers.")
@click.option("--data", "data_source", default=None, help="Your own data instead of --dataset: CSV/Parquet (with --label), .npz, or an image folder.")
@_import_options
@click.option("--model", default="mlp", show_default=True, help="Built-in model (mlp, logreg, cnn) or package.module:factory.")
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adam"]), help="Local optimizer.")
@click.option("--lr", type=float, default=0.05, show_default=True, help="Local learning rate (same default as deploy).")
@click.option("--standardize-from-peer", "standardize_peer", default="auto", show_default=True, metavar="INDEX|largest|auto|none", help="Tabular --data: the task declares the per-feature mean and std of this peer's shard (it chooses to publish them); auto: the largest shard for your own tabular data, nothing otherwise.")
@click.option("--partition", default="iid", show_default=True, type=click.Choice(["iid", "dirichlet"]), help="How the training data is split among the peers: IID, or Dirichlet label skew.")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Dirichlet concentration (with --partition dirichlet).")
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True, help="Fraction of each peer's shard kept as its local holdout, on which it evaluates every global model (federated evaluation; 0: none).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the split, the initial model and local training.")
@click.option("--rule", default=None, help=f"Aggregation rule: {RULES_HELP} (default fedavg; fedavg-plain under secure aggregation with one bucket).")
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True, help="Local epochs per round (same default as deploy).")
@click.option("--block-time", type=float, default=1.0, show_default=True, help="Devnet seconds per block; 0 for automine.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the store, shards and logs here.")
@click.option("--attack", default=None, help="Attack run by the malicious peers (see `node run --help`).")
@click.option("--malicious", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Fraction of peers that attack.")
@click.option("--commit-reveal", is_flag=True, help="Votes are committed as salted hashes, then revealed.")
@click.option("--update-reveal-blocks", type=click.IntRange(0), default=None, help="Sealed updates revealed in a window this long after submissions close (default 20; 0: plain, visible submissions; secure aggregation needs 0).")
@click.option("--resume", is_flag=True, help="Continue the interrupted simulation in --workdir (chain state, store, shards).")
@_dp_options
@_secure_options
@_json_option
def simulate(peers, rounds, dataset, data_source, label, task_kind, missing, categorical, image_size, grayscale, model, optimizer, lr,
             standardize_peer, partition, alpha, holdout, seed, rule, epochs, block_time, workdir, attack, malicious, commit_reveal, update_reveal_blocks, resume,
             dp_epsilon, dp_delta, dp_clip, dp_noise, secure, threshold, buckets, stage_blocks, sa_clip, distributed_noise, sa_bits, as_json):
    """Devnet, deployment, N peer processes and R rounds in one command."""
    from fedchain.node.tools.attacks import make_attack
    from fedchain.node.tools.operations import import_options, privacy_config, resolve_protocol, secure_options

    sa = secure_options(secure, threshold, buckets, stage_blocks, sa_clip, distributed_noise, dp_delta, sa_bits)
    rule, update_reveal_blocks = resolve_protocol(rule, update_reveal_blocks, sa)
    from fedchain.node.tools.simulate import SimulationConfig, run_simulation

    make_attack(attack)  # reject an unknown attack before starting anything
    cfg = SimulationConfig(peers=peers, rounds=rounds, dataset=dataset, partition=partition, alpha=alpha, seed=seed,
                           rule=rule, epochs=epochs, lr=lr, block_time=block_time, workdir=workdir, attack=attack, malicious=malicious,
                           commit_reveal=commit_reveal, update_reveal_blocks=update_reveal_blocks, resume=resume, data=data_source, model=model, optimizer=optimizer, holdout=holdout,
                           standardize_peer=int(standardize_peer) if str(standardize_peer).isdigit() else standardize_peer,
                           import_options=import_options(label, task_kind, missing, categorical, image_size, grayscale),
                           dp=privacy_config(dp_epsilon, dp_delta, dp_clip, dp_noise), secure=sa)
    progress = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    summary = run_simulation(cfg, progress=progress)
    if as_json:
        emit_json(summary)
        return
    rows = [[r["round"], r["status"], r["model"] or "-", f"{r['included']}/{r['updates']}", r["votes"],
             f"{r['vote_weight']}/{r['total_reputation']}" if r["status"] == "finalized" else "-",
             f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-",
             f"{r['federated_metric']['value']:.4f}" if r.get("federated_metric") else "-"] for r in summary["rounds"]]
    metric = "test MSE" if summary.get("task_kind") == "regression" else "test acc"
    click.echo("")
    click.echo(table(["round", "status", "model CID", "updates", "votes", "weight", metric, "fed " + metric.split()[1]], rows))
    gas = summary["gas"]["per_peer_per_round"]
    click.echo("")
    click.echo(f"final {'test MSE' if summary.get('task_kind') == 'regression' else 'test accuracy'}: {summary['final_test_accuracy']:.4f} "
               f"({summary['rounds_finalized']}/{summary['rounds_requested']} rounds finalized, {summary['wall_seconds']}s)")
    click.echo(f"gas per peer per round: mean {gas['mean']}, max {gas['max']}")
    if summary.get("privacy"):
        dp = summary["privacy"]
        spent = ", ".join(f"{i}={e:.3f}" if e is not None else f"{i}=-" for i, e in enumerate(dp["final_epsilon"]))
        click.echo(f"differential privacy: epsilon spent per peer (delta {dp['delta']:g}, budget {dp['epsilon_budget'] or '-'}): {spent}")
    if summary.get("secure_aggregation"):
        sa = summary["secure_aggregation"]
        eps = "no differential privacy (the bucket sums are released without noise)" if sa["final_epsilon"] is None \
            else f"distributed DP epsilon {sa['final_epsilon']:.3f} at delta {sa['delta']:g} (noise multiplier {sa['noise_multiplier']})"
        click.echo(f"secure aggregation: threshold {sa['threshold']}, {sa['buckets']} bucket(s), {sa['dropped']} dropout(s), "
                   f"{sa['recovered']} recovered, {sa['dealt_ahead']} round(s) dealt ahead; {eps}")
    if summary["backdoor_success_rate"] is not None:
        click.echo(f"backdoor attack success rate: {summary['backdoor_success_rate']:.4f}")
    if summary["malicious_peers"]:
        reps = {p["index"]: p["reputation"] for p in summary["peer_reputation"]}
        click.echo("reputation: " + ", ".join(f"{i}{'*' if i in summary['malicious_peers'] else ''}={r}" for i, r in sorted(reps.items())) + "  (* malicious)")
    if summary["peer_failures"]:
        raise E.FedChainError(f"peer processes {summary['peer_failures']} exited with errors; see {summary['workdir']}/logs")


# ---------------------------------------------------------------------------- rounds, peers, model
@cli.group()
def rounds():
    """Round history, read from the chain."""


@rounds.command("list")
@_deployment_option
@_rpc_read_option
@_store_read_option
@click.option("--logs", type=click.Path(exists=True), default=None, help="Peer JSON logs (a file, or a folder of *.log): adds the last round's federated metric, which no update carries.")
@_json_option
def rounds_list(deployment, rpc, store_spec, logs, as_json):
    """Every round: status, model, participation, votes, and the federated metric of its model
    (holdout-size-weighted, from the members' published holdout evaluations)."""
    from fedchain.node.tools.operations import rounds as rounds_

    view = rounds_(deployment, rpc, store_spec, logs)
    if view.note:
        click.echo(f"warning: {view.note}", err=True)
    rows = view.rows()
    if as_json:
        emit_json(rows)
        return
    metric = "fed MSE" if view.kind == "regression" else "fed acc"
    click.echo(table(
        ["round", "status", "model CID", "submitted/members", "included/submitted", "votes", "weight", metric],
        [[r["round"], r["status"], r["model"] or "-", f"{r['submitted_count']}/{r['members']}",
          f"{r['included_count']}/{r['submitted_count']}" if r["model"] else f"-/{r['submitted_count']}", len(r["votes"]),
          f"{r['vote_weight']}/{r['total_reputation']}" if r["model"] else "-",
          f"{r['federated_metric']['value']:.4f}" if r["federated_metric"] else "-"] for r in rows],
    ))


@rounds.command("show")
@click.argument("number", type=click.IntRange(1))
@_deployment_option
@click.option("--rpc", default=None, envvar="FEDCHAIN_RPC", help="Override the deployment's RPC URL.")
@_store_read_option
@_json_option
def rounds_show(number, deployment, rpc, store_spec, as_json):
    """One round in detail: every update and every vote (and, in a DP task, the epsilon each
    update's author reports having spent)."""
    from fedchain.node.tools.operations import round_detail

    rec, members, privacy, secure = round_detail(deployment, number, rpc, store_spec)
    if as_json:
        emit_json(rec.to_dict() | ({"privacy": privacy} if privacy else {}) | ({"secure_aggregation": secure} if secure else {}))
        return
    click.echo(f"round {rec.round}: {rec.status} (blocks {rec.start_block}..{rec.end_block or ''})")
    click.echo(f"base model: {rec.base_model}")
    if rec.model:
        click.echo(f"model:      {rec.model}  ({rec.included_count} updates, weight {rec.weight}/{rec.total_reputation})")
    click.echo("")
    unrevealed = "(never revealed)" if rec.status != "open" else "(sealed)"
    dp = {m: f"{p['epsilon']:.4f}" for m, p in privacy.items()}
    submitted = "share bundle CID" if secure else "update CID"  # under secure aggregation the update is never published
    click.echo(table(["peer", submitted, "reputation", "included"] + (["epsilon spent"] if privacy else []),
                     [[s["peer"], s["cid"] or unrevealed, "-" if s["reputation"] is None else s["reputation"], ("yes" if (rec.included >> members.index(s["peer"].lower())) & 1 else "no") if rec.model else "-"]
                      + ([dp.get(s["peer"].lower(), "-")] if privacy else []) for s in rec.submissions]))
    click.echo("")
    click.echo(table(["voter", "voted for", "included", "weight"], [[v["peer"], v["model"], v["included"], v["weight"]] for v in rec.votes]))
    if secure:
        click.echo("")
        if "pending" in secure:
            click.echo(f"secure aggregation: {secure['pending']}")
        else:
            shape = "shares dealt ahead in the previous round's reveals" if secure.get("dealt_ahead") else "shares dealt in the round"
            click.echo(f"secure aggregation: threshold {secure['threshold']}, buckets {secure['buckets']}, "
                       f"{secure['reveals']} holders revealed shares; {shape}")
            click.echo(f"  survivors (masked update unmasked in their bucket sum): {secure['survivors'] or '-'}")
            for d in secure["dropped"]:
                how = "mask seed recovered from the holders' shares" if d in secure["recovered"] else "NOT recovered: its bucket was lost"
                click.echo(f"  dropped out: {d} ({how})")
            if secure.get("dp_rho") is not None:
                click.echo(f"  distributed DP: this round costs each member zCDP rho {secure['dp_rho']:.4f} "
                           f"(epsilon {secure['dp_epsilon_round']:.3f} at delta {secure['delta']:g} for the round alone)")


@cli.command()
@_deployment_option
@click.option("--rpc", default=None, envvar="FEDCHAIN_RPC", help="Override the deployment's RPC URL.")
@_json_option
def peers(deployment, rpc, as_json):
    """Registered peers with reputation and participation."""
    from fedchain.node.tools.operations import members

    rows = members(deployment, rpc)
    if as_json:
        emit_json(rows)
        return
    click.echo(table(["#", "address", "reputation", "submitted", "included", "voted", "settled to"],
                     [[r["index"], r["address"], r["reputation"], r["submitted"], r["included"], r["voted"], r["last_settled_round"]] for r in rows]))


@cli.command()
@_deployment_option
@click.option("--round", "round_", type=click.IntRange(1), default=None, help="Audit only this round.")
@click.option("--rpc", default=None, envvar="FEDCHAIN_RPC", help="Override the deployment's RPC URL.")
@click.option("--store", "store_spec", default=None, envvar="FEDCHAIN_STORE", help="Override the deployment's store.")
@_json_option
def verify(deployment, round_, rpc, store_spec, as_json):
    """Recompute every finalized aggregate from the store and check it against the chain."""
    from fedchain.node.tools.operations import verify as verify_

    audits = verify_(deployment, round_, rpc, store_spec)
    if as_json:
        emit_json([a.to_dict() for a in audits])
    else:
        for a in audits:
            click.echo(f"round {a.round}: {'verified' if a.verified else 'MISMATCH'}  {a.expected_model}")
            for p in a.problems:
                click.echo(f"    {p}")
    failed = [a.round for a in audits if not a.verified]
    if failed:
        raise E.FedChainError(f"{len(failed)} of {len(audits)} finalized rounds failed verification: {failed}")


@cli.group()
def model():
    """Global models."""


@model.command("pull")
@click.option("--round", "round_", type=click.IntRange(0), default=None, help="Round whose finalized model to fetch (0: the initial model; default: the latest finalized).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Where to write the safetensors file.")
@_deployment_option
@click.option("--rpc", default=None, envvar="FEDCHAIN_RPC", help="Override the deployment's RPC URL.")
@click.option("--store", "store_spec", default=None, envvar="FEDCHAIN_STORE", help="Override the deployment's store.")
def model_pull(round_, output, deployment, rpc, store_spec):
    """Fetch a round's global model and verify it against the on-chain digest."""
    from fedchain.node.tools.operations import pull_model

    r, cid, size = pull_model(deployment, round_, output, rpc, store_spec)
    click.echo(f"round {r}: {cid} verified against the chain, {size} bytes -> {output}")


@model.command("eval")
@click.option("--round", "round_", type=click.IntRange(0), default=None, help="Round whose finalized model to evaluate (0: the initial model; default: the latest finalized).")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="A shard (e.g. test.safetensors from `data split`) whose samples x, y the model is evaluated on.")
@_deployment_option
@_rpc_read_option
@_store_read_option
@_json_option
def model_eval(round_, data_path, deployment, rpc, store_spec, as_json):
    """Evaluate a round's global model on any shard: accuracy, balanced accuracy, ROC AUC (binary), or MSE."""
    from fedchain.node.tools.operations import evaluate_model

    result = evaluate_model(deployment, round_, data_path, rpc, store_spec)
    if as_json:
        emit_json(result)
        return
    shown = ", ".join(f"{k.replace('_', ' ')} {result[k]:.4f}" for k in ("accuracy", "balanced_accuracy", "roc_auc", "mse") if k in result)
    click.echo(f"round {result['round']} ({result['model']}) on {data_path}: {result['samples']} samples, {shown}")


# ---------------------------------------------------------------------------- report
@cli.command()
@click.option("--output", "-o", default="report.html", show_default=True, type=click.Path(dir_okay=False), help="The HTML file to write (self-contained: the figures are embedded).")
@click.option("--png", "png_dir", default=None, type=click.Path(file_okay=False), help="Also write the figures as PNG files into this folder.")
@_deployment_option
@_rpc_read_option
@_store_read_option
@click.option("--logs", type=click.Path(exists=True), default=None, help="Peer JSON logs (a file, or a folder of *.log): adds the last round's federated metric.")
def report(output, png_dir, deployment, rpc, store_spec, logs):
    """One HTML page from the chain and the store: federated metric, reputation, participation and gas per round."""
    from fedchain.node.tools.report import write_report

    for path in write_report(deployment, output, png_dir, rpc, store_spec, logs):
        click.echo(f"wrote {path}")


# ---------------------------------------------------------------------------- experiment
@cli.group()
def experiment():
    """Experiments that measure the protocol."""


@experiment.command("robustness")
@click.option("--datasets", default="digits,mnist", show_default=True, help="Comma-separated datasets.")
@click.option("--rules", default=None, help="Comma-separated aggregation rules (default: all).")
@click.option("--attacks", default="signflip,scaling,noise,labelflip,backdoor,freeride,malformed,lazyvote,collude", show_default=True,
              help="Comma-separated attacks (each run also gets an attack-free baseline); also alie, ipm, minmax (adaptive: omniscient, colluding, tailored to the rule), and alie-spread, ipm-spread, minmax-spread (their copies spread apart to dodge the near-copy count), and ipm-spread-cap (spread IPM whose colluders also claim the sample cap).")
@click.option("--fractions", default="0,0.1,0.3,0.45", show_default=True, help="Malicious fractions.")
@click.option("--peers", type=click.IntRange(2, 64), default=10, show_default=True, help="Peers per run.")
@click.option("--rounds", type=click.IntRange(1), default=8, show_default=True, help="Rounds per run.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of every run.")
@click.option("--seeds", default=None, help="Comma-separated seeds, one run of every cell per seed (overrides --seed); the summary shows mean +- std.")
@click.option("--partition", type=click.Choice(["iid", "dirichlet"]), default="iid", show_default=True, help="How the training data is split among peers.")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Dirichlet concentration for --partition dirichlet (smaller: more label skew).")
@click.option("--update-reveal-blocks", type=click.IntRange(0), default=20, show_default=True, help="Sealed updates, as deploy's default: adaptive attackers see only public updates of earlier rounds and their team's own (0: plain submissions, attackers see every honest update of the round).")
@click.option("--honest-only", is_flag=True, help="Also run, per malicious fraction, an attack-free reference with only the honest peers and their shards.")
@click.option("--out", "out_dir", default="runs/robustness", show_default=True, type=click.Path(file_okay=False), help="Folder for results.csv, results.json and the plots.")
def experiment_robustness(datasets, rules, attacks, fractions, peers, rounds, seed, seeds, partition, alpha, update_reveal_blocks,
                          honest_only, out_dir):
    """Attacks x malicious fraction x rules on real data; writes CSV, JSON and PNG plots."""
    from fedchain.node.aggregation import RULES as RULE_IDS
    from fedchain.node.tools.attacks import make_attack
    from fedchain.node.tools.experiment import (
        REPUTATION_HEADERS, SUMMARY_HEADERS, plot_results, reputation_summary, robustness_summary, run_grid)

    attack_list = [a.strip() for a in attacks.split(",") if a.strip()]
    for a in attack_list:
        make_attack(a)
    rule_list = [r.strip() for r in rules.split(",")] if rules else list(RULE_IDS)
    unknown = [r for r in rule_list if r not in RULE_IDS]
    if unknown:
        raise E.ConfigError(f"unknown rule {unknown[0]!r} (known: {', '.join(RULE_IDS)})")
    try:
        fraction_list = [float(f) for f in fractions.split(",")]
    except ValueError:
        raise E.ConfigError(f"--fractions must be numbers, got {fractions!r}") from None
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()] if seeds else [seed]
    except ValueError:
        raise E.ConfigError(f"--seeds must be integers, got {seeds!r}") from None
    if partition == "dirichlet" and not (math.isfinite(alpha) and alpha > 0):
        raise E.ConfigError(f"--alpha must be a positive finite number, got {alpha}")
    out = Path(out_dir)
    results = run_grid(datasets=[d.strip() for d in datasets.split(",")], rules=rule_list, attacks=["none", *attack_list],
                       fractions=fraction_list, peers=peers, rounds=rounds, seeds=seed_list, partition=partition, alpha=alpha,
                       update_reveal_blocks=update_reveal_blocks, honest_only=honest_only, out=out, progress=click.echo)
    plots = plot_results(results, out)
    click.echo("")
    click.echo(table(SUMMARY_HEADERS, robustness_summary(results)))
    click.echo("")
    click.echo(table(REPUTATION_HEADERS, reputation_summary(results)))
    click.echo(f"\nwrote {out / 'results.csv'}, {out / 'results.json'} and {', '.join(str(p) for p in plots)}")


@experiment.command("privacy")
@click.option("--epsilons", default="inf,8,4,1", show_default=True, help="Comma-separated privacy budgets; inf is the run without DP.")
@click.option("--dataset", default="digits", show_default=True, type=click.Choice(DATASETS), help="Built-in dataset.")
@click.option("--peers", type=click.IntRange(2, 64), default=4, show_default=True, help="Peers per run.")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Rounds per run.")
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True, help="Local epochs per round.")
@click.option("--lr", type=float, default=0.05, show_default=True, help="Local learning rate.")
@click.option("--dp-delta", type=float, default=1e-5, show_default=True, help="DP delta of every private run.")
@click.option("--dp-clip", type=float, default=1.0, show_default=True, help="DP-SGD per-example clipping norm.")
@click.option("--model", default="mlp", show_default=True, type=click.Choice(["mlp", "logreg", "cnn"]), help="Model of every run, the one without DP included.")
@click.option("--batch-size", type=click.IntRange(1, 1 << 20), default=32, show_default=True, help="Local batch size of every run (DP-SGD: the expected Poisson batch).")
@click.option("--shadows", type=click.IntRange(2, 256), default=8, show_default=True, help="Shadow models of the LiRA attack.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of every run and of the attack.")
@click.option("--out", "out_dir", default="runs/privacy", show_default=True, type=click.Path(file_okay=False), help="Folder for results.csv, results.json, the plots and the runs.")
@click.option("--secure-aggregation", "secure", is_flag=True, help="Run every epsilon once more under secure aggregation, attacking the masked updates.")
def experiment_privacy(epsilons, dataset, peers, rounds, epochs, lr, dp_delta, dp_clip, model, batch_size, shadows, seed, out_dir, secure):
    """Sample-level DP vs membership inference and update inversion: accuracy and attack success per epsilon,
    optionally under secure aggregation too (real networks)."""
    from fedchain.node.tools.privacy import PRIVACY_HEADERS, parse_epsilons, privacy_experiment, privacy_rows

    results, plots = privacy_experiment(epsilons=parse_epsilons(epsilons), dataset=dataset, peers=peers, rounds=rounds, epochs=epochs,
                                        lr=lr, delta=dp_delta, clip=dp_clip, shadows=shadows, seed=seed, out=Path(out_dir), progress=click.echo,
                                        secure=secure, model=model, batch_size=batch_size)
    click.echo("")
    click.echo(table(PRIVACY_HEADERS, privacy_rows(results)))
    click.echo(f"\nwrote {Path(out_dir) / 'results.csv'}, {Path(out_dir) / 'results.json'} and {', '.join(str(p) for p in plots)}")


@experiment.command("domains")
@click.option("--domains", "names", default="healthcare,finance,iot,images", show_default=True, help="Comma-separated domains (finance needs ISLP, iot needs river: the domains extra).")
@click.option("--peers", type=click.IntRange(2, 64), default=5, show_default=True, help="Peer processes per domain.")
@click.option("--alpha", type=click.FloatRange(0, min_open=True), default=0.5, show_default=True, help="Dirichlet label-skew concentration.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the split, the initial model and local training.")
@click.option("--out", "out_dir", default="runs/domains", show_default=True, type=click.Path(file_okay=False), help="Folder for the data, the simulations' work folders and results.{csv,json,md}.")
def experiment_domains(names, peers, alpha, seed, out_dir):
    """Healthcare, finance, IoT and image data through the network, next to centralized and local-only training."""
    from fedchain.node.tools.domains import TABLE_HEADERS, run_domains, table_rows

    results, files = run_domains([n.strip() for n in names.split(",") if n.strip()], Path(out_dir), peers=peers,
                                 alpha=alpha, seed=seed, progress=click.echo)
    click.echo("")
    click.echo(table(TABLE_HEADERS, table_rows(results)))
    click.echo(f"\nwrote {files['csv']}, {files['json']} and {files['md']}")


# ---------------------------------------------------------------------------- keys
@cli.group()
@click.option("--dir", "key_dir", default="~/.fedchain/keys", envvar="FEDCHAIN_KEY_DIR", show_default=True, help="Keystore folder.")
@click.pass_context
def keys(ctx, key_dir):
    """Encrypted keystores (eth-account). Keys are never printed."""
    ctx.obj = Path(key_dir).expanduser()
    if ctx.obj.exists() and not ctx.obj.is_dir():
        raise E.ConfigError(f"--dir {ctx.obj} is not a folder")


def _new_password(password_env, password_file):
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise E.KeyLoadError(f"environment variable {password_env} is not set")
        return value
    if password_file:
        try:
            return Path(password_file).read_text().rstrip("\n")
        except (OSError, UnicodeDecodeError):
            raise E.KeyLoadError(f"cannot read password file {password_file}") from None
    return click.prompt("Keystore password", hide_input=True, confirmation_prompt=True)


@keys.command("new")
@click.argument("name")
@click.option("--password-env", help="Environment variable holding the new keystore's password.")
@click.option("--password-file", type=click.Path(dir_okay=False), help="File holding the new keystore's password.")
@click.pass_obj
def keys_new(key_dir, name, password_env, password_file):
    """Create a new key in an encrypted keystore NAME.json; print its address."""
    from eth_account import Account

    from fedchain.node.chain.keys import write_keystore

    account = Account.create()
    path = write_keystore(account, key_dir / f"{name}.json", _new_password(password_env, password_file))
    click.echo(f"{account.address}  {path}")


@keys.command("import")
@click.argument("name")
@click.option("--key-env", default="FEDCHAIN_KEY", show_default=True, help="Environment variable holding the raw key to import.")
@click.option("--password-env", help="Environment variable holding the new keystore's password.")
@click.option("--password-file", type=click.Path(dir_okay=False), help="File holding the new keystore's password.")
@click.pass_obj
def keys_import(key_dir, name, key_env, password_env, password_file):
    """Encrypt the raw key in $KEY_ENV into keystore NAME.json; print its address."""
    from fedchain.node.chain.keys import account_from_env, write_keystore

    account = account_from_env(key_env)
    path = write_keystore(account, key_dir / f"{name}.json", _new_password(password_env, password_file))
    click.echo(f"{account.address}  {path}")


@keys.command("list")
@_json_option
@click.pass_obj
def keys_list(key_dir, as_json):
    """Keystores in the folder with their addresses."""
    from fedchain.node.chain.keys import list_keystores

    rows = list_keystores(key_dir)
    if as_json:
        emit_json([{"name": n, "address": a} for n, a in rows])
    else:
        click.echo(table(["name", "address"], [list(r) for r in rows]))


# ---------------------------------------------------------------------------- data
@cli.group()
def data():
    """Your own data as validated shards (CSV, Parquet, .npz, image folders), or the built-in datasets."""


@data.command("import")
@click.argument("source")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The shard to write (.safetensors).")
@_import_options
@click.option("--holdout", type=float, default=0.0, show_default=True, help="Fraction kept inside the shard as a local validation split (x_holdout, y_holdout).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the holdout split.")
@click.option("--like", "like", type=click.Path(dir_okay=False), help="Encode exactly as this shard did (same columns, categories, labels, image size), so separately imported shards agree.")
def data_import(source, out_path, label, task_kind, missing, categorical, image_size, grayscale, holdout, seed, like):
    """Turn SOURCE (CSV, Parquet, .npz, an image folder, or a built-in dataset name) into a
    validated shard that records its schema."""
    from fedchain.node.tools.operations import import_data, import_options

    schema = import_data(source, out_path, import_options(label, task_kind, missing, categorical, image_size, grayscale, like),
                         holdout=holdout, seed=seed)
    inputs = schema["inputs"]
    shape = "x".join(map(str, inputs)) + " images" if isinstance(inputs, list) else f"{inputs} features"
    classes = "regression target" if schema["kind"] == "regression" else f"{schema['classes']} classes"
    click.echo(f"wrote {schema['path']}: {schema['samples']} samples ({shape}, {classes})"
               + (f", {schema['holdout']} held out for local validation" if schema["holdout"] else ""))


@data.command("split")
@click.argument("source", required=False)
@click.option("--dataset", default=None, type=click.Choice(DATASETS), help="A built-in dataset (default digits, when no SOURCE).")
@_import_options
@click.option("--peers", type=click.IntRange(1, 256), default=4, show_default=True, help="Number of peer shards to write.")
@click.option("--partition", default="iid", show_default=True, type=click.Choice(["iid", "dirichlet"]), help="IID shards, or Dirichlet label skew.")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Dirichlet concentration (with --partition dirichlet); smaller is more skewed.")
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True, help="Fraction of each peer's shard kept inside it as its local holdout (federated evaluation; 0: none).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the split.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for peer-N.safetensors and test.safetensors.")
def data_split(source, dataset, label, task_kind, missing, categorical, image_size, grayscale, peers, partition, alpha, holdout, seed, out_dir):
    """Write one private shard per peer (peer-N.safetensors, each keeping --holdout of its samples
    as its local holdout) plus a test split no peer holds (test.safetensors, 20%, for `model eval`)
    into --out, from SOURCE (a file, an image folder or a built-in name) or --dataset."""
    from fedchain.node.tools.operations import import_options, split_dataset

    if source and dataset:
        raise E.ConfigError("give SOURCE or --dataset, not both")
    sizes, test_size, out = split_dataset(source or dataset or "digits", peers, partition, alpha, seed, out_dir,
                                          import_options(label, task_kind, missing, categorical, image_size, grayscale), holdout=holdout)
    kept = f", {holdout:g} of each held out inside it" if holdout else ""
    click.echo(f"wrote {peers} shards peer-0..peer-{peers - 1}.safetensors ({', '.join(map(str, sizes))} training samples{kept}) "
               f"and test.safetensors ({test_size} samples) to {out}")


# ---------------------------------------------------------------------------- store
@cli.group()
@click.option("--store", "store_spec", default=".fedchain/store", envvar="FEDCHAIN_STORE", show_default=True, help="A path (embedded store) or kubo:MULTIADDR.")
@click.pass_context
def store(ctx, store_spec):
    """Content-addressed artifact store (embedded or Kubo)."""
    ctx.obj = store_spec


def _store_override(f):
    """`--store` is accepted after the subcommand too (`fedchain store add FILE --store X`)."""
    return click.option("--store", "store_override", default=None, help="Store spec; overrides the group's --store.")(f)


def _the_store(ctx_spec: str, override: str | None):
    from fedchain.node.store import open_store

    return open_store(override or ctx_spec)


@store.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--no-pin", is_flag=True, help="Store without pinning (gc may collect it).")
@_store_override
@click.pass_obj
def store_add(spec, file, no_pin, store_override):
    """Add FILE and print its CID (as `ipfs add -Q`)."""
    click.echo(_the_store(spec, store_override).add(Path(file).read_bytes(), pin=not no_pin))


@store.command("get")
@click.argument("cid")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Where to write the file.")
@click.option("--max-bytes", type=click.IntRange(1), default=1 << 30, show_default=True, help="Refuse content larger than this (checked while reading).")
@_store_override
@click.pass_obj
def store_get(spec, cid, output, max_bytes, store_override):
    """Fetch CID, verify it, write it to a file."""
    from fedchain.node.tools.operations import fetch_to_file

    fetch_to_file(_the_store(spec, store_override), cid, output, max_bytes=max_bytes)


@store.command("gc")
@_store_override
@click.pass_obj
def store_gc(spec, store_override):
    """Remove every block not reachable from a pin."""
    removed = _the_store(spec, store_override).gc()
    click.echo(f"removed {len(removed)} blocks")


@store.command("pins")
@_store_override
@click.pass_obj
def store_pins(spec, store_override):
    """List pinned CIDs."""
    for cid in _the_store(spec, store_override).pins():
        click.echo(cid)


def _show_envvars(command: click.Command) -> None:
    """Every option read from a FEDCHAIN_* variable says so in --help (click's show_envvar)."""
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar:
            param.show_envvar = True
    for sub in getattr(command, "commands", {}).values():
        _show_envvars(sub)


_show_envvars(cli)


def main() -> None:
    try:
        rv = cli.main(prog_name="fedchain", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # bad options: one line, exit 1, like every other bad input
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
