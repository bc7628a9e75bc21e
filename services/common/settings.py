"""Process settings, read once from the environment (pydantic-settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.kafka import KafkaAccess, KafkaSettings


class Settings(KafkaSettings):
    """The Kafka credentials (TONNE_KAFKA_USERNAME, TONNE_KAFKA_PASSWORD,
    TONNE_KAFKA_SASL_MECHANISM) come from `KafkaSettings`."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    service: str
    env: Literal["development", "production"] = Field("development", validation_alias="TONNE_ENV")
    kafka_bootstrap: str = Field(validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap"))
    database_url: str = Field(validation_alias=AliasChoices("DATABASE_URL", "database_url"))
    http_host: str = Field("127.0.0.1", validation_alias="TONNE_HTTP_HOST")
    http_port: int = Field(0, ge=0, le=65535, validation_alias="TONNE_HTTP_PORT")  # 0: the service's default
    topic_prefix: str = Field("", validation_alias="TONNE_TOPIC_PREFIX")
    # An aggregate is snapshotted once this many events follow its last snapshot.
    snapshot_every: int = Field(500, ge=1, validation_alias="TONNE_SNAPSHOT_EVERY")
    # Aggregates kept in memory per repository (least recently used are dropped).
    aggregate_cache: int = Field(10_000, ge=1, validation_alias="TONNE_AGGREGATE_CACHE")
    # Published outbox rows and consumed-record ids older than this are deleted; keep it
    # above the broker's retention so a redelivery is still recognised.
    retention_hours: int = Field(7 * 24 + 24, ge=1, validation_alias="TONNE_RETENTION_HOURS")

    # Intake answers 429 while the engine is this many orders behind (matching).
    intake_max_backlog: int = Field(5_000, ge=1, validation_alias="TONNE_INTAKE_MAX_BACKLOG")

    @model_validator(mode="after")
    def _production_authenticates(self) -> Settings:
        # A production service never talks to Kafka as nobody (PLAINTEXT, no principal).
        if self.env == "production" and not (self.kafka_username and self.kafka_password.get_secret_value()):
            raise ValueError("production needs Kafka credentials: TONNE_KAFKA_USERNAME and TONNE_KAFKA_PASSWORD")
        return self

    @property
    def kafka(self) -> KafkaAccess:
        """The broker and this service's principal on it."""
        return self.access(self.kafka_bootstrap)

    @classmethod
    def from_env(cls, service: str, default_port: int) -> Settings:
        """Settings of `service`; KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL are required."""
        settings = cls(service=service)
        return settings if settings.http_port else settings.model_copy(update={"http_port": default_port})
