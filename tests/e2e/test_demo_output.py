"""The demo's own lines: styled on a terminal, plain in a file or under NO_COLOR."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# One banner and one command, through the demo's own helpers (a command that needs no AWS).
SCRIPT = "import demo.story as s; s.banner('A step', 'what it shows'); s.run(dict(__import__('os').environ), 'annex-admin', '--version')"


def story_output(tmp_path: Path, *, terminal: bool, no_color: bool) -> bytes:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if no_color:
        env["NO_COLOR"] = "1"
    if not terminal:
        target = tmp_path / "story.txt"
        with open(target, "wb") as handle:
            subprocess.run([sys.executable, "-c", SCRIPT], stdout=handle, env=env, cwd=REPO, check=True, timeout=60)
        return target.read_bytes()
    controller, terminal_end = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", SCRIPT], stdout=terminal_end, env=env, cwd=REPO, check=True, timeout=60)
        return os.read(controller, 65536)
    finally:
        os.close(terminal_end)
        os.close(controller)


def test_written_to_a_file_the_demo_has_no_escape_codes(tmp_path):
    text = story_output(tmp_path, terminal=False, no_color=False)
    assert b"1. A step" in text and b"$ annex-admin --version" in text
    assert b"\x1b" not in text


def test_no_color_is_honoured_on_a_terminal(tmp_path):
    assert b"\x1b[" in story_output(tmp_path, terminal=True, no_color=False)  # styled by default
    text = story_output(tmp_path, terminal=True, no_color=True)
    assert b"1. A step" in text and b"\x1b" not in text
