"""Bring your own data and model: tasks defined by a data schema, built-in and custom models,
the shard check before a peer joins, and whole simulations on a user's CSV, images and module."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fedchain.cli.main import cli
from fedchain.node.errors import ConfigError
from fedchain.node.ml.data import Dataset, save_shard
from fedchain.node.ml.importers import ImportOptions, import_source
from fedchain.node.ml.models import build_model, init_state, schema_of
from fedchain.node.ml.training import evaluate, train_local
from fedchain.node.protocol.task import ModelSpec, Task, TrainConfig
from fedchain.node.tools.devnet import Devnet
from fedchain.node.tools.operations import DeployOptions, build_task, check_data_against_task, model_spec

from _support import clean_env, run_cli

MEMBER = "0x" + "11" * 20
# The task JSON of the built-in path, byte for byte as before schemas existed: its CID (and the
# demo's) must not move when the new options are not used.
DIGITS_TASK = ('{"dataset":"digits","max_update_bytes":16777216,"model":{"arch":"mlp","classes":10,"hidden":[32,16],"inputs":64},'
               '"name":"digits-mlp","quorum_bps":6667,"reveal_blocks":0,"rounds":5,"rule":"fedavg","sample_cap":1000,'
               '"submit_blocks":60,"train":{"batch_size":32,"epochs":2,"lr":0.05,"momentum":0.9},"vote_blocks":60}')

MODULE = '''from torch import nn


def make_model(inputs, classes):
    """An organization's own model."""
    return nn.Sequential(nn.Linear(inputs, 8), nn.Tanh(), nn.Linear(8, classes))
