"""The local AWS emulator for the suite: moto's server in a child process on 127.0.0.1.

Nothing in the suite may reach real AWS: the environment carries fake keys and a loopback
endpoint before any test runs, and ``assert_sandboxed`` fails a test that finds otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from annex_admin.sandbox import emulator_environment, free_port, spawn_emulator

FAKE_KEY_ID = "AKIAFAKETESTKEY00000"
FAKE_SECRET = "fake-secret-for-the-local-emulator-only"
REGION = "us-east-1"
# One werkzeug access-log line per request; the emulator's own /moto-api/ control calls excluded.
_AWS_REQUEST_LINE = re.compile(rb'"(?:GET|POST|PUT|DELETE|HEAD|PATCH) /(?!moto-api)[^"]* HTTP/1\.[01]" \d{3}')


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen
    log_path: Path

    def post(self, path: str, body: bytes = b"") -> None:
        request = urllib.request.Request(
            self.url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def reset(self) -> None:
        """Drop every resource and switch IAM enforcement off."""
        self.enforce_iam(False)
        self.post("/moto-api/reset")

    def enforce_iam(self, on: bool) -> None:
        # 0: every request from now on is authenticated; inf: none is.
        self.post("/moto-api/reset-auth", b"0" if on else b"inf")

    def aws_requests(self) -> int:
        """AWS API requests the emulator has answered so far (read from its access log)."""
        return len(_AWS_REQUEST_LINE.findall(self.log_path.read_bytes()))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_emulator(log_dir: Path, extra_env: dict[str, str] | None = None) -> Emulator:
    port = free_port()
    env = dict(os.environ)
    env.update(extra_env or {})
    log_path = log_dir / f"moto-{port}.log"
    url, process = spawn_emulator("moto.server", port, log_path, env=env)
    return Emulator(url=url, process=process, log_path=log_path)


def sandbox_environment(endpoint: str, home: Path) -> dict[str, str]:
    """Variables that pin every AWS client to the emulator with fake keys."""
    env = emulator_environment(endpoint, FAKE_KEY_ID, FAKE_SECRET, region=REGION, home=home)
    env["AWS_RETRY_MODE"] = "standard"
    return env


def assert_sandboxed() -> None:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not endpoint.startswith("http://127.0.0.1:"):
        raise AssertionError(f"AWS_ENDPOINT_URL is not the local emulator: {endpoint!r}")
    if os.environ.get("AWS_ACCESS_KEY_ID") != FAKE_KEY_ID:
        raise AssertionError("AWS_ACCESS_KEY_ID is not the suite's fake key")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        if os.environ.get(name):
            raise AssertionError(f"{name} is set; the suite refuses to run with real credentials")
