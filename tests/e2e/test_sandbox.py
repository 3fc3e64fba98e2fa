"""`annex-admin sandbox`: a background emulator for trying the tools by hand, and its stop."""

from __future__ import annotations

import os
import subprocess
import urllib.request

import pytest

from annex_common.errors import AnnexError
from annex_sandbox.sandbox import free_port, spawn_emulator
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


def test_without_the_sandbox_extra_it_says_what_to_install(tmp_path):
    """An install without the extra has no moto: a package named moto that fails to import, first
    on the path, stands in for its absence (the suite's own environment has the extra)."""
    (tmp_path / "moto").mkdir()
    (tmp_path / "moto" / "__init__.py").write_text("raise ImportError('No module named moto')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(tmp_path))
    started = subprocess.run([console_script("annex-admin"), "sandbox"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 2
    assert "pip install 'condor-annex[sandbox]'" in started.stderr + started.stdout
    assert not (tmp_path / ".condor" / "annex-sandbox" / "sandbox.url").exists()


def test_an_emulator_that_refuses_to_start_says_why(tmp_path):
    """The server's own refusal (here: a moto release it was not checked against) reaches the user."""
    (tmp_path / "unchecked.py").write_text(
        "import sys, annex_sandbox.moto_contract as c\n"
        "c.CHECKED_MOTO = ('5.0.0',)\n"
        "import annex_sandbox.server as s\n"
        "s.main(sys.argv[1:])\n"
    )
    with pytest.raises(AnnexError) as refused:
        spawn_emulator("unchecked", free_port(), tmp_path / "log", cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=30)
    assert "checked against moto 5.0.0" in refused.value.why
