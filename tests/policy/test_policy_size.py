"""IAM's size limits, measured on a large stack deployed to the emulator.

The broker's role carries the policy that grows with the stack: every launch template is named
twice (the RunInstances grant and the fleet's Deny) and every subnet once. IAM refuses a role
whose inline policies together exceed 10,240 characters (whitespace not counted). The scientists'
managed policy (limit 6,144) no longer grows: it names the broker and nothing else.
"""

from __future__ import annotations

import dataclasses
import json

import boto3

from tests import emulator as emu
from tests.policy.stack_under_test import SETTINGS, deploy

# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html
MANAGED_POLICY_LIMIT = 6144
ROLE_INLINE_POLICIES_LIMIT = 10240

LARGE = dataclasses.replace(
    SETTINGS,
    stack_name="HTCondorAnnex-Production",
    availability_zones=("us-east-1a", "us-east-1b", "us-east-1c"),
    instance_types=("m7i.large", "m6i.large", "m5.large", "c7i.xlarge", "c6i.xlarge", "r7i.large"),
)


def _size(document: dict) -> int:
    return len(json.dumps(document, separators=(",", ":")))


def test_policies_fit_iam_limits_with_six_types_and_three_zones(emulator: emu.Emulator) -> None:
    emulator.reset()
    stack = deploy(boto3.session.Session(region_name=emu.REGION), LARGE)
    broker = json.dumps([p["policy"] for p in stack.broker.role_policies])
    # Every template and subnet is named, or the document did not come from LARGE.
    assert len(stack.launch_templates) == len(LARGE.instance_types)
    assert all(lt in broker for lt in stack.launch_templates.values())
    assert len(stack.subnets) == 3 and all(subnet in broker for subnet in stack.subnets)
    broker_size = sum(_size(p["policy"]) for p in stack.broker.role_policies)
    assert broker_size <= ROLE_INLINE_POLICIES_LIMIT, f"broker role: {broker_size} characters"
    enforcer_size = sum(_size(p["policy"]) for p in stack.enforcer.role_policies)
    assert enforcer_size <= ROLE_INLINE_POLICIES_LIMIT, f"enforcer role: {enforcer_size} characters"
    assert _size(stack.scientist_policy) <= MANAGED_POLICY_LIMIT
