"""IDTOKENs for an annex, signed with the pool's POOL signing key.

Pure functions, no I/O: the caller reads the key file and hands us its bytes.

The derivation mirrors HTCondor's own (``getTokenSigningKey`` in ``store_cred.cpp`` and
``Condor_Auth_Passwd::generate_token`` in ``condor_auth_passwd.cpp``), so a collector that holds
the same key accepts the token:

1. The key file is "scrambled": every byte XOR ``DE AD BE EF`` repeating.
2. For the key named POOL the unscrambled key is doubled (key + key), a compatibility rule
   HTCondor keeps so tokens signed before 8.9.12 still verify.
3. HKDF-SHA256(ikm=that, salt=b"htcondor", info=b"master jwt", length=32) is the HS256 key.

HTCondor reads the whole file, embedded NUL bytes included. It stops at the first NUL only when
the pool sets ``SEC_TOKEN_POOL_SIGNING_KEY_IS_PASSWORD = true`` (the pre-9.0 behaviour for keys
that were pool passwords); ``truncate_at_nul`` reproduces that mode. The difference matters: about
one randomly generated 64-byte key in five scrambles to a file with a NUL in it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# What an annex's execute node needs and nothing more; the broker refuses a token with more.
from annex_cloud.pool_tokens import ANNEX_SCOPES

__all__ = ["ANNEX_SCOPES", "derive_signing_key", "mint_idtoken", "unscramble"]

POOL_KEY_ID = "POOL"
_SCRAMBLE = bytes((0xDE, 0xAD, 0xBE, 0xEF))
_HKDF_SALT = b"htcondor"
_HKDF_INFO = b"master jwt"
_KEY_LENGTH = 32
# HTCondor refuses to sign with an issuer holding any of these (generate_token).
_ISSUER_FORBIDDEN = (",", " ", "\t")


def unscramble(data: bytes) -> bytes:
    """Undo HTCondor's trivial file scramble (its own inverse: XOR with DE AD BE EF)."""
    return bytes(byte ^ _SCRAMBLE[i % 4] for i, byte in enumerate(data))


def _until_nul(data: bytes) -> bytes:
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


def derive_signing_key(pool_key_file_bytes: bytes, *, truncate_at_nul: bool = False) -> bytes:
    """The 32-byte HS256 key HTCondor derives from the POOL signing key file's contents.

    ``truncate_at_nul`` mirrors ``SEC_TOKEN_POOL_SIGNING_KEY_IS_PASSWORD``: cut the file at its
    first NUL, unscramble, and cut again at the first NUL of the result (HTCondor's strlen).
    """
    raw = _until_nul(pool_key_file_bytes) if truncate_at_nul else pool_key_file_bytes
    key = unscramble(raw)
    if truncate_at_nul:
        key = _until_nul(key)
    if not key:
        raise ValueError("the pool signing key is empty")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY_LENGTH, salt=_HKDF_SALT, info=_HKDF_INFO)
    return hkdf.derive(key + key)


def _epoch_seconds(moment: datetime, name: str) -> int:
    # A naive datetime would be read as local time by .timestamp(): refuse the ambiguity.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must carry a time zone")
    return int(moment.timestamp())


def mint_idtoken(
    pool_key_file_bytes: bytes,
    *,
    trust_domain: str,
    subject: str,
    issued_at: datetime,
    expires_at: datetime,
    scopes: Sequence[str],
    token_id: str,
    truncate_at_nul: bool = False,
) -> str:
    """An HS256 IDTOKEN signed with the POOL key, as ``condor_token_create`` would make it."""
    if not trust_domain or any(c in trust_domain for c in _ISSUER_FORBIDDEN):
        raise ValueError("the trust domain must be one non-empty word (no spaces or commas)")
    if not subject:
        raise ValueError("the token needs a subject")
    if not token_id:
        raise ValueError("the token needs an id (jti)")
    iat = _epoch_seconds(issued_at, "issued_at")
    exp = _epoch_seconds(expires_at, "expires_at")
    if exp <= iat:
        raise ValueError("the token would expire before it is issued")
    claims = {
        "sub": subject,
        "iss": trust_domain,
        "iat": iat,
        "exp": exp,
        "jti": token_id,
        "scope": " ".join(scopes),
    }
    if not scopes:
        # HTCondor omits the claim when there is no limit; an empty string would mean "nothing".
        del claims["scope"]
    key = derive_signing_key(pool_key_file_bytes, truncate_at_nul=truncate_at_nul)
    # PyJWT adds "typ": "JWT" unless told otherwise; HTCondor's header has exactly alg and kid.
    return jwt.encode(
        claims, key, algorithm="HS256", headers={"kid": POOL_KEY_ID, "typ": None}
    )
