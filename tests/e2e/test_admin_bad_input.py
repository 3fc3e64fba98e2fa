"""annex-admin's bad input: exit 2, one message in the administrator's terms, no AWS request."""

from __future__ import annotations

import pytest

from tests.flows import PROJECT, USER


def issue(*extra: str) -> list[str]:
    return ["issue-credentials", "--project-id", PROJECT, "--user", USER, "--output", "b.toml", *extra]


CASES = {
    "no-instances": (issue("--max-instances", "0"), "--max-instances 0 is not allowed"),
    "negative-instances": (issue("--max-instances", "-3"), "--max-instances -3 is not allowed"),
    "lease-nan": (issue("--max-lease-hours", "nan"), "--max-lease-hours nan is not allowed"),
    "lease-infinite": (issue("--max-lease-hours", "inf"), "--max-lease-hours inf is not allowed"),
    "lease-negative": (issue("--max-lease-hours", "-1"), "--max-lease-hours -1 is not allowed"),
    "lease-over-a-year": (issue("--max-lease-hours", "10000"), "must be from 1 to 8,784 hours"),
    "lease-too-short": (issue("--max-lease-hours", "0.01"), "--max-lease-hours 0.01 is not allowed"),
    "instances-a-billion": (issue("--max-instances", "1000000000"), "must be from 1 to 100,000"),
    "spend-a-trillion": (issue("--max-spend", "1e12"), "must be from $1.00 to $10,000,000.00"),
    "spend-a-tenth-of-a-cent": (issue("--max-spend", "0.001"), "--max-spend 0.001 is not allowed"),
    "spend-zero": (issue("--max-spend", "0"), "--max-spend 0 is not allowed"),
    "spend-nan": (issue("--max-spend", "nan"), "--max-spend nan is not allowed"),
    "own-pool-no-key": (issue("--pool-collector", "cm2.example.org", "--pool-trust-domain", "t2.org"),
                        "needs one of --pool-signing-key-file and --pool-password-file as well"),
    "own-pool-both-files": (issue("--pool-collector", "cm2.example.org", "--pool-trust-domain", "t2.org",
                                  "--pool-signing-key-file", "k", "--pool-password-file", "p"),
                            "give exactly one of --pool-signing-key-file and --pool-password-file"),
    "own-pool-collector-only": (issue("--pool-collector", "cm2.example.org"),
                                "needs --pool-trust-domain and one of --pool-signing-key-file and --pool-password-file"),
    "own-pool-key-both-ways": (issue("--allow-own-pool-key", "--no-own-pool-key"),
                               "--allow-own-pool-key and --no-own-pool-key contradict each other"),
    "project-malformed": (["issue-credentials", "--project-id", "bad project", "--user", USER, "--output", "b.toml"], "not allowed"),
    "user-malformed": (["issue-credentials", "--project-id", PROJECT, "--user", "bad user!", "--output", "b.toml"], "not a valid IAM user name"),
    "output-is-a-folder": (["issue-credentials", "--project-id", PROJECT, "--user", USER, "--output", "."], "is a directory"),
    "setup-ssh-cidr": (["setup", "--yes", "--ssh-cidr", "10.0.0.1/8"], "not a valid CIDR"),
    "setup-stack-name": (["setup", "--yes", "--stack-name", "bad_name!"], "not allowed"),
    "check-setup-stack-name": (["check-setup", "--stack-name", "bad_name!"], "not allowed"),
    "teardown-stack-name": (["teardown", "--yes", "--stack-name", "bad_name!"], "not allowed"),
    "profile-unknown": (["check-setup", "--profile", "nosuch"], "AWS profile 'nosuch' was not found"),
    "profile-unknown-setup": (["setup", "--yes", "--profile", "nosuch"], "AWS profile 'nosuch' was not found"),
}


@pytest.mark.parametrize("args, phrase", list(CASES.values()), ids=list(CASES))
def test_admin_bad_input(shell, aws, args, phrase):
    before = aws.aws_requests()
    result = shell.run("annex-admin", *args)  # the shell also checks for Python objects in the output
    assert result.returncode == 2, result.output
    assert phrase in result.output
    assert "Next:" in result.output
    assert "Why: and" not in result.output  # a reason, never a fragment of the sentence above it
    if "--pool-" in " ".join(args):  # issue-credentials' own options, never pool set's
        assert " --signing-key-file" not in result.output and " --password-file" not in result.output
    assert aws.aws_requests() == before
