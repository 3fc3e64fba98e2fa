"""IDTOKEN minting: the key derivation, the token's exact shape, and known answers from HTCondor."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from annex_cloud.pool_tokens import (
    TOKEN_MARGIN,
    TokenClaimsToMint,
    annex_identity,
    mint_token,
    read_claims,
    signing_key,
    token_problem,
)
from annex_user.tokens import ANNEX_SCOPES, derive_signing_key, mint_idtoken, unscramble

# Fixed instants in the past, so no test depends on the clock except the expiry check.
ISSUED = datetime(2025, 6, 1, 9, 0, tzinfo=timezone.utc)
EXPIRES = ISSUED + timedelta(hours=8)

# Known answers: key files and the tokens HTCondor 25.14.1's own generate_token signed with them
# (tests/pool_support/htcondor_mint.py; subject condor@cm.example.org, issuer cm.example.org,
# lifetime 3600 s, authz ADVERTISE_STARTD ADVERTISE_MASTER READ). Test keys, not secrets.
KAT_PLAIN_FILE = bytes.fromhex("bf8dce83bfc4d0cfaec2d183fedddf9caddad19dba")
KAT_PLAIN_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJleHAiOjE3OTYwNTg2MTYsImlhdCI6MTc5NjA1NTAxNiwiaXNz"
    "IjoiY20uZXhhbXBsZS5vcmciLCJqdGkiOiI3OGYyZjk4ODFkNTdmZTU4YjY4NmJhOTIyMDMwZWYyNSIsInNjb3BlIjoi"
    "Y29uZG9yOlwvQURWRVJUSVNFX1NUQVJURCBjb25kb3I6XC9BRFZFUlRJU0VfTUFTVEVSIGNvbmRvcjpcL1JFQUQiLCJz"
    "dWIiOiJjb25kb3JAY20uZXhhbXBsZS5vcmcifQ.FHIdtxfVAEPUpvdgU3Q9OyJ9jhdSLhqZDifcTOCD6xE"
)
# This key scrambles to a file with a NUL at offset 2: HTCondor still uses all 32 bytes.
KAT_NUL_FILE = bytes.fromhex(
    "9fef00accebcacfccab8a8f8c6b4a4f4c2b0a0f0fe8c9cccfa8898c8f68494c4"
)
KAT_NUL_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJleHAiOjE3OTYwNTg2MTYsImlhdCI6MTc5NjA1NTAxNiwiaXNz"
    "IjoiY20uZXhhbXBsZS5vcmciLCJqdGkiOiJlY2MxYmYwZmZiZGMwYjIyZmNhZDE0NjA3NmM0NTA4OSIsInNjb3BlIjoi"
    "Y29uZG9yOlwvQURWRVJUSVNFX1NUQVJURCBjb25kb3I6XC9BRFZFUlRJU0VfTUFTVEVSIGNvbmRvcjpcL1JFQUQiLCJz"
    "dWIiOiJjb25kb3JAY20uZXhhbXBsZS5vcmcifQ.wVmbPG1j-EOXFWjX-bEr0_2bIb46GEAvndbEEQHcDqg"
)


def scramble(data: bytes) -> bytes:
    mask = (0xDE, 0xAD, 0xBE, 0xEF)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def reference_key(plain_key: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"htcondor", info=b"master jwt"
    ).derive(plain_key + plain_key)


def mint(key_file: bytes = scramble(b"pool-secret"), **overrides) -> str:
    args = dict(
        trust_domain="cm.example.org",
        subject="condor@cm.example.org",
        issued_at=ISSUED,
        expires_at=EXPIRES,
        scopes=ANNEX_SCOPES,
        token_id="0123456789abcdef0123456789abcdef",
    )
    args.update(overrides)
    return mint_idtoken(key_file, **args)


def decode(token: str, key: bytes, **options) -> dict:
    # Fixed instants and recorded tokens: check signatures and claims, not the clock.
    checks = {"verify_exp": False, "verify_iat": False, **options}
    return jwt.decode(token, key, algorithms=["HS256"], options=checks)


def test_known_answer_plain_key_matches_htcondor() -> None:
    claims = decode(KAT_PLAIN_TOKEN, derive_signing_key(KAT_PLAIN_FILE))
    assert claims["sub"] == "condor@cm.example.org"
    assert claims["scope"] == " ".join(ANNEX_SCOPES)


def test_known_answer_key_with_nul_uses_the_whole_file() -> None:
    assert b"\0" in KAT_NUL_FILE
    assert decode(KAT_NUL_TOKEN, derive_signing_key(KAT_NUL_FILE))["iss"] == "cm.example.org"
    # Cutting at the NUL (the pre-9.0 reading) gives another key, which HTCondor does not use.
    with pytest.raises(jwt.InvalidSignatureError):
        decode(KAT_NUL_TOKEN, derive_signing_key(KAT_NUL_FILE, truncate_at_nul=True))


def test_our_token_has_htcondors_shape_against_the_known_answer_key() -> None:
    # Same key file as the known answer: a token we mint verifies under the key HTCondor uses.
    token = mint(KAT_PLAIN_FILE)
    decode(token, derive_signing_key(KAT_PLAIN_FILE))
    ours = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    theirs = json.loads(base64.urlsafe_b64decode(KAT_PLAIN_TOKEN.split(".")[0] + "=="))
    assert ours == theirs == {"alg": "HS256", "kid": "POOL"}


def test_header_is_exactly_alg_and_kid() -> None:
    header_segment = mint().split(".")[0]
    raw = base64.urlsafe_b64decode(header_segment + "=" * (-len(header_segment) % 4))
    assert json.loads(raw) == {"alg": "HS256", "kid": "POOL"}
    assert jwt.get_unverified_header(mint()) == {"alg": "HS256", "kid": "POOL"}


def test_claims() -> None:
    key_file = scramble(b"pool-secret")
    claims = decode(mint(key_file), reference_key(b"pool-secret"))
    assert claims == {
        "sub": "condor@cm.example.org",
        "iss": "cm.example.org",
        "iat": int(ISSUED.timestamp()),
        "exp": int(EXPIRES.timestamp()),
        "jti": "0123456789abcdef0123456789abcdef",
        "scope": "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER condor:/READ",
    }


def test_annex_scopes_are_advertise_and_read_only() -> None:
    assert ANNEX_SCOPES == (
        "condor:/ADVERTISE_STARTD",
        "condor:/ADVERTISE_MASTER",
        "condor:/READ",
    )


def test_wrong_key_fails_verification() -> None:
    token = mint(scramble(b"pool-secret"))
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, reference_key(b"another-secret"))
    # The undoubled key is wrong too: doubling is part of the POOL derivation.
    wrong = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"htcondor", info=b"master jwt")
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, wrong.derive(b"pool-secret"))


def test_scrambled_file_must_be_unscrambled() -> None:
    # Using the file bytes as the key, unscrambled, is a different key.
    token = mint(scramble(b"pool-secret"))
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, reference_key(scramble(b"pool-secret")))


def test_unscramble_is_xor_deadbeef() -> None:
    assert unscramble(b"\xde\xad\xbe\xef\xde") == b"\0\0\0\0\0"
    assert unscramble(b"\x00\x00\x00\x00\x01") == b"\xde\xad\xbe\xef\xdf"


@settings(deadline=None)  # a loaded CI machine must not turn slowness into a failure
@given(st.binary(min_size=1, max_size=96))
def test_derivation_matches_reference_for_any_key(plain: bytes) -> None:
    assert derive_signing_key(scramble(plain)) == reference_key(plain)


def test_truncating_mode_stops_at_the_first_nul_of_the_file() -> None:
    # Pre-9.0 files (condor_store_cred) could carry trailing NULs after the scrambled password.
    file_bytes = scramble(b"pool-secret") + b"\0\0\0garbage"
    assert derive_signing_key(file_bytes, truncate_at_nul=True) == reference_key(b"pool-secret")
    assert derive_signing_key(file_bytes) != reference_key(b"pool-secret")


def test_truncating_mode_also_stops_at_a_nul_after_unscrambling() -> None:
    # 0xBE at offset 2 unscrambles to NUL; HTCondor's strlen ends the key there.
    file_bytes = scramble(b"ab") + b"\xbe" + scramble(b"abcd")[3:]
    assert derive_signing_key(file_bytes, truncate_at_nul=True) == reference_key(b"ab")


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        derive_signing_key(b"")
    with pytest.raises(ValueError, match="empty"):
        derive_signing_key(b"\0abc", truncate_at_nul=True)


def test_expiry_is_enforced_by_a_verifier() -> None:
    key = reference_key(b"pool-secret")
    expired = mint(scramble(b"pool-secret"))  # EXPIRES is in the past
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(expired, key, algorithms=["HS256"])
    far_future = datetime(2100, 1, 1, tzinfo=timezone.utc)
    live = mint(scramble(b"pool-secret"), expires_at=far_future)
    assert jwt.decode(live, key, algorithms=["HS256"])["exp"] == int(far_future.timestamp())


def test_expiry_before_issue_is_refused() -> None:
    with pytest.raises(ValueError, match="expire"):
        mint(expires_at=ISSUED)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        mint(issued_at=ISSUED.replace(tzinfo=None))


def test_non_utc_offsets_give_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    claims = decode(
        mint(issued_at=ISSUED.astimezone(plus_two), expires_at=EXPIRES.astimezone(plus_two)),
        reference_key(b"pool-secret"),
    )
    assert claims["iat"] == int(ISSUED.timestamp())
    assert claims["exp"] == int(EXPIRES.timestamp())


@pytest.mark.parametrize("domain", ["", "a b", "a,b", "a\tb"])
def test_trust_domain_must_be_one_word(domain: str) -> None:
    with pytest.raises(ValueError, match="trust domain"):
        mint(trust_domain=domain)


def test_subject_and_token_id_are_required() -> None:
    with pytest.raises(ValueError, match="subject"):
        mint(subject="")
    with pytest.raises(ValueError, match="id"):
        mint(token_id="")


# --- what the broker accepts of a token it cannot verify ------------------------------------------

TOKEN_ID = "0123456789abcdef0123456789abcdef"
LEASE_END = EXPIRES - TOKEN_MARGIN


def test_the_annex_token_condor_annex_mints_is_accepted_and_its_claims_read():
    token = (mint() + "\n").encode()
    assert token_problem(token, TOKEN_ID, LEASE_END) is None
    claims = read_claims(token)
    assert claims.token_id == TOKEN_ID and claims.expires == int(EXPIRES.timestamp())
    assert claims.scopes == ANNEX_SCOPES
    # HTCondor's own token for an annex (a known answer above) reads the same way.
    assert read_claims(KAT_PLAIN_TOKEN.encode()).scopes == ANNEX_SCOPES


@pytest.mark.parametrize(
    ("case", "token", "token_id", "problem"),
    [
        ("another id", lambda: mint(), "f" * 32, "is not the annex's"),
        ("an id not hex", lambda: mint(token_id="not-a-token-id"), "not-a-token-id", "32 hexadecimal digits"),
        ("a longer life", lambda: mint(expires_at=EXPIRES + timedelta(seconds=1)), TOKEN_ID, "after the lease end"),
        ("more scopes", lambda: mint(scopes=ANNEX_SCOPES + ("condor:/WRITE",)), TOKEN_ID, "are more than"),
        ("no scope at all", lambda: mint(scopes=()), TOKEN_ID, "(none: everything)"),
        ("not a token", lambda: "not.a-token", TOKEN_ID, "not an IDTOKEN"),
        ("no id", lambda: jwt.encode({"exp": 1}, "k" * 32, algorithm="HS256"), TOKEN_ID, "not an IDTOKEN"),
    ],
)
def test_a_token_that_says_more_than_an_annex_needs_is_refused(case, token, token_id, problem):
    found = token_problem(token().encode(), token_id, LEASE_END)
    assert found is not None and problem in found, (case, found)


# --- the broker's minting (standard library only): byte for byte HTCondor's -------------------------

def _claims_of(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def _same_claims(token: str) -> TokenClaimsToMint:
    claims = _claims_of(token)
    return TokenClaimsToMint(
        trust_domain=claims["iss"], subject=claims["sub"],
        issued_at=datetime.fromtimestamp(claims["iat"], timezone.utc),
        expires_at=datetime.fromtimestamp(claims["exp"], timezone.utc),
        token_id=claims["jti"], scopes=tuple(claims["scope"].split()),
    )


@pytest.mark.parametrize(("key_file", "htcondors"), [(KAT_PLAIN_FILE, KAT_PLAIN_TOKEN), (KAT_NUL_FILE, KAT_NUL_TOKEN)])
def test_the_brokers_token_is_byte_for_byte_htcondors_for_the_same_claims_and_key(key_file, htcondors) -> None:
    assert mint_token(key_file, "POOL", _same_claims(htcondors)) == htcondors


def test_a_key_of_another_name_is_used_whole_and_named_in_the_header() -> None:
    what = _same_claims(KAT_PLAIN_TOKEN)
    token = mint_token(KAT_PLAIN_FILE, "ANNEX", what)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "ANNEX"}
    # Not doubled: HKDF over the unscrambled key itself.
    decode(token, HKDF(algorithm=hashes.SHA256(), length=32, salt=b"htcondor", info=b"master jwt")
           .derive(unscramble(KAT_PLAIN_FILE)))
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, derive_signing_key(KAT_PLAIN_FILE))


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=96))
def test_the_standard_library_derivation_is_the_reference_one(key_file: bytes) -> None:
    assert signing_key(key_file, "POOL") == derive_signing_key(key_file)


@pytest.mark.parametrize("name", ["", "../POOL", "two words", "A" * 65])
def test_a_key_name_htcondor_would_not_read_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        mint_token(KAT_PLAIN_FILE, name, _same_claims(KAT_PLAIN_TOKEN))


def test_the_brokers_token_passes_the_brokers_own_rule() -> None:
    what = TokenClaimsToMint("pool.example", annex_identity("pool.example"), ISSUED, LEASE_END + TOKEN_MARGIN, TOKEN_ID)
    assert token_problem(mint_token(KAT_PLAIN_FILE, "ANNEX", what).encode(), TOKEN_ID, LEASE_END) is None
    assert _claims_of(mint_token(KAT_PLAIN_FILE, "ANNEX", what))["sub"] == "condor_pool@pool.example"
