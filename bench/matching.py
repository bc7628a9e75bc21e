"""The matching engine with its journal beside the PyPI order-book peers, one process.

The peer workload (/work/shared/bench, rule copied here): N operations, 90 % limit orders
(side 50/50, price 10000 +/- 20 ticks, quantity 1-100), 10 % cancels of a random earlier
order id (skipped when it no longer rests: every engine checks first). With N = 200,000
and seed 42 every correct price-time engine makes 140,512 trades; the run fails if one
that reports trades disagrees.

`tonne-engine` is the instrument's `Book` aggregate as the service runs it: each input
a protobuf command (built in the timed loop, as the peers build their order objects),
decided without mutating into protobuf journal events, then folded with `mutate` as the
unit of work does after commit. Every order has its own account, so self-trade
prevention is checked on every match and never fires (the count stays comparable).
Peers: orderly-chaos 0.2.0 and cython-orderbook 0.1.2 (compiled), pyorderbook 0.4.9
(pure Python); install them with `pip install orderly-chaos==0.2.0
cython-orderbook==0.1.2 pyorderbook==0.4.9`. A peer that is not installed is skipped.

Each engine runs `--repeat` times on a fresh book; the best run counts. Then one more
run of ours times each operation on its own, for p50/p99.

    .venv/bin/python bench/matching.py [--ops 200000] [--repeat 3]

Writes bench/results/matching.json: {"<engine>": {"ops_per_s": ..., "trades": ...}}.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import random
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.matching.domain.engine import Book
from services.matching.domain.instruments import Instrument
from tonne.v1 import matching_pb2 as pb

RESULTS = Path(__file__).parent / "results" / "matching.json"
EXPECTED_TRADES = 140_512  # 200,000 operations, seed 42
INSTRUMENT = Instrument(
    instrument_id="BENCH",
    standard="JCM",
    host_party="TH",
    vintage=2024,
    authorized_for="",
    currency="USD",
    tick=1,
    lot=1,
    min_price=1,
    max_price=1_000_000,
    protection_ticks=100,
)

# ("L", id, is_buy, price, quantity) or ("C", id of an earlier operation)
Op = tuple[Any, ...]


def workload(n: int, seed: int = 42) -> list[Op]:
    """The peer comparison's rule, draw for draw (the trade count depends on it)."""
    r = random.Random(seed)
    ops: list[Op] = []
    for i in range(n):
        if i > 100 and r.random() < 0.10:
            ops.append(("C", r.randrange(0, i)))
        else:
            ops.append(("L", i, r.random() < 0.5, 10000 + r.randint(-20, 20), r.randint(1, 100)))
    return ops


Run = tuple[float, int | None]  # seconds, trades (None: the peer does not report them)


def tonne_engine(ops: list[Op], latencies: list[int] | None = None) -> Run:
    book = Book.empty("BENCH")
    submit, cancel, mutate, resting = book.submit, book.cancel, book.mutate, book.orders.get
    submit_order, cancel_order, trade = pb.SubmitOrder, pb.CancelOrder, pb.TradeExecuted
    buy, sell, instrument = pb.BUY, pb.SELL, INSTRUMENT
    clock = time.perf_counter_ns
    trades = 0
    start = time.perf_counter()
    for op in ops:
        began = clock() if latencies is not None else 0
        if op[0] == "L":
            order_id = str(op[1])
            command = submit_order(
                order_id=order_id,
                instrument_id="BENCH",
                broker_id="broker",
                account_id=order_id,
                side=buy if op[2] else sell,
                price=op[3],
                quantity=op[4],
            )
            events = submit(command, instrument)
            mutate(events)
            for event in events:
                if type(event) is trade:
                    trades += 1
        else:
            order_id = str(op[1])
            if resting(order_id) is None:
                continue
            mutate(cancel(cancel_order(order_id=order_id, instrument_id="BENCH", broker_id="broker")))
        if latencies is not None:
            latencies.append(clock() - began)
    return time.perf_counter() - start, trades


