"""Reading a Price List API answer, and the shipped table the client falls back to."""

import json

from annex_user.pricing import parse_price_list_item
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
