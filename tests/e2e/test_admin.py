"""annex-admin as the administrator runs it: setup, check-setup, enforce, errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from annex_admin.enforce import stack_scope
from annex_cloud.cost import PriceBook
from annex_cloud import enforcer
from annex_common.aws import make_clients
from annex_admin.stack import read_stack
from templates import contract
from tests.flows import PROJECT, USER


def test_setup_twice_then_check(shell):
    first = shell.setup_region()
    assert first.returncode == 0, first.output
    assert "created" in first.stdout and "CREATE_COMPLETE" in first.output
    second = shell.run("annex-admin", "setup", "--yes")
    assert second.returncode == 0 and "No changes" in second.stdout
    check = shell.run("annex-admin", "check-setup")
    assert check.returncode == 0 and "complete" in check.stdout


def test_check_setup_fails_until_a_pool_is_recorded_and_then_shows_it_without_its_secret(shell):
    """Without `pool set` every launch is refused: check-setup says so and what to run."""
    from tests.flows import ANNEX_KEY_FILE, COLLECTOR, TRUST_DOMAIN, write_private

    assert shell.run("annex-admin", "setup", "--stack-name", "Other", "--yes").returncode == 0
    check = shell.run("annex-admin", "check-setup", "--stack-name", "Other")
    assert check.returncode == 1, check.output
    table = " ".join(check.stdout.split())
    assert "pool FAIL no pool is recorded for stack Other, so every launch is refused: run `annex-admin pool set " \
           "--collector HOST[:PORT] --trust-domain DOMAIN --signing-key-file FILE --stack-name Other`" in table, table
    assert "not complete" in check.stdout
    write_private(shell.home / "ANNEX", ANNEX_KEY_FILE)
    recorded = shell.run("annex-admin", "pool", "set", "--stack-name", "Other", "--collector", COLLECTOR,
                         "--trust-domain", TRUST_DOMAIN, "--signing-key-file", "ANNEX", "--yes")
    assert recorded.returncode == 0, recorded.output
    check = shell.run("annex-admin", "check-setup", "--stack-name", "Other", "--output", "json")
    assert check.returncode == 0, check.output
    (pool,) = [item for item in json.loads(check.stdout)["checks"] if item["name"] == "pool"]
    assert pool["ok"] and COLLECTOR in pool["detail"] and TRUST_DOMAIN in pool["detail"] and "ANNEX" in pool["detail"]
    import base64

    assert base64.b64encode(ANNEX_KEY_FILE).decode() not in check.output


def test_check_setup_exits_1_without_a_stack(shell):
    result = shell.run("annex-admin", "check-setup")
    assert result.returncode == 1
    assert "annex-admin setup" in result.stdout


def test_template_is_json_with_every_output(shell):
    result = shell.run("annex-admin", "template", "--ssh-cidr", "198.51.100.0/24")
    assert result.returncode == 0
    assert set(json.loads(result.stdout)["Outputs"]) == set(contract.REQUIRED_OUTPUTS)


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--region", "mars-north-1"], "unknown AWS region"),
        (["--ssh-cidr", "10.0.0.1/8"], "not a valid CIDR"),
        (["--ssh-cidr", "banana"], "not a valid CIDR"),
        (["--instance-types", "m7i.large,zz9.huge"], "unknown instance type"),
        (["--instance-types", "NOT A TYPE"], "malformed"),
        (["--stack-name", "bad_name!"], "not allowed"),
        (["--image-id", "ubuntu"], "malformed"),
    ],
)
def test_setup_bad_input_exits_2_and_creates_nothing(shell, args, phrase):
    result = shell.run("annex-admin", "setup", "--yes", *args)
    assert result.returncode == 2, result.output
    assert phrase in result.output
    assert make_clients(region="us-east-1").cloudformation.list_stacks()["StackSummaries"] == []


def test_no_credentials_is_bad_input(shell):
    result = shell.run("annex-admin", "setup", "--yes", env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert result.returncode == 2, result.output
    assert "no AWS credentials" in result.output and "Next:" in result.output


def test_access_denied_is_a_readable_failure(shell, aws):
    aws.enforce_iam(True)  # the suite's fake keys are unknown to the emulator now
    result = shell.run("annex-admin", "setup", "--yes")
    assert result.returncode == 1, result.output
    assert "refused" in result.output or "Error:" in result.output


def test_issue_credentials_bad_input(shell):
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    result = shell.run("annex-admin", "issue-credentials", "--project-id", "bad project", "--user", USER,
                       "--output", str(shell.home / "b.toml"))
    assert result.returncode == 2 and "not allowed" in result.output
    assert not (shell.home / "b.toml").exists()
    assert make_clients(region="us-east-1").iam.list_users()["Users"] == []


def _fleet(ec2, subnet: str, tags: dict[str, str] | None, count: int = 1) -> list[str]:
    kwargs = {"ImageId": "ami-12c6146b", "MinCount": count, "MaxCount": count, "SubnetId": subnet,
              "InstanceType": "m5.large"}  # priced: an unpriced type never survives a spend cap
    if tags:
        kwargs["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return [i["InstanceId"] for i in ec2.run_instances(**kwargs)["Instances"]]


def test_enforce_dry_run_lists_and_enforce_ends_exactly_the_rule_breakers(shell):
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    issued = shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER,
                       "--output", str(shell.home / "b.toml"), "--max-lease-hours", "48")
    assert issued.returncode == 0
    clients = make_clients(region="us-east-1")
    stack = clients.cloudformation.describe_stacks(StackName="HTCondorAnnex")["Stacks"][0]
    subnet = next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == contract.OUT_SUBNETS).split(",")[0]
    now = datetime.now(timezone.utc)

    def tags(annex: str, expiry: str | None, project: str = PROJECT) -> dict[str, str]:
        values = {contract.TAG_ANNEX_NAME: annex, contract.TAG_PROJECT: project, contract.TAG_IDLE: "900",
                  contract.TAG_OWNER: USER}
        if expiry is not None:
            values[contract.TAG_EXPIRY] = expiry
        return values

    def at(hours: float) -> str:
        return (now + timedelta(hours=hours)).strftime(contract.EXPIRY_FORMAT)

    ec2 = clients.ec2
    breakers = set()
    breakers |= set(_fleet(ec2, subnet, tags("expired", at(-1))))
    breakers |= set(_fleet(ec2, subnet, tags("no-expiry", None)))
    breakers |= set(_fleet(ec2, subnet, tags("garbage", "next week")))
    breakers |= set(_fleet(ec2, subnet, tags("too-long", at(100))))
    # A project the administrator never recorded may run nothing: only the broker launches, and
    # only for recorded projects.
    breakers |= set(_fleet(ec2, subnet, tags("other-project", at(10), project="OtherLab")))
    keepers = set(_fleet(ec2, subnet, tags("fine", at(10)), count=2))
    keepers |= set(_fleet(ec2, subnet, {"Name": "not an annex"}))
    keepers |= set(_fleet(ec2, subnet, None))
    # Launched from the stack's launch template with no tags at all: an annex instance without a lease.
    lt = next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == contract.OUT_LAUNCH_TEMPLATES)
    lt = lt.split(",")[0].split("=", 1)[1]
    breakers |= {ec2.run_instances(MinCount=1, MaxCount=1, SubnetId=subnet, LaunchTemplate={"LaunchTemplateId": lt})[
        "Instances"][0]["InstanceId"]}
    # A lasting fleet from the stack's template: a leftover (the emulator gives fleets no
    # creation time, so it is past its grace at once).
    fleet = ec2.create_fleet(
        Type="maintain", TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "on-demand"},
        LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateId": lt, "Version": "$Default"},
                                "Overrides": [{"SubnetId": subnet}]}],
    )["FleetId"]
    # The emulator's maintain fleet launches its instance without the launch template tag EC2 adds:
    # to the emulator, it is nobody's.
    keepers |= _live(ec2) - breakers - keepers

    dry = shell.run("annex-admin", "enforce", "--dry-run")
    assert dry.returncode == 0, dry.output
    listed = {word for line in dry.stdout.splitlines() if line.startswith("would terminate") for word in line.split() if word.startswith("i-")}
    assert listed == breakers
    assert f"would remove fleet {fleet}" in dry.stdout
    assert len(_live(ec2)) == len(breakers) + len(keepers)

    real = shell.run("annex-admin", "enforce")
    assert real.returncode == 0, real.output
    assert _live(ec2) == keepers
    assert f"removed fleet {fleet}" in real.stdout
    again = shell.run("annex-admin", "enforce")
    assert "terminated" not in again.stdout.split("enforcer")[0]
    assert _live(ec2) == keepers


def test_check_setup_exits_1_after_a_sweep_that_left_an_instance_alive(shell):
    """The sweep runs in this process, as the scheduled function would, and publishes to the
    emulator's CloudWatch; the instance it cannot end is protected, and the emulator refuses the
    call that would clear it (it names an instance that does not exist)."""
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    clients = make_clients(region="us-east-1")
    stack = read_stack(clients, contract.DEFAULT_STACK_NAME)
    expired = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime(contract.EXPIRY_FORMAT)
    (stuck,) = _fleet(clients.ec2, stack.subnets[0], {contract.TAG_ANNEX_NAME: "late", contract.TAG_EXPIRY: expired})
    clients.ec2.modify_instance_attribute(InstanceId=stuck, DisableApiTermination={"Value": True})

    def refuse(params, **_):
        params["InstanceId"] = "i-00000000000000000"

    clients.ec2.meta.events.register("provide-client-params.ec2.ModifyInstanceAttribute", refuse)
    report = enforcer.sweep(clients.ec2, clients.s3, bucket=stack.bucket, prices=PriceBook({}), caps=lambda _p: None,
                            now=datetime.now(timezone.utc),
                            log=lambda _l: None, stack=stack_scope(stack), cloudwatch=clients.client("cloudwatch"))
    assert [c[0] for c in report.could_not_end] == [stuck]

    check = shell.run("annex-admin", "check-setup")
    assert check.returncode == 1, check.output
    table = " ".join(check.stdout.split())  # the table wraps long details
    assert "enforcer sweeps FAIL" in table and "min ago, left 1 instance(s) it could not end" in table
    assert "not complete" in check.stdout


def _live(ec2) -> set[str]:
    return {
        i["InstanceId"]
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        for r in page["Reservations"] for i in r["Instances"]
    }


def test_after_revoke_the_scientist_is_told_her_keys_are_no_longer_accepted(shell, aws):
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    bundle = str(shell.home / "b.toml")
    assert shell.run("annex-admin", "issue-credentials", "--project-id", PROJECT, "--user", USER, "--output", bundle).returncode == 0
    env = {"CONDOR_ANNEX_CREDENTIALS": bundle}
    aws.enforce_iam(True)
    assert shell.run("condor_annex", "status", env=env).returncode == 0
    aws.enforce_iam(False)
    revoked = shell.run("annex-admin", "revoke-credentials", "--user", USER, "--yes")
    assert revoked.returncode == 0 and "1 access key(s) deleted" in revoked.stdout
    assert "policy detached" in revoked.stdout and "marked revoked" in revoked.stdout
    aws.enforce_iam(True)
    refused = shell.run("condor_annex", "status", env=env)
    assert refused.returncode == 1
    assert "does not accept these credentials" in refused.output and "new bundle" in refused.output
