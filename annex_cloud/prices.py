"""The on-demand price table shipped with the package (prices.json): only a fallback.

``annex-admin setup`` fetches the region's prices from the Price List API and stores them in the
stack's registry; this table is used when that is not possible, and only for the regions it has.
"""

from __future__ import annotations

import json
from importlib import resources


def shipped_prices(region: str) -> dict[str, float]:
    """Hourly on-demand USD per instance type in ``region``; empty for a region not in the table."""
    table = json.loads(resources.files(__package__).joinpath("prices.json").read_text())
    return {itype: float(usd) for itype, usd in table.get(region, {}).items()}
