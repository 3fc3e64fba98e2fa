"""The emulator's Price List catalogue (no server): products in the API's shape, filters, pages,
errors, and the file it is read from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annex_sandbox.price_list import (
    PRICE_LIST_ENV,
    PriceCatalogue,
    PriceListError,
    price_catalogue_from_environment,
)
from annex_admin.prices import parse_price_list_item, price_filters

SYDNEY = {"ap-southeast-2": {"m7i.large": 0.126, "m6i.large": 0.12, "m5.large": 0.12}}


def products(catalogue: PriceCatalogue, **request) -> list[dict]:
    return [json.loads(item) for item in catalogue.get_products({"ServiceCode": "AmazonEC2", **request})["PriceList"]]


def test_a_product_has_the_price_list_document_shape():
    [product] = products(PriceCatalogue(SYDNEY), Filters=price_filters("ap-southeast-2", "m7i.large"))

    attributes = product["product"]["attributes"]
    assert {k: attributes[k] for k in ("instanceType", "regionCode", "operatingSystem", "tenancy",
                                       "preInstalledSw", "capacitystatus", "location")} == {
        "instanceType": "m7i.large", "regionCode": "ap-southeast-2", "operatingSystem": "Linux",
        "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used", "location": "Asia Pacific (Sydney)"}
    sku = product["product"]["sku"]
    assert len(sku) == 16 and product["serviceCode"] == "AmazonEC2"
    assert product["product"]["productFamily"] == "Compute Instance"
    [(term_key, term)] = product["terms"]["OnDemand"].items()
    assert term_key == f"{sku}.JRTCKXETXF" and term["offerTermCode"] == "JRTCKXETXF" and term["sku"] == sku
    [(rate_key, rate)] = term["priceDimensions"].items()
    assert rate_key == rate["rateCode"] == f"{sku}.JRTCKXETXF.6YS6EN2CT7"
    assert rate["unit"] == "Hrs" and rate["pricePerUnit"] == {"USD": "0.1260000000"}
    assert rate["description"] == "$0.126 per On Demand Linux m7i.large Instance Hour"
    assert product["publicationDate"].endswith("Z") and product["version"].isdigit()


def test_the_projects_own_parser_reads_the_rendered_document():
    answer = PriceCatalogue(SYDNEY).get_products(
        {"ServiceCode": "AmazonEC2", "Filters": price_filters("ap-southeast-2", "m6i.large"), "MaxResults": 10})
    assert answer["FormatVersion"] == "aws_v1" and "NextToken" not in answer
    assert all(isinstance(item, str) for item in answer["PriceList"])  # JSON text, as AWS sends it
    assert parse_price_list_item(answer["PriceList"]) == 0.12


def test_filters_select_products_and_a_non_matching_one_selects_none():
    catalogue = PriceCatalogue({**SYDNEY, "eu-west-1": {"m5.large": 0.107}})

    assert [p["product"]["attributes"]["regionCode"] for p in products(
        catalogue, Filters=[{"Type": "TERM_MATCH", "Field": "instanceType", "Value": "m5.large"}])] == [
        "ap-southeast-2", "eu-west-1"]
    assert products(catalogue, Filters=price_filters("us-east-1", "m5.large")) == []
    assert products(catalogue, Filters=[{"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Windows"}]) == []
    assert products(catalogue, Filters=[{"Type": "TERM_MATCH", "Field": "noSuchAttribute", "Value": "x"}]) == []
    assert products(PriceCatalogue(SYDNEY), Filters=[{"Type": "TERM_MATCH", "Field": "location",
                                                      "Value": "Asia Pacific (Sydney)"}]) != []
    assert products(catalogue, Filters=[{"Type": "TERM_MATCH", "Field": "location", "Value": "EU (Ireland)"}]) != []
    any_of = {"Type": "ANY_OF", "Field": "instanceType", "Value": "m5.large, m7i.large"}
    assert len(products(catalogue, Filters=[any_of])) == 3
    assert len(products(catalogue, Filters=[{"Type": "NONE_OF", "Field": "instanceType", "Value": "m5.large"}])) == 2
    assert len(products(catalogue, Filters=[{"Type": "CONTAINS", "Field": "instanceType", "Value": "i.large"}])) == 2
    assert catalogue.get_products({"ServiceCode": "AmazonS3"})["PriceList"] == []


def test_pages_follow_max_results_and_next_token():
    catalogue = PriceCatalogue(SYDNEY)
    seen, token, pages = [], None, 0
    while True:
        request = {"ServiceCode": "AmazonEC2", "MaxResults": 2} | ({"NextToken": token} if token else {})
        answer = catalogue.get_products(request)
        seen += [json.loads(item)["product"]["attributes"]["instanceType"] for item in answer["PriceList"]]
        pages += 1
        token = answer.get("NextToken")
        if not token:
            break
    assert pages == 2 and sorted(seen) == ["m5.large", "m6i.large", "m7i.large"]


@pytest.mark.parametrize("request_, error", [
    ({"ServiceCode": "AmazonEC2", "NextToken": "not-a-token"}, "InvalidNextTokenException"),
    ({"ServiceCode": "AmazonEC2", "MaxResults": 0}, "InvalidParameterException"),
    ({"ServiceCode": "AmazonEC2", "MaxResults": 101}, "InvalidParameterException"),
    ({"ServiceCode": "AmazonEC2", "FormatVersion": "aws_v2"}, "InvalidParameterException"),
    ({"ServiceCode": "AmazonEC2", "Filters": [{"Type": "REGEX", "Field": "a", "Value": "b"}]},
     "InvalidParameterException"),
    ({"ServiceCode": "AmazonEC2", "Filters": [{"Field": "a", "Value": "b"}]}, "InvalidParameterException"),
    ({}, "InvalidParameterException"),
])
def test_bad_requests_get_the_api_s_errors(request_, error):
    with pytest.raises(PriceListError) as caught:
        PriceCatalogue(SYDNEY).get_products(request_)
    assert caught.value.error_type == error and caught.value.status == 400


def test_a_token_continues_only_the_query_that_issued_it():
    catalogue = PriceCatalogue(SYDNEY)
    token = catalogue.get_products({"ServiceCode": "AmazonEC2", "MaxResults": 1})["NextToken"]
    with pytest.raises(PriceListError):
        catalogue.get_products({"ServiceCode": "AmazonEC2", "MaxResults": 1, "NextToken": token,
                                "Filters": [{"Type": "TERM_MATCH", "Field": "instanceType", "Value": "m5.large"}]})


def test_describe_services_names_ec2_and_its_attributes():
    services = PriceCatalogue(SYDNEY).describe_services({})["Services"]
    assert [s["ServiceCode"] for s in services] == ["AmazonEC2"]
    assert {"instanceType", "regionCode", "capacitystatus"} <= set(services[0]["AttributeNames"])
    assert PriceCatalogue(SYDNEY).describe_services({"ServiceCode": "AmazonS3"})["Services"] == []


def test_the_catalogue_file_comments_and_the_shipped_table(tmp_path: Path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"_comment": "ignored", **SYDNEY}))
    assert len(PriceCatalogue.load(path).products) == 3

    shipped = Path(__file__).resolve().parents[2] / "annex_cloud" / "prices.json"
    assert len(PriceCatalogue.load(shipped).products) > 40  # the shipped table is a catalogue too


@pytest.mark.parametrize("content", ["not json", "[]", '{"r": 1}', '{"r": {"t": 0}}', '{"r": {"t": "0.1"}}'])
def test_a_malformed_catalogue_stops_the_server(tmp_path: Path, content: str):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SystemExit, match=PRICE_LIST_ENV):
        price_catalogue_from_environment({PRICE_LIST_ENV: str(path)})


def test_without_the_variable_there_is_no_catalogue():
    assert price_catalogue_from_environment({}) is None
    assert price_catalogue_from_environment({PRICE_LIST_ENV: ""}) is None
