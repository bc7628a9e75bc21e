"""Compliance: screens transfers and keeps each jurisdiction's audit chain.

State (docs/decisions/0005, 0006) has no aggregates: what compliance observes of the
registries is recorded as one-event streams `fact-<source event id>`, each decision as
the stream `decision-<request id>`, and the projector folds both into the tables below.
A screening loads only the rows its request names into the pure `Facts` and calls the
pure `screen`. The audit chain is a log beside them (services/compliance/chain.py).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal

import asyncpg
from google.protobuf.message import Message
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common import eventstore, outbox, topics
from services.common.auth import Identity
from services.common.consumer import Handler
from services.common.envelope import Context, payload_of
from services.common.inputs import is_identifier, is_party
from services.common.repository import Repository
from services.common.runtime import Kernel
from services.common.statehash import Projection, ServiceState
from services.common.unit_of_work import UnitOfWork, UnitOfWorkFactory
from services.compliance import chain
from services.compliance.chain import AuditFeed, AuditLog
from services.compliance.domain.authorizations import PREFIX, AuthorizationUsage, by_authorization
from services.compliance.domain.facts import Facts, needed, spent
from services.compliance.domain.jurisdictions import account_ids, concerned
from services.compliance.domain.screening import (
    Policies,
    Policy,
    claims,
    proposal_refusal,
    refusal,
    screen,
    screen_proposal,
)
from services.compliance.domain.signing import DEVELOPMENT_SEED, Signer
from services.compliance.domain.surveillance import Watch
from services.compliance.domain.validation import (
    check_fact,
    check_proposal_keys,
    check_request_keys,
    proposal_problems,
    request_problems,
)
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import matching_pb2 as mpb
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb
from tonne.v1.envelope_pb2 import Envelope

log = logging.getLogger(__name__)

# Every event stream of the venue is audited.
AUDITED = (
    topics.REGISTRY_EVENTS,
    topics.MATCHING_EVENTS,
    topics.SETTLEMENT_EVENTS,
    topics.COMPLIANCE_REQUESTS,
    topics.COMPLIANCE_DECISIONS,
)

PROJECTIONS = (
    Projection("accounts", ("account_id", "jurisdiction", "frozen", "closed"), ("account_id",)),
    Projection(
        "authorizations", ("authorization_id", "host_party", "quantity", "loa", "revoked"), ("authorization_id",)
    ),
    Projection("reservations", ("reservation_id", "account_id", "quantity", "blocks"), ("reservation_id",)),
    # numeric has no canonical form in the hash: its text has.
    Projection("authorization_usage", ("authorization_id", "used::text", "claimed::text"), ("authorization_id",)),
    Projection(
        "authorization_claims", ("request_id", "authorization_id", "quantity"), ("request_id", "authorization_id")
    ),
    Projection(
        "decisions",
        ("request_id", "trade_id", "verdict", "decision", "from_account_id", "to_account_id"),
        ("request_id",),
    ),
    Projection("deferred_screens", ("request_id", "reservation_id", "request", "deferred_at"), ("request_id",)),
    Projection(
        "used_serials", ("namespace", "serial_start", "serial_end", "proposal_id"), ("namespace", "serial_start")
    ),
    Projection(
        "issued_serials", ("namespace", "serial_start", "serial_end", "proposal_id"), ("namespace", "serial_start")
    ),
    Projection("proposal_decisions", ("proposal_id", "account_id", "verdict", "decision"), ("proposal_id",)),
    Projection("deferred_proposals", ("proposal_id", "account_id", "proposal", "deferred_at"), ("proposal_id",)),
)
# How long a screen waits for the registry's reservation before it is refused.
DEFER_LIMIT = timedelta(seconds=30)


class ComplianceSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # Concurrent /audit/{jur}/stream clients per process; more are answered 503.
    audit_streams: int = Field(32, ge=1, le=10_000, validation_alias="TONNE_AUDIT_STREAMS")
    # The Ed25519 seed (32 bytes, base64) that signs the chains' checkpoints, and how often.
    audit_signing_key: SecretStr | None = Field(None, validation_alias="TONNE_AUDIT_SIGNING_KEY")
    audit_checkpoint_every: int = Field(100, ge=1, le=1_000_000, validation_alias="TONNE_AUDIT_CHECKPOINT_EVERY")
    env: Literal["development", "production"] = Field("development", validation_alias="TONNE_ENV")

    def signer(self) -> Signer:
        if self.audit_signing_key is None:
            if self.env == "production":
                raise ValueError("production needs TONNE_AUDIT_SIGNING_KEY: the development key is public")
            return Signer(DEVELOPMENT_SEED, self.audit_checkpoint_every)
        return Signer(base64.b64decode(self.audit_signing_key.get_secret_value()), self.audit_checkpoint_every)


def _alerted(event: Message) -> list[tuple[str, str]]:
    if isinstance(event, cpb.SurveillanceAlert):
        return [(topics.COMPLIANCE_DECISIONS, event.instrument_id)]
    return []


def decision_stream(request_id: str) -> str:
    return f"decision-{request_id}"


def deferral_stream(request_id: str) -> str:
    return f"deferred-{request_id}"


def proposal_stream(proposal_id: str) -> str:
    return f"proposal-{proposal_id}"


def uses_up(proposal: rpb.ScreenProposal) -> bool:
    """A retirement, cancellation or expiry: its serials never move again. An external
    transfer's leave the venue (the registry keeps them as exported)."""
    return proposal.WhichOneof("outcome") in ("retirement", "expiry")


