"""issue-credentials, revoke-credentials and list-credentials as an administrator of several
stacks runs them: a scientist's user is changed only by the stack that issued her, and every
change that takes something away or gives something back is said, and asked."""

from __future__ import annotations

from annex_common.aws import make_clients
from templates import contract
from tests.flows import PROJECT, USER


def issue(shell, *args: str, answer: str | None = None, output: str = "b.toml"):
    return shell.run("annex-admin", "issue-credentials", "--user", USER, "--output", str(shell.home / output),
                     *args, answer=answer)


def iam_state(user: str = USER) -> tuple[list[str], dict[str, str], list[str]]:
    """Her keys, her tags and her policies, as IAM has them."""
    iam = make_clients(region="us-east-1").iam
    keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
    tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=user)["Tags"]}
    policies = [p["PolicyArn"] for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]]
    return keys, tags, policies


def test_a_user_of_the_stack_in_another_region_is_refused_there_and_nothing_changes(shell):
    assert shell.setup_region().returncode == 0
    assert shell.run("annex-admin", "setup", "--yes", "--region", "us-west-2").returncode == 0
    assert issue(shell, "--project-id", PROJECT).returncode == 0
    before = iam_state()
    assert before[1][contract.USER_TAG_REGION] == "us-east-1"
    other = issue(shell, "--region", "us-west-2", "--project-id", "Second.Lab", "--yes", output="a.toml")
    assert other.returncode == 2, other.output
    assert f"the IAM user {USER} belongs to stack HTCondorAnnex in us-east-1" in other.stderr
    assert f"--user for this stack (for example {USER}-us-west-2)" in other.stderr
    assert iam_state() == before and not (shell.home / "a.toml").exists()
    revoked = shell.run("annex-admin", "revoke-credentials", "--region", "us-west-2", "--user", USER, "--yes")
    assert revoked.returncode == 2 and "belongs to stack HTCondorAnnex in us-east-1" in revoked.stderr
    assert iam_state() == before
    # The same name in us-west-2 is another user: issued under the name suggested.
    moved = shell.run("annex-admin", "issue-credentials", "--region", "us-west-2", "--project-id", "Second.Lab",
                      "--user", f"{USER}-us-west-2", "--output", str(shell.home / "a.toml"), "--yes")
    assert moved.returncode == 0, moved.output
    assert iam_state() == before


def test_issuing_a_revoked_scientist_again_says_she_gets_access_back_or_moves_and_asks(shell):
    assert shell.setup_region().returncode == 0
    assert issue(shell, "--project-id", PROJECT).returncode == 0
    assert shell.run("annex-admin", "revoke-credentials", "--user", USER, "--yes").returncode == 0
    declined = issue(shell, "--project-id", PROJECT, answer="n", output="c.toml")
    assert declined.returncode == 2, declined.output
    assert f"{USER} was revoked on 20" in declined.stdout and ": this gives her access again" in declined.stdout
    assert iam_state()[0] == [] and not (shell.home / "c.toml").exists()
    moved = issue(shell, "--project-id", "OtherLab", "--yes", output="d.toml")
    assert moved.returncode == 0, moved.output
    assert "this gives her access again" in moved.stdout  # said, with --yes too
    assert (f"{USER} moves from project {PROJECT} to project OtherLab: her {PROJECT} bundle stops working"
            in moved.stdout)


def test_changing_a_projects_pool_shows_now_and_to_be_and_asks(shell):
    from tests.flows import write_private

    assert shell.setup_region().returncode == 0
    key = shell.home / "cm2.key"
    write_private(key, b"k" * 64)
    first = issue(shell, "--project-id", PROJECT, "--pool-collector", "cm2.example.org", "--pool-trust-domain",
                  "t2.org", "--pool-signing-key-file", str(key))
    assert first.returncode == 0, first.output  # a new project: nothing runs on another pool, nothing to ask
    assert "to be: collector cm2.example.org" in first.stdout, first.stdout
    moved = issue(shell, "--project-id", PROJECT, "--pool-collector", "cm3.example.org", "--pool-trust-domain",
                  "t2.org", "--pool-signing-key-file", str(key), "--yes", output="c.toml")
    assert moved.returncode == 0, moved.output
    assert f"pool of project {PROJECT} now:   collector cm2.example.org" in moved.stdout
    assert f"pool of project {PROJECT} to be: collector cm3.example.org" in moved.stdout
    assert "running annexes keep their old pool until they end" in moved.stdout
    back = issue(shell, "--project-id", PROJECT, "--stack-pool", answer="n", output="d.toml")
    assert back.returncode == 2, back.output
    assert "to be: the stack's pool" in back.stdout and f"change project {PROJECT}'s pool" in back.stderr
    shown = shell.run("annex-admin", "pool", "show")
    assert "cm3.example.org" in shown.stdout  # declined: still its own


def test_issuing_again_says_her_bundle_stops_working_until_she_installs_the_new_one(shell):
    assert shell.setup_region().returncode == 0
    first = issue(shell, "--project-id", PROJECT)
    assert first.returncode == 0 and "stops working" not in first.stdout
    again = issue(shell, "--project-id", PROJECT, "--max-spend", "900", output="c.toml")
    assert again.returncode == 0, again.output
    assert "the bundle she has stops working, and she must install the new one" in again.stdout
    assert "the bundle she has no longer works until she installs this one" in again.stdout
    assert "replaced 1 earlier access key(s)" not in again.stdout


