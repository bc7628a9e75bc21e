"""Matching throughput: the STACK-NOTES workload on one book, two layers side by side.

200k operations: 90 % limit orders at 10000 ± 20 ticks, quantity 1-100, 10 % cancels of
a resting order. `book` drives OrderBook.submit directly; `engine` runs the instrument's
Book aggregate as the service does (decide without mutating, emit protobuf journal
events, then fold them with `mutate`, as the unit of work does after commit).

    .venv/bin/python bench/engine_throughput.py [--ops N]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from services.matching.domain.book import BUY, SELL, Order, OrderBook
from services.matching.domain.engine import Book
from services.matching.domain.instruments import Instrument
from tonne.v1 import matching_pb2 as pb

INSTRUMENT = Instrument("BENCH", "JCM", "TH", 2024, "", "USD", 1, 1, 1, 1_000_000)


def workload(ops: int, seed: int = 7) -> list[tuple[str, int, int, int]]:
    rng = random.Random(seed)
    return [
        ("cancel", 0, 0, 0)
        if rng.random() < 0.1
        else ("limit", rng.choice((BUY, SELL)), 10_000 + rng.randint(-20, 20), rng.randint(1, 100))
        for _ in range(ops)
    ]


def run_book(flow: list[tuple[str, int, int, int]]) -> tuple[float, int]:
    book, trades = OrderBook(), 0
    resting: list[str] = []
    start = time.perf_counter()
    for n, (kind, side, price, quantity) in enumerate(flow):
        if kind == "cancel":
            while resting and book.cancel(resting.pop()) is None:
                pass
            continue
        fills = book.submit(Order(str(n), side, price, quantity))
        trades += len(fills)
        if book.get(str(n)):
            resting.append(str(n))
    return time.perf_counter() - start, trades


def run_engine(flow: list[tuple[str, int, int, int]]) -> tuple[float, int]:
    engine, trades = Book.empty("BENCH"), 0
    resting: list[str] = []
    start = time.perf_counter()
    for n, (kind, side, price, quantity) in enumerate(flow):
        if kind == "cancel":
            while resting and engine.orders.get(resting[-1]) is None:
                resting.pop()
            if not resting:
                continue
            events = engine.cancel(pb.CancelOrder(order_id=resting.pop(), instrument_id="BENCH", broker_id="b"))
        else:
            order = pb.SubmitOrder(
                order_id=str(n),
                instrument_id="BENCH",
                broker_id="b",
                account_id="a",
                side=pb.Side.ValueType(side),
                price=price,
                quantity=quantity,
            )
            events = engine.submit(order, INSTRUMENT)
            resting.append(str(n))
        engine.mutate(events)
        trades += sum(isinstance(event, pb.TradeExecuted) for event in events)
    return time.perf_counter() - start, trades


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=200_000)
    args = parser.parse_args()
    flow = workload(args.ops)
    results = {}
    for name, runner in (("book", run_book), ("engine", run_engine)):
        seconds, trades = runner(flow)
        results[name] = {
            "ops": args.ops,
            "seconds": round(seconds, 3),
            "ops_per_s": round(args.ops / seconds),
            "trades": trades,
        }
        print(f"{name:7s} {args.ops / seconds:>10,.0f} ops/s  {trades:>7,} trades  {seconds:.2f} s")
    # Both layers run the same workload, so they must agree on what traded.
    assert results["book"]["trades"] == results["engine"]["trades"], "book and engine disagree on the trades"
    results["engine_over_book"] = round(results["engine"]["ops_per_s"] / results["book"]["ops_per_s"], 3)
    print(f"engine/book throughput ratio: {results['engine_over_book']}")
    out = Path(__file__).parent / "results" / "engine_throughput.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
