"""The scientist's pool: what her CONDOR_CONFIG says, and the security material an annex needs.

The htcondor2 bindings are only ever loaded in a child process with a deadline: a syntax error in a
configuration makes the library exit its process, a circular macro makes a lookup spin forever, and
``include command`` lines run programs. None of that may take the client down or hang it.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from annex_common.errors import BadInput
from annex_common.times import format_local
from annex_user import tokens
from templates import contract

# HTCondor's special value: configuration from _CONDOR_* environment variables only, no file.
ONLY_ENV = "ONLY_ENV"
_REPLY_MARKER = "ANNEX-POOL-REPLY:"
# Group/other permission bits: HTCondor's read_secure_file refuses a key file with any of them.
_NOT_PRIVATE = 0o077
DEFAULT_COLLECTOR_PORT = 9618

_READ_CONFIG_CHILD = f"""
import json, sys
import htcondor2
values = {{name: htcondor2.param.get(name) for name in sys.argv[1:]}}
print({_REPLY_MARKER!r} + json.dumps(values, default=str), flush=True)
"""

_QUERY_COLLECTOR_CHILD = f"""
import json, sys
import htcondor2
ads = htcondor2.Collector(sys.argv[1]).query(
    htcondor2.AdType.Startd,
    constraint="EC2InstanceID =!= undefined",
    projection=["EC2InstanceID"],
)
print({_REPLY_MARKER!r} + json.dumps([ad.get("EC2InstanceID") for ad in ads], default=str),
      flush=True)
"""

_PARAMS = (
    "COLLECTOR_HOST",
    "TRUST_DOMAIN",
    "SEC_PASSWORD_FILE",
    "SEC_TOKEN_POOL_SIGNING_KEY_FILE",
    "SEC_TOKEN_POOL_SIGNING_KEY_IS_PASSWORD",
)


@dataclass(frozen=True)
class PoolInfo:
    condor_config: str
    collector_host: str
    trust_domain: str
    password_file: str | None
    signing_key_file: str | None
    # SEC_TOKEN_POOL_SIGNING_KEY_IS_PASSWORD: read the key the pre-9.0 way (stop at a NUL).
    signing_key_is_password: bool = False


@dataclass(frozen=True, repr=False)
class PoolSecurity:
    """What an annex's instances receive to join the pool. The payload is secret: never shown."""

    kind: Literal["idtoken", "password"]
    object_name: str
    payload: bytes = field(compare=False)
    description: str

    def __repr__(self) -> str:
        return f"PoolSecurity(kind={self.kind!r}, object_name={self.object_name!r})"

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class _ChildResult:
    returncode: int | None  # None: killed at the deadline
    stdout: str
    stderr: str


# --- child processes --------------------------------------------------------------------------


