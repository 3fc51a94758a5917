"""The Dockerfile, .dockerignore, docker-compose.yml and deploy/k8s/ must agree with the CLI they run.

Nothing here builds an image or starts a container (there is no Docker engine or cluster where
the tests run): the files are read as data, the compose file is validated against the Compose Specification's
JSON schema (vendored in check-jsonschema, offline), and every fedchain command line in them is checked
against the real click CLI (subcommand path, options, environment variables the command actually
reads), then parsed by click itself with that environment, as the container would. `sh -c`
scripts run under the real /bin/sh with `fedchain` and `cp` stubbed. The Kubernetes overlays are
rendered by a small kustomize subset (below; compared with `kubectl kustomize` where a kubectl is
installed), validated against the Kubernetes JSON schemas shipped inside kubernetes-validate
(offline), and checked against the Pod Security "restricted" profile. Cross-file facts (peer
count, keystores vs. members, who may mount which volume or Secret, pinned versions) are checked
too, since a mismatch there only shows up at run time.
"""
from __future__ import annotations

import base64
import copy
import functools
import importlib.metadata
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib

import click
import kubernetes_validate
import pytest
import yaml
from click.core import ParameterSource
from eth_account import Account

from fedchain.cli.main import cli

from _support import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict = COMPOSE["services"]


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


