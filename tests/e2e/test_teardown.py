"""annex-admin teardown as the administrator runs it: check first, say what it will end, leave nothing."""

from __future__ import annotations

import json

import boto3

from annex_cloud.nodes import node_role_name
from tests.e2e.test_scientist_flow import live_instances, setup_region_and_bundle
from tests.flows import PROJECT

REGION = "us-east-1"


def launch(shell, bundle: str, count: int = 3) -> None:
    result = shell.run("condor_annex", "--project-id", PROJECT, "--duration", "2", "--instances", str(count), "--yes",
                       env={"CONDOR_ANNEX_CREDENTIALS": bundle})
    assert result.returncode == 0, result.output


def stack_exists() -> bool:
    stacks = boto3.client("cloudformation", region_name=REGION).list_stacks()["StackSummaries"]
    return any(s["StackStatus"] != "DELETE_COMPLETE" for s in stacks)


def test_refuses_before_asking_while_instances_live(shell):
    launch(shell, setup_region_and_bundle(shell))
    # A terminal that would answer yes: the refusal must come first.
    result = shell.run("annex-admin", "teardown", answer="y")
    assert result.returncode == 1, result.output
    assert "3 annex instance(s) are still alive" in result.output and "--force" in result.output
    assert "[y/N]" not in result.output
    assert len(live_instances()) == 3 and stack_exists()


def test_the_force_prompt_names_the_instances_it_will_end(shell):
    launch(shell, setup_region_and_bundle(shell))
    declined = shell.run("annex-admin", "teardown", "--force", answer="n")
    assert declined.returncode == 2, declined.output
    assert "Terminate 3 annex instance(s), then delete stack HTCondorAnnex" in declined.stderr
    assert len(live_instances()) == 3 and stack_exists()

    accepted = shell.run("annex-admin", "teardown", "--force", answer="y")
    assert accepted.returncode == 0, accepted.output
    assert "3 annex instance(s) (terminated)" in accepted.stdout
    assert live_instances() == [] and not stack_exists()


def inventory() -> dict[str, list[str]]:
    """Everything setup, issue-credentials and a launch make, by kind (the emulator's own defaults left out)."""
    session = boto3.session.Session(region_name=REGION)
    iam, ec2 = session.client("iam"), session.client("ec2")
    vpcs = [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v.get("IsDefault")]
    in_our_vpcs = [{"Name": "vpc-id", "Values": vpcs}]
    return {
        "stacks": [s["StackName"] for s in session.client("cloudformation").list_stacks()["StackSummaries"]
                   if s["StackStatus"] != "DELETE_COMPLETE"],
        "iam users": [u["UserName"] for u in iam.list_users()["Users"]],
        "iam roles": [r["RoleName"] for r in iam.list_roles()["Roles"]],
        "managed policies": [p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"]],
        "instance profiles": [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]],
        "buckets": [b["Name"] for b in session.client("s3").list_buckets()["Buckets"]],
        "functions": [f["FunctionName"] for f in session.client("lambda").list_functions()["Functions"]],
        "rules": [r["Name"] for r in session.client("events").list_rules()["Rules"]],
        "launch templates": [t["LaunchTemplateId"] for t in ec2.describe_launch_templates()["LaunchTemplates"]],
        "key pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
        "vpcs": vpcs,
        "subnets": [x["SubnetId"] for x in ec2.describe_subnets(Filters=in_our_vpcs)["Subnets"]] if vpcs else [],
        "security groups": [g["GroupId"] for g in ec2.describe_security_groups(Filters=in_our_vpcs)["SecurityGroups"]
                            if g["GroupName"] != "default"] if vpcs else [],
        "internet gateways": [g["InternetGatewayId"] for g in ec2.describe_internet_gateways()["InternetGateways"]],
        "tables": session.client("dynamodb").list_tables()["TableNames"],
        "topics": [t["TopicArn"] for t in session.client("sns").list_topics()["Topics"]],
    }


