"""Building blocks the functional and e2e tests share: a deployed stack, a bundle, a pool."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from annex_admin.credentials import CapsChange, IssueRequest, issue_credentials
from annex_admin.deploy import deploy, resolve_settings
from annex_admin.pool import apply_pool, plan_pool
from annex_admin.stack import read_stack
from annex_cloud.pools import PoolSecret
from annex_common.aws import AwsClients
from annex_cloud.caps import Caps
from annex_common.bundle import Bundle
from templates import contract
from templates.settings import StackSettings

PROJECT = "TheNeeds-MooreLab"
USER = "needs-moore"
POOL_PASSWORD = b"pool-password-for-the-test-pool"
SCRAMBLE = bytes([0xDE, 0xAD, 0xBE, 0xEF])
# A Python object where a person expected words: a dataclass repr (Caps(max_instances=0, ...)) or a
# default object repr (<annex_user.bundle.Caps object at 0x...>).
PYTHON_OBJECT = re.compile(r"\b[A-Z]\w*\(\w+=|<[\w.]+ object at 0x[0-9a-f]+>")


def assert_speaks_plainly(output: str) -> None:
    """No traceback and no Python object in what a user reads."""
    assert "Traceback" not in output, output
    found = PYTHON_OBJECT.search(output)
    assert found is None, f"a Python object in the output ({found.group(0)!r}): {output}"


def console_script(name: str) -> str:
    """The installed console script next to the running interpreter (.venv/bin in CI)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise AssertionError(f"{path} is not installed; run `make test`")
    return str(path)


def deploy_stack(
    clients: AwsClients, instance_types: tuple[str, ...] = contract.DEFAULT_INSTANCE_TYPES, *, pool: bool = True
):
    """The region stack, set up; with ``pool``, its pool recorded as annex-admin pool set does."""
    settings, _ = resolve_settings(clients, StackSettings(region=clients.region, instance_types=instance_types))
    result = deploy(clients, settings, lambda _line: None)
    if pool:
        record_pool(clients)
    return result


# The test pool's own signing key for annexes, as its central manager keeps it (passwords.d/ANNEX).
ANNEX_KEY_FILE = bytes(range(7, 71))
COLLECTOR = "cm.pool.example:9618"
TRUST_DOMAIN = "pool.example"


def stack_pool(security: str = "idtoken") -> PoolSecret:
    if security == "password":
        return PoolSecret(COLLECTOR, TRUST_DOMAIN, "password", "", scramble(POOL_PASSWORD))
    return PoolSecret(COLLECTOR, TRUST_DOMAIN, "idtoken", "ANNEX", ANNEX_KEY_FILE)


def record_pool(
    clients: AwsClients, pool: PoolSecret | None = None, *, project_id: str | None = None,
    stack_name: str = contract.DEFAULT_STACK_NAME,
) -> None:
    """Record the stack's pool (or a project's), as annex-admin pool set writes it."""
    stack = read_stack(clients, stack_name)
    apply_pool(clients, plan_pool(clients, stack, pool or stack_pool(), project_id))


def issue_bundle(
    clients: AwsClients,
    output: Path,
    *,
    project_id: str = PROJECT,
    user: str = USER,
    caps: Caps = Caps(max_instances=32, max_lease_hours=168, max_spend_usd=500.0),
) -> Bundle:
    change = CapsChange(caps.max_instances, caps.max_lease_hours, caps.max_spend_usd)
    return issue_credentials(
        clients, IssueRequest(contract.DEFAULT_STACK_NAME, project_id, user, output, change), lambda _q: True
    ).bundle


def scramble(password: bytes) -> bytes:
    return bytes(b ^ SCRAMBLE[i % 4] for i, b in enumerate(password))


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass(frozen=True)
class TestPool:
    condor_config: Path
    password_file: Path
    collector_host: str = "cm.pool.example:9618"
    trust_domain: str = "pool.example"


def write_pool(folder: Path, *, signing_key: bool = True) -> TestPool:
    """A pool configuration using pool-password security.

    HTCondor uses the pool password file as the POOL token-signing key when no separate key is
    configured; with ``signing_key=False`` the key is pointed at a missing file, so the client
    must fall back to shipping the password.
    """
    folder.mkdir(parents=True, exist_ok=True)
    password = folder / "pool_password"
    write_private(password, scramble(POOL_PASSWORD))
    lines = [
        "COLLECTOR_HOST = cm.pool.example:9618",
        "TRUST_DOMAIN = pool.example",
        f"SEC_PASSWORD_FILE = {password}",
        # A port nobody listens on keeps collector queries fast in tests.
        "QUERY_TIMEOUT = 2",
    ]
    if not signing_key:
        lines.append(f"SEC_TOKEN_POOL_SIGNING_KEY_FILE = {folder / 'no-such-key'}")
    config = folder / "condor_config"
    config.write_text("\n".join(lines) + "\n")
    return TestPool(condor_config=config, password_file=password)
