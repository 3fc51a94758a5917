"""A peer's health and metrics over HTTP: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text).

No dependency beyond the standard library. Binds to loopback unless told otherwise.
"""
from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Metrics", "HealthServer"]


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{str(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    """Counters and gauges, thread-safe, rendered in the Prometheus exposition format."""

    def __init__(self, prefix: str = "fedchain_"):
        self.prefix = prefix
        self._lock = threading.Lock()
        self._values: dict[str, dict[str, float]] = defaultdict(dict)
        self._kinds: dict[str, str] = {}
        self._help: dict[str, str] = {}

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._kinds[name] = kind
        self._help[name] = help_text

    def inc(self, name: str, amount: float = 1.0, **labels) -> None:
        key = _labels(labels)
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels) -> None:
        with self._lock:
            self._values[name][_labels(labels)] = float(value)

    def get(self, name: str, **labels) -> float:
        with self._lock:
            return self._values.get(name, {}).get(_labels(labels), 0.0)

    def render(self) -> str:
        lines = []
        with self._lock:
            for name in sorted(set(self._values) | set(self._kinds)):
                full = self.prefix + name
                if name in self._help:
                    lines.append(f"# HELP {full} {self._help[name]}")
                    lines.append(f"# TYPE {full} {self._kinds[name]}")
                for key, value in sorted(self._values.get(name, {}).items()):
                    lines.append(f"{full}{key} {value:g}")
        return "\n".join(lines) + "\n"


class HealthServer:
    """Serves ``/healthz`` from ``check()`` (a dict with a boolean ``ok``) and ``/metrics``."""

    def __init__(self, metrics: Metrics, check, *, host: str = "127.0.0.1", port: int = 0):
        self.metrics = metrics
        self.check = check
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] == "/metrics":
                    body, ctype, status = outer.metrics.render().encode(), "text/plain; version=0.0.4", 200
                elif self.path.split("?")[0] in ("/healthz", "/health"):
                    report = outer.check()
                    body = json.dumps(report).encode()
                    ctype, status = "application/json", 200 if report.get("ok") else 503
                else:
                    body, ctype, status = b"not found\n", "text/plain", 404
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep request noise out of the peer's log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def describe_peer_metrics(m: Metrics) -> None:
    m.describe("rounds_seen", "gauge", "Current round number as seen on chain.")
    m.describe("rounds_finalized_total", "counter", "Rounds this peer saw finalized.")
    m.describe("submissions_total", "counter", "Updates this peer submitted.")
    m.describe("votes_total", "counter", "Votes this peer cast.")
    m.describe("exclusions_total", "counter", "Updates this peer excluded from its aggregate, by reason.")
    m.describe("reputation", "gauge", "This peer's settled on-chain reputation.")
    m.describe("training_loss", "gauge", "Mean loss of the last local training epoch.")
    m.describe("phase_seconds_total", "counter", "Seconds spent per phase (train, store, chain, aggregate).")
    m.describe("gas_spent_total", "counter", "Gas used by this peer's transactions.")
    m.describe("errors_total", "counter", "Transient failures retried, by kind.")
    m.describe("last_poll_timestamp", "gauge", "Unix time of the last successful chain poll.")


