"""The local AWS emulator for the suite: the project's moto server (annex_sandbox/server.py)
in a child process on 127.0.0.1.

Nothing in the suite may reach real AWS: the environment carries fake keys and a loopback
endpoint before any test runs, and ``assert_sandboxed`` fails a test that finds otherwise.

The Price List API: the suite's emulator answers it from ``SUITE_PRICE_LIST`` (written to a file
named by ``ANNEX_EMULATOR_PRICE_LIST``, see annex_sandbox/server.py), which prices
``PRICED_REGION`` (ap-southeast-2) only: a region the shipped table (annex_cloud/prices.json) does
not have. So a test in ap-southeast-2 gets its prices from the API, one in us-east-1 finds the API
reachable but without prices and falls back to the shipped table, and one in a region neither
knows (sa-east-1) gets no price at all. ``start_emulator(..., price_list=None)`` starts an
emulator without the API, as moto itself is (every Price List request fails).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from annex_sandbox.price_list import PRICE_LIST_ENV
from annex_sandbox.sandbox import EMULATOR_MODULE, emulator_environment, free_port, spawn_emulator

FAKE_KEY_ID = "AKIAFAKETESTKEY00000"
FAKE_SECRET = "fake-secret-for-the-local-emulator-only"
REGION = "us-east-1"
# One werkzeug access-log line per request; the emulator's own /moto-api/ control calls excluded.
_AWS_REQUEST_LINE = re.compile(rb'"(?:GET|POST|PUT|DELETE|HEAD|PATCH) /(?!moto-api)[^"]* HTTP/1\.[01]" \d{3}')

PRICED_REGION = "ap-southeast-2"
# On-demand Linux USD per hour in Sydney. m5.large 0.12 is AWS's published figure (a copy of its
# pricing page). The other two are derived, not looked up: m6i.large priced as m5.large, and
# m7i.large 5 % above m6i.large, as in every region of the shipped table (us-east-1: 0.096, 0.1008).
SUITE_PRICE_LIST: Mapping[str, Mapping[str, float]] = {
    PRICED_REGION: {"m7i.large": 0.126, "m6i.large": 0.12, "m5.large": 0.12},
}


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_offset(self) -> int:
        """Where the emulator's log ends now: pass it to ``calls_since``."""
        return self.log_path.stat().st_size

    def calls_since(self, offset: int) -> list[tuple[str, str, str]]:
        """(access key id, service, operation) of every API request answered after ``offset``,
        from the emulator's own call log (annex_sandbox.patches.install_call_log)."""
        import re
        import time

        time.sleep(0.2)  # the server writes a line as each request arrives; let the last land
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return [tuple(m.groups()) for m in re.finditer(r" api-call (\S+) (\S+) (.+)$", text, re.M)]

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


def start_emulator(
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    price_list: Mapping[str, Mapping[str, float]] | None = SUITE_PRICE_LIST,
) -> Emulator:
    """The emulator in a child process, its log in ``log_dir``; with the Price List API answering
    from ``price_list`` (written to ``log_dir``), or without it (None: moto's own behaviour)."""
    port = free_port()
    env = dict(os.environ)
    env.pop(PRICE_LIST_ENV, None)
    if price_list is not None:
        catalogue = log_dir / f"price-list-{port}.json"
        catalogue.write_text(json.dumps(price_list, indent=1, sort_keys=True))
        env[PRICE_LIST_ENV] = str(catalogue)
    env.update(extra_env or {})
    log_path = log_dir / f"moto-{port}.log"
    url, process = spawn_emulator(EMULATOR_MODULE, port, log_path, env=env)
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
