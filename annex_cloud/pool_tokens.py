"""An annex's pool token: how the broker mints it, and what one may say.

The broker mints every annex's IDTOKEN with the pool's signing key, which the stack keeps
(``annex_cloud.pools``), using the standard library only (the functions' zip holds no compiled
wheel): HMAC-SHA256 for the JWT, HKDF-SHA256 for the key, as HTCondor derives it
(``getTokenSigningKey`` and ``Condor_Auth_Passwd::generate_token``):

1. a key file is "scrambled": every byte XOR ``DE AD BE EF`` repeating;
2. the key named POOL is doubled (key + key), a rule HTCondor keeps for tokens signed before
   8.9.12; a key of any other name (``ANNEX``) is used whole, NUL bytes included;
3. HKDF-SHA256(ikm=that, salt=b"htcondor", info=b"master jwt", length=32) is the HS256 key;
4. header and claims are JSON as HTCondor's jwt-cpp/picojson writes them: keys sorted, no spaces,
   ``/`` written ``\\/``; each part base64url without padding.

A scientist whose project may bring its own key mints on her machine (``annex_user.tokens``); the
broker cannot verify such a token, so it reads its claims and refuses one that says more than an
annex needs: other scopes, a life past the lease end plus ``TOKEN_MARGIN``, or an id other than
the one the request names, so that the id it records (``condor_annex status`` shows it;
``annex-admin pool-config --revoke`` revokes by it) is the token's own. Each annex keeps one id for
its whole life: every extension's token has the same id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
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


# --- minting ------------------------------------------------------------------------------------

POOL_KEY_NAME = "POOL"  # the pool's own key: doubled before derivation (HTCondor's rule)
KEY_NAME_PATTERN = "^[A-Za-z0-9_.-]{1,64}$"  # a file name in SEC_PASSWORD_DIRECTORY
_SCRAMBLE = bytes((0xDE, 0xAD, 0xBE, 0xEF))
_HKDF_SALT = b"htcondor"
_HKDF_INFO = b"master jwt"
_KEY_LENGTH = 32
# HTCondor refuses to sign with an issuer holding any of these (generate_token).
_ISSUER_FORBIDDEN = (",", " ", "\t")


def new_token_id() -> str:
    """HTCondor's own kind of token id: 16 random bytes in hex."""
    return secrets.token_hex(16)


def unscramble(data: bytes) -> bytes:
    """Undo HTCondor's file scramble (its own inverse: XOR with DE AD BE EF)."""
    return bytes(byte ^ _SCRAMBLE[i % 4] for i, byte in enumerate(data))


def _hkdf_sha256(ikm: bytes) -> bytes:
    """RFC 5869 with SHA-256, one block (32 bytes) long."""
    prk = hmac.new(_HKDF_SALT, ikm, hashlib.sha256).digest()
    return hmac.new(prk, _HKDF_INFO + b"\x01", hashlib.sha256).digest()[:_KEY_LENGTH]


def signing_key(key_file: bytes, key_name: str) -> bytes:
    """The HS256 key HTCondor derives from a signing key file (as stored, scrambled) of this name."""
    key = unscramble(key_file)
    if not key:
        raise ValueError("the signing key is empty")
    return _hkdf_sha256(key + key if key_name == POOL_KEY_NAME else key)


def _json(value: dict[str, object]) -> bytes:
    # picojson: sorted keys (a std::map), compact, "/" escaped, other characters as UTF-8.
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("/", "\\/").encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _epoch(moment: datetime, name: str) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must carry a time zone")
    return int(moment.timestamp())


@dataclass(frozen=True)
class TokenClaimsToMint:
    """What one token says: the annex identity in the pool's trust domain, its scopes and life."""

    trust_domain: str
    subject: str
    issued_at: datetime
    expires_at: datetime
    token_id: str
    scopes: tuple[str, ...] = ANNEX_SCOPES

    def claims(self) -> dict[str, object]:
        if not self.trust_domain or any(c in self.trust_domain for c in _ISSUER_FORBIDDEN):
            raise ValueError("the trust domain must be one non-empty word (no spaces or commas)")
        if not self.subject:
            raise ValueError("the token needs a subject")
        if not self.token_id:
            raise ValueError("the token needs an id (jti)")
        iat, exp = _epoch(self.issued_at, "issued_at"), _epoch(self.expires_at, "expires_at")
        if exp <= iat:
            raise ValueError("the token would expire before it is issued")
        claims: dict[str, object] = {
            "sub": self.subject, "iss": self.trust_domain, "iat": iat, "exp": exp, "jti": self.token_id,
        }
        if self.scopes:  # HTCondor omits the claim when there is no limit
            claims["scope"] = " ".join(self.scopes)
        return claims


def mint_token(key_file: bytes, key_name: str, what: TokenClaimsToMint) -> str:
    """An HS256 IDTOKEN, byte for byte what HTCondor's generate_token makes for these claims and key."""
    if re.fullmatch(KEY_NAME_PATTERN, key_name or "") is None:
        raise ValueError(f"the key name {key_name[:64]!r} is not a file name HTCondor reads")
    signing_input = _b64(_json({"alg": "HS256", "kid": key_name})) + "." + _b64(_json(what.claims()))
    signature = hmac.new(signing_key(key_file, key_name), signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def annex_identity(trust_domain: str) -> str:
    """The one identity every annex node authenticates as (pool-config's ALLOW rules name it)."""
    return f"{TOKEN_IDENTITY}@{trust_domain}"
