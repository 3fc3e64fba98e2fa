"""The instance bootstrap, run for real in a temporary root.

Real: bash and the script itself, curl against a local IMDSv2 server, the ``aws`` CLI against the
suite's S3 emulator, shellcheck, and the htcondor2/classad2 bindings reading the configuration the
script wrote. Replaced because they cannot run here (see tests/bootstrap_support): EC2's metadata
service, systemctl, the power-off command, condor_status (no collector) and condor_reconfig;
condor_master is a stub on PATH so the HTCondor install step is skipped.
"""

from __future__ import annotations

import calendar
import json
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from annex_cloud import guardrails
from annex_cloud.expiry import parse_expiry_tag
from annex_cloud.node import config as node_config
from annex_cloud.node.config import NodeConfigInputs
from templates import contract
from tests import emulator as emu
from tests.bootstrap_support.imds import FakeImds
from tests.bootstrap_support.node import SCRIPT, Node, clone_node, make_node, mode_of, sandbox_env_for

BUCKET = "annex-config-bootstrap-test"
INSTANCE_ID = "i-0123456789abcdef0"
PROJECT = "TheNeeds-MooreLab"
ANNEX = "deadline-run-1"
OWNER = "needsmoore"
EXPIRY = "2026-12-18T23:59:00Z"
EXPIRY_EPOCH = calendar.timegm(time.strptime(EXPIRY, contract.EXPIRY_FORMAT))
BOOT_AT = EXPIRY_EPOCH - 7 * 24 * 3600
DEADMAN = 900
IDLE = 1200


def inputs(security: str = "idtoken") -> NodeConfigInputs:
    return NodeConfigInputs(
        annex_name=ANNEX,
        project_id=PROJECT,
        owner=OWNER,
        collector_host="cm.pool.example.org:9618",
        trust_domain="cm.pool.example.org",
        idle_seconds=IDLE,
        security=security,  # type: ignore[arg-type]
        deadman_seconds=DEADMAN,
    )


def tags(**changes: str) -> dict[str, str]:
    base = {
        contract.TAG_ANNEX_NAME: ANNEX,
        contract.TAG_PROJECT: PROJECT,
        contract.TAG_EXPIRY: EXPIRY,
        contract.TAG_IDLE: str(IDLE),
        contract.TAG_OWNER: OWNER,
    }
    base.update(changes)
    return base


def put(clients, name: str, body: str | bytes, project: str = PROJECT, annex: str = ANNEX) -> None:
    key = contract.annex_prefix(project, annex) + name
    clients.s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def upload_annex(clients, security: str = "idtoken") -> str:
    """What the broker uploads for one annex; returns the secret it shipped."""
    clients.s3.create_bucket(Bucket=BUCKET)
    put(clients, contract.NODE_ENV_OBJECT, node_config.render_node_env(inputs(security)))
    secret = "secret-" + secrets.token_hex(16)
    if security == "idtoken":
        put(clients, contract.TOKEN_OBJECT, secret + "\n")
    else:
        put(clients, contract.PASSWORD_OBJECT, secret.encode())
    return secret


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    server = FakeImds(INSTANCE_ID, tags()).start()
    yield server
    server.stop()


@pytest.fixture
def node(tmp_path: Path, imds: FakeImds, sandbox_env: dict[str, str]) -> Node:
    return make_node(tmp_path, imds, sandbox_env, BUCKET, emu.REGION)


@dataclass
class Boot:
    node: Node
    result: subprocess.CompletedProcess
    secret: str
    imds: FakeImds


@pytest.fixture(scope="module")
def boot(emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Boot]:
    """One real boot (idtoken mode, at BOOT_AT) that the tests starting from a booted instance
    share: each gets a copy of its root (``booted``). Module-scoped because every ``aws`` CLI
    call costs about a second and a half here."""
    from annex_common.aws import make_clients

    emulator.reset()
    secret = upload_annex(make_clients(region=emu.REGION), "idtoken")
    tmp = tmp_path_factory.mktemp("boot")
    server = FakeImds(INSTANCE_ID, tags()).start()
    node = make_node(tmp, server, sandbox_env_for(emulator.url, tmp / "home"), BUCKET, emu.REGION)
    result = node.run(now=BOOT_AT)
    assert result.returncode == 0, result.stderr
    yield Boot(node, result, secret, server)
    server.stop()


