"""How the emulator runs a Lambda function: its zip unpacked, its handler in a child Python process
with the function's own role's credentials, variables and timeout, and AWS's answer shapes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Mapping

LOG = logging.getLogger("annex_sandbox")

RUNNER = Path(__file__).resolve().with_name("lambda_runner.py")
# What AWS's Python runtime offers besides the standard library: boto3 and what it needs.
RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
# AWS returns the last 4 KB of the log in X-Amz-Log-Result.
LOG_TAIL_BYTES = 4096
# AWS's action names where they differ from the operation's name (Lambda's Invoke is the one).
ROLE_SESSION_SECONDS = 3600


@dataclass(frozen=True)
class FunctionSpec:
    """What running one function needs, read from moto's LambdaFunction."""

    name: str
    arn: str
    account_id: str
    region: str
    partition: str
    handler: str
    runtime: str
    timeout: float
    memory_size: str
    version: str
    role_arn: str
    environment: Mapping[str, str]
    code: bytes
    log_group: str

    @classmethod
    def of(cls, function: Any) -> FunctionSpec:
        return cls(
            name=function.function_name,
            arn=function.function_arn,
            account_id=function.account_id,
            region=function.region,
            partition=function.partition,
            handler=function.handler or "",
            runtime=function.run_time or "",
            timeout=float(function.timeout),
            memory_size=str(function.memory_size),
            version=str(function.version),
            role_arn=function.role,
            environment={str(k): str(v) for k, v in (function.environment_vars or {}).items()},
            code=getattr(function, "code_bytes", b"") or b"",
            log_group=function.logs_group_name,
        )


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str


@dataclass(frozen=True)
class Outcome:
    """One invocation's result: the payload (any JSON value), whether it is an error, the log."""

    payload: Any
    errored: bool
    log: str


def assume_function_role(spec: FunctionSpec) -> Credentials:
    """Temporary credentials of the function's role, issued by this emulator's own STS.

    Lambda names the session after the function, so the caller identity inside is
    ``assumed-role/<role>/<function>``; moto's IAM enforcement resolves these keys to the role.
    """
    from moto.sts.models import sts_backends

    role = sts_backends[spec.account_id][spec.partition].assume_role(
        region_name=spec.region,
        role_session_name=spec.name,
        role_arn=spec.role_arn,
        policy=None,
        duration=ROLE_SESSION_SECONDS,
        external_id=None,
    )
    return Credentials(role.access_key_id, role.secret_access_key, role.session_token)