def test_revoking_shows_what_it_does_asks_and_says_when_she_is_already_revoked(shell):
    assert shell.setup_region().returncode == 0
    assert issue(shell, "--project-id", PROJECT).returncode == 0
    before = iam_state()
    unasked = shell.run("annex-admin", "revoke-credentials", "--user", USER)  # no terminal, no --yes
    assert unasked.returncode == 2 and "could not be asked" in unasked.stderr
    assert f"user {USER}, project {PROJECT}" in unasked.stdout
    assert f"1 access key(s) deleted ({before[0][0]}): her bundle stops working" in unasked.stdout
    declined = shell.run("annex-admin", "revoke-credentials", "--user", USER, answer="n")
    assert declined.returncode == 2 and "Not confirmed: nothing was changed." in declined.stderr
    assert iam_state() == before
    revoked = shell.run("annex-admin", "revoke-credentials", "--user", USER, answer="y")
    assert revoked.returncode == 0 and "1 access key(s) deleted" in revoked.stdout
    assert iam_state()[0] == [] and iam_state()[2] == []
    again = shell.run("annex-admin", "revoke-credentials", "--user", USER)
    assert again.returncode == 0, again.output
    assert f"{USER} is already revoked (since 20" in again.stdout and "0 access key(s)" not in again.output


def test_the_administrator_sees_every_scientist_and_teardown_names_whom_it_removes(shell):
    import json

    from annex_common.bundle import load_bundle
    from tests.flows import write_private

    assert shell.setup_region().returncode == 0
    assert issue(shell, "--project-id", PROJECT, "--max-instances", "8").returncode == 0
    key = shell.home / "cm2.key"
    write_private(key, b"k" * 64)
    other = shell.run("annex-admin", "issue-credentials", "--project-id", "OtherLab", "--user", "labmate",
                      "--output", str(shell.home / "l.toml"), "--pool-collector", "cm2.example.org",
                      "--pool-trust-domain", "t2.org", "--pool-signing-key-file", str(key), "--allow-own-pool-key")
    assert other.returncode == 0, other.output
    assert shell.run("annex-admin", "revoke-credentials", "--user", "labmate", "--yes").returncode == 0
    before = iam_state()
    listed = shell.run("annex-admin", "list-credentials")
    assert listed.returncode == 0, listed.output
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert PROJECT in rows[USER] and "8 instances, 168 h, $500.00" in rows[USER] and "the stack's" in rows[USER]
    assert "minute" in rows[USER] and " no " in rows[USER]
    assert "own (cm2.example.org); own key allowed" in rows["labmate"] and "no key" in rows["labmate"]
    document = json.loads(shell.run("annex-admin", "list-credentials", "--output", "json").stdout)
    by_user = {s["user"]: s for s in document["scientists"]}
    assert by_user[USER]["caps"] == {"max_instances": 8, "max_lease_hours": 168.0, "max_spend_usd": 500.0}
    assert by_user[USER]["revoked"] is None and len(by_user[USER]["access_keys_created"]) == 1
    assert by_user["labmate"]["revoked"] and by_user["labmate"]["pool"]["collector"] == "cm2.example.org"
    secret = load_bundle(shell.home / "b.toml").aws_secret_access_key
    assert secret not in listed.output + json.dumps(document)
    assert iam_state() == before  # read only
    dry = shell.run("annex-admin", "teardown", "--dry-run")
    assert f"would remove IAM user {USER} (a scientist's)" in dry.stdout
    assert "would remove IAM user labmate (a scientist's)" in dry.stdout  # revoked, still removed
    assert dry.stdout.count("would remove node role ") == 2
    assert "would remove recorded pool /condor-annex/HTCondorAnnex/pools/projects/OtherLab" in dry.stdout
    declined = shell.run("annex-admin", "teardown", answer="n")
    assert declined.returncode == 2, declined.output
    assert f"will remove IAM user {USER}" in declined.stdout
    assert "2 scientist(s)' IAM user(s), 2 node role(s), 2 recorded pool(s)?" in declined.stderr
    assert iam_state() == before


def test_a_cap_change_without_output_keeps_her_key_and_bundle(shell):
    assert shell.setup_region().returncode == 0
    needs = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER)
    assert needs.returncode == 2 and "needs --output" in needs.stderr and "new scientist" in needs.stderr
    assert issue(shell, "--project-id", PROJECT).returncode == 0
    keys, _tags, _policies = iam_state()
    raised = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                       "--max-spend", "900")
    assert raised.returncode == 0, raised.output
    assert "her access key and bundle are kept (no --output)" in raised.stdout and "stops working" not in raised.stdout
    assert "caps to be: at most 32 instances at once, leases of at most 168 hours, at most $900.00" in raised.stdout
    assert iam_state()[0] == keys
    env = {"CONDOR_ANNEX_CREDENTIALS": str(shell.home / "b.toml")}
    assert shell.run("condor_annex", "status", env=env).returncode == 0  # her bundle still works
    listed = shell.run("annex-admin", "list-credentials")
    assert "$900.00" in listed.stdout
