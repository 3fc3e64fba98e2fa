"""Who asks is exact, through a real Invoke with the emulator's IAM enforcement on.

Two projects share a stack: A (needs-moore) and B (bob, one annex running). Every principal that
is not the administrator's record of bob (account, ARN, unique id, not revoked) signs a request to
end B's annex: another account's user named bob, a bob made again, a session of the broker's role
and of B's node role, bob after revocation. Each is refused saying why, and the broker reads and
changes nothing of B: no EC2 or S3 call, no registry write. A proof of bob's own is good for its
one request only: sent with another request it is refused, and sent again with its own it is
answered from the request's record, never carried out twice.

The emulator cannot issue sts:GetSessionToken credentials (FIELD-NOTES); what the broker sees of
them is STS naming her user, its ARN and unique id, exactly as for her keys. A key made for bob
after revocation (with the policy attached again, as a group could keep it) stands in for them.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import boto3
import pytest

from annex_cloud.caps import Caps
from annex_cloud.registry import Registry
from annex_common.aws import AwsClients, make_clients
from annex_common.bundle import Bundle
from annex_user.context import open_context
from annex_user.launch import LaunchRequest, execute_launch, plan_launch
from templates import contract
from tests import emulator as emu
from tests.flows import deploy_stack, issue_bundle, write_pool
from tests.functional.test_broker import invoke_as, keys_of, signed_by

B_PROJECT, B_USER, B_ANNEX = "OtherLab", "bob", "b-annex"
OTHER_ACCOUNT = "999999999999"


@dataclass
class Projects:
    emulator: emu.Emulator
    admin: AwsClients
    outputs: dict[str, str]
    a_path: Path
    b_path: Path
    b_bundle: Bundle
    pool: object
    b_instances: list[str]

    @property
    def registry(self) -> Registry:
        return Registry(self.admin.client("dynamodb"), self.outputs[contract.OUT_REGISTRY_TABLE])

    def as_administrator(self, work: Callable[[], object]) -> object:
        """Enforcement off for one look or one change with the administrator's keys."""
        self.emulator.enforce_iam(False)
        try:
            return work()
        finally:
            self.emulator.enforce_iam(True)


def launch_b(projects_path: Path, pool, name: str = B_ANNEX) -> list[str]:
    ctx = open_context(projects_path)
    plan = plan_launch(ctx, LaunchRequest(B_PROJECT, ctx.now + timedelta(hours=5), 2, annex_name=name))
    return execute_launch(ctx, plan).instance_ids


@pytest.fixture
def projects(aws, clients, tmp_path) -> Projects:
    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "a.toml", caps=Caps(32, 168, 2000.0))
    b_bundle = issue_bundle(clients, tmp_path / "b.toml", project_id=B_PROJECT, user=B_USER, caps=Caps(32, 168, 2000.0))
    pool = write_pool(tmp_path / "pool")
    aws.enforce_iam(True)
    instances = launch_b(tmp_path / "b.toml", pool)
    assert len(instances) == 2
    return Projects(aws, clients, outputs, tmp_path / "a.toml", tmp_path / "b.toml", b_bundle, pool, instances)


def b_as_it_was(projects: Projects) -> dict:
    """What the administrator sees of B's annex: its instances' states and leases, its objects, its record."""
    def look() -> dict:
        admin = projects.admin
        described = admin.ec2.describe_instances(InstanceIds=projects.b_instances)["Reservations"]
        prefix = contract.annex_prefix(B_PROJECT, B_ANNEX)
        objects = admin.s3.list_objects_v2(Bucket=projects.outputs[contract.OUT_BUCKET], Prefix=prefix)
        return {
            "instances": sorted((i["InstanceId"], i["State"]["Name"],
                                 {t["Key"]: t["Value"] for t in i["Tags"]}[contract.TAG_EXPIRY])
                                for r in described for i in r["Instances"]),
            "objects": sorted(o["Key"] for o in objects.get("Contents", [])),
            "record": projects.registry.annex(B_PROJECT, B_ANNEX),
        }

    return projects.as_administrator(look)  # type: ignore[return-value]


def end_b(projects: Projects) -> tuple[str, dict]:
    return "terminate", {"annex_name": B_ANNEX, "request_id": uuid.uuid4().hex}


def assert_broker_touched_nothing(projects: Projects, offset: int) -> None:
    """Between ``offset`` and now the broker read its record of the caller at most: no EC2, no S3,
    no registry write."""
    calls = projects.emulator.calls_since(offset)
    acted = [c for c in calls if c[1] in {"ec2", "s3"} or c[2] in {"PutItem", "UpdateItem", "DeleteItem", "Query"}]
    assert acted == [], acted


