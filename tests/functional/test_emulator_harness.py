"""The harness itself: the emulator answers, resets between tests, and can enforce IAM."""

import botocore.exceptions
import pytest

from tests import emulator as emu


def test_resets_between_tests_first(clients):
    clients.s3.create_bucket(Bucket="harness-check")
    assert [b["Name"] for b in clients.s3.list_buckets()["Buckets"]] == ["harness-check"]


def test_resets_between_tests_second(clients):
    assert clients.s3.list_buckets()["Buckets"] == []


def test_iam_enforcement_refuses_unknown_keys(aws, clients):
    aws.enforce_iam(True)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        clients.s3.list_buckets()
    assert caught.value.response["Error"]["Code"] in {"InvalidAccessKeyId", "AccessDenied"}


def test_endpoint_is_loopback(aws):
    import os

    assert os.environ["AWS_ENDPOINT_URL"] == aws.url
    assert os.environ["AWS_ACCESS_KEY_ID"] == emu.FAKE_KEY_ID


def test_a_fleet_moves_on_to_the_next_subnet_when_one_is_full(clients):
    """EC2 takes a fleet's instances from its next pool when a subnet has no free address; moto
    put them all in the first override's subnet (an HTTP 500 once it was full)."""
    ec2 = clients.ec2
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/24")["Vpc"]["VpcId"]
    small = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.0.{n}/28")["Subnet"]["SubnetId"] for n in (0, 16)]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = ec2.create_launch_template(LaunchTemplateName="spill", LaunchTemplateData={"ImageId": image})
    template_id = template["LaunchTemplate"]["LaunchTemplateId"]

    def fleet(count: int) -> dict:
        return ec2.create_fleet(
            Type="instant",
            LaunchTemplateConfigs=[{
                "LaunchTemplateSpecification": {"LaunchTemplateId": template_id, "Version": "$Default"},
                "Overrides": [{"InstanceType": "m5.large", "SubnetId": s, "Priority": float(i)}
                              for i, s in enumerate(small)],
            }],
            TargetCapacitySpecification={"TotalTargetCapacity": count, "DefaultTargetCapacityType": "on-demand"},
        )

    fleet(15)  # a /28 has 11 free addresses: 11 in the first subnet, 4 in the second
    placed = [i["SubnetId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert sorted(placed.count(s) for s in small) == [4, 11]
    assert placed.count(small[0]) == 11


def test_listing_instance_profiles_and_roles_honours_the_path_prefix(clients):
    """IAM lists only what lies under PathPrefix; moto 5.2.6 answered every instance profile, so
    one stack's teardown, listing its node path, removed other stacks' profiles."""
    iam = clients.iam
    for name, path in (("mine", "/condor-annex/nodes/A/us-east-1/"), ("other", "/condor-annex/nodes/A/us-west-2/"),
                       ("longer", "/condor-annex/nodes/AB/us-east-1/"), ("root", "/")):
        iam.create_instance_profile(InstanceProfileName=name, Path=path)
        iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument="{}")
    prefix = "/condor-annex/nodes/A/us-east-1/"
    profiles = [p["InstanceProfileName"] for page in iam.get_paginator("list_instance_profiles").paginate(PathPrefix=prefix)
                for p in page["InstanceProfiles"]]
    roles = [r["RoleName"] for page in iam.get_paginator("list_roles").paginate(PathPrefix=prefix) for r in page["Roles"]]
    assert profiles == ["mine"]
    assert roles == ["mine"]
    assert sorted(p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]) == \
        ["longer", "mine", "other", "root"]