def recorded_in(proposal: rpb.ScreenProposal) -> str | None:
    """The table of serials an approval of `proposal` records its blocks in, if any."""
    if uses_up(proposal):
        return "used_serials"
    return "issued_serials" if proposal.HasField("issuance") else None


async def hold_reservation(conn: asyncpg.Connection, reservation_id: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))", f"reservation:{reservation_id}")


async def hold_account(conn: asyncpg.Connection, account_id: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))", f"account:{account_id}")


async def project(conn: asyncpg.Connection, envelope: Envelope, event: Message) -> None:
    """Fold one of compliance's own recorded events into its tables (live and replay)."""
    match event:
        case rpb.AccountOpened():
            await conn.execute(
                "INSERT INTO accounts (account_id, jurisdiction) VALUES ($1, $2) "
                "ON CONFLICT (account_id) DO UPDATE SET jurisdiction = EXCLUDED.jurisdiction",
                event.account_id,
                event.jurisdiction,
            )
        case rpb.AccountFrozen() | rpb.AccountUnfrozen():
            frozen = isinstance(event, rpb.AccountFrozen)
            await conn.execute("UPDATE accounts SET frozen = $2 WHERE account_id = $1", event.account_id, frozen)
        case rpb.AccountClosed():
            await conn.execute("UPDATE accounts SET closed = true WHERE account_id = $1", event.account_id)
        case rpb.AuthorizationRevoked():
            await conn.execute(
                "UPDATE authorizations SET revoked = true WHERE authorization_id = $1", event.authorization_id
            )
        case rpb.AuthorizationRecorded() | rpb.AuthorizationChanged():
            loa = event.authorization
            await conn.execute(
                "INSERT INTO authorizations (authorization_id, host_party, quantity, loa) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (authorization_id) DO UPDATE SET host_party = EXCLUDED.host_party, "
                "quantity = EXCLUDED.quantity, loa = EXCLUDED.loa",
                loa.authorization_id,
                loa.host_party,
                loa.quantity,
                loa.SerializeToString(deterministic=True),
            )
        case rpb.UnitsReserved():
            blocks = cpb.ReservationBlocks(blocks=event.blocks).SerializeToString(deterministic=True)
            await conn.execute(
                "INSERT INTO reservations (reservation_id, account_id, quantity, blocks) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (reservation_id) DO UPDATE SET account_id = EXCLUDED.account_id, "
                "quantity = EXCLUDED.quantity, blocks = EXCLUDED.blocks",
                event.reservation_id,
                event.account_id,
                event.quantity,
                blocks,
            )
        case cpb.AuthorizationClaimed():
            await conn.execute(
                "INSERT INTO authorization_claims (request_id, authorization_id, quantity) VALUES ($1, $2, $3)",
                event.request_id,
                event.authorization_id,
                event.quantity,
            )
            await _usage(conn, event.authorization_id, claimed=event.quantity)
        case cpb.AuthorizationClaimReleased():
            await _unclaim(conn, event.request_id, event.authorization_id)
            await _usage(conn, event.authorization_id, claimed=-event.quantity)
        case cpb.AuthorizationFirstTransferred():
            await _unclaim(conn, event.transfer_id, event.authorization_id)
            await _usage(conn, event.authorization_id, used=event.quantity, claimed=-event.claim_settled)
        case cpb.ScreenTransfer():  # deferred until its reservation is known
            await conn.execute(
                "INSERT INTO deferred_screens (request_id, reservation_id, request, deferred_at) "
                "VALUES ($1, $2, $3, $4)",
                event.request_id,
                event.reservation_id,
                event.SerializeToString(deterministic=True),
                envelope.occurred_at.ToDatetime(tzinfo=UTC),
            )
        case rpb.ScreenProposal():  # deferred until its account is known
            await conn.execute(
                "INSERT INTO deferred_proposals (proposal_id, account_id, proposal, deferred_at) "
                "VALUES ($1, $2, $3, $4)",
                event.proposal_id,
                event.account_id,
                event.SerializeToString(deterministic=True),
                envelope.occurred_at.ToDatetime(tzinfo=UTC),
            )
        case cpb.ProposalScreened():
            await conn.execute("DELETE FROM deferred_proposals WHERE proposal_id = $1", event.proposal_id)
            await conn.execute(
                "INSERT INTO proposal_decisions (proposal_id, account_id, verdict, decision) VALUES ($1, $2, $3, $4)",
                event.proposal_id,
                event.account_id,
                cpb.Verdict.Name(event.verdict),
                event.SerializeToString(deterministic=True),
            )
            table = recorded_in(event.request)
            if event.verdict == cpb.APPROVED and table is not None:
                await conn.executemany(
                    f"INSERT INTO {table} (namespace, serial_start, serial_end, proposal_id) VALUES ($1, $2, $3, $4)",
                    [(b.namespace, b.start, b.end, event.proposal_id) for b in event.request.blocks],
                )
        case rpb.ProposalRejected():
            # What an approval recorded is released: the registry did not complete it.
            await conn.execute("DELETE FROM used_serials WHERE proposal_id = $1", event.proposal_id)
            await conn.execute("DELETE FROM issued_serials WHERE proposal_id = $1", event.proposal_id)
        case cpb.ScreeningDecision():
            await conn.execute("DELETE FROM deferred_screens WHERE request_id = $1", event.request_id)
            await conn.execute(
                "INSERT INTO decisions (request_id, trade_id, verdict, decision, from_account_id, to_account_id) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                event.request_id,
                event.trade_id,
                cpb.Verdict.Name(event.verdict),
                event.SerializeToString(deterministic=True),
                event.request.from_account_id,
                event.request.to_account_id,
            )


