"""`status` answers (annex_cloud.status_view): one line per annex, and instances in pages that
neither repeat nor skip an instance, whatever comes and goes between pages."""

from __future__ import annotations

import json

from annex_cloud.status_view import PAGE_ROWS, annex_summaries, instance_page, project_totals


def row(annex: str, n: int, state: str = "running", cost: float | None = 1.0, expiry: str = "2026-12-18T23:59:00Z") -> dict:
    return {"instance_id": f"i-{n:017x}", "annex_name": annex, "project_id": "P", "owner": "u", "state": state,
            "instance_type": "m7i.large", "availability_zone": "us-east-1a", "lifecycle": "on-demand",
            "launch_time": "2026-12-06T10:00:00Z", "expiry": expiry, "hourly_price": 0.1,
            "cost_so_far": cost, "can_still_cost": None if cost is None else 2.0, "token_id": f"jti-{annex}"}


def test_one_summary_per_annex_with_states_lease_end_and_costs():
    rows = [row("b", 1), row("a", 2, expiry="2026-12-19T00:00:00Z"), row("a", 3, state="shutting-down",
            expiry="2027-01-01T00:00:00Z"), row("a", 4, cost=None)]
    a, b = annex_summaries(rows)
    assert (a["annex_name"], b["annex_name"]) == ("a", "b")
    assert a["states"] == {"running": 2, "shutting-down": 1} and a["instance_types"] == {"m7i.large": 3}
    assert a["expiry"] == "2026-12-19T00:00:00Z"  # the latest of its live instances: an ending one is not its lease
    assert (a["cost_so_far"], a["can_still_cost"], a["unpriced"], a["token_id"]) == (2.0, 4.0, 1, "jti-a")
    assert project_totals(rows) == {"live_instances": 3, "cost_so_far": 3.0, "can_still_cost": 6.0, "unpriced": 1}


def test_pages_cover_every_instance_once_even_when_instances_come_and_go():
    rows = [row(f"annex-{n % 3}", n) for n in range(25)]
    throughout = {r["instance_id"] for r in rows}
    seen, after, pages = [], None, 0
    while True:
        page, after = instance_page(rows, after, size=10)
        pages += 1
        seen += [r["instance_id"] for r in page]
        if pages == 1:  # between pages: one instance already shown ends, a new one starts
            rows = [r for r in rows if r["instance_id"] != page[0]["instance_id"]] + [row("annex-0", 99)]
        if after is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) and throughout <= set(seen)


def test_a_full_page_stays_well_under_lambdas_response_limit():
    page, after = instance_page([row(f"annex-{n % 7}", n) for n in range(PAGE_ROWS + 1)], None)
    assert len(page) == PAGE_ROWS and after is not None
    assert len(json.dumps({"ok": True, "result": {"instances": page}})) < 6 * 1024 * 1024 // 2
