"""`annex-admin sandbox`: a background emulator for trying the tools by hand, and its stop."""

from __future__ import annotations

import os
import subprocess
import urllib.request

from tests.flows import console_script


def test_sandbox_starts_prints_its_environment_and_stops(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)
    started = subprocess.run([console_script("annex-admin"), "sandbox"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    exports = dict(line[len("export "):].split("=", 1) for line in started.stdout.splitlines() if line.startswith("export "))
    try:
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= set(exports)
        with urllib.request.urlopen(exports["AWS_ENDPOINT_URL"] + "/moto-api/", timeout=10) as answer:
            assert answer.status == 200
        # With those variables the tools talk to the sandbox.
        check = subprocess.run([console_script("annex-admin"), "check-setup"], env={**env, **exports},
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 1 and "annex-admin setup" in check.stdout
        again = subprocess.run([console_script("annex-admin"), "sandbox"], env=env, capture_output=True, text=True, timeout=120)
        assert exports["AWS_ENDPOINT_URL"] in again.stdout  # a second start reuses the running one
    finally:
        stopped = subprocess.run([console_script("annex-admin"), "sandbox", "--stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    try:
        urllib.request.urlopen(exports["AWS_ENDPOINT_URL"] + "/moto-api/", timeout=3)
        still_up = True
    except OSError:
        still_up = False
    assert not still_up
