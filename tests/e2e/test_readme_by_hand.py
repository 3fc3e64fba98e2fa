"""The README's "Trying it by hand" block, run line by line in bash as a reader would paste it.

The lines that build the checkout's environment (`make demo`, the PATH export) are the test's own
doing: the suite's `.venv` is already on PATH. The sandbox it starts is stopped even on failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def by_hand_lines() -> list[str]:
    section = README.read_text().split("## Trying it by hand", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```\n(.*?)```", section, flags=re.S)
    return [line for line in block.splitlines()
            if line.strip() and not line.startswith(("#", "make ", "export PATH="))]


def test_the_readme_by_hand_block_runs_both_roles_to_the_end(tmp_path):
    lines = by_hand_lines()
    assert any(line.startswith("condor_annex --project-id") for line in lines)
    assert lines[-1] == "annex-admin sandbox --stop"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONDOR_"))}
    env.update(HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    try:
        done = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([str(Path(sys.executable).parent / "annex-admin"), "sandbox", "--stop"], env=env,
                       capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Terminated 4 instance(s) of first" in done.stdout
    assert "Sandbox stopped." in done.stdout
    assert not (tmp_path / ".condor" / "annex-sandbox" / "sandbox.url").exists()
