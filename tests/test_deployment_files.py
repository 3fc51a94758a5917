"""The Dockerfile, docker-compose.yml and deploy/k8s/ must agree with the CLI they run.

Nothing here builds an image or starts a container: the files are read as data and every
fedchain command line in them is checked against the real click CLI (subcommand path, options,
environment variables the command actually reads), then parsed by click itself with that
environment, as the container would. Cross-file facts (peer count, keys vs. members, pinned
versions) are checked too, since a mismatch there only shows up at run time.
"""
from __future__ import annotations

import json
import re
import shlex
import tomllib

import click
import pytest
import yaml
from click.core import ParameterSource
from eth_account import Account

from fedchain.cli.main import cli

from _support import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"

COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict = COMPOSE["services"]
K8S_FILES = sorted(K8S_DIR.glob("*.yaml"))
K8S_DOCS = [(path, doc) for path in K8S_FILES for doc in yaml.safe_load_all(path.read_text()) if doc]


# ---------------------------------------------------------------------------- the CLI as data
def _options(cmd: click.Command) -> dict[str, click.Option]:
    out = {}
    for p in cmd.params:
        if isinstance(p, click.Option):
            for name in (*p.opts, *p.secondary_opts):
                out[name] = p
    return out


def _envvars(param: click.Parameter) -> set[str]:
    if not param.envvar:
        return set()
    return {param.envvar} if isinstance(param.envvar, str) else set(param.envvar)


