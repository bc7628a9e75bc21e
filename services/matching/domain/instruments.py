"""Instruments: standardized contracts selecting blocks by attributes, and order checks."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import DomainError
from services.common.inputs import INT64_MAX
from tonne.v1 import matching_pb2, registry_pb2

DEFAULT_FILE = Path(__file__).parent.parent / "instruments.toml"


@dataclass(frozen=True)
class Instrument:
    instrument_id: str
    standard: str
    host_party: str
    vintage: int
    authorized_for: str  # "" when no Article 6.2 authorization is required
    currency: str
    tick: int
    lot: int
    min_price: int
    max_price: int
    # A market order is a limit this many ticks beyond the best opposite price.
    protection_ticks: int

    def selector(self) -> registry_pb2.UnitSelector:
        return registry_pb2.UnitSelector(
            standard=registry_pb2.Standard.Value(self.standard),
            host_party=self.host_party,
            vintage=self.vintage,
            authorized_for=registry_pb2.AuthorizedUse.Value(self.authorized_for)
            if self.authorized_for
            else registry_pb2.AUTHORIZED_USE_UNSPECIFIED,
        )

    def check_side(self, side: int) -> None:
        if side not in (matching_pb2.BUY, matching_pb2.SELL):
            raise DomainError("ORDER_SIDE_INVALID", "side must be BUY or SELL")

    def protected(self, side: int, best: int) -> int:
        """A market order's limit: `protection_ticks` beyond the best opposite price,
        kept inside the band (every resting price is)."""
        reach = self.protection_ticks * self.tick
        return min(best + reach, self.max_price) if side == matching_pb2.BUY else max(best - reach, self.min_price)

    def check(self, side: int, price: int, quantity: int) -> None:
        """Refuse an order the instrument does not allow (validate before anything moves)."""
        self.check_side(side)
        # Settlement moves price * quantity in a bigint: refuse what cannot be paid.
        if quantity > INT64_MAX or abs(price) * quantity > INT64_MAX:
            raise DomainError("ORDER_NOTIONAL_TOO_LARGE", f"price * quantity must not exceed {INT64_MAX}")
        if quantity <= 0 or quantity % self.lot:
            raise DomainError("ORDER_QUANTITY_INVALID", f"quantity must be a positive multiple of {self.lot}")
        if price % self.tick:
            raise DomainError("ORDER_PRICE_OFF_TICK", f"price must be a multiple of {self.tick}")
        if not self.min_price <= price <= self.max_price:
            raise DomainError("ORDER_PRICE_OUT_OF_BAND", f"price must lie in [{self.min_price}, {self.max_price}]")


def load(path: Path = DEFAULT_FILE) -> dict[str, Instrument]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    return {key: Instrument(instrument_id=key, **value) for key, value in data["instrument"].items()}