@pytest.fixture
def booted(boot: Boot, tmp_path: Path, imds: FakeImds, sandbox_env: dict[str, str]) -> Node:
    """A copy of the booted instance, with its own stubs, metadata service and a clean emulator."""
    return clone_node(boot.node, tmp_path, imds, sandbox_env)


# Read the rendered configuration as HTCondor does, in a child process (a bad config file makes
# the library exit its process): the whole parameter table, once with only the template's two
# metaknobs in the file and once with the file as written, in the same place. Knobs whose default
# draws a random number (PERIODIC_CHECKPOINT) differ between any two reads and are left out.
_READER = """
import json, os, sys, htcondor2 as htcondor, classad2
path, written = sys.argv[1], open(sys.argv[1]).read()
def table(text):
    with open(path, "w") as handle:
        handle.write(text)
    htcondor.reload_config()
    return dict(htcondor.param.items())
metaknobs = "".join(line + "\\n" for line in written.splitlines() if line.startswith("use "))
base, again, full = table(metaknobs), table(metaknobs), table(written)
noisy = {k for k in base if base[k] != again.get(k)}
set_here = {k: v for k, v in full.items() if k not in noisy and base.get(k) != v}
start = classad2.ExprTree(full["START"])
def runs(owner):
    machine = classad2.ClassAd(); machine["Requirements"] = start
    return machine.symmetricMatch(classad2.ClassAd({"Owner": owner, "Requirements": True}))
classad2.ExprTree(full["MASTER.DAEMON_SHUTDOWN_FAST"])
print(json.dumps({"set": set_here, "values": {k: str(full.get(k)) for k in json.loads(sys.argv[3])},
                  "daemons": full["DAEMON_LIST"], "runs_owner": runs(sys.argv[2]), "runs_other": runs("someone-else")}))
"""


@dataclass(frozen=True)
class ReadBack:
    knobs: dict[str, str]  # every knob the file changes from HTCondor's defaults, as HTCondor reads it
    values: dict[str, str]  # the knobs asked for, as HTCondor reads them (macros expanded)
    daemons: str  # DAEMON_LIST
    runs_owner: bool
    runs_other: bool


