"""Compile ``FedChain.sol`` through py-solc-x and write the committed artifact ``FedChain.json``.

py-solc-x drives a native ``solc`` when one is installed (its own managed install or one on PATH).
Where none exists, ``scripts/solc`` presents solc-js from npm with the same command line.
Run as ``python -m fedchain.contracts.build`` from a checkout.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

__all__ = ["SOURCE", "ARTIFACT", "SOLC_VERSION", "compile_contract", "find_solc", "write_artifact"]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "FedChain.sol"
ARTIFACT = HERE / "FedChain.json"
CONTRACT = "FedChain"
SOLC_VERSION = "0.8.37"
EVM_VERSION = "cancun"


def find_solc() -> str:
    """Path of the compiler to use: $FEDCHAIN_SOLC, py-solc-x's own install, PATH, then solc-js."""
    explicit = os.environ.get("FEDCHAIN_SOLC")
    if explicit:
        return explicit
    try:
        import solcx

        for version in solcx.get_installed_solc_versions():
            if str(version) == SOLC_VERSION:
                return str(solcx.install.get_executable(version))
    except Exception:  # no managed install: fall through
        pass
    native = shutil.which("solc")
    if native:
        return native
    wrapper = HERE.parent / "scripts" / "solc"
    if wrapper.exists():
        return str(wrapper)
    raise RuntimeError("no Solidity compiler: install solc, or run `npm ci` in a checkout")


def compile_contract(solc: str | None = None) -> dict:
    """Compile the source and return the artifact dict (ABI, bytecode, compiler, source hash)."""
    import solcx

    binary = solc or find_solc()
    source = SOURCE.read_text()
    standard = {
        "language": "Solidity",
        "sources": {SOURCE.name: {"content": source}},
        "settings": {
            "optimizer": {"enabled": True, "runs": 10000},
            "viaIR": True,
            "evmVersion": EVM_VERSION,
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }
    out = solcx.compile_standard(standard, solc_binary=binary)
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    contract = out["contracts"][SOURCE.name][CONTRACT]
    version = solcx.wrapper.get_solc_version(binary, with_commit_hash=True)
    return {
        "contractName": CONTRACT,
        "compiler": f"solc {version}",
        "evmVersion": EVM_VERSION,
        "sourceSha256": hashlib.sha256(source.encode()).hexdigest(),
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
    }


def write_artifact(artifact: dict, path: Path = ARTIFACT) -> None:
    path.write_text(json.dumps(artifact, indent=1, sort_keys=True) + "\n")


def main() -> int:
    artifact = compile_contract()
    write_artifact(artifact)
    print(f"wrote {ARTIFACT} ({artifact['compiler']}, {len(artifact['bytecode']) // 2 - 1} bytes of init code)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