# ---------------------------------------------------------------------------- shell scripts
def _run_script(script: str, env: dict[str, str], tmp_path) -> list[list[str]]:
    """Run a container's `sh -c` script here, under the real /bin/sh with the container's
    environment, but with `fedchain` and `cp` replaced by stubs that only record their argv.
    What comes back is what the script would run, with its shell variables already expanded."""

    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "argv.jsonl"
    log.write_text("")
    for name in ("fedchain", "cp"):
        stub = stubs / name
        stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        f"open({str(log)!r}, 'a').write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + '\\n')\n")
        stub.chmod(0o755)
    run_env = {**env, "PATH": f"{stubs}:/usr/bin:/bin"}
    r = subprocess.run(["/bin/sh", "-c", script], env=run_env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"script failed: {r.stderr}"
    return [json.loads(line) for line in log.read_text().splitlines()]


def _fedchain_argvs(argv_lists: list[list[str]]) -> list[list[str]]:
    return [a[1:] for a in argv_lists if a[0] == "fedchain"]


def _check_invocation(argv: list[str], env: dict[str, str], where: str, monkeypatch, *, extra_ok=()) -> tuple[Invocation, click.Context]:
    inv = Invocation(argv)
    _check_env_is_read(inv, {k: v for k, v in env.items() if k not in extra_ok}, where)
    ctx = inv.parse(env, monkeypatch)
    _check_env_takes_effect(inv, ctx, env, where)
    return inv, ctx


PRIVATE_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


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


def _volume_mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(named volume, container path, read-only) of a service; bind mounts are left out."""
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type", "volume") == "volume":
                out.append((vol["source"], vol["target"], bool(vol.get("read_only"))))
            continue
        parts = vol.split(":")
        if not parts[0].startswith(("/", ".", "~")):
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> named volume."""
    return {target: source for source, target, _ in _volume_mounts(service)}


def _secrets(service: dict) -> dict[str, str]:
    """Path in the container -> compose secret name."""
    out = {}
    for s in service.get("secrets") or []:
        source, target = (s, s) if isinstance(s, str) else (s["source"], s.get("target", s["source"]))
        out[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    return out


def _one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


def _compose_argvs(name: str, svc: dict, tmp_path) -> list[list[str]]:
    """Every fedchain command line the service runs: its command, or those in its `sh -c` script."""
    if svc.get("entrypoint") in (["sh", "-c"], ["/bin/sh", "-c"]):
        (script,) = _argv(svc["command"]) if isinstance(svc["command"], list) else [svc["command"]]
        return _fedchain_argvs(_run_script(script, _env(svc), tmp_path))
    assert "entrypoint" not in svc, f"{name}: the image's entry point is the fedchain CLI; override it only with sh -c"
    return [_argv(svc["command"])]


FEDCHAIN_SERVICES = {name: svc for name, svc in SERVICES.items() if _is_fedchain(svc)}
PEERS = {name: svc for name, svc in SERVICES.items() if re.fullmatch(r"peer-\d+", name)}
MEMBERS = _env(SERVICES["deployer"])["FEDCHAIN_MEMBERS"].split(",")


def _compose_secret_file(name: str):
    return ROOT / COMPOSE["secrets"][name]["file"]


@functools.cache  # scrypt is slow by design; the same keystore is checked from several files
def _keystore_address(keystore: str, password: str) -> str:
    return Account.from_key(Account.decrypt(json.loads(keystore), password.rstrip("\n"))).address


# ---------------------------------------------------------------------------- compose
# There is no Docker engine here: the file is read as data, its command lines are checked
# against the click CLI, and its `sh -c` scripts run under /bin/sh with stubbed commands.
def _compose_spec_validator():
    """The Compose Specification's JSON schema as check-jsonschema vendors it (from SchemaStore),
    read from the installed package: offline, and pinned by the lock."""
    import importlib.resources

    import jsonschema

    schema = json.loads((importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"
    return jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())


def test_compose_file_validates_against_the_compose_specification_schema():
    errors = [f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in _compose_spec_validator().iter_errors(COMPOSE)]
    assert not errors, errors


def test_compose_spec_schema_rejects_what_compose_rejects():
    """The validator is not vacuous: a misspelt key, a wrong type and an unknown condition fail."""
    validator = _compose_spec_validator()
    name = sorted(PEERS)[0]
    for mutate in (
        lambda d: d["services"][name].__setitem__("restartt", "no"),
        lambda d: d["services"][name].__setitem__("environment", 3),
        lambda d: d["services"][name].__setitem__("depends_on", {"anvil": {"condition": "service_ready"}}),
    ):
        doc = copy.deepcopy(COMPOSE)
        mutate(doc)
        assert list(validator.iter_errors(doc)), mutate


def test_check_jsonschema_is_pinned_in_the_lock_and_the_test_extra():
    installed = importlib.metadata.version("check-jsonschema")
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().split() if "==" in line)
    assert lock.get("check-jsonschema") == installed
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert f"check-jsonschema=={installed}" in extra


def test_compose_has_one_peer_and_one_data_seeder_per_member():
    n = len(MEMBERS)
    assert n == 4 and len(set(MEMBERS)) == n
    assert sorted(PEERS) == sorted(f"peer-{i}" for i in range(n))
    assert set(FEDCHAIN_SERVICES) == {"deployer", *PEERS, *(f"data-{i}" for i in range(n))}
    assert {"anvil", "kubo"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(FEDCHAIN_SERVICES))
def test_compose_command_exists_in_cli(name, monkeypatch, tmp_path):
    svc = FEDCHAIN_SERVICES[name]
    argvs = _compose_argvs(name, svc, tmp_path)
    assert argvs, f"{name} runs no fedchain command"
    env = _env(svc)
    for argv in argvs:
        # MEMBER_INDEX/FEDCHAIN_MEMBERS of a seeding script are read by the script, not the CLI.
        _check_invocation(argv, env, name, monkeypatch, extra_ok={"FEDCHAIN_MEMBERS"} if name.startswith("data-") else ())


def test_compose_fedchain_services_share_one_hardened_image():
    images = {svc.get("image") for svc in FEDCHAIN_SERVICES.values()}
    assert len(images) == 1 and None not in images, images
    for name, svc in FEDCHAIN_SERVICES.items():
        build = svc["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context / "Dockerfile").exists(), name
        assert svc.get("read_only") is True and "/tmp" in (svc.get("tmpfs") or []), f"{name}: read-only root, /tmp scratch"
        assert svc.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in (svc.get("security_opt") or []), name


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


def test_compose_named_volumes_and_secrets_are_declared_and_used():
    declared = set(COMPOSE.get("volumes") or {})
    used = {vol for svc in SERVICES.values() for vol in _mounts(svc).values()}
    assert used == declared, f"undeclared: {sorted(used - declared)}, unused: {sorted(declared - used)}"
    secrets = set(COMPOSE.get("secrets") or {})
    used = {s for svc in SERVICES.values() for s in _secrets(svc).values()}
    assert used == secrets, f"undeclared: {sorted(used - secrets)}, unused: {sorted(secrets - used)}"
    for name in secrets:
        assert _compose_secret_file(name).is_file(), f"secret {name}: {_compose_secret_file(name)} is missing"


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
def test_compose_each_peer_alone_mounts_its_own_data_volume(name, monkeypatch):
    index = int(name.split("-")[1])
    svc = PEERS[name]
    ctx = Invocation(_argv(svc["command"])).parse(_env(svc), monkeypatch)
    data_dir = ctx.params["data_path"].rsplit("/", 1)[0]
    (volume,) = [v for v, target, ro in _volume_mounts(svc) if target == data_dir and ro]
    assert volume == f"peer-{index}-data", f"{name} reads its data from volume {volume}"
    holders = sorted(other for other, s in SERVICES.items() if volume in _mounts(s).values())
    assert holders == sorted([name, f"data-{index}"]), f"{volume} is mounted by {holders}"
    assert _mounts(SERVICES[f"data-{index}"]) == {data_dir: volume}
    # No volume is shared between peers except the deployment file's, which they only read.
    for vol, _, ro in _volume_mounts(svc):
        if vol != volume:
            assert ro and vol == "deployment", f"{name} mounts {vol}"


@pytest.mark.parametrize("index", range(4))
def test_compose_data_seeder_writes_only_its_members_shard(index, tmp_path, monkeypatch):
    svc = SERVICES[f"data-{index}"]
    ran = _run_script(_argv(svc["command"])[0], _env(svc), tmp_path)
    (split,) = _fedchain_argvs(ran)
    ctx = Invocation(split).parse(_env(svc), monkeypatch)
    assert ctx.params["peers"] == len(MEMBERS), "the split must have one shard per member"
    (copy,) = [a[1:] for a in ran if a[0] == "cp"]
    assert copy == [f"{ctx.params['out_dir']}/peer-{index}.safetensors", "/data/shard.safetensors"]
    assert not ctx.params["out_dir"].startswith("/data"), "the other shards must not land on the member's volume"


@pytest.mark.parametrize("name", sorted(PEERS))
def test_compose_peer_reads_the_deployers_file_and_reaches_chain_and_store(name, monkeypatch):
    svc = PEERS[name]
    env = _env(svc)
    assert svc.get("restart") == "on-failure"  # a peer exits 0 when the task is over
    index = int(name.split("-")[1])
    assert set(svc["depends_on"]) == {"anvil", "kubo", "deployer", f"data-{index}"}
    deploy_ctx = Invocation(_argv(SERVICES["deployer"]["command"])).parse(_env(SERVICES["deployer"]), monkeypatch)
    ctx = Invocation(_argv(svc["command"])).parse(env, monkeypatch)
    assert ctx.params["deployment"] == deploy_ctx.params["output"], "peers must read the file the deployer writes"
    folder = ctx.params["deployment"].rsplit("/", 1)[0]
    assert _mounts(svc)[folder] == _mounts(SERVICES["deployer"])[folder] == "deployment"
    assert ctx.params["rpc"] == deploy_ctx.params["rpc"] == "http://anvil:8545"
    assert ctx.params["store_spec"] == deploy_ctx.params["store_spec"] == "kubo:/dns/kubo/tcp/5001/http"
    assert ctx.params["json_log"] is True


def test_compose_has_no_raw_keys_anywhere():
    for name, svc in SERVICES.items():
        for var, value in _env(svc).items():
            assert not PRIVATE_KEY.fullmatch(value.strip()), f"{name}: {var} holds a raw private key"
        assert "--key-env" not in _argv(svc.get("command") or []), f"{name} reads a raw key"
    assert not PRIVATE_KEY.search(COMPOSE_FILE.read_text().replace("0x", " ")), "a raw key is written in docker-compose.yml"


@pytest.mark.parametrize("name", sorted(PEERS) + ["deployer"])
def test_compose_keystore_and_password_are_this_services_own_secrets(name, monkeypatch):
    svc = SERVICES[name]
    ctx = Invocation(_argv(svc["command"])).parse(_env(svc), monkeypatch)
    secrets = _secrets(svc)
    keystore, password = secrets[ctx.params["keystore"]], secrets[ctx.params["password_file"]]
    assert set(secrets.values()) == {keystore, password}
    for secret in (keystore, password):
        holders = [other for other, s in SERVICES.items() if secret in _secrets(s).values()]
        assert holders == [name], f"secret {secret} is given to {holders}"
    address = _keystore_address(_compose_secret_file(keystore).read_text(), _compose_secret_file(password).read_text())
    if name == "deployer":
        assert address not in MEMBERS, "the deployer pays for the deployment and is not a member"
    else:
        assert address == MEMBERS[int(name.split("-")[1])], f"{name}'s keystore is not member {name}"


@pytest.mark.parametrize("name", sorted(FEDCHAIN_SERVICES))
def test_compose_threads_are_capped_to_the_services_cpus(name):
    svc = FEDCHAIN_SERVICES[name]
    cpus = svc.get("cpus")
    assert cpus, f"{name}: no cpus limit"
    env = _env(svc)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert var in env and 1 <= int(env[var]) <= max(1, int(float(cpus))), f"{name}: {var}={env.get(var)} vs cpus {cpus}"


@pytest.mark.parametrize("name", sorted(PEERS))
def test_compose_peer_healthcheck_asks_readyz_of_the_nodes_health_server(name, monkeypatch):
    svc = PEERS[name]
    ctx = Invocation(_argv(svc["command"])).parse(_env(svc), monkeypatch)
    port, host = ctx.params["health_port"], ctx.params["health_host"]
    assert port, f"{name}: no health server (set FEDCHAIN_HEALTH_PORT)"
    test = " ".join(svc["healthcheck"]["test"])
    assert f"http://{host}:{port}/readyz" in test, f"{name}: healthcheck {test!r} vs server {host}:{port}"


def test_compose_one_shots_do_not_restart():
    for name in ("deployer", *(f"data-{i}" for i in range(len(MEMBERS)))):
        assert str(SERVICES[name].get("restart")) == "no", name


def test_compose_publishes_ports_on_loopback_only():
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_says_the_keys_are_public_test_keys():
    text = COMPOSE_FILE.read_text().lower()
    assert "public test keys" in text and "never use them on a real chain" in text


# ---------------------------------------------------------------------------- .dockerignore
def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's .dockerignore syntax (Go filepath.Match plus `**`), as a regex over a path."""
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out: a pattern matches it or a folder above it;
    the last matching pattern wins, and `!` patterns put paths back."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in _dockerignore_patterns():
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!"))
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_matcher_follows_dockers_rules():
    assert _pattern_regex("**/*.safetensors").fullmatch("a/b/c.safetensors")
    assert _pattern_regex("**/*.safetensors").fullmatch("c.safetensors")
    assert not _pattern_regex("*.json").fullmatch("a/b.json")  # `*` stays inside one folder
    assert _pattern_regex("keys/").fullmatch("keys")


@pytest.mark.parametrize("path", [
    "shards/peer-0.safetensors", "runs/x/shards/test.safetensors", "model.safetensors", "deployment.json",
    "runs/sim/deployment.json", "keys/peer-0.json", "home/.fedchain/keys/alice.json",
    "deploy/k8s/overlays/devnet/members/peer-0/keystore.json", "somewhere/keystore-peer.json", "my.keystore.json",
    "UTC--2026-01-01T00-00-00Z--f39fd6e5", "deploy/k8s/overlays/devnet/deployer/password", ".venv/bin/python",
    "node_modules/hardhat/package.json", ".git/HEAD", ".env",
])
def test_dockerignore_keeps_private_and_local_files_out_of_the_build_context(path):
    assert _dockerignored(path), f"{path} would be sent to the Docker daemon and could end up in the image"


def test_dockerignore_keeps_what_the_dockerfile_copies():
    copied = {src for line in _instructions("COPY") for src in line.split()[:-1] if not src.startswith("--")}
    needed = [p for src in copied for p in ([src] if (ROOT / src).is_file() else
              [str(f.relative_to(ROOT)) for f in (ROOT / src.rstrip("*")).rglob("*") if f.is_file() and "__pycache__" not in f.parts])
              if "*" not in src or (ROOT / src.rstrip("*")).exists()]
    assert "contracts/FedChain.json" in needed  # a JSON file the image needs: not a keystore
    dropped = sorted(p for p in needed if _dockerignored(p))
    assert not dropped, f".dockerignore drops files the Dockerfile copies: {dropped}"


# ---------------------------------------------------------------------------- kustomize, a subset
# No kubectl is assumed: this renders the overlays with the part of kustomize they use, and
# refuses any field outside it, so a new feature in a kustomization fails here instead of
# rendering wrongly. Where a kubectl with built-in kustomize is installed, the two renders must
# be identical (test_kustomize_subset_renders_what_kubectl_renders).
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "components", "namespace", "nameSuffix",
                    "configMapGenerator", "secretGenerator", "generatorOptions", "patches"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass"}
WORKLOADS = {"Job", "Deployment", "StatefulSet", "DaemonSet"}


def _pod_spec(doc: dict) -> dict | None:
    return doc["spec"]["template"]["spec"] if doc["kind"] in WORKLOADS else None


def _references(pod: dict):
    """(kind, holder dict, key) for every name a pod spec uses of a ConfigMap, Secret or claim."""
    for vol in pod.get("volumes") or []:
        assert "projected" not in vol, "projected volumes: not in the kustomize subset"
        if "persistentVolumeClaim" in vol:
            yield "PersistentVolumeClaim", vol["persistentVolumeClaim"], "claimName"
        if "secret" in vol:
            yield "Secret", vol["secret"], "secretName"
        if "configMap" in vol:
            yield "ConfigMap", vol["configMap"], "name"
    for key in ("initContainers", "containers"):
        for c in pod.get(key) or []:
            for ref in c.get("envFrom") or []:
                if "configMapRef" in ref:
                    yield "ConfigMap", ref["configMapRef"], "name"
                if "secretRef" in ref:
                    yield "Secret", ref["secretRef"], "name"
            for item in c.get("env") or []:
                source = item.get("valueFrom") or {}
                if "configMapKeyRef" in source:
                    yield "ConfigMap", source["configMapKeyRef"], "name"
                if "secretKeyRef" in source:
                    yield "Secret", source["secretKeyRef"], "name"


def _strategic_merge(base, patch):
    """Strategic merge as kustomize does it for the fields used here: maps merge, lists of named
    maps (containers, env, volumes) merge by name, any other list is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _strategic_merge(base[k], v) if k in base else v
        return out
    if (isinstance(base, list) and isinstance(patch, list) and base and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = list(base)
        for item in patch:
            at = [i for i, x in enumerate(out) if x["name"] == item["name"]]
            if at:
                out[at[0]] = _strategic_merge(out[at[0]], item)
            else:
                out.append(item)
        return out
    return patch


def _generated(root, kind: str, spec: dict) -> dict:

    assert set(spec) <= {"name", "literals", "files"}, f"{root}: generator fields {sorted(spec)}"
    data = {}
    for literal in spec.get("literals") or []:
        key, _, value = literal.partition("=")
        data[key] = value
    for entry in spec.get("files") or []:
        key, _, path = entry.rpartition("=")
        path = root / path
        assert path.resolve().is_relative_to(root.resolve()), f"{root}: {entry} is outside the kustomization"
        data[key or path.name] = path.read_text()
    doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        doc["type"] = "Opaque"
        doc["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        doc["data"] = data
    return doc


def kustomize(root, docs: list[dict] | None = None) -> list[dict]:
    """Render the kustomization (or Component) in folder ``root``."""

    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(spec) - KUSTOMIZE_FIELDS
    assert not unknown, f"{root}: {sorted(unknown)} is outside the kustomize subset the tests render"
    assert (spec["kind"] == "Component") == (docs is not None), f"{root}: components go under `components:`"
    docs = copy.deepcopy(docs or [])
    for res in spec.get("resources") or []:
        path = root / res
        docs += kustomize(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for comp in spec.get("components") or []:
        docs = kustomize(root / comp, docs)
    if spec.get("configMapGenerator") or spec.get("secretGenerator"):
        assert (spec.get("generatorOptions") or {}).get("disableNameSuffixHash") is True, (
            f"{root}: generated names with a hash suffix are outside the subset")
    docs += [_generated(root, "ConfigMap", g) for g in spec.get("configMapGenerator") or []]
    docs += [_generated(root, "Secret", g) for g in spec.get("secretGenerator") or []]
    for patch in spec.get("patches") or []:
        assert set(patch) == {"path"}, f"{root}: only strategic-merge patches from a file"
        for p in yaml.safe_load_all((root / patch["path"]).read_text()):
            hits = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == (p["kind"], p["metadata"]["name"])]
            assert len(hits) == 1, f"{root}: patch {patch['path']} matches {len(hits)} resources"
            docs[hits[0]] = _strategic_merge(docs[hits[0]], p)
    suffix = spec.get("nameSuffix")
    if suffix:
        names = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert not any(d["kind"] in CLUSTER_SCOPED for d in docs), f"{root}: suffix on cluster-scoped kinds"
        for d in docs:
            pod = _pod_spec(d)
            for kind, holder, key in (_references(pod) if pod else []):
                if (kind, holder[key]) in names:
                    holder[key] += suffix
            d["metadata"]["name"] += suffix
    if spec.get("namespace"):
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = spec["namespace"]
    return docs


K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = {p.parent.name: p.parent for p in sorted((K8S_DIR / "overlays").glob("*/kustomization.yaml"))}
RENDERED = {name: kustomize(path) for name, path in OVERLAYS.items()}
DEVNET = RENDERED["devnet"]


def _by(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _workloads(docs: list[dict]):
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield d, d["spec"]["template"]["spec"]


def _containers(pod: dict):
    for key in ("initContainers", "containers"):
        for c in pod.get(key) or []:
            yield key, c


def _is_fedchain_container(c: dict) -> bool:
    return str(c.get("image", "")).startswith("fedchain")


def _limit_cpus(c: dict) -> int:
    """What a resourceFieldRef to limits.cpu with divisor 1 resolves to: the limit, rounded up."""

    cpu = str(c["resources"]["limits"]["cpu"])
    return math.ceil(int(cpu[:-1]) / 1000) if cpu.endswith("m") else math.ceil(float(cpu))


def _data(doc: dict) -> dict[str, str]:

    if doc["kind"] == "Secret":
        out = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
        out.update(doc.get("stringData") or {})
        return out
    return {k: str(v) for k, v in (doc.get("data") or {}).items()}


def _pod_env(docs: list[dict], c: dict) -> dict[str, str]:
    """The environment a container sees, resolved from the rendered ConfigMaps and Secrets."""
    env: dict[str, str] = {}
    for ref in c.get("envFrom") or []:
        kind, name = ("ConfigMap", ref["configMapRef"]["name"]) if "configMapRef" in ref else ("Secret", ref["secretRef"]["name"])
        env.update(_data(_by(docs, kind)[name]))
    for item in c.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "configMapKeyRef" in source or "secretKeyRef" in source:
            kind, ref = ("ConfigMap", source["configMapKeyRef"]) if "configMapKeyRef" in source else ("Secret", source["secretKeyRef"])
            env[item["name"]] = _data(_by(docs, kind)[ref["name"]])[ref["key"]]
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            assert ref["resource"] == "limits.cpu" and str(ref.get("divisor", "1")) == "1", ref
            env[item["name"]] = str(_limit_cpus(c))
        else:
            pytest.fail(f"{c['name']}: unsupported env source {source}")
    return env


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in command/args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(a)) for a in args]


def _k8s_argvs(docs, c: dict, tmp_path) -> list[list[str]]:
    env = _pod_env(docs, c)
    command = c.get("command") or []
    if command[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        (script,) = command[2:] or c["args"]
        return _fedchain_argvs(_run_script(script, env, tmp_path))
    assert c.get("command") in (None, ["fedchain"]), f"{c['name']}: keep the image's fedchain entry point or use sh -c"
    argv = _expand(c["args"], env)
    assert not any("$(" in a for a in argv), f"{c['name']}: unresolved reference in {argv}"
    return [argv]


def _mount_of(c: dict, pod: dict, path: str) -> tuple[dict, dict]:
    """(volume, volumeMount) under which ``path`` lies in container ``c``."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    best = max((m for m in c.get("volumeMounts") or [] if path.startswith(m["mountPath"].rstrip("/") + "/")),
               key=lambda m: len(m["mountPath"]), default=None)
    assert best, f"{c['name']}: {path} is on no volume"
    return volumes[best["name"]], best


def _peer_jobs(docs) -> dict[str, dict]:
    return {name: job for name, job in _by(docs, "Job").items() if job["metadata"]["labels"].get("app.kubernetes.io/component") == "peer"}


def _members(docs) -> list[str]:
    return _data(_by(docs, "ConfigMap")["fedchain-members"])["FEDCHAIN_MEMBERS"].split(",")


def _member_index(docs, job: dict) -> int:
    """The index a member's Job was generated for: the number its nameSuffix appended."""
    return int(job["metadata"]["name"].rsplit("-", 1)[1])


# ---------------------------------------------------------------------------- kustomize renderer
def test_kustomize_subset_refuses_fields_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: x-\n")
    with pytest.raises(AssertionError, match="outside the kustomize subset"):
        kustomize(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                                                 "configMapGenerator: [{name: a, literals: [A=1]}]\n")
    with pytest.raises(AssertionError, match="hash suffix"):
        kustomize(tmp_path)


def test_kustomize_subset_renames_references_only_to_resources_in_the_same_build(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnameSuffix: \"-7\"\nresources: [job.yaml]\n"
        "secretGenerator: [{name: own, literals: [k=v]}]\ngeneratorOptions: {disableNameSuffixHash: true}\n")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}], "volumes": [
            {"name": "a", "secret": {"secretName": "own"}}, {"name": "b", "secret": {"secretName": "shared"}}]}}}}))
    (job,) = [d for d in kustomize(tmp_path) if d["kind"] == "Job"]
    assert job["metadata"]["name"] == "j-7"
    assert [v["secret"]["secretName"] for v in job["spec"]["template"]["spec"]["volumes"]] == ["own-7", "shared"]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="no kubectl with built-in kustomize installed")
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_kustomize_subset_renders_what_kubectl_renders(overlay):

    r = subprocess.run(["kubectl", "kustomize", str(OVERLAYS[overlay])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    key = lambda d: (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])  # noqa: E731
    def decoded(d):  # kubectl wraps long base64 lines; compare what the Secret holds
        return {**d, "data": _data(d)} if d["kind"] == "Secret" else d

    theirs = sorted((decoded(d) for d in yaml.safe_load_all(r.stdout) if d), key=key)
    ours = sorted(map(decoded, RENDERED[overlay]), key=key)
    assert [key(d) for d in ours] == [key(d) for d in theirs]
    for a, b in zip(ours, theirs):
        assert a == b, f"{key(a)} differs from kubectl kustomize"


# ---------------------------------------------------------------------------- k8s: schemas
K8S_VERSIONS = ["1.29.0", "1.37.0"]  # the oldest release we claim to support, and the newest schema shipped


def test_kubernetes_validate_works_offline_from_the_schemas_it_ships(monkeypatch):


    files = [str(f) for f in importlib.metadata.files("kubernetes-validate")]
    for version in K8S_VERSIONS:
        assert any(f"kubernetes-json-schema/v{version}-local-strict/job-batch-v1.json" in f for f in files), version

    def no_network(*args, **kwargs):
        raise AssertionError("kubernetes-validate tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
                                      "spec": {"completionz": 1}}, K8S_VERSIONS[0], strict=True)


