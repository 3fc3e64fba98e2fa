"""e2e: the installed console scripts in subprocesses, as a user runs them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.flows import assert_speaks_plainly, console_script, write_pool


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class UserShell:
    """A scientist's (or administrator's) shell: the environment and a way to run commands."""

    env: dict[str, str]
    home: Path

    def run(self, program: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
        merged = dict(self.env)
        merged.update(env or {})
        result = subprocess.run(
            [console_script(program), *args],
            capture_output=True,
            text=True,
            env=merged,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
        )
        if "--debug" not in args:  # --debug is the one way to ask for a traceback
            assert_speaks_plainly(result.stdout + result.stderr)
        return Run(result.returncode, result.stdout, result.stderr)


@pytest.fixture
def shell(sandbox_env, tmp_path) -> UserShell:
    home = Path(sandbox_env["HOME"])
    pool = write_pool(tmp_path / "pool")
    env = dict(sandbox_env)
    env["CONDOR_CONFIG"] = str(pool.condor_config)
    env["COLUMNS"] = "200"
    return UserShell(env, home)
