"""import-credentials: the same privacy check as --credentials, and no silent overwrite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from annex_cloud.caps import Caps
from annex_common.bundle import Bundle, load_bundle, write_bundle
from tests.flows import PROJECT, USER


def make_bundle(path: Path, project: str = PROJECT, mode: int = 0o600) -> Path:
    write_bundle(path, Bundle("us-east-1", "HTCondorAnnex", project, USER, "AKIAEXAMPLEEXAMPLE00",
                              f"secret-of-{project}", Caps(8, 72, 100.0)))
    os.chmod(path, mode)
    return path


def installed(shell) -> Path:
    return shell.home / ".condor" / "annex-credentials.toml"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_bundle_others_can_read_is_refused(shell, mode):
    source = make_bundle(shell.home / "shared.toml", mode=mode)
    result = shell.run("condor_annex", "import-credentials", str(source))
    assert result.returncode == 2, result.output
    assert "readable by others" in result.output and f"chmod 600 {source}" in result.output
    assert not installed(shell).exists()


def test_an_installed_bundle_is_not_replaced_without_asking(shell):
    first = make_bundle(shell.home / "first.toml", project="FirstLab")
    second = make_bundle(shell.home / "second.toml", project="SecondLab")
    assert shell.run("condor_annex", "import-credentials", str(first)).returncode == 0

    refused = shell.run("condor_annex", "import-credentials", str(second))  # no terminal to ask on
    assert refused.returncode == 2, refused.output
    assert "project FirstLab" in refused.output and "--yes" in refused.output
    assert load_bundle(installed(shell)).project_id == "FirstLab"

    declined = shell.run("condor_annex", "import-credentials", str(second), answer="n")
    assert declined.returncode == 2, declined.output
    assert "Replace the credentials in" in declined.stderr and "(project FirstLab" in declined.stderr
    assert f"with those in {second} (project SecondLab, user {USER}, region us-east-1)?" in declined.stderr
    assert declined.stdout == ""
    assert load_bundle(installed(shell)).project_id == "FirstLab"

    accepted = shell.run("condor_annex", "import-credentials", str(second), answer="y")
    assert accepted.returncode == 0, accepted.output
    assert load_bundle(installed(shell)).project_id == "SecondLab"

    forced = shell.run("condor_annex", "import-credentials", str(first), "--yes")
    assert forced.returncode == 0, forced.output
    assert load_bundle(installed(shell)).project_id == "FirstLab"
    assert installed(shell).stat().st_mode & 0o777 == 0o600


def test_the_same_bundle_again_changes_nothing(shell):
    source = make_bundle(shell.home / "b.toml")
    assert shell.run("condor_annex", "import-credentials", str(source)).returncode == 0
    again = shell.run("condor_annex", "import-credentials", str(source))
    assert again.returncode == 0, again.output
    assert "already installed" in again.stdout


@pytest.mark.parametrize("answer", ["n", "\x04"], ids=["n", "ctrl-d"])
def test_a_question_not_answered_yes_is_a_notice_on_a_line_of_its_own(shell, answer):
    first = make_bundle(shell.home / "first.toml", project="FirstLab")
    second = make_bundle(shell.home / "second.toml", project="SecondLab")
    assert shell.run("condor_annex", "import-credentials", str(first)).returncode == 0
    declined = shell.run("condor_annex", "import-credentials", str(second), answer=answer)
    assert declined.returncode == 2, declined.output  # bad input: nothing was changed
    assert declined.stderr.endswith("[y/N] " + ("" if answer == "n" else "\n") + "Not confirmed: nothing was changed.\n"), declined.stderr
    assert "Error" not in declined.stderr and "Next" not in declined.stderr
    assert load_bundle(installed(shell)).project_id == "FirstLab"


def test_a_bundle_saved_with_a_byte_order_mark_is_read(shell):
    source = make_bundle(shell.home / "notepad.toml")
    source.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())  # as Notepad saves UTF-8
    result = shell.run("condor_annex", "import-credentials", str(source))
    assert result.returncode == 0, result.output
    assert load_bundle(installed(shell)).project_id == PROJECT
