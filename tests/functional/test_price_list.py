"""The emulator's Price List API (annex_sandbox/server.py) and setup's prices over it.

The suite's emulator prices ap-southeast-2 only (tests/emulator.py: SUITE_PRICE_LIST), a region
the shipped table lacks: prices there can only have come from the API. us-east-1 is in the shipped
table but not in the catalogue, and sa-east-1 is in neither.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Iterator

import boto3
import botocore.exceptions
import pytest

from annex_admin.prices import (
    PRICE_LIST_SOURCE, missing_prices, parse_price_list_item, plan_prices, price_filters, store_price_plan,
)
from annex_cloud.prices import shipped_prices
from annex_cloud.registry import Registry
from tests import emulator as emu

SYDNEY = emu.PRICED_REGION
TYPES = ["m7i.large", "m6i.large", "m5.large"]
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def registry(clients) -> Registry:
    db = clients.client("dynamodb")
    db.create_table(
        TableName="annex-registry",
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"} for key in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return Registry(db, "annex-registry")


def get_products_answered(aws: emu.Emulator) -> int:
    """GetProducts requests the emulator's Price List API has answered so far (its log lines)."""
    return aws.log_path.read_text(errors="replace").count("price list GetProducts:")


# -- the API itself, through boto3 -------------------------------------------------------------

def test_get_products_answers_a_matching_filter_with_the_product_and_others_with_nothing(aws):
    pricing = boto3.client("pricing", region_name="us-east-1")

    answer = pricing.get_products(ServiceCode="AmazonEC2", Filters=price_filters(SYDNEY, "m7i.large"), MaxResults=10)
    assert answer["FormatVersion"] == "aws_v1" and len(answer["PriceList"]) == 1 and "NextToken" not in answer
    product = json.loads(answer["PriceList"][0])
    assert product["product"]["attributes"]["instanceType"] == "m7i.large"
    assert parse_price_list_item(answer["PriceList"]) == emu.SUITE_PRICE_LIST[SYDNEY]["m7i.large"]

    for region, itype in (("us-east-1", "m7i.large"), (SYDNEY, "zz9.huge")):
        assert pricing.get_products(ServiceCode="AmazonEC2", Filters=price_filters(region, itype))["PriceList"] == []


def test_the_paginator_walks_every_product_a_page_at_a_time(aws):
    pricing = boto3.client("pricing", region_name="us-east-1")
    pages = list(pricing.get_paginator("get_products").paginate(
        ServiceCode="AmazonEC2", PaginationConfig={"PageSize": 1}))
    types = sorted(json.loads(item)["product"]["attributes"]["instanceType"] for p in pages for item in p["PriceList"])
    assert types == sorted(TYPES) and len(pages) == 3


def test_describe_services_and_an_operation_the_emulator_lacks(aws):
    pricing = boto3.client("pricing", region_name="us-east-1")
    [service] = pricing.describe_services(ServiceCode="AmazonEC2")["Services"]
    assert "instanceType" in service["AttributeNames"]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        pricing.get_attribute_values(ServiceCode="AmazonEC2", AttributeName="instanceType")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


def test_iam_enforcement_judges_pricing_get_products(aws, clients):
    iam = clients.iam
    keys = {}
    for user, action in (("pricer", "pricing:GetProducts"), ("other", "ec2:DescribeInstances")):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
    aws.enforce_iam(True)

    def pricing(user):
        key_id, secret = keys[user]
        return boto3.client("pricing", region_name="us-east-1", aws_access_key_id=key_id, aws_secret_access_key=secret)

    assert len(pricing("pricer").get_products(ServiceCode="AmazonEC2")["PriceList"]) == 3
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        pricing("other").get_products(ServiceCode="AmazonEC2")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "pricing:GetProducts" in caught.value.response["Error"]["Message"]


# -- setup's prices (annex_admin.prices: planned, then stored) -------------------------------------


def refresh_prices(clients, registry: Registry, region: str, types: list[str], now: datetime):
    """What setup does with prices: plan them from what is stored, then store the plan."""
    return store_price_plan(registry, plan_prices(clients, registry.prices(), region, types, now))


