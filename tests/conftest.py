"""Suite-wide harness: fake credentials and the local emulator, before anything else runs.

The environment is pinned at session start (a closed loopback port until the emulator is up), so
even a stray client in a unit test cannot reach real AWS; every test checks it is still pinned.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests import emulator as emu

_SANDBOX_HOME = Path(tempfile.mkdtemp(prefix="annex-suite-"))


def pytest_configure(config: pytest.Config) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "CONDOR_ANNEX_CREDENTIALS"):
        os.environ.pop(name, None)
    # Port 9 (discard) on loopback: nothing listens, so a client that escapes fails fast.
    os.environ.update(emu.sandbox_environment("http://127.0.0.1:9", _SANDBOX_HOME))


@pytest.fixture(autouse=True)
def _sandboxed() -> None:
    emu.assert_sandboxed()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emu.Emulator]:
    server = emu.start_emulator(tmp_path_factory.mktemp("moto"))
    previous = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = server.url
    try:
        yield server
    finally:
        os.environ["AWS_ENDPOINT_URL"] = previous
        server.stop()


@pytest.fixture
def aws(emulator: emu.Emulator) -> Iterator[emu.Emulator]:
    """A clean emulator for one test (state reset before, IAM enforcement off)."""
    emulator.reset()
    yield emulator
    emulator.enforce_iam(False)


@pytest.fixture
def clients(aws: emu.Emulator):
    from annex_common.aws import make_clients

    return make_clients(region=emu.REGION)


@pytest.fixture
def sandbox_env(aws: emu.Emulator, tmp_path: Path) -> dict[str, str]:
    """Environment for a child process (console script) pinned to the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(emu.sandbox_environment(aws.url, tmp_path))
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir(exist_ok=True)
    return env
