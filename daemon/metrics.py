"""Prometheus instruments, one registry per node (so tests and several
nodes in one process do not share counters). Labels never carry record ids,
principals or anything patient-related: routes are reported by template."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_written = Counter("medvault_records_written", "Record versions stored", registry=r)
        self.records_read = Counter("medvault_records_read", "Record contents opened", registry=r)
        self.bytes_written = Counter("medvault_bytes_written", "Plaintext bytes ingested", registry=r)
        self.bytes_read = Counter("medvault_bytes_read", "Plaintext bytes served", registry=r)
        self.requests = Histogram("medvault_request_seconds", "HTTP request latency by route template",
                                  ["method", "route", "status"], registry=r)
        self.backend_seconds = Histogram("medvault_backend_seconds", "Backend call latency",
                                         ["backend", "op"], registry=r)
        self.backend_errors = Counter("medvault_backend_errors", "Backend calls that failed",
                                      ["backend", "op"], registry=r)
        self.pins = Gauge("medvault_pins", "Pins by status", ["status"], registry=r)
        self.under_replicated = Gauge("medvault_pins_under_replicated",
                                      "Pins held by fewer peers than replication-min", registry=r)
        self.records = Gauge("medvault_records", "Records in the index", registry=r)
        self.auth_failures = Counter("medvault_auth_failures", "Refused authentications by reason",
                                     ["reason"], registry=r)
        self.loop_lag = Histogram("medvault_event_loop_lag_seconds", "How late the event loop woke (stalls)",
                                  buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r)
        self.background_crashes = Counter("medvault_background_crashes", "Background tasks that crashed",
                                          ["task"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
