"""An authorization's usage: first transfers spend it, resales do not, approvals claim it."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from services.compliance.domain.authorizations import AuthorizationUsage
from services.compliance.domain.facts import Facts
from services.compliance.domain.screening import Policy, claims, screen
from tests.unit.factories import loa
from tonne.v1 import compliance_pb2 as cpb
from tonne.v1 import registry_pb2 as rpb

AUTHORIZED = 4000
ACCOUNTS = {"TH-GOV": "TH", "CH-BUYER": "CH", "SG-BUYER": "SG", "TH-CO": "TH"}


def block(start: int, end: int) -> rpb.SerialBlock:
    attributes = rpb.UnitAttributes(
        standard=rpb.JCM, host_party="TH", vintage=2024, authorization_id="LOA-TH-1", methodology="JCM_TH_AM014"
    )
    return rpb.SerialBlock(namespace="JCM-TH", start=start, end=end, attributes=attributes)


def facts(authorized: int = AUTHORIZED) -> Facts:
    known = Facts()
    for account_id, jurisdiction in ACCOUNTS.items():
        known.apply(rpb.AccountOpened(account_id=account_id, jurisdiction=jurisdiction))
    known.apply(rpb.AuthorizationRecorded(authorization=loa(quantity=authorized)))
    return known


def reserve(known: Facts, reservation_id: str, holder: str, start: int, end: int) -> None:
    reserved = rpb.UnitsReserved(
        reservation_id=reservation_id, account_id=holder, quantity=end - start + 1, blocks=[block(start, end)]
    )
    known.apply(reserved)


def request(request_id: str, holder: str, to: str, quantity: int) -> cpb.ScreenTransfer:
    return cpb.ScreenTransfer(
        request_id=request_id,
        trade_id=request_id,
        reservation_id=f"R-{request_id}",
        from_account_id=holder,
        to_account_id=to,
        quantity=quantity,
    )


def approve(known: Facts, screened: cpb.ScreenTransfer) -> cpb.ScreeningDecision:
    """Screen; an approval records its claims, as the service does in the same transaction."""
    decision = screen(screened, known, Policy.load())
    if decision.verdict == cpb.APPROVED:
        for loa_id, quantity in claims(screened, known).items():
            usage = known.usage.setdefault(loa_id, AuthorizationUsage.of(loa_id))
            usage.mutate(usage.claim(screened.request_id, quantity))
    return decision


def moved(transfer_id: str, frm: str, to: str, start: int, end: int) -> rpb.UnitsTransferred:
    return rpb.UnitsTransferred(
        transfer_id=transfer_id,
        from_jurisdiction=ACCOUNTS[frm],
        to_jurisdiction=ACCOUNTS[to],
        quantity=end - start + 1,
        blocks=[block(start, end)],
    )


def evidence(decision: cpb.ScreeningDecision) -> str:
    return next(r.evidence for r in decision.results if r.code == "DOUBLE_CLAIMING_AUTHORIZATION")


def test_a_resale_of_first_transferred_units_spends_nothing() -> None:
    """DOMAIN.md scenario 1: TH sells 3,000 of a 4,000 t authorization to CH; CH resells
    2,000 to SG; the resale is allowed and the authorization still has 1,000 left."""
    known = facts()
    reserve(known, "R-T1", "TH-GOV", 1, 3000)
    assert approve(known, request("T1", "TH-GOV", "CH-BUYER", 3000)).verdict == cpb.APPROVED
    known.apply(moved("T1", "TH-GOV", "CH-BUYER", 1, 3000))
    reserve(known, "R-T2", "CH-BUYER", 1, 2000)
    resale = request("T2", "CH-BUYER", "SG-BUYER", 2000)
    assert claims(resale, known) == {}
    assert approve(known, resale).verdict == cpb.APPROVED
    known.apply(moved("T2", "CH-BUYER", "SG-BUYER", 1, 2000))
    usage = known.usage_of("LOA-TH-1")
    assert (usage.used, usage.claims, usage.left(AUTHORIZED)) == (3000, {}, 1000)


def test_deliveries_screened_back_to_back_cannot_both_spend_one_remainder() -> None:
    known = facts()
    reserve(known, "R-A", "TH-GOV", 1, 2500)
    reserve(known, "R-B", "TH-GOV", 2501, 5000)
    assert approve(known, request("A", "TH-GOV", "CH-BUYER", 2500)).verdict == cpb.APPROVED
    refused = approve(known, request("B", "TH-GOV", "CH-BUYER", 2500))
    assert refused.verdict == cpb.REJECTED
    assert "has 1500 left, transfer would first-transfer 2500" in evidence(refused)
    # A domestic delivery of the same units needs no authorization at all.
    assert approve(known, request("B", "TH-GOV", "TH-CO", 2500)).verdict == cpb.APPROVED


def test_the_transfer_settles_the_claim_and_a_failed_delivery_releases_it() -> None:
    known = facts()
    reserve(known, "R-A", "TH-GOV", 1, 3000)
    approve(known, request("A", "TH-GOV", "CH-BUYER", 1000))  # a partial fill of the reservation
    usage = known.usage_of("LOA-TH-1")
    assert usage.claims == {"A": 1000} and usage.left(AUTHORIZED) == 3000
    known.apply(moved("A", "TH-GOV", "CH-BUYER", 1, 1000))
    assert (usage.used, usage.claims) == (1000, {})
    reserve(known, "R-B", "TH-GOV", 1001, 3000)
    approve(known, request("B", "TH-GOV", "CH-BUYER", 2000))
    assert usage.left(AUTHORIZED) == 1000
    usage.mutate(usage.release("B", "settlement failed"))
    assert (usage.used, usage.claims, usage.left(AUTHORIZED)) == (1000, {}, 3000)
    assert usage.release("B", "again") == []  # nothing left to release


class UsageMachine(RuleBasedStateMachine):
    """Deliveries of random serials between three parties, screened or not, settled or
    failed, resold, with snapshots: no serial spends the authorization twice, and what
    screening approves never over-spends it (a small authorization: it runs out often)."""

    AUTHORIZED = 1500

    def __init__(self) -> None:
        super().__init__()
        self.known = facts(self.AUTHORIZED)
        self.holder: dict[int, str] = {}  # serial -> account (absent: TH-GOV)
        self.pending: dict[str, tuple[str, str, int, int]] = {}  # approved, not moved
        self.first_moved: set[int] = set()
        self.n = 0

    def usage(self) -> AuthorizationUsage:
        return self.known.usage_of("LOA-TH-1")

    @rule(start=st.integers(1, 4000), size=st.integers(1, 800), to=st.sampled_from(sorted(ACCOUNTS)))
    def deliver(self, start: int, size: int, to: str) -> None:
        end = start + size - 1
        holder = self.holder.get(start, "TH-GOV")
        if any(self.holder.get(s, "TH-GOV") != holder for s in range(start, end + 1)) or holder == to:
            return
        self.n += 1
        request_id = f"T{self.n}"
        reserve(self.known, f"R-{request_id}", holder, start, end)
        if approve(self.known, request(request_id, holder, to, size)).verdict == cpb.APPROVED:
            self.pending[request_id] = (holder, to, start, end)

    @rule(data=st.data(), settle=st.booleans())
    def complete(self, data: st.DataObject, settle: bool) -> None:
        if not self.pending:
            return
        request_id = data.draw(st.sampled_from(sorted(self.pending)))
        holder, to, start, end = self.pending.pop(request_id)
        usage = self.usage()
        if not settle:
            usage.mutate(usage.release(request_id, "settlement failed"))
            return
        if any(self.holder.get(s, "TH-GOV") != holder for s in range(start, end + 1)):
            usage.mutate(usage.release(request_id, "units moved meanwhile"))
            return
        self.known.apply(moved(request_id, holder, to, start, end))
        for serial in range(start, end + 1):
            self.holder[serial] = to
            if ACCOUNTS[holder] != ACCOUNTS[to]:
                self.first_moved.add(serial)

    @rule()
    def restart(self) -> None:
        usage = self.usage()
        restored = AuthorizationUsage.restore(usage.stream_id, usage.snapshot())
        assert restored.snapshot() == usage.snapshot()
        self.known.usage["LOA-TH-1"] = restored

    @invariant()
    def each_serial_spends_once(self) -> None:
        usage = self.usage()
        assert usage.used == len(self.first_moved)
        assert usage.used == sum(end - start + 1 for runs in usage.first_transferred.values() for start, end in runs)

    @invariant()
    def never_over_spent(self) -> None:
        usage = self.usage()
        assert usage.used + sum(usage.claims.values()) <= self.AUTHORIZED


TestUsage = UsageMachine.TestCase
TestUsage.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
