"""Prometheus metrics shared by every service (served on /metrics)."""

from prometheus_client import Counter, Histogram

RECORDS = Counter("tonne_records_total", "Records consumed, by outcome", ["consumer", "topic", "outcome"])
DEAD_LETTERS = Counter(
    "tonne_dead_letters_total", "Records parked on a dead-letter topic", ["consumer", "topic", "code"]
)
HANDLE_SECONDS = Histogram("tonne_handle_seconds", "Time to apply one record", ["consumer", "topic"])
