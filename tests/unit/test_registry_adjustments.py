"""A block's corresponding-adjustment status, from the host party's adjustments settlement
applied: none owed without an authorization, applied at the authorization when that is the
first transfer, else pending, partial or applied by the serials adjusted."""

from __future__ import annotations

import pytest

from services.common.errors import DomainError
from services.registry.domain.adjustments import AdjustmentStatus, adjusted, status
from tonne.v1 import registry_pb2 as pb
from tonne.v1 import settlement_pb2 as spb


def test_the_status_of_a_block() -> None:
    first = pb.AT_FIRST_INTERNATIONAL_TRANSFER
    assert status(False, 0, 100, 0) is AdjustmentStatus.NOT_AUTHORIZED
    assert status(True, first, 100, 0) is AdjustmentStatus.PENDING
    assert status(True, first, 100, 40) is AdjustmentStatus.PARTIAL
    assert status(True, first, 100, 100) is AdjustmentStatus.APPLIED
    assert status(True, pb.AT_AUTHORIZATION, 100, 0) is AdjustmentStatus.APPLIED


def test_only_the_host_party_s_adjustment_names_serials_to_keep() -> None:
    serial = pb.SerialBlock(namespace="JCM-TH", start=1, end=3000)
    host = spb.CorrespondingAdjustmentApplied(adjustment_id="A-1", side=spb.FIRST_TRANSFERRING, serials=[serial])
    assert adjusted(host) == [serial]
    acquirer = spb.CorrespondingAdjustmentApplied(adjustment_id="A-2", side=spb.ACQUIRING, serials=[serial])
    assert adjusted(acquirer) == []
    broken = spb.CorrespondingAdjustmentApplied(adjustment_id="A-3", side=spb.FIRST_TRANSFERRING)
    broken.serials.add(namespace="JCM TH", start=5, end=1)
    with pytest.raises(DomainError) as caught:
        adjusted(broken)
    assert (caught.value.code, caught.value.evidence) == (
        "FACT_INVALID",
        ["serials[0] is not a namespace and 1 <= start <= end <= 2^63-1"],
    )
