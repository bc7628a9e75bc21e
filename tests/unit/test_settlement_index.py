"""The first-transferred index: disjoint maximal runs per namespace, looked up by the
predecessor plus the runs starting inside a block (what the SQL in projections.py does on
its (namespace, start) btree). Adjustments computed from only those overlapping runs equal
the old computation, which subtracted every interval ever adjusted."""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.serials import Interval, absorb
from services.settlement.domain.adjustments import owed
from tests.unit.factories import loa
from tonne.v1 import registry_pb2 as rpb
from tonne.v1 import settlement_pb2 as spb


def legacy_subtract(interval: Interval, taken: list[Interval]) -> list[Interval]:
    """The subtraction as it was: every taken interval against every remaining piece."""
    pieces = [interval]
    for t_start, t_end in taken:
        next_pieces = []
        for start, end in pieces:
            if t_end < start or end < t_start:
                next_pieces.append((start, end))
                continue
            if start < t_start:
                next_pieces.append((start, t_start - 1))
            if t_end < end:
                next_pieces.append((t_end + 1, end))
        pieces = next_pieces
    return pieces


def legacy_adjustments(
    trade_id: str,
    transfer: rpb.UnitsTransferred,
    authorizations: dict[str, rpb.RecordAuthorization],
    first_transferred: dict[str, list[Interval]],
) -> list[spb.CorrespondingAdjustmentApplied]:
    """The first international transfer's adjustments as they were computed, over every
    interval ever adjusted."""
    if transfer.from_jurisdiction == transfer.to_jurisdiction:
        return []
    owed: dict[tuple[str, int, str], int] = defaultdict(int)
    for block in transfer.blocks:
        attributes = block.attributes
        authorization = authorizations.get(attributes.authorization_id)
        if authorization is None or authorization.first_transfer != rpb.AT_FIRST_INTERNATIONAL_TRANSFER:
            continue
        fresh = legacy_subtract((block.start, block.end), first_transferred.get(block.namespace, []))
        quantity = sum(end - start + 1 for start, end in fresh)
        if quantity:
            owed[(attributes.host_party, attributes.vintage, authorization.authorization_id)] += quantity
    return [
        spb.CorrespondingAdjustmentApplied(
            adjustment_id=f"{trade_id}:{party}:{vintage}:{authorization_id}",
            trade_id=trade_id,
            party=party,
            side=spb.FIRST_TRANSFERRING,
            vintage=vintage,
            quantity=quantity,
            authorization_id=authorization_id,
        )
        for (party, vintage, authorization_id), quantity in sorted(owed.items())
    ]


class Index:
    """The `first_transferred` table of one namespace: runs sorted by start."""

    def __init__(self) -> None:
        self.runs: list[Interval] = []

    def overlapping(self, interval: Interval) -> list[Interval]:
        start, end = interval
        i = bisect_right(self.runs, (start, float("inf")))  # first run starting after `start`
        predecessor = self.runs[i - 1 : i]
        inside = []
        while i < len(self.runs) and self.runs[i][0] <= end:
            inside.append(self.runs[i])
            i += 1
        return [run for run in predecessor + inside if run[1] >= start]

    def mark(self, interval: Interval) -> None:
        touching = self.overlapping((interval[0] - 1, interval[1] + 1))
        merged = absorb(interval, touching)
        self.runs = sorted([run for run in self.runs if run not in touching] + [merged])


LOAS = {
    "LOA-TH-1": loa("LOA-TH-1"),
    "LOA-TH-2": loa("LOA-TH-2"),
    "LOA-AT-ISSUANCE": rpb.RecordAuthorization(authorization_id="LOA-AT-ISSUANCE", first_transfer=rpb.AT_ISSUANCE),
}

blocks = st.lists(
    st.builds(
        lambda namespace, start, size, vintage, authorization_id: rpb.SerialBlock(
            namespace=namespace,
            start=start,
            end=start + size,
            attributes=rpb.UnitAttributes(host_party="TH", vintage=vintage, authorization_id=authorization_id),
        ),
        st.sampled_from(["JCM-TH", "VCS"]),
        st.integers(0, 300),
        st.integers(0, 60),
        st.sampled_from([2023, 2024]),
        st.sampled_from(["", "LOA-TH-1", "LOA-TH-2", "LOA-AT-ISSUANCE", "LOA-UNKNOWN"]),
    ),
    min_size=1,
    max_size=4,
)
transfers = st.lists(
    st.builds(
        lambda blocks, to: rpb.UnitsTransferred(
            transfer_id="T", from_jurisdiction="TH", to_jurisdiction=to, blocks=blocks
        ),
        blocks,
        st.sampled_from(["CH", "CH", "TH"]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(transfers)
def test_adjustments_from_the_index_equal_the_old_subtraction_over_all_intervals(
    history: list[rpb.UnitsTransferred],
) -> None:
    everything: dict[str, list[Interval]] = defaultdict(list)  # the old in-memory list
    index: dict[str, Index] = defaultdict(Index)
    for n, transfer in enumerate(history):
        trade_id = f"T{n}"
        nearby: dict[str, list[Interval]] = defaultdict(list)
        for block in transfer.blocks:
            nearby[block.namespace] += index[block.namespace].overlapping((block.start, block.end))
        got = owed(transfer, trade_id, LOAS, nearby)
        assert all(isinstance(g, spb.CorrespondingAdjustmentApplied) for g in got)
        totals = [
            spb.CorrespondingAdjustmentApplied(
                adjustment_id=g.adjustment_id, trade_id=g.trade_id, party=g.party, side=g.side,
                vintage=g.vintage, quantity=g.quantity, authorization_id=g.authorization_id,
            )
            for g in got
            if isinstance(g, spb.CorrespondingAdjustmentApplied)
        ]  # fmt: skip
        assert totals == legacy_adjustments(trade_id, transfer, LOAS, everything)
        # Then its adjustments are recorded: the old list grows, the index absorbs them.
        for adjustment in got:
            assert isinstance(adjustment, spb.CorrespondingAdjustmentApplied)
            assert adjustment.quantity == sum(s.end - s.start + 1 for s in adjustment.serials)
            for serial in adjustment.serials:
                everything[serial.namespace].append((serial.start, serial.end))
                index[serial.namespace].mark((serial.start, serial.end))
    for namespace, runs in everything.items():
        covered = {x for start, end in runs for x in range(start, end + 1)}
        indexed = index[namespace].runs
        assert {x for start, end in indexed for x in range(start, end + 1)} == covered
        # Disjoint and maximal: each run ends at least two serials before the next starts.
        assert all(a_end + 1 < b_start for (_, a_end), (b_start, _) in pairwise(indexed))
