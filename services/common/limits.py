"""Request body limit: an oversize body is refused with 413 before anything reads it. A
route that takes uploads declares its own limit in its OpenAPI operation
(`openapi_extra=upload_limit(n)`), so the limit is documented where it applies."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import TooBusy

MAX_BODY_BYTES = 64 * 1024
LIMIT_KEY = "x-max-body-bytes"


def upload_limit(max_bytes: int) -> dict[str, int]:
    """The OpenAPI extension a route declares its body limit with."""
    return {LIMIT_KEY: max_bytes}


@dataclass(frozen=True)
class _Declared:
    path: re.Pattern[str]
    methods: frozenset[str]
    max_bytes: int


def _declared(routes: list[BaseRoute]) -> list[_Declared]:
    """The routes that declare a limit, included routers' too (FastAPI keeps those nested)."""
    found = []
    for context in iter_route_contexts(routes):
        route = context.original_route
        limit = (getattr(route, "openapi_extra", None) or {}).get(LIMIT_KEY)
        if limit is not None and context.path:
            methods = frozenset(getattr(route, "methods", None) or ())
            found.append(_Declared(compile_path(context.path)[0], methods, int(limit)))
    return found


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._declared: list[_Declared] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            limit = self._limit(scope)  # only an oversize request looks its route up
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, limit)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused, limit
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit == self.max_bytes:
                limit = self._limit(scope)
            if seen > limit:
                # The framework turns errors while reading into its own 400: answer first.
                if not started and not refused:
                    refused = True
                    await self._refuse(send, limit)
                raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; drop what the app answers after it
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counted, tracked)

    def _limit(self, scope: Scope) -> int:
        """The limit the request's route declares, else the default. Read once, at the
        first oversize request: the routes are all in place by then."""
        if self._declared is None:
            app = scope.get("app")
            self._declared = _declared(app.routes) if app is not None else []
        for declared in self._declared:
            if scope["method"] in declared.methods and declared.path.fullmatch(scope["path"]):
                return declared.max_bytes
        return self.max_bytes

    async def _refuse(self, send: Send, limit: int) -> None:
        reason = f"request bodies are limited to {limit} bytes"
        body = json.dumps({"code": "REQUEST_TOO_LARGE", "reason": reason, "evidence": []}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """A token bucket per caller: `rate` requests a second, bursts up to `burst`.
    Integer arithmetic: time in nanoseconds, tokens in billionths (one token = TOKEN).
    Buckets of callers not seen for a while are forgotten (bounded memory)."""

    TOKEN = 1_000_000_000

    def __init__(
        self, rate: int, burst: int, clock_ns: Callable[[], int] = time.monotonic_ns, callers: int = 100_000
    ) -> None:
        self._rate = rate
        self._burst = burst * self.TOKEN
        self._clock_ns = clock_ns
        self._callers = callers
        self._buckets: OrderedDict[str, tuple[int, int]] = OrderedDict()  # caller -> (tokens, at ns)

    def take(self, caller: str) -> None:
        """Spend one token of `caller`'s bucket, or refuse with 429 and when to retry."""
        now = self._clock_ns()
        tokens, at = self._buckets.pop(caller, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)  # ns x requests/s = billionths
        if tokens < self.TOKEN:
            self._buckets[caller] = (tokens, now)
            wait_ns = -(-(self.TOKEN - tokens) // self._rate)
            wait = -(-wait_ns // 1_000_000_000)
            raise TooBusy("RATE_LIMITED", f"more than {self._rate} requests a second from {caller}", wait)
        self._buckets[caller] = (tokens - self.TOKEN, now)
        while len(self._buckets) > self._callers:
            self._buckets.popitem(last=False)
