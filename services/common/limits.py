"""Request body limit: an oversize body is refused with 413 before anything reads it."""

from __future__ import annotations

import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import TooBusy

MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                # The framework turns errors while reading into its own 400: answer first.
                if not started and not refused:
                    refused = True
                    await self._refuse(send)
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

    async def _refuse(self, send: Send) -> None:
        reason = f"request bodies are limited to {self.max_bytes} bytes"
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
