"""A local AWS emulator (moto's server) for trying the tools without an AWS account."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from annex_common.errors import AnnexError, BadInput

FAKE_ACCESS_KEY = "AKIASANDBOXADMIN0000"
FAKE_SECRET_KEY = "sandbox-secret-not-a-real-key"
REGION = "us-east-1"
# The one emulator start-up of the project: moto's server with the patches the project relies on.
EMULATOR_MODULE = "annex_sandbox.server"


@dataclass(frozen=True)
class Sandbox:
    url: str
    pid: int
    log: Path

    def environment(self) -> dict[str, str]:
        return emulator_environment(self.url, FAKE_ACCESS_KEY, FAKE_SECRET_KEY)


def emulator_environment(
    endpoint: str, access_key: str, secret_key: str, *, region: str = REGION, home: Path | None = None
) -> dict[str, str]:
    """Variables that point every AWS client (boto3, the aws CLI) at an emulator with fake keys.

    With ``home``, the shared AWS config and credentials files are pointed at absent files there,
    so nothing from a real AWS setup on the machine can be picked up.
    """
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": region,
    }
    if home is not None:
        env.update(
            AWS_REGION=region,
            AWS_CONFIG_FILE=str(home / "aws-config-absent"),
            AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials-absent"),
            AWS_EC2_METADATA_DISABLED="true",
        )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=2):
            return True
    except OSError:
        return False


def _last_line(log_path: Path) -> str:
    """The emulator's last word (it says why it refused to start), or where to look."""
    lines = log_path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"it wrote nothing to {log_path}"


def spawn_emulator(
    module: str, port: int, log_path: Path, *, env: dict[str, str] | None = None,
    cwd: Path | None = None, detach: bool = False, timeout: float = 60,
) -> tuple[str, subprocess.Popen]:
    """Start an emulator server module (EMULATOR_MODULE, or moto.server itself) on 127.0.0.1:port and
    wait until it answers; its output goes to ``log_path``."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=detach,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AnnexError("the local emulator did not start", _last_line(log_path), f"See {log_path}.")
        time.sleep(0.2)
    return url, process


def start_sandbox(state_dir: Path, port: int | None = None) -> Sandbox:
    try:
        import moto.server  # noqa: F401  (only to tell the user what to install)
    except ImportError as exc:
        raise BadInput(
            "the local AWS emulator is not installed",
            "the sandbox runs moto's server, which only the sandbox extra installs",
            "Install it: pip install 'condor-annex[sandbox]'.",
        ) from exc
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = read_sandbox(state_dir)
    if existing:
        return existing
    port = port or free_port()
    log = state_dir / "emulator.log"
    # Detached: the emulator outlives the command that started it.
    url, process = spawn_emulator(EMULATOR_MODULE, port, log, detach=True)
    (state_dir / "sandbox.url").write_text(url)
    (state_dir / "sandbox.pid").write_text(str(process.pid))
    return Sandbox(url, process.pid, log)


def read_sandbox(state_dir: Path) -> Sandbox | None:
    try:
        url = (state_dir / "sandbox.url").read_text().strip()
        pid = int((state_dir / "sandbox.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    if not _answers(url):
        return None
    return Sandbox(url, pid, state_dir / "emulator.log")


def stop_sandbox(state_dir: Path) -> bool:
    sandbox = read_sandbox(state_dir)
    for name in ("sandbox.url", "sandbox.pid"):
        (state_dir / name).unlink(missing_ok=True)
    if sandbox is None:
        return False
    try:
        os.killpg(sandbox.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while _answers(sandbox.url) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True
