"""A request sent by hand with a field of the wrong kind is refused in words, showing what came."""

from __future__ import annotations

import pytest

from annex_cloud.broker.requests import launch_ask, request_id
from annex_cloud.errors import Refused

OFFERED = ("m7i.large",)
ASK = {"annex_name": "deadline", "count": 4, "expiry": "2026-12-18T23:59:00Z", "idle_minutes": 15, "spot": False,
       "instance_types": None}


@pytest.mark.parametrize(("sent", "what", "why"), [
    ({"count": "16"}, "the request's count must be a whole number", 'it is "16"'),
    ({"count": True}, "the request's count must be a whole number", "it is true"),
    ({"count": None}, "the request's count must be a whole number", "it is missing"),
    ({"idle_minutes": 1.5}, "the request's idle minutes must be a whole number", "it is 1.5"),
    ({"annex_name": ["a"]}, "the request's annex name must be text", 'it is ["a"]'),
])
def test_a_field_of_the_wrong_kind_is_named_in_words(sent, what, why):
    with pytest.raises(Refused) as refused:
        launch_ask({**ASK, **sent}, OFFERED, with_pool=False)
    assert (refused.value.what, refused.value.why) == (what, why)


def test_a_long_value_is_shown_cut_with_its_length():
    with pytest.raises(Refused) as refused:
        request_id({"request_id": list(range(100))})
    assert refused.value.why.startswith("it is [0, 1, 2") and refused.value.why.endswith("(390 characters)")
