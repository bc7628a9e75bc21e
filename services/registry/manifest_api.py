"""Carbon-inclusion manifests through the registry's HTTP API (DOMAIN.md scenario 4, PHCER):
a registry operator uploads the records a block aggregates as CSV, anyone authenticated
reads the manifest's summary (its root is what the block carries), and a participant who
knows their record's id and their own id gets the record's inclusion proof, to check
against the root themselves. Which ids exist is never revealed: a wrong pair is answered
like an unknown one."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Security
from pydantic import BaseModel

from services.common.auth import Identity, forbidden
from services.common.errors import NotFound
from services.common.inputs import Identifier, Party, Text
from services.common.limits import upload_limit
from services.common.problems import refusals
from services.registry import manifests
from services.registry.api import operates
from services.registry.service import Registry

# The upload's body, for the OpenAPI document (the route reads the body itself), and its
# limit, which services/common/limits.py enforces before the route runs.
CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "CSV: header `record_id,participant_id,activity,factor_mg`, one record a line",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    },
    **upload_limit(manifests.MAX_BYTES),
}


class ManifestSummary(BaseModel):
    manifest_id: str
    jurisdiction: str
    methodology: str
    root: str  # hex: the RFC 6962 tree head the PHCER block carries
    size: int  # records
    total_mg: str  # decimal digits: a sum of int64 products exceeds int64 (and JSON's exact integers)
    tonnes: int  # total_mg rounded down: what the block may issue
    remainder_mg: int  # the fraction of a tonne not issued
    uploaded_by: str
    uploaded_at: datetime

    @classmethod
    def of(cls, summary: manifests.Summary) -> ManifestSummary:
        return cls(
            manifest_id=summary.manifest_id,
            jurisdiction=summary.jurisdiction,
            methodology=summary.methodology,
            root=summary.root.hex(),
            size=summary.size,
            total_mg=str(summary.total_mg),
            tonnes=summary.tonnes,
            remainder_mg=summary.remainder_mg,
            uploaded_by=summary.uploaded_by,
            uploaded_at=summary.uploaded_at,
        )


class InclusionProof(BaseModel):
    """Checks with domain/manifest.py's `verify(bytes.fromhex(encoded), index, size,
    [bytes.fromhex(h) for h in path], bytes.fromhex(root))`, or any RFC 6962 verifier."""

    manifest_id: str
    record_id: str
    participant_id: str
    activity: int
    factor_mg: int
    index: int  # the record's leaf index (records ordered by id)
    size: int  # leaves in the tree
    root: str  # hex
    path: list[str]  # hex sibling hashes, leaf level first
    encoded: str  # hex of the record's leaf encoding (hashed as SHA-256(0x00 || encoded))

    @classmethod
    def of(cls, proof: manifests.Inclusion) -> InclusionProof:
        record = proof.record
        return cls(
            manifest_id=proof.manifest_id,
            record_id=record.record_id,
            participant_id=record.participant_id,
            activity=record.activity,
            factor_mg=record.factor_mg,
            index=proof.index,
            size=proof.size,
            root=proof.root.hex(),
            path=[h.hex() for h in proof.path],
            encoded=record.encode().hex(),
        )


def router(registry: Registry) -> APIRouter:
    api = APIRouter(tags=["registry carbon-inclusion manifests"])
    uploader = Security(registry.auth.authenticate, scopes=["operator", "registry-operator"])
    anyone = Security(registry.auth.authenticate)
    # One upload parsed and built at a time: each holds its body and tree in memory.
    building = asyncio.Semaphore(1)

    @api.put(
        "/manifests/{manifest_id}",
        status_code=201,
        response_model=ManifestSummary,
        responses=refusals(
            _409="MANIFEST_EXISTS: the id names a manifest with another root, jurisdiction or methodology",
            _413="REQUEST_TOO_LARGE: over 200 MB; MANIFEST_TOO_LARGE: over 5,000,000 records",
            _422="REQUEST_INVALID or MANIFEST_INVALID (the reason names the first bad line)",
        ),
        openapi_extra=CSV_BODY,
    )
    async def upload(
        request: Request,
        manifest_id: Annotated[Identifier, Path()],
        jurisdiction: Annotated[Party, Query()],
        methodology: Annotated[Text, Query()],
        identity: Identity = uploader,
    ) -> ManifestSummary:
        """Stores the manifest of a carbon-inclusion block: the operator, or the registry
        operator of its jurisdiction. Uploading the same manifest again answers the stored
        one; the whole upload is refused, nothing stored, at its first bad line."""
        if not operates(identity, jurisdiction):
            raise forbidden(f"only the operator and {jurisdiction}'s registry operator upload its manifests")
        async with building:
            body = await request.body()
            # Seconds of CPU for a million records: off the event loop.
            manifest = await asyncio.to_thread(manifests.build, body)
            del body
            async with registry.pool.acquire() as conn:
                stored = await manifests.store(conn, manifest_id, jurisdiction, methodology, manifest, identity.subject)
        return ManifestSummary.of(stored)

    @api.get(
        "/manifests/{manifest_id}",
        response_model=ManifestSummary,
        responses=refusals(_404="MANIFEST_UNKNOWN", _422="REQUEST_INVALID"),
    )
    async def summary(manifest_id: Annotated[Identifier, Path()], _: Identity = anyone) -> ManifestSummary:
        """The manifest's root, size and tonnes."""
        async with registry.pool.acquire() as conn:
            found = await manifests.summary(conn, manifest_id)
        if found is None:
            raise NotFound("MANIFEST_UNKNOWN", f"no manifest {manifest_id!r}")
        return ManifestSummary.of(found)

    @api.get(
        "/manifests/{manifest_id}/proof",
        response_model=InclusionProof,
        responses=refusals(
            _404="MANIFEST_RECORD_UNKNOWN: no record of this id and participant in the manifest",
            _422="REQUEST_INVALID",
        ),
    )
    async def proof(
        manifest_id: Annotated[Identifier, Path()],
        record_id: Annotated[Identifier, Query()],
        participant_id: Annotated[Identifier, Query()],
        _: Identity = anyone,
    ) -> InclusionProof:
        """The record's inclusion proof: its leaf, index and audit path to the root."""
        async with registry.pool.acquire() as conn:
            return InclusionProof.of(await manifests.inclusion(conn, manifest_id, record_id, participant_id))

    return api
