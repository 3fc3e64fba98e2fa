"""The benchmark's emulator: the project's moto server (annex_admin/emulator_server.py) on loopback,
with its request log kept in a file.

API calls are counted from the emulator's side: werkzeug writes one access-log line per HTTP
request it answers (retries and failed requests included), before the response body goes out.
Counting those lines before and after a command gives the calls that command made.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from annex_admin.sandbox import EMULATOR_MODULE, emulator_environment, free_port, spawn_emulator
from annex_common.aws import RETRY_CONFIG, AwsClients

REGION = "us-east-1"
FAKE_KEY_ID = "AKIAFAKEBENCHKEY0000"
FAKE_SECRET = "fake-secret-for-the-local-benchmark-only"
# One werkzeug access-log entry: 127.0.0.1 - - [date] "POST / HTTP/1.1" 200 -
_REQUEST_LINE = re.compile(rb'\] "(?:GET|PUT|POST|DELETE|HEAD|PATCH|OPTIONS) \S* HTTP/1\.[01]" \d{3} ')


@dataclass
class BenchEmulator:
    url: str
    process: subprocess.Popen
    log_path: Path

    def requests_served(self) -> int:
        """Requests answered so far, read from the access log."""
        return len(_REQUEST_LINE.findall(self.log_path.read_bytes()))

    def reset(self) -> None:
        """Drop every resource (the stack too)."""
        request = urllib.request.Request(self.url + "/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start(workdir: Path) -> BenchEmulator:
    port = free_port()
    log_path = workdir / f"moto-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONUNBUFFERED"] = "1"  # every log line reaches the file at once
    url, process = spawn_emulator(EMULATOR_MODULE, port, log_path, env=env)
    return BenchEmulator(url, process, log_path)


def child_environment(endpoint: str, home: Path) -> dict[str, str]:
    """Environment for the console scripts: pinned to the emulator, with fake admin keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(emulator_environment(endpoint, FAKE_KEY_ID, FAKE_SECRET, region=REGION, home=home))
    env["HOME"] = str(home)
    return env


@dataclass
class PinnedClients(AwsClients):
    """The administrator's clients for the benchmark's own bookkeeping, pinned to the emulator
    without touching this process's environment."""

    endpoint_url: str = ""

    def client(self, service: str, region: str | None = None) -> Any:
        key = f"{service}:{region or ''}"
        if key not in self._cache:
            self._cache[key] = self.session.client(
                service,
                region_name=region or self.session.region_name,
                config=self.config,
                endpoint_url=self.endpoint_url,
            )
        return self._cache[key]


def admin_clients(endpoint: str) -> PinnedClients:
    session = boto3.session.Session(
        aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET, region_name=REGION
    )
    return PinnedClients(session=session, config=RETRY_CONFIG, endpoint_url=endpoint)
