"""`fedchain simulate --resume` continues an interrupted simulation from the chain and the store."""
import json
import os
import signal
import subprocess
import sys
import time

from _support import clean_env, run_cli


def test_interrupted_simulation_resumes_and_completes(tmp_path):
    work = tmp_path / "sim"
    proc = subprocess.Popen([sys.executable, "-m", "fedchain.cli.main", "simulate", "--peers", "3", "--rounds", "4", "--epochs", "1",
                             "--workdir", str(work), "--block-time", "0.5"], env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = ""
    deadline = time.monotonic() + 240
    while "round 2: finalized" not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
    assert "round 2: finalized" in seen, seen
    time.sleep(1.5)  # let the chain's state be saved (every second)
    os.killpg(proc.pid, signal.SIGKILL)  # the simulation, its devnet and its peers die at once
    proc.wait()

    r = run_cli(["simulate", "--resume", "--workdir", str(work), "--block-time", "0.5", "--json"], timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["rounds_finalized"] == 4
    assert [x["status"] for x in summary["rounds"]] == ["finalized"] * 4
    assert "resuming" in r.stderr
