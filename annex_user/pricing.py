"""Hourly prices: the AWS Price List API when reachable, else the table shipped with the package."""

from __future__ import annotations

import json
from dataclasses import dataclass

import botocore.config
import botocore.exceptions

from annex_common.aws import AwsClients
from annex_cloud.prices import shipped_prices as regional_prices

# One quick try: a plan must not wait on the Price List API; the shipped table is the fallback.
PRICING_CONFIG = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=3, read_timeout=5)
PRICING_REGION = "us-east-1"  # the Price List API answers from a few regions only
REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
}


@dataclass(frozen=True)
class PriceQuote:
    hourly: dict[str, float]
    source: str
    market: str  # on-demand | spot


def on_demand_prices(clients: AwsClients, region: str, types: list[str]) -> PriceQuote:
    live = _price_list_api(clients, region, types)
    if live is not None and all(t in live for t in types):
        return PriceQuote(live, "AWS Price List API", "on-demand")
    table = regional_prices(region)
    missing = [t for t in types if t not in table]
    if missing:
        # Unknown type in the table: price it at the dearest known type, so caps stay safe.
        ceiling = max(table.values(), default=1.0)
        table.update({t: ceiling for t in missing})
        return PriceQuote(table, f"shipped price table (no price for {', '.join(missing)}: "
                          f"counted at ${ceiling:.4f}/h)", "on-demand")
    return PriceQuote(table, "shipped price table (the Price List API was not reachable)", "on-demand")


def spot_prices(clients: AwsClients, region: str, types: list[str], zones: list[str]) -> PriceQuote:
    """The highest current spot price across the stack's zones, per type (a safe upper bound)."""
    prices: dict[str, float] = {}
    try:
        paginator = clients.ec2.get_paginator("describe_spot_price_history")
        for page in paginator.paginate(
            InstanceTypes=types,
            ProductDescriptions=["Linux/UNIX"],
            StartTime=_now(),
        ):
            for item in page["SpotPriceHistory"]:
                if zones and item.get("AvailabilityZone") not in zones:
                    continue
                price = float(item["SpotPrice"])
                prices[item["InstanceType"]] = max(prices.get(item["InstanceType"], 0.0), price)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        prices = {}
    if all(t in prices for t in types):
        return PriceQuote(prices, "EC2 spot price history", "spot")
    # No spot history: the on-demand price is the most spot can cost.
    fallback = on_demand_prices(clients, region, types)
    return PriceQuote(fallback.hourly, f"{fallback.source}; spot history unavailable, on-demand used as the ceiling", "spot")


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _price_list_api(clients: AwsClients, region: str, types: list[str]) -> dict[str, float] | None:
    location = REGION_NAMES.get(region)
    if not location:
        return None
    try:
        pricing = clients.client("pricing", region=PRICING_REGION, config=PRICING_CONFIG)
        found: dict[str, float] = {}
        for itype in types:
            response = pricing.get_products(
                ServiceCode="AmazonEC2",
                Filters=[
                    {"Type": "TERM_MATCH", "Field": field, "Value": value}
                    for field, value in (
                        ("instanceType", itype),
                        ("location", location),
                        ("operatingSystem", "Linux"),
                        ("tenancy", "Shared"),
                        ("preInstalledSw", "NA"),
                        ("capacitystatus", "Used"),
                    )
                ],
                MaxResults=1,
            )
            price = parse_price_list_item(response.get("PriceList", []))
            if price is not None:
                found[itype] = price
        return found
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, ValueError, KeyError):
        return None
    except Exception:  # the emulator answers unknown services with HTML; any surprise means "not reachable"
        return None


def parse_price_list_item(items: list) -> float | None:
    for raw in items:
        product = json.loads(raw) if isinstance(raw, str) else raw
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    return float(usd)
    return None