def user_keys(iam, name: str) -> AwsClients:
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return make_clients(region=emu.REGION, access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"])


def session_of(admin: AwsClients, role_arn: str, name: str) -> AwsClients:
    """A session of the role, as its trusted principal (Lambda, EC2, another account) would get."""
    credentials = admin.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=name)["Credentials"]
    return AwsClients(boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"], region_name=emu.REGION))


# --- each principal that is not bob's record ------------------------------------------------------


def another_accounts_bob(projects: Projects) -> tuple[AwsClients, AwsClients]:
    """A user named bob, at bob's path, in an AWS account of the attacker's own; she invokes with
    her project A keys and sends his proof."""
    def make() -> AwsClients:
        other = session_of(projects.admin, f"arn:aws:iam::{OTHER_ACCOUNT}:role/hers", "her-own-account")
        other.iam.create_user(UserName=B_USER, Path=contract.USER_PATH)
        return user_keys(other.iam, B_USER)

    signer = projects.as_administrator(make)
    return keys_of(projects.a_path), signer  # type: ignore[return-value]


def bob_made_again(projects: Projects) -> tuple[AwsClients, AwsClients]:
    """bob deleted and made again under the same name and path, the scientists' policy attached to
    the new one (by anyone who may write IAM): he invokes and signs with his own new keys."""
    def remake() -> AwsClients:
        iam = projects.admin.iam
        policy = projects.outputs[contract.OUT_SCIENTIST_POLICY]
        for key in iam.list_access_keys(UserName=B_USER)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=B_USER, AccessKeyId=key["AccessKeyId"])
        iam.detach_user_policy(UserName=B_USER, PolicyArn=policy)
        iam.delete_user(UserName=B_USER)
        iam.create_user(UserName=B_USER, Path=contract.USER_PATH)
        iam.attach_user_policy(UserName=B_USER, PolicyArn=policy)
        return user_keys(iam, B_USER)

    keys = projects.as_administrator(remake)
    return keys, keys  # type: ignore[return-value]


def brokers_role(projects: Projects) -> tuple[AwsClients, AwsClients]:
    def assume() -> AwsClients:
        role = projects.admin.awslambda.get_function(
            FunctionName=projects.outputs[contract.OUT_BROKER_FUNCTION])["Configuration"]["Role"]
        return session_of(projects.admin, role, "HTCondorAnnex-broker")

    return keys_of(projects.a_path), projects.as_administrator(assume)  # type: ignore[return-value]


def b_node_role(projects: Projects) -> tuple[AwsClients, AwsClients]:
    def assume() -> AwsClients:
        node = projects.registry.node(B_PROJECT)
        assert node is not None
        return session_of(projects.admin, node.role_arn, "i-0123456789abcdef0")

    return keys_of(projects.a_path), projects.as_administrator(assume)  # type: ignore[return-value]


def revoked_bob(projects: Projects) -> tuple[AwsClients, AwsClients]:
    """bob revoked; credentials that still prove him (as session credentials made earlier would)
    and the policy kept elsewhere: he invokes and signs with them."""
    from annex_admin.credentials import revoke_credentials

    def revoke() -> AwsClients:
        revoke_credentials(projects.admin, B_USER)
        projects.admin.iam.attach_user_policy(UserName=B_USER, PolicyArn=projects.outputs[contract.OUT_SCIENTIST_POLICY])
        return user_keys(projects.admin.iam, B_USER)

    keys = projects.as_administrator(revoke)
    return keys, keys  # type: ignore[return-value]


def bobs_record_from_an_earlier_version(projects: Projects) -> tuple[AwsClients, AwsClients]:
    def forget_who() -> None:
        projects.admin.client("dynamodb").update_item(
            TableName=projects.outputs[contract.OUT_REGISTRY_TABLE],
            Key={"pk": {"S": f"user#{B_USER}"}, "sk": {"S": "user"}}, UpdateExpression="REMOVE arn, user_id")

    projects.as_administrator(forget_who)
    keys = keys_of(projects.b_path)
    return keys, keys


