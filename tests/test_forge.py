"""The Solidity fuzz and invariant tests (contracts/test/*.t.sol), run by forge from node_modules.

forge comes from `npm ci` (package-lock.json pins @foundry-rs/forge); `make test` runs `npm ci`
first. The test fails, rather than skips, when forge is missing, so a checkout without it is seen.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORGE = ROOT / "node_modules" / ".bin" / "forge"


def test_forge_fuzz_and_invariant_tests_pass():
    assert FORGE.exists(), f"forge not found at {FORGE}: run `npm ci` (or `make setup`) in {ROOT}"
    proc = subprocess.run([str(FORGE), "test"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "0 failed" in proc.stdout and "invariant_" in proc.stdout, proc.stdout[-3000:]
    assert "testFuzz_batchedMembershipRegistersEveryMemberInOrder" in proc.stdout, proc.stdout[-3000:]
