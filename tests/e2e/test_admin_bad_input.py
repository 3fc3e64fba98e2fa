"""annex-admin's bad input: exit 2, one message in the administrator's terms, no AWS request."""

from __future__ import annotations

import pytest

from annex_common.aws import make_clients
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


NEED_A_STACK = {
    "pool-show": ["pool", "show"],
    "pool-set": ["pool", "set", "--collector", "cm.example.org", "--trust-domain", "example.org",
                 "--signing-key-file", "ANNEX", "--yes"],
    "issue-credentials": issue("--yes"),
    "revoke-credentials": ["revoke-credentials", "--user", USER],
    "enforce": ["enforce"],
    "build-image": ["build-image", "--dry-run"],
}


@pytest.mark.parametrize("args", list(NEED_A_STACK.values()), ids=list(NEED_A_STACK))
def test_a_command_on_a_stack_that_is_not_there_is_bad_input_in_the_administrators_words(shell, args):
    from tests.flows import ANNEX_KEY_FILE, write_private

    write_private(shell.home / "ANNEX", ANNEX_KEY_FILE)
    result = shell.run("annex-admin", *args, "--stack-name", "Nope", "--region", "us-west-2")
    assert result.returncode == 2, result.output
    assert "no condor-annex stack named Nope in us-west-2" in result.output
    words = " ".join(result.stderr.split())
    assert "Run `annex-admin setup --stack-name Nope --region us-west-2`" in words, result.output
    assert "check --region and --stack-name" in words
    assert "pool administrator" not in result.output and "credentials bundle" not in result.output
    assert not (shell.home / "b.toml").exists()


def test_check_setup_of_a_stack_that_is_not_there_says_how_to_set_it_up(shell):
    result = shell.run("annex-admin", "check-setup", "--stack-name", "Nope")
    assert result.returncode == 1, result.output
    words = " ".join(result.stdout.split())
    assert "run `annex-admin setup --stack-name Nope`" in words, result.output


POOL_VALUES = {
    "collector-with-a-space": (["--collector", "cm example"], "the collector address 'cm example' is not allowed: "
                               "it must be a host name or address, optionally :port (1 to 65535)"),
    "port-too-large": (["--collector", "cm.example.org:99999"], "the collector address 'cm.example.org:99999' is not allowed"),
    "port-zero": (["--collector", "cm.example.org:0"], "the collector address 'cm.example.org:0' is not allowed"),
    "trust-domain": (["--collector", "cm.example.org", "--trust-domain", "example org!"],
                     "the trust domain 'example org!' is not allowed: it must be a host-like name"),
}


@pytest.mark.parametrize("values, phrase", list(POOL_VALUES.values()), ids=list(POOL_VALUES))
@pytest.mark.parametrize("command", ["pool-set", "issue-credentials"])
def test_a_pool_value_that_breaks_a_rule_is_refused_in_words(shell, aws, command, values, phrase):
    from tests.flows import ANNEX_KEY_FILE, write_private

    write_private(shell.home / "ANNEX", ANNEX_KEY_FILE)
    given = dict(zip(values[::2], values[1::2]))
    given.setdefault("--trust-domain", "example.org")
    options = [part for option, value in given.items() for part in (option, value)]
    if command == "pool-set":
        args = ["pool", "set", *options, "--signing-key-file", "ANNEX", "--yes"]
    else:
        args = issue("--yes", *[o.replace("--", "--pool-", 1) if o.startswith("--") else o for o in options],
                     "--pool-signing-key-file", "ANNEX")
    before = aws.aws_requests()
    result = shell.run("annex-admin", *args)
    assert result.returncode == 2, result.output
    words = " ".join(result.output.split())
    assert phrase in words, words
    assert "must match" not in words and "[A-Za-z" not in words and "it it" not in words
    assert aws.aws_requests() == before


def test_an_output_where_no_file_can_be_made_is_bad_input_before_any_key_is_made(shell):
    from tests.e2e.test_scientist_flow import setup_region_and_bundle

    setup_region_and_bundle(shell)
    iam = make_clients(region="us-east-1").iam
    keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]]
    result = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                       "--output", "/proc/version", "--yes")
    assert result.returncode == 2, result.output
    words = " ".join(result.stderr.split())
    assert "cannot write the bundle /proc/version" in words
    assert "Why: no new file can be made in /proc (No such file or directory)" in words, words
    # Nothing changed: her key (and so her bundle) is the one she had.
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]] == keys