CASES = {
    "another-accounts-bob": (another_accounts_bob, "of AWS account 999999999999 is not the scientist"),
    "bob-made-again": (bob_made_again, "is not the user the administrator issued credentials to"),
    "brokers-role": (brokers_role, "acts only for a scientist's IAM user"),
    "b-node-role": (b_node_role, "acts only for a scientist's IAM user"),
    "revoked-bob": (revoked_bob, "were revoked"),
    "earlier-record": (bobs_record_from_an_earlier_version, "does not say which IAM user it is"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_principal_but_bobs_record_is_refused_and_b_is_untouched(projects, case):
    make, refusal = CASES[case]
    invoker, signer = make(projects)
    before = b_as_it_was(projects)
    offset = projects.emulator.log_offset()
    for op, params in (end_b(projects), ("status", {}), ("extend", {
            "annex_name": B_ANNEX, "expiry": "2026-12-30T00:00:00Z", "shorten": True, "request_id": uuid.uuid4().hex})):
        answer = invoke_as(invoker, signed_by(signer, op, params, audience=projects.b_bundle.broker_arn))
        assert answer["ok"] is False and "result" not in answer, (op, answer)
        assert refusal in answer["refused"]["what"], (op, answer["refused"])
        assert answer["refused"]["why"] and answer["refused"]["next"]
    assert_broker_touched_nothing(projects, offset)
    assert b_as_it_was(projects) == before
    assert {state for _id, state, _expiry in before["instances"]} == {"running"}


def test_bobs_own_proof_is_good_for_its_one_request_only(projects):
    """A proof bob made to see his status, taken by someone else who may invoke, cannot end his annex."""
    status = signed_by(keys_of(projects.b_path), "status", {"instances": True}, audience=projects.b_bundle.broker_arn)
    op, params = end_b(projects)
    before = b_as_it_was(projects)
    offset = projects.emulator.log_offset()
    answer = invoke_as(keys_of(projects.a_path), {"op": op, "identity": status["identity"], "params": params})
    assert answer["ok"] is False and "made for another request" in answer["refused"]["why"], answer
    assert_broker_touched_nothing(projects, offset)
    assert b_as_it_was(projects) == before
    # Sent with its own request, it still works (for bob's eyes: his status).
    mine = invoke_as(keys_of(projects.b_path), status)
    assert mine["ok"] is True and sorted(r["instance_id"] for r in mine["result"]["instances"]) == sorted(projects.b_instances)


def test_a_replayed_terminate_is_answered_from_its_record_and_ends_nothing_new(projects):
    """bob ends his annex and starts another of the same name; his first request, replayed within
    its proof's life by someone who may invoke, gets the first answer and ends nothing."""
    op, params = end_b(projects)
    ended = signed_by(keys_of(projects.b_path), op, params, audience=projects.b_bundle.broker_arn)
    first = invoke_as(keys_of(projects.b_path), ended)
    assert first["ok"] is True and sorted(first["result"]["instance_ids"]) == sorted(projects.b_instances)
    newer = launch_b(projects.b_path, projects.pool)
    replayed = invoke_as(keys_of(projects.a_path), ended)
    assert replayed["ok"] is True and replayed["result"]["replayed"] is True
    assert replayed["result"]["instance_ids"] == first["result"]["instance_ids"]

    def states() -> set[str]:
        reservations = projects.admin.ec2.describe_instances(InstanceIds=newer)["Reservations"]
        return {i["State"]["Name"] for r in reservations for i in r["Instances"]}

    assert projects.as_administrator(states) == {"running"}


def test_a_request_id_names_one_request(projects):
    """The same request id with other parameters (a new proof for them) is refused, not answered
    with the first request's record."""
    op, params = end_b(projects)
    bob = keys_of(projects.b_path)
    first = invoke_as(bob, signed_by(bob, op, params, audience=projects.b_bundle.broker_arn))
    assert first["ok"] is True
    other = {**params, "annex_name": "another-annex"}
    answer = invoke_as(bob, signed_by(bob, op, other, audience=projects.b_bundle.broker_arn))
    assert answer["ok"] is False and "was already used for another request" in answer["refused"]["what"], answer


def test_a_replayed_extension_is_answered_from_its_record_and_undoes_no_later_one(projects):
    from annex_user.manage import extend_lease, extend_params

    ctx = open_context(projects.b_path)
    later = ctx.now.replace(second=0) + timedelta(hours=8)
    params = {**extend_params(ctx, B_ANNEX, later, False), "request_id": uuid.uuid4().hex}
    bob = keys_of(projects.b_path)
    extended = signed_by(bob, "extend", params, audience=projects.b_bundle.broker_arn)
    assert invoke_as(bob, extended)["ok"] is True
    shorter = ctx.now.replace(second=0) + timedelta(hours=6)
    extend_lease(ctx, extend_params(ctx, B_ANNEX, shorter, True), condor_config=str(projects.pool.condor_config))
    replayed = invoke_as(keys_of(projects.a_path), extended)
    assert replayed["ok"] is True and replayed["result"]["replayed"] is True
    assert {expiry for _id, _state, expiry in b_as_it_was(projects)["instances"]} == {
        shorter.strftime(contract.EXPIRY_FORMAT)}


@pytest.mark.parametrize("identity", [
    {"headers": {"Authorization": "AWS4-HMAC-SHA256 x\r\nX-Evil: 1"}, "body": "Action=GetCallerIdentity&Version=2011-06-15"},
    {"headers": {"X-Annex-Broker\r\n": "x"}, "body": "Action=GetCallerIdentity&Version=2011-06-15"},
    "not a proof",
])
def test_malformed_proofs_and_operations_are_refusals_never_function_errors(projects, identity):
    a = keys_of(projects.a_path)
    answer = invoke_as(a, {"op": "status", "identity": identity, "params": {}})
    assert answer["ok"] is False and answer["refused"]["what"] == "the broker could not tell who is asking"
    for op in (["status"], {"op": 1}, 7):
        answer = invoke_as(a, {"op": op, "identity": identity, "params": {}})
        assert answer["ok"] is False and "does not know this request" in answer["refused"]["what"]
    answer = invoke_as(a, {"op": "status", "identity": identity, "params": {"x": base64.b64encode(b"x").decode()}})
    assert answer["ok"] is False
