"""issue-credentials and revoke-credentials against the emulator."""

from __future__ import annotations

from pathlib import Path

import botocore.exceptions
import pytest

from annex_admin.credentials import revoke_credentials
from annex_common.aws import make_clients
from annex_common.errors import AnnexError, BadInput
from annex_cloud.caps import Caps
from annex_cloud.registry import Registry
from annex_common.bundle import load_bundle
from templates import contract
from tests.flows import PROJECT, USER, deploy_stack, issue_bundle


def test_issue_creates_a_tagged_user_with_the_policy_and_a_private_bundle(clients, tmp_path):
    outputs = deploy_stack(clients).outputs
    path = tmp_path / "b.toml"
    bundle = issue_bundle(clients, path, caps=Caps(8, 72, 250.0))
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_bundle(path) == bundle
    assert bundle.project_id == PROJECT and bundle.user == USER and bundle.region == "us-east-1"
    user = clients.iam.get_user(UserName=USER)["User"]
    assert user["Path"] == contract.USER_PATH
    tags = {t["Key"]: t["Value"] for t in clients.iam.list_user_tags(UserName=USER)["Tags"]}
    assert tags[contract.USER_TAG_PROJECT] == PROJECT
    assert tags[contract.USER_TAG_MAX_INSTANCES] == "8"
    assert tags[contract.USER_TAG_MAX_LEASE_HOURS] == "72"
    assert tags[contract.USER_TAG_MAX_SPEND] == "250.00"
    attached = clients.iam.list_attached_user_policies(UserName=USER)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [outputs[contract.OUT_SCIENTIST_POLICY]]
    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    record = registry.user(USER)
    # Who she is, as IAM named her: the broker compares STS's answer with these, never a name.
    assert (record.project_id, record.arn, record.user_id, record.revoked) == (PROJECT, user["Arn"], user["UserId"], "")
    assert registry.caps(PROJECT) == Caps(8, 72.0, 250.0)
    account = user["Arn"].split(":")[4]
    assert bundle.broker_arn == f"arn:aws:lambda:us-east-1:{account}:function:{outputs[contract.OUT_BROKER_FUNCTION]}"


def test_issuing_again_rotates_to_one_live_key(clients, tmp_path):
    deploy_stack(clients)
    first = issue_bundle(clients, tmp_path / "1.toml")
    second = issue_bundle(clients, tmp_path / "2.toml")
    keys = clients.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [second.aws_access_key_id]
    assert first.aws_access_key_id != second.aws_access_key_id


def test_revoked_keys_are_refused(aws, clients, tmp_path):
    outputs = deploy_stack(clients).outputs
    bundle = issue_bundle(clients, tmp_path / "b.toml")
    scientist = make_clients(region="us-east-1", access_key_id=bundle.aws_access_key_id,
                             secret_access_key=bundle.aws_secret_access_key)
    aws.enforce_iam(True)
    scientist.client("sts").get_caller_identity()  # works before
    aws.enforce_iam(False)
    result = revoke_credentials(clients, USER)
    assert result.keys_removed == [bundle.aws_access_key_id]
    assert result.policy_detached and result.record_revoked
    assert clients.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"] == []
    assert clients.iam.list_attached_user_policies(UserName=USER)["AttachedPolicies"] == []
    record = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE]).user(USER)
    assert record.project_id == PROJECT and record.revoked
    aws.enforce_iam(True)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        scientist.client("sts").get_caller_identity()
    assert caught.value.response["Error"]["Code"] in {"InvalidClientTokenId", "AuthFailure", "InvalidAccessKeyId"}


def test_revoking_an_unknown_user_is_bad_input(clients):
    deploy_stack(clients)
    with pytest.raises(BadInput):
        revoke_credentials(clients, "nobody-here")


def test_issuing_again_after_revocation_gives_her_back_a_key_the_policy_and_a_live_record(clients, tmp_path):
    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "1.toml")
    revoke_credentials(clients, USER)
    again = issue_bundle(clients, tmp_path / "2.toml")
    keys = [k["AccessKeyId"] for k in clients.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]]
    assert keys == [again.aws_access_key_id]
    attached = clients.iam.list_attached_user_policies(UserName=USER)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [outputs[contract.OUT_SCIENTIST_POLICY]]
    assert Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE]).user(USER).revoked == ""


def test_a_revoked_user_may_be_issued_for_another_project(clients, tmp_path):
    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "1.toml")
    revoke_credentials(clients, USER)
    moved = issue_bundle(clients, tmp_path / "2.toml", project_id="OtherLab")
    assert moved.project_id == "OtherLab"
    assert Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE]).user(USER).project_id == "OtherLab"