class LambdaHost:
    """Runs functions' code for the server: unpacked zips, the runtime modules, the child process.

    Everything lives under ``root``, a directory of this server process: unpacked code is keyed
    by the zip's sha256, so each version of a function is unpacked once.
    """

    def __init__(self, endpoint: str, root: Path, credentials: Callable[[FunctionSpec], Credentials]) -> None:
        self.endpoint = endpoint
        self.root = root
        self.credentials = credentials
        self._lock = threading.Lock()
        self._runtime_dir: Path | None = None

    def code_dir(self, code: bytes) -> Path:
        target = self.root / "code" / hashlib.sha256(code).hexdigest()
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpacking-"))
        with zipfile.ZipFile(io.BytesIO(code)) as archive:
            archive.extractall(staging)
        try:
            staging.rename(target)
        except OSError:  # another invocation unpacked the same zip first
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def runtime_dir(self) -> Path:
        """A directory holding only boto3 and its dependencies (links into this environment)."""
        with self._lock:
            if self._runtime_dir is None:
                self._runtime_dir = _link_modules(self.root / "runtime", RUNTIME_MODULES)
            return self._runtime_dir

    def run(self, spec: FunctionSpec, event: Any) -> Outcome:
        request_id = str(uuid.uuid4())
        if not spec.runtime.startswith("python") or not spec.code:
            return Outcome(_error("Runtime.InvalidEntrypoint", _unsupported(spec), request_id), True, "")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.root, prefix="invocation-") as work:
            result_path = Path(work) / "result.json"
            try:
                code_dir = self.code_dir(spec.code)
            except zipfile.BadZipFile as exc:
                return Outcome(_error("Runtime.InvalidEntrypoint", f"The code is not a zip: {exc}", request_id), True, "")
            command = self._command(spec, code_dir, request_id, result_path)
            try:
                completed = subprocess.run(
                    command,
                    input=json.dumps(event).encode(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=self.environment(spec),
                    cwd=code_dir,
                    timeout=spec.timeout,
                )
            except subprocess.TimeoutExpired as expired:
                outcome = _timed_out(spec, request_id, _text(expired.output))
            else:
                outcome = _finished(completed.returncode, result_path, request_id, _text(completed.stdout))
        LOG.info("lambda %s %s: %s in %.2f s", spec.name, request_id,
                 "error" if outcome.errored else "ok", time.monotonic() - started)
        return Outcome(outcome.payload, outcome.errored, _framed_log(outcome.log, request_id, spec, started))

    def _command(self, spec: FunctionSpec, code_dir: Path, request_id: str, result_path: Path) -> list[str]:
        deadline_ms = int((time.time() + spec.timeout) * 1000)
        return [
            sys.executable, "-I", "-S", "-u", str(RUNNER),
            "--code-dir", str(code_dir),
            "--runtime-dir", str(self.runtime_dir()),
            f"--handler={spec.handler}",
            "--result", str(result_path),
            "--request-id", request_id,
            "--function-arn", spec.arn,
            "--deadline-ms", str(deadline_ms),
        ]

    def environment(self, spec: FunctionSpec) -> dict[str, str]:
        """The child's whole environment: the function's variables, then what Lambda sets itself.

        Nothing of the server's own environment is passed on except PATH: above all not its
        credentials. The function acts with its role's keys and reaches AWS through this server.
        """
        credentials = self.credentials(spec)
        env = dict(spec.environment)
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_REGION=spec.region,
            AWS_DEFAULT_REGION=spec.region,
            AWS_ACCESS_KEY_ID=credentials.access_key_id,
            AWS_SECRET_ACCESS_KEY=credentials.secret_access_key,
            AWS_SESSION_TOKEN=credentials.session_token,
            AWS_CONFIG_FILE=str(self.root / "aws-config-absent"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.root / "aws-credentials-absent"),
            AWS_EC2_METADATA_DISABLED="true",
            AWS_LAMBDA_FUNCTION_NAME=spec.name,
            AWS_LAMBDA_FUNCTION_TIMEOUT=f"{spec.timeout:g}",
            AWS_LAMBDA_FUNCTION_VERSION=spec.version,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=spec.memory_size,
            AWS_LAMBDA_LOG_GROUP_NAME=spec.log_group,
            AWS_EXECUTION_ENV=f"AWS_Lambda_{spec.runtime}",
            _HANDLER=spec.handler,
            PATH=os.environ.get("PATH", os.defpath),
        )
        return env


def _link_modules(directory: Path, names: tuple[str, ...]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        source = origin.parent if spec.submodule_search_locations else origin
        link = directory / source.name
        if not link.exists():
            link.symlink_to(source)
    return directory


def _text(output: bytes | str | None) -> str:
    if output is None:
        return ""
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else output


def _error(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id}


def _unsupported(spec: FunctionSpec) -> str:
    if not spec.code:
        return "The local emulator runs only functions deployed as a zip"
    return f"The local emulator runs only Python functions, not {spec.runtime or 'this runtime'}"


def _timed_out(spec: FunctionSpec, request_id: str, log: str) -> Outcome:
    message = f"RequestId: {request_id} Error: Task timed out after {spec.timeout:.2f} seconds"
    return Outcome(_error("Sandbox.Timedout", message, request_id), True, log + message + "\n")


def _finished(returncode: int, result_path: Path, request_id: str, log: str) -> Outcome:
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        message = f"RequestId: {request_id} Error: Runtime exited with error: exit status {returncode}"
        return Outcome(_error("Runtime.ExitError", message, request_id), True, log + message + "\n")
    return Outcome(result["payload"], bool(result["errored"]), log)


def _framed_log(log: str, request_id: str, spec: FunctionSpec, started: float) -> str:
    """The function's output between the START/END/REPORT lines AWS writes around it."""
    duration_ms = (time.monotonic() - started) * 1000
    return (
        f"START RequestId: {request_id} Version: {spec.version}\n{log}"
        f"END RequestId: {request_id}\n"
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tMemory Size: {spec.memory_size} MB\n"
    )


def log_tail(log: str) -> str:
    return log.encode("utf-8")[-LOG_TAIL_BYTES:].decode("utf-8", "ignore")