async def _usage(conn: asyncpg.Connection, authorization_id: str, used: int = 0, claimed: int = 0) -> None:
    await conn.execute(
        "INSERT INTO authorization_usage AS u (authorization_id, used, claimed) VALUES ($1, $2, $3) "
        "ON CONFLICT (authorization_id) DO UPDATE SET used = u.used + $2, claimed = u.claimed + $3",
        authorization_id,
        used,
        claimed,
    )


async def _unclaim(conn: asyncpg.Connection, request_id: str, authorization_id: str) -> None:
    await conn.execute(
        "DELETE FROM authorization_claims WHERE request_id = $1 AND authorization_id = $2", request_id, authorization_id
    )


async def overlapping(
    conn: asyncpg.Connection, blocks: Sequence[rpb.SerialBlock], table: str = "used_serials"
) -> list[rpb.SerialBlock]:
    """The serials recorded in `table` (used_serials, issued_serials) that share one with
    `blocks` (at most 20 per block): the predecessor of each block's start, and those
    starting inside it (recorded ranges are disjoint, so nothing else can overlap)."""
    rows = await conn.fetch(
        "SELECT DISTINCT u.namespace, u.serial_start, u.serial_end "
        "FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS b(namespace, s, e) CROSS JOIN LATERAL ("
        f"(SELECT namespace, serial_start, serial_end FROM {table} WHERE namespace = b.namespace "
        "AND serial_start <= b.s ORDER BY serial_start DESC LIMIT 1) UNION ALL "
        f"(SELECT namespace, serial_start, serial_end FROM {table} WHERE namespace = b.namespace "
        "AND serial_start > b.s AND serial_start <= b.e ORDER BY serial_start LIMIT 20)) u "
        "WHERE u.serial_end >= b.s ORDER BY 1, 2",
        [b.namespace for b in blocks],
        [b.start for b in blocks],
        [b.end for b in blocks],
    )
    return [rpb.SerialBlock(namespace=r["namespace"], start=r["serial_start"], end=r["serial_end"]) for r in rows]


