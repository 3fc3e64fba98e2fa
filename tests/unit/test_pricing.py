"""Reading a Price List API answer, and the shipped table the client falls back to."""

import json

from annex_admin.prices import parse_price_list_item
from templates import contract
from annex_cloud.prices import shipped_prices as regional_prices

PRODUCT = {
    "product": {"attributes": {"instanceType": "m7i.large"}},
    "terms": {
        "OnDemand": {
            "ABC.JRTCKXETXF": {
                "priceDimensions": {
                    "ABC.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "pricePerUnit": {"USD": "0.1008000000"}}
                }
            }
        }
    },
}


def test_price_list_item_as_json_text_or_dict():
    assert parse_price_list_item([json.dumps(PRODUCT)]) == 0.1008
    assert parse_price_list_item([PRODUCT]) == 0.1008


def test_zero_or_missing_prices_are_no_price():
    free = json.loads(json.dumps(PRODUCT).replace("0.1008000000", "0.0000000000"))
    assert parse_price_list_item([free]) is None
    assert parse_price_list_item([]) is None
    assert parse_price_list_item([{"terms": {}}]) is None


def test_shipped_table_prices_every_default_type_in_the_main_regions():
    for region in ("us-east-1", "us-east-2", "us-west-2", "eu-west-1"):
        table = regional_prices(region)
        assert all(0 < table[t] < 1 for t in contract.DEFAULT_INSTANCE_TYPES), region
    assert regional_prices("xx-nowhere-1") == {}


# --- the one cost model --------------------------------------------------------------------

from datetime import datetime, timedelta, timezone  # noqa: E402

import pytest  # noqa: E402

from annex_cloud import cost  # noqa: E402

NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


def test_a_type_without_a_price_is_never_free():
    book = cost.PriceBook({"m5.large": 0.096, "bad.zero": 0.0}, "test")
    assert book.require(["m5.large"]) == {"m5.large": 0.096}
    with pytest.raises(cost.NoPrice) as caught:
        book.require(["m5.large", "m7i.large", "bad.zero"])
    assert caught.value.missing == ["bad.zero", "m7i.large"]
    assert book.hourly_or_unbounded("m7i.large") == float("inf")
    assert book.price("bad.zero") is None


def test_the_most_an_annex_can_cost_is_every_instance_on_the_dearest_type():
    assert cost.most_cost(16, {"a": 0.1, "b": 0.2}, 10) == pytest.approx(32.0)


def test_remaining_and_spent_cost():
    assert cost.remaining_cost(0.5, NOW + timedelta(hours=4), NOW) == pytest.approx(2.0)
    assert cost.remaining_cost(0.5, NOW - timedelta(hours=1), NOW) == 0.0
    assert cost.remaining_cost(0.5, None, NOW) == 0.0
    assert cost.spent_so_far(0.5, NOW - timedelta(hours=3), NOW) == pytest.approx(1.5)


def test_a_launch_gets_enough_fleet_rounds_for_its_count():
    """10,000 instances need 10 rounds of 1,000: a fixed round limit would stop short silently."""
    from annex_cloud.broker.requests import MAX_COUNT
    from annex_cloud.fleet import FLEET_CHUNK, max_fleet_rounds

    assert max_fleet_rounds(MAX_COUNT) * FLEET_CHUNK >= MAX_COUNT + 5 * FLEET_CHUNK
    assert max_fleet_rounds(1) >= 2  # room to fall back from a pool that ran dry
