"""Reading real pool configurations with the htcondor2 bindings (in a child process).

Every test writes real configuration and key files in a temporary directory; nothing is mocked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import jwt
import pytest

from annex_common.errors import BadInput
from annex_common.times import format_local
from annex_user import pool as pool_mod
from annex_user.pool import PoolInfo, pool_security, query_collector, read_pool
from annex_user.tokens import ANNEX_SCOPES, derive_signing_key
from templates import contract

ISSUED = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
EXPIRES = datetime(2026, 12, 18, 23, 59, tzinfo=timezone.utc)
MINT_HELPER = Path(__file__).resolve().parent.parent / "pool_support" / "htcondor_mint.py"


def scramble(data: bytes) -> bytes:
    mask = (0xDE, 0xAD, 0xBE, 0xEF)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def write_secret(path: Path, plain: bytes, mode: int = 0o600) -> bytes:
    """Write a key or pool password file the way condor_store_cred does; return its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = scramble(plain)
    path.write_bytes(data)
    path.chmod(mode)
    return data


def write_config(directory: Path, text: str, name: str = "condor_config") -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def security_for(pool: PoolInfo, subject: str = "condor"):
    return pool_security(
        pool, annex_name="deadline-run", subject=subject, issued_at=ISSUED, expires_at=EXPIRES
    )


def decode(token: str, key: bytes) -> dict:
    return jwt.decode(
        token, key, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
    )


# --- pools that read cleanly ------------------------------------------------------------------


def test_password_pool_ships_the_password_file(tmp_path: Path) -> None:
    password = write_secret(tmp_path / "pool_password", b"the pool password")
    config = write_config(
        tmp_path,
        f"COLLECTOR_HOST = cm.example.org:9618\n"
        f"TRUST_DOMAIN = cm.example.org\n"
        f"SEC_PASSWORD_FILE = {tmp_path}/pool_password\n"
        f"SEC_TOKEN_POOL_SIGNING_KEY_FILE = {tmp_path}/no-such-key\n",
    )
    pool = read_pool(config)
    assert pool == PoolInfo(
        condor_config=config,
        collector_host="cm.example.org:9618",
        trust_domain="cm.example.org",
        password_file=f"{tmp_path}/pool_password",
        signing_key_file=f"{tmp_path}/no-such-key",
    )
    sec = security_for(pool)
    assert sec.kind == "password"
    assert sec.object_name == contract.PASSWORD_OBJECT
    assert sec.payload == password  # as-is, still scrambled: the instance uses the file directly
    assert f"pool password file {tmp_path}/pool_password" in sec.description
    assert "no-such-key" in sec.description and "not readable" in sec.description
    # The plan shows this description: it says plainly what the fallback costs.
    assert "this puts the pool's key on every node of the annex" in sec.description
    for shown in (repr(sec), str(sec)):
        assert password.hex() not in shown and repr(password) not in shown


def test_signing_key_pool_mints_a_scoped_token(tmp_path: Path) -> None:
    key_dir = tmp_path / "passwords.d"
    key_bytes = write_secret(key_dir / "POOL", os.urandom(32))
    # Only the directory is set: the key file is HTCondor's default, $(SEC_PASSWORD_DIRECTORY)/POOL.
    config = write_config(
        tmp_path,
        f"COLLECTOR_HOST = cm.example.org\nTRUST_DOMAIN = needs-moore.example.org\n"
        f"SEC_PASSWORD_DIRECTORY = {key_dir}\n",
    )
    pool = read_pool(config)
    assert pool.signing_key_file == str(key_dir / "POOL")
    sec = security_for(pool)
    assert sec.kind == "idtoken"
    assert sec.object_name == contract.TOKEN_OBJECT
    token = sec.payload.decode("ascii").strip()
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "POOL"}
    claims = decode(token, derive_signing_key(key_bytes))
    assert claims["iss"] == "needs-moore.example.org"
    assert claims["sub"] == "condor@needs-moore.example.org"
    assert claims["iat"] == int(ISSUED.timestamp())
    assert claims["exp"] == int(EXPIRES.timestamp())
    assert claims["scope"] == " ".join(ANNEX_SCOPES)
    assert len(claims["jti"]) == 32 and claims["jti"] != decode(
        security_for(pool).payload.decode().strip(), derive_signing_key(key_bytes)
    )["jti"]
    assert str(key_dir / "POOL") in sec.description
    assert f"expires {format_local(EXPIRES)}" in sec.description  # for people: local time with its zone
    assert "ADVERTISE_STARTD" in sec.description
    assert token not in repr(sec) and token not in str(sec)


