"""The HTCondor configuration an annex's execute nodes run with, rendered from typed values.

The broker writes two objects per annex (``contract.annex_prefix``): the HTCondor config
fragment from ``render_condor_config`` and the ``KEY=VALUE`` settings from ``render_node_env``,
which the instance bootstrap (``annex_cloud/node/bootstrap.sh``) parses without sourcing. Both are pure
text functions; every value that ends up in them is checked against a narrow character set first,
because a newline or a quote in an annex name or owner would otherwise become a configuration line
or a ClassAd expression of the caller's choosing on every instance.

Where things live on the instance (the bootstrap writes them; keep both sides in step):
``INSTANCE_CONFIG_PATH`` this fragment, ``INSTANCE_ID_CONFIG_PATH`` the instance's own identity
(read after this file, see the comment in the rendered text), the IDTOKEN in ``TOKEN_DIRECTORY``
as ``TOKEN_FILE_NAME``, the pool password at ``PASSWORD_FILE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from annex_cloud.errors import Refused

CONFIG_DIR = "/etc/condor/config.d"
INSTANCE_CONFIG_PATH = f"{CONFIG_DIR}/50-condor-annex.conf"
INSTANCE_ID_CONFIG_PATH = f"{CONFIG_DIR}/60-condor-annex-instance.conf"
TOKEN_DIRECTORY = "/etc/condor/tokens.d"
TOKEN_FILE_NAME = "condor-annex.token"
PASSWORD_FILE = "/etc/condor/passwords.d/POOL"
# Written by the bootstrap; the master execs it instead of exiting, which powers the machine off.
MASTER_SHUTDOWN_SCRIPT = "/usr/local/libexec/condor-annex/master-shutdown.sh"

SECURITY_MODES = ("idtoken", "password")

# The same patterns guard the instance side: bootstrap.sh checks tag values with them before
# building S3 keys from them.
ANNEX_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
PROJECT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
# IAM user names and Unix login names both fit here; no quote, backslash or space.
OWNER_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._@+=,-]{0,63}"
# host or [IPv6], optional :port, optional ?sock=NAME (a collector behind the shared port).
_HOST = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?(?:\?sock=[A-Za-z0-9_-]{1,64})?"
)
# One collector or a comma-separated list (a highly available pool).
COLLECTOR_HOST_PATTERN = rf"{_HOST}(?:, ?{_HOST})*"
_DOMAIN = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,252}"
# HTCondor's default trust domain is $(COLLECTOR_HOST), so any collector address is one too.
TRUST_DOMAIN_PATTERN = rf"(?:{_DOMAIN}(?:, ?{_DOMAIN})*|{COLLECTOR_HOST_PATTERN})"

MIN_IDLE_SECONDS = 60
MAX_IDLE_SECONDS = 7 * 24 * 3600
MIN_DEADMAN_SECONDS = 300
MAX_DEADMAN_SECONDS = 24 * 3600

# The master gives the startd this long to come up before treating "no startd" as "idle exit".
STARTD_GRACE_SECONDS = 60


@dataclass(frozen=True)
class NodeConfigInputs:
    annex_name: str
    project_id: str
    owner: str  # the job Owner allowed to run here (the submitter's user name)
    collector_host: str
    trust_domain: str
    idle_seconds: int
    security: Literal["idtoken", "password"]
    start_owner_only: bool = True
    deadman_seconds: int = 1800


def shown(value: object, limit: int = 60) -> str:
    """A value for a message: quoted, control characters escaped, at most ``limit`` characters."""
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= limit else f"{text[: limit - 5]}...' ({len(str(value)):,} characters)"


def _check_text(label: str, value: object, pattern: str, hint: str) -> str:
    if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
        raise Refused(
            f"{label} {shown(value)} cannot be used on an annex instance",
            f"it must match {pattern} ({hint}); anything else could change the node's "
            "HTCondor configuration",
            f"choose a {label} made of the allowed characters",
        )
    return value


def _check_int(label: str, value: object, low: int, high: int) -> int:
    # bool is an int subclass; True seconds is a mistake, not 1.
    if type(value) is not int or not low <= value <= high:
        raise Refused(
            f"{label} {shown(value)} is out of range",
            f"it must be a whole number of seconds from {low} to {high}",
            f"give a {label} within that range",
        )
    return value


def validate(inputs: NodeConfigInputs) -> NodeConfigInputs:
    """Reject anything that could not be written safely into a config line or a ClassAd string."""
    _check_text("annex name", inputs.annex_name, ANNEX_NAME_PATTERN, "letters, digits, . _ -")
    _check_text("project id", inputs.project_id, PROJECT_ID_PATTERN, "letters, digits, . _ -")
    _check_text("owner", inputs.owner, OWNER_PATTERN, "letters, digits, . _ @ + = , -")
    _check_text("collector host", inputs.collector_host, COLLECTOR_HOST_PATTERN, "host[:port][, ...]")
    _check_text("trust domain", inputs.trust_domain, TRUST_DOMAIN_PATTERN, "a host-like name")
    _check_int("idle time", inputs.idle_seconds, MIN_IDLE_SECONDS, MAX_IDLE_SECONDS)
    _check_int("dead-man time", inputs.deadman_seconds, MIN_DEADMAN_SECONDS, MAX_DEADMAN_SECONDS)
    if inputs.security not in SECURITY_MODES:
        raise Refused(
            f"unknown pool security mode {inputs.security!r}",
            "an annex authenticates with an IDTOKEN or with the pool password",
            "use 'idtoken' or 'password'",
        )
    if not isinstance(inputs.start_owner_only, bool):
        raise Refused(
            f"start_owner_only must be true or false, not {inputs.start_owner_only!r}",
        )
    return inputs


def start_expression(inputs: NodeConfigInputs) -> str:
    """The startd's START expression (a ClassAd expression; the owner is already validated)."""
    if not inputs.start_owner_only:
        return "True"
    # =?= so a job ad without Owner is refused rather than left undefined.
    return f'(TARGET.Owner =?= "{inputs.owner}")'