def test_kubernetes_validate_is_pinned_in_the_lock_and_the_test_extra():

    installed = importlib.metadata.version("kubernetes-validate")
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().split() if "==" in line)
    assert lock.get("kubernetes-validate") == installed
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert f"kubernetes-validate=={installed}" in extra


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_k8s_every_rendered_manifest_validates_against_the_kubernetes_schema(overlay, version):

    assert RENDERED[overlay]
    for doc in RENDERED[overlay]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']} at {'.'.join(map(str, exc.path))}: {exc.message}")


# ---------------------------------------------------------------------------- k8s: Pod Security "restricted"
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
ALL_PODS = [(overlay, d["kind"], d["metadata"]["name"], pod) for overlay, docs in RENDERED.items() for d, pod in _workloads(docs)]
POD_IDS = [f"{o}:{k}/{n}" for o, k, n, _ in ALL_PODS]


def test_k8s_namespace_enforces_the_restricted_profile():
    (ns,) = _by(DEVNET, "Namespace").values()
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(d["metadata"].get("namespace") == ns["metadata"]["name"] for d in DEVNET if d["kind"] not in CLUSTER_SCOPED)


@pytest.mark.parametrize("overlay,kind,name,pod", ALL_PODS, ids=POD_IDS)
def test_k8s_pod_meets_the_restricted_profile(overlay, kind, name, pod):
    psc = pod.get("securityContext") or {}
    assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 1) != 0
    assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(field), field
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, f"{vol['name']}: {kinds} is not allowed under restricted"
    for _, c in _containers(pod):
        sc = c.get("securityContext") or {}
        where = f"{name}/{c['name']}"
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("privileged") in (None, False), where
        assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], where
        assert set((sc.get("capabilities") or {}).get("add") or []) <= {"NET_BIND_SERVICE"}, where
        assert sc.get("runAsUser", 1) != 0 and sc.get("runAsNonRoot", True) is True, where
        assert sc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] in ("RuntimeDefault", "Localhost"), where
        assert not c.get("ports") or not any("hostPort" in p for p in c["ports"]), where


