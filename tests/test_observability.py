"""A peer's /metrics, /livez, /readyz and /healthz: parsed as Prometheus parses them, with samples
asserted, during a real simulation and against hostile label values."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedchain.node.peer.observability import EXCLUSION_REASONS, HealthServer, Metrics, describe_peer_metrics, exclusion_reason

from _support import clean_env

pytestmark = pytest.mark.timeout(600)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition, keyed by (name, sorted labels); fails on any syntax error."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_and_probes_during_a_simulation(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "fedchain.cli.main", "simulate", "--peers", "2", "--rounds", "3", "--epochs", "1",
                             "--workdir", str(tmp_path / "sim")], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        url = None
        deadline = time.monotonic() + 240
        for line in proc.stdout:  # ends when simulate exits; the deadline is checked per line
            m = re.search(r"(http://127\.0\.0\.1:\d+)/metrics", line)
            if m or time.monotonic() > deadline:
                url = m and m.group(1)
                break
        assert url, "simulate did not say where peer 0 serves metrics"
        samples: dict = {}
        while time.monotonic() < deadline:
            try:
                status, body = _get(url + "/metrics")
            except OSError:
                time.sleep(0.5)
                continue
            samples = _samples(body.decode())
            if samples.get(("fedchain_votes_total", ()), 0) >= 1 and samples.get(("fedchain_rounds_finalized_total", ()), 0) >= 1:
                break
            time.sleep(0.5)
        assert samples.get(("fedchain_submissions_total", ()), 0) >= 1
        assert samples.get(("fedchain_votes_total", ()), 0) >= 1
        assert samples.get(("fedchain_rounds_finalized_total", ()), 0) >= 1, "the finalized-rounds counter never moved"
        assert samples.get(("fedchain_current_round", ()), 0) >= 2
        assert samples[("fedchain_gas_used_total", ())] > 50_000  # full precision, not 9.8061e+04
        assert float(samples[("fedchain_gas_used_total", ())]).is_integer()
        poll = samples[("fedchain_last_poll_timestamp_seconds", ())]
        assert abs(poll - time.time()) < 120  # to the second, not to +-6 days
        assert samples[("fedchain_round_duration_seconds_count", ())] >= 1
        assert [v for k, v in samples.items() if k[0] == "fedchain_build_info"] == [1.0]
        for reason in EXCLUSION_REASONS:  # labelled counters start at zero
            assert ("fedchain_exclusions_total", (("reason", reason),)) in samples
        # simulate keeps a holdout in every shard: the first vote saw the members' evaluations of the initial model
        assert samples[("fedchain_federated_metric_round", ())] >= 0
        assert 0 <= samples[("fedchain_federated_metric", (("metric", "accuracy"),))] <= 1
        assert samples[("fedchain_holdout_evaluations_total", ())] >= 1
        for path in ("/livez", "/readyz", "/healthz"):
            status, body = _get(url + path)
            assert status == 200, (path, body)
        health = json.loads(_get(url + "/healthz")[1])
        assert health["live"] and health["ready"] and health["chain"] and health["store"] and health["round"] >= 1
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_liveness_and_readiness_answer_separately_and_bind_loopback():
    metrics = Metrics()
    describe_peer_metrics(metrics)
    report = {"ok": False, "live": True, "ready": False, "chain": False}
    server = HealthServer(metrics, lambda: report).start()
    try:
        assert server.host == "127.0.0.1"
        base = f"http://127.0.0.1:{server.port}"
        assert _get(base + "/livez")[0] == 200  # the chain is down, but restarting would not help
        assert _get(base + "/readyz")[0] == 503
        assert _get(base + "/healthz")[0] == 503
        report["live"] = False
        assert _get(base + "/livez")[0] == 503
        assert _get(base + "/nope")[0] == 404
    finally:
        server.stop()


def test_hostile_exclusion_reasons_cannot_break_the_exposition():
    metrics = Metrics()
    describe_peer_metrics(metrics)
    hostile = 'metadata kind=\'u"} 1e308\n# EOF\', expected \'update\''
    metrics.inc("exclusions_total", reason=exclusion_reason(hostile))
    metrics.inc("exclusions_total", reason=exclusion_reason('x"} 1e308 {'))
    samples = _samples(metrics.render())
    assert samples[("fedchain_exclusions_total", (("reason", "metadata"),))] == 1
    assert samples[("fedchain_exclusions_total", (("reason", "other"),))] == 1
    labels = {dict(k[1]).get("reason") for k in samples if k[0] == "fedchain_exclusions_total"}
    assert labels == set(EXCLUSION_REASONS)


def test_label_values_are_escaped_even_when_free_text_gets_through():
    metrics = Metrics()
    metrics.describe("errors_total", "counter", "x", ("kind",))
    metrics.inc("errors_total", kind='a"b\\c\nd')
    samples = _samples(metrics.render())
    assert samples[("fedchain_errors_total", (("kind", 'a"b\\c\nd'),))] == 1


@pytest.mark.parametrize("detail, label", [
    ("artifact is 99 bytes, over the 10-byte limit", "too_large"),
    ("not safetensors: bad header length", "not_safetensors"),
    ("0.weight: contains NaN or Inf", "non_finite"),
    ("content fetched for Qm... does not match its CID", "cid_mismatch"),
    ("something nobody anticipated", "other"),
])
def test_exclusion_reasons_map_to_a_bounded_set(detail, label):
    assert exclusion_reason(detail) == label
