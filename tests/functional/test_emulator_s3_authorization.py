"""The emulator judges S3 requests by the IAM action AWS requires, over HTTP with IAM enforcement on.

AWS authorizes ListObjectsV2 as ``s3:ListBucket`` on the bucket, HeadObject as ``s3:GetObject`` on the
object, and each key of DeleteObjects as ``s3:DeleteObject`` on that key. moto 5.2.6 asks for
``s3:ListObjectsV2``, ``s3:HeadObject`` and ``s3:DeleteObjects`` instead, actions IAM does not have,
so a correct policy was refused and `condor_annex terminate` failed under it; the emulator's
``install_s3_iam_action_names`` restores AWS's names (without it the first test fails on 5.2.6).
Each case also runs without the grant, so a refusal is proven to come from the policy.
"""

from __future__ import annotations

import json

import boto3
import botocore.exceptions
import pytest

from tests import emulator as emu

BUCKET = "annex-authorization-check"


def _user_with(clients, name: str, statements: list[dict]) -> boto3.Session:
    iam = clients.client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="only-this",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return boto3.Session(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                         region_name=emu.REGION)


def _allow(action: str, resource: str) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


@pytest.fixture
def bucket(aws, clients):
    clients.s3.create_bucket(Bucket=BUCKET)
    for key in ("annexes/a/one", "annexes/a/two", "other/three"):
        clients.s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    return clients


def _refused(call) -> bool:
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"] in ("AccessDenied", "403")
    return False


def test_list_objects_v2_is_judged_as_s3_list_bucket(aws, bucket):
    allowed = _user_with(bucket, "lister", [_allow("s3:ListBucket", f"arn:aws:s3:::{BUCKET}")])
    other = _user_with(bucket, "reader", [_allow("s3:GetObject", f"arn:aws:s3:::{BUCKET}/*")])
    aws.enforce_iam(True)
    listed = allowed.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="annexes/a/")
    assert [o["Key"] for o in listed["Contents"]] == ["annexes/a/one", "annexes/a/two"]
    assert _refused(lambda: other.client("s3").list_objects_v2(Bucket=BUCKET))


def test_head_object_is_judged_as_s3_get_object(aws, bucket):
    allowed = _user_with(bucket, "reader", [_allow("s3:GetObject", f"arn:aws:s3:::{BUCKET}/annexes/a/*")])
    aws.enforce_iam(True)
    assert allowed.client("s3").head_object(Bucket=BUCKET, Key="annexes/a/one")["ContentLength"] == 1
    assert _refused(lambda: allowed.client("s3").head_object(Bucket=BUCKET, Key="other/three"))


def test_delete_objects_is_judged_key_by_key_as_s3_delete_object(aws, bucket):
    allowed = _user_with(bucket, "deleter", [_allow("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/annexes/a/*")])
    aws.enforce_iam(True)
    s3 = allowed.client("s3")
    refused = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "other/three"}]})
    assert [(e["Key"], e["Code"]) for e in refused["Errors"]] == [("other/three", "AccessDenied")]
    deleted = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "annexes/a/one"}, {"Key": "annexes/a/two"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["annexes/a/one", "annexes/a/two"]
    aws.enforce_iam(False)
    assert [o["Key"] for o in bucket.s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["other/three"]
