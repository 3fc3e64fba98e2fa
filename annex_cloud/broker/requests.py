"""What the broker accepts from a request: each field checked, nothing else read.

The request may choose only: annex name, count, instance types (from the stack's list), spot
or on-demand, lease end, idle minutes, whose jobs the nodes start, and (only for a project the
administrator lets bring its own pool key) its own pool contact and token. Project, owner, caps,
prices, the pool and its key, image and every other launch parameter come from elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from annex_cloud.errors import Refused
from annex_cloud.expiry import parse_expiry_tag
from annex_cloud.pool_tokens import token_problem
from annex_cloud.node.config import (
    ANNEX_NAME_PATTERN,
    COLLECTOR_HOST_PATTERN,
    OWNER_PATTERN,
    SECURITY_MODES,
    TRUST_DOMAIN_PATTERN,
    check_text,
    shown,
)

ANNEX_NAME_RE = re.compile(ANNEX_NAME_PATTERN)
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_COUNT = 10_000
MIN_IDLE_MINUTES, MAX_IDLE_MINUTES = 1, 24 * 60
MAX_MATERIAL_BYTES = 64 * 1024
MAX_FIELD_LENGTH = 512


@dataclass(frozen=True)
class PoolContact:
    collector_host: str
    trust_domain: str
    job_owner: str  # whose jobs the nodes start
    security: str  # idtoken | password
    material: bytes  # the annex's IDTOKEN, or the pool password file
    token_id: str = ""  # the IDTOKEN's id (jti); "" in password mode

    def __repr__(self) -> str:  # never show the material
        return f"PoolContact({self.collector_host!r}, {self.trust_domain!r}, {self.job_owner!r}, {self.security!r})"


@dataclass(frozen=True)
class LaunchAsk:
    annex_name: str
    count: int
    instance_types: tuple[str, ...]
    spot: bool
    expiry: datetime
    idle_minutes: int
    pool: PoolContact | None  # her own pool (where allowed); None: the recorded pool, or planning
    job_owner: str = ""  # whose jobs the nodes start ("" when only planning)
    own_pool: bool = False  # she brings her own pool and key


@dataclass(frozen=True)
class ExtendAsk:
    annex_name: str
    expiry: datetime
    shorten: bool
    token: bytes | None


# What each kind of field must be, in the words of a message.
KIND_WORDS: dict[type, str] = {int: "a whole number", str: "text"}


def _field(params: Mapping[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    value = params.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):  # True is not a count
        raise Refused(
            f"the request's {name.replace('_', ' ')} must be {KIND_WORDS[kind]}",
            "it is missing" if value is None else f"it is {_as_sent(value)}",
            "Use condor_annex, or send the fields it sends.",
        )
    if isinstance(value, str) and len(value) > MAX_FIELD_LENGTH:
        raise Refused(
            f"the request's {name.replace('_', ' ')} {shown(value)} is too long",
            f"{len(value):,} characters; at most {MAX_FIELD_LENGTH} are read",
            "Send a shorter value.",
        )
    return value


def _as_sent(value: Any) -> str:
    """A value as the request's JSON carried it (`"16"`, `true`), at most 60 characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else f"{text[:55]}... ({len(text):,} characters)"


def annex_name(params: Mapping[str, Any]) -> str:
    name = _field(params, "annex_name", str)
    if not ANNEX_NAME_RE.fullmatch(name):
        raise Refused(
            f"annex name {shown(name)} is not allowed",
            "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
            "Pass another --annex-name.",
        )
    return name


PAGE_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\ti-[0-9a-f]{8,17}$")


def page_key(params: Mapping[str, Any]) -> str | None:
    """Where the last page of instances ended (annex name, a tab, instance id); None: the first page."""
    key = _field(params, "page", str, required=False)
    if key is not None and not PAGE_KEY_RE.fullmatch(key):
        raise Refused(f"the request's page {shown(key)} is not one the broker gave", "", "Ask again from the first page.")
    return key


def fingerprint(op: str, params: Mapping[str, Any]) -> str:
    """What names one request in its record: the operation and its parameters without the secret
    material (a pool token or password), which the client cannot keep on disk. A request sent again
    (a Ctrl-C and the same command run again) carries fresh material and is still the same request."""
    from annex_cloud.identity import request_digest

    kept = {k: v for k, v in params.items() if k != "token"}
    if isinstance(kept.get("pool"), Mapping):
        kept["pool"] = {k: v for k, v in kept["pool"].items() if k != "material"}
    return request_digest(op, kept)


def request_id(params: Mapping[str, Any]) -> str:
    value = _field(params, "request_id", str)
    if not REQUEST_ID_RE.fullmatch(value):
        raise Refused("the request id is malformed", "it must be 32 hexadecimal digits", "Use condor_annex.")
    return value


def expiry(params: Mapping[str, Any]) -> datetime:
    text = _field(params, "expiry", str)
    moment = parse_expiry_tag(text)
    if moment is None:
        raise Refused(
            f"the lease end {shown(text)} is not in the expiry format",
            "it must be ISO 8601 UTC to the second, like 2026-12-18T23:59:00Z",
            "Use condor_annex --expiry 'YYYY-MM-DD HH:MM' or --duration HOURS.",
        )
    return moment


