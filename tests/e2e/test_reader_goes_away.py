"""Output piped into a reader that stops early (`| head -1`, `| true`): exit 0, nothing printed."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.flows import PROJECT, USER, console_script


def run_into_closed_pipe(shell, program: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader has already gone: the first write fails, every time."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([console_script(program), *args], stdout=write_end, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, env={**shell.env, **(env or {})},
                              cwd=shell.home, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [
    ["condor_annex", "--help"], ["condor_annex", "status", "--help"], ["condor_annex", "--version"],
    ["condor_annex", "--show-completion", "bash"], ["annex-admin", "--help"], ["annex-admin", "--version"],
])
def test_help_version_and_completion_stop_quietly(shell, args):
    result = run_into_closed_pipe(shell, *args)
    assert (result.returncode, result.stderr) == (0, "")


def test_commands_stop_quietly(shell):
    assert shell.setup_region().returncode == 0
    bundle = shell.home / "b.toml"
    assert shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                     "--output", str(bundle)).returncode == 0
    for program, *args in (["annex-admin", "check-setup"], ["annex-admin", "check-setup", "--output", "json"],
                           ["condor_annex", "status"], ["condor_annex", "status", "--output", "json"]):
        result = run_into_closed_pipe(shell, program, *args, env={"CONDOR_ANNEX_CREDENTIALS": str(bundle)})
        assert result.returncode == 0, (program, args, result.stderr)
        assert not [word for word in ("Error", "Traceback", "Exception") if word in result.stderr], result.stderr