def read_config(node: Node, names: list[str]) -> ReadBack:
    written = node.path(node_config.INSTANCE_CONFIG_PATH).read_text()
    work = node.root.parent / "htcondor-read"
    (work / "config.d").mkdir(parents=True, exist_ok=True)
    (work / "config.d" / "50-condor-annex.conf").write_text(written)
    top = work / "condor_config"
    top.write_text(f"LOCAL_CONFIG_DIR = {work / 'config.d'}\n")
    result = subprocess.run(
        [sys.executable, "-c", _READER, str(work / "config.d" / "50-condor-annex.conf"), OWNER, json.dumps(names)],
        env={"CONDOR_CONFIG": str(top), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    return ReadBack(answer["set"], answer["values"], answer["daemons"], answer["runs_owner"], answer["runs_other"])


def expected_knobs(security: str, uid_domain: str) -> dict[str, str]:
    """What the node's template sets, as HTCondor reads it back, for the module's inputs."""
    method = "IDTOKENS" if security == "idtoken" else "PASSWORD"
    knobs = {
        "COLLECTOR_HOST": "cm.pool.example.org:9618",
        "CCB_ADDRESS": "cm.pool.example.org:9618",
        "AnnexName": f'"{ANNEX}"',
        "AnnexProject": f'"{PROJECT}"',
        "IsAnnex": "True",
        "EC2InstanceID": f'"{INSTANCE_ID}"',
        "START": f'(TARGET.Owner =?= "{OWNER}")',
        "STARTD_NOCLAIM_SHUTDOWN": str(IDLE),
        "MASTER.DAEMON_SHUTDOWN_FAST": "(STARTD_StartTime == 0) && ((time() - DaemonStartTime) > 60)",
        "DEFAULT_MASTER_SHUTDOWN_SCRIPT": node_config.MASTER_SHUTDOWN_SCRIPT,
        "TRUST_DOMAIN": "cm.pool.example.org",
        "SEC_DEFAULT_AUTHENTICATION_METHODS": f"FS, {method}",
        "SEC_CLIENT_AUTHENTICATION_METHODS": f"FS, {method}",
        "SEC_DEFAULT_AUTHENTICATION": "REQUIRED",
        "SEC_DEFAULT_ENCRYPTION": "REQUIRED",
        "SEC_DEFAULT_INTEGRITY": "REQUIRED",
        "SEC_READ_AUTHENTICATION": "OPTIONAL",
        "SEC_ENABLE_MATCH_PASSWORD_AUTHENTICATION": "True",
        "ALLOW_READ": "*",
        "ALLOW_ADMINISTRATOR": f"root@{uid_domain}, condor_pool@*",
        "ALLOW_DAEMON": f"root@{uid_domain}, condor_pool@*, condor@*",
    }
    if security == "idtoken":
        knobs["SEC_TOKEN_DIRECTORY"] = knobs["SEC_TOKEN_SYSTEM_DIRECTORY"] = node_config.TOKEN_DIRECTORY
    else:
        knobs["SEC_PASSWORD_FILE"] = node_config.PASSWORD_FILE
    return knobs


# Read as a list with the annex's names added to whatever the metaknobs put there.
APPENDED = {"STARTD_ATTRS", "MASTER_ATTRS"}
# Not in the file: HTCondor's defaults for these name a knob the template sets, so they change
# with it (the signing key is the pool password file unless a pool says otherwise).
DERIVED = {
    "COLLECTOR_HOST_STRING": "COLLECTOR_HOST",
    "ANNEX_TOKEN_DOMAIN": "TRUST_DOMAIN",
    "SEC_TOKEN_POOL_SIGNING_KEY_FILE": "SEC_PASSWORD_FILE",
}


def assert_exactly_the_template(node: Node, security: str) -> None:
    """Every line a metaknob or one NAME = VALUE (nothing that includes, pipes or continues), and
    HTCondor reads from it exactly the template's knobs, with the expected values."""
    text = node.path(node_config.INSTANCE_CONFIG_PATH).read_text()
    for line in text.splitlines():
        assert re.fullmatch(r"use (ROLE : Execute|FEATURE : PartitionableSlot)|[A-Za-z_][A-Za-z0-9_.]* = [^\\|]*[^\\| ]", line), line
    uid_domain = read_config(node, ["UID_DOMAIN"]).values["UID_DOMAIN"]
    expected = expected_knobs(security, uid_domain)
    read = read_config(node, sorted(expected))
    # Nothing beyond the template: every knob that differs from HTCondor's defaults is one of its
    # own (some of its knobs equal a default, and so do not show here).
    assert set(read.knobs) <= set(expected) | APPENDED | set(DERIVED), set(read.knobs) - set(expected)
    assert read.values == expected
    for name in set(DERIVED) & set(read.knobs):
        assert expected[DERIVED[name]] in read.knobs[name], name
    for name in APPENDED:
        assert {"AnnexName", "AnnexProject", "IsAnnex", "EC2InstanceID"} <= set(read.knobs[name].split()), name
    assert set(read.daemons.replace(",", " ").split()) == {"MASTER", "STARTD"}
    assert read.runs_owner is True and read.runs_other is False


# --- static checks ---------------------------------------------------------------------------


def test_script_is_shellcheck_clean() -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run([str(shellcheck), "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_script_and_renderer_agree_on_instance_paths() -> None:
    text = SCRIPT.read_text()
    for path in (
        node_config.INSTANCE_CONFIG_PATH,
        node_config.TOKEN_DIRECTORY,
        node_config.TOKEN_FILE_NAME,
        node_config.PASSWORD_FILE.rsplit("/", 1)[0],
        node_config.MASTER_SHUTDOWN_SCRIPT.rsplit("/", 1)[1],
    ):
        assert path in text.replace("$CONFIG_DIR/", node_config.CONFIG_DIR + "/"), path
    for name in (contract.TAG_ANNEX_NAME, contract.TAG_PROJECT, contract.TAG_EXPIRY, contract.TAG_IDLE,
                 contract.NODE_ENV_OBJECT, contract.TOKEN_OBJECT, contract.PASSWORD_OBJECT):
        assert f"={name}\n" in text, name
    assert f'key="{contract.annex_prefix("$1", "$2")}$3"' in text


# --- boot ------------------------------------------------------------------------------------


def test_boot_installs_config_token_and_guardrails(boot: Boot) -> None:
    node, imds = boot.node, boot.imds
    assert node.poweroffs() == []
    config = node.path(node_config.INSTANCE_CONFIG_PATH)
    assert f'EC2InstanceID = "{INSTANCE_ID}"' in config.read_text()
    assert mode_of(config) == 0o644
    assert sorted(p.name for p in config.parent.iterdir()) == [config.name]

    token = node.path(f"{node_config.TOKEN_DIRECTORY}/{node_config.TOKEN_FILE_NAME}")
    assert token.read_text() == boot.secret + "\n"
    assert mode_of(token) == 0o600
    assert mode_of(token.parent) == 0o700
    assert not node.path(node_config.PASSWORD_FILE).exists()

    installed = node.path("/usr/local/libexec/condor-annex/bootstrap.sh")
    assert installed.read_bytes() == SCRIPT.read_bytes() and mode_of(installed) == 0o755
    shutdown = node.path(node_config.MASTER_SHUTDOWN_SCRIPT)
    assert mode_of(shutdown) == 0o755 and "bootstrap.sh poweroff" in shutdown.read_text()
    for unit, mode in (("condor-annex-watchdog", "watchdog"), ("condor-annex-deadman", "deadman")):
        service = node.path(f"/etc/systemd/system/{unit}.service").read_text()
        assert f"ExecStart=/usr/local/libexec/condor-annex/bootstrap.sh {mode}" in service
        assert f"ANNEX_BUCKET={BUCKET}" in service
        assert "OnUnitActiveSec=1min" in node.path(f"/etc/systemd/system/{unit}.timer").read_text()

    calls = node.systemctl_calls()
    assert "enable --now condor-annex-watchdog.timer condor-annex-deadman.timer" in calls
    # HTCondor starts only after its configuration is in place, and the timers came first.
    assert calls.index("restart condor") > calls.index("daemon-reload")

    # Jobs (never root) are cut off from the metadata service, and so from the role's keys.
    nft = node.recorded("nft")
    assert nft[0] == "-f -"
    assert "ip daddr 169.254.169.254 meta skuid != 0 drop" in "\n".join(nft)

    # IMDSv2 only: every metadata read carried a session token.
    assert imds.refused_gets == 0 and imds.served_gets >= 5
    log = node.log_text()
    assert "boot complete" in log and INSTANCE_ID in log
    assert boot.secret not in log + boot.result.stdout + boot.result.stderr


def test_written_configuration_reads_back_with_htcondor(boot: Boot) -> None:
    assert_exactly_the_template(boot.node, "idtoken")


def test_boot_in_password_mode_installs_the_pool_password(node: Node, clients) -> None:
    secret = upload_annex(clients, "password")
    result = node.run(now=BOOT_AT)
    assert result.returncode == 0, result.stderr
    password = node.path(node_config.PASSWORD_FILE)
    assert password.read_bytes() == secret.encode()
    assert mode_of(password) == 0o600 and mode_of(password.parent) == 0o700
    assert not node.path(node_config.TOKEN_DIRECTORY).exists()
    assert secret not in result.stdout + result.stderr + node.log_text()
    assert_exactly_the_template(node, "password")


def test_boot_without_the_annex_objects_powers_off(node: Node, clients) -> None:
    clients.s3.create_bucket(Bucket=BUCKET)
    result = node.run(now=BOOT_AT)
    assert result.returncode != 0
    assert node.poweroffs() == [""]
    assert "boot failed" in node.log_text()
    # The guardrails were installed before the step that failed.
    assert node.path("/etc/systemd/system/condor-annex-watchdog.timer").exists()
    assert "restart condor" not in node.systemctl_calls()


def boot_with_settings(node: Node, clients, text: str) -> subprocess.CompletedProcess:
    upload_annex(clients)
    put(clients, contract.NODE_ENV_OBJECT, text)
    return node.run(now=BOOT_AT)


def assert_refused_before_htcondor(node: Node, result: subprocess.CompletedProcess, *named: str) -> None:
    """Exit 2 with the value named, powered off, HTCondor never configured, installed or started."""
    assert result.returncode == 2, result.stderr
    assert node.poweroffs() == [""]
    assert "REFUSED" in result.stderr and all(n in result.stderr for n in named), result.stderr
    assert not node.path(node_config.INSTANCE_CONFIG_PATH).exists()
    assert not node.path(node_config.TOKEN_DIRECTORY).exists()
    assert "restart condor" not in node.systemctl_calls() and "enable condor" not in node.systemctl_calls()
    assert not Path("/tmp/owned-by-annex-test").exists()


def settings_with(key: str, value: str) -> str:
    """annex.env as the broker writes it, with one value replaced as text (newlines and all)."""
    lines = node_config.render_node_env(inputs()).splitlines(keepends=True)
    return "".join(f"{key}={value}\n" if line.startswith(f"{key}=") else line for line in lines)


# Each tries to add configuration, or a command, through one of the node's values. The ten
# thousand characters are a list of collectors every one of which is well formed.
HOSTILE_SETTINGS = {
    "newline": ("ANNEX_COLLECTOR_HOST", "cm.pool.example.org\nSTART = True"),
    "trailing-pipe": ("ANNEX_TRUST_DOMAIN", "touch /tmp/owned-by-annex-test |"),
    "backslash-continuation": ("ANNEX_OWNER", "needsmoore\\"),
    "include-command": ("ANNEX_NAME", "include command : touch /tmp/owned-by-annex-test"),
    "startd-cron": ("ANNEX_COLLECTOR_HOST",
                    "cm\nSTARTD_CRON_JOBLIST = owned\nSTARTD_CRON_OWNED_EXECUTABLE = /usr/bin/touch"),
    "user-job-wrapper": ("ANNEX_OWNER", "needsmoore\nUSER_JOB_WRAPPER = /tmp/owned-by-annex-test"),
    "ten-kilobytes": ("ANNEX_COLLECTOR_HOST", ", ".join(["cm.pool.example.org:9618"] * 400)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SETTINGS))
def test_boot_refuses_a_hostile_value_and_powers_off_before_htcondor(node: Node, clients, case: str) -> None:
    key, value = HOSTILE_SETTINGS[case]
    result = boot_with_settings(node, clients, settings_with(key, value))
    named = key if "\n" not in value else "no setting"
    assert_refused_before_htcondor(node, result, named)


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("unknown key", "ANNEX_EXTRA_CONFIG=START = True\n"),
        ("configuration line", "SUSPEND = True\n"),
        ("key given twice", "ANNEX_NAME=other\n"),
        ("idle out of range", "ANNEX_IDLE_SECONDS=5\n"),
        ("dead-man out of range", "ANNEX_DEADMAN_SECONDS=999999\n"),
        ("security mode", "ANNEX_SECURITY=kerberos\n"),
    ],
)
def test_boot_refuses_settings_that_are_not_the_brokers(node: Node, clients, case: str, text: str) -> None:
    base = node_config.render_node_env(inputs())
    if case in ("idle out of range", "dead-man out of range", "security mode"):
        key = text.split("=", 1)[0]
        body = settings_with(key, text.split("=", 1)[1].rstrip("\n"))
    else:
        body = base + text
    result = boot_with_settings(node, clients, body)
    assert_refused_before_htcondor(node, result)


def test_boot_refuses_settings_of_another_annex(node: Node, clients) -> None:
    upload_annex(clients)
    other = NodeConfigInputs(**{**inputs().__dict__, "annex_name": "someone-elses"})
    put(clients, contract.NODE_ENV_OBJECT, node_config.render_node_env(other))
    result = node.run(now=BOOT_AT)
    assert_refused_before_htcondor(node, result, "another annex")


def test_boot_refuses_an_unsafe_tag(node: Node, imds: FakeImds, clients) -> None:
    upload_annex(clients)
    imds.tags[contract.TAG_PROJECT] = "../other-project"
    result = node.run(now=BOOT_AT)
    assert result.returncode != 0 and node.poweroffs() == [""]
    assert "unusable project id" in result.stderr


# --- lease watchdog --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "powers_off"), [(-60, False), (-1, False), (0, True), (1, True), (86400, True)]
)
def test_watchdog_powers_off_from_the_expiry_on(node: Node, offset: int, powers_off: bool) -> None:
    result = node.run("watchdog", now=EXPIRY_EPOCH + offset)
    assert result.returncode == 0, result.stderr
    assert (node.poweroffs() == [""]) is powers_off
    if not powers_off:
        assert f"{-offset} s left" in node.log_text()


def test_watchdog_follows_an_extension(node: Node, imds: FakeImds) -> None:
    assert node.run("watchdog", now=EXPIRY_EPOCH - 30).returncode == 0
    assert node.poweroffs() == []
    imds.tags[contract.TAG_EXPIRY] = "2026-12-19T23:59:00Z"
    assert node.run("watchdog", now=EXPIRY_EPOCH + 600).returncode == 0
    assert node.poweroffs() == []
    assert node.run("watchdog", now=EXPIRY_EPOCH + 86400).returncode == 0
    assert node.poweroffs() == [""]


def test_watchdog_powers_off_when_the_lease_tag_is_missing(node: Node, imds: FakeImds) -> None:
    del imds.tags[contract.TAG_EXPIRY]
    assert node.run("watchdog", now=BOOT_AT).returncode == 0
    assert node.poweroffs() == [""]
    assert "missing" in node.log_text()


@pytest.mark.parametrize("garbage", ["tomorrow", "2026-13-45T99:00:00Z", "2026-12-18 23:59", "1766102340"])
def test_watchdog_powers_off_when_the_lease_tag_is_garbage(node: Node, imds: FakeImds, garbage: str) -> None:
    imds.tags[contract.TAG_EXPIRY] = garbage
    assert node.run("watchdog", now=BOOT_AT).returncode == 0
    assert node.poweroffs() == [""]
    assert "not a UTC time" in node.log_text()


def test_watchdog_keeps_running_while_imds_is_briefly_down(node: Node) -> None:
    result = node.run("watchdog", now=BOOT_AT, ANNEX_IMDS_URL=f"http://127.0.0.1:{emu.free_port()}")
    assert result.returncode == 0
    assert node.poweroffs() == []
    assert "unreachable" in node.log_text()


UNREADABLE_LIMIT = guardrails.LEASE_UNREADABLE_LIMIT_SECONDS


@pytest.mark.parametrize("failure", ["metadata service down", "tag reads fail"])
def test_watchdog_powers_off_after_fifteen_minutes_of_an_unreadable_lease(node: Node, imds: FakeImds, failure: str):
    """One run a minute, as the timer runs it, the clock moved by ANNEX_NOW; the lease itself is
    far in the future, so only the unreadable lease can end the instance."""
    extra = {}
    if failure == "metadata service down":
        extra["ANNEX_IMDS_URL"] = f"http://127.0.0.1:{emu.free_port()}"
    else:
        imds.failing_tags = True
    for minute in range(UNREADABLE_LIMIT // 60):
        assert node.run("watchdog", now=BOOT_AT + 60 * minute, **extra).returncode == 0
        assert node.poweroffs() == [], f"powered off after {minute} min"
    assert node.run("watchdog", now=BOOT_AT + UNREADABLE_LIMIT, **extra).returncode == 0
    assert node.poweroffs() == [""]
    assert f"for {UNREADABLE_LIMIT} s in a row" in node.log_text()


def test_watchdog_never_powers_off_while_the_lease_is_readable(node: Node, imds: FakeImds) -> None:
    # A record of an old outage does not count once the lease reads again.
    state = node.path("/var/lib/condor-annex")
    state.mkdir(parents=True, exist_ok=True)
    (state / "lease-unreadable-since").write_text(f"{BOOT_AT - 86400}\n")
    for minute in range(30):
        assert node.run("watchdog", now=BOOT_AT + 60 * minute).returncode == 0
    assert node.poweroffs() == []
    assert not (state / "lease-unreadable-since").exists()
    # Unreadable for ten minutes, readable again, unreadable for ten more: each outage counts alone.
    start = BOOT_AT + 3600
    for minute in range(21):
        imds.failing_tags = minute != 10
        assert node.run("watchdog", now=start + 60 * minute).returncode == 0
    imds.failing_tags = False
    assert node.poweroffs() == []


# Through both parsers: the enforcer's (annex_cloud.expiry) and the watchdog's (the shell's ERE,
# then date). Each must accept exactly the same texts, at the same moment.
EXPIRY_SAMPLES = [
    "2026-12-18T23:59:00Z", "2028-02-29T12:00:00Z", "1970-01-01T00:01:00Z", "9999-12-31T23:59:59Z",
    "2026-02-29T00:00:00Z", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z",
    "2026-12-00T00:00:00Z", "2026-12-18T24:00:00Z", "2026-12-18T23:60:00Z", "2026-12-18T23:59:60Z",
    "0000-01-01T00:00:00Z", "2026-12-18T23:59Z", "2026-12-18T23:59:00", "2026-12-18T23:59:00z",
    "2026-12-18T23:59:00.5Z", "2026-12-18T23:59:00+00:00", " 2026-12-18T23:59:00Z", "2026-12-18T23:59:00Z ",
    "2026-12-18 23:59:00Z", "20261218T235900Z", "2026-1-18T23:59:00Z", "٢٠٢٦-12-18T23:59:00Z", "",
]


@pytest.mark.parametrize("text", EXPIRY_SAMPLES)
def test_watchdog_and_enforcer_read_the_lease_tag_alike(node: Node, imds: FakeImds, text: str) -> None:
    parsed = parse_expiry_tag(text)
    imds.tags[contract.TAG_EXPIRY] = text
    if parsed is None:
        assert node.run("watchdog", now=BOOT_AT).returncode == 0
        assert node.poweroffs() == [""], f"the watchdog accepted {text!r}"
        assert "not a UTC time" in node.log_text() or ("missing" in node.log_text() and text == "")
    else:
        epoch = calendar.timegm(parsed.utctimetuple())
        assert node.run("watchdog", now=epoch - 7).returncode == 0
        assert node.poweroffs() == [], f"the watchdog refused {text!r}"
        assert "(7 s left)" in node.log_text()


def test_watchdog_installs_a_reminted_token(booted: Node, boot: Boot, clients, imds: FakeImds) -> None:
    # The emulator was reset for this test: the bucket holds what the boot fetched.
    upload_annex(clients)
    put(clients, contract.TOKEN_OBJECT, boot.secret + "\n")
    token = booted.path(f"{node_config.TOKEN_DIRECTORY}/{node_config.TOKEN_FILE_NAME}")
    # Same token: nothing changes, HTCondor is not poked.
    assert booted.run("watchdog", now=BOOT_AT + 60).returncode == 0
    assert booted.recorded("condor_reconfig") == []
    # condor_annex extend: a new expiry tag and a re-minted token.
    imds.tags[contract.TAG_EXPIRY] = "2026-12-25T00:00:00Z"
    fresh = "secret-" + secrets.token_hex(16)
    put(clients, contract.TOKEN_OBJECT, fresh + "\n")
    result = booted.run("watchdog", now=EXPIRY_EPOCH + 60)
    assert result.returncode == 0, result.stderr
    assert booted.poweroffs() == []
    assert token.read_text() == fresh + "\n" and mode_of(token) == 0o600
    assert len(booted.recorded("condor_reconfig")) == 1
    assert fresh not in result.stdout + result.stderr + booted.log_text()
    assert not any(p.name.startswith(".") for p in token.parent.iterdir())


# --- dead-man --------------------------------------------------------------------------------


def test_deadman_powers_off_at_its_deadline_when_not_joined(booted: Node) -> None:
    booted.condor_status_answers("")
    assert booted.run("deadman", now=BOOT_AT + DEADMAN - 1).returncode == 0
    assert booted.poweroffs() == []
    assert booted.run("deadman", now=BOOT_AT + DEADMAN).returncode == 0
    assert booted.poweroffs() == [""]
    asked = booted.recorded("condor_status")
    assert asked and all(f'EC2InstanceID == "{INSTANCE_ID}"' in call for call in asked)


def test_deadman_stands_down_once_joined(booted: Node) -> None:
    booted.condor_status_answers("slot1@ip-10-0-0-5.ec2.internal\n")
    assert booted.run("deadman", now=BOOT_AT + 120).returncode == 0
    assert booted.path("/var/lib/condor-annex/joined").exists()
    assert "disable --now condor-annex-deadman.timer" in booted.systemctl_calls()
    # Later the pool is unreachable and the deadline long past: it no longer checks.
    booted.condor_status_answers("", status=1)
    asked = len(booted.recorded("condor_status"))
    assert booted.run("deadman", now=BOOT_AT + 10 * DEADMAN).returncode == 0
    assert booted.poweroffs() == []
    assert len(booted.recorded("condor_status")) == asked


@pytest.mark.parametrize(
    ("asked", "used"),
    [("999999", guardrails.DEADMAN_MAX_SECONDS), ("10", guardrails.DEADMAN_MIN_SECONDS),
     ("soon", guardrails.DEADMAN_DEFAULT_SECONDS), ("0900", 900)],
)
def test_deadman_time_is_kept_within_its_bounds(booted: Node, asked: str, used: int) -> None:
    env = booted.path("/var/lib/condor-annex/annex.env")
    lines = [line for line in env.read_text().splitlines() if not line.startswith("ANNEX_DEADMAN_SECONDS=")]
    env.write_text("\n".join(lines + [f"ANNEX_DEADMAN_SECONDS={asked}"]) + "\n")
    booted.condor_status_answers("")
    assert booted.run("deadman", now=BOOT_AT + used - 1).returncode == 0
    assert booted.poweroffs() == []
    assert booted.run("deadman", now=BOOT_AT + used).returncode == 0
    assert booted.poweroffs() == [""]
    assert f"within {used} s of boot" in booted.log_text()


def test_deadman_counts_a_failed_query_as_not_joined(booted: Node) -> None:
    booted.condor_status_answers("slot1@somewhere\n", status=1)
    assert booted.run("deadman", now=BOOT_AT + DEADMAN + 5).returncode == 0
    assert booted.poweroffs() == [""]
    assert not booted.path("/var/lib/condor-annex/joined").exists()


def test_poweroff_mode_logs_its_reason(node: Node) -> None:
    assert node.run("poweroff", "idle", "shutdown").returncode == 0
    assert node.poweroffs() == [""]
    assert "powering off: idle shutdown" in node.log_text()