def test_prices_fetched_in_a_region_the_shipped_table_lacks_are_stored_and_not_fetched_again_the_same_day(
    aws, clients, registry
):
    assert shipped_prices(SYDNEY) == {}
    asked = get_products_answered(aws)

    book = refresh_prices(clients, registry, SYDNEY, TYPES, NOW)

    assert book.source == PRICE_LIST_SOURCE and book.fetched_at == "2026-12-01T09:00:00Z"
    assert dict(book.hourly) == emu.SUITE_PRICE_LIST[SYDNEY]
    assert registry.prices() == book
    assert get_products_answered(aws) == asked + len(TYPES)

    again = refresh_prices(clients, registry, SYDNEY, TYPES, NOW + timedelta(hours=23))
    assert again == book and registry.prices().fetched_at == "2026-12-01T09:00:00Z"
    assert get_products_answered(aws) == asked + len(TYPES)  # not asked again

    next_day = refresh_prices(clients, registry, SYDNEY, TYPES, NOW + timedelta(days=1, minutes=1))
    assert next_day.fetched_at == "2026-12-02T09:01:00Z"
    assert get_products_answered(aws) == asked + 2 * len(TYPES)


def test_a_partial_answer_stores_what_it_got_and_names_the_rest_missing(aws, clients, registry):
    types = [*TYPES, "c7i.large"]  # not in the catalogue, and Sydney is not in the shipped table

    book = refresh_prices(clients, registry, SYDNEY, types, NOW)

    assert dict(book.hourly) == emu.SUITE_PRICE_LIST[SYDNEY] and book.source == PRICE_LIST_SOURCE
    assert missing_prices(book, types) == ["c7i.large"]
    asked = get_products_answered(aws)
    refresh_prices(clients, registry, SYDNEY, types, NOW + timedelta(hours=1))
    assert get_products_answered(aws) == asked + len(types)  # incomplete: asked again at the next setup


def test_a_region_the_api_has_no_price_for_falls_back_to_the_shipped_table(aws, clients, registry):
    book = refresh_prices(clients, registry, "us-east-1", TYPES, NOW)

    assert dict(book.hourly) == shipped_prices("us-east-1")
    assert (book.source, book.note) == ("the table shipped with condor-annex", "the Price List API had no price for these types")
    assert missing_prices(book, TYPES) == [] and registry.prices() == book


def test_a_region_no_source_prices_stays_unpriced(aws, clients, registry):
    book = refresh_prices(clients, registry, "sa-east-1", TYPES, NOW)

    assert dict(book.hourly) == {} and registry.prices() == book
    assert missing_prices(book, TYPES) == TYPES


def test_an_unreachable_api_keeps_the_prices_it_gave_before(aws, clients, registry, monkeypatch):
    fetched = refresh_prices(clients, registry, SYDNEY, TYPES, NOW)
    # Port 9 on loopback: nothing listens there. Only the pricing client is sent to it.
    monkeypatch.setenv("AWS_ENDPOINT_URL_PRICING", "http://127.0.0.1:9")
    from annex_common.aws import make_clients

    later = NOW + timedelta(days=3)
    kept = refresh_prices(make_clients(region=emu.REGION), registry, SYDNEY, TYPES, later)

    assert kept == fetched and registry.prices() == fetched  # not replaced by an empty table

    fallback = refresh_prices(make_clients(region=emu.REGION), registry, "us-east-1", ["m5.large", "c9.huge"], later)
    assert (fallback.source, fallback.note) == ("the table shipped with condor-annex", "the Price List API was not reachable")


# -- without a catalogue the emulator is moto: the Price List API cannot be reached ------------

@pytest.fixture(scope="module")
def plain_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emu.Emulator]:
    server = emu.start_emulator(tmp_path_factory.mktemp("moto-plain"), price_list=None)
    try:
        yield server
    finally:
        server.stop()


def test_without_a_catalogue_the_api_fails_as_in_moto_and_setup_uses_the_shipped_table(
    plain_emulator, clients, registry, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL_PRICING", plain_emulator.url)
    request = urllib.request.Request(plain_emulator.url + "/", data=b"{}", method="POST", headers={
        "X-Amz-Target": "AWSPriceListService.GetProducts", "Content-Type": "application/x-amz-json-1.1",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAFAKETESTKEY00000/20261201/us-east-1/pricing/aws4_request, "
                         "SignedHeaders=host, Signature=0"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 500

    from annex_common.aws import make_clients

    book = refresh_prices(make_clients(region=emu.REGION), registry, SYDNEY, TYPES, NOW)
    assert dict(book.hourly) == {} and missing_prices(book, TYPES) == TYPES
    assert (book.source, book.note) == ("the table shipped with condor-annex", "the Price List API was not reachable")
    assert "price list" not in plain_emulator.log_path.read_text(errors="replace")
