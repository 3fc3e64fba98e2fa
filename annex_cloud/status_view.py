"""What `status` answers, from the broker's rows of a project's instances: one line per annex, the
project's totals against its caps, and the instances themselves in pages.

The answer is one Lambda response (at most 6 MB), so it never holds every instance of a large
project: the default is one summary per annex, and the instances come in pages of
``PAGE_ROWS`` (about 450 bytes a row), ordered by annex and instance id and continued after the
last key shown, so a page never repeats or skips an instance that was there throughout.
"""

from __future__ import annotations

from typing import Any, Iterable

from annex_cloud.expiry import format_expiry_tag, parse_expiry_tag
from annex_cloud.tags import LIVE_STATES

PAGE_ROWS = 5000
_KEY_SEPARATOR = "\t"

Row = dict[str, Any]


def project_totals(rows: Iterable[Row]) -> dict[str, Any]:
    """Live instances, cost so far and the most they can still cost, over every row of the project."""
    rows = list(rows)
    return {
        "live_instances": sum(1 for r in rows if r["state"] in LIVE_STATES),
        "cost_so_far": round(sum(r["cost_so_far"] or 0.0 for r in rows), 6),
        "can_still_cost": round(sum(r["can_still_cost"] or 0.0 for r in rows), 6),
        "unpriced": sum(1 for r in rows if r["cost_so_far"] is None),
    }


def annex_summaries(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """One line per annex: instances by state and type, its lease end (the latest of its live
    instances), cost so far, the most it can still cost, and its pool token id."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        annex = found.setdefault(row["annex_name"], {
            "annex_name": row["annex_name"], "states": {}, "instance_types": {}, "expiry": None,
            "cost_so_far": 0.0, "can_still_cost": 0.0, "unpriced": 0, "token_id": None,
        })
        annex["states"][row["state"]] = annex["states"].get(row["state"], 0) + 1
        annex["instance_types"][row["instance_type"]] = annex["instance_types"].get(row["instance_type"], 0) + 1
        ends = parse_expiry_tag(row.get("expiry"))
        latest = parse_expiry_tag(annex["expiry"])
        if ends and row["state"] in LIVE_STATES and (latest is None or ends > latest):
            annex["expiry"] = format_expiry_tag(ends)
        annex["unpriced"] += row["cost_so_far"] is None
        annex["cost_so_far"] += row["cost_so_far"] or 0.0
        annex["can_still_cost"] += row["can_still_cost"] or 0.0
        annex["token_id"] = annex["token_id"] or row.get("token_id")
    for annex in found.values():
        annex["cost_so_far"] = round(annex["cost_so_far"], 6)
        annex["can_still_cost"] = round(annex["can_still_cost"], 6)
    return sorted(found.values(), key=lambda a: a["annex_name"])


def _key(row: Row) -> str:
    return f"{row['annex_name']}{_KEY_SEPARATOR}{row['instance_id']}"


def instance_page(rows: Iterable[Row], after: str | None, size: int = PAGE_ROWS) -> tuple[list[Row], str | None]:
    """The rows after ``after`` (the last key of the previous page; None: from the start), at most
    ``size``, and the key to ask for the next page (None when this page ends the list)."""
    ordered = sorted(rows, key=_key)
    if after:
        ordered = [r for r in ordered if _key(r) > after]
    page = ordered[:size]
    return page, (_key(page[-1]) if len(ordered) > size else None)
