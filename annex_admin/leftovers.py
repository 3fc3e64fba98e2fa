"""Resources a stack deletion left behind, found from the stack's own resource list and removed.

A deleted stack should take everything with it, but a deletion can stop half-way (the local
emulator stops at the VPC's route tables and leaves the scientists' managed policy, so the next
setup fails on a name that already exists). Teardown reads the stack's resources before deleting
it, then checks each one it knows how to check and removes what is still there. The network
(VPC, subnets, routes, gateway, security group) is swept by tag in ``teardown``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import botocore.exceptions

from annex_common.aws import AwsClients, aws_errors, error_code
from templates import contract

# Removed with the resource they belong to, or by the network sweep.
GO_WITH_THEIR_PARENT = {
    "AWS::EC2::Route",
    "AWS::EC2::SubnetRouteTableAssociation",
    "AWS::EC2::VPCGatewayAttachment",
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::RouteTable",
    "AWS::EC2::InternetGateway",
    "AWS::EC2::SecurityGroup",
    "AWS::IAM::Policy",
    "AWS::Lambda::Permission",
    "AWS::SNS::Subscription",
}
GONE = {"NoSuchEntity", "ResourceNotFoundException", "NoSuchBucket", "NotFound", "ParameterNotFound",
        "InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFoundException",
        "InvalidKeyPair.NotFound", "NotFoundException"}
KIND_NAMES = {
    "AWS::Events::Rule": "EventBridge rule",
    "AWS::CloudWatch::Alarm": "CloudWatch alarm",
    "AWS::Lambda::Function": "Lambda function",
    "AWS::EC2::LaunchTemplate": "launch template",
    "AWS::EC2::KeyPair": "key pair",
    "AWS::IAM::InstanceProfile": "instance profile",
    "AWS::IAM::Role": "IAM role",
    "AWS::IAM::ManagedPolicy": "managed policy",
    "AWS::S3::Bucket": "bucket",
    "AWS::DynamoDB::Table": "DynamoDB table",
    "AWS::SNS::Topic": "SNS topic",
    "AWS::SSM::Parameter": "SSM parameter",
    "AWS::KMS::Alias": "KMS alias",
    "AWS::KMS::Key": "KMS key",
    "AWS::Logs::LogGroup": "log group",
}


@dataclass(frozen=True)
class StackResource:
    logical_id: str
    resource_type: str
    physical_id: str

    def describe(self) -> str:
        return f"{KIND_NAMES.get(self.resource_type, self.resource_type)} {self.physical_id}"


@dataclass
class LeftoverReport:
    removed: list[str]
    not_removed: list[tuple[str, str]]  # what, why


def stack_resources(clients: AwsClients, stack_name: str) -> list[StackResource]:
    """The stack's resources as CloudFormation lists them (read before the stack is deleted)."""
    found: list[StackResource] = []
    with aws_errors(f"could not list the resources of stack {stack_name}"):
        for page in clients.cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name):
            for item in page["StackResourceSummaries"]:
                if item.get("ResourceType") and item.get("PhysicalResourceId"):
                    found.append(StackResource(item["LogicalResourceId"], item["ResourceType"], item["PhysicalResourceId"]))
    return found


def orphan_scientist_policy(clients: AwsClients, stack_name: str) -> str | None:
    """The scientists' managed policy of a stack that is gone, found by its name."""
    wanted = contract.scientist_policy_name(stack_name, clients.region)
    with aws_errors("could not look for the scientists' managed policy"):
        for page in clients.iam.get_paginator("list_policies").paginate(Scope="Local", PathPrefix=contract.USER_PATH):
            for policy in page["Policies"]:
                if policy["PolicyName"] == wanted:
                    return policy["Arn"]
    return None


def remove_leftovers(
    clients: AwsClients, resources: list[StackResource], *, deletion_clean: bool, progress: Callable[[str], None]
) -> LeftoverReport:
    """Remove each listed resource that still exists, in dependency order; report every outcome.

    A resource of a type this module cannot check is reported only when the stack deletion did
    not finish cleanly (after a clean deletion, CloudFormation removed it).
    """
    report = LeftoverReport([], [])
    progress("Checking what the stack deletion left")
    removers = _removers(clients)
    rank = {kind: index for index, kind in enumerate(removers)}
    for resource in sorted(resources, key=lambda r: rank.get(r.resource_type, len(rank))):
        if resource.resource_type in GO_WITH_THEIR_PARENT:
            continue
        remover = removers.get(resource.resource_type)
        if remover is None:
            if not deletion_clean:
                report.not_removed.append((resource.describe(), "annex-admin cannot check this kind of resource; "
                                           "look for it in the AWS console and delete it there"))
            continue
        try:
            if remover(resource.physical_id):
                report.removed.append(f"{resource.describe()} (left by the stack deletion)")
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in GONE:
                report.not_removed.append((resource.describe(), _reason(exc)))
    return report


def _reason(exc: botocore.exceptions.ClientError) -> str:
    return f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"


Remover = Callable[[str], bool]  # physical id -> True when it existed and was removed


