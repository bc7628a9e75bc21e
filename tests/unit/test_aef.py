"""AEF actions from registry events, and the consistency checks of a report."""

from __future__ import annotations

from services.settlement.domain import aef
from services.settlement.domain.adjustments import owed
from tests.unit.factories import loa
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb

LOAS = {"LOA-TH-1": loa()}


def block(start: int, end: int) -> rpb.SerialBlock:
    attributes = rpb.UnitAttributes(host_party="TH", vintage=2024, authorization_id="LOA-TH-1")
    return rpb.SerialBlock(namespace="JCM-TH", start=start, end=end, attributes=attributes)


def abroad(transfer_id: str, frm: str, to: str, start: int, end: int) -> rpb.UnitsTransferred:
    return rpb.UnitsTransferred(
        transfer_id=transfer_id, from_jurisdiction=frm, to_jurisdiction=to, blocks=[block(start, end)]
    )


def kinds(actions: list[spb.ItmoAction]) -> list[tuple[str, str, int, int]]:
    return [(a.party, spb.ItmoActionType.Name(a.action), a.serials.start, a.serials.end) for a in actions]


def test_scenario_one_as_the_parties_report_it() -> None:
    """TH first-transfers 1-3000 to CH; CH resells 1-2000 to SG, and 2500-3500 of which
    only 3001-3500 cross for the first time; SG uses 1-500 for its NDC."""
    first = abroad("T1", "TH", "CH", 1, 3000)
    made = aef.actions(first, "T1", 2026, owed(first, "T1", LOAS, {}))
    assert kinds(made) == [("TH", "ITMO_FIRST_TRANSFER", 1, 3000), ("CH", "ITMO_ACQUISITION", 1, 3000)]
    resale = abroad("T2", "CH", "SG", 1, 2000)
    assert kinds(aef.actions(resale, "T2", 2026, owed(resale, "T2", LOAS, {"JCM-TH": [(1, 3000)]}))) == [
        ("CH", "ITMO_TRANSFER", 1, 2000),
        ("SG", "ITMO_ACQUISITION", 1, 2000),
    ]
    mixed = abroad("T3", "TH", "CH", 2500, 3500)
    assert kinds(aef.actions(mixed, "T3", 2026, owed(mixed, "T3", LOAS, {"JCM-TH": [(1, 3000)]}))) == [
        ("TH", "ITMO_TRANSFER", 2500, 3000),
        ("CH", "ITMO_ACQUISITION", 2500, 3000),
        ("TH", "ITMO_FIRST_TRANSFER", 3001, 3500),
        ("CH", "ITMO_ACQUISITION", 3001, 3500),
    ]
    used = rpb.UnitsRetired(retirement_id="R1", jurisdiction="SG", blocks=[block(1, 500)], purpose="NDC",
                            use=rpb.CLAIM_NDC)  # fmt: skip
    [use] = aef.actions(used, "retirement:R1", 2026, [])
    assert (use.party, use.action, use.purpose, use.quantity) == ("SG", spb.ITMO_USE, "NDC", 500)


def test_a_clean_report_has_no_findings_and_each_fault_is_named() -> None:
    first = abroad("T1", "TH", "CH", 1, 3000)
    th = [a for a in aef.actions(first, "T1", 2026, owed(first, "T1", LOAS, {})) if a.party == "TH"]
    assert aef.check("TH", 2026, LOAS, th, {(2024, spb.FIRST_TRANSFERRING): 3000}) == []
    # An adjustment that disagrees with the actions; more first-transferred than authorized.
    assert [f.code for f in aef.check("TH", 2026, LOAS, th, {})] == ["ADJUSTMENT_MISMATCH"]
    greedy = abroad("T9", "TH", "CH", 5001, 7000)
    more = th + [a for a in aef.actions(greedy, "T9", 2026, owed(greedy, "T9", LOAS, {})) if a.party == "TH"]
    ledger: dict[tuple[int, int], int] = {(2024, spb.FIRST_TRANSFERRING): 5000}
    assert [f.code for f in aef.check("TH", 2026, LOAS, more, ledger)] == ["AUTHORIZATION_EXCEEDED"]
    assert [f.code for f in aef.check("TH", 2026, {}, th, {})] == ["FIRST_TRANSFER_UNAUTHORIZED"]
    # An ITMO used twice, and more used than the party ever acquired.
    sg = aef.actions(abroad("T2", "CH", "SG", 1, 100), "T2", 2026, [])
    sg = [a for a in sg if a.party == "SG"]
    for n in (1, 2):
        retired = rpb.UnitsRetired(retirement_id=f"R{n}", jurisdiction="SG", blocks=[block(50, 150)], purpose="CORSIA",
                                  use=rpb.CLAIM_OIMP)  # fmt: skip
        sg += aef.actions(retired, f"retirement:R{n}", 2026, [])
    assert [f.code for f in aef.check("SG", 2026, LOAS, sg, {})] == ["ITMO_USED_TWICE", "HOLDINGS_NEGATIVE"]
    assert aef.holdings(sg) == {("JCM-TH", 2024): 100 - 2 * 101}
