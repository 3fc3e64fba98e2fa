"""What installing condor-annex pulls in: without extras, none of the emulator's dependencies.

Read from the installed distribution's metadata (what `pip install condor-annex` resolves), and
from what the tools import when they run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

EMULATOR_ONLY = {"moto", "flask", "werkzeug", "flask-cors", "docker", "responses"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _base_requirements(distribution: str) -> list[str]:
    """A distribution's requirements outside any extra (environment markers of this Python applied)."""
    from packaging.requirements import Requirement

    wanted = []
    for text in metadata.requires(distribution) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            wanted.append(requirement.name)
    return wanted


def _closure(distribution: str) -> set[str]:
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = _name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_base_requirements(name))
    return seen


def test_the_base_install_pulls_no_emulator_dependency():
    pulled = _closure("condor-annex")
    assert {"boto3", "troposphere", "htcondor", "typer"} <= pulled  # the walk really follows requirements
    assert pulled & EMULATOR_ONLY == set()


def test_the_sandbox_extra_is_what_brings_moto_with_a_bound():
    extras = [r for r in metadata.requires("condor-annex") or [] if 'extra == "sandbox"' in r]
    assert len(extras) == 1 and _name(extras[0]) == "moto"
    assert "<5.3" in extras[0]


def test_the_tools_import_no_emulator_code():
    program = (
        "import sys, annex_admin.cli, annex_user.cli, annex_cloud.broker, annex_cloud.enforcer, templates.stack; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'moto', 'flask', 'werkzeug', 'annex_sandbox', 'responses'})))"
    )
    imported = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert imported.stdout.strip() == ""