def test_subject_with_a_domain_is_kept(tmp_path: Path) -> None:
    write_secret(tmp_path / "POOL", b"k")
    config = write_config(
        tmp_path, f"COLLECTOR_HOST = cm\nSEC_TOKEN_POOL_SIGNING_KEY_FILE = {tmp_path}/POOL\n"
    )
    sec = security_for(read_pool(config), subject="needsmoore@lab.example.org")
    claims = decode(sec.payload.decode().strip(), derive_signing_key(scramble(b"k")))
    assert claims["sub"] == "needsmoore@lab.example.org"


def test_password_only_pool_signs_with_the_password_as_htcondor_does(tmp_path: Path) -> None:
    """In 24.x/25.x SEC_TOKEN_POOL_SIGNING_KEY_FILE defaults to $(SEC_PASSWORD_FILE)."""
    key_bytes = write_secret(tmp_path / "pool_password", b"the pool password")
    config = write_config(
        tmp_path, f"COLLECTOR_HOST = cm\nSEC_PASSWORD_FILE = {tmp_path}/pool_password\n"
    )
    pool = read_pool(config)
    assert pool.signing_key_file == pool.password_file == f"{tmp_path}/pool_password"
    sec = security_for(pool)
    assert sec.kind == "idtoken"
    decode(sec.payload.decode().strip(), derive_signing_key(key_bytes))


def test_legacy_key_mode_stops_at_the_first_nul(tmp_path: Path) -> None:
    key_file = tmp_path / "POOL"
    key_file.write_bytes(scramble(b"old password") + b"\0\0\0")
    key_file.chmod(0o600)
    config = write_config(
        tmp_path,
        f"COLLECTOR_HOST = cm\nSEC_TOKEN_POOL_SIGNING_KEY_FILE = {key_file}\n"
        "SEC_TOKEN_POOL_SIGNING_KEY_IS_PASSWORD = true\n",
    )
    pool = read_pool(config)
    assert pool.signing_key_is_password
    token = security_for(pool).payload.decode().strip()
    decode(token, derive_signing_key(scramble(b"old password")))


def test_macros_and_includes(tmp_path: Path) -> None:
    (tmp_path / "config.d").mkdir()
    write_config(
        tmp_path / "config.d",
        "CENTRAL_MANAGER = cm.lab.example.org\nTRUST_DOMAIN = $(CENTRAL_MANAGER)\n",
        name="10-pool.conf",
    )
    config = write_config(
        tmp_path,
        f"include : {tmp_path}/config.d/10-pool.conf\n"
        "COLLECTOR_HOST = $(CENTRAL_MANAGER):$(COLLECTOR_PORT)\n",
    )
    pool = read_pool(config)
    assert pool.collector_host == "cm.lab.example.org:9618"
    assert pool.trust_domain == "cm.lab.example.org"


def test_env_macro(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANNEX_TEST_CENTRAL_MANAGER", "cm-from-env.example.org")
    config = write_config(tmp_path, "COLLECTOR_HOST = $ENV(ANNEX_TEST_CENTRAL_MANAGER)\n")
    assert read_pool(config).collector_host == "cm-from-env.example.org"


def test_trust_domain_defaults_as_htcondor_does(tmp_path: Path) -> None:
    """HTCondor 24.x/25.x: TRUST_DOMAIN defaults to $(UID_DOMAIN) (8.9 used $(COLLECTOR_HOST))."""
    config = write_config(tmp_path, "COLLECTOR_HOST = cm:9618\nUID_DOMAIN = lab.example.org\n")
    assert read_pool(config).trust_domain == "lab.example.org"


# --- configurations that cannot be read -------------------------------------------------------


def test_syntax_error_is_bad_input(tmp_path: Path) -> None:
    config = write_config(tmp_path, "COLLECTOR_HOST = cm\nthis line is not configuration\n")
    with pytest.raises(BadInput) as caught:
        read_pool(config)
    assert caught.value.exit_code == 2
    assert "cannot parse" in caught.value.what and config in caught.value.what
    assert "Configuration Error" in caught.value.why
    assert caught.value.next_step


def test_circular_macro_times_out_as_bad_input(tmp_path: Path) -> None:
    config = write_config(tmp_path, "A = $(B)\nB = $(A)\nCOLLECTOR_HOST = $(A)\n")
    with pytest.raises(BadInput) as caught:
        read_pool(config, timeout=3)
    assert "did not finish" in caught.value.what
    assert "refers to itself" in caught.value.why


@pytest.mark.parametrize("value", [None, ""])
def test_unset_condor_config(value: str | None) -> None:
    with pytest.raises(BadInput) as caught:
        read_pool(value)
    assert "CONDOR_CONFIG is not set" in caught.value.what
    assert "export CONDOR_CONFIG" in caught.value.next_step


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        read_pool(str(tmp_path / "nowhere" / "condor_config"))


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="is a directory"):
        read_pool(str(tmp_path))