def orderly_chaos(ops: list[Op]) -> Run:
    from orderly_chaos import LimitOrderBook, Side

    trades = [0]

    def traded(_: object) -> None:
        trades[0] += 1

    book = LimitOrderBook(on_trade=traded)
    start = time.perf_counter()
    for op in ops:
        if op[0] == "L":
            book.limit(Side.BUY if op[2] else Side.SELL, order_id=op[1] + 1, quantity=op[4], price=op[3])
        elif book.has(op[1] + 1):
            book.cancel(op[1] + 1)
    return time.perf_counter() - start, trades[0]


def cython_orderbook(ops: list[Op]) -> Run:
    from cython_orderbook import Order, OrderBook, OrderSide

    book, ids = OrderBook(), {}
    start = time.perf_counter()
    for op in ops:
        if op[0] == "L":
            order = Order(side=OrderSide.BID if op[2] else OrderSide.ASK, price=Decimal(op[3]), original_quantity=op[4])
            ids[op[1]] = order.order_id
            book.add_limit_order(order)
        elif (order_id := ids.get(op[1])) is not None:
            book.cancel_order(order_id)
    return time.perf_counter() - start, None


def pyorderbook(ops: list[Op]) -> Run:
    logging.disable(logging.CRITICAL)
    from pyorderbook import Book as PyBook
    from pyorderbook import ask, bid

    book, orders, trades = PyBook(), {}, 0
    start = time.perf_counter()
    for op in ops:
        if op[0] == "L":
            order = (bid if op[2] else ask)("CCER", Decimal(op[3]), op[4])
            orders[op[1]] = order
            trades += len(book.match(order).trades)
        elif (order := orders.get(op[1])) is not None and order.id in book.order_map:
            book.cancel(order)
    return time.perf_counter() - start, trades


ENGINES: dict[str, tuple[str | None, Callable[[list[Op]], Run]]] = {
    "tonne-engine": (None, tonne_engine),
    "orderly-chaos": ("orderly_chaos", orderly_chaos),
    "cython-orderbook": ("cython_orderbook", cython_orderbook),
    "pyorderbook": ("pyorderbook", pyorderbook),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ops = workload(args.ops)
    engines = {
        name: runner
        for name, (module, runner) in ENGINES.items()
        if module is None or importlib.util.find_spec(module) is not None
    }
    for name in ENGINES.keys() - engines.keys():
        print(f"{name} is not installed: skipped")
    # Rounds interleave the engines, so a busy moment on a shared machine hurts all alike.
    best: dict[str, float] = {}
    counts: dict[str, set[int | None]] = {name: set() for name in engines}
    for _ in range(args.repeat):
        for name, runner in engines.items():
            gc.collect()
            seconds, trades = runner(ops)
            best[name] = min(seconds, best.get(name, seconds))
            counts[name].add(trades)
    assert all(len(c) == 1 for c in counts.values()), f"runs of one engine disagree on the trades: {counts}"
    trades_of = {name: c.pop() for name, c in counts.items()}
    expected = EXPECTED_TRADES if args.ops == 200_000 else trades_of["tonne-engine"]
    wrong = {name: n for name, n in trades_of.items() if n is not None and n != expected}
    assert not wrong, f"trade counts differ from {expected}: {wrong}"

    latencies: list[int] = []
    gc.collect()
    tonne_engine(ops, latencies)
    latencies.sort()
    p50 = statistics.median(latencies) / 1000
    p99 = latencies[int(len(latencies) * 0.99)] / 1000

    rates = {name: round(args.ops / seconds) for name, seconds in best.items()}
    ours = rates["tonne-engine"]
    print(f"{args.ops:,} operations, best of {args.repeat}; trade counts agree ({expected:,})")
    print(f"{'engine':17s} {'ops/s':>10s} {'trades':>9s} {'ours / it':>10s}")
    for name, rate in rates.items():
        shown = "-" if trades_of[name] is None else f"{trades_of[name]:,}"
        print(f"{name:17s} {rate:>10,} {shown:>9s} {ours / rate:>10.2f}")
    print(f"tonne-engine per operation: p50 {p50:.2f} us, p99 {p99:.2f} us")
    results: dict[str, dict[str, float | int | None]] = {
        name: {"ops_per_s": rate, "trades": trades_of[name]} for name, rate in rates.items()
    }
    results["tonne-engine"] |= {"p50_us": round(p50, 2), "p99_us": round(p99, 2)}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
