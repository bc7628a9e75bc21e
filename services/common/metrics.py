"""Prometheus metrics shared by every service (served on /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("tonne_records_total", "Records consumed, by outcome", ["consumer", "topic", "outcome"])
DEAD_LETTERS = Counter(
    "tonne_dead_letters_total", "Records parked on a dead-letter topic", ["consumer", "topic", "code"]
)
BATCH_SECONDS = Histogram("tonne_batch_seconds", "Time to apply one partition batch (group commit)", ["consumer"])
LAG = Gauge(
    "tonne_consumer_lag", "Records behind the partition's end, per consumer group", ["consumer", "topic", "partition"]
)