def test_a_record_made_before_identities_were_bound_is_filled_in_by_issuing_again(clients, tmp_path):
    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "1.toml")
    table = outputs[contract.OUT_REGISTRY_TABLE]
    clients.client("dynamodb").update_item(  # what an earlier version wrote: a name and a project
        TableName=table, Key={"pk": {"S": f"user#{USER}"}, "sk": {"S": "user"}}, UpdateExpression="REMOVE arn, user_id")
    registry = Registry(clients.client("dynamodb"), table)
    assert registry.user(USER).arn == ""
    issue_bundle(clients, tmp_path / "2.toml")
    assert registry.user(USER).user_id == clients.iam.get_user(UserName=USER)["User"]["UserId"]


@pytest.mark.parametrize("project, user", [("bad project", USER), (PROJECT, "bad user!"), ("", USER)])
def test_bad_names_are_refused_before_any_call(clients, tmp_path, project, user):
    deploy_stack(clients)
    with pytest.raises(BadInput):
        issue_bundle(clients, tmp_path / "b.toml", project_id=project, user=user)
    assert clients.iam.list_users(PathPrefix=contract.USER_PATH)["Users"] == []


def test_a_bundle_that_cannot_be_written_keeps_the_earlier_key(clients, tmp_path, monkeypatch):
    """The suite runs as root, for whom file modes block nothing; /proc refuses new files to
    everyone, so the bundle's folder exists and is not the problem, but the write fails.

    Found before any key is made (bad input). A folder that stops taking files between that
    check and the write (a full disk, say, which cannot be made here) is stood in for by
    skipping the check: the new key is then withdrawn and the earlier one kept."""
    from annex_admin import credentials

    deploy_stack(clients)
    first = issue_bundle(clients, tmp_path / "1.toml")

    def her_keys() -> list[str]:
        return [k["AccessKeyId"] for k in clients.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]]

    with pytest.raises(BadInput) as early:
        issue_bundle(clients, Path("/proc/self/annex-bundle.toml"))
    assert "cannot write the bundle" in early.value.what
    assert her_keys() == [first.aws_access_key_id]

    monkeypatch.setattr(credentials, "folder_problem", lambda _path: None)
    with pytest.raises(AnnexError) as late:
        issue_bundle(clients, Path("/proc/self/annex-bundle.toml"))
    assert "could not write the bundle" in late.value.what
    assert her_keys() == [first.aws_access_key_id]


# --- the administrator's safety ------------------------------------------------------------


def test_issuing_again_keeps_the_caps_unless_new_ones_are_given(clients, tmp_path):
    from annex_admin.credentials import CapsChange, IssueRequest, issue_credentials

    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "1.toml", caps=Caps(8, 72, 250.0))
    again = issue_credentials(
        clients, IssueRequest(contract.DEFAULT_STACK_NAME, PROJECT, USER, tmp_path / "2.toml", CapsChange()),
        lambda _q: pytest.fail("nothing is lowered: no question"),
    )
    assert again.caps == Caps(8, 72.0, 250.0) and again.previous_caps == Caps(8, 72.0, 250.0)
    raised = issue_credentials(
        clients, IssueRequest(contract.DEFAULT_STACK_NAME, PROJECT, USER, tmp_path / "3.toml", CapsChange(max_spend_usd=900)),
        lambda _q: pytest.fail("raising a cap asks nothing"),
    )
    assert raised.caps == Caps(8, 72.0, 900.0)
    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    assert registry.caps(PROJECT) == Caps(8, 72.0, 900.0)


def test_an_existing_user_cannot_be_moved_to_another_project(clients, tmp_path):
    deploy_stack(clients)
    first = issue_bundle(clients, tmp_path / "1.toml")
    with pytest.raises(BadInput) as caught:
        issue_bundle(clients, tmp_path / "2.toml", project_id="OtherLab")
    assert "belongs to project TheNeeds-MooreLab" in caught.value.what
    keys = [k["AccessKeyId"] for k in clients.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]]
    assert keys == [first.aws_access_key_id]  # nothing rotated
    assert not (tmp_path / "2.toml").exists()


