"""`annex-admin setup` / `check-setup` against the emulator, through the core functions."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import botocore.exceptions
import pytest

from annex_admin.check import check_setup
from annex_admin.deploy import current_notify_email, deploy, resolve_settings
from annex_admin.enforce import stack_scope
from annex_cloud.cost import PriceBook
from annex_cloud import enforcer
from annex_common.errors import BadInput
from annex_admin.stack import read_stack
from templates import contract
from templates.settings import StackSettings, validate_notify_email
from tests.flows import deploy_stack


def test_setup_creates_the_stack_with_every_output(clients):
    lines: list[str] = []
    settings, _ = resolve_settings(clients, StackSettings(region="us-east-1"))
    assert len(settings.availability_zones) >= 2
    assert settings.image_id.startswith("ami-")
    result = deploy(clients, settings, lines.append)
    assert result.action == "created" and result.status == "CREATE_COMPLETE"
    assert set(contract.REQUIRED_OUTPUTS) <= set(result.outputs)
    assert any("CREATE_COMPLETE" in line for line in lines)
    stack = read_stack(clients, contract.DEFAULT_STACK_NAME)
    assert stack.instance_types == list(contract.DEFAULT_INSTANCE_TYPES)
    assert len(stack.subnets) == len(stack.availability_zones) == len(settings.availability_zones)
    assert set(stack.launch_templates) == set(contract.DEFAULT_INSTANCE_TYPES)


def test_second_identical_setup_changes_nothing(clients):
    deploy_stack(clients)
    before = clients.cloudformation.describe_stacks(StackName=contract.DEFAULT_STACK_NAME)["Stacks"][0]
    again = deploy_stack(clients)
    assert again.action == "unchanged"
    after = clients.cloudformation.describe_stacks(StackName=contract.DEFAULT_STACK_NAME)["Stacks"][0]
    assert after["StackStatus"] == before["StackStatus"]
    assert clients.cloudformation.list_change_sets(StackName=contract.DEFAULT_STACK_NAME)["Summaries"] == []


def test_changing_instance_types_updates_the_stack(clients):
    deploy_stack(clients)
    result = deploy_stack(clients, instance_types=("m7i.large", "c6i.large"))
    assert result.action == "updated" and result.status == "UPDATE_COMPLETE"
    names = {lt["LaunchTemplateName"] for lt in clients.ec2.describe_launch_templates()["LaunchTemplates"]}
    assert names == {"HTCondorAnnex-m7i-large", "HTCondorAnnex-c6i-large"}
    # The stack's outputs name the templates it has now (the emulator refreshes them, as AWS does).
    assert sorted(read_stack(clients, contract.DEFAULT_STACK_NAME).launch_templates) == ["c6i.large", "m7i.large"]


def test_check_setup_passes_then_fails_when_the_stack_is_deleted_behind_its_back(clients):
    deploy_stack(clients)
    report = check_setup(clients, contract.DEFAULT_STACK_NAME)
    assert report.ok, [i for i in report.items if not i.ok]
    assert {i.name for i in report.items} >= {"stack", "outputs", "bucket", "launch templates", "enforcer function"}
    try:
        clients.cloudformation.delete_stack(StackName=contract.DEFAULT_STACK_NAME)
    except botocore.exceptions.ClientError as exc:
        # The emulator drops the stack but reports the VPC's route tables as a dependency.
        assert exc.response["Error"]["Code"] == "DependencyViolation"
    report = check_setup(clients, contract.DEFAULT_STACK_NAME)
    assert not report.ok
    assert report.items[0].name == "stack" and "annex-admin setup" in report.items[0].detail


def test_check_setup_notices_a_missing_piece(clients):
    outputs = deploy_stack(clients).outputs
    function = outputs[contract.OUT_ENFORCER_FUNCTION]
    clients.awslambda.delete_function(FunctionName=function)
    report = check_setup(clients, contract.DEFAULT_STACK_NAME)
    assert not report.ok
    assert [i.name for i in report.items if not i.ok] == ["enforcer function"]


def test_unknown_instance_type_is_bad_input(clients):
    with pytest.raises(BadInput) as caught:
        resolve_settings(clients, StackSettings(region="us-east-1", instance_types=("m7i.large", "zz9.huge")))
    assert "zz9.huge" in caught.value.why


def test_unknown_region_is_bad_input(clients):
    with pytest.raises(BadInput):
        resolve_settings(clients, StackSettings(region="mars-north-1"))


def test_reading_a_missing_stack_is_bad_input_saying_how_to_recover(clients):
    with pytest.raises(BadInput) as caught:
        read_stack(clients, contract.DEFAULT_STACK_NAME)
    assert caught.value.exit_code == 2
    assert caught.value.next_step.startswith("Run `annex-admin setup --region us-east-1` to set it up")


# --- the enforcer's sweeps, as check-setup reads them from its metrics -------------------------


def sweep_item(report):
    (item,) = [i for i in report.items if i.name == "enforcer sweeps"]
    return item


def sweep_now(clients, stack, moment, **extra):
    return enforcer.sweep(
        clients.ec2, clients.s3, bucket=stack.bucket, prices=PriceBook({}), caps=lambda _project: None, now=moment, log=lambda _l: None,
        stack=stack_scope(stack), cloudwatch=clients.client("cloudwatch"), **extra,
    )


def test_check_setup_reports_the_last_sweep_and_fails_when_it_left_an_instance_alive(clients):
    """A real sweep publishes to the emulator's CloudWatch; check-setup reads it back with
    GetMetricData. The instance that cannot be ended is protected, and the emulator refuses the
    call that would clear it (the request names an instance that does not exist), as AWS refuses
    a role without the permission."""
    deploy_stack(clients)
    stack = read_stack(clients, contract.DEFAULT_STACK_NAME)
    fresh = sweep_item(check_setup(clients, stack.name, datetime.now(timezone.utc)))
    assert fresh.ok and fresh.detail.startswith("none yet")
    # Later: every sweep below is after the stack was made (an earlier one would be another stack's).
    now = datetime.now(timezone.utc) + timedelta(minutes=10)

    sweep_now(clients, stack, now - timedelta(minutes=2))
    report = check_setup(clients, stack.name, now)
    assert report.ok, [i for i in report.items if not i.ok]
    assert sweep_item(report).detail.endswith("2 min ago")

    (stuck,) = clients.ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": contract.TAG_ANNEX_NAME, "Value": "late"},
            {"Key": contract.TAG_EXPIRY, "Value": "2020-01-01T00:00:00Z"}]}],
    )["Instances"]
    clients.ec2.modify_instance_attribute(InstanceId=stuck["InstanceId"], DisableApiTermination={"Value": True})

    def refuse(params, **_):
        params["InstanceId"] = "i-00000000000000000"

    clients.ec2.meta.events.register("provide-client-params.ec2.ModifyInstanceAttribute", refuse)
    try:
        left = sweep_now(clients, stack, now - timedelta(minutes=1))
    finally:
        clients.ec2.meta.events.unregister("provide-client-params.ec2.ModifyInstanceAttribute", refuse)
    assert [c[0] for c in left.could_not_end] == [stuck["InstanceId"]]
    report = check_setup(clients, stack.name, now)
    assert not report.ok and [i.name for i in report.items if not i.ok] == ["enforcer sweeps"]
    assert "1 min ago, left 1 instance(s) it could not end" in sweep_item(report).detail

    # The next sweep ends it: the record is clean again.
    ended = sweep_now(clients, stack, now)
    assert [t[0] for t in ended.terminated] == [stuck["InstanceId"]]
    assert check_setup(clients, stack.name, now).ok


def test_check_setup_fails_when_the_last_sweep_is_older_than_fifteen_minutes(clients):
    deploy_stack(clients)
    stack = read_stack(clients, contract.DEFAULT_STACK_NAME)
    now = datetime.now(timezone.utc) + timedelta(minutes=20)
    sweep_now(clients, stack, now - timedelta(minutes=16))
    item = sweep_item(check_setup(clients, stack.name, now))
    assert not item.ok and "16 min ago: over 15 minutes" in item.detail
    # Within the limit it passes.
    assert sweep_item(check_setup(clients, stack.name, now - timedelta(minutes=2))).ok


def test_check_setup_fails_without_any_sweep_once_the_stack_is_older_than_fifteen_minutes(clients):
    deploy_stack(clients)
    later = datetime.now(timezone.utc) + timedelta(minutes=20)
    item = sweep_item(check_setup(clients, contract.DEFAULT_STACK_NAME, later))
    assert not item.ok and item.detail.startswith("no sweep in the last 3 h")


def test_notify_email_subscribes_the_address_and_a_later_setup_keeps_it(clients):
    """The emulator's CloudFormation skips AWS::SNS::Subscription (the template tests assert the
    resource); what it keeps is the template, which is where setup reads the address back from."""
    request = StackSettings(region="us-east-1")
    first = deploy(clients, resolve_settings(clients, dataclasses.replace(request, notify_email="admin@example.org"))[0],
                   lambda _l: None)
    assert first.action == "created"
    assert current_notify_email(clients, contract.DEFAULT_STACK_NAME) == "admin@example.org"
    # Setup again without the option: the address stays, nothing changes.
    again = deploy(clients, resolve_settings(clients, request)[0], lambda _l: None)
    assert again.action == "unchanged"
    # A new address replaces it.
    changed = deploy(clients, resolve_settings(clients, dataclasses.replace(request, notify_email="ops@example.org"))[0],
                     lambda _l: None)
    assert changed.action == "updated"
    assert current_notify_email(clients, contract.DEFAULT_STACK_NAME) == "ops@example.org"
    item = next(i for i in check_setup(clients, contract.DEFAULT_STACK_NAME).items if i.name == "alarm topic")
    assert item.ok
    # 'none' removes it, as --ssh-cidr none removes the SSH rule; a later setup keeps it removed.
    removed = deploy(clients, resolve_settings(clients, dataclasses.replace(
        request, notify_email=validate_notify_email("none")))[0], lambda _l: None)
    assert removed.action == "updated"
    assert current_notify_email(clients, contract.DEFAULT_STACK_NAME) is None
    assert deploy(clients, resolve_settings(clients, request)[0], lambda _l: None).action == "unchanged"
    assert current_notify_email(clients, contract.DEFAULT_STACK_NAME) is None


@pytest.mark.parametrize("address", ["not-an-address", "a@b", "two@@example.org", "x" * 250 + "@example.org"])
def test_a_malformed_notify_email_is_bad_input(address):
    with pytest.raises(BadInput):
        validate_notify_email(address)


# --- Lambda concurrency: the enforcer's reservation, the broker's ceiling -------------------------------


def _reserved(clients, function: str) -> int | None:
    return clients.awslambda.get_function_concurrency(FunctionName=function).get("ReservedConcurrentExecutions")


def test_setup_reserves_the_enforcers_executions_and_caps_the_brokers(clients):
    from annex_admin.concurrency import BROKER_CEILING, ENFORCER_RESERVED

    outputs = deploy_stack(clients).outputs
    assert _reserved(clients, outputs[contract.OUT_ENFORCER_FUNCTION]) == ENFORCER_RESERVED
    assert _reserved(clients, outputs[contract.OUT_BROKER_FUNCTION]) == BROKER_CEILING
    # A second setup gives the stack's own reservations back before deciding: it keeps them.
    settings, plan = resolve_settings(clients, StackSettings(region="us-east-1"))
    assert (settings.enforcer_concurrency, settings.broker_concurrency, plan.note) == (ENFORCER_RESERVED, BROKER_CEILING, "")
    item = {i.name: i for i in check_setup(clients, contract.DEFAULT_STACK_NAME).items}["concurrency"]
    assert item.ok and not item.warning and f"enforcer {ENFORCER_RESERVED} reserved" in item.detail


@pytest.fixture
def small_account(tmp_path_factory):
    """An emulator whose account has a Lambda concurrency of 10, as new AWS accounts often do."""
    import os

    from annex_sandbox.patches import LAMBDA_CONCURRENCY_ENV
    from annex_common.aws import make_clients
    from tests import emulator as emu

    server = emu.start_emulator(tmp_path_factory.mktemp("small"), extra_env={LAMBDA_CONCURRENCY_ENV: "10"})
    previous = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = server.url
    try:
        yield make_clients(region=emu.REGION)
    finally:
        os.environ["AWS_ENDPOINT_URL"] = previous
        server.stop()


def test_an_account_that_cannot_reserve_gets_a_stack_without_reservations_and_a_warning(small_account):
    clients = small_account
    settings, plan = resolve_settings(clients, StackSettings(region="us-east-1"))
    assert settings.enforcer_concurrency is None and settings.broker_concurrency is None
    assert "nothing reserved" in plan.note and "concurrency is 10" in plan.note
    deploy(clients, settings, lambda _line: None)
    outputs = read_stack(clients, contract.DEFAULT_STACK_NAME).outputs
    assert _reserved(clients, outputs[contract.OUT_ENFORCER_FUNCTION]) is None
    item = {i.name: i for i in check_setup(clients, contract.DEFAULT_STACK_NAME).items}["concurrency"]
    assert item.ok and item.warning and "no reserved executions" in item.detail and "AWS Support" in item.detail


def test_a_new_image_reaches_the_default_versions_and_every_projects_versions(clients, tmp_path):
    """CloudFormation (on AWS as in the emulator) updates a launch template by making a new
    version and leaves the default where it was; setup makes the stack's new version the default,
    so the projects' versions, made from the default, take the new image too."""
    import dataclasses

    from annex_cloud.registry import Registry
    from tests.flows import PROJECT, issue_bundle

    deploy_stack(clients)
    issue_bundle(clients, tmp_path / "b.toml")
    settings, _ = resolve_settings(clients, StackSettings(region="us-east-1"))
    lines: list[str] = []
    result = deploy(clients, dataclasses.replace(settings, image_id="ami-0fedcba9876543210"), lines.append)
    assert result.action == "updated" and result.projects_followed == [PROJECT]
    stack = read_stack(clients, contract.DEFAULT_STACK_NAME)
    ec2 = clients.ec2
    defaults = {}
    for template_id in stack.launch_templates.values():
        default = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=["$Default"])
        data = default["LaunchTemplateVersions"][0]
        # Version 1 was the stack's, 2 the project's (issue-credentials), 3 the change set's.
        assert data["VersionNumber"] == 3 and data["LaunchTemplateData"]["ImageId"] == "ami-0fedcba9876543210"
        assert "IamInstanceProfile" not in data["LaunchTemplateData"]  # never a project's version
        defaults[template_id] = data["VersionNumber"]
    record = Registry(clients.client("dynamodb"), stack.output(contract.OUT_REGISTRY_TABLE)).node(PROJECT)
    for version in record.templates.values():
        data = ec2.describe_launch_template_versions(
            LaunchTemplateId=version.template_id, Versions=[str(version.version)])["LaunchTemplateVersions"][0]
        assert version.source_version == defaults[version.template_id]
        assert data["LaunchTemplateData"]["ImageId"] == "ami-0fedcba9876543210"
        assert data["LaunchTemplateData"]["IamInstanceProfile"]["Arn"] == record.profile_arn
    assert sum("is now the default" in line for line in lines) == len(stack.launch_templates)
    # A setup that changes nothing moves no default (a project's newer version never becomes one).
    again = deploy(clients, dataclasses.replace(settings, image_id="ami-0fedcba9876543210"), lines.append)
    assert again.action == "unchanged"
    for template_id in stack.launch_templates.values():
        described = ec2.describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"][0]
        assert described["DefaultVersionNumber"] == 3 and described["LatestVersionNumber"] == 4
