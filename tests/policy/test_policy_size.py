"""IAM refuses a managed policy longer than 6,144 characters (whitespace not counted), and the
scientist policy grows with every instance type and zone. This deploys a large stack and measures
the document IAM would store."""

from __future__ import annotations

import dataclasses
import json

import boto3

from tests import emulator as emu
from tests.policy.stack_under_test import SETTINGS, deploy

# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html
MANAGED_POLICY_LIMIT = 6144

LARGE = dataclasses.replace(
    SETTINGS,
    stack_name="HTCondorAnnex-Production",
    availability_zones=("us-east-1a", "us-east-1b", "us-east-1c"),
    instance_types=("m7i.large", "m6i.large", "m5.large", "c7i.xlarge", "c6i.xlarge", "r7i.large"),
)


def test_scientist_policy_fits_iam_limit_with_six_types_and_three_zones(emulator: emu.Emulator) -> None:
    emulator.reset()
    stack = deploy(boto3.session.Session(region_name=emu.REGION), LARGE)
    size = len(json.dumps(stack.scientist_policy, separators=(",", ":")))
    # Every type is named, or the document did not come from LARGE.
    assert all(itype in json.dumps(stack.scientist_policy) for itype in LARGE.instance_types)
    assert size <= MANAGED_POLICY_LIMIT, f"{size} characters"
