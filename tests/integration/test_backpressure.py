"""Intake pushes back (429, Retry-After) while the engine's group lags past the bound."""

from __future__ import annotations

from collections.abc import Awaitable

from services.common import topics
from services.common.db import connect_pool, migrate
from services.common.errors import DomainError, TooBusy
from services.common.kafka import KafkaAccess
from services.common.runtime import Kernel
from services.common.settings import Settings
from services.common.topics import ensure_topics
from services.matching.service import build
from tests.support import eventually, publish_raw
from tonne.v1 import matching_pb2 as pb


async def refused(placing: Awaitable[object]) -> TooBusy | None:
    """The refusal, or None while the lag is not yet measured (the order then goes on to
    the mandate check, which no broker here passes)."""
    try:
        await placing
    except TooBusy as busy:
        return busy
    except DomainError as other:
        assert other.code == "BROKER_NOT_MANDATED"
    return None


async def test_intake_refuses_while_the_engine_is_behind(
    kafka_access: KafkaAccess, topic_prefix: str, fresh_database_url: str
) -> None:
    kafka_bootstrap = kafka_access.bootstrap
    prefix = topic_prefix + "pressure."
    await ensure_topics(kafka_access, prefix)
    for n in range(3):  # three orders the engine has not taken yet
        await publish_raw(kafka_bootstrap, prefix + topics.MATCHING_ORDERS, b"JCM-TH-2024-NDC", f"{n}".encode())
    await migrate(fresh_database_url, "matching")
    pool = await connect_pool(fresh_database_url, "matching")
    settings = Settings(
        service="matching",
        kafka_bootstrap=kafka_bootstrap,
        database_url=fresh_database_url,
        TONNE_TOPIC_PREFIX=prefix,
        TONNE_INTAKE_MAX_BACKLOG=2,
    )
    matching = build(Kernel(settings, pool))
    order = pb.SubmitOrder(
        instrument_id="JCM-TH-2024-NDC", account_id="TH-GOV", side=pb.SELL, price=1500, quantity=10,
        client_order_id="c-1",
    )  # fmt: skip
    try:
        busy = await eventually(lambda: refused(matching.place("broker-a", order)), "intake to push back")
        assert (busy.code, busy.http_status, busy.retry_after) == ("ENGINE_BACKLOG", 429, 1)
        assert await pool.fetchval("SELECT count(*) FROM intake_orders") == 0  # refused before anything is written
    finally:
        await matching.backlog.stop()
        await pool.close()
