"""Process settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    service: str
    kafka_bootstrap: str
    database_url: str
    http_host: str
    http_port: int
    topic_prefix: str

    @classmethod
    def from_env(cls, service: str, default_port: int) -> Settings:
        def required(name: str) -> str:
            value = os.environ.get(name)
            if not value:
                raise RuntimeError(f"{name} is not set (make up sets it; see README)")
            return value

        return cls(
            service=service,
            kafka_bootstrap=required("KAFKA_BOOTSTRAP_SERVERS"),
            database_url=required("DATABASE_URL"),
            http_host=os.environ.get("TONNE_HTTP_HOST", "127.0.0.1"),
            http_port=int(os.environ.get("TONNE_HTTP_PORT", default_port)),
            topic_prefix=os.environ.get("TONNE_TOPIC_PREFIX", ""),
        )
