"""A mistyped region is bad input, for every command, before any AWS request is made."""

from __future__ import annotations

import os

import pytest

from tests.flows import PROJECT, USER

TYPO = "us-east1"

ADMIN_COMMANDS = {
    "setup": ["setup", "--yes"],
    "check-setup": ["check-setup"],
    "issue-credentials": ["issue-credentials", "--project-id", PROJECT, "--user", USER, "--output", "b.toml"],
    "revoke-credentials": ["revoke-credentials", "--user", USER],
    "list-credentials": ["list-credentials"],
    "enforce": ["enforce", "--dry-run"],
    "teardown": ["teardown", "--yes", "--force"],
    "build-image": ["build-image", "--yes"],
    "template": ["template"],
}


def assert_unknown_region(result, typo: str = TYPO) -> None:
    assert result.returncode == 2, result.output
    assert f"unknown AWS region '{typo}'" in result.output or f"region '{typo}' is unknown" in result.output
    assert "Did you mean us-east-1?" in result.output
    # The known regions are named, so the fix is on the screen.
    assert "eu-west-1" in result.output and "ap-southeast-2" in result.output


@pytest.mark.parametrize("args", list(ADMIN_COMMANDS.values()), ids=list(ADMIN_COMMANDS))
def test_admin_region_option_typo(shell, aws, args):
    before = aws.aws_requests()
    result = shell.run("annex-admin", *args, "--region", TYPO)
    assert_unknown_region(result)
    assert aws.aws_requests() == before


def test_admin_region_typo_in_the_environment(shell, aws):
    before = aws.aws_requests()
    result = shell.run("annex-admin", "check-setup", env={"AWS_REGION": TYPO, "AWS_DEFAULT_REGION": TYPO})
    assert_unknown_region(result)
    assert "your AWS configuration" in result.output
    assert aws.aws_requests() == before


def write_bundle(path, region: str) -> None:
    path.write_text(
        f'region = "{region}"\nstack_name = "HTCondorAnnex"\nproject_id = "{PROJECT}"\nuser = "{USER}"\n'
        'aws_access_key_id = "AKIAEXAMPLEEXAMPLE00"\naws_secret_access_key = "not-a-secret"\n'
        "max_instances = 8\nmax_lease_hours = 72\nmax_spend_usd = 100.0\n"
    )
    os.chmod(path, 0o600)


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["--project-id", PROJECT, "--duration", "2", "--instances", "1", "--yes"],
        ["extend", "--annex-name", "a", "--duration", "2"],
        ["terminate", "--annex-name", "a", "--yes"],
    ],
    ids=["status", "launch", "extend", "terminate"],
)
def test_bundle_region_typo(shell, aws, args):
    bundle = shell.home / "typo.toml"
    write_bundle(bundle, TYPO)
    before = aws.aws_requests()
    result = shell.run("condor_annex", *args, env={"CONDOR_ANNEX_CREDENTIALS": str(bundle)})
    assert_unknown_region(result)
    assert str(bundle) in result.output
    assert aws.aws_requests() == before


def test_import_refuses_a_bundle_with_a_region_typo(shell):
    bundle = shell.home / "typo.toml"
    write_bundle(bundle, TYPO)
    result = shell.run("condor_annex", "import-credentials", str(bundle))
    assert_unknown_region(result)
    assert not (shell.home / ".condor" / "annex-credentials.toml").exists()