class Invocation:
    """A fedchain command line resolved against the click tree."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)
        self.path: list[tuple[str, click.Command]] = []  # (name, command) from the root down
        self.used: dict[str, list[str]] = {}  # option name -> values given
        cmd, i, name = cli, 0, "fedchain"
        while True:
            self.path.append((name, cmd))
            i = self._consume_options(cmd, i, leaf=not isinstance(cmd, click.Group))
            if not isinstance(cmd, click.Group):
                break
            assert i < len(argv), f"`{self.display}` stops at a group; it needs one of {sorted(cmd.commands)}"
            name = argv[i]
            assert name in cmd.commands, f"`{self.display}`: {name!r} is not a subcommand of `{self.display}` ({sorted(cmd.commands)})"
            cmd, i = cmd.commands[name], i + 1
        self.leaf_args = argv[self._leaf_start:]

    @property
    def display(self) -> str:
        return " ".join(name for name, _ in self.path)

    @property
    def leaf(self) -> click.Command:
        return self.path[-1][1]

    def _consume_options(self, cmd: click.Command, i: int, *, leaf: bool) -> int:
        if leaf:
            self._leaf_start = i
        options = _options(cmd)
        positional = 0
        arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
        while i < len(self.argv):
            token = self.argv[i]
            if token.startswith("-") and token != "-":
                name, eq, value = token.partition("=")
                assert name in options, (
                    f"`{self.display}` has no option {name}; it accepts {sorted(o for o in options if o.startswith('--'))}")
                opt = options[name]
                if opt.is_flag or opt.count:
                    assert not eq, f"{name} is a flag and takes no value"
                    self.used.setdefault(name, [])
                    i += 1
                else:
                    if not eq:
                        assert i + 1 < len(self.argv), f"{name} needs a value"
                        value = self.argv[i + 1]
                        i += 1
                    for alias in (*opt.opts, *opt.secondary_opts):
                        self.used.setdefault(alias, []).append(value)
                    i += 1
            elif not leaf:
                return i  # the subcommand name
            else:
                positional += 1
                assert any(a.nargs == -1 for a in arguments) or positional <= sum(a.nargs for a in arguments), (
                    f"`{self.display}` takes {len(arguments)} argument(s), got extra {token!r}")
                i += 1
        return i

    def reads(self) -> set[str]:
        """Environment variables this command line makes fedchain read."""
        names: set[str] = set()
        for _, cmd in self.path:
            for p in cmd.params:
                names |= _envvars(p)
        leaf_params = {p.name: p for p in self.leaf.params}
        if "key_env" in leaf_params:  # the raw key lives in the variable --key-env names
            names |= set(self.used.get("--key-env", [leaf_params["key_env"].default]))
        if "password_env" in leaf_params:
            names |= set(self.used.get("--password-env", []))
        return names

    def parse(self, env: dict[str, str], monkeypatch) -> click.Context:
        """Let click parse the leaf command's arguments with exactly this environment."""
        import os

        for key in list(os.environ):
            if key.startswith("FEDCHAIN_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        parent = None
        for name, cmd in self.path[:-1]:
            parent = click.Context(cmd, info_name=name, parent=parent)
        name, leaf = self.path[-1]
        try:
            return leaf.make_context(name, list(self.leaf_args), parent=parent)
        except click.ClickException as exc:
            pytest.fail(f"`{self.display} {' '.join(self.leaf_args)}` is rejected by click: {exc.format_message()}")


def _check_env_is_read(inv: Invocation, env: dict[str, str], where: str) -> None:
    unread = sorted(k for k in env if k.startswith("FEDCHAIN_") and k not in inv.reads())
    assert not unread, f"{where}: `{inv.display}` never reads {unread} (it reads {sorted(inv.reads())})"


def _check_env_takes_effect(inv: Invocation, ctx: click.Context, env: dict[str, str], where: str) -> None:
    """Every FEDCHAIN_* variable a parameter reads must be where that parameter's value came from."""
    for p in inv.leaf.params:
        for var in _envvars(p) & set(env):
            source = ctx.get_parameter_source(p.name)
            assert source in (ParameterSource.ENVIRONMENT, ParameterSource.COMMANDLINE), (
                f"{where}: {var} is set but `{inv.display}` took {p.name} from {source}")


def test_cli_walker_rejects_what_click_rejects():
    with pytest.raises(AssertionError, match="no option --nope"):
        Invocation(["node", "run", "--nope"])
    with pytest.raises(AssertionError, match="not a subcommand"):
        Invocation(["node", "walk"])
    with pytest.raises(AssertionError, match="stops at a group"):
        Invocation(["store"])
    inv = Invocation(["store", "--store", "x", "add", "f"])
    assert inv.display == "fedchain store add" and inv.leaf_args == ["f"]
    assert {"FEDCHAIN_KEY", "FEDCHAIN_DATA", "FEDCHAIN_JSON_LOG"} <= Invocation(["node", "run"]).reads()
    assert "FEDCHAIN_KEY_7" in Invocation(["node", "run", "--key-env", "FEDCHAIN_KEY_7"]).reads()
    assert "FEDCHAIN_KEY" not in Invocation(["node", "run", "--key-env", "FEDCHAIN_KEY_7"]).reads()


# ---------------------------------------------------------------------------- compose helpers
def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _is_fedchain(service: dict) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("fedchain")


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> named volume (bind mounts are left out)."""
    out = {}
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type", "volume") == "volume":
                out[vol["target"]] = vol["source"]
            continue
        source, target = vol.split(":")[:2]
        if not source.startswith(("/", ".", "~")):
            out[target] = source
    return out


def _one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


FEDCHAIN_SERVICES = {name: svc for name, svc in SERVICES.items() if _is_fedchain(svc)}
PEERS = {name: svc for name, svc in SERVICES.items() if re.fullmatch(r"peer-\d+", name)}


# ---------------------------------------------------------------------------- compose
def test_compose_has_the_expected_services():
    assert {"anvil", "kubo", "data", "deployer"} <= set(SERVICES)
    assert sorted(PEERS) == [f"peer-{i}" for i in range(len(PEERS))] and len(PEERS) == 4
    assert set(FEDCHAIN_SERVICES) == {"data", "deployer", *PEERS}


@pytest.mark.parametrize("name", sorted(FEDCHAIN_SERVICES))
def test_compose_command_exists_in_cli(name, monkeypatch):
    svc = FEDCHAIN_SERVICES[name]
    assert "entrypoint" not in svc, f"{name}: the image's entry point is the fedchain CLI; do not override it"
    assert svc.get("command"), f"{name}: no command"
    inv = Invocation(_argv(svc["command"]))
    env = _env(svc)
    _check_env_is_read(inv, env, name)
    ctx = inv.parse(env, monkeypatch)
    _check_env_takes_effect(inv, ctx, env, name)


def test_compose_fedchain_services_share_one_image():
    images = {svc.get("image") for svc in FEDCHAIN_SERVICES.values()}
    assert len(images) == 1 and None not in images, images
    for name, svc in FEDCHAIN_SERVICES.items():
        build = svc["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context / "Dockerfile").exists(), name


def test_compose_depends_on_targets_exist_with_fitting_conditions():
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: use the long depends_on form with conditions"
        for target, spec in deps.items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            condition = spec.get("condition")
            if _one_shot(SERVICES[target]):
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
            else:
                assert condition == "service_healthy", f"{name} -> {target}: {condition}"
                assert SERVICES[target].get("healthcheck", {}).get("test"), f"{target} has no healthcheck"


def test_compose_named_volumes_are_declared_and_used():
    declared = set(COMPOSE.get("volumes") or {})
    used = {vol for svc in SERVICES.values() for vol in _mounts(svc).values()}
    assert used <= declared, f"undeclared volumes: {sorted(used - declared)}"
    assert declared <= used, f"declared but unused volumes: {sorted(declared - used)}"


@pytest.mark.parametrize("name", ["anvil", "kubo"])
def test_compose_infrastructure_has_healthchecks_and_pinned_images(name):
    svc = SERVICES[name]
    check = svc.get("healthcheck") or {}
    assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck.test"
    image = svc["image"]
    assert ":" in image and not image.endswith((":latest", ":nightly", ":stable")), f"{name}: pin the image tag, not {image}"


def test_compose_kubo_is_the_version_the_standin_imitates():
    from kubo_standin import KUBO_VERSION

    assert SERVICES["kubo"]["image"] == f"ipfs/kubo:v{KUBO_VERSION}"
    # Kubo's import defaults are what fedchain's CIDs assume; the profile makes them explicit.
    assert _env(SERVICES["kubo"]).get("IPFS_PROFILE") in ("unixfs-v0-2015", "legacy-cid-v0")


def test_compose_anvil_matches_package_json_and_persists_state():
    svc = SERVICES["anvil"]
    version = json.loads((ROOT / "package.json").read_text())["dependencies"]["@foundry-rs/anvil"]
    assert svc["image"].endswith(f":v{version}"), f"anvil image {svc['image']} vs package.json {version}"
    assert svc.get("entrypoint") in (["anvil"], "anvil")
    args = _argv(svc["command"])
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert float(args[args.index("--block-time") + 1]) > 0
    state = args[args.index("--state") + 1]
    assert any(state.startswith(target.rstrip("/") + "/") for target in _mounts(svc)), f"{state} is not on a volume"
    assert svc.get("restart") == "unless-stopped"


@pytest.mark.parametrize("name", sorted(PEERS))
def test_compose_peers_restart_and_read_their_own_inputs(name):
    svc = PEERS[name]
    index = int(name.split("-")[1])
    env = _env(svc)
    assert svc.get("restart") == "on-failure"  # a peer exits 0 when the task is over
    assert set(svc["depends_on"]) == {"anvil", "kubo", "data", "deployer"}
    assert {"FEDCHAIN_DEPLOYMENT", "FEDCHAIN_STORE", "FEDCHAIN_RPC", "FEDCHAIN_DATA", "FEDCHAIN_KEY", "FEDCHAIN_JSON_LOG"} <= set(env)
    assert env["FEDCHAIN_DATA"].endswith(f"/peer-{index}.safetensors")
    mounts = _mounts(svc)
    shards_dir = env["FEDCHAIN_DATA"].rsplit("/", 1)[0]
    data_out = _argv(SERVICES["data"]["command"])
    assert mounts.get(shards_dir) == _mounts(SERVICES["data"]).get(data_out[data_out.index("--out") + 1]), "shards volume"
    deployment_dir = env["FEDCHAIN_DEPLOYMENT"].rsplit("/", 1)[0]
    deploy_argv = _argv(SERVICES["deployer"]["command"])
    output = deploy_argv[deploy_argv.index("--output") + 1]
    assert output == env["FEDCHAIN_DEPLOYMENT"], "peers must read the file the deployer writes"
    assert mounts.get(deployment_dir) == _mounts(SERVICES["deployer"]).get(deployment_dir), "deployment volume"
    deployer_env = _env(SERVICES["deployer"])
    assert env["FEDCHAIN_RPC"] == deployer_env["FEDCHAIN_RPC"] == "http://anvil:8545"
    assert env["FEDCHAIN_STORE"] == deployer_env["FEDCHAIN_STORE"] == "kubo:/dns/kubo/tcp/5001/http"


def test_compose_members_are_the_peers_keys_in_order():
    deployer_env = _env(SERVICES["deployer"])
    members = deployer_env["FEDCHAIN_MEMBERS"].split(",")
    keys = [_env(PEERS[f"peer-{i}"])["FEDCHAIN_KEY"] for i in range(len(PEERS))]
    assert len(set(keys)) == len(keys), "each peer needs its own key"
    assert [Account.from_key(k).address for k in keys] == members  # checksummed, member index order
    assert Account.from_key(deployer_env["FEDCHAIN_KEY"]).address not in members
    split = _argv(SERVICES["data"]["command"])
    assert int(split[split.index("--peers") + 1]) == len(PEERS) == len(members)


@pytest.mark.parametrize("name", sorted(PEERS))
def test_compose_peer_healthcheck_asks_the_nodes_health_server(name, monkeypatch):
    svc = PEERS[name]
    env = _env(svc)
    ctx = Invocation(_argv(svc["command"])).parse(env, monkeypatch)
    port, host = ctx.params["health_port"], ctx.params["health_host"]
    assert port, f"{name}: no health server (set FEDCHAIN_HEALTH_PORT)"
    test = " ".join(svc["healthcheck"]["test"])
    assert f"http://{host}:{port}/healthz" in test, f"{name}: healthcheck {test!r} vs server {host}:{port}"


def test_compose_one_shots_do_not_restart():
    for name in ("data", "deployer"):
        assert str(SERVICES[name].get("restart")) == "no", name


def test_compose_publishes_ports_on_loopback_only():
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_says_the_keys_are_public_test_keys():
    text = COMPOSE_FILE.read_text().lower()
    assert "public test keys" in text and "never use them on a real chain" in text


# ---------------------------------------------------------------------------- k8s helpers
def _kind(kind: str) -> list[dict]:
    return [doc for _, doc in K8S_DOCS if doc.get("kind") == kind]


def _named(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in _kind(kind)}


def _data_keys(doc: dict) -> dict[str, str]:
    import base64

    out = dict(doc.get("stringData") or {})
    out.update({k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()} if doc["kind"] == "Secret"
               else (doc.get("data") or {}))
    return {k: str(v) for k, v in out.items()}


def _fedchain_containers(pod_spec: dict):
    for key in ("initContainers", "containers"):
        for c in pod_spec.get(key) or []:
            if str(c.get("image", "")).startswith("fedchain"):
                yield key, c


def _container_env(c: dict) -> tuple[dict[str, str], dict[str, dict]]:
    """(FEDCHAIN-visible env with literal values, fieldRef env) of a container."""
    env, refs = {}, {}
    for ref in c.get("envFrom") or []:
        if "configMapRef" in ref:
            env.update(_data_keys(_named("ConfigMap")[ref["configMapRef"]["name"]]))
        if "secretRef" in ref:
            env.update(_data_keys(_named("Secret")[ref["secretRef"]["name"]]))
    for item in c.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "valueFrom" in item:
            refs[item["name"]] = item["valueFrom"]
    return env, refs


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in command/args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


STATEFULSETS = _kind("StatefulSet")


def _ordinal_envs(sts: dict, c: dict):
    """The environment each pod of the StatefulSet sees, ordinal by ordinal."""
    env, refs = _container_env(c)
    for ordinal in range(sts["spec"]["replicas"]):
        pod_env = dict(env)
        for name, source in refs.items():
            path = source.get("fieldRef", {}).get("fieldPath", "")
            if path == "metadata.labels['apps.kubernetes.io/pod-index']":
                pod_env[name] = str(ordinal)
            elif path == "metadata.name":
                pod_env[name] = f"{sts['metadata']['name']}-{ordinal}"
        yield ordinal, pod_env


# ---------------------------------------------------------------------------- k8s
def test_k8s_manifests_exist():
    assert {p.name for p in K8S_FILES} >= {"peers.yaml", "configmap.yaml", "secret.example.yaml"}
    assert len(STATEFULSETS) == 1
    assert _kind("ConfigMap") and _kind("Secret")


@pytest.mark.parametrize("sts", STATEFULSETS, ids=lambda s: s["metadata"]["name"])
def test_k8s_commands_exist_in_cli_for_every_pod(sts, monkeypatch):
    pod = sts["spec"]["template"]["spec"]
    containers = list(_fedchain_containers(pod))
    assert containers
    for key, c in containers:
        assert c.get("command") in (None, ["fedchain"]), f"{c['name']}: keep the image's fedchain entry point"
        read_by_some_pod: set[str] = set()
        env_names: set[str] = set()
        for ordinal, env in _ordinal_envs(sts, c):
            argv = _expand([str(a) for a in c["args"]], env)
            assert not any("$(" in a for a in argv), f"{c['name']}: unresolved reference in {argv}"
            inv = Invocation(argv)
            read_by_some_pod |= inv.reads()
            env_names |= set(env)
            where = f"{sts['metadata']['name']}-{ordinal}/{c['name']}"
            # A pod may see variables meant for its siblings (FEDCHAIN_KEY_N from one Secret);
            # everything else it sees, it must read.
            _check_env_is_read(inv, {k: v for k, v in env.items() if not re.fullmatch(r"FEDCHAIN_KEY_\d+", k)}, where)
            if key == "containers":
                _check_env_takes_effect(inv, inv.parse(env, monkeypatch), env, where)
            else:
                inv.parse(env, monkeypatch)
        unread = sorted(k for k in env_names if k.startswith("FEDCHAIN_") and k not in read_by_some_pod)
        assert not unread, f"{c['name']}: no pod reads {unread}"


@pytest.mark.parametrize("sts", STATEFULSETS, ids=lambda s: s["metadata"]["name"])
def test_k8s_each_pod_gets_its_own_key_and_shard(sts):
    pod = sts["spec"]["template"]["spec"]
    (_, peer), = [(k, c) for k, c in _fedchain_containers(pod) if k == "containers"]
    (_, init), = [(k, c) for k, c in _fedchain_containers(pod) if k == "initContainers"]
    split = [str(a) for a in init["args"]]
    assert int(split[split.index("--peers") + 1]) == sts["spec"]["replicas"]
    addresses, shards = [], []
    for ordinal, env in _ordinal_envs(sts, peer):
        inv = Invocation(_expand([str(a) for a in peer["args"]], env))
        key_var = inv.used.get("--key-env", ["FEDCHAIN_KEY"])[0]
        assert key_var in env, f"pod {ordinal}: {key_var} is not in its environment"
        addresses.append(Account.from_key(env[key_var]).address)
        shards.append(inv.used.get("--data", [env.get("FEDCHAIN_DATA")])[0])
    assert len(set(addresses)) == len(addresses), "pods share a key"
    assert shards == [f"/shards/peer-{i}.safetensors" for i in range(sts["spec"]["replicas"])]


@pytest.mark.parametrize("sts", STATEFULSETS, ids=lambda s: s["metadata"]["name"])
def test_k8s_volumes_and_references_are_declared(sts):
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for key in ("initContainers", "containers"):
        for c in pod.get(key) or []:
            for mount in c.get("volumeMounts") or []:
                assert mount["name"] in volumes, f"{c['name']} mounts undeclared volume {mount['name']}"
            for ref in c.get("envFrom") or []:
                kind, name = ("ConfigMap", ref["configMapRef"]["name"]) if "configMapRef" in ref else ("Secret", ref["secretRef"]["name"])
                assert name in _named(kind), f"{c['name']}: {kind} {name} is not in deploy/k8s/"
    texts = "\n".join(p.read_text() for p in K8S_FILES)
    for vol in volumes.values():
        if "configMap" in vol:
            name = vol["configMap"]["name"]
            assert name in _named("ConfigMap") or f"kubectl create configmap {name}" in texts, (
                f"ConfigMap {name} is neither in deploy/k8s/ nor documented as created with kubectl")
    deployment = _container_env(pod["containers"][0])[0].get("FEDCHAIN_DEPLOYMENT", "")
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in pod["containers"][0].get("volumeMounts") or []}
    assert mounts.get(deployment.rsplit("/", 1)[0]) == "deployment", "FEDCHAIN_DEPLOYMENT must point into the mounted ConfigMap"


@pytest.mark.parametrize("sts", STATEFULSETS, ids=lambda s: s["metadata"]["name"])
def test_k8s_probes_hit_healthz(sts):
    pod = sts["spec"]["template"]["spec"]
    for c in pod["containers"]:
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        for probe in ("livenessProbe", "readinessProbe"):
            spec = c.get(probe)
            assert spec and "httpGet" in spec, f"{c['name']}: no HTTP {probe}"
            assert spec["httpGet"]["path"] == "/healthz"
            port = spec["httpGet"]["port"]
            assert ports.get(port, port) == 9100, f"{c['name']}: {probe} port {port}"


@pytest.mark.parametrize("sts", STATEFULSETS, ids=lambda s: s["metadata"]["name"])
def test_k8s_probe_port_is_what_the_node_serves(sts, monkeypatch):
    peer = sts["spec"]["template"]["spec"]["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in peer.get("ports") or []}
    probe_port = ports.get(peer["livenessProbe"]["httpGet"]["port"], peer["livenessProbe"]["httpGet"]["port"])
    for ordinal, env in _ordinal_envs(sts, peer):
        ctx = Invocation(_expand([str(a) for a in peer["args"]], env)).parse(env, monkeypatch)
        assert ctx.params["health_port"] == probe_port, f"pod {ordinal} serves /healthz on {ctx.params['health_port']}"
        assert ctx.params["health_host"] not in ("127.0.0.1", "localhost", "::1"), (
            "the kubelet probes the pod IP: the health server must not listen on loopback only")


@pytest.mark.parametrize("sts", STATEFULSETS, ids=lambda s: s["metadata"]["name"])
def test_k8s_service_selects_the_pods(sts):
    services = _named("Service")
    assert sts["spec"]["serviceName"] in services
    svc = services[sts["spec"]["serviceName"]]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_k8s_secret_example_says_its_keys_are_public():
    text = (K8S_DIR / "secret.example.yaml").read_text().lower()
    assert "public test keys" in text and "never for a real" in text


# ---------------------------------------------------------------------------- Dockerfile
DOCKER_LINES = [line.strip() for line in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines()
                if line.strip() and not line.strip().startswith("#")]


def _instructions(name: str) -> list[str]:
    return [line[len(name):].strip() for line in DOCKER_LINES if line.upper().startswith(name + " ")]


def test_dockerfile_base_user_and_entrypoint():
    assert _instructions("FROM") == ["python:3.11-slim"]
    users = _instructions("USER")
    assert users and users[-1] not in ("root", "0", "0:0")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(_instructions("ENTRYPOINT")[-1]) == ["fedchain"] and "fedchain" in scripts


def test_dockerfile_torch_pin_matches_lock_and_comes_from_the_cpu_index():
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().split() if "==" in line)
    args = dict(a.split("=", 1) for a in _instructions("ARG") if "=" in a)
    assert args.get("TORCH_VERSION") == lock["torch"], f"Dockerfile torch {args.get('TORCH_VERSION')} vs lock {lock['torch']}"
    runs = " && ".join(_instructions("RUN"))
    cpu = runs.index("--index-url https://download.pytorch.org/whl/cpu")
    assert runs.index('"torch==${TORCH_VERSION}"') < cpu < runs.index("pip install -r requirements.lock")
    assert "pip install --no-deps ." in runs


def test_dockerfile_copies_every_package_directory():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {src for line in _instructions("COPY") for src in line.split()[:-1] if not src.startswith("--")}
    needed = set(pyproject["tool"]["setuptools"]["package-dir"].values()) | {"pyproject.toml", "requirements.lock"}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    for src in copied:
        assert "*" in src or (ROOT / src).exists(), f"COPY source {src} does not exist"
