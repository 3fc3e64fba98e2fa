"""The on-demand price table shipped with the package (templates/prices.json).

One loader for everyone: the stack bakes a region's table into the enforcer, and the scientist's
client falls back to it when the Price List API cannot be reached.
"""

from __future__ import annotations

import json
from importlib import resources


def regional_prices(region: str) -> dict[str, float]:
    """Hourly on-demand USD per instance type in ``region``; empty for a region not in the table."""
    table = json.loads(resources.files("templates").joinpath("prices.json").read_text())
    return {itype: float(usd) for itype, usd in table.get(region, {}).items()}
