"""The administrator's caps, as the registry stores them and every check reads them."""

from __future__ import annotations

import pytest

from annex_cloud.caps import CAP_BOUNDS, Caps, caps_from_mapping, caps_problem, out_of_bounds


def test_caps_read_from_the_stored_record():
    assert caps_from_mapping({"max_instances": "16", "max_lease_hours": "48", "max_spend_usd": "250.5"}) == Caps(
        16, 48.0, 250.5
    )
    assert caps_from_mapping({"max_instances": 4.0, "max_lease_hours": 1, "max_spend_usd": 1}).max_instances == 4


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"max_instances": 16, "max_lease_hours": 48},
        {"max_instances": "x", "max_lease_hours": 48, "max_spend_usd": 1},
        {"max_instances": -1, "max_lease_hours": 48, "max_spend_usd": 1},
        {"max_instances": 2.5, "max_lease_hours": 48, "max_spend_usd": 1},
        {"max_instances": 2, "max_lease_hours": 0, "max_spend_usd": 1},
        {"max_instances": 2, "max_lease_hours": 48, "max_spend_usd": float("nan")},
        {"max_instances": 2, "max_lease_hours": float("inf"), "max_spend_usd": 1},
        {"max_instances": 2, "max_lease_hours": 24 * 400, "max_spend_usd": 1},
    ],
)
def test_malformed_records_are_refused(document):
    with pytest.raises(ValueError):
        caps_from_mapping(document)


def test_caps_describe_themselves_in_the_users_terms():
    text = Caps(32, 168, 500).describe()
    assert text == "at most 32 instances at once, leases of at most 168 hours, at most $500.00 committed"
    assert "Caps(" not in text
    assert caps_problem(Caps(0, 1, 1)) and caps_problem(Caps(1, 1, 1)) is None


@pytest.mark.parametrize("caps, field", [
    (Caps(max_instances=10**9), "max_instances"), (Caps(max_lease_hours=0.01), "max_lease_hours"),
    (Caps(max_spend_usd=1e12), "max_spend_usd"), (Caps(max_spend_usd=0.001), "max_spend_usd"),
    (Caps(max_lease_hours=float("nan")), "max_lease_hours"),
])
def test_caps_the_administrator_gives_stay_within_their_bounds(caps, field):
    assert out_of_bounds(caps).field == field
    assert out_of_bounds(Caps()) is None  # the defaults are within them
    assert caps_problem(caps) is None or field == "max_lease_hours"  # a stored record is not judged by them


def test_every_cap_has_one_bound():
    assert sorted(b.field for b in CAP_BOUNDS) == ["max_instances", "max_lease_hours", "max_spend_usd"]
