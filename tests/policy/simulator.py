"""Runs batches of IAM requests through @cloud-copilot/iam-simulate in one Node process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "simulate.mjs"
PACKAGE = HERE / "node_modules" / "@cloud-copilot" / "iam-simulate" / "package.json"


def require_simulator() -> str:
    """Path of node; fails the test (never skips) when the simulator is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not on PATH; the IAM policy tests need it (run `make test`).")
    if not PACKAGE.is_file():
        pytest.fail(
            f"{PACKAGE.parent} is missing: the IAM policy simulator is not installed. "
            "Run `make test` (it runs `npm ci` in tests/policy), or `cd tests/policy && npm ci`."
        )
    return node


def simulate(requests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Decisions keyed by request id: Allowed, ExplicitlyDenied, ImplicitlyDenied or Error."""
    node = require_simulator()
    completed = subprocess.run(
        [node, str(RUNNER)],
        input=json.dumps({"requests": requests}),
        capture_output=True,
        text=True,
        cwd=HERE,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(f"the policy simulator failed (exit {completed.returncode}):\n{completed.stderr}")
    return {result["id"]: result for result in json.loads(completed.stdout)["results"]}
