"""Rendering of the execute node's HTCondor configuration and settings, and input validation."""

from __future__ import annotations

import dataclasses
import re

import classad2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annex_cloud.errors import Refused
from annex_cloud.node import config as node_config
from annex_cloud.node.config import NodeConfigInputs, render_condor_config, render_node_env


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


def config_values(text: str) -> dict[str, str]:
    """NAME = VALUE lines of a rendered fragment (comments and metaknobs left out)."""
    values = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.]+) = (.*)", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def owner_may_run(start: str, owner: str) -> bool:
    machine = classad2.ClassAd()
    machine["Requirements"] = classad2.ExprTree(start)
    return machine.symmetricMatch(classad2.ClassAd({"Owner": owner, "Requirements": True}))


def test_execute_node_reporting_to_the_collector_through_ccb() -> None:
    text = render_condor_config(make())
    values = config_values(text)
    assert "use ROLE : Execute" in text.splitlines()
    assert values["COLLECTOR_HOST"] == "cm.pool.example.org:9618"
    assert values["CCB_ADDRESS"] == "$(COLLECTOR_HOST)"


def test_annex_identity_is_advertised_by_startd_and_master() -> None:
    values = config_values(render_condor_config(make(annex_name="run-7")))
    assert values["AnnexName"] == '"run-7"'
    assert values["IsAnnex"] == "True"
    for knob in ("STARTD_ATTRS", "MASTER_ATTRS"):
        names = values[knob].split()
        assert names[0] == f"$({knob})"
        assert {"AnnexName", "IsAnnex", "EC2InstanceID"} <= set(names)
    # The instance id is written at boot, not rendered here.
    assert "EC2InstanceID" not in values
    assert node_config.INSTANCE_ID_CONFIG_PATH in render_condor_config(make())


def test_start_admits_only_the_owner_by_default() -> None:
    start = config_values(render_condor_config(make(owner="alice")))["START"]
    assert owner_may_run(start, "alice")
    assert not owner_may_run(start, "mallory")


def test_start_admits_everyone_when_asked() -> None:
    start = config_values(render_condor_config(make(start_owner_only=False)))["START"]
    assert owner_may_run(start, "mallory")


def test_idle_shutdown_powers_the_machine_off() -> None:
    values = config_values(render_condor_config(make(idle_seconds=1234)))
    assert values["STARTD_NOCLAIM_SHUTDOWN"] == "1234"
    assert values["DEFAULT_MASTER_SHUTDOWN_SCRIPT"] == node_config.MASTER_SHUTDOWN_SCRIPT
    shutdown = values["MASTER.DAEMON_SHUTDOWN_FAST"]
    assert "STARTD_StartTime == 0" in shutdown
    classad2.ExprTree(shutdown)  # must parse: the master evaluates it


def test_idtoken_security() -> None:
    values = config_values(render_condor_config(make(security="idtoken", trust_domain="pool.example")))
    assert values["TRUST_DOMAIN"] == "pool.example"
    assert values["SEC_TOKEN_DIRECTORY"] == node_config.TOKEN_DIRECTORY
    assert "IDTOKENS" in values["SEC_DEFAULT_AUTHENTICATION_METHODS"].split(", ")
    assert "PASSWORD" not in values["SEC_DEFAULT_AUTHENTICATION_METHODS"]
    assert "SEC_PASSWORD_FILE" not in values


def test_password_security() -> None:
    values = config_values(render_condor_config(make(security="password")))
    assert values["SEC_PASSWORD_FILE"] == node_config.PASSWORD_FILE
    assert "PASSWORD" in values["SEC_DEFAULT_AUTHENTICATION_METHODS"].split(", ")
    assert "IDTOKENS" not in values["SEC_DEFAULT_AUTHENTICATION_METHODS"]
    assert "SEC_TOKEN_DIRECTORY" not in values


def test_node_env_is_plain_key_value_lines() -> None:
    inputs = make(security="password", deadman_seconds=600, idle_seconds=300)
    lines = [line for line in render_node_env(inputs).splitlines() if not line.startswith("#")]
    parsed = dict(line.split("=", 1) for line in lines)
    assert parsed == {
        "ANNEX_NAME": inputs.annex_name,
        "ANNEX_PROJECT": inputs.project_id,
        "ANNEX_OWNER": inputs.owner,
        "ANNEX_SECURITY": "password",
        "ANNEX_IDLE_SECONDS": "300",
        "ANNEX_DEADMAN_SECONDS": "600",
        "ANNEX_COLLECTOR_HOST": inputs.collector_host,
    }


@pytest.mark.parametrize(
    "collector",
    ["cm", "cm.example.org:9618", "10.0.0.5:9618?sock=collector", "[2001:db8::5]:9618",
     "cm1.example.org, cm2.example.org:9618"],
)
def test_collector_addresses_a_pool_may_use_are_accepted(collector: str) -> None:
    values = config_values(render_condor_config(make(collector_host=collector, trust_domain=collector)))
    assert values["COLLECTOR_HOST"] == collector
    assert values["TRUST_DOMAIN"] == collector


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("annex_name", "run\nSTART = True"),
        ("annex_name", 'run" || true || "'),
        ("annex_name", ""),
        ("annex_name", "-leading-dash"),
        ("annex_name", "a" * 129),
        ("project_id", "../other"),
        ("project_id", "lab/x"),
        ("owner", 'alice") || (true'),
        ("owner", "alice bob"),
        ("owner", "alice\\"),
        ("collector_host", "cm.example.org\nALLOW_WRITE = *"),
        ("collector_host", "$(FULL_HOSTNAME)"),
        ("collector_host", "cm?sock=x\nSTART = True"),
        ("collector_host", "cm:9618 extra"),
        ("trust_domain", "pool example"),
        ("trust_domain", "pool\r"),
        ("idle_seconds", 59),
        ("idle_seconds", True),
        ("idle_seconds", "900"),
        ("idle_seconds", 8 * 24 * 3600),
        ("deadman_seconds", 10),
        ("security", "kerberos"),
        ("start_owner_only", "no"),
    ],
)
def test_unsafe_or_out_of_range_inputs_are_bad_input(field: str, value: object) -> None:
    bad = make(**{field: value})
    with pytest.raises(Refused) as caught:
        render_condor_config(bad)
    assert repr(value)[:20].strip("'") in caught.value.what  # the value is named
    with pytest.raises(Refused):
        render_node_env(bad)


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["annex_name", "project_id", "owner", "collector_host", "trust_domain"]),
    text=st.text(min_size=1, max_size=40),
)
def test_rendered_lines_are_never_injected(field: str, text: str) -> None:
    """Whatever a value holds, it is either refused or lands inside one line, without quotes."""
    try:
        rendered = render_condor_config(make(**{field: text}))
    except Refused:
        return
    assert not any(ch in text for ch in '\n\r"\\$()')
    assert rendered.count("\n") == render_condor_config(make()).count("\n")


def test_inputs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().annex_name = "other"  # type: ignore[misc]
