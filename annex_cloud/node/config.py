"""The typed values an annex's execute nodes are configured from, and their one set of rules.

The broker writes ``annex.env`` (``render_node_env``), ``KEY=VALUE`` lines and nothing else, under
the annex's prefix (``annex_cloud.layout``). The node's bootstrap (``annex_cloud/node/bootstrap.sh``)
parses it without sourcing it, checks every value AGAIN against the same patterns and bounds
(its copies are kept equal to these by tests/unit/test_bootstrap_constants.py), and renders its
HTCondor configuration from a fixed template it carries. No configuration text from the request
ever reaches a node: a value that breaks a rule is refused by the broker (exit 2 on the client,
the value named) and, should one reach a node anyway, the node powers off before HTCondor starts.

Every pattern is a POSIX extended regular expression, anchored, so that bash's ``[[ =~ ]]`` and
Python's ``re.fullmatch`` read it alike: no ``(?:``, no backslash inside brackets, no class
shorthands. None admits a quote, a backslash, ``$``, ``(``, ``|``, whitespace or a newline, so a
value can neither end its configuration line, continue it onto the next, expand a macro, run a
command nor close a ClassAd string.

Where things live on the instance (the bootstrap holds the same paths; a test keeps them equal):
``INSTANCE_CONFIG_PATH`` the rendered configuration, the IDTOKEN in ``TOKEN_DIRECTORY`` as
``TOKEN_FILE_NAME``, the pool password at ``PASSWORD_FILE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from annex_cloud import guardrails
from annex_cloud.errors import Refused

CONFIG_DIR = "/etc/condor/config.d"
INSTANCE_CONFIG_PATH = f"{CONFIG_DIR}/50-condor-annex.conf"
TOKEN_DIRECTORY = "/etc/condor/tokens.d"
TOKEN_FILE_NAME = "condor-annex.token"
PASSWORD_FILE = "/etc/condor/passwords.d/POOL"
# Written by the bootstrap; the master execs it instead of exiting, which powers the machine off.
MASTER_SHUTDOWN_SCRIPT = "/usr/local/libexec/condor-annex/master-shutdown.sh"

SECURITY_MODES = ("idtoken", "password")

# Any one value, whatever its pattern allows: a list of collectors cannot grow without bound.
MAX_VALUE_LENGTH = 255

ANNEX_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
PROJECT_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# IAM user names and Unix login names both fit here.
OWNER_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9._@+=,-]{0,63}$"
# A TCP port, 1 to 65535, without leading zeros.
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
# host or [IPv6], optional :port, optional ?sock=NAME (a collector behind the shared port).
_HOST = (
    r"([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    f"(:{_PORT})?" r"(\?sock=[A-Za-z0-9_-]+)?"
)
# One collector or a comma-separated list (a highly available pool).
COLLECTOR_HOST_PATTERN = f"^{_HOST}(, ?{_HOST})*$"
_DOMAIN = "[A-Za-z0-9][A-Za-z0-9._:@-]*"
# HTCondor's default trust domain is $(COLLECTOR_HOST), so any collector address is one too.
TRUST_DOMAIN_PATTERN = f"^({_DOMAIN}(, ?{_DOMAIN})*|{_HOST}(, ?{_HOST})*)$"
SECURITY_PATTERN = "^(idtoken|password)$"
SECONDS_PATTERN = "^[0-9]{1,9}$"

# What each pattern allows, in words: a message names this, never the expression.
PATTERN_WORDS = {
    ANNEX_NAME_PATTERN: "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    PROJECT_ID_PATTERN: "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    OWNER_PATTERN: "a user name: up to 64 letters, digits and . _ @ + = , - (not starting with one of . @ + = , -)",
    COLLECTOR_HOST_PATTERN: "a host name or address, optionally :port (1 to 65535), or several separated by commas",
    TRUST_DOMAIN_PATTERN: "a host-like name, such as the pool's domain (letters, digits and . _ : @ -, "
                          "starting with a letter or digit)",
    SECURITY_PATTERN: "idtoken or password",
    SECONDS_PATTERN: "a whole number of seconds",
}

MIN_IDLE_SECONDS = 60
MAX_IDLE_SECONDS = 24 * 3600  # the broker's longest idle time, --idle 1440
MIN_DEADMAN_SECONDS = guardrails.DEADMAN_MIN_SECONDS
MAX_DEADMAN_SECONDS = guardrails.DEADMAN_MAX_SECONDS

# The master gives the startd this long to come up before treating "no startd" as "idle exit".
STARTD_GRACE_SECONDS = 60

# annex.env's keys, in the order the broker writes them; the node refuses any other.
ENV_ANNEX_NAME = "ANNEX_NAME"
ENV_PROJECT = "ANNEX_PROJECT"
ENV_OWNER = "ANNEX_OWNER"
ENV_COLLECTOR_HOST = "ANNEX_COLLECTOR_HOST"
ENV_TRUST_DOMAIN = "ANNEX_TRUST_DOMAIN"
ENV_SECURITY = "ANNEX_SECURITY"
ENV_IDLE_SECONDS = "ANNEX_IDLE_SECONDS"
ENV_DEADMAN_SECONDS = "ANNEX_DEADMAN_SECONDS"
ENV_KEYS = (
    ENV_ANNEX_NAME, ENV_PROJECT, ENV_OWNER, ENV_COLLECTOR_HOST, ENV_TRUST_DOMAIN, ENV_SECURITY,
    ENV_IDLE_SECONDS, ENV_DEADMAN_SECONDS,
)


@dataclass(frozen=True)
class NodeConfigInputs:
    annex_name: str
    project_id: str
    owner: str  # the job Owner allowed to run here (the submitter's user name)
    collector_host: str
    trust_domain: str
    idle_seconds: int
    security: Literal["idtoken", "password"]
    deadman_seconds: int = guardrails.DEADMAN_DEFAULT_SECONDS


def shown(value: object, limit: int = 60) -> str:
    """A value for a message: quoted, control characters escaped, at most ``limit`` characters."""
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= limit else f"{text[: limit - 5]}...' ({len(str(value)):,} characters)"


def text_problem(value: object, pattern: str) -> str | None:
    """Why ``value`` may not be written into a node's configuration, or None."""
    if not isinstance(value, str):
        return "it is not text"
    if len(value) > MAX_VALUE_LENGTH:
        return f"it is {len(value):,} characters long; at most {MAX_VALUE_LENGTH} are allowed"
    if re.fullmatch(pattern, value) is None:
        return f"it must be {PATTERN_WORDS[pattern]}"
    return None


