"""The node's typed values: annex.env as the broker writes it, and the one set of rules every value
meets (the bootstrap checks the same patterns again: tests/unit/test_bootstrap_constants.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annex_cloud.errors import Refused
from annex_cloud.node import config as node_config
from annex_cloud.node.config import NodeConfigInputs, render_node_env


def make(**changes: object) -> NodeConfigInputs:
    base = NodeConfigInputs(
        annex_name="TheNeeds-MooreLab-20261218",
        project_id="TheNeeds-MooreLab",
        owner="needsmoore",
        collector_host="cm.pool.example.org:9618",
        trust_domain="cm.pool.example.org",
        idle_seconds=900,
        security="idtoken",
    )
    return dataclasses.replace(base, **changes)


def parsed(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_node_env_is_plain_key_value_lines_of_the_known_keys() -> None:
    inputs = make(security="password", deadman_seconds=600, idle_seconds=300)
    values = parsed(render_node_env(inputs))
    assert tuple(values) == node_config.ENV_KEYS
    assert values == {
        "ANNEX_NAME": inputs.annex_name,
        "ANNEX_PROJECT": inputs.project_id,
        "ANNEX_OWNER": inputs.owner,
        "ANNEX_COLLECTOR_HOST": inputs.collector_host,
        "ANNEX_TRUST_DOMAIN": inputs.trust_domain,
        "ANNEX_SECURITY": "password",
        "ANNEX_IDLE_SECONDS": "300",
        "ANNEX_DEADMAN_SECONDS": "600",
    }


@pytest.mark.parametrize(
    "collector",
    ["cm", "cm.example.org:9618", "10.0.0.5:9618?sock=collector", "[2001:db8::5]:9618",
     "cm1.example.org, cm2.example.org:9618"],
)
def test_collector_addresses_a_pool_may_use_are_accepted(collector: str) -> None:
    values = parsed(render_node_env(make(collector_host=collector, trust_domain=collector)))
    assert values["ANNEX_COLLECTOR_HOST"] == values["ANNEX_TRUST_DOMAIN"] == collector


# The attempts of the node-trust review, and the ordinary mistakes.
HOSTILE = [
    ("annex_name", "run\nSTART = True"),
    ("annex_name", 'run" || true || "'),
    ("annex_name", ""),
    ("annex_name", "-leading-dash"),
    ("annex_name", "a" * 64),
    ("annex_name", "include command : /bin/sh -c id"),
    ("project_id", "../other"),
    ("project_id", "lab/x"),
    ("owner", 'alice") || (true'),
    ("owner", "alice bob"),
    ("owner", "alice\\"),
    ("owner", "alice\nUSER_JOB_WRAPPER = /tmp/wrap"),
    ("collector_host", "cm.example.org\nALLOW_WRITE = *"),
    ("collector_host", "$(FULL_HOSTNAME)"),
    ("collector_host", "cm?sock=x\nSTART = True"),
    ("collector_host", "cm:9618 extra"),
    ("collector_host", "/bin/touch /tmp/owned |"),
    ("collector_host", "cm \\"),
    ("collector_host", "cm\nSTARTD_CRON_JOBLIST = x"),
    ("collector_host", ", ".join(["cm.pool.example.org:9618"] * 400)),  # 10 kB, each one well formed
    ("trust_domain", "pool example"),
    ("trust_domain", "pool\r"),
    ("trust_domain", "pool.example\n"),
    ("security", "kerberos"),
    ("idle_seconds", 59),
    ("idle_seconds", True),
    ("idle_seconds", "900"),
    ("idle_seconds", 25 * 3600),
    ("deadman_seconds", 10),
    ("deadman_seconds", 5 * 3600),
]


@pytest.mark.parametrize(("field", "value"), HOSTILE)
def test_unsafe_or_out_of_range_values_are_refused_and_named(field: str, value: object) -> None:
    with pytest.raises(Refused) as caught:
        render_node_env(make(**{field: value}))
    assert node_config.shown(value) in caught.value.what


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["annex_name", "project_id", "owner", "collector_host", "trust_domain"]),
    text=st.text(min_size=1, max_size=300),
)
def test_a_value_is_refused_or_holds_nothing_that_could_change_a_configuration_line(field: str, text: str) -> None:
    try:
        rendered = render_node_env(make(**{field: text}))
    except Refused:
        return
    assert len(text) <= node_config.MAX_VALUE_LENGTH
    assert not any(ch in text for ch in '\n\r"\\$()|#&; \t')
    assert rendered.count("\n") == render_node_env(make()).count("\n")


def test_every_pattern_is_anchored_posix_ere() -> None:
    """bash's [[ =~ ]] reads these too: no Python-only syntax, anchored at both ends."""
    for name in dir(node_config):
        if name.endswith("_PATTERN"):
            pattern = getattr(node_config, name)
            assert pattern.startswith("^") and pattern.endswith("$"), name
            assert "(?" not in pattern and not re.search(r"\\[dswDSWbB]", pattern), name
            assert not re.search(r"\[[^]]*\\", pattern), f"{name}: a backslash inside brackets is literal in ERE"


def test_inputs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().annex_name = "other"  # type: ignore[misc]
