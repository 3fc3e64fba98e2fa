"""The node's bootstrap and annex_cloud agree on the lease format and the guardrails' bounds.

The bootstrap is a shell script run on the instance, so it cannot import them: it holds copies,
read here from the script's text (no I/O beyond reading the file)."""

from __future__ import annotations

import re

import pytest

from annex_cloud import guardrails
from annex_cloud.expiry import EXPIRY_PATTERN
from tests.bootstrap_support.node import SCRIPT


def readonly(name: str) -> str:
    """The value of ``readonly NAME=VALUE`` in the script, single quotes removed."""
    found = re.findall(rf"^readonly {name}=(.*)$", SCRIPT.read_text(), flags=re.MULTILINE)
    assert len(found) == 1, f"{name} is set {len(found)} times in {SCRIPT.name}"
    value = found[0].split(" #", 1)[0].strip()
    return value[1:-1] if value.startswith("'") and value.endswith("'") else value


def test_the_watchdog_checks_exactly_the_expiry_pattern():
    assert readonly("EXPIRY_RE") == EXPIRY_PATTERN
    # And uses it: the pattern is matched through the constant, not a second copy.
    text = SCRIPT.read_text()
    assert '"$1" =~ $EXPIRY_RE' in text and text.count(EXPIRY_PATTERN) == 1


@pytest.mark.parametrize(
    ("shell_name", "value"),
    [
        ("LEASE_UNREADABLE_LIMIT", guardrails.LEASE_UNREADABLE_LIMIT_SECONDS),
        ("DEADMAN_DEFAULT", guardrails.DEADMAN_DEFAULT_SECONDS),
        ("DEADMAN_MIN", guardrails.DEADMAN_MIN_SECONDS),
        ("DEADMAN_MAX", guardrails.DEADMAN_MAX_SECONDS),
    ],
)
def test_the_node_holds_the_guardrails_bounds(shell_name, value):
    assert int(readonly(shell_name)) == value

