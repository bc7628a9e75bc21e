"""The body of every refusal, and how routes document the refusals they may answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.common.auth import AUTH_RESPONSES


class Problem(BaseModel):
    """A stable code, a reason, the evidence."""

    code: str
    reason: str
    evidence: list[str]


def refusals(**codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: 401/403/429 of the security scheme plus `_<status>="description"`
    pairs (`_404="ORDER_UNKNOWN"`), each with the Problem body."""
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": Problem} | response for status, response in AUTH_RESPONSES.items()
    }
    for status, description in codes.items():
        documented[int(status.lstrip("_"))] = {"model": Problem, "description": description}
    return documented
