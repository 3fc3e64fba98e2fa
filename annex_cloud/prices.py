"""The on-demand price table shipped with the package (prices.json): only a fallback.

``annex-admin setup`` fetches the region's prices from the Price List API and stores them in the
stack's registry; this table is used when that is not possible, and only for the regions it has.
"""

from __future__ import annotations

import json
from importlib import resources

from annex_cloud.cost import PriceBook

SHIPPED_SOURCE = "the table shipped with condor-annex"


def shipped_prices(region: str) -> dict[str, float]:
    """Hourly on-demand USD per instance type in ``region``; empty for a region not in the table."""
    table = json.loads(resources.files(__package__).joinpath("prices.json").read_text())
    return {itype: float(usd) for itype, usd in table.get(region, {}).items()}


def stack_price_book(stored: PriceBook | None, region: str) -> PriceBook:
    """The prices setup stored with the stack (``stored``); the shipped table only when none were."""
    if stored is not None and stored.hourly:
        return stored
    return PriceBook(shipped_prices(region), SHIPPED_SOURCE)
