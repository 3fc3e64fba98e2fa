"""The administrator changes her stack and checks it: nothing goes stale, and check-setup speaks plainly."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import boto3

from annex_admin.stack import read_stack
from annex_cloud import metrics
from annex_common.aws import make_clients
from templates import contract

REGION = "us-east-1"
STACK = contract.DEFAULT_STACK_NAME
# A Python value where a person expected words: a set or dict repr, a quoted id from a KeyError.
PYTHON_VALUE = re.compile(r"\{'|'\}|'(lt|sg|i|vpc)-[0-9a-f]+'")


def check_table(result) -> str:
    return " ".join(result.stdout.split())  # the table wraps long details


def ssh_rule(group_id: str) -> list[str]:
    group = boto3.client("ec2", region_name=REGION).describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return [r["CidrIp"] for p in group.get("IpPermissions", []) if p.get("FromPort") == 22 for r in p.get("IpRanges", [])]


def test_setup_change_check_and_change_back(shell, tmp_path):
    """SSH on and off, an instance type dropped and allowed again: each setup works, check-setup
    passes after each, and the project's launch templates follow."""
    assert shell.setup_region().returncode == 0
    issued = shell.run("annex-admin", "issue-credentials", "--project-id", "P1", "--user", "u1",
                       "--output", str(tmp_path / "u1.toml"), "--yes")
    assert issued.returncode == 0, issued.output
    group = read_stack(make_clients(region=REGION), STACK).output(contract.OUT_SECURITY_GROUP)

    steps = [
        (["--ssh-cidr", "198.51.100.0/24"], ["m7i.large", "m6i.large", "m5.large"], ["198.51.100.0/24"]),
        (["--instance-types", "m7i.large,m6i.large"], ["m7i.large", "m6i.large"], ["198.51.100.0/24"]),
        (["--ssh-cidr", "none", "--instance-types", "m7i.large,m6i.large,m5.large"],
         ["m7i.large", "m6i.large", "m5.large"], []),
    ]
    for args, types, ssh in steps:
        changed = shell.run("annex-admin", "setup", "--yes", *args)
        assert changed.returncode == 0, changed.output
        assert "unexpected failure" not in changed.output
        check = shell.run("annex-admin", "check-setup")
        assert check.returncode == 0, (args, check.output)
        assert "node roles ok 1 project(s)" in check_table(check)
        stack = read_stack(make_clients(region=REGION), STACK)
        # A rule change updates the group in place, as AWS does: same id, new rules.
        assert stack.output(contract.OUT_SECURITY_GROUP) == group and ssh_rule(group) == ssh
        assert sorted(stack.launch_templates) == sorted(types)
        names = {t["LaunchTemplateName"] for t in boto3.client("ec2", region_name=REGION)
                 .describe_launch_templates(LaunchTemplateIds=list(stack.launch_templates.values()))["LaunchTemplates"]}
        assert names == {f"{STACK}-{t.replace('.', '-')}" for t in types}


def test_check_setup_names_what_was_deleted_behind_the_stack_in_words(shell, tmp_path):
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    assert shell.run("annex-admin", "issue-credentials", "--project-id", "P1", "--user", "u1",
                     "--output", str(tmp_path / "u1.toml"), "--yes").returncode == 0
    stack = read_stack(make_clients(region=REGION), STACK)
    ec2 = boto3.client("ec2", region_name=REGION)
    lost = stack.launch_templates["m5.large"]
    ec2.delete_launch_template(LaunchTemplateId=lost)
    group = stack.output(contract.OUT_SECURITY_GROUP)
    ec2.delete_security_group(GroupId=group)

    check = shell.run("annex-admin", "check-setup")
    assert check.returncode == 1, check.output
    table = check_table(check)
    assert PYTHON_VALUE.search(check.stdout) is None, check.stdout
    assert f"security group FAIL {group}, named by the stack's outputs, does not exist" in table
    assert f"launch templates FAIL named by the stack's outputs but missing in EC2: m5.large ({lost})" in table
    assert f"node roles FAIL stack {STACK} names launch templates that EC2 does not have: m5.large ({lost})" in table

    # setup then follows the projects' templates: it fails in words, not with a KeyError.
    again = shell.run("annex-admin", "setup", "--yes")
    assert again.returncode == 1, again.output
    assert "unexpected failure" not in again.output and PYTHON_VALUE.search(again.output) is None, again.output
    assert f"names launch templates that EC2 does not have: m5.large ({lost})" in again.stderr


def test_a_new_stack_of_an_old_name_is_not_credited_with_the_old_stacks_sweeps(shell):
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    torn = shell.run("annex-admin", "teardown", "--yes")
    assert torn.returncode == 0, torn.output
    assert "DependencyViolation" not in torn.output  # the emulator's leftovers are removed, in words
    # The old stack's last sweep, three minutes ago: metrics outlive a stack (they are per name).
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(Namespace=metrics.NAMESPACE, MetricData=[{
        "MetricName": metrics.HEARTBEAT, "Dimensions": metrics.dimensions(STACK), "Value": 1.0, "Unit": "Count",
        "Timestamp": datetime.now(timezone.utc) - timedelta(minutes=3)}])

    assert shell.setup_region().returncode == 0
    check = shell.run("annex-admin", "check-setup")
    assert check.returncode == 0, check.output
    assert "enforcer sweeps ok none yet: the stack changed 0 min ago" in check_table(check)
    # Its own sweeps count.
    assert shell.run("annex-admin", "enforce").returncode == 0
    assert re.search(r"enforcer sweeps ok last sweep .*, [01] min ago", check_table(shell.run("annex-admin", "check-setup")))


def test_an_alarm_topic_nobody_reads_is_a_warning(shell):
    assert shell.setup_region().returncode == 0
    check = shell.run("annex-admin", "check-setup")
    assert check.returncode == 0, check.output  # a warning: the setup works
    table = check_table(check)
    assert re.search(r"alarm topic WARN \S+: nobody is subscribed, so the enforcer's alarms .* reach no one", table)
    assert "--notify-email ADDRESS" in table



def test_check_setup_says_whether_setup_chose_the_image_or_it_was_given(shell):
    assert shell.setup_region().returncode == 0
    assert "chosen by setup (the region's latest Amazon Linux 2023 then)" in check_table(shell.run("annex-admin", "check-setup"))
    ec2 = boto3.client("ec2", region_name=REGION)
    chosen = read_stack(make_clients(region=REGION), STACK).output(contract.OUT_IMAGE)
    other = next(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"] if i["ImageId"] != chosen)
    assert shell.run("annex-admin", "setup", "--image-id", other, "--yes").returncode == 0
    for _ in range(2):  # given, then kept by a setup without --image-id: still the administrator's
        table = check_table(shell.run("annex-admin", "check-setup"))
        assert f"image ok {other} (" in table and "), given with --image-id," in table, table
        assert shell.run("annex-admin", "setup", "--yes").returncode == 0
