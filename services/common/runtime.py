"""One process per service: its FastAPI app, its consumer and its outbox relay.

A service supplies a `Service` (handlers per topic, its state, HTTP routes); this
module wires the shared parts around it and serves /healthz, /readyz, /metrics and
/state-hash. Start-up loads nothing: aggregates load on first use (snapshot + tail).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol, TypeVar

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from services.common import logs, outbox, topics, tracking
from services.common.auth import Auth, Identity
from services.common.consumer import Consumer, Handler
from services.common.db import connect_pool, migrate, service_role
from services.common.errors import DomainError
from services.common.kafka import idempotent_producer
from services.common.limits import BodyLimit
from services.common.outbox import OutboxRelay
from services.common.problems import refusals
from services.common.settings import Settings
from services.common.statehash import ServiceState
from services.common.unit_of_work import UnitOfWorkFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kernel:
    """What a service is built from."""

    settings: Settings
    pool: asyncpg.Pool
    # Routes declare `Security(kernel.auth.authenticate, scopes=[role, ...])`.
    auth: Auth = field(default_factory=Auth.from_env)
    # Awaited when the process stops: what the service opened (e.g. Kafka clients).
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class Service(Protocol):
    @property
    def handlers(self) -> Mapping[str, Handler]:
        """Unprefixed topic -> the handler of its records."""

    @property
    def state(self) -> ServiceState:
        """Its aggregates, projector and projection tables."""

    @property
    def unit_of_work(self) -> UnitOfWorkFactory:
        """Opens a unit of work that projects with this service's projector."""


S = TypeVar("S", bound=Service)


@dataclass(frozen=True)
class _Running:
    """What /readyz checks, present once start-up has finished."""

    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    consumer: Consumer
    relay_task: asyncio.Task[None]
    retention_task: asyncio.Task[None]

    async def checks(self) -> dict[str, bool]:
        """Each part answers within READY_TIMEOUT or counts as down."""
        return {
            "database": await _answers(self.pool.fetchval("SELECT true", timeout=READY_TIMEOUT)),
            "kafka": await _answers(self.producer.client.fetch_all_metadata()),
            "partitions_assigned": self.consumer.assigned,
            "consumer": self.consumer.running,
            "outbox_relay": not self.relay_task.done(),
        }


READY_TIMEOUT = 2.0


async def _answers(call: Awaitable[object]) -> bool:
    try:
        return bool(await asyncio.wait_for(call, READY_TIMEOUT))
    except Exception:
        return False


def create_app(
    settings: Settings, build: Callable[[Kernel], S], router: Callable[[S], APIRouter], title: str
) -> FastAPI:
    running: list[_Running] = []  # empty until started, and again while stopping
    auth = Auth.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url, settings.service)
        role = await service_role(settings.database_url, settings.service)
        pool = await connect_pool(settings.database_url, settings.service, role=role)
        producer = idempotent_producer(settings.kafka, f"tonne-{settings.service}")
        await producer.start()
        kernel = Kernel(settings, pool, auth)
        service = build(kernel)
        topics.check_consumes(settings.service, service.handlers)
        app.include_router(router(service))
        app.include_router(state_router(service, pool, auth))
        relay = OutboxRelay(pool, producer, settings.topic_prefix, settings.service)
        relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
        retention_task = asyncio.create_task(retain(pool, timedelta(hours=settings.retention_hours)), name="retention")
        consumer = Consumer(
            name=settings.service,
            kafka=settings.kafka,
            topic_prefix=settings.topic_prefix,
            pool=pool,
            producer=producer,
            handlers=service.handlers,
            unit_of_work=service.unit_of_work,
            on_revoked=service.state.forget,
        )
        await consumer.start()
        running.append(_Running(pool, producer, consumer, relay_task, retention_task))
        log.info("%s ready", settings.service)
        try:
            yield
        finally:
            running.clear()
            await consumer.stop()
            for stop in kernel.on_stop:
                await stop()
            for task in (relay_task, retention_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await producer.stop()
            await pool.close()

    app = FastAPI(title=title, lifespan=lifespan)
    app.add_middleware(BodyLimit)

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
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse(status_code=exc.http_status, content=exc.body(), headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The framework's own refusals, in the Problem shape with a stable code."""
        if exc.status_code == 400:  # a body that is not JSON text
            error = DomainError("REQUEST_INVALID", "the body is not valid JSON", [str(exc.detail)[:200]])
            return JSONResponse(status_code=422, content=error.body())
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # One path may be served by several routes: allow what all of them serve.
            headers["Allow"] = ", ".join(sorted(allowed_methods(app, request.scope)))
        body = DomainError(f"HTTP_{exc.status_code}", str(exc.detail)).body()
        return JSONResponse(status_code=exc.status_code, content=body, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        evidence = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()][:20]
        error = DomainError("REQUEST_INVALID", "the request does not match the API's schema", evidence)
        return JSONResponse(status_code=422, content=error.body())

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        checks = {"started": bool(running)}
        if running:
            checks |= await running[0].checks()
        ok = all(checks.values()) and len(checks) > 1
        return JSONResponse(status_code=200 if ok else 503, content=checks)

    @app.get(
        "/metrics",
        tags=["operations"],
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **refusals()},
    )
    async def metrics(_: Identity = Security(auth.authenticate, scopes=["operator"])) -> Response:
        """Prometheus metrics (scraped with an operator token)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def allowed_methods(app: FastAPI, scope: Scope) -> set[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return methods


def state_router(service: Service, pool: asyncpg.Pool, auth: Auth) -> APIRouter:
    api = APIRouter(tags=["operations"])

    @api.get("/state-hash", responses=refusals())
    async def state_hash(_: Identity = Security(auth.authenticate, scopes=["operator"])) -> dict[str, str]:
        """SHA-256 of the service's aggregates and projections (docs/decisions/0006);
        `python -m services.<name> replay` prints the same from the event table."""
        async with pool.acquire() as conn:
            return (await service.state.hash(conn)).as_dict()

    return api


async def retain(pool: asyncpg.Pool, older_than: timedelta, every_seconds: float = 600.0) -> None:
    """Delete published outbox rows and consumed ids past their retention, in batches."""
    while True:
        try:
            async with pool.acquire() as conn:
                while await outbox.prune(conn, older_than) + await tracking.prune(conn, older_than):
                    pass
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("retention pass failed; the next one retries", exc_info=True)
        await asyncio.sleep(every_seconds)


def serve(
    service: str, default_port: int, build: Callable[[Kernel], S], router: Callable[[S], APIRouter], title: str
) -> None:
    settings = Settings.from_env(service, default_port)
    logs.configure(service)
    app = create_app(settings, build, router, title)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None)
