"""The node's bootstrap and annex_cloud agree on the lease format and the guardrails' bounds.

The bootstrap is a shell script run on the instance, so it cannot import them: it holds copies,
read here from the script's text (no I/O beyond reading the file)."""

from __future__ import annotations

import re

import pytest

from annex_cloud import guardrails
from annex_cloud.expiry import EXPIRY_PATTERN
from annex_cloud.node import config as node_config
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



@pytest.mark.parametrize(
    ("shell_name", "pattern"),
    [
        ("ANNEX_NAME_RE", node_config.ANNEX_NAME_PATTERN),
        ("PROJECT_ID_RE", node_config.PROJECT_ID_PATTERN),
        ("OWNER_RE", node_config.OWNER_PATTERN),
        ("COLLECTOR_HOST_RE", node_config.COLLECTOR_HOST_PATTERN),
        ("TRUST_DOMAIN_RE", node_config.TRUST_DOMAIN_PATTERN),
        ("SECURITY_RE", node_config.SECURITY_PATTERN),
        ("SECONDS_RE", node_config.SECONDS_PATTERN),
    ],
)
def test_the_node_checks_every_value_with_the_brokers_pattern(shell_name, pattern):
    assert readonly(shell_name) == pattern
    # And uses it through the constant, never a second copy.
    assert SCRIPT.read_text().count(pattern) == 1


@pytest.mark.parametrize(
    ("shell_name", "value"),
    [
        ("MAX_VALUE_LENGTH", node_config.MAX_VALUE_LENGTH),
        ("IDLE_MIN", node_config.MIN_IDLE_SECONDS),
        ("IDLE_MAX", node_config.MAX_IDLE_SECONDS),
        ("DEADMAN_MIN", node_config.MIN_DEADMAN_SECONDS),
        ("DEADMAN_MAX", node_config.MAX_DEADMAN_SECONDS),
    ],
)
def test_the_node_holds_the_brokers_bounds(shell_name, value):
    assert int(readonly(shell_name)) == value


def test_the_node_knows_exactly_the_keys_the_broker_writes():
    assert readonly("SETTING_KEYS").strip('"').split() == list(node_config.ENV_KEYS)
    text = SCRIPT.read_text()
    for key in node_config.ENV_KEYS:
        assert f"SETTING[{key}]" in text or f"check_seconds {key} " in text, key


def test_the_node_and_build_image_agree_on_htcondor_series():
    from annex_admin.image import SERIES_PATTERN
    from templates.node_bootstrap import HTCONDOR_SERIES_DEFAULT

    assert readonly("SERIES_RE") == SERIES_PATTERN
    assert SCRIPT.read_text().count(SERIES_PATTERN) == 1
    assert readonly("HTCONDOR_SERIES") == HTCONDOR_SERIES_DEFAULT


def test_no_path_needs_a_root_prefix_to_exist():
    """ANNEX_ROOT is empty on an instance: a "${ROOT:?}" there would stop the script."""
    assert "${ROOT:?" not in SCRIPT.read_text()
