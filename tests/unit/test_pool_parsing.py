"""The pure parts of annex_user.pool: reading a child's reply, collector results, hiding secrets."""

from __future__ import annotations

import pytest

from annex_user.pool import PoolSecurity, collector_address, parse_child_reply, parse_instance_ids

MARK = "ANNEX-POOL-REPLY:"


def test_reply_after_noise() -> None:
    out = "some warning from the library\n" + MARK + '{"COLLECTOR_HOST": "cm"}\n'
    assert parse_child_reply(out) == {"COLLECTOR_HOST": "cm"}


def test_no_reply_or_broken_reply() -> None:
    assert parse_child_reply("") is None
    assert parse_child_reply("Configuration Error Line 2\n") is None
    assert parse_child_reply(MARK + "{not json\n") is None


def test_instance_ids_from_collector_reply() -> None:
    reply = ["i-0123456789abcdef0", "i-0fedcba9876543210", "i-0123456789abcdef0"]
    assert parse_instance_ids(reply) == {"i-0123456789abcdef0": True, "i-0fedcba9876543210": True}


def test_instance_ids_skip_junk() -> None:
    # An ad may carry an expression or nothing useful; only real strings count.
    assert parse_instance_ids([None, 7, "", "  ", {"x": 1}, " i-0abc "]) == {"i-0abc": True}
    assert parse_instance_ids({"i-1": True}) == {}
    assert parse_instance_ids([]) == {}


def test_pool_security_never_shows_its_payload() -> None:
    secret = b"eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.secret-part.signature"
    sec = PoolSecurity(
        kind="idtoken", object_name="security/token", payload=secret, description="IDTOKEN for x"
    )
    for shown in (repr(sec), str(sec), f"{sec}", f"{sec!r}", repr([sec])):
        assert "secret-part" not in shown and "signature" not in shown
    assert str(sec) == "IDTOKEN for x"
    assert "idtoken" in repr(sec)


@pytest.mark.parametrize(
    "collector_host, address",
    [
        ("cm.pool.example:9618", ("cm.pool.example", 9618)),
        ("cm.pool.example", ("cm.pool.example", 9618)),
        ("cm:9700?sock=collector", ("cm", 9700)),
        ("<10.0.0.1:9620?addrs=10.0.0.1-9620&alias=cm>", ("10.0.0.1", 9620)),
        ("[::1]:9618", ("::1", 9618)),
        ("cm1:9618, cm2:9618", ("cm1", 9618)),
    ],
)
def test_collector_address(collector_host: str, address: tuple[str, int]) -> None:
    assert collector_address(collector_host) == address
