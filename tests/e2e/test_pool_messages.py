"""What condor_annex says about the pool: which key settings it looked at, what the collector did."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.test_scientist_flow import setup_region_and_bundle
from tests.flows import PROJECT, USER


def pool_config(folder: Path, *lines: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "condor_config"
    path.write_text("\n".join(["TRUST_DOMAIN = pool.example", *lines]) + "\n")
    return str(path)


def own_pool_bundle(shell) -> str:
    """A scientist whose project may launch into her own pool with its key (`--own-pool`): the one
    case where condor_annex reads a pool's configuration and key on her machine."""
    bundle = setup_region_and_bundle(shell)
    allowed = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                        "--output", bundle, "--allow-own-pool-key", "--yes")
    assert allowed.returncode == 0, allowed.output
    return bundle


def launch(shell, bundle: str, condor_config: str):
    return shell.run("condor_annex", "--project-id", PROJECT, "--duration", "2", "--instances", "1", "--yes",
                     "--own-pool", env={"CONDOR_ANNEX_CREDENTIALS": bundle, "CONDOR_CONFIG": condor_config})


def test_no_readable_key_names_both_settings_and_what_was_found(shell, tmp_path):
    bundle = own_pool_bundle(shell)
    config = pool_config(tmp_path / "separate", "COLLECTOR_HOST = cm.pool.example",
                         f"SEC_TOKEN_POOL_SIGNING_KEY_FILE = {tmp_path}/absent-key",
                         f"SEC_PASSWORD_FILE = {tmp_path}")
    result = launch(shell, bundle, config)
    assert result.returncode == 2, result.output
    assert f"SEC_TOKEN_POOL_SIGNING_KEY_FILE {tmp_path}/absent-key: no such file" in result.output
    assert f"SEC_PASSWORD_FILE {tmp_path}: a folder, not a file" in result.output
    assert "Set SEC_TOKEN_POOL_SIGNING_KEY_FILE" in result.output and "SEC_PASSWORD_FILE to a copy" in result.output
    assert config in result.output


def test_a_shared_key_file_is_named_once(shell, tmp_path):
    bundle = own_pool_bundle(shell)
    shared = tmp_path / "POOL"
    config = pool_config(tmp_path / "shared", "COLLECTOR_HOST = cm.pool.example",
                         f"SEC_TOKEN_POOL_SIGNING_KEY_FILE = {shared}", f"SEC_PASSWORD_FILE = {shared}")
    result = launch(shell, bundle, config)
    assert result.returncode == 2, result.output
    assert f"SEC_TOKEN_POOL_SIGNING_KEY_FILE and SEC_PASSWORD_FILE, both {shared}: no such file" in result.output
    assert result.output.count(str(shared)) == 1


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_status_says_the_collector_refused_the_connection(shell, tmp_path):
    bundle = setup_region_and_bundle(shell)
    port = closed_port()
    config = pool_config(tmp_path / "refusing", f"COLLECTOR_HOST = 127.0.0.1:{port}")
    result = shell.run("condor_annex", "status", env={"CONDOR_ANNEX_CREDENTIALS": bundle, "CONDOR_CONFIG": config})
    assert result.returncode == 0, result.output
    assert f"127.0.0.1 refused the connection on port {port}" in result.stderr
    assert "within 5 s" not in result.stderr


@pytest.fixture
def silent_collector() -> Iterator[str]:
    """Accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    thread = threading.Thread(target=lambda: [held.append(server.accept()[0]) for _ in range(8)], daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        for conn in held:
            conn.close()
        server.close()


def test_status_says_the_collector_did_not_answer(shell, tmp_path, silent_collector):
    bundle = setup_region_and_bundle(shell)
    config = pool_config(tmp_path / "silent", f"COLLECTOR_HOST = {silent_collector}")
    result = shell.run("condor_annex", "status", env={"CONDOR_ANNEX_CREDENTIALS": bundle, "CONDOR_CONFIG": config})
    assert result.returncode == 0, result.output
    assert "accepted the connection but did not answer within 4 s" in result.stderr


def test_a_pool_value_no_node_may_hold_is_refused_with_exit_2_and_named(shell, tmp_path):
    """The broker refuses a value that would not be a single configuration word on a node."""
    from tests.flows import write_pool

    bundle = own_pool_bundle(shell)
    pool = write_pool(tmp_path / "pool")
    config = Path(pool.condor_config)
    config.write_text(config.read_text().replace("COLLECTOR_HOST = cm.pool.example:9618",
                                                 "COLLECTOR_HOST = cm.pool.example:9618 START=True"))
    result = launch(shell, bundle, str(config))
    assert result.returncode == 2, result.output
    assert "collector address 'cm.pool.example:9618 START=True' cannot be used on an annex instance" in result.output
