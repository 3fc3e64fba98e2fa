"""The benchmark's emulator: the project's moto server (annex_sandbox/server.py) on loopback,
with its log kept in a file.

API calls are counted from the emulator's side: its call log (``install_call_log``) writes one
line per AWS request it receives, ``api-call <access key id> <service> <operation>``, before it
answers (retries and failed requests included), and one line per Lambda invocation it ran,
``lambda <function> <request id>: ok|error in <seconds> s``. Reading the lines a command caused
tells whose calls they were: the scientist's (her IAM user's key), the administrator's (the
benchmark's fake key), or a stack function's (the temporary ``ASIA…`` keys of its role, a new
pair per invocation). The scientist's identity proof (a GetCallerIdentity she signs) is sent to
STS by the broker: it counts as the broker's, as in tests/functional/test_launch.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from annex_sandbox.sandbox import EMULATOR_MODULE, emulator_environment, free_port, spawn_emulator
from annex_common.aws import RETRY_CONFIG, AwsClients

REGION = "us-east-1"
FAKE_KEY_ID = "AKIAFAKEBENCHKEY0000"
FAKE_SECRET = "fake-secret-for-the-local-benchmark-only"
# The server's own log lines (annex_sandbox: "%(asctime)s %(name)s %(levelname)s %(message)s").
_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) annex_sandbox INFO "
_CALL_LINE = re.compile(_STAMP + r"api-call (\S+) (\S+) (.+?)\r?$", re.M)
_LAMBDA_LINE = re.compile(_STAMP + r"lambda (\S+) (\S+): (ok|error) in ([0-9.]+) s\r?$", re.M)


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass(frozen=True)
class Call:
    at: float  # when the server received it (its clock, to the millisecond)
    key: str  # the access key id that signed it
    service: str
    operation: str


@dataclass(frozen=True)
class Invocation:
    function: str
    request_id: str
    ok: bool
    seconds: float  # the function's run in its child process, as the server timed it
    ended: float


@dataclass(frozen=True)
class Split:
    """One command's calls: its own, those of the stack functions it invoked, anything else."""

    client: list[Call]
    function: list[Call]
    other: list[Call]


@dataclass
class Activity:
    """What the emulator saw between two offsets of its log."""

    calls: list[Call] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)

    def split(self, client_key: str, *, proofs: bool) -> Split:
        """``client_key``'s calls, and the functions' (their roles' temporary keys). With
        ``proofs``, the client's GetCallerIdentity is the broker's: she signs it, the broker sends it."""
        def by_function(call: Call) -> bool:
            return call.key.startswith("ASIA") or (proofs and call.key == client_key and call.operation == "GetCallerIdentity")

        function = [c for c in self.calls if by_function(c)]
        client = [c for c in self.calls if c.key == client_key and not by_function(c)]
        other = [c for c in self.calls if c.key != client_key and not by_function(c)]
        return Split(client, function, other)

    def functions_invoked(self) -> Counter:
        return Counter(i.function for i in self.invocations)

    def startups(self, function_calls: list[Call]) -> list[float]:
        """Per Invoke, seconds from the server receiving it to the function's first AWS call: the
        emulator assuming the role, starting the child Python, importing boto3 and the handler."""
        invokes = [c.at for c in self.calls if c.operation == "Invoke" and not c.key.startswith("ASIA")]
        gaps = []
        for at, following in zip(invokes, invokes[1:] + [float("inf")]):
            first = next((c.at for c in function_calls if at <= c.at < following), None)
            if first is not None:
                gaps.append(first - at)
        return gaps


def operations(calls: list[Call]) -> Counter:
    return Counter(c.operation for c in calls)


@dataclass
class BenchEmulator:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_offset(self) -> int:
        """Where the log ends now: pass it to ``activity_since``."""
        return self.log_path.stat().st_size

    def activity_since(self, offset: int) -> Activity:
        """The API calls and Lambda invocations logged after ``offset``. The server writes a call's
        line before answering it and an invocation's before answering Invoke, so once a command
        has exited, every line it caused is in the file."""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return Activity(
            calls=[Call(_stamp(m[1]), m[2], m[3], m[4]) for m in _CALL_LINE.finditer(text)],
            invocations=[Invocation(m[2], m[3], m[4] == "ok", float(m[5]), _stamp(m[1]))
                         for m in _LAMBDA_LINE.finditer(text)],
        )

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


def user_clients(endpoint: str, access_key: str, secret_key: str, config_dir: Path) -> AwsClients:
    """Plain AwsClients for someone else's keys (a scientist's), as condor_annex makes them, pointed
    at the emulator by a shared config file of their own (``endpoint_url``), so that every client
    the session makes, the STS client that names the identity proof's endpoint too, reaches it."""
    import botocore.session

    config = config_dir / f"aws-config-{access_key}"
    config.write_text(f"[default]\nendpoint_url = {endpoint}\nregion = {REGION}\n")
    core = botocore.session.Session()
    core.set_config_variable("config_file", str(config))
    core.set_config_variable("credentials_file", str(config_dir / "aws-credentials-absent"))
    session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                    region_name=REGION, botocore_session=core)
    return AwsClients(session=session, config=RETRY_CONFIG)
