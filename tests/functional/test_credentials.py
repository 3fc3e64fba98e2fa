"""issue-credentials and revoke-credentials against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.exceptions
import pytest

from annex_admin.credentials import revoke_credentials
from annex_common.aws import make_clients
from annex_common.errors import AnnexError, BadInput
from annex_common.bundle import Caps, load_bundle
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
    caps = json.loads(
        clients.s3.get_object(Bucket=outputs[contract.OUT_BUCKET], Key=contract.caps_key(PROJECT))["Body"].read()
    )
    assert caps == {"project_id": PROJECT, "max_instances": 8, "max_lease_hours": 72, "max_spend_usd": 250.0}


def test_issuing_again_rotates_to_one_live_key(clients, tmp_path):
    deploy_stack(clients)
    first = issue_bundle(clients, tmp_path / "1.toml")
    second = issue_bundle(clients, tmp_path / "2.toml")
    keys = clients.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [second.aws_access_key_id]
    assert first.aws_access_key_id != second.aws_access_key_id


def test_revoked_keys_are_refused(aws, clients, tmp_path):
    deploy_stack(clients)
    bundle = issue_bundle(clients, tmp_path / "b.toml")
    scientist = make_clients(region="us-east-1", access_key_id=bundle.aws_access_key_id,
                             secret_access_key=bundle.aws_secret_access_key)
    aws.enforce_iam(True)
    scientist.ec2.describe_instances()  # works before
    aws.enforce_iam(False)
    result = revoke_credentials(clients, USER)
    assert result.keys_removed == [bundle.aws_access_key_id]
    assert clients.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"] == []
    aws.enforce_iam(True)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        scientist.ec2.describe_instances()
    assert caught.value.response["Error"]["Code"] in {"InvalidClientTokenId", "AuthFailure", "InvalidAccessKeyId"}


def test_revoking_an_unknown_user_is_bad_input(clients):
    with pytest.raises(BadInput):
        revoke_credentials(clients, "nobody-here")


@pytest.mark.parametrize("project, user", [("bad project", USER), (PROJECT, "bad user!"), ("", USER)])
def test_bad_names_are_refused_before_any_call(clients, tmp_path, project, user):
    deploy_stack(clients)
    with pytest.raises(BadInput):
        issue_bundle(clients, tmp_path / "b.toml", project_id=project, user=user)
    assert clients.iam.list_users(PathPrefix=contract.USER_PATH)["Users"] == []


def test_a_bundle_that_cannot_be_written_keeps_the_earlier_key(clients, tmp_path):
    """The suite runs as root, for whom file modes block nothing; /proc refuses new files to
    everyone, so the bundle's folder exists and is not the problem, but the write fails."""
    deploy_stack(clients)
    first = issue_bundle(clients, tmp_path / "1.toml")
    with pytest.raises(AnnexError) as caught:
        issue_bundle(clients, Path("/proc/self/annex-bundle.toml"))
    assert "could not write the bundle" in caught.value.what
    keys = [k["AccessKeyId"] for k in clients.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]]
    assert keys == [first.aws_access_key_id]
