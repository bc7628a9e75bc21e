"""Field types for API bodies and queries: sizes, ranges and character sets the
contracts and the database can hold, so bad input is a 422, never a 500."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

INT64_MAX = 2**63 - 1
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
_PARTY = re.compile(r"[A-Z]{2}")


def _printable(value: str) -> str:
    # Control characters (NUL included) and lone surrogates cannot be stored or audited.
    if any(not ch.isprintable() or "\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError("text must be printable (no control characters or lone surrogates)")
    return value


# Ids of accounts, orders, projects, authorizations, namespaces...
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]
# ISO 3166-1 alpha-2 party or jurisdiction.
Party = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
# ISO 4217 alphabetic code.
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
# Free text such as a holder's name or a reason.
Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
# Quantities and prices: positive and within int64 (the database's bigint).
Positive64 = Annotated[int, Field(gt=0, le=INT64_MAX)]
# Paging.
Limit = Annotated[int, Field(ge=1, le=1000)]


def is_identifier(value: str) -> bool:
    """What `Identifier` admits: for ids that arrive on a topic rather than through the API."""
    return _IDENTIFIER.fullmatch(value) is not None


def is_party(value: str) -> bool:
    """What `Party` admits."""
    return _PARTY.fullmatch(value) is not None
