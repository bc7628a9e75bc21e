"""The old start-up path of the registry: fold a whole history into the in-memory Ledger.

Run with PYTHONPATH pointing at a checkout of the commit before the state change (see
bench/recovery.py); prints the seconds the fold took. The history is the one
bench/recovery.py stores for the new path.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from services.registry.domain.ledger import Ledger  # the old, stateful ledger
from tonne.v1 import registry_pb2 as pb


def main(n: int) -> None:
    ledger: Any = Ledger()
    history: list[Any] = []

    def run(command: Any) -> None:
        for event in ledger.decide(command):
            ledger.apply(event)
            history.append(event)

    run(pb.OpenAccount(account_id="TH-GOV", holder="g", jurisdiction="TH", type=pb.GOVERNMENT))
    for b in range(8):
        run(pb.OpenAccount(account_id=f"CH-{b}", holder="b", jurisdiction="CH", type=pb.HOLDING))
    attributes = pb.UnitAttributes(standard=pb.JCM, host_party="TH", project_id="TH-FS-1", vintage=2024)
    block = pb.SerialBlock(namespace="JCM-TH", start=1, end=10**12, attributes=attributes)
    run(pb.RecordIssuance(issuance_id="I-1", account_id="TH-GOV", block=block))
    i = 0
    while len(history) < n:
        i += 1
        run(pb.ReserveUnits(reservation_id=f"r{i}", account_id="TH-GOV", quantity=3, selector=pb.UnitSelector()))
        run(pb.TransferUnits(transfer_id=f"t{i}", reservation_id=f"r{i}", to_account_id=f"CH-{i % 8}", quantity=2))
        run(pb.ReleaseReservation(reservation_id=f"r{i}", quantity=1))
    began = time.perf_counter()
    fresh: Any = Ledger()
    for event in history[:n]:
        fresh.apply(event)
    print(time.perf_counter() - began)


if __name__ == "__main__":
    main(int(sys.argv[1]))
