"""How setup combines the Price List API's answer with the shipped table (annex_admin.prices)."""

from __future__ import annotations

from annex_admin.prices import PRICE_LIST_SOURCE, Fetched, combine_prices

TYPES = ["m7i.large", "m6i.large", "m5.large"]
SHIPPED = {"m7i.large": 0.1008, "m6i.large": 0.096, "m5.large": 0.096, "c5.large": 0.085}


def test_a_full_answer_is_the_api_s_alone():
    book = combine_prices(Fetched({t: 0.2 for t in TYPES}, True), SHIPPED, TYPES, "2026-12-01T00:00:00Z")
    assert book.source == PRICE_LIST_SOURCE and dict(book.hourly) == {t: 0.2 for t in TYPES}


def test_a_partial_answer_keeps_what_it_got_and_completes_from_the_shipped_table():
    book = combine_prices(Fetched({"m7i.large": 0.2}, True), SHIPPED, TYPES, "2026-12-01T00:00:00Z")
    assert dict(book.hourly) == {"m7i.large": 0.2, "m6i.large": 0.096, "m5.large": 0.096}
    assert book.source == f"{PRICE_LIST_SOURCE}; the table shipped with condor-annex for m5.large, m6i.large"

    alone = combine_prices(Fetched({"m7i.large": 0.2}, True), {}, TYPES, "2026-12-01T00:00:00Z")
    assert dict(alone.hourly) == {"m7i.large": 0.2} and alone.source == PRICE_LIST_SOURCE


def test_no_price_from_the_api_stores_the_whole_shipped_table_and_says_why():
    empty = combine_prices(Fetched({}, True), SHIPPED, TYPES, "2026-12-01T00:00:00Z")
    assert dict(empty.hourly) == SHIPPED
    assert (empty.source, empty.note) == ("the table shipped with condor-annex", "the Price List API had no price for these types")
    down = combine_prices(Fetched({}, False), SHIPPED, TYPES, "2026-12-01T00:00:00Z")
    assert (down.source, down.note) == ("the table shipped with condor-annex", "the Price List API was not reachable")
