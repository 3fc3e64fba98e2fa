"""The deployed policies under the emulator's IAM enforcement, with only the bundle's keys.

The stack is set up and the scientist's credentials issued as `annex-admin` does it; then IAM
enforcement is switched on and every call below is signed with the bundle's keys (or, inside the
broker, with the broker role's, which the emulator assumes for the function as Lambda would).

What the emulator can prove, and what it cannot:
- it refuses every action no statement allows, so the scientist's refusals here are real: her
  policy grants lambda:InvokeFunction on the broker and nothing else;
- it counts every condition as true and checks EC2 requests against resource "*" only. The EC2
  refusals of her keys therefore come from her having no EC2 grant at all (which is the point),
  not from any condition; and the broker's conditional guards (its templates, types, subnets,
  required tags, tag-on-create, no template overrides, annex-only terminate) cannot be seen
  here: its Denies name typed ARNs the emulator never matches against "*". Those are proven by
  the IAM policy simulator in test_simulator_matrix.py;
- it counts a Deny with NotResource as a grant, so the broker's CreateFleet would pass here even
  without its Allow (checked by hand: with both removed the launch fails, with only the Allow
  removed it passes); the fleet grant, like every conditional rule, is the simulator's to prove;
- it does not evaluate iam:PassRole: calls that need PassRole are refused at their own action;
- it answers Lambda's refusals (a JSON API) in XML, so botocore may report the code as "403".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import botocore.exceptions
import pytest

from annex_common.aws import AwsClients, make_clients
from annex_common.bundle import Bundle
from annex_cloud.broker.ops import OPERATIONS
from annex_user.broker_client import Broker
from annex_user.context import open_context
from annex_user.launch import LaunchRequest, execute_launch, plan_launch
from annex_user.manage import extend_lease, extend_params, terminate_annex
from annex_cloud.pools import parse_pool, pool_parameter, pools_path
from annex_cloud.registry import Registry
from templates import contract
from tests import emulator as emu
from tests import flows

REGION = emu.REGION


@dataclass
class World:
    emulator: emu.Emulator
    admin: AwsClients  # the suite's fake administrator keys: refused while enforcement is on
    outputs: dict[str, str]
    bundle: Bundle
    bundle_path: Path
    pool: flows.TestPool
    scientist: AwsClients  # the bundle's keys
    broker_role_arn: str  # read by the administrator: her keys cannot read it
    node_profile_arn: str  # her project's, as issue-credentials made it

    def client(self, service: str) -> Any:
        return self.scientist.client(service)

    @property
    def broker_name(self) -> str:
        return self.outputs[contract.OUT_BROKER_FUNCTION]

    @property
    def launch_template(self) -> str:
        return self.outputs[contract.OUT_LAUNCH_TEMPLATES].split(",")[0].split("=", 1)[1]

    @contextlib.contextmanager
    def as_administrator(self) -> Iterator[AwsClients]:
        """Enforcement off for a look (or a setup step) with the administrator's keys."""
        self.emulator.enforce_iam(False)
        try:
            yield self.admin
        finally:
            self.emulator.enforce_iam(True)


@pytest.fixture(scope="module")
def world(emulator: emu.Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    emulator.reset()
    folder = tmp_path_factory.mktemp("enforced")
    admin = make_clients(region=REGION)
    outputs = flows.deploy_stack(admin).outputs
    bundle = flows.issue_bundle(admin, folder / "bundle.toml")
    scientist = make_clients(
        region=bundle.region, access_key_id=bundle.aws_access_key_id, secret_access_key=bundle.aws_secret_access_key
    )
    broker_role = admin.awslambda.get_function(FunctionName=outputs[contract.OUT_BROKER_FUNCTION])["Configuration"]["Role"]
    node = Registry(admin.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE]).node(bundle.project_id)
    assert node is not None
    emulator.enforce_iam(True)
    try:
        yield World(emulator, admin, outputs, bundle, folder / "bundle.toml", flows.write_pool(folder / "pool"), scientist,
                    broker_role, node.profile_arn)
    finally:
        emulator.enforce_iam(False)


