"""issue-credentials as an administrator runs it again: nothing moves or resets by surprise."""

from __future__ import annotations

import json

from annex_common.aws import make_clients
from tests.flows import PROJECT, USER


def issue(shell, *args: str, answer: str | None = None):
    return shell.run("annex-admin", "issue-credentials", "--user", USER, "--output", str(shell.home / "b.toml"),
                     *args, answer=answer)


def keys_of(user: str) -> list[str]:
    return [k["AccessKeyId"] for k in make_clients(region="us-east-1").iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]


def test_reissuing_keeps_the_caps_and_never_moves_her_to_another_project(shell):
    assert shell.setup_region().returncode == 0
    first = issue(shell, "--project-id", PROJECT, "--max-instances", "8", "--max-spend", "250")
    assert first.returncode == 0, first.output
    again = issue(shell, "--project-id", PROJECT, "--yes")
    assert again.returncode == 0 and "caps (unchanged): at most 8 instances" in again.stdout
    assert "$250.00" in again.stdout
    before = keys_of(USER)
    moved = issue(shell, "--project-id", "OtherLab")
    assert moved.returncode == 2 and "belongs to project TheNeeds-MooreLab" in moved.output
    assert keys_of(USER) == before  # nothing rotated


def test_a_user_issue_credentials_did_not_make_is_refused(shell):
    assert shell.setup_region().returncode == 0
    iam = make_clients(region="us-east-1").iam
    iam.create_user(UserName="ops-robot")
    key = iam.create_access_key(UserName="ops-robot")["AccessKey"]["AccessKeyId"]
    result = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", "ops-robot",
                       "--output", str(shell.home / "r.toml"))
    assert result.returncode == 2 and "was not created by condor-annex" in result.output
    assert keys_of("ops-robot") == [key]


def test_lowering_a_cap_below_what_runs_says_what_would_end_and_asks(shell):
    assert shell.setup_region().returncode == 0
    assert issue(shell, "--project-id", PROJECT).returncode == 0
    env = {"CONDOR_ANNEX_CREDENTIALS": str(shell.home / "b.toml")}
    launched = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "5", "--instances", "6",
                         "--annex-name", "running", "--yes", env=env)
    assert launched.returncode == 0, launched.output
    declined = issue(shell, "--project-id", PROJECT, "--max-instances", "4", answer="n")
    assert declined.returncode == 2  # a declined question: exit 2 everywhere
    assert "Not confirmed: nothing was changed." in declined.output
    assert "instances 32 -> 4" in declined.output and "would then end 2 running instance(s)" in declined.output
    status = json.loads(shell.run("condor_annex", "status", "--output", "json", env=env).stdout)
    assert len(status) == 6
    accepted = issue(shell, "--project-id", PROJECT, "--max-instances", "4", answer="y")
    assert accepted.returncode == 0 and "at most 4 instances" in accepted.stdout


def test_an_existing_output_file_is_never_overwritten_without_a_yes(shell):
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    assert issue(shell, "--project-id", PROJECT).returncode == 0
    bundle = shell.home / "b.toml"
    written = bundle.read_text()
    keys = keys_of(USER)
    unasked = issue(shell, "--project-id", PROJECT)
    assert unasked.returncode == 2, unasked.output
    assert f"overwrites the bundle {bundle} (user {USER}, project {PROJECT})" in unasked.stdout
    declined = issue(shell, "--project-id", PROJECT, answer="n")
    assert declined.returncode == 2 and "Not confirmed: nothing was changed." in declined.stderr
    assert bundle.read_text() == written and keys_of(USER) == keys  # nothing rotated, nothing lost
    other = shell.home / "notes.txt"
    other.write_text("the pool's notes\n")
    refused = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                        "--output", str(other))
    assert refused.returncode == 2 and f"overwrites the file {other}" in refused.stdout
    assert other.read_text() == "the pool's notes\n"
    replaced = issue(shell, "--project-id", PROJECT, answer="y")
    assert replaced.returncode == 0, replaced.output
    assert bundle.read_text() != written and keys_of(USER) != keys
    assert issue(shell, "--project-id", PROJECT, "--yes").returncode == 0