'''


def _csv(path, n=90, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    color = rng.choice(["red", "green", "blue"], n)
    y = (x[:, 0] + x[:, 1] + (color == "red") > 0.5)
    path.write_text("f1,f2,color,outcome\n" + "".join(
        f"{x[i, 0]:.3f},{x[i, 1]:.3f},{color[i]},{'sick' if y[i] else 'well'}\n" for i in range(n)))
    return path


def _image_folder(root, n=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("bars", "boxes"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            a = (rng.random((8, 8)) * 60).astype(np.uint8)
            if c == "boxes":
                a[2:6, 2:6] = 255
            else:
                a[3:5, :] = 255
            Image.fromarray(a, "L").convert("RGB").save(root / c / f"{i}.png")
    return root


@pytest.fixture
def my_module(tmp_path, monkeypatch):
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "byo_model_test.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "byo_model_test", raising=False)
    return folder / "byo_model_test.py"


# ---------------------------------------------------------------------------- tasks
def test_built_in_task_json_is_byte_identical():
    # epochs=2 and plain submissions: the pinned JSON predates DeployOptions taking the CLI's
    # default epochs (5) and sealing updates by default (a 20-block reveal window, then recorded).
    task, _ = build_task(DeployOptions(rpc="http://127.0.0.1:8545", members=MEMBER, hidden="32,16", epochs=2,
                                       update_reveal_blocks=0))
    assert task.to_bytes().decode() == DIGITS_TASK
    sealed, _ = build_task(DeployOptions(rpc="http://127.0.0.1:8545", members=MEMBER, hidden="32,16", epochs=2))
    assert sealed.to_bytes().decode() == DIGITS_TASK.replace('"vote_blocks"', '"update_reveal_blocks":20,"vote_blocks"')
    assert Task.from_bytes(task.to_bytes()).to_bytes() == task.to_bytes()


def test_deploy_schema_from_a_shard_records_names_and_round_trips(tmp_path):
    shard = tmp_path / "s.safetensors"
    save_shard(shard, import_source(_csv(tmp_path / "d.csv"), ImportOptions(label="outcome")))
    task, _ = build_task(DeployOptions(rpc="http://x:1", members=MEMBER, schema=str(shard), model="logreg", optimizer="adam"))
    d = task.to_dict()
    assert d["model"] == {"arch": "logreg", "inputs": 5, "classes": 2}
    assert d["data"]["feature_names"] == ["f1", "f2", "color=blue", "color=green", "color=red"]
    assert d["data"]["label_names"] == ["sick", "well"] and d["train"]["optimizer"] == "adam"
    assert Task.from_bytes(task.to_bytes()) == task


def test_deploy_from_declared_shapes(tmp_path):
    task, _ = build_task(DeployOptions(rpc="http://x:1", members=MEMBER, image="1,8,8", classes=3, model="cnn"))
    assert task.model.inputs == (1, 8, 8) and task.to_dict()["data"]["inputs"] == [1, 8, 8]
    task, _ = build_task(DeployOptions(rpc="http://x:1", members=MEMBER, inputs=4, task_kind="regression"))
    assert task.model.classes == 1 and task.train.kind == "regression" and task.to_dict()["train"]["kind"] == "regression"


def test_declared_and_one_shard_standardization(tmp_path):
    consts = tmp_path / "std.json"
    consts.write_text(json.dumps({"mean": [1.0, 2.0], "std": [2.0, 4.0]}))
    task, _ = build_task(DeployOptions(rpc="http://x:1", members=MEMBER, inputs=2, classes=2, standardize=str(consts)))
    shard = Dataset("d", np.array([[3.0, 6.0]], dtype=np.float32), np.array([1]), 2)
    assert check_data_against_task(shard, task).x.tolist() == [[1.0, 1.0]]
    src = tmp_path / "s.safetensors"
    save_shard(src, Dataset("d", np.array([[0, 1], [2, 3]], dtype=np.float32), np.array([0, 1]), 2, info={"kind": "classification"}))
    task, _ = build_task(DeployOptions(rpc="http://x:1", members=MEMBER, inputs=2, classes=2, standardize_from=str(src)))
    assert task.data.mean == (1.0, 2.0) and task.data.std == (1.0, 1.0)


@pytest.mark.parametrize("opts,message", [
    (dict(inputs=4), "need --classes"),
    (dict(classes=3), "--classes goes with --inputs or --image"),
    (dict(inputs=4, image="1,2,2", classes=2), "both describe the data"),
    (dict(image="1,2", classes=2), "--image must be 3 positive"),
    (dict(model="cnn"), "cnn needs image inputs"),
    (dict(model="transformer"), "unknown model 'transformer'"),
    (dict(model="no_such_module_here:f"), "is not installed on this machine"),
    (dict(task_kind="regression"), "give --schema for a regression task"),
])
def test_bad_deploy_options_are_one_clear_error(opts, message):
    with pytest.raises(ConfigError, match=message):
        build_task(DeployOptions(rpc="http://x:1", members=MEMBER, **opts))


def test_deploy_cli_refuses_bad_shapes_before_asking_for_a_key():
    r = CliRunner().invoke(cli, ["deploy", "--members", MEMBER, "--image", "3,x,4", "--classes", "2"])
    assert r.exit_code == 1 and r.output.strip() == "error: --image must be 3 positive comma-separated integers, got '3,x,4'"


# ---------------------------------------------------------------------------- models
def test_custom_model_is_pinned_by_source_and_schema(my_module):
    spec = model_spec("byo_model_test:make_model", 5, 2)
    params = dict(spec.params)
    assert len(params["source_sha256"]) == 64
    assert params["state_schema"]["0.weight"] == [[8, 5], "F32"]
    assert set(schema_of(spec)) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert build_model(spec)(torch.zeros(1, 5)).shape == (1, 2)
    my_module.write_text(MODULE.replace("nn.Tanh()", "nn.ReLU()"))
    with pytest.raises(ConfigError, match="this machine's source .* differs from the task's"):
        schema_of(spec)


def test_a_peer_without_the_module_refuses_clearly():
    spec = ModelSpec(5, 2, arch="acme_models_nowhere.nets:build", params=(("source_sha256", "0" * 64),))
    with pytest.raises(ConfigError, match="'acme_models_nowhere.nets' is not installed on this machine"):
        build_model(spec)


def test_cnn_and_logreg_shapes():
    cnn = ModelSpec((3, 8, 8), 4, arch="cnn")
    assert build_model(cnn)(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
    assert {dtype for _, dtype in schema_of(cnn).values()} == {"F32"}
    assert build_model(ModelSpec((1, 4, 4), 3, arch="logreg"))(torch.zeros(2, 1, 4, 4)).shape == (2, 3)


def test_regression_with_adam_reduces_the_error():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], dtype=np.float32) + 0.3).astype(np.float32)
    data = Dataset("r", x, y, 1, info={"kind": "regression"})
    spec = ModelSpec(3, 1, arch="logreg")
    base = init_state(spec, 0)
    cfg = TrainConfig(epochs=20, lr=0.05, optimizer="adam", kind="regression")
    delta, _ = train_local(spec, base, data, cfg, seed=0)
    trained = {k: base[k] + delta[k] for k in base}
    assert evaluate(spec, trained, data, kind="regression") < 0.1 * evaluate(spec, base, data, kind="regression")


# ---------------------------------------------------------------------------- the shard check
def test_a_mismatched_shard_is_refused_before_joining(tmp_path):
    task, _ = build_task(DeployOptions(rpc="http://x:1", members=MEMBER))  # digits: 64 features, 10 classes
    shard = import_source(_csv(tmp_path / "d.csv"), ImportOptions(label="outcome"))
    with pytest.raises(ConfigError, match="data shard d.safetensors has feature count 5 but the task expects 64"):
        check_data_against_task(shard, task, "d.safetensors")


def test_node_run_refuses_a_shard_that_does_not_fit_the_task(tmp_path):
    from eth_account import Account

    from fedchain.node.tools.operations import deploy

    shard = tmp_path / "mine.safetensors"
    save_shard(shard, import_source(_csv(tmp_path / "d.csv"), ImportOptions(label="outcome")))
    with Devnet(accounts=3, block_time=0) as net:
        deploy(DeployOptions(rpc=net.rpc_url, members=net.addresses[1], store=str(tmp_path / "store"), output=str(tmp_path / "dep.json")),
               Account.from_key(net.keys[0]))
        r = run_cli(["node", "run", "-d", str(tmp_path / "dep.json"), "--data", str(shard)], env=clean_env(FEDCHAIN_KEY=net.keys[1]))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: data shard {shard} has feature count 5 but the task expects 64"]


# ---------------------------------------------------------------------------- whole networks
def _simulate(args, *, env=None):
    r = run_cli(["simulate", "--peers", "3", "--epochs", "1", "--block-time", "0", "--json", *args], env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_simulate_a_csv_with_mlp(tmp_path):
    s = _simulate(["--data", str(_csv(tmp_path / "d.csv")), "--label", "outcome", "--rounds", "3", "--model", "mlp"])
    assert [r["status"] for r in s["rounds"]] == ["finalized"] * 3 and s["peer_failures"] == []
    assert s["dataset"] == "d" and s["model"] == "mlp" and s["test_metric"] == "accuracy"


def test_simulate_an_image_folder_with_cnn(tmp_path):
    s = _simulate(["--data", str(_image_folder(tmp_path / "imgs")), "--rounds", "3", "--model", "cnn"])
    assert [r["status"] for r in s["rounds"]] == ["finalized"] * 3 and s["peer_failures"] == []


def test_simulate_with_the_organizations_own_model(tmp_path):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "mymodule.py").write_text(MODULE)
    s = _simulate(["--data", str(_csv(tmp_path / "d.csv")), "--label", "outcome", "--rounds", "2", "--model", "mymodule:make_model"],
                  env=clean_env(PYTHONPATH=str(tmp_path / "mods")))
    assert [r["status"] for r in s["rounds"]] == ["finalized"] * 2 and s["model"] == "mymodule:make_model"


def test_simulating_a_built_in_dataset_deploys_the_same_task_as_before():
    from fedchain.node.ml.data import load_dataset, train_test_split
    from fedchain.node.tools.simulate import SimulationConfig, _task

    cfg = SimulationConfig(peers=4, rounds=5)
    ds = load_dataset("digits")
    train, _ = train_test_split(ds, seed=0)
    d = _task(cfg, ds, train).to_dict()
    assert d["name"] == "digits-mlp" and "data" not in d
    assert d["model"] == {"arch": "mlp", "classes": 10, "hidden": [64], "inputs": 64}
    assert d["train"] == {"batch_size": 32, "epochs": 5, "lr": 0.05, "momentum": 0.9}


def test_simulate_a_regression(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 2))
    y = x @ np.array([1.0, -2.0]) + 0.3
    src = tmp_path / "prices.csv"
    src.write_text("a,b,price\n" + "".join(f"{x[i, 0]:.3f},{x[i, 1]:.3f},{y[i]:.3f}\n" for i in range(90)))
    s = _simulate(["--data", str(src), "--label", "price", "--task-kind", "regression", "--model", "logreg", "--rounds", "2"])
    assert [r["status"] for r in s["rounds"]] == ["finalized"] * 2 and s["test_metric"] == "mse"
    assert s["rounds"][1]["test_accuracy"] < s["rounds"][0]["test_accuracy"]  # the error falls
    # federated evaluation (simulate --json): each member's holdout MSE, published, then logged for the last round
    fed = [s["initial_federated_metric"], *(r["federated_metric"] for r in s["rounds"])]
    assert s["federated_metric"] == "mse" and [f["source"] for f in fed] == ["chain", "chain", "logs"]
    assert all(f["metric"] == "mse" and f["peers"] == 3 and "accuracy" not in f for f in fed), fed
    assert fed[1]["value"] < fed[0]["value"]  # the members see the error fall on their own holdouts