def check_text(label: str, value: object, pattern: str, next_step: str = "") -> str:
    """``value`` when it may go into a node's configuration; Refused naming it otherwise."""
    problem = text_problem(value, pattern)
    if problem is not None:
        raise Refused(
            f"the {label} {shown(value)} cannot be used on an annex instance",
            f"{problem}; anything else could change the node's HTCondor configuration",
            next_step or f"Choose a {label} made of the allowed characters.",
        )
    return value  # type: ignore[return-value]


def _check_int(label: str, value: object, low: int, high: int) -> int:
    # bool is an int subclass; True seconds is a mistake, not 1.
    if type(value) is not int or not low <= value <= high:
        raise Refused(
            f"the {label} {shown(value)} is out of range",
            f"it must be a whole number of seconds from {low} to {high}",
            f"Give a {label} within that range.",
        )
    return value


def validate(inputs: NodeConfigInputs) -> NodeConfigInputs:
    """Refuse anything that could not be written safely into a config line or a ClassAd string."""
    check_text("annex name", inputs.annex_name, ANNEX_NAME_PATTERN)
    check_text("project id", inputs.project_id, PROJECT_ID_PATTERN)
    check_text("job owner", inputs.owner, OWNER_PATTERN)
    check_text("collector address", inputs.collector_host, COLLECTOR_HOST_PATTERN)
    check_text("trust domain", inputs.trust_domain, TRUST_DOMAIN_PATTERN)
    check_text("pool security mode", inputs.security, SECURITY_PATTERN)
    _check_int("idle time", inputs.idle_seconds, MIN_IDLE_SECONDS, MAX_IDLE_SECONDS)
    _check_int("dead-man time", inputs.deadman_seconds, MIN_DEADMAN_SECONDS, MAX_DEADMAN_SECONDS)
    return inputs


def render_node_env(inputs: NodeConfigInputs) -> str:
    """``KEY=VALUE`` settings for the bootstrap (parsed line by line on the instance, never sourced)."""
    validate(inputs)
    values = {
        ENV_ANNEX_NAME: inputs.annex_name,
        ENV_PROJECT: inputs.project_id,
        ENV_OWNER: inputs.owner,
        ENV_COLLECTOR_HOST: inputs.collector_host,
        ENV_TRUST_DOMAIN: inputs.trust_domain,
        ENV_SECURITY: inputs.security,
        ENV_IDLE_SECONDS: str(inputs.idle_seconds),
        ENV_DEADMAN_SECONDS: str(inputs.deadman_seconds),
    }
    assert tuple(values) == ENV_KEYS
    header = "# condor-annex instance settings: KEY=VALUE, checked by the bootstrap, never sourced.\n"
    return header + "".join(f"{key}={value}\n" for key, value in values.items())