def instance_types(params: Mapping[str, Any], offered: tuple[str, ...]) -> tuple[str, ...]:
    asked = params.get("instance_types")
    if asked is None:
        return offered
    if not isinstance(asked, list) or not asked or not all(isinstance(t, str) for t in asked):
        raise Refused("the request's instance types are malformed", "a list of type names is expected", "Use condor_annex.")
    unknown = [t for t in asked if t not in offered]
    if unknown:
        raise Refused(
            f"instance type {shown(unknown[0])} is not offered by this region's annex stack",
            f"the stack offers {', '.join(offered)}",
            "Choose one of those with --instance-type, or omit it to let the fleet choose.",
        )
    return tuple(dict.fromkeys(asked))


def launch_ask(params: Mapping[str, Any], offered: tuple[str, ...], *, with_pool: bool) -> LaunchAsk:
    count = _field(params, "count", int)
    if not 1 <= count <= MAX_COUNT:
        raise Refused(
            f"--instances {count} is out of range",
            f"an annex has from 1 to {MAX_COUNT:,} instances",
            "Pass for example --instances 16.",
        )
    idle = _field(params, "idle_minutes", int)
    if not MIN_IDLE_MINUTES <= idle <= MAX_IDLE_MINUTES:
        raise Refused(
            f"--idle {idle} is out of range",
            "the idle shutdown must be between 1 minute and 24 hours",
            "Pass for example --idle 15.",
        )
    spot = params.get("spot", False)
    if not isinstance(spot, bool):
        raise Refused("the request's spot flag is not true or false", f"got {shown(spot)}", "Use condor_annex.")
    lease_end = expiry(params)
    own_pool = params.get("own_pool", False)
    if not isinstance(own_pool, bool):
        raise Refused("the request's own-pool flag is not true or false", f"got {shown(own_pool)}", "Use condor_annex.")
    own_pool = own_pool or params.get("pool") is not None
    pool = pool_contact(params.get("pool")) if with_pool and own_pool else None
    if pool is not None and pool.security == "idtoken":
        check_token(pool.material, pool.token_id, lease_end)
    owner = pool.job_owner if pool is not None else (job_owner(params) if with_pool else "")
    return LaunchAsk(
        annex_name=annex_name(params),
        count=count,
        instance_types=instance_types(params, offered),
        spot=spot,
        expiry=lease_end,
        idle_minutes=idle,
        pool=pool,
        job_owner=owner,
        own_pool=own_pool,
    )


def job_owner(params: Mapping[str, Any]) -> str:
    return _pool_value("job owner", _field(params, "job_owner", str), OWNER_PATTERN)


def check_token(token: bytes, token_id: str, lease_end: datetime) -> None:
    """An annex's IDTOKEN says no more than an annex needs (annex_cloud.pool_tokens)."""
    problem = token_problem(token, token_id, lease_end)
    if problem is not None:
        raise Refused(
            "the annex's pool token cannot be used",
            problem,
            "Use condor_annex, which mints the token with the annex's id, scopes and lease.",
        )


def _pool_value(label: str, value: str, pattern: str) -> str:
    return check_text(label, value, pattern, f"Fix the pool's {label} in your HTCondor configuration.")


def material(value: Any, label: str) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_MATERIAL_BYTES * 2:
        raise Refused(f"the annex's {label} is missing or too large", "", "Use condor_annex.")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refused(f"the annex's {label} is not base64", str(exc), "Use condor_annex.") from exc
    if not raw or len(raw) > MAX_MATERIAL_BYTES:
        raise Refused(f"the annex's {label} is empty or too large", f"{len(raw):,} bytes", "Use condor_annex.")
    return raw


def pool_contact(value: Any) -> PoolContact:
    if not isinstance(value, dict):
        raise Refused("the request has no pool contact", "a launch needs the pool's collector and security material", "Use condor_annex.")
    security = _field(value, "security", str)
    if security not in SECURITY_MODES:
        raise Refused(f"unknown pool security mode {shown(security)}", "an annex uses an IDTOKEN or the pool password", "Use condor_annex.")
    return PoolContact(
        collector_host=_pool_value("collector address", _field(value, "collector_host", str), COLLECTOR_HOST_PATTERN),
        trust_domain=_pool_value("trust domain", _field(value, "trust_domain", str), TRUST_DOMAIN_PATTERN),
        job_owner=_pool_value("job owner", _field(value, "job_owner", str), OWNER_PATTERN),
        security=security,
        material=material(value.get("material"), "security material"),
        token_id=_token_id(value, security),
    )


def _token_id(pool: Mapping[str, Any], security: str) -> str:
    """The IDTOKEN's id, which the broker records for status and revocation; none with a password."""
    if security != "idtoken":
        if pool.get("token_id") is not None:
            raise Refused("the request names a token id without a token", "the pool password has no id", "Use condor_annex.")
        return ""
    return _field(pool, "token_id", str)


def extend_ask(params: Mapping[str, Any]) -> ExtendAsk:
    shorten = params.get("shorten", False)
    if not isinstance(shorten, bool):
        raise Refused("the request's shorten flag is not true or false", f"got {shown(shorten)}", "Use condor_annex.")
    token = params.get("token")
    return ExtendAsk(
        annex_name=annex_name(params),
        expiry=expiry(params),
        shorten=shorten,
        token=None if token is None else material(token, "token"),
    )
