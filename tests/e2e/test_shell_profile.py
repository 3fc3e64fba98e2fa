"""The shell's AWS profile: the administrator's to choose (an unknown one is bad input), never the
scientist's concern (her commands use the bundle's keys alone)."""

from __future__ import annotations

import pytest

from tests.flows import PROJECT, USER

PROFILE_VARIABLES = ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"]


@pytest.mark.parametrize("variable", PROFILE_VARIABLES)
def test_the_shells_profile_does_not_touch_the_scientists_commands(shell, variable):
    assert shell.setup_region().returncode == 0
    bundle = shell.home / "b.toml"
    assert shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                     "--output", str(bundle)).returncode == 0
    env = {"CONDOR_ANNEX_CREDENTIALS": str(bundle), variable: "bogus"}
    status = shell.run("condor_annex", "status", env=env)
    assert status.returncode == 0, status.output
    plan = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "2", "--instances", "1", "--dry-run", env=env)
    assert plan.returncode == 0 and "Dry run" in plan.stdout, plan.output


@pytest.mark.parametrize("variable", PROFILE_VARIABLES)
@pytest.mark.parametrize("region", [[], ["--region", "us-east-1"]], ids=["configured-region", "region-given"])
def test_an_unknown_profile_in_the_administrators_shell_is_bad_input(shell, aws, variable, region):
    before = aws.aws_requests()
    result = shell.run("annex-admin", "check-setup", *region, env={variable: "bogus"})
    assert result.returncode == 2, result.output
    assert result.stderr.startswith("Error: AWS profile 'bogus' was not found\n"), result.stderr
    assert f"${variable} names it" in result.stderr and f"Next: Check the profile name in ~/.aws/config, or unset {variable}" in result.stderr
    assert aws.aws_requests() == before


def test_an_unknown_profile_option_is_bad_input(shell, aws):
    result = shell.run("annex-admin", "check-setup", "--profile", "bogus")
    assert result.returncode == 2, result.output
    assert "AWS profile 'bogus' was not found" in result.stderr and "--profile names it" in result.stderr
    assert "Next: " in result.stderr
