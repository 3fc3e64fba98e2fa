"""The one cost model: the broker's plans and caps, the enforcer's spend cap, the client's figures.

Every instance is priced at its type's on-demand hourly price. Spot is counted at that price too,
because the broker sets it as the fleet's maximum spot price: "the most it can cost" is a bound,
not an estimate. A type with no known price is never free: a launch of it is refused, and a
running one counts as unbounded under a spend cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from annex_cloud.instances import AnnexInstance

HOUR = 3600.0


class NoPrice(Exception):
    """No price is known for an instance type: nothing may be launched on a guess."""

    def __init__(self, missing: list[str], source: str) -> None:
        super().__init__(f"no hourly price is known for {', '.join(missing)} (prices: {source})")
        self.missing = missing
        self.source = source


@dataclass(frozen=True)
class PriceBook:
    """Hourly on-demand USD per instance type, and where the figures came from.

    ``source`` names where, short enough to stand beside every figure a scientist reads; ``note``
    says why, when it matters to the administrator (the Price List API was not reachable), and
    is shown where prices are stored and checked, once.
    """

    hourly: Mapping[str, float] = field(default_factory=dict)
    source: str = "none"
    fetched_at: str | None = None
    note: str | None = None

    @property
    def explained(self) -> str:
        """The source with its note, for the administrator."""
        return f"{self.source} ({self.note})" if self.note else self.source

    def price(self, instance_type: str) -> float | None:
        value = self.hourly.get(instance_type)
        if value is None or not math.isfinite(value) or value <= 0:
            return None
        return float(value)

    def require(self, instance_types: Iterable[str]) -> dict[str, float]:
        """Prices of every type, or NoPrice naming the ones missing."""
        found = {t: self.price(t) for t in instance_types}
        missing = sorted(t for t, p in found.items() if p is None)
        if missing:
            raise NoPrice(missing, self.source)
        return {t: p for t, p in found.items() if p is not None}

    def hourly_or_unbounded(self, instance_type: str) -> float:
        price = self.price(instance_type)
        return math.inf if price is None else price


def hours_between(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0) / HOUR


def remaining_cost(hourly: float, expiry: datetime | None, now: datetime) -> float:
    """What one instance can still cost: hourly price x hours left on its lease (0 once ended)."""
    if expiry is None or expiry <= now:
        return 0.0
    return hourly * hours_between(now, expiry)


def commitment(instance: AnnexInstance, book: PriceBook, now: datetime) -> float:
    """What one live instance can still cost (unbounded when its type has no price)."""
    return remaining_cost(book.hourly_or_unbounded(instance.instance_type), instance.expiry, now)


def committed_spend(instances: Iterable[AnnexInstance], book: PriceBook, now: datetime) -> float:
    """What a project has committed: the most its live instances can still cost, summed. The
    broker admits against it and the enforcer ends the newest while it is over the cap."""
    return sum(commitment(i, book, now) for i in instances)


def most_cost(count: int, hourly_by_type: Mapping[str, float], hours: float) -> float:
    """The most an annex of ``count`` instances can cost: all of them on the dearest allowed type."""
    return count * max(hourly_by_type.values()) * hours


def spent_so_far(hourly: float, launched: datetime, until: datetime) -> float:
    """Instance hours so far times the price (the bound, for spot)."""
    return hourly * hours_between(launched, until)