def _security_lines(inputs: NodeConfigInputs) -> list[str]:
    if inputs.security == "idtoken":
        method = "IDTOKENS"
        material = [
            "# The annex's own IDTOKEN, minted for this annex and re-fetched by the lease watchdog",
            f"# after an extension: {TOKEN_DIRECTORY}/{TOKEN_FILE_NAME} (root only, mode 0600).",
            f"SEC_TOKEN_DIRECTORY = {TOKEN_DIRECTORY}",
            f"SEC_TOKEN_SYSTEM_DIRECTORY = {TOKEN_DIRECTORY}",
        ]
    else:
        method = "PASSWORD"
        material = [
            "# The pool password file as the pool stores it (root only, mode 0600).",
            f"SEC_PASSWORD_FILE = {PASSWORD_FILE}",
        ]
    return [
        f"TRUST_DOMAIN = {inputs.trust_domain}",
        *material,
        "# FS lets root on this instance run condor_reconfig and condor_off locally.",
        f"SEC_DEFAULT_AUTHENTICATION_METHODS = FS, {method}",
        f"SEC_CLIENT_AUTHENTICATION_METHODS = FS, {method}",
        "SEC_DEFAULT_AUTHENTICATION = REQUIRED",
        "SEC_DEFAULT_ENCRYPTION = REQUIRED",
        "SEC_DEFAULT_INTEGRITY = REQUIRED",
        "SEC_READ_AUTHENTICATION = OPTIONAL",
        "# Schedds reach the startd with the claim's own session key: an IDTOKEN node holds no",
        "# signing key and so could not verify a token presented to it.",
        "SEC_ENABLE_MATCH_PASSWORD_AUTHENTICATION = True",
        "ALLOW_READ = *",
        "ALLOW_ADMINISTRATOR = root@$(UID_DOMAIN), condor_pool@*",
        "ALLOW_DAEMON = $(ALLOW_ADMINISTRATOR), condor@*",
    ]


def render_condor_config(inputs: NodeConfigInputs) -> str:
    """The HTCondor config fragment for every execute node of one annex."""
    validate(inputs)
    lines = [
        f"# condor-annex execute node: annex {inputs.annex_name} of project {inputs.project_id}.",
        f"# Installed on the instance as {INSTANCE_CONFIG_PATH} (mode 0644).",
        "# The instance id is not known until boot: the bootstrap writes",
        f'#   EC2InstanceID = "i-..."   to {INSTANCE_ID_CONFIG_PATH},',
        "# which HTCondor reads after this file (config.d is read in name order). Macros expand",
        "# when used, so STARTD_ATTRS below may name it here.",
        "",
        "use ROLE : Execute",
        "use FEATURE : PartitionableSlot",
        "",
        f"COLLECTOR_HOST = {inputs.collector_host}",
        "# No inbound ports: the daemons register with the collector's connection broker and",
        "# every connection to them is made in reverse through it.",
        "CCB_ADDRESS = $(COLLECTOR_HOST)",
        "USE_SHARED_PORT = True",
        "",
        "# What makes this machine an annex's (condor_status -annex NAME matches AnnexName).",
        f'AnnexName = "{inputs.annex_name}"',
        f'AnnexProject = "{inputs.project_id}"',
        "IsAnnex = True",
        "STARTD_ATTRS = $(STARTD_ATTRS) AnnexName AnnexProject IsAnnex EC2InstanceID",
        "MASTER_ATTRS = $(MASTER_ATTRS) AnnexName AnnexProject IsAnnex EC2InstanceID",
        "",
        "# Whose jobs may run here.",
        f"START = {start_expression(inputs)}",
        "",
        "# Idle shutdown: the startd exits once no slot has been claimed for this long ...",
        f"STARTD_NOCLAIM_SHUTDOWN = {inputs.idle_seconds}",
        "# ... the master, seeing no startd once it has had time to start one, exits too ...",
        f"MASTER.DAEMON_SHUTDOWN_FAST = (STARTD_StartTime == 0) && "
        f"((time() - DaemonStartTime) > {STARTD_GRACE_SECONDS})",
        "# ... and on exit runs this as root instead, which powers the instance off (and so",
        "# terminates it). Any master exit does, so never restart condor on an annex node.",
        f"DEFAULT_MASTER_SHUTDOWN_SCRIPT = {MASTER_SHUTDOWN_SCRIPT}",
        "",
        "# Pool security.",
        *_security_lines(inputs),
        "",
    ]
    return "\n".join(lines)


def render_node_env(inputs: NodeConfigInputs) -> str:
    """``KEY=VALUE`` settings for the bootstrap (parsed line by line on the instance, never sourced)."""
    validate(inputs)
    values = {
        "ANNEX_NAME": inputs.annex_name,
        "ANNEX_PROJECT": inputs.project_id,
        "ANNEX_OWNER": inputs.owner,
        "ANNEX_SECURITY": inputs.security,
        "ANNEX_IDLE_SECONDS": str(inputs.idle_seconds),
        "ANNEX_DEADMAN_SECONDS": str(inputs.deadman_seconds),
        "ANNEX_COLLECTOR_HOST": inputs.collector_host,
    }
    header = "# condor-annex instance settings: KEY=VALUE, read by the bootstrap, never sourced.\n"
    return header + "".join(f"{key}={value}\n" for key, value in values.items())
