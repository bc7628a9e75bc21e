"""The request body limit refuses oversize bodies with a stable code, declared or streamed."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient

from services.common.errors import TooBusy
from services.common.limits import BodyLimit, RateLimiter, upload_limit


def app() -> TestClient:
    api = FastAPI()
    api.add_middleware(BodyLimit, max_bytes=100)

    @api.post("/echo")
    async def echo(body: dict[str, str]) -> dict[str, int]:
        return {"fields": len(body)}

    uploads = APIRouter()  # included, as the services include their routers

    @uploads.put("/uploads/{name}", openapi_extra=upload_limit(300))
    async def upload(name: str, request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    api.include_router(uploads)
    return TestClient(api)


def test_a_body_within_the_limit_passes() -> None:
    response = app().post("/echo", json={"a": "b"})
    assert (response.status_code, response.json()) == (200, {"fields": 1})


def test_a_declared_oversize_body_is_refused_before_it_is_read() -> None:
    response = app().post("/echo", json={"a": "x" * 200})
    assert response.status_code == 413 and response.json()["code"] == "REQUEST_TOO_LARGE"


def test_a_streamed_oversize_body_without_length_is_refused() -> None:
    chunks = (b'{"a": "' + b"x" * 60, b"x" * 60 + b'"}')
    response = app().post("/echo", content=iter(chunks), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["code"] == "REQUEST_TOO_LARGE"


def test_an_upload_route_declares_its_own_limit() -> None:
    client = app()
    assert client.put("/uploads/a", content=b"x" * 300).json() == {"bytes": 300}
    streamed = client.put("/uploads/a", content=iter((b"x" * 200, b"x" * 100)))
    assert streamed.json() == {"bytes": 300}
    over = client.put("/uploads/a", content=b"x" * 301)
    assert (over.status_code, over.json()["reason"]) == (413, "request bodies are limited to 300 bytes")
    assert client.put("/uploads/a", content=iter((b"x" * 200, b"x" * 101))).status_code == 413
    # Only that route, and only its method.
    assert client.post("/uploads/a", content=b"x" * 200).status_code == 413
    assert client.post("/echo", json={"a": "x" * 150}).status_code == 413


def test_a_caller_past_its_rate_is_told_when_to_come_back() -> None:
    now = [0]  # nanoseconds
    limiter = RateLimiter(rate=2, burst=3, clock_ns=lambda: now[0])
    for _ in range(3):
        limiter.take("broker-a")  # the burst
    with pytest.raises(TooBusy) as refused:
        limiter.take("broker-a")
    assert (refused.value.code, refused.value.http_status, refused.value.retry_after) == ("RATE_LIMITED", 429, 1)
    limiter.take("broker-b")  # buckets are per caller
    now[0] = 500_000_000  # half a second: one token back at 2 a second
    limiter.take("broker-a")
    with pytest.raises(TooBusy):
        limiter.take("broker-a")
