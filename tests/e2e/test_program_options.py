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


@pytest.mark.parametrize("args, meant", [
    (["condor_annex", "-help"], "--help"),
    (["condor_annex", "-version"], "--version"),
    (["condor_annex", "status", "-annex-name", "x"], "--annex-name"),
    (["condor_annex", "-project-id", "P", "--instances", "2", "--duration", "1"], "--project-id"),
    (["annex-admin", "-help"], "--help"),
    (["annex-admin", "check-setup", "-output", "json"], "--output"),
])
def test_an_htcondor_style_one_dash_option_is_named_with_its_two_dash_form(shell, aws, args, meant):
    before = aws.aws_requests()
    result = shell.run(*args)
    assert result.returncode == 2, result.output
    assert f"has no option -{meant[2:]}" in result.stderr and f"Did you mean {meant}?" in result.stderr
    assert "No such option" not in result.output
    assert aws.aws_requests() == before


def test_short_flags_together_still_work(shell):
    result = shell.run("condor_annex", "terminate", "-yh")
    assert result.returncode == 0 and result.stdout.startswith("Usage: condor_annex terminate")


def test_options_before_the_command_do_not_hide_it(shell, aws):
    before = aws.aws_requests()
    # The command is status: it names the bundle it could not read, it asks for no project id.
    status = shell.run("condor_annex", "--credentials", "b.toml", "status")
    assert status.returncode == 2, status.output
    assert "b.toml" in status.stderr and "Missing option" not in status.output
    debug = shell.run("condor_annex", "--debug", "status")
    assert debug.returncode == 2 and "Missing option" not in debug.output
    assert "annex-credentials.toml" in debug.stderr and "Traceback" in debug.stderr  # --debug reached status
    # A mistyped command after options is named as one.
    typo = shell.run("condor_annex", "--credentials", "b.toml", "statsu")
    assert typo.returncode == 2, typo.output
    assert "no command 'statsu'" in typo.stderr and "Did you mean `condor_annex status`?" in typo.stderr
    # An option's value is never taken for a command.
    launch = shell.run("condor_annex", "--annex-name", "status", "--project-id", "P", "--instances", "2", "--duration", "1")
    assert launch.returncode == 2 and "no command" not in launch.stderr and "credentials bundle" in launch.stderr
    assert aws.aws_requests() == before


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("shell_name, marker", [
    ("bash", "COMPREPLY"), ("zsh", "#compdef"), ("fish", "complete --command"),
    ("powershell", "Register-ArgumentCompleter"),
])
def test_each_shell_gets_its_own_completion_script(shell, program, shell_name, marker):
    result = shell.run(program, "--show-completion", shell_name)
    assert result.returncode == 0, result.output
    assert marker in result.stdout and program in result.stdout
    others = {"bash": "COMPREPLY", "zsh": "#compdef", "fish": "complete --command"}
    assert not [m for name, m in others.items() if name != shell_name and m in result.stdout]


def test_zsh_completion_completes(shell):
    completed = shell.run("condor_annex", env={"_CONDOR_ANNEX_COMPLETE": "complete_zsh",
                                               "_TYPER_COMPLETE_ARGS": "condor_annex sta"})
    assert completed.returncode == 0 and '"status"' in completed.stdout


def test_an_unknown_shell_is_bad_input(shell):
    result = shell.run("condor_annex", "--show-completion", "tcsh")
    assert result.returncode == 2
    assert "does not know the shell 'tcsh'" in result.stderr and "zsh" in result.stderr


def test_a_required_argument_reads_as_people_write_it(shell):
    result = shell.run("condor_annex", "import-credentials", "-h")
    assert result.returncode == 0 and result.stdout.startswith("Usage: condor_annex import-credentials [OPTIONS] FILE\n")


def test_admin_usage_errors_are_in_words(shell, aws):
    before = aws.aws_requests()
    result = shell.run("annex-admin", "check-setup", "--output", "yaml")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: --output 'yaml' is not one of 'table', 'json'\n")
    assert "Value error" not in result.output and "See `annex-admin check-setup --help`." in result.stderr
    assert aws.aws_requests() == before


@pytest.mark.parametrize("words, unknown, meant", [
    (["--project-id", "X", "--duraton", "2", "--instances", "1"], "--duraton", "--duration"),
    (["launch", "--project-id", "X", "--duraton", "2", "--instances", "1"], "--duraton", "--duration"),
    (["--projectid", "X", "--duration", "2", "--instances", "1"], "--projectid", "--project-id"),
    (["--credentialz", "b.toml", "status"], "--credentialz", "--credentials"),
])
def test_an_unknown_option_is_named_with_the_closest_also_without_a_command(shell, aws, words, unknown, meant):
    before = aws.aws_requests()
    result = shell.run("condor_annex", *words)
    assert result.returncode == 2, result.output
    assert result.stderr.startswith(f"Error: No such option: {unknown} (did you mean {meant}?)\n"), result.stderr
    assert "no command" not in result.stderr
    assert aws.aws_requests() == before


@pytest.mark.parametrize("launch", [[], ["launch"]], ids=["headline", "launch"])
@pytest.mark.parametrize("split, quoted", [(["2026-12-07", "10:00"], "2026-12-07 10:00"),
                                           (["2026-12-07", "10:00", "UTC"], "2026-12-07 10:00 UTC")])
def test_an_unquoted_expiry_is_told_to_be_quoted(shell, aws, launch, split, quoted):
    before = aws.aws_requests()
    result = shell.run("condor_annex", *launch, "--project-id", "X", "--expiry", *split, "--instances", "1")
    assert result.returncode == 2, result.output
    assert "came as separate words" in result.stderr and f"Quote it: --expiry '{quoted}'." in result.stderr
    assert "no command" not in result.stderr and "unexpected extra" not in result.stderr
    assert aws.aws_requests() == before


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("words", [["-v"], ["--version"], ["status", "--version"], ["status", "-v"],
                                   ["--debug", "-v"]], ids=" ".join)
def test_the_version_answers_wherever_it_is_asked(shell, program, words):
    if program == "annex-admin" and words[0] == "status":
        words = ["check-setup", *words[1:]]
    result = shell.run(program, *words)
    assert result.returncode == 0, result.output
    assert result.stdout.strip() == f"{program} (condor-annex) {version('condor-annex')}"


def test_the_help_keeps_the_example_command_on_one_line(shell):
    example = "condor_annex --project-id P --expiry 'YYYY-MM-DD HH:MM' --instances N"
    for result in (shell.run("condor_annex", "--help", columns=80), shell.run("condor_annex", "--help", env={"COLUMNS": "80"})):
        assert result.returncode == 0, result.output
        assert [line for line in result.stdout.splitlines() if line.strip() == example], result.stdout
        assert max(len(line) for line in result.stdout.splitlines()) <= 80
