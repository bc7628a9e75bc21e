"""Every reject code of the registry, in one table: the stable string beside a numeric code.

The string (`HOLDINGS_INSUFFICIENT`) is what code and tests compare; the numeric code is
the transaction log's, in the style of the Kyoto ITL / EU CITL response codes (four
digits, 7xxx), and travels beside it on the wire (`CommandRejected.numeric_code`).

Numbering: the hundreds digit names the family, the last two count within it.

| range     | family                                                                   |
| --------- | ------------------------------------------------------------------------ |
| 7001-7099 | requests, commands, identifiers and sequence (message ids, quantities)   |
| 7101-7199 | accounts and their mandates                                              |
| 7201-7299 | units, serial blocks, issuance (double issuance) and retirement          |
| 7301-7399 | holdings and reservations                                                |
| 7401-7499 | authorizations (letters of authorization)                                |
| 7501-7599 | controls: freezes, limits, the holder's transfers, trusted-account lists |
| 7601-7699 | channels and trust: who may send what (national channels, tokens, rates) |
| 7701-7799 | external transfers (transaction 03) to and from other registries         |
| 7801-7899 | the transaction log: proposals screened by compliance before they complete |

A number, once given, is never renumbered nor given to another string: a new code takes
the next free number of its family; a code no longer raised stays, marked reserved with
the reason. `numeric` answers 0 (proto3's "unset") for a string not in the table, so a
refusal is never lost for want of a number; tests/unit/test_registry_codes.py keeps
every code raised under services/registry in the table, and docs/registry-reject-codes.md
equal to `markdown()` (regenerate: `python -m services.registry.domain.codes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from services.common.codes import Family, cell, families_table

SEQUENCE = Family("sequence", 7001, 7099, "requests, commands, identifiers and sequence")
ACCOUNTS = Family("accounts", 7101, 7199, "accounts and their mandates")
UNITS = Family("units", 7201, 7299, "units, serial blocks, issuance and retirement")
HOLDINGS = Family("holdings", 7301, 7399, "holdings and reservations")
AUTHORIZATIONS = Family("authorizations", 7401, 7499, "authorizations (letters of authorization)")
CONTROLS = Family("controls", 7501, 7599, "controls: freezes, limits, the holder's transfers, trusted accounts")
CHANNELS = Family("channels", 7601, 7699, "channels and trust: who may send what")
EXTERNAL = Family("external", 7701, 7799, "other registries: external transfers (transaction 03) and reconciliation")
SCREENING = Family("screening", 7801, 7899, "the transaction log: proposals screened before they complete")
FAMILIES = (SEQUENCE, ACCOUNTS, UNITS, HOLDINGS, AUTHORIZATIONS, CONTROLS, CHANNELS, EXTERNAL, SCREENING)


class Carrier(Enum):
    """Where a code reaches the one refused."""

    REJECTED = "CommandRejected"  # recorded on registry.events; an API caller gets it in the HTTP body too
    HTTP = "HTTP only"  # refused at the HTTP API before any command is decided; nothing recorded
    CANCELLED = "TransferCancelled"  # the code of a scheduled transfer's cancellation, not a refusal
    RETURNED = "ExternalTransferReturned"  # why an external transfer's units came back, not a refusal
    PROPOSAL = "ProposalRejected"  # why a screened proposal's units came back
    DEAD_LETTER = "dead-letter topic"  # another service's event the registry cannot take, with its origin


# Where the registry's code lives; an entry raised by the shared kernel for the
# registry's HTTP API names that module instead.
REGISTRY = "services/registry"


@dataclass(frozen=True)
class RejectCode:
    code: str  # the stable string
    numeric: int  # the transaction log's number, within its family's range
    family: Family
    meaning: str  # one line: what was refused and why
    evidence: str  # what the evidence list carries ("none": it is empty)
    carrier: Carrier = Carrier.REJECTED
    raised_in: str = REGISTRY  # the directory or module that raises it
    reserved: str = ""  # why an entry nothing raises stays in the table ("": it is raised)


CODES: tuple[RejectCode, ...] = (
    # --- 70xx requests, commands, identifiers and sequence ---
    RejectCode(
        "COMMAND_UNSUPPORTED",
        7001,
        SEQUENCE,
        "the registry does not take this message type",
        "none (the reason names the type)",
    ),
    RejectCode(
        "IDENTIFIER_INVALID",
        7002,
        SEQUENCE,
        "an id is not 1-64 characters of [A-Za-z0-9._:@-] starting alphanumeric",
        "`<field>: <length> characters` (never the value itself)",
    ),
    RejectCode(
        "SEQUENCE_DUPLICATE_ID",
        7003,
        SEQUENCE,
        "the command's own id (issuance, reservation, retirement, transfer) is missing or already used",
        "none (the reason names the id)",
    ),
    RejectCode(
        "QUANTITY_INVALID",
        7005,
        SEQUENCE,
        "a quantity is not positive, or a limit is beyond int64",
        "the quantity asked (none for a transfer limit)",
    ),
    RejectCode(
        "SELECTOR_INVALID",
        7006,
        SEQUENCE,
        "the unit selector's host party is not ISO 3166 alpha-2",
        "none",
    ),
    RejectCode(
        "REQUEST_INVALID",
        7007,
        SEQUENCE,
        "the HTTP request does not match the API's schema (sizes, ranges, character sets, cursor)",
        "`<location>: <message>` per failing field (at most 20), `after` for a cursor it did not issue, "
        "or the parser's message for a body that is not JSON",
        Carrier.HTTP,
    ),
    RejectCode(
        "REQUEST_TOO_LARGE",
        7008,
        SEQUENCE,
        "the HTTP request body is larger than the API accepts (64 KiB; a manifest upload 200 MB)",
        "none",
        Carrier.HTTP,
        raised_in="services/common/limits.py",
    ),
    RejectCode(
        "FACT_INVALID",
        7009,
        SEQUENCE,
        "an event of another service the registry keeps (settlement's corresponding adjustments) is malformed",
        "what is wrong with it (at most 20)",
        Carrier.DEAD_LETTER,
    ),
    # --- 71xx accounts and their mandates ---
    RejectCode(
        "ACCOUNT_INVALID",
        7101,
        ACCOUNTS,
        "an account to open lacks its id, holder, jurisdiction or type, or its id lacks the `<JUR>-` prefix",
        "none",
    ),
    RejectCode(
        "ACCOUNT_EXISTS",
        7102,
        ACCOUNTS,
        "an account with this id is open already",
        "the account id",
    ),
    RejectCode(
        "ACCOUNT_UNKNOWN",
        7103,
        ACCOUNTS,
        "no such account (or, at the HTTP API, none the caller may see)",
        "the account id (none when the HTTP API refuses it for the caller's tenancy)",
    ),
    RejectCode(
        "ACCOUNT_TYPE_NOT_ALLOWED",
        7104,
        ACCOUNTS,
        "the account's type or jurisdiction does not take this issuance or allocation",
        "none, or the allocation role's account id",
    ),
    RejectCode(
        "ACCOUNT_TERMINAL",
        7105,
        ACCOUNTS,
        "units never leave a retirement or cancellation account",
        "the account id",
    ),
    RejectCode(
        "ACCOUNT_CLOSED",
        7106,
        ACCOUNTS,
        "a closed account takes no units in or out, nor new mandates",
        "the account id",
    ),
    RejectCode(
        "ACCOUNT_NOT_EMPTY",
        7107,
        ACCOUNTS,
        "an account closes only once it holds, reserves and schedules nothing",
        "`held: <n>`, `reserved: <n>`, `scheduled transfers: <n>`",
    ),
    RejectCode(
        "MANDATE_INVALID",
        7108,
        ACCOUNTS,
        "a mandate to grant lacks its id or broker id",
        "none",
    ),
    RejectCode(
        "MANDATE_EXISTS",
        7109,
        ACCOUNTS,
        "the mandate id is held by another account, or names another broker",
        "the mandate id",
    ),
    RejectCode(
        "MANDATE_UNKNOWN",
        7110,
        ACCOUNTS,
        "the account holds no mandate with this id",
        "the mandate id (none from the HTTP API)",
    ),
    RejectCode(
        "MANDATE_BROKER_MISMATCH",
        7111,
        ACCOUNTS,
        "the mandate to revoke names another broker",
        "the mandate id",
    ),
    # --- 72xx units, serial blocks, issuance and retirement ---
    RejectCode(
        "SERIAL_RANGE_INVALID",
        7201,
        UNITS,
        "a block needs a namespace and 1 <= start <= end <= 2^63-1",
        "`<namespace>:<start>-<end>` as given",
    ),
    RejectCode(
        "UNITS_INVALID",
        7202,
        UNITS,
        "the block's attributes lack standard or vintage, or carry a bad host party, quality labels or "
        "underlying range",
        "none, or the underlying serials out of range",
    ),
    RejectCode(
        "DOUBLE_ISSUANCE_OVERLAP",
        7203,
        UNITS,
        "the block overlaps units already issued in its namespace",
        "the overlapping blocks, `<namespace>:<start>-<end>` (at most 20)",
    ),
    RejectCode(
        "ISSUANCE_ALLOCATION_INVALID",
        7204,
        UNITS,
        "the programme's issuance rules cannot allocate the block (a role's account not named, block too small)",
        "the role, or `<role>: <units>` of the share that does not fit",
    ),
    RejectCode(
        "RETIREMENT_INVALID",
        7205,
        UNITS,
        "a retirement lacks beneficiary, purpose, use (NDC, OIMP, voluntary) or claim year; a cancellation its "
        "purpose; a cancellation kind names no cancellation",
        "none, or the claim use given",
    ),
    RejectCode(
        "FINGERPRINT_INVALID",
        7206,
        UNITS,
        "an issuance's project fingerprint or monitoring period is incomplete or malformed, or names another host",
        "none",
    ),
    RejectCode(
        "DOUBLE_ISSUANCE_PROJECT_PERIOD",
        7207,
        UNITS,
        "the project (by fingerprint) had a day of this monitoring period issued already, in any programme",
        "the earlier issuances, `<issuance id> (<standard>, <start>..<end>)` (at most 20)",
    ),
    RejectCode(
        "MANIFEST_INVALID",
        7208,
        UNITS,
        "a carbon-inclusion manifest upload is not UTF-8 CSV with the header `record_id,participant_id,activity,"
        "factor_mg`, is empty, repeats a record id, has a malformed record, or totals beyond int64 tonnes",
        "`line <n>` of the first bad line, the repeated record id, `byte <n>` of text that is not UTF-8, "
        "or none (no records, too many tonnes)",
        Carrier.HTTP,
    ),
    RejectCode(
        "MANIFEST_RECORD_UNKNOWN",
        7209,
        UNITS,
        "no record of this id and participant is in the manifest (no inclusion proof; unknown manifests alike)",
        "none",
        Carrier.HTTP,
    ),
    RejectCode(
        "MANIFEST_EXISTS",
        7210,
        UNITS,
        "the manifest id names a stored manifest with another root, jurisdiction or methodology "
        "(the same manifest again answers the stored one)",
        "the manifest id",
        Carrier.HTTP,
    ),
    RejectCode(
        "MANIFEST_UNKNOWN",
        7211,
        UNITS,
        "no manifest with this id (an issuance names one not uploaded, or a block carries a root "
        "with no manifest named)",
        "the manifest id, or none",
    ),
    RejectCode(
        "MANIFEST_TOO_LARGE",
        7212,
        UNITS,
        "a manifest upload is over 5,000,000 records (HTTP 413; over 200 MB is REQUEST_TOO_LARGE)",
        "none",
        Carrier.HTTP,
    ),
    RejectCode(
        "MANIFEST_ISSUED",
        7213,
        UNITS,
        "the manifest's tonnes were issued already, by another issuance",
        "that issuance's id",
    ),
    RejectCode(
        "MANIFEST_MISMATCH",
        7214,
        UNITS,
        "the block is not what its manifest issues: another host party, methodology, number of tonnes or root",
        "each difference, `<field>: <block's> here, <manifest's> in the manifest`",
    ),
    RejectCode(
        "EXPIRY_INVALID",
        7220,
        UNITS,
        "an expiry does not name its reason",
        "none",
    ),
    # --- 73xx holdings and reservations ---
    RejectCode(
        "HOLDINGS_INSUFFICIENT",
        7301,
        HOLDINGS,
        "the account holds fewer unreserved units the selector takes than asked",
        "the eligible blocks, `<namespace>:<start>-<end>` (at most 20)",
    ),
    RejectCode(
        "RESERVATION_UNKNOWN",
        7302,
        HOLDINGS,
        "no open reservation with this id",
        "the reservation id",
    ),
    RejectCode(
        "RESERVATION_INSUFFICIENT",
        7303,
        HOLDINGS,
        "the reservation holds fewer units than the release or transfer asks",
        "the reservation id",
    ),
    RejectCode(
        "RESERVATION_HELD_FOR_TRANSFER",
        7304,
        HOLDINGS,
        "the reservation holds a holder's scheduled transfer: the venue neither releases nor delivers it",
        "the reservation id",
    ),
    # --- 74xx authorizations ---
    RejectCode(
        "AUTHORIZATION_INVALID",
        7401,
        AUTHORIZATIONS,
        "an authorization lacks id, host party, quantity, use or first-transfer event, or its vintages are empty; "
        "a change narrows it or alters its party, use, first transfer or approach; a change or revocation gives "
        "no reason",
        "none, or the fields a change may not alter",
    ),
    RejectCode(
        "AUTHORIZATION_EXISTS",
        7402,
        AUTHORIZATIONS,
        "an authorization with this id is recorded already",
        "none (the reason names the id)",
    ),
    RejectCode(
        "AUTHORIZATION_UNKNOWN",
        7403,
        AUTHORIZATIONS,
        "the block, change or revocation names an authorization the registry has not recorded",
        "none for a block (the reason names the id); the authorization id for a change or revocation",
    ),
    RejectCode(
        "AUTHORIZATION_PARTY_MISMATCH",
        7404,
        AUTHORIZATIONS,
        "the block's authorization is another host party's, or another party revokes it",
        "none",
    ),
    RejectCode(
        "AUTHORIZATION_REVOKED",
        7405,
        AUTHORIZATIONS,
        "the authorization was revoked: nothing is issued under it, and it is not changed or revoked again",
        "the authorization id",
    ),
    # --- 75xx controls: freezes, limits, the holder's transfers, trusted accounts ---
    RejectCode(
        "ACCOUNT_FROZEN",
        7501,
        CONTROLS,
        "no units leave a frozen account",
        "the account id",
    ),
    RejectCode(
        "PROJECT_FROZEN",
        7502,
        CONTROLS,
        "units of a frozen project neither reserve nor move",
        "the frozen project ids (at most 20)",
    ),
    RejectCode(
        "PROJECT_INVALID",
        7503,
        CONTROLS,
        "a project freeze lacks the project id or its host party (ISO 3166 alpha-2)",
        "none",
    ),
    RejectCode(
        "PROJECT_PARTY_MISMATCH",
        7504,
        CONTROLS,
        "the project to freeze is another host party's",
        "none",
    ),
    RejectCode(
        "REASON_REQUIRED",
        7505,
        CONTROLS,
        "a freeze, closure, cancellation or a registry's refusal needs a reason of 1-200 printable characters",
        "none",
    ),
    RejectCode(
        "TRANSFER_LIMIT_EXCEEDED",
        7506,
        CONTROLS,
        "above the account's own per-transfer limit, or the cap to an account outside the trusted list",
        "the account id whose limit applies, or the untrusted target's id",
    ),
    RejectCode(
        "TRANSFER_INVALID",
        7507,
        CONTROLS,
        "a holder's transfer goes to another account; an external one to an account in another party's registry",
        "none",
    ),
    RejectCode(
        "TRANSFER_NOT_DUE",
        7508,
        CONTROLS,
        "the scheduled transfer's delay has not passed",
        "none (the reason names the transfer)",
    ),
    RejectCode(
        "TRANSFER_UNKNOWN",
        7509,
        CONTROLS,
        "no scheduled transfer with this id on the account",
        "the transfer id",
    ),
    RejectCode(
        "TRANSFER_CANCELLED",
        7510,
        CONTROLS,
        "a scheduled transfer cancelled by the holder or an operator (one the registry could not deliver "
        "carries that refusal's code instead)",
        "none (TransferCancelled carries the canceller's reason and who)",
        Carrier.CANCELLED,
    ),
    RejectCode(
        "TRUSTED_ACCOUNT_INVALID",
        7511,
        CONTROLS,
        "an account does not trust itself",
        "none",
    ),
    RejectCode(
        "TRUSTED_ACCOUNT_EXISTS",
        7512,
        CONTROLS,
        "the account is on the trusted list already (proposed or approved)",
        "the trusted account id",
    ),
    RejectCode(
        "TRUSTED_ACCOUNT_UNKNOWN",
        7513,
        CONTROLS,
        "no proposal to approve, or no entry to remove, for this account on the trusted list",
        "the trusted account id (none from the HTTP API)",
    ),
    RejectCode(
        "FOUR_EYES_REQUIRED",
        7514,
        CONTROLS,
        "a trusted account is approved by another person than its proposer",
        "none",
    ),
    RejectCode(
        "UNITS_NOT_HELD",
        7515,
        CONTROLS,
        "a block freeze names serials the account does not hold (reserved, retired, frozen, another's, unissued)",
        "the blocks sharing a serial with the range, `namespace:start-end` (at most 20), or the range",
    ),
    RejectCode(
        "FREEZE_UNKNOWN",
        7516,
        CONTROLS,
        "no block freeze with this id is in force on the account",
        "the freeze id",
    ),
    # --- 76xx channels and trust ---
    RejectCode(
        "COMMAND_NOT_ALLOWED_ON_CHANNEL",
        7601,
        CHANNELS,
        "the command is not taken from this channel (units move only on the venue's registry.commands)",
        "the channel: the jurisdiction of `registry.inbound.<JUR>`, or `registry.commands`",
    ),
    RejectCode(
        "CHANNEL_JURISDICTION_MISMATCH",
        7602,
        CHANNELS,
        "a national registry's channel acts only for its own jurisdiction's accounts, parties and issuances",
        "the channel's jurisdiction (`api` for an answer through the HTTP API)",
    ),
    RejectCode(
        "AUTH_UNAUTHENTICATED",
        7603,
        CHANNELS,
        "no bearer token, or one that does not verify",
        "none",
        Carrier.HTTP,
        raised_in="services/common/auth.py",
    ),
    RejectCode(
        "AUTH_FORBIDDEN",
        7604,
        CHANNELS,
        "the caller's roles do not allow this call",
        "none",
        Carrier.HTTP,
    ),
    RejectCode(
        "RATE_LIMITED",
        7605,
        CHANNELS,
        "more requests a second than the caller's rate (Retry-After says when to try again)",
        "none",
        Carrier.HTTP,
        raised_in="services/common/limits.py",
    ),
    # --- 77xx external transfers ---
    RejectCode(
        "EXTERNAL_REGISTRY_UNKNOWN",
        7701,
        EXTERNAL,
        "no registry of the destination party has a channel here",
        "the destination party as given (at most 8 characters)",
    ),
    RejectCode(
        "EXTERNAL_TRANSFER_UNKNOWN",
        7702,
        EXTERNAL,
        "no external transfer with this id awaits an answer (never proposed, or answered or expired already)",
        "the transfer id",
    ),
    RejectCode(
        "EXTERNAL_TRANSFER_REFUSED",
        7703,
        EXTERNAL,
        "the acquiring registry refused the proposal: the units came back to the transferring account",
        "none (ExternalTransferReturned carries the registry's reason)",
        Carrier.RETURNED,
    ),
    RejectCode(
        "EXTERNAL_TRANSFER_EXPIRED",
        7704,
        EXTERNAL,
        "the acquiring registry did not answer by the proposal's expiry: the units came back",
        "none (ExternalTransferReturned's reason names the registry and the expiry)",
        Carrier.RETURNED,
    ),
    RejectCode(
        "DIGEST_UNKNOWN",
        7706,
        EXTERNAL,
        "no holdings digest of the party awaits this answer (never issued, answered, or superseded by a newer one)",
        "the digest id given (at most 64 characters)",
    ),
    RejectCode(
        "DIGEST_ANSWER_INVALID",
        7707,
        EXTERNAL,
        "an answer that disagrees with a digest names none of the party's rows that differ",
        "none",
    ),
    RejectCode(
        "DIGEST_TOO_LARGE",
        7708,
        EXTERNAL,
        "the party's accounts hold more kinds of units than one digest carries",
        "the number of rows",
        reserved="no longer raised: a digest of more rows comes in parts",
    ),
    RejectCode(
        "EXTERNAL_SERIALS_KNOWN",
        7705,
        EXTERNAL,
        "an inbound transfer proposes serials known here already (they cannot be in both registries)",
        "up to 20 blocks here that share a serial with the proposal, `namespace:start-end`",
    ),
    # --- 78xx the transaction log (domain/screening.py) ---
    RejectCode(
        "PROPOSAL_UNKNOWN",
        7801,
        SCREENING,
        "no proposal awaits the transaction log's answer under this id (answered already, or timed out)",
        "the proposal id given (at most 64 characters)",
    ),
    RejectCode(
        "SCREENING_REJECTED",
        7802,
        SCREENING,
        "the transaction log (compliance) rejected the proposal: its units are held again",
        "ProposalRejected's `rules` (the failed rules' codes, docs/compliance-rules.md) and `reason` (their evidence)",
        Carrier.PROPOSAL,
    ),
    RejectCode(
        "SCREENING_TIMEOUT",
        7803,
        SCREENING,
        "the transaction log did not answer by the proposal's `expires_at`: its units are held again",
        "none",
        Carrier.PROPOSAL,
    ),
)

BY_CODE: dict[str, RejectCode] = {entry.code: entry for entry in CODES}


def numeric(code: str) -> int:
    """The transaction-log number of `code`; 0 when it is not in the table."""
    entry = BY_CODE.get(code)
    return entry.numeric if entry is not None else 0


def markdown() -> str:
    """docs/registry-reject-codes.md, from this table."""
    lines = [
        "# Registry reject codes",
        "",
        "<!-- Generated from services/registry/domain/codes.py: edit the table there, then run",
        "     `.venv/bin/python -m services.registry.domain.codes > docs/registry-reject-codes.md`. -->",
        "",
        "Every refusal of the registry names a stable code (the string code and tests compare)",
        "and a numeric transaction-log code beside it, in the style of the Kyoto ITL / EU CITL",
        "response codes. A refused command changes nothing and is recorded as `CommandRejected`",
        "(`proto/tonne/v1/envelope.proto`: `code`, `numeric_code`, `reason`, `evidence`) on",
        "`registry.events`; a caller of the HTTP API gets `{code, reason, evidence}`. A scheduled",
        "transfer the registry can no longer deliver is cancelled with the code of that refusal",
        "(e.g. `ACCOUNT_FROZEN`) on `TransferCancelled`; an external transfer whose units come back",
        "names why on `ExternalTransferReturned`.",
        "",
        "Numbers are never renumbered nor reused; a new code takes the next free number of its",
        "family; a code no longer raised stays, marked reserved. An unknown string maps to 0.",
        "",
        "## Families",
        "",
        *families_table(FAMILIES),
        "",
        "## Codes",
        "",
        "| numeric | code | meaning | evidence | recorded as |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in sorted(CODES, key=lambda e: e.numeric):
        meaning = entry.meaning + (f" (reserved: {entry.reserved})" if entry.reserved else "")
        lines.append(
            f"| {entry.numeric} | `{entry.code}` | {cell(meaning)} | {cell(entry.evidence)} | {entry.carrier.value} |"
        )
    lines += [
        "",
        "The HTTP API also answers the web framework's own refusals as `HTTP_<status>` (e.g.",
        "`HTTP_404` for an unknown path, `HTTP_405` for a method a path does not serve); they",
        'are no decision of the registry and carry no numeric code. "HTTP only" codes are',
        "answered at the HTTP API before any command is decided (nothing is recorded); all but",
        "the registry's own uses of `REQUEST_INVALID` and `AUTH_FORBIDDEN` come from the shared",
        "kernel (`services/common`) that every service's API runs on.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