def _removers(clients: AwsClients) -> dict[str, Remover]:
    """In the order they must go: what uses a resource before the resource."""
    return {
        "AWS::Events::Rule": lambda name: _remove_rule(clients, name),
        "AWS::CloudWatch::Alarm": lambda name: _remove_alarm(clients, name),
        "AWS::Lambda::Function": lambda name: _call(clients.awslambda.delete_function, FunctionName=name),
        "AWS::EC2::LaunchTemplate": lambda lt: _call(clients.ec2.delete_launch_template, LaunchTemplateId=lt),
        "AWS::EC2::KeyPair": lambda name: _remove_key_pair(clients, name),
        "AWS::IAM::InstanceProfile": lambda name: _remove_instance_profile(clients, name),
        "AWS::IAM::Role": lambda name: _remove_role(clients, name),
        "AWS::IAM::ManagedPolicy": lambda arn: _remove_managed_policy(clients, arn),
        "AWS::S3::Bucket": lambda name: _remove_bucket(clients, name),
        "AWS::DynamoDB::Table": lambda name: _call(clients.client("dynamodb").delete_table, TableName=name),
        "AWS::SNS::Topic": lambda arn: _remove_topic(clients, arn),
        "AWS::SSM::Parameter": lambda name: _call(clients.ssm.delete_parameter, Name=name),
        "AWS::KMS::Alias": lambda name: _call(clients.client("kms").delete_alias, AliasName=name),
        "AWS::KMS::Key": lambda key_id: _remove_kms_key(clients, key_id),
        "AWS::Logs::LogGroup": lambda name: _call(clients.client("logs").delete_log_group, logGroupName=name),
    }


def _call(method: Callable[..., Any], **kwargs: Any) -> bool:
    """Delete one thing; False when it was already gone."""
    try:
        method(**kwargs)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in GONE:
            return False
        raise
    return True


def _remove_rule(clients: AwsClients, name: str) -> bool:
    events = clients.events
    try:
        targets = [t["Id"] for t in events.list_targets_by_rule(Rule=name)["Targets"]]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in GONE:
            return False
        raise
    if targets:
        events.remove_targets(Rule=name, Ids=targets)
    return _call(events.delete_rule, Name=name)


def _remove_alarm(clients: AwsClients, name: str) -> bool:
    cloudwatch = clients.client("cloudwatch")
    if not cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]:
        return False
    cloudwatch.delete_alarms(AlarmNames=[name])
    return True


def _remove_kms_key(clients: AwsClients, key_id: str) -> bool:
    """A key is never deleted at once: KMS schedules it (7 days, the template's window); one already
    scheduled counts as gone."""
    kms = clients.client("kms")
    try:
        state = kms.describe_key(KeyId=key_id)["KeyMetadata"].get("KeyState")
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in GONE:
            return False
        raise
    if state in ("PendingDeletion", "PendingReplicaDeletion"):
        return False
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    return True


def _remove_key_pair(clients: AwsClients, name: str) -> bool:
    if not clients.ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]:
        return False
    clients.ec2.delete_key_pair(KeyName=name)
    return True


def _remove_instance_profile(clients: AwsClients, name: str) -> bool:
    iam = clients.iam
    try:
        roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in GONE:
            return False
        raise
    for role in roles:
        iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role["RoleName"])
    return _call(iam.delete_instance_profile, InstanceProfileName=name)


def _remove_role(clients: AwsClients, name: str) -> bool:
    iam = clients.iam
    try:
        profiles = iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in GONE:
            return False
        raise
    for profile in profiles:
        iam.remove_role_from_instance_profile(InstanceProfileName=profile["InstanceProfileName"], RoleName=name)
    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=policy)
    for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    return _call(iam.delete_role, RoleName=name)


def _remove_managed_policy(clients: AwsClients, arn: str) -> bool:
    iam = clients.iam
    try:
        entities = iam.list_entities_for_policy(PolicyArn=arn)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in GONE:
            return False
        raise
    for user in entities["PolicyUsers"]:
        iam.detach_user_policy(UserName=user["UserName"], PolicyArn=arn)
    for role in entities["PolicyRoles"]:
        iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=arn)
    for group in entities["PolicyGroups"]:
        iam.detach_group_policy(GroupName=group["GroupName"], PolicyArn=arn)
    for version in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
        if not version["IsDefaultVersion"]:
            iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
    return _call(iam.delete_policy, PolicyArn=arn)


def _remove_bucket(clients: AwsClients, name: str) -> bool:
    s3 = clients.s3
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            entries = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                       for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            for start in range(0, len(entries), 1000):
                s3.delete_objects(Bucket=name, Delete={"Objects": entries[start:start + 1000], "Quiet": True})
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in GONE:
            return False
        raise
    return _call(s3.delete_bucket, Bucket=name)


def _remove_topic(clients: AwsClients, arn: str) -> bool:
    sns = clients.client("sns")
    try:
        sns.get_topic_attributes(TopicArn=arn)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in GONE:
            return False
        raise
    sns.delete_topic(TopicArn=arn)
    return True
