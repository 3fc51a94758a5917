"""`fedchain simulate --resume` continues an interrupted simulation from the chain and the store."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from _support import clean_env, run_cli, wait_for


@pytest.mark.timeout(900)  # a first run of up to 5 minutes, then the resumed one of up to 400 s
def test_interrupted_simulation_resumes_and_completes(tmp_path):
    work = tmp_path / "sim"
    log = tmp_path / "first-run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fedchain.cli.main", "simulate", "--peers", "3", "--rounds", "4", "--epochs", "1",
                                 "--workdir", str(work), "--block-time", "0.5"], env=clean_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    state = work / "anvil-state.json"
    try:
        wait_for(lambda: "round 2: finalized" in log.read_text() or proc.poll() is not None, 300, "round 2 to finalize")
        assert "round 2: finalized" in log.read_text(), log.read_text()[-3000:]
        seen = time.time()
        # anvil saves the chain every second: kill right after a complete save made after round 2
        # finalized, so the saved state holds it (and no save is likely to be under way).
        wait_for(lambda: state.stat().st_mtime > seen and json.loads(state.read_text()), 60,
                 "a chain state saved after round 2 finalized", interval=0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the simulation, its devnet and its peers die at once
        proc.wait(timeout=30)

    r = run_cli(["simulate", "--resume", "--workdir", str(work), "--block-time", "0.5", "--json"], timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["rounds_finalized"] == 4
    assert [x["status"] for x in summary["rounds"]] == ["finalized"] * 4
    assert "resuming" in r.stderr