async def accounts_of(conn: asyncpg.Connection, ids: Iterable[str]) -> dict[str, str]:
    """Account id -> jurisdiction, for the given accounts only."""
    rows = await conn.fetch(
        "SELECT account_id, jurisdiction FROM accounts WHERE account_id = ANY($1::text[])", sorted(set(ids))
    )
    return {row["account_id"]: row["jurisdiction"] for row in rows}


async def accounts_facts(conn: asyncpg.Connection, ids: Iterable[str]) -> Facts:
    """The given accounts as screening needs them: their party, and which are frozen or closed."""
    rows = await conn.fetch(
        "SELECT account_id, jurisdiction, frozen, closed FROM accounts WHERE account_id = ANY($1::text[])",
        sorted(set(ids)),
    )
    return Facts(
        accounts={r["account_id"]: r["jurisdiction"] for r in rows},
        frozen={r["account_id"] for r in rows if r["frozen"]},
        closed={r["account_id"] for r in rows if r["closed"]},
    )


async def proposal_facts(conn: asyncpg.Connection, proposal: rpb.ScreenProposal) -> Facts:
    """What screening a proposal needs from the tables: its account and the authorizations
    its blocks name."""
    facts = await accounts_facts(conn, [proposal.account_id])
    await _authorizations(conn, facts, proposal.blocks)
    return facts


async def _authorizations(conn: asyncpg.Connection, facts: Facts, blocks: Sequence[rpb.SerialBlock]) -> None:
    """The terms in force of the authorizations `blocks` name, and which are revoked."""
    loas = sorted({b.attributes.authorization_id for b in blocks if b.attributes.authorization_id})
    if not loas:
        return
    query = "SELECT loa, revoked FROM authorizations WHERE authorization_id = ANY($1::text[])"
    for row in await conn.fetch(query, loas):
        loa = rpb.RecordAuthorization.FromString(row["loa"])
        facts.authorizations[loa.authorization_id] = loa
        if row["revoked"]:
            facts.revoked.add(loa.authorization_id)


async def facts_for(conn: asyncpg.Connection, request: cpb.ScreenTransfer) -> Facts:
    """What screening `request` needs from the tables: its two accounts, its reservation
    and the authorizations its blocks name (their usage is aggregates: `Compliance.facts`).
    Nothing else is read."""
    facts = await accounts_facts(conn, (request.from_account_id, request.to_account_id))
    row = await conn.fetchrow(
        "SELECT account_id, quantity, blocks FROM reservations WHERE reservation_id = $1", request.reservation_id
    )
    if row is None:
        return facts
    blocks = cpb.ReservationBlocks.FromString(row["blocks"]).blocks
    facts.reservations[request.reservation_id] = rpb.UnitsReserved(
        reservation_id=request.reservation_id, account_id=row["account_id"], quantity=row["quantity"], blocks=blocks
    )
    await _authorizations(conn, facts, blocks)
    return facts


