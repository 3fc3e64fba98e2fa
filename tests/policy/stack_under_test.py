"""The region stack as the tests see it: built by templates.stack, deployed to the emulator,
and read back (outputs, and the IAM documents with every Ref resolved)."""

from __future__ import annotations

from dataclasses import dataclass
import ast
import json
from typing import Any

import boto3

from templates import contract
from templates.settings import StackSettings
from templates.stack import build_template

REGION = "us-east-1"
STACK_NAME = contract.DEFAULT_STACK_NAME
SETTINGS = StackSettings(
    region=REGION,
    stack_name=STACK_NAME,
    image_id="ami-0123456789abcdef0",
    availability_zones=("us-east-1a", "us-east-1b"),
    code_key="functions/annex_cloud-0123456789abcdef0123.zip",
)


@dataclass
class DeployedStack:
    stack_id: str
    account: str
    outputs: dict[str, str]
    scientist_policy: dict[str, Any]
    instance_role_policies: list[dict[str, Any]]
    enforcer_role_policies: list[dict[str, Any]]
    enforcer_role_arn: str

    @property
    def bucket(self) -> str:
        return self.outputs[contract.OUT_BUCKET]

    @property
    def launch_templates(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.outputs[contract.OUT_LAUNCH_TEMPLATES].split(","))
        return {itype: lt_id for itype, lt_id in pairs}

    @property
    def subnets(self) -> list[str]:
        return self.outputs[contract.OUT_SUBNETS].split(",")

    def ec2_arn(self, resource: str) -> str:
        return f"arn:aws:ec2:{REGION}:{self.account}:{resource}"

    def launch_template_arn(self, instance_type: str = "m7i.large") -> str:
        return self.ec2_arn("launch-template/" + self.launch_templates[instance_type])


def _role_policies(iam: Any, role_name: str) -> list[dict[str, Any]]:
    names = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    return [{"name": name, "policy": _document(iam.get_role_policy(RoleName=role_name, PolicyName=name))} for name in names]


def _document(response: dict[str, Any]) -> dict[str, Any]:
    # Managed policy versions come back decoded. Inline role policies created through
    # CloudFormation come back from the emulator as the text of a Python dict (its own quirk):
    # literal_eval reads that, and JSON text too, without running anything.
    document = response["PolicyDocument"]
    if isinstance(document, dict):
        return document
    try:
        return json.loads(document)
    except json.JSONDecodeError:
        parsed = ast.literal_eval(document)
        assert isinstance(parsed, dict), "a policy document is a JSON object"
        return parsed


def deploy(session: boto3.session.Session, settings: StackSettings = SETTINGS) -> DeployedStack:
    """Create the stack from the real template and read back what AWS would evaluate."""
    cfn = session.client("cloudformation", region_name=REGION)
    cfn.create_stack(
        StackName=settings.stack_name,
        TemplateBody=build_template(settings).to_json(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    cfn.get_waiter("stack_create_complete").wait(
        StackName=settings.stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    stack = cfn.describe_stacks(StackName=settings.stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    iam = session.client("iam", region_name=REGION)
    policy_arn = outputs[contract.OUT_SCIENTIST_POLICY]
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    scientist = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]
    scientist = _document({"PolicyDocument": scientist["Document"]})
    lam = session.client("lambda", region_name=REGION)
    enforcer_role_arn = lam.get_function(FunctionName=outputs[contract.OUT_ENFORCER_FUNCTION])[
        "Configuration"
    ]["Role"]
    return DeployedStack(
        stack_id=stack["StackId"],
        account=policy_arn.split(":")[4],
        outputs=outputs,
        scientist_policy=scientist,
        instance_role_policies=_role_policies(iam, outputs[contract.OUT_INSTANCE_ROLE].rsplit("/", 1)[1]),
        enforcer_role_policies=_role_policies(iam, enforcer_role_arn.rsplit("/", 1)[1]),
        enforcer_role_arn=enforcer_role_arn,
    )
