"""Issuance rules as policy data (DOMAIN.md §3): through which account a programme's
issuance goes, and which shares of it go where. A6.4: issued to the mechanism's pending
account, 5 % share of proceeds to the Adaptation Fund and 2 % cancelled for overall
mitigation (OMGE), both rounded up, the rest forwarded; JCM: the Joint Committee's amount
split with the host government (Thailand 50:50). One file per programme and host party
under services/registry/policies/issuance/, validated at start-up against these models.

Serials are allocated consecutively from the block's start in the rules' order (the
shares, then the rest), so the same issuance always allocates the same serials."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from services.common.errors import DomainError
from tonne.v1 import registry_pb2 as pb

Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{0,31}$")]
AccountId = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}-[A-Za-z0-9._:@-]{1,61}$")]
AccountTypeName = Literal[
    "HOLDING",
    "TRADING",
    "GOVERNMENT",
    "PENDING",
    "SHARE_OF_PROCEEDS",
    "RETIREMENT",
    "CANCELLATION",
    "MANDATORY_CANCELLATION",
    "OMGE_CANCELLATION",
]
# What the rules leave goes to the issuance's own account, under this role.
PARTICIPANTS = "participants"


class Rounding(StrEnum):
    UP = "up"
    DOWN = "down"


class _Rules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Landing(_Rules):
    """The account every unit of the block is issued to first: A6.4's pending account, a
    JCM host government's account. A share of the landing's role stays there."""

    role: Role
    account_type: AccountTypeName
    account_id: AccountId | None = None  # fixed by the rules; else the issuance names it


class Share(_Rules):
    role: Role
    basis_points: int = Field(gt=0, le=10_000)  # of the block's quantity
    rounding: Rounding
    account_type: AccountTypeName  # what the receiving account must be
    account_id: AccountId | None = None  # fixed by the rules; else the issuance names it
    cancel: bool = False  # cancelled on arrival (OMGE)

    def of(self, quantity: int) -> int:
        exact = quantity * self.basis_points
        return -(-exact // 10_000) if self.rounding is Rounding.UP else exact // 10_000


class IssuanceRules(_Rules):
    policy: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9.-]{0,31}$")]
    version: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z.-]{1,32}$")]
    programme: Literal["CCER", "JCM", "A6_4ER", "VCU", "GS_VER", "PHCER"]
    host_party: Annotated[str, StringConstraints(pattern=r"^([A-Z]{2}|\*)$")]  # "*": every host
    # False: the rules apply when the issuance names every role account they do not fix
    # (the Joint Committee decides each allocation; this is the usual split).
    required: bool = True
    landing: Landing | None = None
    shares: tuple[Share, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        roles = [s.role for s in self.shares]
        if (
            len(set(roles)) != len(roles)
            or PARTICIPANTS in roles
            or (self.landing and self.landing.role == PARTICIPANTS)
        ):
            raise ValueError(f"roles must be distinct and not {PARTICIPANTS!r}")
        if self.landing is not None:
            for share in self.shares:
                if share.role == self.landing.role and (
                    share.account_id or share.account_type != self.landing.account_type
                ):
                    raise ValueError("a share of the landing's role stays in the landing's account")
        if sum(s.basis_points for s in self.shares) > 10_000:
            raise ValueError("the shares add up to more than the block")
        return self

    @property
    def id(self) -> str:
        return f"{self.policy}@{self.version}"

    def account_ids(self, command: pb.RecordIssuance) -> dict[str, str]:
        """The account of every role: fixed by the rules, named by the issuance ("" when
        not named), and the participants' (the issuance's own account)."""
        named = {s.role: s.account_id or command.accounts.get(s.role, "") for s in self.shares}
        if self.landing is not None:
            named[self.landing.role] = self.landing_account(command)
        return {**named, PARTICIPANTS: command.account_id}

    def applies(self, command: pb.RecordIssuance) -> bool:
        """Whether the issuance is allocated by these rules: always when they are required,
        else when it names every account they do not fix."""
        return self.required or all(self.account_ids(command).values())

    def landing_account(self, command: pb.RecordIssuance) -> str:
        if self.landing is None:
            return command.account_id
        return self.landing.account_id or command.accounts.get(self.landing.role, "")


class Piece(NamedTuple):
    role: str
    start: int
    end: int
    cancel: bool


def allocate(rules: IssuanceRules, start: int, end: int) -> list[Piece]:
    """Consecutive serials per share in the rules' order, the rest to the participants;
    shares that round to nothing get no piece. Refused when the shares exceed the block."""
    quantity = end - start + 1
    pieces: list[Piece] = []
    cursor = start
    for share in rules.shares:
        units = share.of(quantity)
        if cursor + units - 1 > end:
            raise DomainError(
                "ISSUANCE_ALLOCATION_INVALID",
                f"the block of {quantity} units is too small for {rules.id}'s shares",
                [f"{share.role}: {units}"],
            )
        if units:
            pieces.append(Piece(share.role, cursor, cursor + units - 1, share.cancel))
            cursor += units
    if cursor <= end:
        pieces.append(Piece(PARTICIPANTS, cursor, end, False))
    return pieces


def account_type(rules: IssuanceRules, role: str) -> pb.AccountType.ValueType | None:
    """The account type a role's account must have (None: the participants', any open
    account the units may reach)."""
    if rules.landing and rules.landing.role == role:
        return pb.AccountType.Value(rules.landing.account_type)
    for share in rules.shares:
        if share.role == role:
            return pb.AccountType.Value(share.account_type)
    return None


class Applied(NamedTuple):
    rules: IssuanceRules | None
    landing: str  # the account the block is issued to
    roles: dict[str, str]  # role -> account id ("" when the issuance names none)


class IssuancePolicies:
    """The rules of every programme and host party; the most specific file wins."""

    def __init__(self, rules: Iterable[IssuanceRules] = ()) -> None:
        self._rules: dict[tuple[str, str], IssuanceRules] = {}
        for r in rules:
            key = (r.programme, r.host_party)
            if key in self._rules:
                raise ValueError(f"two issuance rules for {r.programme} in {r.host_party}")
            self._rules[key] = r

    def for_block(self, attributes: pb.UnitAttributes) -> IssuanceRules | None:
        programme = pb.Standard.Name(attributes.standard)
        return self._rules.get((programme, attributes.host_party)) or self._rules.get((programme, "*"))

    def applying(self, command: pb.RecordIssuance) -> Applied:
        """The rules that allocate this issuance (if any), its landing account and the
        account id of each role."""
        rules = self.for_block(command.block.attributes)
        if rules is None or not rules.applies(command):
            return Applied(None, command.account_id, {})
        return Applied(rules, rules.landing_account(command), rules.account_ids(command))