def _child_env(condor_config: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    # A copy of our environment, so $ENV() in the pool's configuration sees what she sees.
    env = dict(os.environ)
    env["CONDOR_CONFIG"] = condor_config
    env.update(extra or {})
    return env


def _run_child(code: str, args: list[str], env: dict[str, str], timeout: float) -> _ChildResult:
    # Own session, so the deadline also ends whatever an `include command` line started.
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return _ChildResult(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return _ChildResult(None, out, err)


def parse_child_reply(stdout: str) -> object | None:
    """The JSON value a child printed after the reply marker; None when it printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(_REPLY_MARKER):
            try:
                return json.loads(line[len(_REPLY_MARKER) :])
            except json.JSONDecodeError:
                return None
    return None


# --- reading the configuration ----------------------------------------------------------------


def _check_config_file(condor_config: str | None) -> str:
    if not condor_config:
        raise BadInput(
            "CONDOR_CONFIG is not set, so there is no pool to expand.",
            "condor_annex joins the pool your HTCondor configuration describes.",
            "Set CONDOR_CONFIG to your pool's configuration file "
            "(for example: export CONDOR_CONFIG=/etc/condor/condor_config).",
        )
    if condor_config == ONLY_ENV:
        return condor_config
    if not os.path.exists(condor_config):
        raise BadInput(
            f"The pool configuration {condor_config} does not exist.",
            "CONDOR_CONFIG names that file.",
            "Point CONDOR_CONFIG at your pool's configuration file.",
        )
    try:
        with open(condor_config, "rb"):
            pass
    except IsADirectoryError:
        raise BadInput(
            f"The pool configuration {condor_config} is a directory, not a file.",
            "CONDOR_CONFIG must name a configuration file.",
            "Point CONDOR_CONFIG at your pool's configuration file.",
        ) from None
    except OSError as exc:
        raise BadInput(
            f"Cannot read the pool configuration {condor_config}.",
            exc.strerror or str(exc),
            "Make the file readable by you, or ask your pool administrator for a copy.",
        ) from None
    return condor_config


def _config_error_excerpt(result: _ChildResult) -> str:
    lines = [ln.strip() for ln in (result.stderr + "\n" + result.stdout).splitlines()]
    useful = [ln for ln in lines if ln and not ln.startswith(_REPLY_MARKER)]
    picked = [ln for ln in useful if "Configuration Error" in ln] or useful[-3:]
    return " ".join(picked[:3])[:400] or f"the reader exited with status {result.returncode}"


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _truthy(value: object) -> bool:
    return _text(value).lower() in ("true", "1", "yes", "t")


def read_pool(condor_config: str | None, *, timeout: float = 15.0) -> PoolInfo:
    """Read the pool the given CONDOR_CONFIG describes (the caller passes $CONDOR_CONFIG)."""
    path = _check_config_file(condor_config)
    result = _run_child(_READ_CONFIG_CHILD, list(_PARAMS), _child_env(path), timeout)
    if result.returncode is None:
        raise BadInput(
            f"Reading the pool configuration {path} did not finish within {timeout:g} s.",
            "A macro that refers to itself (A = $(B), B = $(A)) or an `include command` that "
            "does not return makes HTCondor's reader loop.",
            "Check the configuration with `condor_config_val -dump` on a machine of the pool, "
            "and fix the macro or command it stops at.",
        )
    values = parse_child_reply(result.stdout)
    if result.returncode != 0 or not isinstance(values, dict):
        raise BadInput(
            f"HTCondor cannot parse the pool configuration {path}.",
            _config_error_excerpt(result),
            "Fix the file (or the files it includes) and try again; `condor_config_val -dump` "
            "shows the same error.",
        )
    collector_host = _text(values.get("COLLECTOR_HOST"))
    if not collector_host:
        raise BadInput(
            f"The pool configuration {path} does not name a collector.",
            "COLLECTOR_HOST is not set, so the annex would not know which pool to join.",
            "Set COLLECTOR_HOST in the configuration (your pool administrator knows the value).",
        )
    return PoolInfo(
        condor_config=path,
        collector_host=collector_host,
        # Unset, the library supplies HTCondor's own default: $(UID_DOMAIN) in 24.x/25.x,
        # $(COLLECTOR_HOST) in 8.9; the collector host is only a last resort.
        trust_domain=_text(values.get("TRUST_DOMAIN")) or collector_host,
        password_file=_text(values.get("SEC_PASSWORD_FILE")) or None,
        signing_key_file=_text(values.get("SEC_TOKEN_POOL_SIGNING_KEY_FILE")) or None,
        signing_key_is_password=_truthy(values.get("SEC_TOKEN_POOL_SIGNING_KEY_IS_PASSWORD")),
    )


# --- the pool's security material -------------------------------------------------------------


def _read_private(path: str | None) -> bytes | None:
    """The file's bytes if we can read it; None if not. BadInput if others can read it too.

    Mode is checked on the open descriptor, as HTCondor's read_secure_file does.
    """
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                return None
            if mode & _NOT_PRIVATE:
                raise BadInput(
                    f"The pool key file {path} can be read by other users "
                    f"(mode {stat.S_IMODE(mode):04o}).",
                    "HTCondor refuses a signing key or pool password that is not private "
                    "(mode 0600 or 0400); anyone who can read it can join or impersonate the pool.",
                    f"Ask your pool administrator to run `chmod 0600 {path}` (and to consider "
                    "the key exposed), then try again.",
                )
            return handle.read()
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
        return None


def _token_subject(subject: str, trust_domain: str) -> str:
    # HTCondor identities are user@domain; a bare name is placed in the pool's trust domain,
    # as condor_token_create does with -identity.
    return subject if "@" in subject else f"{subject}@{trust_domain}"


@dataclass(frozen=True, repr=False)
class SecuritySource:
    """What the annex's security will be made from; read, nothing minted. ``secret`` is never shown."""

    kind: Literal["idtoken", "password"]
    secret: bytes = field(compare=False)
    path: str
    description: str

    def __repr__(self) -> str:
        return f"SecuritySource(kind={self.kind!r}, path={self.path!r})"


def security_source(pool: PoolInfo, *, annex_name: str) -> SecuritySource:
    """The pool's signing key if we can read it (an IDTOKEN will be minted), else the pool password."""
    key = _read_private(pool.signing_key_file)
    if key is not None:
        if not key:
            raise BadInput(
                f"The pool signing key file {pool.signing_key_file} is empty.",
                "An empty key cannot sign a token the pool would accept.",
                "Ask your pool administrator to check SEC_TOKEN_POOL_SIGNING_KEY_FILE.",
            )
        return SecuritySource("idtoken", key, pool.signing_key_file or "", "IDTOKEN")
    # In 24.x/25.x both settings default to the same file: no need to read it twice.
    password = None if pool.password_file == pool.signing_key_file else _read_private(
        pool.password_file
    )
    if password == b"":
        raise BadInput(
            f"The pool password file {pool.password_file} is empty.",
            "An empty pool password cannot authenticate the annex to the pool.",
            "Ask your pool administrator to check SEC_PASSWORD_FILE.",
        )
    if password is not None:
        return SecuritySource(
            "password",
            password,
            pool.password_file or "",
            f"pool password file {pool.password_file}: this puts the pool's key on every node of the "
            f"annex (the pool's signing key {pool.signing_key_file or '(none configured)'} was not readable)",
        )
    raise BadInput(
        f"Annex '{annex_name}' has no way to join the pool: you can read neither the pool's "
        "signing key nor its password.",
        "Looked at " + "; ".join(_key_files_looked_at(pool)) + f" (as {pool.condor_config} sets them).",
        "Set SEC_TOKEN_POOL_SIGNING_KEY_FILE to a copy of the pool's signing key that only you can "
        "read (mode 0600): condor_annex then gives the annex a token of its own. Or set "
        "SEC_PASSWORD_FILE to a copy of the pool password (every annex node then holds it). Set "
        "either in that configuration or in your environment (export "
        "_CONDOR_SEC_TOKEN_POOL_SIGNING_KEY_FILE=PATH); your pool administrator has the key.",
    )


def describe_token(pool: PoolInfo, source: SecuritySource, *, subject: str, expires_at: datetime, token_id: str) -> str:
    identity = _token_subject(subject, pool.trust_domain)
    scopes = " ".join(s.removeprefix("condor:/") for s in tokens.ANNEX_SCOPES)
    return (
        f"IDTOKEN signed with the pool key {source.path} for {identity} "
        f"(issuer {pool.trust_domain}), scopes {scopes}, expires {format_local(expires_at)}, id (jti) {token_id}"
    )


def pool_material(
    pool: PoolInfo,
    source: SecuritySource,
    *,
    annex_name: str,
    subject: str,
    issued_at: datetime,
    expires_at: datetime,
    token_id: str | None = None,
) -> PoolSecurity:
    """The material the annex's nodes receive: a freshly minted IDTOKEN, or the pool password."""
    if source.kind == "password":
        return PoolSecurity("password", contract.PASSWORD_OBJECT, source.secret, source.description)
    return _minted_token(pool, source, annex_name, subject, issued_at, expires_at, token_id or secrets.token_hex(16))


def pool_security(
    pool: PoolInfo,
    *,
    annex_name: str,
    subject: str,
    issued_at: datetime,
    expires_at: datetime,
) -> PoolSecurity:
    """An IDTOKEN minted with the pool's signing key if we can read it, else the pool password.

    ``expires_at`` is the token's expiry as given: the caller adds any margin past the lease.
    """
    source = security_source(pool, annex_name=annex_name)
    return pool_material(
        pool, source, annex_name=annex_name, subject=subject, issued_at=issued_at, expires_at=expires_at
    )


def _key_files_looked_at(pool: PoolInfo) -> list[str]:
    """Each key setting, its file and why that file could not be used; a shared file once."""
    if pool.signing_key_file and pool.signing_key_file == pool.password_file:
        return [f"SEC_TOKEN_POOL_SIGNING_KEY_FILE and SEC_PASSWORD_FILE, both {pool.signing_key_file}: "
                f"{why_unreadable(pool.signing_key_file)}"]
    return [
        f"{knob} " + (f"{path}: {why_unreadable(path)}" if path else "is not set")
        for knob, path in (("SEC_TOKEN_POOL_SIGNING_KEY_FILE", pool.signing_key_file),
                           ("SEC_PASSWORD_FILE", pool.password_file))
    ]


def why_unreadable(path: str) -> str:
    """Why a key file could not be read, in a few words."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a part of the path is not a folder)"
    except PermissionError:
        return "a folder on the way to it is closed to you"
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return f"permission denied (owner {_owner_name(info.st_uid)}, mode {stat.S_IMODE(info.st_mode):04o})"


def _owner_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _minted_token(
    pool: PoolInfo,
    source: SecuritySource,
    annex_name: str,
    subject: str,
    issued_at: datetime,
    expires_at: datetime,
    token_id: str,
) -> PoolSecurity:
    identity = _token_subject(subject, pool.trust_domain)
    try:
        token = tokens.mint_idtoken(
            source.secret,
            trust_domain=pool.trust_domain,
            subject=identity,
            issued_at=issued_at,
            expires_at=expires_at,
            scopes=tokens.ANNEX_SCOPES,
            # HTCondor's own jti: 16 random bytes in hex, one per annex.
            token_id=token_id,
            truncate_at_nul=pool.signing_key_is_password,
        )
    except ValueError as exc:
        raise BadInput(
            f"Cannot mint a pool token for annex '{annex_name}'.",
            f"{exc} (trust domain {pool.trust_domain!r}, from {pool.condor_config}).",
            "Fix TRUST_DOMAIN or the key file in the pool configuration, or the lease times.",
        ) from None
    return PoolSecurity(
        kind="idtoken",
        object_name=contract.TOKEN_OBJECT,
        payload=(token + "\n").encode("ascii"),
        description=describe_token(pool, source, subject=subject, expires_at=expires_at, token_id=token_id),
    )


# --- asking the collector ---------------------------------------------------------------------


def parse_instance_ids(reply: object) -> dict[str, bool]:
    """{instance id: True} for every startd ad that named one; junk values are skipped."""
    if not isinstance(reply, list):
        return {}
    return {value.strip(): True for value in reply if isinstance(value, str) and value.strip()}


@dataclass(frozen=True)
class CollectorAnswer:
    """The pool's view of the annex instances, or why there is none."""

    joined: dict[str, bool] | None  # None: unknown
    note: str  # what happened, in a person's words


def query_collector(pool: PoolInfo, *, timeout: float = 5.0) -> dict[str, bool] | None:
    """Instances whose startd the pool's collector knows; None when it cannot be asked in time."""
    return ask_collector(pool, timeout=timeout).joined


def ask_collector(pool: PoolInfo, *, timeout: float = 5.0) -> CollectorAnswer:
    """Ask the pool's collector which annex instances have joined, and say what happened.

    No answer is "unknown" (no collector, no answer, no permission), never an error, because a
    laptop off the pool's network is normal.
    """
    # QUERY_TIMEOUT (60 s by default) bounds a collector that accepts and never answers; keep
    # it inside our own deadline so the child normally ends by itself.
    query_timeout = max(1, math.floor(timeout) - 1)
    env = _child_env(pool.condor_config, {"_CONDOR_QUERY_TIMEOUT": str(query_timeout)})
    started = time.monotonic()
    result = _run_child(_QUERY_COLLECTOR_CHILD, [pool.collector_host], env, timeout)
    elapsed = time.monotonic() - started
    reply = parse_child_reply(result.stdout) if result.returncode == 0 else None
    if isinstance(reply, list):
        return CollectorAnswer(parse_instance_ids(reply), f"joined-pool status from the collector {pool.collector_host}")
    if result.returncode is None:
        why = f"it did not answer within {timeout:g} s"
    else:
        why = _query_failure(pool.collector_host, result, elapsed, query_timeout, timeout)
    return CollectorAnswer(None, f"could not ask the collector {pool.collector_host}: {why}")


def _query_failure(collector_host: str, result: _ChildResult, elapsed: float, query_timeout: int, timeout: float) -> str:
    """Why a finished query failed: look at the connection itself (HTCondor only says it failed)."""
    if parse_child_reply(result.stdout) is None and "Failed communication" not in result.stderr:
        return f"the query failed after {elapsed:.1f} s ({_child_error(result)})"
    host, port = collector_address(collector_host)
    probe_timeout = min(2.0, max(0.5, timeout - elapsed))
    try:
        with socket.create_connection((host, port), timeout=probe_timeout):
            pass
    except socket.gaierror:
        return f"the name {host} does not resolve (after {elapsed:.1f} s)"
    except ConnectionRefusedError:
        return f"{host} refused the connection on port {port} (after {elapsed:.1f} s): no collector listens there"
    except (socket.timeout, TimeoutError):
        return f"{host} port {port} did not accept a connection within {elapsed + probe_timeout:.0f} s"
    except OSError as exc:
        return f"{host} port {port} cannot be reached ({exc.strerror or exc.__class__.__name__}, after {elapsed:.1f} s)"
    if elapsed >= query_timeout - 0.5:
        return f"it accepted the connection but did not answer within {query_timeout} s"
    return (f"the query failed after {elapsed:.1f} s although {host} port {port} accepts connections "
            f"(HTCondor says: {_child_error(result)})")


def _child_error(result: _ChildResult) -> str:
    """The message of the exception that ended a child, without its traceback."""
    lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
    if not lines:
        return f"exit status {result.returncode}"
    found = re.match(r"^[\w.]+(?:Exception|Error): (.*)$", lines[-1])
    return (found.group(1) if found else lines[-1])[:300]


def collector_address(collector_host: str) -> tuple[str, int]:
    """Host and port of the first collector in COLLECTOR_HOST (host, host:port or <ip:port?...>)."""
    first = (re.split(r"[,\s]+", collector_host.strip()) or [""])[0]
    first = first.strip("<>").split("?", 1)[0]
    if first.startswith("["):  # [IPv6]:port
        host, _, rest = first[1:].partition("]")
        port = rest.lstrip(":")
    elif first.count(":") == 1:
        host, _, port = first.partition(":")
    else:
        host, port = first, ""
    return host, int(port) if port.isdigit() else DEFAULT_COLLECTOR_PORT
