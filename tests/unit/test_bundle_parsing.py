"""The bundle's contents, parsed without touching files."""

from pathlib import Path

import pytest

from annex_common.errors import BadInput
from annex_common.bundle import Bundle, Caps, locate_bundle, parse_bundle

GOOD = {
    "region": "us-east-1",
    "stack_name": "HTCondorAnnex",
    "project_id": "TheNeeds-MooreLab",
    "user": "needs-moore",
    "aws_access_key_id": "AKIAEXAMPLE",
    "aws_secret_access_key": "very-secret-value",
    "max_instances": 32,
    "max_lease_hours": 168,
    "max_spend_usd": 500.0,
}


def test_good_bundle_and_unknown_keys_ignored():
    bundle = parse_bundle({**GOOD, "future_key": "x"}, Path("b.toml"))
    assert bundle.caps == Caps(32, 168.0, 500.0)
    assert bundle.project_id == "TheNeeds-MooreLab"


def test_repr_never_shows_the_secret():
    bundle = parse_bundle(GOOD, Path("b.toml"))
    assert "very-secret-value" not in repr(bundle) and "very-secret-value" not in str(bundle)


@pytest.mark.parametrize("key", ["region", "project_id", "aws_secret_access_key"])
def test_missing_keys_are_named(key):
    data = {k: v for k, v in GOOD.items() if k != key}
    with pytest.raises(BadInput) as caught:
        parse_bundle(data, Path("b.toml"))
    assert key in caught.value.why


@pytest.mark.parametrize("key, value", [("region", 5), ("user", "  ")])
def test_wrong_types_and_values(key, value):
    with pytest.raises(BadInput):
        parse_bundle({**GOOD, key: value}, Path("b.toml"))


@pytest.mark.parametrize(
    "key, value",
    [("max_instances", 2.5), ("max_instances", 0), ("max_spend_usd", -1), ("max_lease_hours", True),
     ("max_lease_hours", "72x"), ("max_instances", None), ("max_spend_usd", 10**400)],
)
def test_caps_in_a_bundle_are_only_shown_so_bad_ones_are_not_shown(key, value):
    """The caps any check trusts are the administrator's record; the bundle's are informational,
    so an edited or broken cap makes no bundle unusable and no launch larger."""
    data = {**GOOD, key: value} if value is not None else {k: v for k, v in GOOD.items() if k != key}
    assert parse_bundle(data, Path("b.toml")).caps is None


def test_bundle_location_precedence(tmp_path):
    assert locate_bundle("/a.toml", "/b.toml", tmp_path) == Path("/a.toml")
    assert locate_bundle(None, "/b.toml", tmp_path) == Path("/b.toml")
    assert locate_bundle(None, None, tmp_path) == tmp_path / ".condor" / "annex-credentials.toml"


def test_toml_round_trip_keeps_every_field():
    bundle = parse_bundle(GOOD, Path("b.toml"))
    again = parse_bundle(bundle.to_toml_dict(), Path("b.toml"))
    assert again == bundle and isinstance(again, Bundle)


BROKER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:HTCondorAnnex-broker"


def test_the_brokers_arn_is_read_when_named_and_empty_in_an_earlier_bundle():
    assert parse_bundle({**GOOD, "broker_arn": BROKER_ARN}, Path("b.toml")).broker_arn == BROKER_ARN
    assert parse_bundle(GOOD, Path("b.toml")).broker_arn == ""


@pytest.mark.parametrize("value", ["HTCondorAnnex-broker", 7, "arn:aws:lambda:us-east-1:123:function:x",
                                   BROKER_ARN + "\nmore"])
def test_a_broker_arn_that_is_not_a_function_arn_is_named(value):
    with pytest.raises(BadInput) as caught:
        parse_bundle({**GOOD, "broker_arn": value}, Path("b.toml"))
    assert "broker_arn" in caught.value.why