def test_unreadable_config_file(tmp_path: Path) -> None:
    """A CONDOR_CONFIG that exists but cannot be opened for reading.

    A mode-0 file would do for an ordinary user, but the suite runs as root here and in CI, and
    root reads files whatever their mode; opening a Unix socket fails for root too (ENXIO), so it
    drives the same branch on every machine."""
    config = tmp_path / "condor_config"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(config))
        with pytest.raises(BadInput, match="Cannot read"):
            read_pool(str(config))


def test_config_without_collector(tmp_path: Path) -> None:
    config = write_config(tmp_path, "TRUST_DOMAIN = somewhere\n")
    with pytest.raises(BadInput) as caught:
        read_pool(config)
    assert "does not name a collector" in caught.value.what
    assert "COLLECTOR_HOST" in caught.value.why


# --- security material that cannot be used ----------------------------------------------------


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    write_secret(tmp_path / "POOL", b"key", mode=0o644)
    write_secret(tmp_path / "pool_password", b"password")
    config = write_config(
        tmp_path,
        f"COLLECTOR_HOST = cm\nSEC_TOKEN_POOL_SIGNING_KEY_FILE = {tmp_path}/POOL\n"
        f"SEC_PASSWORD_FILE = {tmp_path}/pool_password\n",
    )
    with pytest.raises(BadInput) as caught:
        security_for(read_pool(config))
    assert "0644" in caught.value.what and f"{tmp_path}/POOL" in caught.value.what
    assert "0600" in caught.value.why
    assert "chmod 0600" in caught.value.next_step


def test_group_readable_password_is_refused(tmp_path: Path) -> None:
    write_secret(tmp_path / "pool_password", b"password", mode=0o640)
    config = write_config(
        tmp_path,
        f"COLLECTOR_HOST = cm\nSEC_TOKEN_POOL_SIGNING_KEY_FILE = {tmp_path}/missing\n"
        f"SEC_PASSWORD_FILE = {tmp_path}/pool_password\n",
    )
    with pytest.raises(BadInput, match="0640"):
        security_for(read_pool(config))


def test_neither_file_readable(tmp_path: Path) -> None:
    """Missing files stand for unreadable ones: the suite may run as root, who reads any file."""
    config = write_config(
        tmp_path,
        f"COLLECTOR_HOST = cm\nSEC_TOKEN_POOL_SIGNING_KEY_FILE = {tmp_path}/key-missing\n"
        f"SEC_PASSWORD_FILE = {tmp_path}/password-missing\n",
    )
    with pytest.raises(BadInput) as caught:
        security_for(read_pool(config))
    assert caught.value.exit_code == 2
    assert f"{tmp_path}/key-missing" in caught.value.why
    assert f"{tmp_path}/password-missing" in caught.value.why
    assert "pool administrator" in caught.value.next_step


def test_trust_domain_with_spaces_cannot_sign(tmp_path: Path) -> None:
    write_secret(tmp_path / "POOL", b"key")
    config = write_config(
        tmp_path,
        f"COLLECTOR_HOST = cm\nTRUST_DOMAIN = two words\n"
        f"SEC_TOKEN_POOL_SIGNING_KEY_FILE = {tmp_path}/POOL\n",
    )
    with pytest.raises(BadInput, match="Cannot mint"):
        security_for(read_pool(config))


# --- HTCondor's own token minting agrees with ours --------------------------------------------