def test_a_user_issue_credentials_did_not_make_is_never_taken_over(clients, tmp_path):
    deploy_stack(clients)
    clients.iam.create_user(UserName="ops-robot")
    key = clients.iam.create_access_key(UserName="ops-robot")["AccessKey"]["AccessKeyId"]
    with pytest.raises(BadInput) as caught:
        issue_bundle(clients, tmp_path / "b.toml", user="ops-robot")
    assert "was not created by condor-annex" in caught.value.what
    assert [k["AccessKeyId"] for k in clients.iam.list_access_keys(UserName="ops-robot")["AccessKeyMetadata"]] == [key]
    assert clients.iam.list_attached_user_policies(UserName="ops-robot")["AttachedPolicies"] == []


def test_lowering_a_cap_below_what_runs_names_what_the_enforcer_would_end_and_asks(clients, tmp_path):
    from datetime import datetime, timedelta, timezone

    from annex_admin.credentials import CapsChange, IssueRequest, issue_credentials, plan_issue
    from annex_cloud.expiry import format_expiry_tag

    deploy_stack(clients)
    issue_bundle(clients, tmp_path / "1.toml", caps=Caps(32, 168, 5000.0))
    expiry = format_expiry_tag(datetime.now(timezone.utc) + timedelta(hours=24))
    tags = [{"Key": k, "Value": v} for k, v in {
        contract.TAG_ANNEX_NAME: "a1", contract.TAG_PROJECT: PROJECT, contract.TAG_EXPIRY: expiry,
        contract.TAG_IDLE: "900", contract.TAG_OWNER: USER}.items()]
    clients.ec2.run_instances(ImageId="ami-12c6146b", MinCount=18, MaxCount=18, InstanceType="m5.large",
                              TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    questions: list[str] = []

    def decline(question: str) -> bool:
        questions.append(question)
        return False

    with pytest.raises(AnnexError):
        issue_credentials(
            clients, IssueRequest(contract.DEFAULT_STACK_NAME, PROJECT, USER, tmp_path / "2.toml", CapsChange(max_instances=10)),
            decline,
        )
    (question,) = questions
    assert "lower the caps" in question
    plan = plan_issue(clients, IssueRequest(contract.DEFAULT_STACK_NAME, PROJECT, USER, tmp_path / "2.toml",
                                            CapsChange(max_instances=10)))
    said = "\n".join(plan.lines)
    assert "instances 32 -> 10" in said and "would then end 8 running instance(s)" in said
    assert not (tmp_path / "2.toml").exists()


# --- each project's nodes run as the project's own role ----------------------------------------------


def template_data(ec2, template_id: str, version: str) -> dict:
    (found,) = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=[version])[
        "LaunchTemplateVersions"]
    return found["LaunchTemplateData"]


def test_issue_gives_the_project_its_own_node_role_profile_and_template_versions(clients, tmp_path):
    """Structural, against what the emulator stored (it does not apply instance profiles at
    launch): the role, its one policy, its profile, and one version of each stack template that
    is the default version plus the profile and nothing else."""
    from annex_admin.nodes import POLICY_NAME, NodeScope
    from annex_cloud.nodes import node_role_name

    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "a.toml")
    issue_bundle(clients, tmp_path / "b.toml", project_id="OtherLab", user="labmate")
    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    scope = NodeScope.of(contract.DEFAULT_STACK_NAME, "us-east-1", outputs)
    records = {p: registry.node(p) for p in (PROJECT, "OtherLab")}
    for project, record in records.items():
        name = node_role_name(contract.DEFAULT_STACK_NAME, "us-east-1", project)
        role = clients.iam.get_role(RoleName=name)["Role"]
        assert role["Path"] == outputs[contract.OUT_NODE_ROLE_PATH] and role["Arn"] == record.role_arn
        assert "ec2.amazonaws.com" in str(role["AssumeRolePolicyDocument"])
        assert clients.iam.list_role_policies(RoleName=name)["PolicyNames"] == [POLICY_NAME]
        assert clients.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
        document = clients.iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"]
        assert document == scope.policy(project)
        resources = [r for st in document["Statement"] for r in st["Resource"]]
        assert f"arn:aws:s3:::{outputs[contract.OUT_BUCKET]}/annexes/{project}/*" in resources
        profile = clients.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        assert profile["Arn"] == record.profile_arn and [r["RoleName"] for r in profile["Roles"]] == [name]
        assert set(record.templates) == set(scope.launch_templates)
        for itype, version in record.templates.items():
            assert version.template_id == scope.launch_templates[itype]
            default = template_data(clients.ec2, version.template_id, "$Default")
            own = template_data(clients.ec2, version.template_id, str(version.version))
            assert "IamInstanceProfile" not in default
            assert own == {**default, "IamInstanceProfile": {"Arn": record.profile_arn}}
    assert records[PROJECT].role_arn != records["OtherLab"].role_arn
    assert {t.version for t in records[PROJECT].templates.values()}.isdisjoint(
        {t.version for t in records["OtherLab"].templates.values()})


