"""What a screening rule is: a predicate over one screening (`Case`: a delivery;
`ProposalCase`: a registry operation) that names what is wrong (`Finding`), and the
metadata the table documents (stable string code, numeric transaction-log code within
its family's 8xxx range, meaning, evidence).

A rule builds no `RuleResult` itself: `Rule.run` does, with the rule's own code and
number, so a rule cannot emit a code that is not its table entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from services.common.codes import Family
from services.compliance.domain.facts import Facts
from services.compliance.domain.policies import Policy, Use
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb

# The hundreds digit names the family, as in the registry's 7xxx reject codes
# (services/registry/domain/codes.py), with the same digit for the same subject.
SEQUENCE = Family("sequence", 8001, 8099, "requests and sequence")
ACCOUNTS = Family("accounts", 8101, 8199, "accounts")
SERIALS = Family("serials", 8201, 8299, "serial integrity and double issuance")
HOLDINGS = Family("holdings", 8301, 8399, "holdings and double use")
CLAIMING = Family("claiming", 8401, 8499, "double claiming: authorizations and first transfers")
QUALITY = Family("quality", 8501, 8599, "quality: vintages, methodologies, programmes (per policy)")
FAMILIES = (SEQUENCE, ACCOUNTS, SERIALS, HOLDINGS, CLAIMING, QUALITY)


@dataclass(frozen=True)
class Case:
    """One screening: the request, what compliance knows that it names, the policy selected
    for it, and the use the acquiring party puts the units to."""

    request: cpb.ScreenTransfer
    facts: Facts
    policy: Policy
    use: Use

    @property
    def reservation(self) -> rpb.UnitsReserved | None:
        return self.facts.reservations.get(self.request.reservation_id)

    @property
    def blocks(self) -> list[rpb.SerialBlock]:
        """The reserved blocks the transfer delivers from (none without a reservation)."""
        reservation = self.reservation
        return list(reservation.blocks) if reservation else []


@dataclass(frozen=True)
class ProposalCase:
    """One registry operation screened before it completes (registry.proto ScreenProposal):
    what compliance knows of its account and authorizations, and `used`, the serials it
    recorded as used up (retired, cancelled, expired) that share a serial with the
    proposal's blocks."""

    proposal: rpb.ScreenProposal
    facts: Facts
    used: Sequence[rpb.SerialBlock]
    policy: Policy
    issued: Sequence[rpb.SerialBlock] = ()  # for an issuance: serials issued before that share one with it

    @property
    def retirement(self) -> rpb.UnitsRetired | None:
        return self.proposal.retirement if self.proposal.HasField("retirement") else None


class Finding(NamedTuple):
    problems: list[str]  # what is wrong, one line each; none: the rule passes
    cleared: str  # the evidence when nothing is wrong


def where(block: rpb.SerialBlock) -> str:
    return f"{block.namespace}:{block.start}-{block.end}"


def unauthorized(block: rpb.SerialBlock, facts: Facts, use: Use) -> list[str]:
    """What keeps `block` from being used for `use` under its authorization: none named
    (or none recorded), another party's, another use, a vintage outside its range."""
    a = block.attributes
    loa = facts.authorizations.get(a.authorization_id)
    if loa is None:
        return [f"{where(block)} has no authorization from {a.host_party}"]
    problems = []
    if loa.host_party != a.host_party:
        problems.append(f"{where(block)} authorization {loa.authorization_id} is {loa.host_party}'s")
    if loa.use not in (rpb.AuthorizedUse.Value(use), rpb.NDC_AND_OIMP):
        problems.append(f"{where(block)} authorization does not cover {use}")
    if not loa.vintage_from <= a.vintage <= loa.vintage_to:
        problems.append(f"{where(block)} vintage {a.vintage} outside {loa.vintage_from}-{loa.vintage_to}")
    return problems


@dataclass(frozen=True)
class Code:
    """A code a decision can carry, as the table documents it."""

    code: str  # the stable string
    numeric: int  # the transaction log's number, within its family's range
    family: Family
    meaning: str  # one line: what the rule checks
    evidence: str  # what the evidence carries, failing and passing


AnyCase = TypeVar("AnyCase", Case, ProposalCase)


@dataclass(frozen=True)
class Rule(Code, Generic[AnyCase]):
    check: Callable[[AnyCase], Finding]

    def run(self, case: AnyCase) -> cpb.RuleResult:
        problems, cleared = self.check(case)
        return cpb.RuleResult(
            code=self.code,
            numeric_code=self.numeric,
            passed=not problems,
            evidence="; ".join(problems) or cleared,
        )
