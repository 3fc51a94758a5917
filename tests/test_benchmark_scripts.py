"""The benchmark scripts still run against the library they measure (tiny sizes; timings are not
checked here: speed targets live in benchmarks/)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_aggregation_benchmark_runs_every_rule():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "aggregation.py"), "--updates", "6", "--params", "500",
                          "--repeats", "1"], capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    from fedchain.node.aggregation import RULES

    assert set(result["rules"]) == set(RULES) and all(r["included"] >= 1 for r in result["rules"].values())


def test_reference_weights_benchmark_takes_only_known_references():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reference_weights.py"), "--reference", "median"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
