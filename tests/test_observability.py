"""While a simulation runs, a peer's /metrics and /healthz answer on loopback."""
import json
import re
import subprocess
import sys
import time
import urllib.request

from fedchain.node.peer.observability import HealthServer, Metrics

from _support import clean_env

EXPECTED = ["rounds_seen", "submissions_total", "votes_total", "reputation", "training_loss",
            "phase_seconds_total", "gas_spent_total", "last_poll_timestamp"]


def test_metrics_and_health_during_a_simulation(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "fedchain.cli.main", "simulate", "--peers", "2", "--rounds", "3", "--epochs", "1",
                             "--workdir", str(tmp_path / "sim")], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            m = re.search(r"(http://127\.0\.0\.1:\d+)/metrics", proc.stdout.readline())
            url = m and m.group(1)
        assert url, "simulate did not say where peer 0 serves metrics"
        text = ""
        while time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen(url + "/metrics", timeout=2).read().decode()
                if "fedchain_votes_total" in text:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        for name in EXPECTED:
            assert f"fedchain_{name}" in text, name
        health = json.loads(urllib.request.urlopen(url + "/healthz", timeout=2).read())
        assert health["ok"] and health["chain"] and health["store"]
        assert proc.wait(timeout=240) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_health_endpoint_reports_503_when_unhealthy_and_binds_loopback():
    metrics = Metrics()
    metrics.inc("votes_total")
    server = HealthServer(metrics, lambda: {"ok": False, "chain": False}).start()
    try:
        assert server.host == "127.0.0.1"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=2)
            raise AssertionError("expected HTTP 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=2).read().decode()
        assert "fedchain_votes_total 1" in body
    finally:
        server.stop()
