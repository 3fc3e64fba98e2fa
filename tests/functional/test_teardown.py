"""teardown: refuses while annexes live; with --force leaves nothing the tools made."""

from __future__ import annotations

from datetime import timedelta

import pytest

from annex_admin.teardown import teardown
from annex_common.errors import NotReady
from annex_user.context import open_context
from annex_user.launch import LaunchRequest, execute_launch, plan_launch
from tests.flows import PROJECT, deploy_stack, issue_bundle, write_pool


def launch(bundle_path, pool, count=3, name="t1"):
    ctx = open_context(bundle_path)
    plan = plan_launch(ctx, LaunchRequest(project_id=PROJECT, expiry=ctx.now + timedelta(hours=5), count=count,
                                          annex_name=name))
    return execute_launch(ctx, plan)


def live(clients) -> list[str]:
    return [
        i["InstanceId"]
        for page in clients.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
        for r in page["Reservations"]
        for i in r["Instances"]
    ]


def test_refuses_while_annex_instances_live(clients, tmp_path):
    deploy_stack(clients)
    issue_bundle(clients, tmp_path / "b.toml")
    launch(tmp_path / "b.toml", write_pool(tmp_path / "pool"))
    with pytest.raises(NotReady) as caught:
        teardown(clients, "HTCondorAnnex", force=False, progress=lambda _l: None)
    assert "--force" in caught.value.next_step
    assert len(live(clients)) == 3
    assert clients.cloudformation.describe_stacks(StackName="HTCondorAnnex")["Stacks"]


def test_force_leaves_no_instance_object_user_or_stack(clients, tmp_path):
    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "b.toml")
    launch(tmp_path / "b.toml", write_pool(tmp_path / "pool"))
    # An instance that is not an annex's must survive.
    bystander = clients.ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    lines: list[str] = []
    report = teardown(clients, "HTCondorAnnex", force=True, progress=lines.append)
    assert report.complete, report.not_removed
    assert live(clients) == [bystander]
    assert clients.s3.list_buckets()["Buckets"] == []  # the configuration bucket and the code bucket
    assert clients.client("dynamodb").list_tables()["TableNames"] == []
    assert clients.awslambda.list_functions()["Functions"] == []
    assert clients.iam.list_users()["Users"] == []
    # The project's node role and profile, made by issue-credentials outside the stack.
    assert clients.iam.list_roles(PathPrefix="/condor-annex/")["Roles"] == []
    assert clients.iam.list_instance_profiles()["InstanceProfiles"] == []
    assert any(item.startswith("node role annex-node-") for item in report.removed)
    assert not clients.cloudformation.list_stacks(StackStatusFilter=["CREATE_COMPLETE", "UPDATE_COMPLETE"])["StackSummaries"]
    vpcs = clients.ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [outputs["VpcId"]]}])["Vpcs"]
    assert vpcs == []
    assert any("IAM user" in item for item in report.removed)
    # Running it again finds nothing and says so.
    again = teardown(clients, "HTCondorAnnex", force=True, progress=lines.append)
    assert again.removed == [] and again.complete


def test_teardown_removes_the_stacks_leftovers_and_nothing_else(clients):
    """A lasting fleet from the stack's launch template, an available volume of the stack (tagged
    as its launch templates tag volumes) and a persistent spot request of an annex go with the
    stack, whatever their age; someone else's volume stays."""
    outputs = deploy_stack(clients).outputs
    ec2 = clients.ec2
    lt = outputs["LaunchTemplates"].split(",")[0].split("=", 1)[1]
    zone = outputs["AvailabilityZones"].split(",")[0]
    fleet = ec2.create_fleet(
        Type="maintain",
        LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateId": lt, "Version": "$Default"}}],
        TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "on-demand"},
    )["FleetId"]
    stack_tag = [{"ResourceType": "volume", "Tags": [{"Key": "htcondor:annex:stack", "Value": "HTCondorAnnex"}]}]
    volume = ec2.create_volume(AvailabilityZone=zone, Size=30, TagSpecifications=stack_tag)["VolumeId"]
    other = ec2.create_volume(AvailabilityZone=zone, Size=8)["VolumeId"]
    spot = ec2.request_spot_instances(
        InstanceCount=1, Type="persistent", LaunchSpecification={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
        TagSpecifications=[{"ResourceType": "spot-instances-request",
                            "Tags": [{"Key": "htcondor:AnnexName", "Value": "t1"}]}],
    )["SpotInstanceRequests"][0]["SpotInstanceRequestId"]

    report = teardown(clients, "HTCondorAnnex", force=True, progress=lambda _l: None)
    assert report.complete, report.not_removed
    removed = "\n".join(report.removed)
    assert f"fleet {fleet}" in removed and f"volume {volume}" in removed and f"spot request {spot}" in removed
    states = {f["FleetId"]: f["FleetState"] for f in ec2.describe_fleets()["Fleets"]}
    assert states[fleet].startswith("deleted")
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} >= {other}
    assert volume not in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}


def test_a_revoked_scientist_is_removed_too(clients, tmp_path):
    """revoke-credentials detaches her from the policy; the registry still names her, so teardown finds her."""
    from annex_admin.credentials import revoke_credentials

    deploy_stack(clients)
    issue_bundle(clients, tmp_path / "a.toml")
    issue_bundle(clients, tmp_path / "b.toml", project_id="OtherLab", user="labmate")
    revoke_credentials(clients, "labmate")
    report = teardown(clients, "HTCondorAnnex", force=True, progress=lambda _l: None)
    assert report.complete, report.not_removed
    assert clients.iam.list_users()["Users"] == []
    assert {"IAM user labmate", "IAM user needs-moore"} <= set(report.removed)
