"""The scientist's managed policy under the emulator's IAM enforcement.

The emulator enforces IAM coarsely (conditions count as true, EC2 and CloudFormation are checked
against resource "*", policy variables are not substituted), so this module proves two things
only: the calls condor_annex makes succeed with the scientist's keys, and the escalations the
emulator can see are refused. The fine-grained semantics are in test_simulator_matrix.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import boto3
import botocore.exceptions
import pytest

from annex_common.aws import ACCESS_DENIED_CODES
from templates import contract
from tests import emulator as emu
from tests.policy.stack_under_test import REGION, STACK_NAME, DeployedStack

USER = "needsmoore"
PROJECT = "ProjA"
ANNEX = "proja-annex-1"
OWN_PREFIX = contract.annex_prefix(PROJECT, ANNEX)


def annex_tags(**overrides: str) -> list[dict[str, str]]:
    tags = {
        contract.TAG_ANNEX_NAME: ANNEX,
        contract.TAG_PROJECT: PROJECT,
        contract.TAG_EXPIRY: "2026-12-18T23:59:00Z",
        contract.TAG_IDLE: "900",
        contract.TAG_OWNER: USER,
    }
    tags.update(overrides)
    return [{"Key": k, "Value": v} for k, v in tags.items()]


@dataclass
class Scientist:
    session: boto3.session.Session
    stack: DeployedStack

    def client(self, service: str) -> Any:
        return self.session.client(service, region_name=REGION)

    def launch_one(self) -> str:
        reservation = self.client("ec2").run_instances(
            MinCount=1,
            MaxCount=1,
            LaunchTemplate={"LaunchTemplateId": self.stack.launch_templates["m7i.large"], "Version": "$Default"},
            SubnetId=self.stack.subnets[0],
            TagSpecifications=[{"ResourceType": "instance", "Tags": annex_tags()}],
        )
        return reservation["Instances"][0]["InstanceId"]


@pytest.fixture(scope="module")
def scientist(emulator: emu.Emulator, deployed: DeployedStack) -> Iterator[Scientist]:
    """An IAM user set up as issue-credentials does it, then enforcement on for the module."""
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName=USER, Path=contract.USER_PATH, Tags=[{"Key": contract.USER_TAG_PROJECT, "Value": PROJECT}])
    iam.create_user(UserName="labmate", Path=contract.USER_PATH, Tags=[{"Key": contract.USER_TAG_PROJECT, "Value": PROJECT}])
    iam.attach_user_policy(UserName=USER, PolicyArn=deployed.outputs[contract.OUT_SCIENTIST_POLICY])
    key = iam.create_access_key(UserName=USER)["AccessKey"]
    session = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=REGION
    )
    emulator.enforce_iam(True)
    try:
        yield Scientist(session=session, stack=deployed)
    finally:
        emulator.enforce_iam(False)


# --- what the client does: each must succeed, and its effect is checked -------------------------

def read_stack_outputs(s: Scientist) -> None:
    stack = s.client("cloudformation").describe_stacks(StackName=STACK_NAME)["Stacks"][0]
    assert {o["OutputKey"] for o in stack["Outputs"]} >= set(contract.REQUIRED_OUTPUTS)


def describe_instances(s: Scientist) -> None:
    instance_id = s.launch_one()
    pages = s.client("ec2").get_paginator("describe_instances").paginate(
        Filters=[{"Name": f"tag:{contract.TAG_PROJECT}", "Values": [PROJECT]}]
    )
    found = {i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]}
    assert instance_id in found


def spot_price_history(s: Scientist) -> None:
    history = s.client("ec2").describe_spot_price_history(InstanceTypes=["m7i.large"], MaxResults=5)
    assert "SpotPriceHistory" in history


def create_instant_fleet(s: Scientist) -> None:
    response = s.client("ec2").create_fleet(
        Type="instant",
        TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "on-demand"},
        LaunchTemplateConfigs=[
            {
                "LaunchTemplateSpecification": {"LaunchTemplateId": lt, "Version": "$Default"},
                "Overrides": [{"InstanceType": itype, "SubnetId": s.stack.subnets[0]}],
            }
            for itype, lt in s.stack.launch_templates.items()
        ],
        TagSpecifications=[{"ResourceType": "instance", "Tags": annex_tags()}],
    )
    assert [i for group in response["Instances"] for i in group["InstanceIds"]]


def run_instances_from_template(s: Scientist) -> None:
    instance_id = s.launch_one()
    described = s.client("ec2").describe_instances(InstanceIds=[instance_id])
    tags = {t["Key"]: t["Value"] for t in described["Reservations"][0]["Instances"][0]["Tags"]}
    assert tags[contract.TAG_PROJECT] == PROJECT and tags[contract.TAG_OWNER] == USER


def extend_expiry_tag(s: Scientist) -> None:
    instance_id = s.launch_one()
    ec2 = s.client("ec2")
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": contract.TAG_EXPIRY, "Value": "2026-12-19T23:59:00Z"}])
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert {t["Key"]: t["Value"] for t in described["Tags"]}[contract.TAG_EXPIRY] == "2026-12-19T23:59:00Z"


def terminate_instances(s: Scientist) -> None:
    instance_id = s.launch_one()
    changes = s.client("ec2").terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]
    assert changes[0]["InstanceId"] == instance_id


def put_and_get_own_configuration(s: Scientist) -> None:
    s3 = s.client("s3")
    s3.put_object(Bucket=s.stack.bucket, Key=OWN_PREFIX + "condor_config", Body=b"USE_SHARED_PORT = True\n",
                  ServerSideEncryption="AES256")
    body = s3.get_object(Bucket=s.stack.bucket, Key=OWN_PREFIX + "condor_config")["Body"].read()
    assert body == b"USE_SHARED_PORT = True\n"


def list_and_delete_own_configuration(s: Scientist) -> None:
    s3 = s.client("s3")
    s3.put_object(Bucket=s.stack.bucket, Key=OWN_PREFIX + "annex.env", Body=b"A=1\n")
    listed = s3.list_objects_v2(Bucket=s.stack.bucket, Prefix=OWN_PREFIX)
    keys = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
    assert {"Key": OWN_PREFIX + "annex.env"} in keys
    s3.delete_objects(Bucket=s.stack.bucket, Delete={"Objects": keys, "Quiet": True})
    assert s3.list_objects_v2(Bucket=s.stack.bucket, Prefix=OWN_PREFIX).get("KeyCount") == 0


CLIENT_CALLS: list[Callable[[Scientist], None]] = [
    read_stack_outputs,
    describe_instances,
    spot_price_history,
    create_instant_fleet,
    run_instances_from_template,
    extend_expiry_tag,
    terminate_instances,
    put_and_get_own_configuration,
    list_and_delete_own_configuration,
]


@pytest.mark.parametrize("call", CLIENT_CALLS, ids=lambda f: f.__name__)
def test_scientist_keys_can_do_what_the_client_needs(scientist: Scientist, call: Callable[[Scientist], None]) -> None:
    call(scientist)


# --- escalations the emulator can see: each must be refused -------------------------------------

ESCALATIONS: dict[str, Callable[[Scientist], Any]] = {
    "iam-create-user": lambda s: s.client("iam").create_user(UserName="mallory"),
    "iam-tag-own-user-with-another-project": lambda s: s.client("iam").tag_user(
        UserName=USER, Tags=[{"Key": contract.USER_TAG_PROJECT, "Value": "ProjB"}]
    ),
    "iam-attach-admin-policy-to-self": lambda s: s.client("iam").attach_user_policy(
        UserName=USER, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"
    ),
    "iam-put-inline-policy-on-self": lambda s: s.client("iam").put_user_policy(
        UserName=USER, PolicyName="more", PolicyDocument='{"Version":"2012-10-17","Statement":[]}'
    ),
    "iam-create-access-key-for-labmate": lambda s: s.client("iam").create_access_key(UserName="labmate"),
    "cloudformation-delete-stack": lambda s: s.client("cloudformation").delete_stack(StackName=STACK_NAME),
    "ec2-delete-expiry-tag": lambda s: s.client("ec2").delete_tags(
        Resources=[s.launch_one()], Tags=[{"Key": contract.TAG_EXPIRY}]
    ),
    "ec2-new-launch-template-version": lambda s: s.client("ec2").create_launch_template_version(
        LaunchTemplateId=s.stack.launch_templates["m7i.large"], LaunchTemplateData={"InstanceType": "p5.48xlarge"}
    ),
    "lambda-replace-enforcer-code": lambda s: s.client("lambda").update_function_code(
        FunctionName=s.stack.outputs[contract.OUT_ENFORCER_FUNCTION], ZipFile=b"PK\x05\x06" + b"\x00" * 18
    ),
    "events-disable-enforcer-schedule": lambda s: s.client("events").disable_rule(
        Name=s.stack.outputs[contract.OUT_ENFORCER_RULE]
    ),
    "s3-write-project-caps": lambda s: s.client("s3").put_object(
        Bucket=s.stack.bucket, Key=contract.caps_key(PROJECT), Body=b'{"max_instances": 100000}'
    ),
    "s3-read-project-caps": lambda s: s.client("s3").get_object(Bucket=s.stack.bucket, Key=contract.caps_key(PROJECT)),
}


@pytest.mark.parametrize("name", list(ESCALATIONS))
def test_scientist_keys_are_refused_escalations(scientist: Scientist, name: str) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        ESCALATIONS[name](scientist)
    assert is_access_denied(caught.value)


def is_access_denied(exc: botocore.exceptions.ClientError) -> bool:
    """The emulator answers JSON-protocol services (lambda, events) with an XML error body that
    botocore leaves unparsed (code "403"); the refusal is then in the status and the message."""
    error = exc.response.get("Error", {})
    if error.get("Code") in ACCESS_DENIED_CODES:
        return True
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 403 and "<Code>AccessDenied</Code>" in error.get("Message", "")
