"""Lease ends: what the scientist types, read as she means it."""

from datetime import datetime, timedelta, timezone

import pytest

from annex_common.errors import BadInput
from annex_user import expiry

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
EST = timezone(timedelta(hours=-5))


def test_seed_format_is_local_time():
    assert expiry.parse_expiry("2026-12-18 23:59", now=NOW, local_tz=EST) == datetime(2026, 12, 19, 4, 59, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-12-18 23:59Z", datetime(2026, 12, 18, 23, 59, tzinfo=timezone.utc)),
        ("2026-12-18T23:59:00+01:00", datetime(2026, 12, 18, 22, 59, tzinfo=timezone.utc)),
        ("2026-12-18 23:59-05:00", datetime(2026, 12, 19, 4, 59, tzinfo=timezone.utc)),
    ],
)
def test_explicit_offsets_win_over_local_time(text, expected):
    assert expiry.parse_expiry(text, now=NOW, local_tz=EST) == expected


@pytest.mark.parametrize("text", ["", "tomorrow", "2026-13-01 10:00", "18/12/2026 23:59", "2026-12-18 25:00"])
def test_unreadable_expiries_are_bad_input(text):
    with pytest.raises(BadInput):
        expiry.parse_expiry(text, now=NOW)


def test_the_seeds_2015_date_is_in_the_past():
    with pytest.raises(BadInput) as caught:
        expiry.parse_expiry("2015-12-18 23:59", now=NOW)
    assert "in the past" in caught.value.what


def test_a_lease_shorter_than_ten_minutes_is_refused():
    with pytest.raises(BadInput):
        expiry.check_future(NOW + timedelta(minutes=5), now=NOW)
    assert expiry.check_future(NOW + timedelta(minutes=11), now=NOW)


@pytest.mark.parametrize("hours", [0, -1, float("nan"), float("inf"), 1e9])
def test_bad_durations(hours):
    with pytest.raises(BadInput):
        expiry.parse_duration(hours, now=NOW)


def test_duration_adds_hours():
    assert expiry.parse_duration(48, now=NOW) == NOW + timedelta(hours=48)


@pytest.mark.parametrize("text", ["2026-12-04", " 2026-12-04 "])
def test_a_date_alone_is_refused_with_the_accepted_forms(text):
    with pytest.raises(BadInput) as caught:
        expiry.parse_expiry(text, now=NOW, local_tz=EST)
    assert "no time of day" in caught.value.what
    assert "2026-12-04 23:59" in caught.value.next_step and "--duration" in caught.value.next_step


def test_tag_round_trip_is_iso_utc_with_z():
    moment = datetime(2026, 12, 18, 23, 59, tzinfo=timezone.utc)
    assert expiry.to_tag(moment) == "2026-12-18T23:59:00Z"
    assert expiry.from_tag("2026-12-18T23:59:00Z") == moment
    assert expiry.from_tag("garbage") is None and expiry.from_tag(None) is None
