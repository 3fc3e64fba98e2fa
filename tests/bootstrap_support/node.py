"""Runs the real ``annex_cloud/node/bootstrap.sh`` as if on an instance, inside a temporary root.

What cannot run here is replaced, and only that: EC2's metadata service (``imds.FakeImds``),
systemd's ``systemctl``, the power-off command, HTCondor's ``condor_status`` (no collector can run
here) and ``condor_reconfig``; each stub records how it was called. ``condor_master`` is a stub on
PATH so the install step is skipped. S3 is the suite's emulator, reached by the real ``aws`` CLI.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import annex_cloud.node
from tests.bootstrap_support.imds import FakeImds

SCRIPT = Path(annex_cloud.node.__file__).parent / "bootstrap.sh"

_RECORDER = """#!/bin/sh
printf '%s\\n' "$*" >> "{calls}/{name}"
"""

# Records the arguments, then the rules it was fed on standard input.
_STDIN_RECORDER = """#!/bin/sh
printf '%s\\n' "$*" >> "{calls}/{name}"
cat >> "{calls}/{name}"
"""

_CONDOR_STATUS = """#!/bin/sh
printf '%s\\n' "$*" >> "{calls}/condor_status"
[ -f "{calls}/condor_status.out" ] && cat "{calls}/condor_status.out"
exit "$(cat "{calls}/condor_status.rc" 2>/dev/null || echo 0)"
"""


def _write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@dataclass
class Node:
    """One pretend instance: its root directory, its metadata service and its stubs."""

    root: Path
    imds: FakeImds
    base_env: dict[str, str]
    bin_dir: Path
    calls: Path
    bucket: str
    region: str
    env_overrides: dict[str, str] = field(default_factory=dict)

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def env(self, now: int | None = None, **extra: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(
            PATH=os.pathsep.join([str(self.bin_dir), str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
            ANNEX_ROOT=str(self.root),
            ANNEX_IMDS_URL=self.imds.url,
            ANNEX_POWEROFF_CMD=str(self.bin_dir / "fake-poweroff"),
            ANNEX_SYSTEMCTL=str(self.bin_dir / "fake-systemctl"),
            ANNEX_CONDOR_STATUS=str(self.bin_dir / "fake-condor_status"),
            ANNEX_NFT=str(self.bin_dir / "fake-nft"),
            ANNEX_BUCKET=self.bucket,
            ANNEX_REGION=self.region,
        )
        if now is not None:
            env["ANNEX_NOW"] = str(now)
        env.update(self.env_overrides)
        env.update(extra)
        return env

    def run(self, *args: str, now: int | None = None, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=self.env(now, **extra),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def recorded(self, name: str) -> list[str]:
        path = self.calls / name
        return path.read_text().splitlines() if path.exists() else []

    def poweroffs(self) -> list[str]:
        return self.recorded("poweroff")

    def systemctl_calls(self) -> list[str]:
        return self.recorded("systemctl")

    def log_text(self) -> str:
        path = self.path("/var/log/condor-annex/bootstrap.log")
        return path.read_text() if path.exists() else ""

    def condor_status_answers(self, output: str, status: int = 0) -> None:
        (self.calls / "condor_status.out").write_text(output)
        (self.calls / "condor_status.rc").write_text(f"{status}\n")


def make_node(
    tmp: Path, imds: FakeImds, base_env: dict[str, str], bucket: str, region: str
) -> Node:
    root = tmp / "root"
    bin_dir = tmp / "bin"
    calls = tmp / "calls"
    for directory in (root, bin_dir, calls):
        directory.mkdir(parents=True, exist_ok=True)
    _write_executable(bin_dir / "condor_master", "#!/bin/sh\nexit 0\n")
    _write_executable(bin_dir / "fake-poweroff", _RECORDER.format(calls=calls, name="poweroff"))
    _write_executable(bin_dir / "fake-systemctl", _RECORDER.format(calls=calls, name="systemctl"))
    _write_executable(bin_dir / "fake-nft", _STDIN_RECORDER.format(calls=calls, name="nft"))
    _write_executable(bin_dir / "condor_reconfig", _RECORDER.format(calls=calls, name="condor_reconfig"))
    _write_executable(bin_dir / "fake-condor_status", _CONDOR_STATUS.format(calls=calls))
    return Node(root, imds, base_env, bin_dir, calls, bucket, region)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def clone_node(booted: Node, tmp: Path, imds: FakeImds, base_env: dict[str, str]) -> Node:
    """A fresh node whose root is a copy of ``booted``'s (modes kept), with its own stubs and
    metadata service: one real boot serves every test that starts from a booted instance."""
    node = make_node(tmp, imds, base_env, booted.bucket, booted.region)
    shutil.rmtree(node.root)
    shutil.copytree(booted.root, node.root, symlinks=True)
    return node


def sandbox_env_for(endpoint: str, home: Path) -> dict[str, str]:
    """The environment the suite's ``sandbox_env`` fixture builds, for module-scoped use."""
    from tests import emulator as emu

    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(emu.sandbox_environment(endpoint, home))
    env["HOME"] = str(home)
    return env
