"""Domain errors: a stable code, a reason, the evidence; raising one changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DomainError(Exception):
    code: str
    reason: str
    evidence: list[str] = field(default_factory=list)
    http_status: int = 422
    retry_after: int = 0  # seconds, for 429/503: sent as the Retry-After header

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

    def body(self) -> dict[str, object]:
        return {"code": self.code, "reason": self.reason, "evidence": self.evidence}


class NotFound(DomainError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code, reason, [], 404)


class TooBusy(DomainError):
    """Refused for now, not for good: try again after `retry_after` seconds."""

    def __init__(self, code: str, reason: str, retry_after: int = 1) -> None:
        super().__init__(code, reason, [], 429, retry_after)
