"""e2e: the installed console scripts in subprocesses, as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.flows import ANNEX_KEY_FILE, COLLECTOR, TRUST_DOMAIN, assert_speaks_plainly, console_script, write_pool, write_private


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

    def run(
        self, program: str, *args: str, env: dict[str, str | None] | None = None, timeout: float = 120,
        answer: str | None = None, columns: int | None = None,
    ) -> Run:
        """Run a console script; with ``answer``, its stdin is a terminal that types that line; with
        ``columns``, its stdout is a terminal that wide (and COLUMNS is unset, as in a real one)."""
        merged = dict(self.env)
        merged.update(env or {})
        if columns is not None:
            merged.pop("COLUMNS", None)
        merged = {k: v for k, v in merged.items() if v is not None}  # None: not set at all
        if columns is not None:
            result = _run_on_terminal([console_script(program), *args], merged, self.home, columns, timeout)
        elif answer is None:
            result = subprocess.run(
                [console_script(program), *args],
                capture_output=True,
                text=True,
                env=merged,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
            )
        else:
            result = _run_with_terminal_input([console_script(program), *args], merged, self.home, answer, timeout)
        if "--debug" not in args:  # --debug is the one way to ask for a traceback
            assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
            # Messages and errors are on stderr (stdout may be a template holding Python source).
            assert_speaks_plainly(result.stderr)
        return Run(result.returncode, result.stdout, result.stderr)


    def setup_region(self, *setup_args: str) -> Run:
        """`annex-admin setup --yes`, then the administrator records the pool (`pool set --yes`) with
        a copy of its ANNEX signing key kept in the administrator's home (never the scientist's)."""
        result = self.run("annex-admin", "setup", "--yes", *setup_args)
        if result.returncode != 0:
            return result
        key_file = self.home / "admin" / "ANNEX"
        key_file.parent.mkdir(exist_ok=True)
        write_private(key_file, ANNEX_KEY_FILE)
        recorded = self.run("annex-admin", "pool", "set", "--collector", COLLECTOR, "--trust-domain", TRUST_DOMAIN,
                            "--signing-key-file", str(key_file), "--yes")
        assert recorded.returncode == 0, recorded.output
        key_file.unlink()
        return result


def _run_with_terminal_input(
    argv: list[str], env: dict[str, str], cwd: Path, answer: str, timeout: float
) -> subprocess.CompletedProcess:
    """stdin is a pseudo-terminal with the answer already typed; stdout and stderr stay pipes."""
    import pty

    controller, terminal = pty.openpty()
    try:
        os.write(controller, (answer + "\n").encode())
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, stdin=terminal, cwd=cwd)
    finally:
        os.close(terminal)
        os.close(controller)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _run_on_terminal(argv: list[str], env: dict[str, str], cwd: Path, columns: int, timeout: float) -> subprocess.CompletedProcess:
    """stdout is a pseudo-terminal ``columns`` wide (set with TIOCSWINSZ, as a terminal window
    does); what it shows comes back as text without colours, stderr stays a pipe."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    shown = bytearray()

    def read_all() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the program closed the terminal
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    try:
        process = subprocess.run(argv, stdout=terminal, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                 env=env, timeout=timeout, cwd=cwd)
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    text = ANSI_ESCAPE.sub("", shown.decode(errors="replace")).replace("\r\n", "\n")
    return subprocess.CompletedProcess(argv, process.returncode, text, process.stderr)


@pytest.fixture
def shell(sandbox_env, tmp_path) -> UserShell:
    home = Path(sandbox_env["HOME"])
    pool = write_pool(tmp_path / "pool")
    env = dict(sandbox_env)
    env["CONDOR_CONFIG"] = str(pool.condor_config)
    env["COLUMNS"] = "200"
    return UserShell(env, home)
