"""Properties of every input a user types: each is accepted as a valid value or refused as BadInput.

Nothing else may escape (a ValueError or OverflowError would reach the user as an "unexpected
failure" with exit 1 instead of a readable exit-2 refusal). Hypothesis generates the inputs; no
files or network are touched here (the file-reading side is in tests/functional/test_properties_io.py).

Inputs that once escaped are kept as plain examples at the end.
"""

from __future__ import annotations

import ipaddress
import math
import string
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annex_cloud.caps import MAX_LEASE_AHEAD_SECONDS, MIN_LEASE_SECONDS
from annex_common.errors import BadInput
from annex_user import expiry
from annex_common.bundle import REQUIRED_STRINGS, Bundle, parse_bundle
from annex_user.launch import ANNEX_NAME_RE, default_annex_name, validate_annex_name, validate_count, validate_idle
from templates import settings as stack_settings

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The value, or the BadInput it raised; any other exception fails the property."""
    try:
        return function(*args, **kwargs)
    except BadInput as refused:
        assert refused.exit_code == 2 and refused.what
        return refused


# --- lease ends -------------------------------------------------------------------------------

zones = st.one_of(
    st.none(),
    st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)


@st.composite
def expiry_like(draw: st.DrawFn) -> str:
    """Text shaped like what a scientist types, often valid, often slightly off.

    Years 2-9998 only: the first and last year are the known overflow pinned at the end.
    """
    year = draw(st.integers(min_value=2, max_value=9998))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute = draw(st.integers(0, 25)), draw(st.integers(0, 61))
    text = f"{year:04d}-{month:02d}-{day:02d}{draw(st.sampled_from([' ', 'T', '  ', '']))}{hour:02d}:{minute:02d}"
    if draw(st.booleans()):
        text += f":{draw(st.integers(0, 61)):02d}"
    offset = draw(st.one_of(
        st.just(""), st.sampled_from(["Z", "z", "+00:00", "UTC"]),
        st.tuples(st.sampled_from("+-"), st.integers(0, 25), st.integers(0, 60)).map(lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"),
    ))
    text += offset
    if draw(st.booleans()):  # a slip of the finger somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.characters()) + text[at:]
    return draw(st.sampled_from(["", " ", "\t"])) + text


@PROPERTY
@given(text=st.one_of(st.text(max_size=40), expiry_like()), local_tz=zones)
def test_any_expiry_text_is_a_future_utc_moment_or_bad_input(text: str, local_tz: tzinfo | None):
    result = outcome(expiry.parse_expiry, text, now=NOW, local_tz=local_tz)
    if isinstance(result, BadInput):
        return
    assert result.utcoffset() == timedelta(0) and result.microsecond == 0
    assert (result - NOW).total_seconds() >= MIN_LEASE_SECONDS
    assert expiry.from_tag(expiry.to_tag(result)) == result  # it can be written as a tag and read back


@PROPERTY
@given(hours=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**9, 10**9)))
def test_any_duration_is_a_lease_end_or_bad_input(hours: float):
    result = outcome(expiry.parse_duration, hours, now=NOW)
    if isinstance(result, BadInput):
        assert not (math.isfinite(hours) and MIN_LEASE_SECONDS <= hours * 3600 <= MAX_LEASE_AHEAD_SECONDS)
        return
    assert math.isfinite(hours) and hours > 0
    assert result == (NOW + timedelta(hours=hours)).replace(microsecond=0)


# --- counts, idle times, annex names ----------------------------------------------------------


@PROPERTY
@given(count=st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=True), st.none(), st.text(max_size=5)))
def test_any_count_is_a_positive_whole_number_or_bad_input(count: Any):
    result = outcome(validate_count, count)
    if not isinstance(result, BadInput):
        assert type(result) is int and result >= 1 and result == count


@PROPERTY
@given(minutes=st.integers())
def test_any_idle_time_is_within_a_day_or_bad_input(minutes: int):
    result = outcome(validate_idle, minutes)
    assert isinstance(result, BadInput) or 1 <= result <= 24 * 60


@PROPERTY
@given(name=st.one_of(st.text(max_size=80), st.from_regex(ANNEX_NAME_RE, fullmatch=True)))
def test_any_annex_name_is_kept_as_given_or_bad_input(name: str):
    result = outcome(validate_annex_name, name)
    if not isinstance(result, BadInput):
        assert result == name and 1 <= len(name) <= 63 and name[0].isascii() and name[0].isalnum()


@PROPERTY
@given(project=st.text(max_size=80), now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2999, 1, 1)))
def test_the_default_annex_name_is_always_a_valid_annex_name(project: str, now: datetime):
    assert validate_annex_name(default_annex_name(project, now))


# --- setup options ----------------------------------------------------------------------------


@PROPERTY
@given(name=st.text(max_size=120))
def test_any_stack_name_is_kept_or_bad_input(name: str):
    result = outcome(stack_settings.validate_stack_name, name)
    assert isinstance(result, BadInput) or (result == name and name[0].isalpha() and len(name) <= 100)


type_word = st.text(alphabet=string.ascii_lowercase + string.digits + ".-_ ", max_size=14)


@PROPERTY
@given(value=st.one_of(st.text(max_size=60), st.lists(type_word, max_size=6).map(",".join),
                       st.lists(st.text(max_size=12), max_size=6)))
def test_any_instance_type_list_is_clean_types_or_bad_input(value: str | list[str]):
    result = outcome(stack_settings.parse_instance_types, value)
    if isinstance(result, BadInput):
        return
    assert result and len(set(result)) == len(result)
    assert all(stack_settings.INSTANCE_TYPE_RE.match(t) and t == t.strip() for t in result)


ipv4_networks = st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(
    lambda pair: str(ipaddress.ip_network(f"{pair[0]}/{pair[1]}", strict=False))
)


@PROPERTY
@given(cidr=st.one_of(st.none(), st.text(max_size=45), ipv4_networks,
                      st.ip_addresses().map(str), st.ip_addresses(v=6).map(lambda a: f"{a}/64")))
def test_any_ssh_cidr_is_an_ipv4_network_or_bad_input(cidr: str | None):
    result = outcome(stack_settings.validate_ssh_cidr, cidr)
    if isinstance(result, BadInput) or result is None:
        assert result is not None or not cidr
        return
    network = ipaddress.ip_network(result, strict=True)
    assert network.version == 4 and network == ipaddress.ip_network(cidr, strict=True)


@PROPERTY
@given(cidr=ipv4_networks)
def test_every_ipv4_network_is_accepted(cidr: str):
    assert stack_settings.validate_ssh_cidr(cidr) == cidr


@PROPERTY
@given(image=st.one_of(st.none(), st.text(max_size=30), st.from_regex(stack_settings.IMAGE_ID_RE, fullmatch=True)))
def test_any_image_id_is_an_ami_id_or_empty_or_bad_input(image: str | None):
    result = outcome(stack_settings.validate_image_id, image)
    assert isinstance(result, BadInput) or result == (image or "")


# --- the bundle's contents --------------------------------------------------------------------

toml_scalars = st.one_of(
    st.text(max_size=20), st.integers(min_value=-2**63, max_value=2**63 - 1), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True), st.datetimes(), st.dates(),
)
toml_values = st.recursive(
    toml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
CAP_KEYS = ("max_instances", "max_lease_hours", "max_spend_usd")
good_strings = st.text(min_size=1, max_size=20).filter(str.strip)
good_numbers = st.one_of(st.integers(1, 10**6), st.floats(min_value=1e-3, max_value=1e9))


@st.composite
def bundle_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A parsed TOML document: each known key present or not, plausible or not, plus strangers."""
    document: dict[str, Any] = draw(st.dictionaries(st.text(max_size=10), toml_values, max_size=3))
    for key in REQUIRED_STRINGS:
        if draw(st.integers(0, 9)):
            document[key] = draw(st.one_of(good_strings, toml_values)) if draw(st.integers(0, 4)) else draw(good_strings)
    for key in CAP_KEYS:
        if draw(st.integers(0, 9)):
            document[key] = draw(st.one_of(good_numbers, toml_values)) if draw(st.integers(0, 4)) else draw(good_numbers)
    return document