@pytest.mark.parametrize("overlay,kind,name,pod", ALL_PODS, ids=POD_IDS)
def test_k8s_containers_have_a_read_only_root_with_scratch_and_resource_limits(overlay, kind, name, pod):
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for _, c in _containers(pod):
        where = f"{name}/{c['name']}"
        assert c["securityContext"].get("readOnlyRootFilesystem") is True, where
        tmp = [m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: no emptyDir at /tmp for scratch"
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set((c.get("resources") or {}).get(bound) or {}), f"{where}: {bound}"


@pytest.mark.parametrize("overlay,kind,name,pod", ALL_PODS, ids=POD_IDS)
def test_k8s_torch_threads_follow_the_cpu_limit(overlay, kind, name, pod):
    for _, c in _containers(pod):
        if not _is_fedchain_container(c):
            continue
        env = {e["name"]: e for e in c.get("env") or []}
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            ref = (env.get(var) or {}).get("valueFrom", {}).get("resourceFieldRef")
            assert ref == {"containerName": c["name"], "resource": "limits.cpu", "divisor": "1"}, (
                f"{name}/{c['name']}: {var} must be this container's CPU limit, not {env.get(var)}")


# ---------------------------------------------------------------------------- k8s: the CLI
@pytest.mark.parametrize("overlay,kind,name,pod", ALL_PODS, ids=POD_IDS)
def test_k8s_commands_exist_in_cli(overlay, kind, name, pod, monkeypatch, tmp_path):
    docs = RENDERED[overlay]
    for _, c in _containers(pod):
        if not _is_fedchain_container(c):
            continue
        env = _pod_env(docs, c)
        argvs = _k8s_argvs(docs, c, tmp_path)
        assert argvs, f"{name}/{c['name']} runs no fedchain command"
        for argv in argvs:
            _check_invocation(argv, env, f"{name}/{c['name']}", monkeypatch, extra_ok={"FEDCHAIN_MEMBERS"} if c["name"] == "seed-demo-shard" else ())


def test_k8s_peer_count_is_the_member_list_and_every_member_has_its_job():
    members = _members(DEVNET)
    jobs = _peer_jobs(DEVNET)
    assert sorted(_member_index(DEVNET, j) for j in jobs.values()) == list(range(len(members)))
    listed = [r for r in yaml.safe_load((OVERLAYS["devnet"] / "kustomization.yaml").read_text())["resources"] if r.startswith("members/")]
    assert listed == [f"members/peer-{i}" for i in range(len(members))], "one member folder per address, in order"
    for name, job in jobs.items():
        index = _member_index(DEVNET, job)
        assert _data(_by(DEVNET, "ConfigMap")[f"fedchain-member-{index}"]) == {"MEMBER_INDEX": str(index)}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_k8s_each_member_alone_mounts_its_own_data_and_keystore(overlay, monkeypatch):
    docs = RENDERED[overlay]
    members = _members(docs)
    claims_of, secrets_of = {}, {}
    for d, pod in _workloads(docs):
        for vol in pod.get("volumes") or []:
            if "persistentVolumeClaim" in vol:
                claims_of.setdefault(vol["persistentVolumeClaim"]["claimName"], set()).add(d["metadata"]["name"])
            if "secret" in vol:
                secrets_of.setdefault(vol["secret"]["secretName"], set()).add(d["metadata"]["name"])
    for name, job in _peer_jobs(docs).items():
        pod = job["spec"]["template"]["spec"]
        (peer,) = pod["containers"]
        ctx = Invocation(_k8s_argvs(docs, peer, None)[0]).parse(_pod_env(docs, peer), monkeypatch)
        data_volume, data_mount = _mount_of(peer, pod, ctx.params["data_path"])
        assert data_mount.get("readOnly") is True, f"{name}: mount the data read-only"
        claim = data_volume["persistentVolumeClaim"]["claimName"]
        key_volume, _ = _mount_of(peer, pod, ctx.params["keystore"])
        password_volume, _ = _mount_of(peer, pod, ctx.params["password_file"])
        assert key_volume is password_volume, f"{name}: keystore and password come from one Secret"
        secret = key_volume["secret"]["secretName"]
        assert claims_of[claim] == {name}, f"{claim} is mounted by {sorted(claims_of[claim])}"
        assert secrets_of[secret] == {name}, f"{secret} is mounted by {sorted(secrets_of[secret])}"
        index = _member_index(docs, job)
        assert (claim, secret) == (f"fedchain-data-{index}", f"fedchain-keystore-{index}")
        files = _data(_by(docs, "Secret")[secret])
        keystore = files[ctx.params["keystore"].rsplit("/", 1)[1]]
        password = files[ctx.params["password_file"].rsplit("/", 1)[1]]
        assert _keystore_address(keystore, password) == members[index], f"{name} does not hold member {index}'s key"
    (deployer,) = [d for d in _by(docs, "Job").values() if d["metadata"]["labels"]["app.kubernetes.io/component"] == "deployer"]
    for secret, holders in secrets_of.items():
        assert len(holders) == 1, f"{secret} is mounted by {sorted(holders)}"


def test_k8s_deployer_key_is_not_a_member_and_no_secret_is_shared():
    (job,) = [d for d in _by(DEVNET, "Job").values() if d["metadata"]["labels"]["app.kubernetes.io/component"] == "deployer"]
    pod = job["spec"]["template"]["spec"]
    (secret,) = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    files = _data(_by(DEVNET, "Secret")[secret])
    assert _keystore_address(files["keystore.json"], files["password"]) not in _members(DEVNET)


def test_k8s_seed_script_puts_only_the_members_shard_on_its_volume(tmp_path, monkeypatch):
    for name, job in _peer_jobs(DEVNET).items():
        pod = job["spec"]["template"]["spec"]
        (seed,) = pod["initContainers"]
        env = _pod_env(DEVNET, seed)
        ran = _run_script(seed["command"][2], env, tmp_path)
        (split,) = _fedchain_argvs(ran)
        ctx = Invocation(split).parse(env, monkeypatch)
        assert ctx.params["peers"] == len(_members(DEVNET))
        (copy,) = [a[1:] for a in ran if a[0] == "cp"]
        index = _member_index(DEVNET, job)
        assert copy[0] == f"{ctx.params['out_dir']}/peer-{index}.safetensors"
        target_volume, _ = _mount_of(seed, pod, copy[1])
        split_volume, _ = _mount_of(seed, pod, ctx.params["out_dir"] + "/x")
        assert target_volume["persistentVolumeClaim"]["claimName"] == f"fedchain-data-{index}"
        assert "emptyDir" in split_volume, "the other members' shards must stay in scratch"
        peer_ctx = Invocation(_k8s_argvs(DEVNET, pod["containers"][0], None)[0]).parse(_pod_env(DEVNET, pod["containers"][0]), monkeypatch)
        assert peer_ctx.params["data_path"] == copy[1]


def test_k8s_peers_read_the_file_the_deployer_writes(monkeypatch):
    jobs = _by(DEVNET, "Job")
    (deployer,) = [d for d in jobs.values() if d["metadata"]["labels"]["app.kubernetes.io/component"] == "deployer"]
    dpod = deployer["spec"]["template"]["spec"]
    (dc,) = dpod["containers"]
    dctx = Invocation(_k8s_argvs(DEVNET, dc, None)[0]).parse(_pod_env(DEVNET, dc), monkeypatch)
    written, mount = _mount_of(dc, dpod, dctx.params["output"])
    assert not mount.get("readOnly")
    assert set(dctx.params["members"].split(",")) == set(_members(DEVNET))
    for name, job in _peer_jobs(DEVNET).items():
        pod = job["spec"]["template"]["spec"]
        (peer,) = pod["containers"]
        ctx = Invocation(_k8s_argvs(DEVNET, peer, None)[0]).parse(_pod_env(DEVNET, peer), monkeypatch)
        assert ctx.params["deployment"] == dctx.params["output"]
        assert ctx.params["wait_deployment"] > 0, f"{name}: wait for the deployer instead of failing at once"
        read, mount = _mount_of(peer, pod, ctx.params["deployment"])
        assert read["persistentVolumeClaim"]["claimName"] == written["persistentVolumeClaim"]["claimName"]
        assert mount.get("readOnly") is True
        assert (ctx.params["rpc"], ctx.params["store_spec"]) == (dctx.params["rpc"], dctx.params["store_spec"])


# ---------------------------------------------------------------------------- k8s: lifecycle
def test_k8s_peers_are_jobs_that_finish():
    for overlay, docs in RENDERED.items():
        for d, pod in _workloads(docs):
            if any(_is_fedchain_container(c) for _, c in _containers(pod)):
                assert d["kind"] == "Job", f"{d['metadata']['name']}: `fedchain` exits when done; run it as a Job"
                assert pod["restartPolicy"] in ("OnFailure", "Never")
                assert d["spec"].get("backoffLimit", 6) >= 1


@pytest.mark.parametrize("name", sorted(_peer_jobs(DEVNET)))
def test_k8s_probes_use_livez_and_readyz_on_the_port_the_node_serves(name, monkeypatch):
    job = _peer_jobs(DEVNET)[name]
    (peer,) = job["spec"]["template"]["spec"]["containers"]
    ctx = Invocation(_k8s_argvs(DEVNET, peer, None)[0]).parse(_pod_env(DEVNET, peer), monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in peer["ports"]}
    expected = {"livenessProbe": "/livez", "readinessProbe": "/readyz", "startupProbe": "/livez"}
    for probe, path in expected.items():
        get = peer[probe]["httpGet"]
        assert get["path"] == path, f"{probe} asks {get['path']}"
        assert ports.get(get["port"], get["port"]) == ctx.params["health_port"]
    assert ctx.params["health_host"] not in ("127.0.0.1", "localhost", "::1"), (
        "the kubelet probes the pod IP: the health server must not listen on loopback only")
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ctx.params["health_port"]
    # The startup probe must outlast the wait for the deployment file.
    startup = peer["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= ctx.params["wait_deployment"]


def test_k8s_services_select_the_infrastructure_pods():
    deployments = _by(DEVNET, "Deployment")
    for name, svc in _by(DEVNET, "Service").items():
        (target,) = [d for d in deployments.values() if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        ports = {p["name"] for c in target["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports, name
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{name} must not leave the cluster"
    for name, d in deployments.items():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        assert c.get("readinessProbe") and c.get("livenessProbe"), name
    config = _data(_by(DEVNET, "ConfigMap")["fedchain-config"])
    assert config["FEDCHAIN_RPC"] == "http://anvil:8545" and "/dns/kubo/tcp/5001/" in config["FEDCHAIN_STORE"]


def test_k8s_references_resolve_within_the_render():
    for overlay, docs in RENDERED.items():
        for d, pod in _workloads(docs):
            volumes = {v["name"] for v in pod.get("volumes") or []}
            for _, c in _containers(pod):
                for m in c.get("volumeMounts") or []:
                    assert m["name"] in volumes, f"{c['name']} mounts undeclared volume {m['name']}"
            for kind, holder, key in _references(pod):
                assert holder[key] in _by(docs, kind), f"{overlay}: {d['metadata']['name']} uses {kind} {holder[key]}, which is not rendered"


def test_k8s_network_policy_admits_only_pods_of_the_namespace():
    (policy,) = _by(DEVNET, "NetworkPolicy").values()
    spec = policy["spec"]
    assert spec["podSelector"] == {} and spec["policyTypes"] == ["Ingress"], "it must cover every pod"
    for rule in spec["ingress"]:
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, f"{peer} admits traffic from outside the namespace"


def test_k8s_hostpath_volumes_are_each_bound_to_one_members_claim():
    docs = RENDERED["devnet-hostpath"]
    pvs = _by(docs, "PersistentVolume")
    claims = _by(docs, "PersistentVolumeClaim")
    assert len(pvs) == len(_members(docs))
    for name, pv in pvs.items():
        ref = pv["spec"]["claimRef"]
        claim = claims[ref["name"]]
        assert ref["namespace"] == claim["metadata"]["namespace"] and claim["spec"]["volumeName"] == name
        assert claim["spec"]["storageClassName"] == pv["spec"]["storageClassName"] == ""
        assert ref["name"].startswith("fedchain-data-") and "hostPath" in pv["spec"]
    paths = [pv["spec"]["hostPath"]["path"] for pv in pvs.values()]
    assert len(set(paths)) == len(paths), "members share a host folder"


def test_k8s_devnet_overlay_says_its_keys_are_public():
    text = (OVERLAYS["devnet"] / "kustomization.yaml").read_text().lower()
    assert "public test keys" in text and "never for a real chain" in text


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
