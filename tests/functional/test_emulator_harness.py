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