def annex_tags(bundle: Bundle, annex: str) -> list[dict[str, str]]:
    tags = {
        contract.TAG_ANNEX_NAME: annex,
        contract.TAG_PROJECT: bundle.project_id,
        contract.TAG_EXPIRY: "2026-12-18T23:59:00Z",
        contract.TAG_IDLE: "900",
        contract.TAG_OWNER: bundle.user,
    }
    return [{"Key": k, "Value": v} for k, v in tags.items()]


# A refusal by policy: not an unknown key or a bad signature (those would prove nothing here).
POLICY_REFUSALS = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


def refused_by_policy(exc: botocore.exceptions.ClientError) -> str:
    """The refusal's code. The emulator answers JSON-protocol services (lambda, events,
    dynamodb) with an XML error body botocore leaves unparsed: its code is then "403" and the
    real code is inside the message."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if code == "403" and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
        code = next((c for c in POLICY_REFUSALS if f"<Code>{c}</Code>" in message), code)
    assert code in POLICY_REFUSALS, exc.response
    return message


# --- the one thing her keys may do: ask the broker -----------------------------------------------

def test_her_keys_may_ask_the_broker(world: World) -> None:
    """The first test of the module: nothing of her project runs yet."""
    answer = Broker(world.scientist, world.broker_name, world.bundle.region).ask("status", {}, "could not ask for status")
    assert answer["annexes"] == [] and answer["totals"]["live_instances"] == 0
    assert answer["caps"]["max_instances"] == 32


# --- everything else her keys try is refused -------------------------------------------------------

@pytest.fixture(scope="module")
def her_instance(world: World) -> str:
    """An annex instance of her project, made by the administrator, for the direct calls to aim at."""
    with world.as_administrator() as admin:
        return admin.ec2.run_instances(
            MinCount=1, MaxCount=1,
            LaunchTemplate={"LaunchTemplateId": world.launch_template, "Version": "$Default"},
            TagSpecifications=[{"ResourceType": "instance", "Tags": annex_tags(world.bundle, "target")}],
        )["Instances"][0]["InstanceId"]


def _fleet(w: World, _i: str) -> Any:
    return w.client("ec2").create_fleet(
        Type="instant",
        TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "on-demand"},
        LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateId": w.launch_template,
                                                                "Version": "$Default"}}],
        TagSpecifications=[{"ResourceType": "instance", "Tags": annex_tags(w.bundle, "mine")}],
    )


def _own_key(w: World, name: str) -> str:
    return contract.annex_prefix(w.bundle.project_id, "target") + name


Call = Callable[[World, str], Any]

REFUSED: dict[str, Call] = {
    # EC2: no grant at all (the emulator checks EC2 against "*", so no condition is involved)
    "ec2-run-instances": lambda w, i: w.client("ec2").run_instances(
        MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": w.launch_template, "Version": "$Default"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": annex_tags(w.bundle, "mine")}]),
    "ec2-create-fleet": _fleet,
    "ec2-create-tags-extend-own-lease": lambda w, i: w.client("ec2").create_tags(
        Resources=[i], Tags=[{"Key": contract.TAG_EXPIRY, "Value": "2030-01-01T00:00:00Z"}]),
    "ec2-delete-tags-expiry": lambda w, i: w.client("ec2").delete_tags(Resources=[i], Tags=[{"Key": contract.TAG_EXPIRY}]),
    "ec2-terminate-instances": lambda w, i: w.client("ec2").terminate_instances(InstanceIds=[i]),
    "ec2-termination-protection": lambda w, i: w.client("ec2").modify_instance_attribute(
        InstanceId=i, DisableApiTermination={"Value": True}),
    "ec2-stop-instances": lambda w, i: w.client("ec2").stop_instances(InstanceIds=[i]),
    "ec2-request-spot-instances": lambda w, i: w.client("ec2").request_spot_instances(
        InstanceCount=1, Type="persistent", LaunchSpecification={"ImageId": w.outputs[contract.OUT_IMAGE],
                                                                "InstanceType": "m7i.large"}),
    "ec2-new-launch-template-version": lambda w, i: w.client("ec2").create_launch_template_version(
        LaunchTemplateId=w.launch_template, LaunchTemplateData={"InstanceType": "p5.48xlarge"}),
    "ec2-describe-instances": lambda w, i: w.client("ec2").describe_instances(),
    # calls that would pass a role: refused at their own action (the emulator does not judge PassRole)
    "pass-role-instance-profile-to-her-instance": lambda w, i: w.client("ec2").associate_iam_instance_profile(
        InstanceId=i, IamInstanceProfile={"Arn": w.node_profile_arn}),
    "pass-role-broker-role-to-her-function": lambda w, i: w.client("lambda").create_function(
        FunctionName="my-broker", Runtime="python3.12", Handler="annex_cloud.broker.handler",
        Role=w.broker_role_arn, Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18}),
    # S3: the bucket holds every annex's secrets
    "s3-put-own-annex-settings": lambda w, i: w.client("s3").put_object(
        Bucket=w.outputs[contract.OUT_BUCKET], Key=_own_key(w, contract.NODE_ENV_OBJECT), Body=b"ANNEX_OWNER=*\n"),
    "s3-get-own-annex-settings": lambda w, i: w.client("s3").get_object(
        Bucket=w.outputs[contract.OUT_BUCKET], Key=_own_key(w, contract.NODE_ENV_OBJECT)),
    "s3-list-bucket": lambda w, i: w.client("s3").list_objects_v2(Bucket=w.outputs[contract.OUT_BUCKET]),
    # the administrator's record
    "dynamodb-raise-own-caps": lambda w, i: w.client("dynamodb").put_item(
        TableName=w.outputs[contract.OUT_REGISTRY_TABLE],
        Item={"pk": {"S": f"caps#{w.bundle.project_id}"}, "sk": {"S": "caps"}, "max_instances": {"N": "100000"},
              "max_lease_hours": {"N": "8760"}, "max_spend_usd": {"N": "1000000"}}),
    "dynamodb-read-own-caps": lambda w, i: w.client("dynamodb").get_item(
        TableName=w.outputs[contract.OUT_REGISTRY_TABLE],
        Key={"pk": {"S": f"caps#{w.bundle.project_id}"}, "sk": {"S": "caps"}}),
    # the functions, the stack, identity
    "lambda-invoke-enforcer": lambda w, i: w.client("lambda").invoke(
        FunctionName=w.outputs[contract.OUT_ENFORCER_FUNCTION], Payload=b"{}"),
    "lambda-replace-broker-code": lambda w, i: w.client("lambda").update_function_code(
        FunctionName=w.broker_name, ZipFile=b"PK\x05\x06" + b"\x00" * 18),
    "lambda-reconfigure-broker": lambda w, i: w.client("lambda").update_function_configuration(
        FunctionName=w.broker_name, Environment={"Variables": {"ANNEX_LAUNCH_TEMPLATES": "p5.48xlarge=lt-0"}}),
    "sts-assume-broker-role": lambda w, i: w.client("sts").assume_role(
        RoleArn=w.broker_role_arn, RoleSessionName="needs-moore"),
    "iam-attach-admin-policy-to-self": lambda w, i: w.client("iam").attach_user_policy(
        UserName=w.bundle.user, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"),
    "iam-rewrite-scientist-policy": lambda w, i: w.client("iam").create_policy_version(
        PolicyArn=w.outputs[contract.OUT_SCIENTIST_POLICY], SetAsDefault=True,
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'),
    "cloudformation-delete-stack": lambda w, i: w.client("cloudformation").delete_stack(StackName=w.bundle.stack_name),
    "events-disable-enforcer-schedule": lambda w, i: w.client("events").disable_rule(
        Name=w.outputs[contract.OUT_ENFORCER_RULE]),
    # the pool's secret: kept by the stack for the broker alone
    "ssm-read-the-stacks-pool": lambda w, i: w.client("ssm").get_parameter(
        Name=pool_parameter(w.bundle.stack_name), WithDecryption=True),
    "ssm-list-the-pools": lambda w, i: w.client("ssm").get_parameters_by_path(
        Path=pools_path(w.bundle.stack_name), Recursive=True, WithDecryption=True),
    "kms-decrypt-with-the-pool-key": lambda w, i: w.client("kms").decrypt(
        KeyId=w.outputs[contract.OUT_POOL_KEY], CiphertextBlob=b"\x01" * 64),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_her_keys_are_refused(world: World, her_instance: str, name: str) -> None:
    call = REFUSED[name]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(world, her_instance)
    message = refused_by_policy(caught.value)
    # Her key was known and judged (S3 names no one in its refusal).
    assert f"/{world.bundle.user} is not authorized to perform" in message or message == "Access Denied", message


def test_refused_calls_changed_nothing(world: World, her_instance: str) -> None:
    with world.as_administrator() as admin:
        described = admin.ec2.describe_instances(InstanceIds=[her_instance])["Reservations"][0]["Instances"][0]
        protection = admin.ec2.describe_instance_attribute(InstanceId=her_instance, Attribute="disableApiTermination")
        caps = admin.client("dynamodb").get_item(
            TableName=world.outputs[contract.OUT_REGISTRY_TABLE],
            Key={"pk": {"S": f"caps#{world.bundle.project_id}"}, "sk": {"S": "caps"}}, ConsistentRead=True)["Item"]
        live = [i for page in admin.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
            for r in page["Reservations"] for i in r["Instances"]]
        broker = admin.awslambda.get_function(FunctionName=world.broker_name)["Configuration"]
    assert described["State"]["Name"] == "running"
    assert {t["Key"]: t["Value"] for t in described["Tags"]}[contract.TAG_EXPIRY] == "2026-12-18T23:59:00Z"
    assert protection["DisableApiTermination"]["Value"] is False
    assert caps["max_instances"]["N"] == "32"
    assert [i["InstanceId"] for i in live] == [her_instance]
    assert "ANNEX_LAUNCH_TEMPLATES" in broker["Environment"]["Variables"]
    assert not broker["Environment"]["Variables"]["ANNEX_LAUNCH_TEMPLATES"].startswith("p5")


# --- the pool's secret: the broker's role reads it, no other role of the stack ---------------------

def _session_of(admin: AwsClients, role_arn: str, name: str) -> AwsClients:
    """A session of the role, as its trusted service (Lambda, EC2) would get one."""
    import boto3

    credentials = admin.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=name)["Credentials"]
    return AwsClients(boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"], region_name=REGION))


def test_only_the_brokers_role_reads_the_recorded_pool(world: World) -> None:
    """Her keys are refused above; here a node of her project and the enforcer are refused the
    stack's pool, the broker's role reads it, and is refused a parameter outside the pools' path.
    (The emulator does not decrypt through KMS: that the pool key serves only principals IAM
    grants kms:Decrypt, the broker's role alone, is the simulator's to prove.)"""
    name = pool_parameter(world.bundle.stack_name)
    with world.as_administrator() as admin:
        enforcer_role = admin.awslambda.get_function(
            FunctionName=world.outputs[contract.OUT_ENFORCER_FUNCTION])["Configuration"]["Role"]
        node = Registry(admin.client("dynamodb"), world.outputs[contract.OUT_REGISTRY_TABLE]).node(world.bundle.project_id)
        assert node is not None
        sessions = {who: _session_of(admin, arn, f"i-{who}") for who, arn in
                    (("broker", world.broker_role_arn), ("enforcer", enforcer_role), ("node", node.role_arn))}
    for who in ("enforcer", "node"):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            sessions[who].client("ssm").get_parameter(Name=name, WithDecryption=True)
        refused_by_policy(caught.value)
    recorded = parse_pool(sessions["broker"].client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    assert recorded.key_name == "ANNEX" and recorded.secret == flows.ANNEX_KEY_FILE
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sessions["broker"].client("ssm").get_parameter(Name="/payroll/database-password", WithDecryption=True)
    refused_by_policy(caught.value)


# --- the broker, as its role, has what the whole flow needs ----------------------------------------

def test_the_broker_launches_extends_and_ends_under_enforcement(world: World) -> None:
    """condor_annex's own functions, with the bundle: every AWS call that acts is the broker's,
    made with its role's keys (CreateFleet, tags at creation, PassRole, S3 writes, the registry's
    lock and request records, CreateTags of the expiry, TerminateInstances, DeleteObjects).
    Every operation the broker serves is asked here, through Invoke, at least once."""
    ctx = open_context(world.bundle_path)
    asked: list[str] = []
    ask = ctx.broker.ask
    ctx.broker.ask = lambda op, params, what: (asked.append(op), ask(op, params, what))[1]  # type: ignore[method-assign]
    plan = plan_launch(ctx, LaunchRequest(
        project_id=world.bundle.project_id, expiry=ctx.now + timedelta(hours=5), count=3,
        annex_name="enforced",
    ))
    launched = execute_launch(ctx, plan)
    assert len(launched.instance_ids) == 3 and launched.shortfall == 0

    status = ctx.broker.ask("status", {"annex_name": "enforced", "instances": True}, "could not ask for status")
    rows = status["instances"]
    assert status["next_page"] is None and [a["states"] for a in status["annexes"]] == [{"running": 3}]
    assert sorted(r["instance_id"] for r in rows) == sorted(launched.instance_ids)
    assert {(r["project_id"], r["owner"], r["state"]) for r in rows} == {
        (world.bundle.project_id, world.bundle.user, "running")}

    new_end = ctx.now + timedelta(hours=8)
    extended = extend_lease(ctx, extend_params(ctx, "enforced", new_end, False),
                            condor_config=str(world.pool.condor_config))
    assert sorted(extended.instance_ids) == sorted(launched.instance_ids)

    prefix = contract.annex_prefix(world.bundle.project_id, "enforced")
    with world.as_administrator() as admin:
        objects = admin.s3.list_objects_v2(Bucket=world.outputs[contract.OUT_BUCKET], Prefix=prefix)
        instances = [i for r in admin.ec2.describe_instances(InstanceIds=launched.instance_ids)["Reservations"]
                     for i in r["Instances"]]
    assert {o["Key"][len(prefix):] for o in objects.get("Contents", [])} >= {contract.NODE_ENV_OBJECT}
    for described in instances:
        tags = {t["Key"]: t["Value"] for t in described["Tags"]}
        assert tags[contract.TAG_ANNEX_NAME] == "enforced"
        assert tags[contract.TAG_PROJECT] == world.bundle.project_id
        assert tags[contract.TAG_OWNER] == world.bundle.user
        assert tags[contract.TAG_IDLE] == "900"
        assert tags[contract.TAG_EXPIRY] == new_end.strftime(contract.EXPIRY_FORMAT)

    ended = terminate_annex(ctx, "enforced")
    assert sorted(ended.instance_ids) == sorted(launched.instance_ids) and ended.objects_removed >= 2
    with world.as_administrator() as admin:
        objects = admin.s3.list_objects_v2(Bucket=world.outputs[contract.OUT_BUCKET], Prefix=prefix)
        states = {i["State"]["Name"] for r in admin.ec2.describe_instances(InstanceIds=launched.instance_ids)["Reservations"]
                  for i in r["Instances"]}
    assert objects.get("KeyCount") == 0
    assert states <= {"shutting-down", "terminated"}
    assert set(asked) == set(OPERATIONS)
