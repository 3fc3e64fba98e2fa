"""The region's hourly prices, fetched at setup from the AWS Price List API and stored with the stack.

Refreshed at most daily. A type the API does not price is priced from the table shipped with
condor-annex, for the regions it has. When the API cannot be reached, prices it gave for every type
at an earlier setup are kept; otherwise the table is stored. Nothing is ever counted as free: the
broker refuses to launch a type it has no price for, so setup refuses, before it changes anything,
to offer a type no source prices (the prices are read, and fetched when due, in its plan; they are
stored once the stack is applied).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import botocore.config
import botocore.exceptions

from annex_cloud.cost import PriceBook
from annex_cloud.expiry import format_expiry_tag, parse_expiry_tag
from annex_cloud.prices import SHIPPED_SOURCE, shipped_prices
from annex_cloud.registry import Registry
from annex_common.aws import AwsClients
from annex_common.errors import BadInput

# The Price List API answers from a few regions only; one quick try per type.
PRICING_REGION = "us-east-1"
PRICING_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=3, read_timeout=10
)
REFRESH_AFTER = timedelta(days=1)
PRICE_LIST_SOURCE = "AWS Price List API"


def price_filters(region: str, instance_type: str) -> list[dict[str, str]]:
    return [
        {"Type": "TERM_MATCH", "Field": field, "Value": value}
        for field, value in (
            ("instanceType", instance_type),
            ("regionCode", region),
            ("operatingSystem", "Linux"),
            ("tenancy", "Shared"),
            ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"),
        )
    ]


def parse_price_list_item(items: list[Any]) -> float | None:
    """The on-demand USD hourly price in a GetProducts answer, or None."""
    for raw in items:
        product = json.loads(raw) if isinstance(raw, str) else raw
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    return float(usd)
    return None


@dataclass(frozen=True)
class Fetched:
    """What the API gave: prices for some of the types asked, and whether it answered at all."""

    prices: dict[str, float] = field(default_factory=dict)
    reached: bool = False


def fetch_price_list(clients: AwsClients, region: str, types: list[str]) -> Fetched:
    """Prices the API gives for ``types`` (possibly not all); it stops at the first failure,
    keeping what it had."""
    pricing = clients.client("pricing", region=PRICING_REGION, config=PRICING_CONFIG)
    fetched = Fetched()
    for itype in types:
        try:
            response = pricing.get_products(
                ServiceCode="AmazonEC2", Filters=price_filters(region, itype), MaxResults=10
            )
            price = parse_price_list_item(response.get("PriceList", []))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, ValueError, KeyError):
            return fetched
        fetched = Fetched(fetched.prices | ({itype: price} if price is not None else {}), reached=True)
    return fetched


def is_fresh(book: PriceBook | None, types: list[str], now: datetime) -> bool:
    if book is None or book.source != PRICE_LIST_SOURCE or not book.fetched_at:
        return False
    fetched = parse_expiry_tag(book.fetched_at)
    if fetched is None:
        return False
    return now - fetched < REFRESH_AFTER and all(book.price(t) is not None for t in types)


@dataclass(frozen=True)
class PricePlan:
    """The prices setup will keep with the stack: ``book``, and whether it must be stored (False:
    the stored book stays as it is)."""

    book: PriceBook
    store: bool


def plan_prices(clients: AwsClients, stored: PriceBook | None, region: str, types: list[str], now: datetime) -> PricePlan:
    """The region's prices for ``types``: the stored ones while fresh, else fetched (a read only;
    nothing is stored here, so setup can refuse before it changes anything)."""
    if is_fresh(stored, types, now):
        assert stored is not None
        return PricePlan(stored, store=False)
    fetched = fetch_price_list(clients, region, types)
    outage = not fetched.reached
    if outage and stored is not None and stored.source == PRICE_LIST_SOURCE and not missing_prices(stored, types):
        # The API cannot be reached now, but priced every type before: those prices are better than
        # the table. They stay stored with their own date, so the next setup asks the API again.
        return PricePlan(stored, store=False)
    return PricePlan(combine_prices(fetched, shipped_prices(region), types, format_expiry_tag(now)), store=True)


def store_price_plan(registry: Registry, plan: PricePlan) -> PriceBook:
    if plan.store:
        registry.put_prices(plan.book)
    return plan.book


def unpriced_types(plan: PricePlan, region: str, types: list[str]) -> BadInput | None:
    """Why setup must not offer ``types`` when a source cannot price some of them (the broker
    launches only what it can price, so the stack would launch nothing of them); None when all
    are priced."""
    missing = missing_prices(plan.book, types)
    if not missing:
        return None
    shipped = shipped_prices(region)
    priced = sorted(t for t in {*plan.book.hourly, *shipped} if t not in missing
                    and (plan.book.price(t) is not None or t in shipped))
    kept = [t for t in types if t not in missing]
    them = "it" if len(missing) == 1 else "them"
    if kept:
        next_step = f"Leave {them} out (--instance-types {','.join(kept)}), or add priced types: {', '.join(priced)}."
    elif priced:
        next_step = f"Pass --instance-types with priced types: {', '.join(priced)}."
    else:
        next_step = f"No source prices any instance type in {region} now: run setup again once the Price List API answers."
    return BadInput(
        f"no price is known for {', '.join(missing)} in {region}",
        f"the prices come from {plan.book.explained}, which has none for {them}, and the broker launches only "
        f"instance types it can price: the stack would launch nothing of {them}; nothing was changed",
        next_step,
    )

def combine_prices(fetched: Fetched, shipped: dict[str, float], types: list[str], stamp: str) -> PriceBook:
    """The API's prices, and the shipped table's for the types the API did not price (the whole
    table, as before, when the API priced none).

    Only a book wholly from the API carries ``PRICE_LIST_SOURCE`` (the one ``is_fresh`` accepts),
    so a partial answer is completed from the API at the next setup.
    """
    if fetched.prices:
        filled = {t: shipped[t] for t in types if t not in fetched.prices and t in shipped}
        source = PRICE_LIST_SOURCE
        if filled:
            source += f"; {SHIPPED_SOURCE} for {', '.join(sorted(filled))}"
        return PriceBook({**filled, **fetched.prices}, source, stamp)
    why = "had no price for these types" if fetched.reached else "was not reachable"
    return PriceBook(dict(shipped), SHIPPED_SOURCE, stamp, note=f"the Price List API {why}")


def missing_prices(book: PriceBook, types: list[str]) -> list[str]:
    return [t for t in types if book.price(t) is None]