def test_setup_teardown_setup(shell):
    empty = inventory()
    for round_number in (1, 2):
        launch(shell, setup_region_and_bundle(shell), count=2)
        made = inventory()
        assert made["stacks"] and made["managed policies"] and made["iam users"], made
        result = shell.run("annex-admin", "teardown", "--yes", "--force", "--output", "json")
        assert result.returncode == 0, (round_number, result.output)
        report = json.loads(result.stdout)
        assert report["complete"] and report["not_removed"] == [], report
        assert inventory() == empty, round_number
        (shell.home / "b.toml").unlink()  # its keys are gone; issue-credentials never overwrites unasked
    again = shell.run("annex-admin", "teardown", "--yes")
    assert again.returncode == 0 and "Nothing to remove" in again.stdout


def test_teardown_after_a_stack_deleted_behind_its_back_removes_the_policy_it_left(shell):
    setup_region_and_bundle(shell)
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    try:
        cloudformation.delete_stack(StackName="HTCondorAnnex")
    except Exception:  # the emulator stops at the VPC's route tables, as teardown knows
        pass
    assert inventory()["managed policies"], "the emulator no longer leaves the policy: this test checks nothing"
    result = shell.run("annex-admin", "teardown", "--yes")
    assert result.returncode == 0, result.output
    assert "managed policy" in result.stdout
    assert inventory()["managed policies"] == [] and inventory()["iam users"] == []
    assert shell.setup_region().returncode == 0


def test_tearing_down_one_stack_leaves_another_stacks_node_roles(shell):
    """Two stacks in one account, each with a project's node role: tearing one down removes its
    own roles and profiles only, and the other stack still checks complete."""
    setup_region_and_bundle(shell)
    other = shell.run("annex-admin", "setup", "--stack-name", "Other", "--yes")
    assert other.returncode == 0, other.output
    issued = shell.run("annex-admin", "issue-credentials", "--stack-name", "Other", "--project-id", PROJECT,
                       "--user", "other-user", "--output", str(shell.home / "other.toml"))
    assert issued.returncode == 0, issued.output
    removed = shell.run("annex-admin", "teardown", "--stack-name", "Other", "--yes", "--output", "json")
    assert removed.returncode == 0, removed.output
    others = node_role_name("Other", REGION, PROJECT)
    node_items = [item for item in json.loads(removed.stdout)["removed"] if item.startswith("node ")]
    assert node_items == [f"node instance profile {others}", f"node role {others}"], node_items
    iam = boto3.client("iam", region_name=REGION)
    left = [p["Path"] for p in iam.list_instance_profiles()["InstanceProfiles"]]
    assert left == ["/condor-annex/nodes/HTCondorAnnex/us-east-1/"], left
    check = shell.run("annex-admin", "check-setup")
    assert check.returncode == 0, check.output
    assert "node roles ok 1 project(s)" in " ".join(check.stdout.split()), check.stdout


def test_with_nothing_to_remove_teardown_says_so_without_asking(shell):
    for args in ((), ("--yes",)):
        result = shell.run("annex-admin", "teardown", *args, answer="n")
        assert result.returncode == 0, result.output
        assert "Nothing to remove: no stack HTCondorAnnex in us-east-1." in result.stdout
        assert "[y/N]" not in result.output


def test_when_only_leftovers_remain_the_question_says_the_stack_is_gone(shell):
    # What a stack deleted by other means leaves: its recorded pool (kept outside the stack).
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/condor-annex/HTCondorAnnex/pools/stack", Value="{}", Type="SecureString")
    assert not stack_exists()
    asked = shell.run("annex-admin", "teardown", answer="n")
    assert asked.returncode == 2, asked.output
    assert "Remove what stack HTCondorAnnex left in us-east-1 (the stack itself is gone)" in asked.stderr, asked.output
    assert "Delete stack" not in asked.output
    removed = shell.run("annex-admin", "teardown", "--yes")
    assert removed.returncode == 0, removed.output
    assert "recorded pool" in removed.output, removed.output
