"""What an annex's pool token may say: the rule the client mints by and the broker checks.

The client mints the token (it holds the pool's signing key; the broker never does). The broker
reads the token's claims without verifying its signature, which it cannot, and refuses one that
says more than an annex needs: other scopes, a life past the lease end plus ``TOKEN_MARGIN``, or
an id other than the one the request names, so that the id it records (``condor_annex status``
shows it; ``annex-admin pool-config --revoke`` revokes by it) is the token's own. Each annex keeps
one id for its whole life: ``extend`` mints its new token with the same id.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

# What an annex's execute node needs and nothing more: advertise its startd and master, read.
ANNEX_SCOPES: tuple[str, ...] = (
    "condor:/ADVERTISE_STARTD",
    "condor:/ADVERTISE_MASTER",
    "condor:/READ",
)
# The identity HTCondor's default security lets advertise a startd (the one pool password
# authentication yields too); the scopes still limit it to advertising and reading.
TOKEN_IDENTITY = "condor_pool"
# A token outlives its lease by this much at most: the watchdog powers the node off at the lease
# end, and the hour covers a slow shutdown.
TOKEN_MARGIN = timedelta(hours=1)
# HTCondor's own token ids: 16 random bytes in hex.
TOKEN_ID_PATTERN = "^[0-9a-f]{32}$"


@dataclass(frozen=True)
class TokenClaims:
    token_id: str
    expires: int  # epoch seconds
    scopes: tuple[str, ...]


def read_claims(token: bytes) -> TokenClaims:
    """The claims of a JWT (header.payload.signature); ValueError when it is not one."""
    try:
        parts = token.decode("ascii").strip().split(".")
        if len(parts) != 3:
            raise ValueError("a token has three dot-separated parts")
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
        return TokenClaims(str(claims["jti"]), int(claims["exp"]), tuple(str(claims.get("scope", "")).split()))
    except (UnicodeDecodeError, binascii.Error, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"it is not an IDTOKEN with an id and an expiry ({exc})") from exc


def token_problem(token: bytes, token_id: str, lease_end: datetime) -> str | None:
    """Why the token is not one for an annex with this id and lease end, or None."""
    if re.fullmatch(TOKEN_ID_PATTERN, token_id) is None:
        return f"the token id {token_id[:40]!r} is not 32 hexadecimal digits"
    try:
        claims = read_claims(token)
    except ValueError as exc:
        return str(exc)
    if claims.token_id != token_id:
        return f"its id (jti) {claims.token_id[:40]!r} is not the annex's {token_id}"
    if claims.expires > int((lease_end + TOKEN_MARGIN).timestamp()):
        return f"it expires more than {TOKEN_MARGIN} after the lease end"
    if not claims.scopes or not set(claims.scopes) <= set(ANNEX_SCOPES):
        return f"its scopes {' '.join(claims.scopes) or '(none: everything)'} are more than {' '.join(ANNEX_SCOPES)}"
    return None
