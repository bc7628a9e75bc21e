"""Carbon-inclusion manifests in PostgreSQL (migrations/0011): the adapter around the pure
tree of domain/manifest.py. A manifest is written once, in one transaction (records and
tree levels by COPY: a million rows in seconds), and read a record and ~log2(n) hashes at a
time, so a participant's proof never loads the tree. Not event-sourced: a manifest is
evidence the registry keeps beside the block whose root it carries, not registry state."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.common.errors import DomainError, NotFound
from services.registry.domain.manifest import MG_PER_TONNE, Manifest, Record, Stored

HEADER = ["record_id", "participant_id", "activity", "factor_mg"]
MAX_RECORDS = 5_000_000
MAX_BYTES = 200 * 1024 * 1024
PAGE = 4096  # hashes per stored page of a level
HASH = 32
INT64_MAX = 2**63 - 1
_SUMMARY = "manifest_id, jurisdiction, methodology, root, size, total_mg, tonnes, uploaded_by, uploaded_at"


@dataclass(frozen=True, slots=True)
class Summary:
    manifest_id: str
    jurisdiction: str
    methodology: str
    root: bytes
    size: int
    total_mg: int
    tonnes: int
    uploaded_by: str
    uploaded_at: datetime

    @property
    def remainder_mg(self) -> int:
        """The fraction of a tonne not issued."""
        return self.total_mg - self.tonnes * MG_PER_TONNE


@dataclass(frozen=True, slots=True)
class Inclusion:
    """What a participant needs to check `verify(record.encode(), index, size, path, root)`."""

    manifest_id: str
    record: Record
    index: int
    size: int
    root: bytes
    path: list[bytes]


def _invalid(line: int, reason: str) -> DomainError:
    return DomainError("MANIFEST_INVALID", f"line {line}: {reason}", [f"line {line}"], 422)


def parse(lines: Iterable[str], limit: int = MAX_RECORDS) -> list[Record]:
    """The records of an upload: CSV, header `record_id,participant_id,activity,factor_mg`,
    blank lines ignored. Amounts are plain decimal digits (no sign, space or `_`), so one
    record has one spelling. The first bad line refuses the whole upload, naming it."""
    rows = csv.reader(lines, strict=True)
    try:
        if next(rows, None) != HEADER:
            raise _invalid(1, f"the header is not {','.join(HEADER)}")
        records: list[Record] = []
        append = records.append
        for row in rows:
            if not row:
                continue
            if len(row) != 4:
                raise _invalid(rows.line_num, f"a record has {len(HEADER)} fields, not {len(row)}")
            record_id, participant_id, activity, factor = row
            if (
                not (activity.isascii() and activity.isdigit() and factor.isascii() and factor.isdigit())
                or max(len(activity), len(factor)) > 19
            ):
                raise _invalid(rows.line_num, "activity and factor_mg are positive int64 integers")
            try:
                append(Record(record_id, participant_id, int(activity), int(factor)))
            except DomainError as error:
                raise _invalid(rows.line_num, error.reason) from None
            if len(records) > limit:
                raise DomainError("MANIFEST_TOO_LARGE", f"a manifest holds at most {limit} records", [], 413)
    except csv.Error as error:
        raise _invalid(rows.line_num, f"not CSV: {error}") from None
    return records


def build(body: bytes, limit: int = MAX_RECORDS) -> Manifest:
    """An upload's manifest, parsed and its tree built: CPU-bound seconds for a million
    records, hence a function to run off the event loop."""
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")  # spreadsheets write a BOM
    except UnicodeDecodeError as error:
        raise DomainError("MANIFEST_INVALID", "the upload is not UTF-8 text", [f"byte {error.start}"], 422) from None
    return Manifest(parse(text.split("\n"), limit))


def _summary(row: asyncpg.Record) -> Summary:
    return Summary(**{**dict(row), "root": bytes(row["root"]), "total_mg": int(row["total_mg"])})


async def summary(conn: asyncpg.Connection, manifest_id: str) -> Summary | None:
    row = await conn.fetchrow(f"SELECT {_SUMMARY} FROM manifests WHERE manifest_id = $1", manifest_id)
    return _summary(row) if row is not None else None


async def stored(conn: asyncpg.Connection, manifest_id: str) -> Stored | None:
    """The manifest as an issuance naming it sees it: its summary and who issued it."""
    row = await conn.fetchrow(
        "SELECT m.manifest_id, m.jurisdiction, m.methodology, m.root, m.tonnes, "
        "coalesce(i.issuance_id, '') AS issued_by FROM manifests m "
        "LEFT JOIN manifest_issuances i USING (manifest_id) WHERE m.manifest_id = $1",
        manifest_id,
    )
    return Stored(**{**dict(row), "root": bytes(row["root"])}) if row is not None else None


def _pages(manifest_id: str, levels: list[list[bytes]]) -> Iterator[tuple[str, int, int, bytes]]:
    for level, hashes in enumerate(levels):
        for page, start in enumerate(range(0, len(hashes), PAGE)):
            yield manifest_id, level, page, b"".join(hashes[start : start + PAGE])


async def store(
    conn: asyncpg.Connection,
    manifest_id: str,
    jurisdiction: str,
    methodology: str,
    manifest: Manifest,
    uploaded_by: str,
) -> Summary:
    """Write the manifest under `manifest_id`, once. The same manifest again (same root,
    jurisdiction and methodology) is the stored one's summary; anything else under the id
    is MANIFEST_EXISTS. Concurrent uploads of one id serialise on its row."""
    if manifest.tonnes > INT64_MAX:
        raise DomainError("MANIFEST_INVALID", "the manifest totals more tonnes than a block holds (int64)", [], 422)
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO manifests (manifest_id, jurisdiction, methodology, root, size, total_mg, tonnes, uploaded_by) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (manifest_id) DO NOTHING RETURNING {_SUMMARY}",
            manifest_id,
            jurisdiction,
            methodology,
            manifest.root,
            manifest.size,
            manifest.total_mg,
            manifest.tonnes,
            uploaded_by,
        )
        if row is None:
            existing = await summary(conn, manifest_id)
            assert existing is not None  # manifests are never deleted
            if (existing.root, existing.jurisdiction, existing.methodology) != (
                manifest.root,
                jurisdiction,
                methodology,
            ):
                raise DomainError(
                    "MANIFEST_EXISTS",
                    f"manifest {manifest_id!r} is stored already with another root, jurisdiction or methodology",
                    [manifest_id],
                    409,
                )
            return existing
        await conn.copy_records_to_table(
            "manifest_records",
            columns=["manifest_id", "record_id", "position", "participant_id", "activity", "factor_mg"],
            records=(
                (manifest_id, r.record_id, i, r.participant_id, r.activity, r.factor_mg)
                for i, r in enumerate(manifest.records)
            ),
        )
        await conn.copy_records_to_table(
            "manifest_levels",
            columns=["manifest_id", "level", "page", "hashes"],
            records=_pages(manifest_id, manifest.levels),
        )
    return _summary(row)


def siblings(index: int, size: int) -> list[tuple[int, int]]:
    """(level, position) of each hash on leaf `index`'s audit path in a tree of `size`
    leaves: domain/manifest.py's `proof` without the levels (a level is ceil(width / 2)
    wide above one `width` wide; a carried last node has no sibling)."""
    found: list[tuple[int, int]] = []
    level, width = 0, size
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            found.append((level, sibling))
        index, width, level = index // 2, (width + 1) // 2, level + 1
    return found


# One round trip for the path: each hash's page by primary key, 32 bytes of it.
_PATH = (
    "SELECT substring(l.hashes FROM w.start FOR 32) FROM unnest($2::int[], $3::int[], $4::int[]) "
    "WITH ORDINALITY AS w(level, page, start, n) "
    "JOIN manifest_levels l ON l.manifest_id = $1 AND l.level = w.level AND l.page = w.page ORDER BY w.n"
)


async def inclusion(conn: asyncpg.Connection, manifest_id: str, record_id: str, participant_id: str) -> Inclusion:
    """The record's inclusion proof, if `record_id` names a record of `participant_id` in
    the manifest; otherwise MANIFEST_RECORD_UNKNOWN, alike for an unknown manifest, record
    or participant (knowing both ids is the participant's capability)."""
    row = await conn.fetchrow(
        "SELECT r.position, r.activity, r.factor_mg, m.size, m.root FROM manifest_records r "
        "JOIN manifests m ON m.manifest_id = r.manifest_id "
        "WHERE r.manifest_id = $1 AND r.record_id = $2 AND r.participant_id = $3",
        manifest_id,
        record_id,
        participant_id,
    )
    if row is None:
        raise NotFound("MANIFEST_RECORD_UNKNOWN", "no such record of this participant in the manifest")
    index, size = row["position"], row["size"]
    wanted = siblings(index, size)
    path = await conn.fetch(
        _PATH,
        manifest_id,
        [level for level, _ in wanted],
        [position // PAGE for _, position in wanted],
        [position % PAGE * HASH + 1 for _, position in wanted],
    )
    if len(path) != len(wanted):
        raise RuntimeError(f"manifest {manifest_id!r} lacks tree pages")
    return Inclusion(
        manifest_id=manifest_id,
        record=Record(record_id, participant_id, row["activity"], row["factor_mg"]),
        index=index,
        size=size,
        root=bytes(row["root"]),
        path=[bytes(r[0]) for r in path],
    )
