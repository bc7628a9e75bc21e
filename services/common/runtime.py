"""One process per service: its FastAPI app, its consumer and its outbox relay.

A service supplies a `Service` (handlers per topic, state recovery, HTTP routes);
this module wires the shared parts around it and serves /healthz, /readyz, /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common import logs
from services.common.consumer import Consumer, Handler
from services.common.db import connect_pool, migrate
from services.common.errors import DomainError
from services.common.kafka import idempotent_producer
from services.common.outbox import OutboxRelay
from services.common.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kernel:
    settings: Settings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer


class Service(Protocol):
    @property
    def handlers(self) -> Mapping[str, Handler]:
        """Unprefixed topic -> the handler of its records."""

    async def recover(self) -> None:
        """Rebuild in-memory state from the service's own events."""


S = TypeVar("S", bound=Service)


@dataclass(frozen=True)
class _Running:
    """What /readyz checks, present once start-up has finished."""

    pool: asyncpg.Pool
    consumer: Consumer
    relay_task: asyncio.Task[None]


def create_app(
    settings: Settings, build: Callable[[Kernel], S], router: Callable[[S], APIRouter], title: str
) -> FastAPI:
    running: list[_Running] = []  # empty until started, and again while stopping

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url, settings.service)
        pool = await connect_pool(settings.database_url, settings.service)
        producer = idempotent_producer(settings.kafka_bootstrap, f"tonne-{settings.service}")
        await producer.start()
        kernel = Kernel(settings, pool, producer)
        service = build(kernel)
        await service.recover()
        app.include_router(router(service))
        relay = OutboxRelay(pool, producer, settings.topic_prefix)
        relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
        consumer = Consumer(
            name=settings.service,
            bootstrap=settings.kafka_bootstrap,
            topic_prefix=settings.topic_prefix,
            pool=pool,
            producer=producer,
            handlers=service.handlers,
            recover=service.recover,
        )
        await consumer.start()
        running.append(_Running(pool, consumer, relay_task))
        log.info("%s ready", settings.service)
        try:
            yield
        finally:
            running.clear()
            await consumer.stop()
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task
            await producer.stop()
            await pool.close()

    app = FastAPI(title=title, lifespan=lifespan)

    @app.middleware("http")
    async def correlate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        value = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        token = logs.correlation_id.set(value)
        try:
            response = await call_next(request)
        finally:
            logs.correlation_id.reset(token)
        response.headers["x-correlation-id"] = value
        return response

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content=exc.body())

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        checks = {"started": bool(running)}
        if running:
            parts = running[0]
            try:
                checks["database"] = await parts.pool.fetchval("SELECT true")
            except Exception:
                checks["database"] = False
            checks["partitions_assigned"] = parts.consumer.assigned
            checks["outbox_relay"] = not parts.relay_task.done()
        ok = all(checks.values()) and len(checks) > 1
        return JSONResponse(status_code=200 if ok else 503, content=checks)

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(
    service: str, default_port: int, build: Callable[[Kernel], S], router: Callable[[S], APIRouter], title: str
) -> None:
    settings = Settings.from_env(service, default_port)
    logs.configure(service)
    app = create_app(settings, build, router, title)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None)