class Compliance:
    def __init__(self, kernel: Kernel, policies: Policies | Policy, config: ComplianceSettings) -> None:
        self.policies = policies  # every policy (build); one Policy decides for every acquirer
        self.signer = config.signer()
        self.pool = kernel.pool
        self.auth = kernel.auth
        settings = kernel.settings
        self.usages = Repository(
            AuthorizationUsage, PREFIX, snapshot_every=settings.snapshot_every, cache_size=settings.aggregate_cache
        )
        self.watches = Repository(Watch, "watch-", snapshot_every=settings.snapshot_every, cache_size=256)
        self.state = ServiceState(repositories=(self.usages, self.watches), project=project, projections=PROJECTIONS)
        self.unit_of_work = UnitOfWorkFactory(kernel.pool, project)
        self.audit = AuditLog(kernel.pool, readers=max(1, kernel.pool.get_max_size() // 2))
        self.feed = AuditFeed(settings.database_url, config.audit_streams)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {topic: partial(self.on_record, topic) for topic in AUDITED}

    async def on_record(self, topic: str, uow: UnitOfWork, envelope: Envelope, event: Message) -> None:
        context = Context.following(envelope, "compliance")
        if isinstance(event, rpb.UnitsTransferred) and needed(event):
            check_fact(event)
            for loa_id in sorted(spent(event)):  # one lock order: no deadlock between instances
                usage = await uow.load(self.usages, loa_id)
                await uow.record(usage, [(e, []) for e in usage.transferred(event)], context)
        elif isinstance(event, spb.SettlementFailed):
            await self.release(uow, event.trade_id, f"settlement failed: {event.code}", context)
        elif needed(event):
            check_fact(event)
            await uow.append(f"fact-{envelope.event_id}", 0, [(event, [])], context)
            if isinstance(event, rpb.UnitsReserved):
                await hold_reservation(uow.conn, event.reservation_id)
                await self.resume(uow, event.reservation_id, context)
            if isinstance(event, rpb.AccountOpened):
                await hold_account(uow.conn, event.account_id)
                await self.resume_proposals(uow, event.account_id, context)
        elif isinstance(event, rpb.ScreenProposal):
            await self.answer_proposal(uow, event, context)
            await self.expire_proposals(uow, context)
        elif isinstance(event, cpb.ScreenTransfer):
            await self.answer(uow, event, context)
            await self.expire(uow, context)
        elif isinstance(event, mpb.TradeExecuted | mpb.OrderCancelled) and is_identifier(event.instrument_id):
            watch = await uow.load(self.watches, event.instrument_id)
            at = envelope.occurred_at.seconds * 1_000_000 + envelope.occurred_at.nanos // 1000
            found = watch.watch(event, at) if isinstance(event, mpb.TradeExecuted) else watch.cancelled(event, at)
            # Alerts go out on compliance.decisions, which compliance audits: both parties' chains.
            await uow.record(watch, [(e, _alerted(e)) for e in found], context)
        await self._audit(uow, topic, envelope, event)

    async def answer(self, uow: UnitOfWork, request: cpb.ScreenTransfer, context: Context) -> None:
        check_request_keys(request)
        stream = decision_stream(request.request_id)
        recorded = await eventstore.read_stream(uow.conn, stream)
        if recorded:
            # Asked again: the recorded decision, in its recorded envelope, so a consumer
            # that already has it recognises it and one that lost it gets it.
            decided = payload_of(recorded[0])
            assert isinstance(decided, cpb.ScreeningDecision)
            await outbox.enqueue(uow.conn, topics.COMPLIANCE_DECISIONS, decided.trade_id, recorded[0])
            return
        problems = request_problems(request)
        if problems:
            refused = refusal(request, problems, self.policies)
            await uow.append(stream, 0, [(refused, [(topics.COMPLIANCE_DECISIONS, request.trade_id)])], context)
            return
        # Serialised with the reservation's arrival: a screen deferred here is seen by the
        # instance that folds the reservation, or the reservation is seen here.
        await hold_reservation(uow.conn, request.reservation_id)
        facts = await self.facts(uow, request)
        if request.reservation_id not in facts.reservations:
            # Never decide on stale facts: the registry's reservation may still be on its
            # way (registry.events and compliance.requests are not ordered).
            if not await eventstore.read_stream(uow.conn, deferral_stream(request.request_id)):
                await uow.append(deferral_stream(request.request_id), 0, [(request, [])], context)
            return
        await self.decide(uow, request, facts, context)

    async def facts(self, uow: UnitOfWork, request: cpb.ScreenTransfer) -> Facts:
        """The request's facts, with the usage of each LoA its blocks name loaded (and so
        locked) for this unit of work: deliveries spending one LoA are decided one at a
        time, here and against other instances (the stream's version)."""
        facts = await facts_for(uow.conn, request)
        blocks = (b for r in facts.reservations.values() for b in r.blocks)
        for loa_id in sorted(by_authorization(blocks)):
            facts.usage[loa_id] = await uow.load(self.usages, loa_id)
        return facts

    async def decide(self, uow: UnitOfWork, request: cpb.ScreenTransfer, facts: Facts, context: Context) -> None:
        """Screen and record the decision; an approval claims, in the same transaction,
        what the delivery may spend of each LoA."""
        decision = screen(request, facts, self.policies)
        if decision.verdict == cpb.APPROVED:
            for loa_id, quantity in claims(request, facts).items():
                usage = facts.usage[loa_id]
                await uow.record(usage, [(e, []) for e in usage.claim(request.request_id, quantity)], context)
        sink = [(topics.COMPLIANCE_DECISIONS, request.trade_id)]
        await uow.append(decision_stream(request.request_id), 0, [(decision, sink)], context)

    async def answer_proposal(self, uow: UnitOfWork, proposal: rpb.ScreenProposal, context: Context) -> None:
        """Screen a registry operation, once: asked again, the recorded answer again."""
        check_proposal_keys(proposal)
        stream = proposal_stream(proposal.proposal_id)
        recorded = await eventstore.read_stream(uow.conn, stream)
        sink = [(topics.COMPLIANCE_DECISIONS, proposal.account_id)]
        if recorded:
            await outbox.enqueue(uow.conn, topics.COMPLIANCE_DECISIONS, proposal.account_id, recorded[0])
            return
        problems = proposal_problems(proposal)
        if problems:
            await uow.append(stream, 0, [(proposal_refusal(proposal, problems, self.policies), sink)], context)
            return
        # Serialised with the account's arrival: a proposal deferred here is seen by the
        # instance that folds the account, or the account is seen here.
        await hold_account(uow.conn, proposal.account_id)
        facts = await proposal_facts(uow.conn, proposal)
        if proposal.account_id not in facts.accounts:
            # Never decide on stale facts: the registry's AccountOpened may still be on its way.
            if not await eventstore.read_stream(uow.conn, deferral_stream(f"proposal-{proposal.proposal_id}")):
                await uow.append(deferral_stream(f"proposal-{proposal.proposal_id}"), 0, [(proposal, [])], context)
            return
        await self.decide_proposal(uow, proposal, facts, context)

    async def decide_proposal(
        self, uow: UnitOfWork, proposal: rpb.ScreenProposal, facts: Facts, context: Context
    ) -> None:
        """Screen under the locks of the proposal's namespaces (one order: no deadlock), so
        two approvals never record one serial as used, or issued, twice."""
        for namespace in sorted({b.namespace for b in proposal.blocks}):
            await uow.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 2))", f"used:{namespace}")
        used = await overlapping(uow.conn, proposal.blocks)
        issued = await overlapping(uow.conn, proposal.blocks, "issued_serials") if proposal.HasField("issuance") else []
        decision = screen_proposal(proposal, facts, used, self.policies, issued)
        sink = [(topics.COMPLIANCE_DECISIONS, proposal.account_id)]
        await uow.append(proposal_stream(proposal.proposal_id), 0, [(decision, sink)], context)

    async def resume_proposals(self, uow: UnitOfWork, account_id: str, context: Context) -> None:
        """Screen the proposals that were waiting for this account."""
        rows = await uow.conn.fetch(
            "SELECT proposal FROM deferred_proposals WHERE account_id = $1 ORDER BY proposal_id", account_id
        )
        for row in rows:
            await self.answer_proposal(uow, rpb.ScreenProposal.FromString(row["proposal"]), context)

    async def expire_proposals(self, uow: UnitOfWork, context: Context) -> None:
        """Screen, with the facts as they are (no account: refused), the proposals that
        waited longer than DEFER_LIMIT."""
        rows = await uow.conn.fetch(
            "SELECT proposal FROM deferred_proposals WHERE deferred_at < $1 ORDER BY deferred_at LIMIT 100",
            datetime.now(UTC) - DEFER_LIMIT,
        )
        for row in rows:
            proposal = rpb.ScreenProposal.FromString(row["proposal"])
            await self.decide_proposal(uow, proposal, await proposal_facts(uow.conn, proposal), context)

    async def release(self, uow: UnitOfWork, request_id: str, reason: str, context: Context) -> None:
        """A delivery that will not happen gives back what it claimed."""
        rows = await uow.conn.fetch(
            "SELECT authorization_id FROM authorization_claims WHERE request_id = $1 ORDER BY authorization_id",
            request_id,
        )
        for row in rows:
            usage = await uow.load(self.usages, row["authorization_id"])
            await uow.record(usage, [(e, []) for e in usage.release(request_id, reason)], context)

    async def resume(self, uow: UnitOfWork, reservation_id: str, context: Context) -> None:
        """Screen the requests that were waiting for this reservation."""
        rows = await uow.conn.fetch(
            "SELECT request FROM deferred_screens WHERE reservation_id = $1 ORDER BY request_id", reservation_id
        )
        for row in rows:
            await self.answer(uow, cpb.ScreenTransfer.FromString(row["request"]), context)

    async def expire(self, uow: UnitOfWork, context: Context) -> None:
        """Screen, with the facts as they are (no reservation: refused), the requests that
        waited longer than DEFER_LIMIT."""
        rows = await uow.conn.fetch(
            "SELECT request FROM deferred_screens WHERE deferred_at < $1 ORDER BY deferred_at LIMIT 100",
            datetime.now(UTC) - DEFER_LIMIT,
        )
        for row in rows:
            request = cpb.ScreenTransfer.FromString(row["request"])
            await self.decide(uow, request, await self.facts(uow, request), context)

    async def _audit(self, uow: UnitOfWork, topic: str, envelope: Envelope, event: Message) -> None:
        links = uow.gathered("audit-links", partial(chain.Links, self.signer))
        # Only well-formed ids can be in `accounts` (facts are checked before they are stored).
        named = [a for a in account_ids(event) if is_identifier(a)]
        jurisdictions = concerned(event, Facts(accounts=await accounts_of(uow.conn, named)))
        if envelope.correlation_id:
            # Steps that name no account (a decision, an instruction) follow their flow.
            jurisdictions |= await chain.flow_jurisdictions(uow.conn, envelope.correlation_id)
            jurisdictions |= links.reached(envelope.correlation_id)
        for jurisdiction in sorted(jurisdictions):
            if is_party(jurisdiction):
                links.add(jurisdiction, topic, envelope)
            else:
                log.warning("%s %s names a malformed jurisdiction; not chained", envelope.type, envelope.event_id)

    async def decision(self, request_id: str, reader: Identity) -> cpb.ScreeningDecision | None:
        """The decision if `reader` is the operator or a regulator of a jurisdiction of its
        accounts; None otherwise, as if there were none."""
        async with self.pool.acquire() as conn:
            data = await conn.fetchval(
                "SELECT d.decision FROM decisions d WHERE d.request_id = $1 AND ($2 OR EXISTS ("
                "SELECT 1 FROM accounts a WHERE a.account_id IN (d.from_account_id, d.to_account_id) "
                "AND a.jurisdiction = ANY($3::text[])))",
                request_id,
                reader.operator,
                sorted(reader.jurisdictions("regulator")),
            )
        return None if data is None else cpb.ScreeningDecision.FromString(data)


def build(kernel: Kernel) -> Compliance:
    return Compliance(kernel, Policies.load(), ComplianceSettings())
