"""Who may do what on the Kafka broker: principals, their passwords, the ACL table.

The broker (deploy/kafka_broker.py, `sasl=True`) authenticates clients with SCRAM-SHA-512
and authorizes them with the KRaft StandardAuthorizer, `allow.everyone.if.no.acl.found`
false: a principal may do only what an ACL below grants it.

- `tonne-admin`: super user; created when the storage is formatted; used by provisioning
  (topics, users, ACLs) and by tests that need raw access. Never given to a service.
- `tonne-<service>`: each service reads exactly the topics it consumes, writes exactly the
  topics its outbox sends to and the dead letters of what it reads, and reads its consumer
  group `<prefix>tonne-<service>` (services/common/topics.py holds the lists).
- `national-registry-<J>`: writes only `registry.inbound.<J>`, reads only
  `registry.outbound.<J>`, with consumer groups named `<prefix>national-registry-<J>...`.
- `regulator-<J>`: reads only `audit.<J>`, groups `<prefix>regulator-<J>...`.

READ and WRITE imply DESCRIBE in Kafka's ACL model, so no DESCRIBE ACL is needed: the
producer's metadata, the consumer's offset fetch and matching's backlog probe (OffsetFetch
on its group) all pass on them. An idempotent producer needs nothing more than WRITE on a
topic since Kafka 3.0 (KIP-679).

Passwords: the admin's is random (secrets) and kept with the broker (mode 0600); every
other principal's is HMAC-SHA256(admin password, name), so `make up`, the fixtures and
`python -m deploy.stack kafka-credentials <name>` derive the same one and none is stored
in code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass, replace

# The package re-exports these without an __all__, which strict mypy does not accept.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    KafkaException,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from services.common import topics
from services.common.kafka import KafkaAccess, KafkaSettings

ADMIN_USER = "tonne-admin"
# The KRaft controller listener's static PLAIN user (SCRAM cannot authenticate it).
CONTROLLER_USER = "tonne-controller"
# The passwords are 256-bit random: iterations add nothing but the client's cost.
SCRAM_ITERATIONS = 4096
TIMEOUT_S = 30.0


def service_user(service: str) -> str:
    return f"tonne-{service}"


def national_registry_user(jurisdiction: str) -> str:
    return f"national-registry-{jurisdiction}"


def regulator_user(jurisdiction: str) -> str:
    return f"regulator-{jurisdiction}"


def principals() -> tuple[str, ...]:
    """Every SCRAM user provisioning creates (the admin exists from format time)."""
    return (
        *(service_user(name) for name in topics.SERVICES),
        *(national_registry_user(j) for j in topics.JURISDICTIONS),
        *(regulator_user(j) for j in topics.JURISDICTIONS),
    )


@dataclass(frozen=True)
class KafkaSecurity:
    """The admin's access to a SASL broker; every other principal's password derives from it."""

    admin: KafkaAccess

    @classmethod
    def for_admin(cls, bootstrap: str, password: SecretStr) -> KafkaSecurity:
        return cls(KafkaAccess(bootstrap, ADMIN_USER, password))

    @classmethod
    def from_env(cls, bootstrap: str) -> KafkaSecurity | None:
        """An external broker's super user from TONNE_KAFKA_*; None when it has no SASL."""
        access = KafkaSettings().access(bootstrap)
        return cls(access) if access.authenticated else None

    def password(self, username: str) -> SecretStr:
        key = self.admin.password.get_secret_value().encode()
        return SecretStr(hmac.new(key, f"tonne-kafka:{username}".encode(), hashlib.sha256).hexdigest())

    def access(self, username: str) -> KafkaAccess:
        """`username`'s access to the same broker."""
        return replace(self.admin, username=username, password=self.password(username))


def acl_table(prefix: str) -> list[AclBinding]:
    """Every ALLOW ACL of the topics and groups of `prefix` (topic prefix of a deployment)."""

    def allow(user: str, kind: ResourceType, name: str, operation: AclOperation, prefixed: bool = False) -> AclBinding:
        pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
        return AclBinding(kind, name, pattern, f"User:{user}", "*", operation, AclPermissionType.ALLOW)

    table: list[AclBinding] = []
    for service in topics.SERVICES:
        user = service_user(service)
        table += [allow(user, ResourceType.TOPIC, prefix + t, AclOperation.READ) for t in topics.consumed(service)]
        table += [allow(user, ResourceType.TOPIC, prefix + t, AclOperation.WRITE) for t in topics.produced(service)]
        table.append(allow(user, ResourceType.GROUP, f"{prefix}tonne-{service}", AclOperation.READ))
    for j in topics.JURISDICTIONS:
        national, regulator = national_registry_user(j), regulator_user(j)
        table += [
            allow(national, ResourceType.TOPIC, prefix + topics.registry_inbound(j), AclOperation.WRITE),
            allow(national, ResourceType.TOPIC, prefix + topics.registry_outbound(j), AclOperation.READ),
            allow(national, ResourceType.GROUP, prefix + national, AclOperation.READ, prefixed=True),
            allow(regulator, ResourceType.TOPIC, prefix + topics.audit(j), AclOperation.READ),
            allow(regulator, ResourceType.GROUP, prefix + regulator, AclOperation.READ, prefixed=True),
        ]
    return table


def _admin_client(security: KafkaSecurity) -> AdminClient:
    admin = security.admin
    return AdminClient(
        {
            "bootstrap.servers": admin.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": admin.mechanism,
            "sasl.username": admin.username,
            "sasl.password": admin.password.get_secret_value(),
        }
    )


def _provision(security: KafkaSecurity, prefix: str) -> None:
    client = _admin_client(security)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    users: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(user, info, security.password(user).get_secret_value().encode())
        for user in principals()
    ]
    for future in client.alter_user_scram_credentials(users, request_timeout=TIMEOUT_S).values():
        future.result(timeout=TIMEOUT_S)
    # Creating an ACL that exists already is a no-op: provisioning runs again safely.
    table = acl_table(prefix)
    for future in client.create_acls(table, request_timeout=TIMEOUT_S).values():
        future.result(timeout=TIMEOUT_S)
    _await_visible(client, set(table))


def _await_visible(client: AdminClient, table: set[AclBinding]) -> None:
    """Wait until the broker serves the new users and ACLs: the controller commits them
    first, the broker's copy of the metadata follows a moment later."""
    # A filter of None fields matches any value (the stubs type them as str).
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        described = client.describe_user_scram_credentials(list(principals()), request_timeout=TIMEOUT_S)
        assert isinstance(described, dict)
        try:
            for future in described.values():
                future.result(timeout=TIMEOUT_S)
            users_known = True
        except KafkaException:  # RESOURCE_NOT_FOUND for a user the broker has not seen yet
            users_known = False
        if users_known and table <= set(client.describe_acls(everything).result(timeout=TIMEOUT_S)):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the broker did not serve the new Kafka users and ACLs within {TIMEOUT_S}s")
        time.sleep(0.1)  # poll interval inside the deadline


async def provision(security: KafkaSecurity, prefix: str = "") -> None:
    """Create (or reset to their derived passwords) every principal and grant the ACL table."""
    # confluent-kafka's admin calls block: keep them off the event loop.
    await asyncio.to_thread(_provision, security, prefix)
