"""Aggregates are pinned, not only compared: the committed updates in tests/data/determinism/ must
give the committed aggregate CIDs for every rule, on every CPU capability torch can use here and
with one or two threads. A peer on another machine computes the same bytes, or this test says
which rule drifted.

The CIDs were computed when the fixtures were written (scripts/make_determinism_fixtures.py); each
run below recomputes them in a fresh interpreter with ``ATEN_CPU_CAPABILITY`` set before torch
loads, which makes torch dispatch to that instruction set's kernels.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedchain.node.aggregation import RULES
from fedchain.node.protocol.cid import cid_of_bytes

from _support import DATA, ROOT, clean_env

FIXTURES = DATA / "determinism"
SCRIPT = ROOT / "scripts" / "make_determinism_fixtures.py"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
REGENERATE = "run `python scripts/make_determinism_fixtures.py` and commit tests/data/determinism/"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


FLAGS = _cpu_flags()
CAPABILITIES = [
    pytest.param("default"),
    pytest.param("avx2", marks=pytest.mark.skipif("avx2" not in FLAGS, reason="this CPU has no AVX2")),
    pytest.param("avx512", marks=pytest.mark.skipif("avx512f" not in FLAGS, reason="this CPU has no AVX-512")),
]


def test_every_rule_has_a_pinned_aggregate_in_every_case():
    pinned = {key.split("/", 1)[1] for key in EXPECTED["aggregates"]}
    missing = [rule for rule in RULES if rule not in pinned]
    assert not missing, f"rules without a pinned aggregate CID: {missing}; {REGENERATE}"
    for case in EXPECTED["cases"]:
        unpinned = [rule for rule in RULES if f"{case}/{rule}" not in EXPECTED["aggregates"]]
        assert not unpinned, f"case {case!r} pins no aggregate for {unpinned}; {REGENERATE}"


def test_fixtures_are_intact_and_small():
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    for entry in [manifest["base"], *manifest["updates"]]:
        assert cid_of_bytes((FIXTURES / entry["file"]).read_bytes()) == entry["cid"], f"{entry['file']} changed; {REGENERATE}"
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 300_000


def test_the_cases_cover_every_exact_arithmetic_plan():
    assert {case: c["plan"] for case, c in EXPECTED["cases"].items()} == {
        "direct": [1, 1], "one-sided": [1, 2], "two-sided": [2, 2]}


def test_the_robust_rules_leave_out_the_attackers_in_the_fixtures():
    for case in EXPECTED["cases"]:
        included = {rule: EXPECTED["aggregates"][f"{case}/{rule}"]["included"] for rule in ("fedavg", "multi-krum", "trust-cosine")}
        assert not any(bits >> 6 & 1 for bits in included.values())  # member 6 resubmits member 2's update
        assert not included["multi-krum"] >> 4 & 1  # the far outlier
        assert not included["trust-cosine"] >> 1 & 1  # the sign-flipped update


@pytest.mark.timeout(300)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("capability", CAPABILITIES)
def test_aggregates_equal_the_pinned_cids(capability, threads):
    env = clean_env(ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--digests", "--threads", str(threads)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["capability"] == capability.upper(), f"torch ignored ATEN_CPU_CAPABILITY={capability}: ran {got['capability']}"
    assert got["threads"] == threads
    assert got["plans"] == {case: c["plan"] for case, c in EXPECTED["cases"].items()}
    unpinned = sorted(set(got["aggregates"]) - set(EXPECTED["aggregates"]))
    assert not unpinned, f"aggregates computed but not pinned: {unpinned}; {REGENERATE}"
    drifted = {key: (want, got["aggregates"].get(key)) for key, want in EXPECTED["aggregates"].items()
               if got["aggregates"].get(key) != want}
    assert not drifted, f"under {capability} with {threads} thread(s), aggregates differ from the pinned ones " \
                        f"(key: (pinned, computed)): {json.dumps(drifted, indent=1)}"