@PROPERTY
@given(document=bundle_documents())
def test_any_bundle_document_is_a_valid_bundle_or_bad_input(document: dict[str, Any]):
    result = outcome(parse_bundle, document, Path("bundle.toml"))
    if isinstance(result, BadInput):
        assert "bundle.toml" in result.what
        return
    assert_valid_bundle(result)


def assert_valid_bundle(bundle: Bundle) -> None:
    assert isinstance(bundle, Bundle)
    for key in REQUIRED_STRINGS:
        value = getattr(bundle, key)
        assert isinstance(value, str) and value and value == value.strip()
    caps = bundle.caps  # informational: present only when sensible
    if caps is not None:
        assert type(caps.max_instances) is int and caps.max_instances >= 1
        for value in (caps.max_lease_hours, caps.max_spend_usd):
            assert isinstance(value, float) and math.isfinite(value) and value > 0
    assert "aws_secret_access_key" not in repr(bundle)  # the secret is never shown


# --- inputs the properties above once found escaping: each is bad input now -------------------


@pytest.mark.parametrize("text, local_tz", [
    ("0001-01-01T00:00+05:00", None),
    ("9999-12-31T23:59-05:00", None),
    ("0001-01-01 00:00", timezone(timedelta(hours=5))),
])
def test_first_and_last_year_expiries_are_bad_input(text: str, local_tz: tzinfo | None):
    with pytest.raises(BadInput):
        expiry.parse_expiry(text, now=NOW, local_tz=local_tz)


@pytest.mark.parametrize("key", CAP_KEYS)
def test_a_cap_too_large_for_a_float_is_not_shown(key: str):
    document = {name: "x" for name in REQUIRED_STRINGS} | {"region": "us-east-1"} | {name: 1 for name in CAP_KEYS} | {key: 10**400}
    assert parse_bundle(document, Path("bundle.toml")).caps is None