def test_issuing_again_keeps_the_node_role_and_makes_no_new_version(clients, tmp_path):
    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "1.toml")
    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    first = registry.node(PROJECT)
    latest = {lt["LaunchTemplateId"]: lt["LatestVersionNumber"]
              for lt in clients.ec2.describe_launch_templates()["LaunchTemplates"]}
    issue_bundle(clients, tmp_path / "2.toml")
    assert registry.node(PROJECT) == first
    assert {lt["LaunchTemplateId"]: lt["LatestVersionNumber"]
            for lt in clients.ec2.describe_launch_templates()["LaunchTemplates"]} == latest


def test_revoking_keys_leaves_the_projects_node_role_for_its_running_annexes(clients, tmp_path):
    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "b.toml")
    revoke_credentials(clients, USER)
    record = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE]).node(PROJECT)
    assert clients.iam.get_role(RoleName=record.role_arn.rsplit("/", 1)[1])["Role"]["Arn"] == record.role_arn


def test_a_changed_template_is_followed_by_every_project_and_reported_until_then(clients, tmp_path):
    """setup changes a template by making a new default version; until the projects get versions
    of it, check-setup says so, and after setup they have them."""
    from annex_admin.check import check_setup
    from annex_admin.nodes import NodeScope, follow_templates, node_problems

    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "b.toml")
    registry = Registry(clients.client("dynamodb"), outputs[contract.OUT_REGISTRY_TABLE])
    scope = NodeScope.of(contract.DEFAULT_STACK_NAME, "us-east-1", outputs)
    assert node_problems(clients, scope, registry) == ([PROJECT], [])
    itype, template_id = sorted(scope.launch_templates.items())[0]
    newer = clients.ec2.create_launch_template_version(
        LaunchTemplateId=template_id, SourceVersion="1", LaunchTemplateData={"ImageId": "ami-0fedcba9876543210"},
    )["LaunchTemplateVersion"]["VersionNumber"]
    clients.ec2.modify_launch_template(LaunchTemplateId=template_id, DefaultVersion=str(newer))
    fine, problems = node_problems(clients, scope, registry)
    assert fine == [] and problems == [f"{PROJECT}: its {itype} version copies an older template; run `annex-admin setup`"]
    item = {i.name: i for i in check_setup(clients, contract.DEFAULT_STACK_NAME).items}["node roles"]
    assert item.ok is False and "older template" in item.detail
    assert follow_templates(clients, scope, registry) == [PROJECT]
    followed = registry.node(PROJECT).templates[itype]
    assert followed.source_version == newer
    assert template_data(clients.ec2, template_id, str(followed.version))["ImageId"] == "ami-0fedcba9876543210"
    assert node_problems(clients, scope, registry) == ([PROJECT], [])


def test_issue_waits_until_the_new_profile_is_readable_before_templates_name_it(aws, clients, tmp_path):
    """IAM is eventually consistent: the new profile is read back (boto3's instance_profile_exists
    waiter) between its creation and the first template version that names it."""
    deploy_stack(clients)
    start = aws.log_offset()
    issue_bundle(clients, tmp_path / "a.toml")
    operations = [op for _key, service, op in aws.calls_since(start) if service in ("iam", "ec2")]
    created = operations.index("CreateInstanceProfile")
    named = operations.index("CreateLaunchTemplateVersion")
    assert "GetInstanceProfile" in operations[created:named]


def test_check_setup_names_records_made_before_identities_were_bound(clients, tmp_path):
    from annex_admin.check import check_setup

    outputs = deploy_stack(clients).outputs
    issue_bundle(clients, tmp_path / "1.toml")

    def item():
        return {i.name: i for i in check_setup(clients, contract.DEFAULT_STACK_NAME).items}["scientists' records"]

    assert item().ok and "1 scientist(s)" in item().detail
    clients.client("dynamodb").update_item(
        TableName=outputs[contract.OUT_REGISTRY_TABLE], Key={"pk": {"S": f"user#{USER}"}, "sk": {"S": "user"}},
        UpdateExpression="REMOVE arn, user_id")
    assert not item().ok and USER in item().detail and "issue-credentials" in item().detail