def test_token_minted_by_htcondor_verifies_with_our_derived_key(tmp_path: Path) -> None:
    """HTCondor's generate_token, called in a child process, against derive_signing_key."""
    plain = bytes([0x41, 0x42, 0xBE]) + os.urandom(29)  # offset 2 scrambles to a NUL byte
    key_bytes = write_secret(tmp_path / "POOL", plain)
    assert b"\0" in key_bytes
    config = write_config(
        tmp_path,
        f"COLLECTOR_HOST = cm\nTRUST_DOMAIN = cm.example.org\n"
        f"SEC_TOKEN_POOL_SIGNING_KEY_FILE = {tmp_path}/POOL\n",
    )
    env = {**os.environ, "CONDOR_CONFIG": config}
    minted = subprocess.run(
        [sys.executable, str(MINT_HELPER), "condor@cm.example.org", "600", "ADVERTISE_STARTD"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    # The helper calls a private C++ symbol of the installed wheel (exit 3 when it is absent).
    # requirements.lock pins the htcondor release that exports it, so its absence is a failure to
    # look at (a new release in the lock), never a reason to skip the comparison.
    assert minted.returncode != 3, "the locked htcondor release no longer exports generate_token: " + minted.stderr
    assert minted.returncode == 0, minted.stderr
    claims = decode(minted.stdout.strip(), derive_signing_key(key_bytes))
    assert claims["scope"] == "condor:/ADVERTISE_STARTD"
    # And the key our own token is signed with is the same one.
    ours = security_for(read_pool(config)).payload.decode().strip()
    decode(ours, derive_signing_key(key_bytes))


# --- asking the collector ---------------------------------------------------------------------


def _pool_at(tmp_path: Path, address: str) -> PoolInfo:
    config = write_config(tmp_path, f"COLLECTOR_HOST = {address}\n")
    return read_pool(config)


def test_collector_nobody_listening(tmp_path: Path) -> None:
    """No collector can run here, so only the "cannot ask" paths are tested end to end.

    The success path (a collector answering with startd ads) cannot run here; its parsing is
    unit-tested in tests/unit/test_pool_parsing.py.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed again: connections are refused at once.
    pool = _pool_at(tmp_path, f"127.0.0.1:{port}")
    assert query_collector(pool, timeout=5) is None
    # The None came from the collector query itself, not from a broken child.
    env = {**os.environ, "CONDOR_CONFIG": pool.condor_config, "_CONDOR_QUERY_TIMEOUT": "1"}
    child = subprocess.run(
        [sys.executable, "-c", pool_mod._QUERY_COLLECTOR_CHILD, pool.collector_host],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert "Failed communication with collector" in child.stderr


@pytest.fixture
def silent_listener() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP listener that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def test_collector_that_never_answers(
    tmp_path: Path, silent_listener: tuple[str, list[socket.socket]]
) -> None:
    """A collector that accepts and stays silent: None within our deadline, no exception.

    The success path cannot run here (no collector daemon in the wheel).
    """
    address, accepted = silent_listener
    assert query_collector(_pool_at(tmp_path, address), timeout=2) is None
    assert accepted, "the query never reached the listener"


def test_collector_query_with_a_broken_configuration_is_none(tmp_path: Path) -> None:
    pool = _pool_at(tmp_path, "127.0.0.1:9")
    Path(pool.condor_config).write_text("not configuration at all\n")
    assert query_collector(pool, timeout=5) is None



@pytest.mark.parametrize("key_name", ["ANNEX", "POOL"])
def test_the_brokers_token_is_byte_for_byte_htcondors_own(tmp_path: Path, key_name: str) -> None:
    """HTCondor's generate_token (the installed library, in a child process) signs with the key
    file of this name; the broker's standard-library minting, given the same claims and the same
    file, makes exactly the same token."""
    import base64
    import json

    from annex_cloud.pool_tokens import ANNEX_SCOPES as SCOPES, TokenClaimsToMint, mint_token

    key_dir = tmp_path / "passwords.d"
    key_bytes = write_secret(key_dir / key_name, bytes([0x41, 0x42, 0xBE]) + os.urandom(45))  # a NUL in the file
    assert b"\0" in key_bytes
    config = write_config(tmp_path, f"COLLECTOR_HOST = cm\nTRUST_DOMAIN = cm.example.org\nSEC_PASSWORD_DIRECTORY = {key_dir}\n")
    minted = subprocess.run(
        [sys.executable, str(MINT_HELPER), "condor_pool@cm.example.org", "7200",
         *(s.removeprefix("condor:/") for s in SCOPES)],
        env={**os.environ, "CONDOR_CONFIG": config, "ANNEX_MINT_KEY_ID": key_name},
        capture_output=True, text=True, timeout=60,
    )
    assert minted.returncode != 3, "the locked htcondor release no longer exports generate_token: " + minted.stderr
    assert minted.returncode == 0, minted.stderr
    theirs = minted.stdout.strip()
    claims = json.loads(base64.urlsafe_b64decode(theirs.split(".")[1] + "=="))
    ours = mint_token(key_bytes, key_name, TokenClaimsToMint(
        claims["iss"], claims["sub"], datetime.fromtimestamp(claims["iat"], timezone.utc),
        datetime.fromtimestamp(claims["exp"], timezone.utc), claims["jti"], tuple(claims["scope"].split())))
    assert ours == theirs
