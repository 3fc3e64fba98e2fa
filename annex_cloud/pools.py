"""The pools annexes join, as the administrator records them: kept by the stack, read by the broker.

A pool is its collector address, its trust domain and its secret: a signing key of its own name
(``ANNEX`` by default, installed on the central manager beside POOL) from which the broker mints
each annex's IDTOKEN, or, for a pool without tokens, its pool password, which the broker ships to
the annex's nodes. ``annex-admin pool set`` records the stack's pool; ``issue-credentials`` may
record another for one project. Each is one SSM SecureString parameter, encrypted with the
stack's own KMS key, under the stack's path (``/condor-annex/<stack>/pools/``); of the stack's
roles only the broker's may read the path and decrypt with the key. The secret is the key or
password file exactly as HTCondor stores it (scrambled), and is never shown: not in a repr, a log
line, an answer or an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from annex_cloud.node.config import COLLECTOR_HOST_PATTERN, TRUST_DOMAIN_PATTERN, text_problem
from annex_cloud.pool_tokens import KEY_NAME_PATTERN, POOL_KEY_NAME, unscramble

PARAMETER_ROOT = "/condor-annex"
DEFAULT_KEY_NAME = "ANNEX"
# A SecureString of the standard tier holds 4 KB; the record is JSON around the base64 secret.
MAX_SECRET_BYTES = 2048
FORMAT = 1

Security = Literal["idtoken", "password"]


def pools_path(stack_name: str) -> str:
    """Every pool parameter of the stack is under this path (the broker's role reads only these)."""
    return f"{PARAMETER_ROOT}/{stack_name}/pools/"


def pool_parameter(stack_name: str, project_id: str | None = None) -> str:
    """The stack's pool, or the one pool a project joins instead of the stack's."""
    return pools_path(stack_name) + ("stack" if project_id is None else f"projects/{project_id}")


@dataclass(frozen=True, repr=False)
class PoolSecret:
    """One pool: where annex nodes go and what they authenticate with. ``secret`` is never shown."""

    collector_host: str
    trust_domain: str
    security: Security
    key_name: str  # the signing key's name (the token's kid); "" with a pool password
    secret: bytes = field(compare=False)

    def __repr__(self) -> str:
        return f"PoolSecret({self.collector_host!r}, {self.trust_domain!r}, {self.security!r}, {self.key_name!r})"

    def describe(self) -> str:
        """The pool in a person's words, without its secret."""
        if self.security == "idtoken":
            return (f"collector {self.collector_host}, trust domain {self.trust_domain}; each annex gets an IDTOKEN "
                    f"the broker signs with the key {self.key_name}")
        return (f"collector {self.collector_host}, trust domain {self.trust_domain}; annex nodes receive the pool "
                "password (every node then holds the pool's key)")

    def public(self) -> dict[str, str]:
        return {"collector_host": self.collector_host, "trust_domain": self.trust_domain,
                "security": self.security, "key_name": self.key_name}

    def to_parameter(self) -> str:
        return json.dumps({**self.public(), "format": FORMAT, "secret": base64.b64encode(self.secret).decode()},
                          sort_keys=True)


def pool_problems(pool: PoolSecret) -> list[str]:
    """Why the pool cannot be recorded or used, one reason each; [] when it can."""
    found = []
    for label, value, pattern in (("collector address", pool.collector_host, COLLECTOR_HOST_PATTERN),
                                  ("trust domain", pool.trust_domain, TRUST_DOMAIN_PATTERN)):
        problem = text_problem(value, pattern)
        if problem is not None:
            found.append(f"the {label} {value[:80]!r} is not allowed: {problem}")
    if "," in pool.trust_domain or " " in pool.trust_domain:
        found.append("the trust domain must be one name: a token's issuer cannot hold a comma or a space")
    if pool.security not in ("idtoken", "password"):
        found.append(f"the security {pool.security!r} is neither idtoken nor password")
    elif pool.security == "idtoken" and re.fullmatch(KEY_NAME_PATTERN, pool.key_name or "") is None:
        found.append(f"the key name {pool.key_name[:64]!r} is not a file name HTCondor reads (letters, digits, . _ -)")
    elif pool.security == "password" and pool.key_name:
        found.append("a pool password has no key name")
    if not pool.secret or not unscramble(pool.secret).strip(b"\0"):
        found.append("the key or password file is empty")
    elif len(pool.secret) > MAX_SECRET_BYTES:
        found.append(f"the key or password file has {len(pool.secret):,} bytes; at most {MAX_SECRET_BYTES:,} are kept")
    return found


def parse_pool(text: str) -> PoolSecret:
    """A pool parameter's value; ValueError (never naming the secret) when it is not one."""
    try:
        data: Any = json.loads(text)
        pool = PoolSecret(str(data["collector_host"]), str(data["trust_domain"]), data["security"],
                          str(data.get("key_name", "")), base64.b64decode(data["secret"], validate=True))
    except (json.JSONDecodeError, KeyError, TypeError, binascii.Error, ValueError) as exc:
        raise ValueError(f"it is not a pool record ({type(exc).__name__})") from None
    problems = pool_problems(pool)
    if problems:
        raise ValueError("; ".join(problems))
    return pool


def read_pool_parameter(ssm: Any, name: str) -> PoolSecret | None:
    """The pool recorded under ``name``; None when none is. ValueError when it is unreadable."""
    try:
        answer = ssm.get_parameter(Name=name, WithDecryption=True)
    except Exception as exc:  # botocore's ClientError, without importing botocore here
        if (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    return parse_pool(answer["Parameter"]["Value"])


def is_pool_key(key_name: str) -> bool:
    """The pool's own POOL key: the broker could then sign for any identity the pool knows."""
    return key_name == POOL_KEY_NAME
