"""How every tonne Kafka client connects, and the one producer each service uses.

Every aiokafka client (producer, consumers, admin, probes) takes its connection options
from `KafkaAccess.options()`: SASL/SCRAM with the client's own principal when a username
is configured, PLAINTEXT (an external broker without SASL) when not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Mechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]
NO_PASSWORD = SecretStr("")
USERNAME_ENV, PASSWORD_ENV, MECHANISM_ENV = "TONNE_KAFKA_USERNAME", "TONNE_KAFKA_PASSWORD", "TONNE_KAFKA_SASL_MECHANISM"


@dataclass(frozen=True)
class KafkaAccess:
    """Where the broker is and who this client is."""

    bootstrap: str
    username: str = ""
    password: SecretStr = NO_PASSWORD
    mechanism: Mechanism = "SCRAM-SHA-512"

    @property
    def authenticated(self) -> bool:
        return bool(self.username)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of every aiokafka client: bootstrap servers and security."""
        if not self.authenticated:
            return {"bootstrap_servers": self.bootstrap}
        return {
            "bootstrap_servers": self.bootstrap,
            # Loopback or a private network: the local broker has no TLS listener.
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password.get_secret_value(),
        }

    def env(self) -> dict[str, str]:
        """The environment a child process reads the same access from (KafkaSettings)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            USERNAME_ENV: self.username,
            PASSWORD_ENV: self.password.get_secret_value(),
            MECHANISM_ENV: self.mechanism,
        }

    @classmethod
    def from_env(cls, bootstrap: str) -> KafkaAccess:
        """`bootstrap` with the credentials of the environment (TONNE_KAFKA_*), if any."""
        return KafkaSettings().access(bootstrap)


class KafkaSettings(BaseSettings):
    """A client's Kafka credentials from the environment; no username means PLAINTEXT."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    kafka_username: str = Field("", validation_alias=USERNAME_ENV)
    kafka_password: SecretStr = Field(NO_PASSWORD, validation_alias=PASSWORD_ENV)
    kafka_mechanism: Mechanism = Field("SCRAM-SHA-512", validation_alias=MECHANISM_ENV)

    def access(self, bootstrap: str) -> KafkaAccess:
        return KafkaAccess(bootstrap, self.kafka_username, self.kafka_password, self.kafka_mechanism)


def idempotent_producer(kafka: KafkaAccess, client_id: str) -> AIOKafkaProducer:
    # Idempotence forces acks=all and keeps per-partition order across retries. Since
    # Kafka 3.0 (KIP-679) WRITE on a topic is enough for it: no cluster IDEMPOTENT_WRITE.
    return AIOKafkaProducer(**kafka.options(), client_id=client_id, enable_idempotence=True, linger_ms=2)
