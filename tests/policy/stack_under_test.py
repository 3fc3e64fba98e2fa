"""The region stack as the tests see it: built by templates.stack, deployed to the emulator,
with two projects' credentials issued and one annex launched through the broker for each, and
read back (outputs, resource ARNs, and the IAM documents with every Ref resolved).

Nothing here is a constant copied from the template: the scientists' managed policy, the roles'
inline policies (the broker's, the enforcer's, each project's node role as issue-credentials made
it), the functions' and the registry table's ARNs, and every object and record of each project
come from what the emulator stored.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from annex_admin.artifact import build_function_zip
from annex_admin.credentials import CapsChange, IssueRequest, issue_credentials
from annex_admin.deploy import publish_code
from annex_common.aws import AwsClients
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
)


@dataclass(frozen=True)
class FunctionUnderTest:
    name: str
    arn: str
    role_arn: str
    role_policies: list[dict[str, Any]]  # [{"name", "policy"}], the role's inline policies

    @property
    def role_name(self) -> str:
        return self.role_arn.rsplit("/", 1)[1]

    def session_arn(self, account: str) -> str:
        """The caller identity inside the function: Lambda names the session after it."""
        return f"arn:aws:sts::{account}:assumed-role/{self.role_name}/{self.name}"


@dataclass(frozen=True)
class ProjectUnderTest:
    """One project as issue-credentials and a launch left it."""

    project_id: str
    user: str
    node_role_arn: str
    node_profile_arn: str
    node_role_policies: list[dict[str, Any]]
    objects: list[str]  # every key of the project in the stack's bucket
    items: list[tuple[str, str]]  # every (pk, sk) of the project in the registry


@dataclass
class DeployedStack:
    stack_id: str
    account: str
    outputs: dict[str, str]
    scientist_policy: dict[str, Any]
    projects: dict[str, ProjectUnderTest]
    broker: FunctionUnderTest
    enforcer: FunctionUnderTest
    table_arn: str
    pool_key_policy: dict[str, Any] = dataclasses.field(default_factory=dict)  # the pools' KMS key's own policy

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

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{REGION}:{self.account}:function:{name}"

    def role_arn(self, name: str) -> str:
        return f"arn:aws:iam::{self.account}:role/{name}"


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


def _function(session: boto3.session.Session, iam: Any, name: str) -> FunctionUnderTest:
    config = session.client("lambda", region_name=REGION).get_function(FunctionName=name)["Configuration"]
    role_arn = config["Role"]
    return FunctionUnderTest(
        name=config["FunctionName"],
        arn=config["FunctionArn"],
        role_arn=role_arn,
        role_policies=_role_policies(iam, role_arn.rsplit("/", 1)[1]),
    )


# Two projects, so that one's nodes can be asked for everything of the other's.
PROJECTS = {"ProjA": "needsmoore", "ProjB": "labmate"}


def _launch_one_annex(outputs: dict[str, str], bundle_path: Path) -> None:
    """One annex of the project, launched as condor_annex does it: an Invoke of the broker signed with
    the project's bundle, the broker acting as its own role."""
    import uuid
    from datetime import datetime, timedelta, timezone

    from annex_common.aws import make_clients
    from annex_common.bundle import load_bundle
    from annex_user.broker_client import Broker

    bundle = load_bundle(bundle_path)
    scientist = make_clients(region=REGION, access_key_id=bundle.aws_access_key_id,
                             secret_access_key=bundle.aws_secret_access_key)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    params = {
        "annex_name": f"{bundle.project_id.lower()}-annex-1", "count": 1, "idle_minutes": 15, "spot": False,
        "request_id": uuid.uuid4().hex, "expiry": (now + timedelta(hours=5)).strftime(contract.EXPIRY_FORMAT),
        "job_owner": bundle.user,
    }
    broker = Broker(scientist, outputs[contract.OUT_BROKER_FUNCTION], REGION, bundle.broker_arn)
    answer = broker.ask("launch", params, "could not launch")
    assert answer["instance_ids"]


def _project(clients: AwsClients, outputs: dict[str, str], project_id: str, user: str) -> ProjectUnderTest:
    from annex_cloud.registry import Registry

    iam = clients.iam
    node = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE]).node(project_id)
    assert node is not None
    keys = [
        o["Key"] for o in clients.s3.list_objects_v2(
            Bucket=outputs[contract.OUT_BUCKET], Prefix=f"{contract.ANNEX_PREFIX}/{project_id}/"
        ).get("Contents", [])
    ]
    items = [
        (item["pk"]["S"], item["sk"]["S"])
        for item in clients.client("dynamodb").scan(TableName=outputs[contract.OUT_REGISTRY_TABLE])["Items"]
        if item["pk"]["S"] in (f"project#{project_id}", f"caps#{project_id}", f"node#{project_id}", f"user#{user}")
    ]
    return ProjectUnderTest(
        project_id, user, node.role_arn, node.profile_arn,
        _role_policies(iam, node.role_arn.rsplit("/", 1)[1]), sorted(keys), sorted(items),
    )


def deploy(session: boto3.session.Session, settings: StackSettings = SETTINGS, workdir: Path | None = None) -> DeployedStack:
    """Create the stack from the real template and read back what AWS would evaluate.

    The functions' zip is published first, as setup does (CloudFormation creates the functions
    from it); nothing here invokes them.
    """
    settings = dataclasses.replace(settings, code_key=build_function_zip().key)
    publish_code(AwsClients(session), settings, lambda _line: None)
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
    # The stack's pool, as annex-admin pool set records it: a password pool, so that each project's
    # annex has the pool password among its objects for the nodes' cases to ask for.
    from tests.flows import record_pool, stack_pool

    record_pool(AwsClients(session), stack_pool("password"), stack_name=settings.stack_name)
    pool_key_policy = json.loads(session.client("kms", region_name=REGION).get_key_policy(
        KeyId=outputs[contract.OUT_POOL_KEY], PolicyName="default")["Policy"])
    iam = session.client("iam", region_name=REGION)
    policy_arn = outputs[contract.OUT_SCIENTIST_POLICY]
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    scientist = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]
    table = session.client("dynamodb", region_name=REGION).describe_table(
        TableName=outputs[contract.OUT_REGISTRY_TABLE]
    )["Table"]
    admin = AwsClients(session)
    folder = Path(tempfile.mkdtemp(prefix="annex-policy-")) if workdir is None else workdir
    for project_id, user in PROJECTS.items():
        change = CapsChange(8, 24, 100.0)
        issue_credentials(admin, IssueRequest(settings.stack_name, project_id, user, folder / f"{user}.toml", change),
                          lambda _question: True)
        _launch_one_annex(outputs, folder / f"{user}.toml")
    return DeployedStack(
        stack_id=stack["StackId"],
        account=policy_arn.split(":")[4],
        outputs=outputs,
        scientist_policy=_document({"PolicyDocument": scientist["Document"]}),
        projects={p: _project(admin, outputs, p, u) for p, u in PROJECTS.items()},
        broker=_function(session, iam, outputs[contract.OUT_BROKER_FUNCTION]),
        enforcer=_function(session, iam, outputs[contract.OUT_ENFORCER_FUNCTION]),
        table_arn=table["TableArn"],
        pool_key_policy=pool_key_policy,
    )
