"""annex-admin setup as the administrator runs it: show the changes, ask, keep what was chosen before."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import time

import boto3

from tests.flows import console_script

REGION = "us-east-1"
STACK = "HTCondorAnnex"


def cloudformation():
    return boto3.client("cloudformation", region_name=REGION)


def stacks() -> list[str]:
    return [s["StackName"] for s in cloudformation().list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]


def launch_template_names() -> set[str]:
    return {t["LaunchTemplateName"] for t in boto3.client("ec2", region_name=REGION).describe_launch_templates()["LaunchTemplates"]}


def ssh_sources() -> set[str]:
    """CIDRs allowed on port 22 by the annex security groups."""
    ec2 = boto3.client("ec2", region_name=REGION)
    vpcs = [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v.get("IsDefault")]
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": vpcs}])["SecurityGroups"]
    return {r["CidrIp"] for g in groups for p in g.get("IpPermissions", []) if p.get("FromPort") == 22
            for r in p.get("IpRanges", [])}


def test_a_first_setup_shows_what_it_will_create_then_asks(shell):
    unasked = shell.run("annex-admin", "setup")  # no terminal to ask on
    assert unasked.returncode == 2, unasked.output
    assert f"Stack {STACK} does not exist yet; it will be created with" in unasked.stdout
    assert re.search(r"Add\s+ScientistPolicy\s+AWS::IAM::ManagedPolicy", unasked.stdout)
    assert stacks() == []

    declined = shell.run("annex-admin", "setup", answer="n")
    assert declined.returncode == 2, declined.output
    assert f"Create stack {STACK} in {REGION}? [y/N]" in declined.stderr
    assert "nothing was changed" in declined.stderr
    assert stacks() == []

    accepted = shell.run("annex-admin", "setup", answer="y")
    assert accepted.returncode == 0, accepted.output
    assert f"Stack {STACK} created" in accepted.stdout and stacks() == [STACK]


def test_an_update_is_shown_before_it_is_asked_and_a_no_changes_nothing(shell):
    assert shell.run("annex-admin", "setup", "--yes").returncode == 0
    before = launch_template_names()

    unasked = shell.run("annex-admin", "setup", "--instance-types", "m7i.large,c6i.large")
    assert unasked.returncode == 2, unasked.output
    assert re.search(r"Add\s+LaunchTemplateC6iLarge\s+AWS::EC2::LaunchTemplate", unasked.stdout)
    assert re.search(r"Remove\s+LaunchTemplateM5Large", unasked.stdout)

    declined = shell.run("annex-admin", "setup", "--instance-types", "m7i.large,c6i.large", answer="n")
    assert declined.returncode == 2, declined.output
    assert f"Apply these changes to stack {STACK} in {REGION}? [y/N]" in declined.stderr
    assert launch_template_names() == before
    assert cloudformation().list_change_sets(StackName=STACK)["Summaries"] == []

    accepted = shell.run("annex-admin", "setup", "--instance-types", "m7i.large,c6i.large", answer="y")
    assert accepted.returncode == 0, accepted.output
    assert launch_template_names() == {f"{STACK}-m7i-large", f"{STACK}-c6i-large"}


def test_a_later_setup_keeps_the_settings_the_stack_was_built_with(shell):
    first = shell.run("annex-admin", "setup", "--yes", "--ssh-cidr", "198.51.100.0/24",
                      "--instance-types", "m7i.large,m5.large")
    assert first.returncode == 0, first.output
    assert ssh_sources() == {"198.51.100.0/24"}

    plain = shell.run("annex-admin", "setup", "--yes")
    assert plain.returncode == 0, plain.output
    assert "No changes" in plain.stdout
    assert re.search(r"SSH from\s+198\.51\.100\.0/24\s+\(kept from the stack\)", plain.stdout)
    assert re.search(r"instance types\s+m7i\.large, m5\.large\s+\(kept from the stack\)", plain.stdout)
    assert ssh_sources() == {"198.51.100.0/24"}

    widened = shell.run("annex-admin", "setup", "--yes", "--instance-types", "m7i.large,m6i.large,m5.large")
    assert widened.returncode == 0, widened.output
    assert ssh_sources() == {"198.51.100.0/24"}, "an option about instance types dropped the SSH rule"

    closed = shell.run("annex-admin", "setup", "--yes", "--ssh-cidr", "none")
    assert closed.returncode == 0, closed.output
    assert ssh_sources() == set()
    again = shell.run("annex-admin", "setup", "--yes")
    assert "No changes" in again.stdout and re.search(r"SSH from\s+nowhere", again.stdout)


def test_waits_show_their_elapsed_time(shell):
    result = shell.run("annex-admin", "setup", "--yes")
    assert result.returncode == 0, result.output
    assert re.search(r"^\s+\d+\.\d s  Creating stack", result.stderr, re.M), result.stderr
    assert re.search(r"created \(CREATE_COMPLETE\) in \d+(\.\d)? s", result.stdout)
    ended = shell.run("annex-admin", "teardown", "--yes")
    assert re.search(r"^\s+\d+\.\d s  Deleting stack", ended.stderr, re.M), ended.stderr


def test_the_time_a_question_waits_for_its_answer_is_not_counted(shell):
    """The answer comes three seconds after the question: the reported time must not include them."""
    controller, terminal = pty.openpty()
    try:
        child = subprocess.Popen([console_script("annex-admin"), "setup"], stdin=terminal, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=shell.env, cwd=shell.home)
        asked = b""
        while b"[y/N]" not in asked:
            chunk = child.stderr.read1(4096)
            assert chunk, asked
            asked += chunk
        time.sleep(3)
        os.write(controller, b"y\n")
        stdout, _rest = child.communicate(timeout=120)
    finally:
        os.close(terminal)
        os.close(controller)
    assert child.returncode == 0, stdout
    took = float(re.search(rb"created \(CREATE_COMPLETE\) in (\d+(?:\.\d)?) s", stdout).group(1))
    assert took < 3.0, stdout


def test_ssh_from_the_whole_internet_is_said_and_asked(shell):
    unasked = shell.run("annex-admin", "setup", "--ssh-cidr", "0.0.0.0/0")  # no terminal to ask on
    assert unasked.returncode == 2, unasked.output
    assert "Warning: SSH open to every address on the internet (0.0.0.0/0)" in unasked.stdout
    assert stacks() == []
    declined = shell.run("annex-admin", "setup", "--ssh-cidr", "0.0.0.0/0", answer="n")
    assert declined.returncode == 2, declined.output
    assert (f"Create stack {STACK} in {REGION}, with SSH open to every address on the internet (0.0.0.0/0)? [y/N]"
            in declined.stderr)
    assert stacks() == []
    accepted = shell.run("annex-admin", "setup", "--ssh-cidr", "0.0.0.0/0", "--yes")
    assert accepted.returncode == 0, accepted.output
    assert "Warning: SSH open to every address" in accepted.stdout and ssh_sources() == {"0.0.0.0/0"}
    # A narrow network is not warned about.
    narrow = shell.run("annex-admin", "setup", "--ssh-cidr", "198.51.100.0/24", "--yes")
    assert narrow.returncode == 0 and "Warning" not in narrow.output and ssh_sources() == {"198.51.100.0/24"}


def test_setup_refuses_a_type_no_source_prices_before_changing_anything(shell):
    """The shipped table lacks t3.micro and the suite's Price List prices Sydney only: a stack
    offering it would launch nothing of it, so setup refuses at once, naming priced types."""
    fresh = shell.run("annex-admin", "setup", "--instance-types", "t3.micro,m5.large", "--yes")
    assert fresh.returncode == 2, fresh.output
    words = " ".join(fresh.stderr.split())
    assert "no price is known for t3.micro in us-east-1" in words, words
    assert "Leave it out (--instance-types m5.large), or add priced types: c5.2xlarge, " in words, words
    assert stacks() == []

    assert shell.setup_region().returncode == 0
    before = launch_template_names()
    changed = shell.run("annex-admin", "setup", "--instance-types", "t3.micro", "--yes")
    assert changed.returncode == 2, changed.output
    assert "no price is known for t3.micro" in changed.stderr
    assert "Pass --instance-types with priced types: c5.2xlarge, " in " ".join(changed.stderr.split())
    assert launch_template_names() == before
    assert cloudformation().list_change_sets(StackName=STACK)["Summaries"] == []


def test_check_setup_fails_when_an_offered_type_has_no_stored_price(shell):
    from annex_admin.stack import read_stack
    from annex_cloud.cost import PriceBook
    from annex_cloud.registry import Registry
    from annex_common.aws import make_clients
    from templates import contract

    assert shell.setup_region().returncode == 0
    clients = make_clients(region=REGION)
    registry = Registry(clients.client("dynamodb"), read_stack(clients, STACK).output(contract.OUT_REGISTRY_TABLE))
    stored = registry.prices()
    registry.put_prices(PriceBook({t: p for t, p in stored.hourly.items() if t != "m5.large"}, stored.source,
                                  stored.fetched_at))
    check = shell.run("annex-admin", "check-setup")
    assert check.returncode == 1, check.output
    table = " ".join(check.stdout.split())
    assert re.search(r"registry FAIL \S+ holds no price for m5.large, which the stack offers: the broker launches "
                     r"none of it; run `annex-admin setup` again", table), table
