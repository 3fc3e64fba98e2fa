"""`annex-admin setup` / `check-setup` against the emulator, through the core functions."""

from __future__ import annotations

import botocore.exceptions
import pytest

from annex_admin.check import check_setup
from annex_admin.deploy import deploy, resolve_settings
from annex_common.errors import BadInput, NotReady
from annex_common.stack import read_stack
from templates import contract
from templates.settings import StackSettings
from tests.flows import deploy_stack


def test_setup_creates_the_stack_with_every_output(clients):
    lines: list[str] = []
    settings = resolve_settings(clients, StackSettings(region="us-east-1"))
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
    # The emulator applies the change set to the resources but does not refresh the stack's
    # outputs after a change set (it does after UpdateStack), so the resources are the evidence.
    assert names == {"HTCondorAnnex-m7i-large", "HTCondorAnnex-c6i-large"}


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


def test_reading_a_missing_stack_says_how_to_recover(clients):
    with pytest.raises(NotReady) as caught:
        read_stack(clients, contract.DEFAULT_STACK_NAME)
    assert "annex-admin setup" in caught.value.next_step
