"""The same tonnes are issued once, across programmes (DOMAIN.md §4): an issuance may
carry its project's fingerprint (host party, location, capacity, operator) and its
monitoring period; two issuances whose fingerprints match and whose periods share a day
are the same reductions issued twice, e.g. as a VCU and then as a CCER.

Programmes name projects their own way, so the fingerprint is compared by a digest of its
normalised fields, never by project id. Pure."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import date
from typing import NamedTuple

from services.common.errors import DomainError
from tonne.v1 import registry_pb2 as pb

_FIELD_MAX = 200


class Period(NamedTuple):
    start: date
    end: date

    def overlaps(self, other: Period) -> bool:
        return self.start <= other.end and other.start <= self.end


class Prior(NamedTuple):
    """An issuance already recorded under the same fingerprint."""

    issuance_id: str
    standard: pb.Standard.ValueType
    period: Period

    def label(self) -> str:
        return f"{self.issuance_id} ({pb.Standard.Name(self.standard)}, {self.period.start}..{self.period.end})"


def period_of(message: pb.MonitoringPeriod) -> Period:
    try:
        start, end = date.fromisoformat(message.start), date.fromisoformat(message.end)
    except ValueError:
        raise DomainError("FINGERPRINT_INVALID", "the monitoring period is two ISO 8601 dates") from None
    if start > end:
        raise DomainError("FINGERPRINT_INVALID", "the monitoring period ends before it starts")
    return Period(start, end)


def key(fingerprint: pb.ProjectFingerprint) -> bytes:
    """The digest two descriptions of one project share: fields NFKC-normalised, case and
    runs of spaces and punctuation folded, length-prefixed (so no two field lists collide)."""
    fields = [fingerprint.host_party, fingerprint.location, str(fingerprint.capacity_kw), fingerprint.operator]
    if (
        not re.fullmatch(r"[A-Z]{2}", fingerprint.host_party)
        or not all(0 < len(f) <= _FIELD_MAX for f in fields)
        or not fingerprint.capacity_kw
    ):
        raise DomainError("FINGERPRINT_INVALID", "a fingerprint names host party, location, capacity (kW) and operator")
    digest = hashlib.sha256()
    for field in fields:
        folded = " ".join(re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", field).casefold()).split())
        encoded = folded.encode()
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
    return digest.digest()


def issued_once(period: Period, prior: list[Prior]) -> None:
    """Refuse an issuance whose project already had reductions of a shared day issued."""
    clashing = [p for p in prior if p.period.overlaps(period)]
    if clashing:
        raise DomainError(
            "DOUBLE_ISSUANCE_PROJECT_PERIOD",
            "reductions of this project and monitoring period were issued already",
            [p.label() for p in clashing[:20]],
        )
