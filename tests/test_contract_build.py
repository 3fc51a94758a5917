"""The committed artifact contracts/FedChain.json is exactly what contracts/FedChain.sol compiles to,
and every error, event and external function of the contract is documented with NatSpec."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from fedchain.contracts import build

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "contracts" / "FedChain.sol"
ARTIFACT = ROOT / "contracts" / "FedChain.json"


def _committed() -> dict:
    return json.loads(ARTIFACT.read_text())


@pytest.fixture(scope="module")
def fresh() -> dict:
    """The contract recompiled through contracts/build.py (py-solc-x; solc-js wrapper if no native solc)."""
    solc = build.find_solc()
    if Path(solc) == ROOT / "scripts" / "solc" and not (
        shutil.which("node") and (ROOT / "node_modules" / "solc").is_dir()
    ):
        pytest.skip("no Solidity compiler: neither a native solc nor node + node_modules/solc (run `npm ci`)")
    return build.compile_contract(solc)


def test_build_module_points_at_the_checkout_files():
    assert build.SOURCE.resolve() == SOURCE.resolve()
    assert build.ARTIFACT.resolve() == ARTIFACT.resolve()


def test_artifact_source_hash_matches_the_source():
    assert _committed()["sourceSha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), (
        "contracts/FedChain.sol changed without rebuilding: run `make contracts`"
    )


def test_recompiling_reproduces_the_committed_artifact(fresh):
    committed = _committed()
    assert committed["compiler"].startswith(f"solc {build.SOLC_VERSION}+")
    assert fresh["compiler"] == committed["compiler"], "a different compiler build was used"
    assert fresh["evmVersion"] == committed["evmVersion"] == build.EVM_VERSION
    assert fresh["sourceSha256"] == committed["sourceSha256"]
    assert fresh["abi"] == committed["abi"], "ABI differs from contracts/FedChain.json: run `make contracts`"
    assert fresh["bytecode"] == committed["bytecode"], "bytecode differs from contracts/FedChain.json"
    assert fresh["deployedBytecode"] == committed["deployedBytecode"], "deployedBytecode differs"
    assert len(committed["deployedBytecode"]) > 2


# ---------------------------------------------------------------------------------- NatSpec
_LINES = SOURCE.read_text().splitlines()


def _natspec_above(line_no: int) -> list[str]:
    """The contiguous `///` comment lines immediately above line ``line_no`` (0-based)."""
    block = []
    i = line_no - 1
    while i >= 0 and _LINES[i].strip().startswith("///"):
        block.insert(0, _LINES[i].strip())
        i -= 1
    return block


def _declaration(pattern: str) -> int:
    """Line number of the one declaration matching ``pattern`` (a regex over a stripped line)."""
    hits = [i for i, line in enumerate(_LINES) if re.match(pattern, line.strip())]
    assert len(hits) == 1, f"expected one declaration matching {pattern!r}, found lines {hits}"
    return hits[0]


def _abi_items(kind: str) -> list[str]:
    return sorted({item["name"] for item in _committed()["abi"] if item["type"] == kind})


def _has_notice(line_no: int) -> bool:
    return any(line.startswith("/// @notice") for line in _natspec_above(line_no))


@pytest.mark.parametrize("name", _abi_items("error"))
def test_every_error_has_a_natspec_notice(name):
    assert _has_notice(_declaration(rf"error {name}\(")), f"error {name} lacks `/// @notice` right above it"


@pytest.mark.parametrize("name", _abi_items("event"))
def test_every_event_has_a_natspec_notice(name):
    assert _has_notice(_declaration(rf"event {name}\(")), f"event {name} lacks `/// @notice` right above it"


@pytest.mark.parametrize("name", _abi_items("function"))
def test_every_abi_function_has_a_natspec_notice(name):
    # An ABI function is either a declared function or the getter of a public constant/variable.
    pattern = rf"(function {name}\(|\w[\w\[\]]* public (constant |immutable )?{name}\b)"
    assert _has_notice(_declaration(pattern)), f"{name} lacks `/// @notice` right above its declaration"


def _public_functions_in_source() -> list[tuple[str, int]]:
    found = []
    for i, line in enumerate(_LINES):
        m = re.match(r"function (\w+)\(", line.strip())
        if not m:
            continue
        header = " ".join(_LINES[i:i + 12])
        header = header[: min(p for p in (header.find("{"), header.find(";"), len(header)) if p >= 0)]
        if re.search(r"\b(external|public)\b", header):
            found.append((m.group(1), i))
    return found


def test_every_external_or_public_function_in_the_source_is_documented_and_in_the_abi():
    functions = _public_functions_in_source()
    assert len(functions) >= 10  # the parser found the contract's interface
    abi = set(_abi_items("function"))
    for name, line_no in functions:
        assert name in abi, f"{name} is external/public but missing from the committed ABI"
        assert _has_notice(line_no), f"function {name} (line {line_no + 1}) lacks `/// @notice` right above it"
