"""What both programs answer before any command runs: unknown commands, version, help, completion."""

from __future__ import annotations

from importlib.metadata import version

import pytest

PROGRAMS = ["condor_annex", "annex-admin"]


@pytest.mark.parametrize(
    "program, typo, meant",
    [("condor_annex", "stauts", "status"), ("condor_annex", "extned", "extend"), ("annex-admin", "chek-setup", "check-setup")],
)
def test_an_unknown_command_is_named_with_the_closest_match(shell, aws, program, typo, meant):
    before = aws.aws_requests()
    result = shell.run(program, typo)
    assert result.returncode == 2, result.output
    assert f"no command '{typo}'" in result.output
    assert f"Did you mean `{program} {meant}`?" in result.output
    assert "Missing option" not in result.output
    assert aws.aws_requests() == before


def test_a_word_far_from_every_command_gets_no_guess(shell):
    result = shell.run("condor_annex", "frobnicate")
    assert result.returncode == 2
    assert "no command 'frobnicate'" in result.output and "Did you mean" not in result.output


@pytest.mark.parametrize("program", PROGRAMS)
def test_version(shell, program):
    result = shell.run(program, "--version")
    assert result.returncode == 0, result.output
    assert result.stdout.strip() == f"{program} (condor-annex) {version('condor-annex')}"


@pytest.mark.parametrize("args", [["condor_annex", "-h"], ["condor_annex", "status", "-h"], ["condor_annex", "launch", "-h"],
                                  ["annex-admin", "-h"], ["annex-admin", "teardown", "-h"]])
def test_short_help(shell, args):
    result = shell.run(*args)
    assert result.returncode == 0, result.output
    assert result.stdout.startswith("Usage: ")


@pytest.mark.parametrize("program, words, expected", [
    ("condor_annex", "condor_annex sta", "status"),
    ("condor_annex", "condor_annex terminate --ann", "--annex-name"),
    ("annex-admin", "annex-admin check", "check-setup"),
])
def test_shell_completion(shell, program, words, expected):
    script = shell.run(program, "--show-completion", "bash")
    variable = "_" + program.replace("-", "_").upper() + "_COMPLETE"
    assert script.returncode == 0 and variable in script.stdout
    completed = shell.run(program, env={"COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1),
                                        variable: "complete_bash"})
    assert completed.returncode == 0, completed.output
    assert completed.stdout.split() == [expected]
