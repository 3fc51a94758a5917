"""A peer's health and metrics over HTTP, bound to loopback unless told otherwise.

* ``/livez``: liveness. 200 while the round loop has made progress recently (a poll answered, or
  a retry scheduled); 503 only when the process itself is stuck. A chain or store outage does not
  fail it: restarting a peer fixes neither.
* ``/readyz``: readiness. 200 when the chain answered recently and the store is usable.
* ``/healthz``: the combined report (JSON), kept for existing probes and people.
* ``/metrics``: Prometheus exposition, written by ``prometheus_client`` (full precision, escaped
  labels). Label values are bounded: exclusion reasons are an enum, details go to the log.
"""
from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..errors import ConfigError
from ..protocol.evaluation import METRIC_NAMES

__all__ = ["Metrics", "HealthServer", "EXCLUSION_REASONS", "exclusion_reason", "describe_peer_metrics"]

# Every label value an exclusion can carry; anything else is "other" (the detail is logged).
EXCLUSION_REASONS = ("too_large", "not_found", "unavailable", "cid_mismatch", "not_safetensors", "format",
                     "schema", "non_finite", "metadata", "samples", "malformed_graph", "not_revealed", "other")
_REASON_MARKERS = (
    ("never revealed", "not_revealed"),  # a sealed update committed but not revealed (ledger.updates.NEVER_REVEALED)
    ("DAG too large", "too_large"), ("DAG too", "malformed_graph"), ("DAG malformed", "malformed_graph"),
    ("over the", "too_large"), ("budget", "too_large"), ("does not match its CID", "cid_mismatch"),
    ("not safetensors", "not_safetensors"), ("unknown artifact format", "format"),
    ("tensor names differ", "schema"), ("expected F", "schema"), ("expected I", "schema"),
    ("NaN or Inf", "non_finite"), ("sample count", "samples"), ("metadata", "metadata"),
    ("not found", "not_found"), ("unavailable", "unavailable"), ("cannot reach", "unavailable"),
    ("graph", "malformed_graph"), ("link", "malformed_graph"), ("block", "malformed_graph"),
)


def exclusion_reason(detail: str) -> str:
    """The bounded label for an exclusion's free-text reason (which may carry attacker text)."""
    for marker, label in _REASON_MARKERS:
        if marker in detail:
            return label
    return "other"


class Metrics:
    """The peer's metrics in their own registry; ``inc``/``set``/``get`` by short name."""

    def __init__(self, prefix: str = "fedchain_"):
        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, object] = {}
        self._lock = threading.Lock()

    def describe(self, name: str, kind: str, help_text: str, labels: tuple[str, ...] = (), **kwargs) -> None:
        cls = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[kind]
        full = self.prefix + (name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name)
        with self._lock:
            if name not in self._metrics:
                self._metrics[name] = cls(full, help_text, labelnames=labels, registry=self.registry, **kwargs)

    def _get(self, name: str, labels: dict):
        try:
            metric = self._metrics[name]
        except KeyError:
            raise KeyError(f"metric {name!r} was never described") from None
        return metric.labels(**{k: str(v) for k, v in labels.items()}) if labels else metric

    def inc(self, name: str, amount: float = 1.0, **labels) -> None:
        self._get(name, labels).inc(amount)

    def set(self, name: str, value: float, **labels) -> None:
        self._get(name, labels).set(value)

    def observe(self, name: str, value: float, **labels) -> None:
        self._get(name, labels).observe(value)

    def get(self, name: str, **labels) -> float:
        metric = self._metrics.get(name)
        if metric is None:
            return 0.0
        wanted = {k: str(v) for k, v in labels.items()}
        for family in metric.collect():
            for sample in family.samples:
                if sample.name in (family.name, family.name + "_total") and sample.labels == wanted:
                    return float(sample.value)
        return 0.0

    def render(self) -> str:
        return generate_latest(self.registry).decode()


def describe_peer_metrics(m: Metrics, *, version: str = "") -> None:
    m.describe("build_info", "gauge", "Always 1; the labels say which fedchain build runs.", ("version",))
    m.set("build_info", 1, version=version or _version())
    m.describe("current_round", "gauge", "The open round on chain, as of the last poll.")
    m.describe("rounds_finalized_total", "counter", "Rounds this peer saw finalized.")
    m.describe("round_duration_seconds", "histogram", "Wall time from a round's start to its finalization, as this peer saw it.",
               buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
    m.describe("submissions_total", "counter", "Updates this peer submitted.")
    m.describe("missed_reveals_total", "counter", "Sealed updates this peer committed but could not reveal in time.")
    m.describe("votes_total", "counter", "Votes this peer cast.")
    m.describe("exclusions_total", "counter", "Updates this peer excluded from its aggregate, by reason.", ("reason",))
    for reason in EXCLUSION_REASONS:
        m.inc("exclusions_total", 0, reason=reason)
    m.describe("reputation", "gauge", "This peer's settled on-chain reputation.")
    m.describe("training_loss", "gauge", "Mean loss of the last local training epoch.")
    m.describe("phase_seconds_total", "counter", "Seconds spent per phase.", ("phase",))
    for phase in ("train", "store", "chain", "aggregate"):
        m.inc("phase_seconds_total", 0, phase=phase)
    m.describe("gas_used_total", "counter", "Gas used by this peer's transactions.")
    m.describe("errors_total", "counter", "Transient failures retried, by kind.", ("kind",))
    for kind in ("ChainUnavailable", "StoreError", "ContractError"):
        m.inc("errors_total", 0, kind=kind)
    m.describe("last_poll_timestamp_seconds", "gauge", "Unix time of the last successful chain poll.")
    m.describe("federated_metric", "gauge", "Federated metric of the latest evaluated global model: the holdout-size-weighted "
               "mean of the members' published evaluations, by metric (NaN until known, and where it does not apply).", ("metric",))
    for name in METRIC_NAMES:
        m.set("federated_metric", math.nan, metric=name)
    m.describe("federated_metric_round", "gauge", "Round whose finalized model fedchain_federated_metric describes (-1 until known).")
    m.set("federated_metric_round", -1)
    m.describe("holdout_evaluations_total", "counter", "Global models this peer evaluated on its own holdout.")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("fedchain")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


class HealthServer:
    """Serves ``/livez``, ``/readyz``, ``/healthz`` and ``/metrics``.

    ``check()`` returns the peer's report (a dict with booleans ``live``, ``ready`` and ``ok``).
    """

    def __init__(self, metrics: Metrics, check, *, host: str = "127.0.0.1", port: int = 0):
        self.metrics = metrics
        self.check = check
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0]
                if path == "/metrics":
                    body, ctype, status = outer.metrics.render().encode(), CONTENT_TYPE_LATEST, 200
                elif path in ("/livez", "/readyz", "/healthz", "/health"):
                    report = outer.check()
                    key = {"/livez": "live", "/readyz": "ready"}.get(path, "ok")
                    body = json.dumps(report).encode()
                    ctype, status = "application/json", 200 if report.get(key) else 503
                else:
                    body, ctype, status = b"not found\n", "text/plain", 404
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep request noise out of the peer's log
                pass

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except (OSError, OverflowError) as exc:
            raise ConfigError(f"cannot serve health and metrics on {host}:{port}: {exc}") from None
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)
        self.started = time.time()

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
