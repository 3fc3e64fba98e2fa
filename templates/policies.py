"""IAM policy documents (awacs) for the scientists, the instances and the enforcer.

Statement style, and why: every Allow that must work under the local emulator names resource
``*`` and narrows with condition keys AWS documents for that action; every Deny names the
resource type it guards (instance, subnet, ...). AWS evaluates both fully; the emulator ignores
conditions and checks EC2 against ``*`` only, so it honours the Allows and never mis-applies the
Denies. The real semantics are proven with an IAM policy simulator in tests/policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from awacs import aws as awacs_aws
from awacs import cloudformation as cfn_actions
from awacs import ec2 as ec2_actions
from awacs import iam as iam_actions
from awacs import logs as logs_actions
from awacs import pricing as pricing_actions
from awacs import s3 as s3_actions
from troposphere import Join, Sub

from templates import contract

PRINCIPAL_PROJECT = "${aws:PrincipalTag/" + contract.TAG_PROJECT + "}"
PRINCIPAL_USER = "${aws:username}"


@dataclass
class PolicyRefs:
    """Template references the scientist policy is scoped to."""

    bucket: Any
    instance_role_arn: Any
    launch_template_ids: list[Any]
    instance_types: list[str]
    subnet_ids: list[Any] = field(default_factory=list)
    security_group_id: Any = None
    stack_name: str = contract.DEFAULT_STACK_NAME


def assume_role_document(service: str) -> awacs_aws.PolicyDocument:
    return awacs_aws.PolicyDocument(
        Version="2012-10-17",
        Statement=[
            awacs_aws.Statement(
                Effect=awacs_aws.Allow,
                Principal=awacs_aws.Principal("Service", [service]),
                Action=[awacs_aws.Action("sts", "AssumeRole")],
            )
        ],
    )


def _ec2_arn(resource: str) -> Sub:
    return Sub("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:" + resource)


def _bucket_arn(bucket: Any, suffix: str = "") -> Join:
    return Join("", ["arn:aws:s3:::", bucket, suffix])


def _launch_template_arn(lt_id: Any) -> Join:
    return Join(
        "",
        [Sub("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:launch-template/"), lt_id],
    )


def scientist_statements(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    instance_arn = _ec2_arn("instance/*")
    project_prefix = f"{contract.ANNEX_PREFIX}/{PRINCIPAL_PROJECT}/"
    return [
        awacs_aws.Statement(
            Sid="DescribeForPlanningAndStatus",
            Effect=awacs_aws.Allow,
            Action=[
                ec2_actions.DescribeInstances,
                ec2_actions.DescribeInstanceTypes,
                ec2_actions.DescribeInstanceTypeOfferings,
                ec2_actions.DescribeAvailabilityZones,
                ec2_actions.DescribeSubnets,
                ec2_actions.DescribeLaunchTemplates,
                ec2_actions.DescribeLaunchTemplateVersions,
                ec2_actions.DescribeSpotPriceHistory,
                ec2_actions.DescribeImages,
                ec2_actions.DescribeTags,
                ec2_actions.DescribeFleets,
                pricing_actions.GetProducts,
            ],
            Resource=["*"],
        ),
        awacs_aws.Statement(
            Sid="ReadStackOutputs",
            Effect=awacs_aws.Allow,
            Action=[cfn_actions.DescribeStacks],
            Resource=[
                Sub(
                    "arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/"
                    + refs.stack_name
                    + "/*"
                )
            ],
        ),
        awacs_aws.Statement(
            Sid="LaunchOnlyFromStackTemplates",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.RunInstances],
            Resource=["*"],
            Condition=awacs_aws.Condition(
                awacs_aws.ArnLike(
                    "ec2:LaunchTemplate", [_launch_template_arn(lt) for lt in refs.launch_template_ids]
                )
            ),
        ),
        awacs_aws.Statement(
            Sid="FleetRequests",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.CreateFleet],
            Resource=["*"],
        ),
        awacs_aws.Statement(
            Sid="TagOnlyAtCreation",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.CreateTags],
            Resource=["*"],
            Condition=awacs_aws.Condition(
                awacs_aws.StringEquals("ec2:CreateAction", ["RunInstances", "CreateFleet"])
            ),
        ),
        awacs_aws.Statement(
            Sid="ExtendOwnProjectLease",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.CreateTags],
            Resource=["*"],
            Condition=awacs_aws.Condition(
                [
                    awacs_aws.StringEquals(
                        "aws:ResourceTag/" + contract.TAG_PROJECT, PRINCIPAL_PROJECT
                    ),
                    awacs_aws.ForAllValuesStringEquals("aws:TagKeys", [contract.TAG_EXPIRY]),
                    awacs_aws.Null("aws:TagKeys", "false"),
                ]
            ),
        ),
        awacs_aws.Statement(
            Sid="TerminateOwnProject",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.TerminateInstances],
            Resource=["*"],
            Condition=awacs_aws.Condition(
                awacs_aws.StringEquals("aws:ResourceTag/" + contract.TAG_PROJECT, PRINCIPAL_PROJECT)
            ),
        ),
        awacs_aws.Statement(
            Sid="PassOnlyTheInstanceRole",
            Effect=awacs_aws.Allow,
            Action=[iam_actions.PassRole],
            Resource=[refs.instance_role_arn],
            Condition=awacs_aws.Condition(
                awacs_aws.StringEquals("iam:PassedToService", "ec2.amazonaws.com")
            ),
        ),
        awacs_aws.Statement(
            Sid="OwnProjectConfiguration",
            Effect=awacs_aws.Allow,
            Action=[s3_actions.PutObject, s3_actions.GetObject, s3_actions.DeleteObject],
            Resource=[_bucket_arn(refs.bucket, "/" + project_prefix + "*")],
        ),
        awacs_aws.Statement(
            Sid="ListOwnProjectConfiguration",
            Effect=awacs_aws.Allow,
            Action=[s3_actions.ListBucket],
            Resource=[_bucket_arn(refs.bucket)],
            Condition=awacs_aws.Condition(awacs_aws.StringLike("s3:prefix", [project_prefix + "*"])),
        ),
        # Guards on what a launch creates. Scoped to the instance resource so they bind every
        # RunInstances (direct or through CreateFleet).
        awacs_aws.Statement(
            Sid="DenyLaunchForAnotherProject",
            Effect=awacs_aws.Deny,
            Action=[ec2_actions.RunInstances],
            Resource=[instance_arn],
            Condition=awacs_aws.Condition(
                awacs_aws.StringNotEquals("aws:RequestTag/" + contract.TAG_PROJECT, PRINCIPAL_PROJECT)
            ),
        ),
        awacs_aws.Statement(
            Sid="DenyLaunchForAnotherOwner",
            Effect=awacs_aws.Deny,
            Action=[ec2_actions.RunInstances],
            Resource=[instance_arn],
            Condition=awacs_aws.Condition(
                awacs_aws.StringNotEquals("aws:RequestTag/" + contract.TAG_OWNER, PRINCIPAL_USER)
            ),
        ),
        awacs_aws.Statement(
            Sid="DenyLaunchWithoutLease",
            Effect=awacs_aws.Deny,
            Action=[ec2_actions.RunInstances],
            Resource=[instance_arn],
            Condition=awacs_aws.Condition(
                awacs_aws.Null(
                    {
                        "aws:RequestTag/" + contract.TAG_EXPIRY: "true",
                    }
                )
            ),
        ),
        awacs_aws.Statement(
            Sid="DenyLaunchWithoutAnnexName",
            Effect=awacs_aws.Deny,
            Action=[ec2_actions.RunInstances],
            Resource=[instance_arn],
            Condition=awacs_aws.Condition(
                awacs_aws.Null({"aws:RequestTag/" + contract.TAG_ANNEX_NAME: "true"})
            ),
        ),
        awacs_aws.Statement(
            Sid="DenyOtherInstanceTypes",
            Effect=awacs_aws.Deny,
            Action=[ec2_actions.RunInstances],
            Resource=[instance_arn],
            Condition=awacs_aws.Condition(
                awacs_aws.StringNotEquals("ec2:InstanceType", refs.instance_types)
            ),
        ),
        awacs_aws.Statement(
            Sid="DenyRetaggingOrUntagging",
            Effect=awacs_aws.Deny,
            Action=[ec2_actions.DeleteTags],
            Resource=[instance_arn],
        ),
    ]


def scientist_policy(refs: PolicyRefs) -> awacs_aws.PolicyDocument:
    return awacs_aws.PolicyDocument(Version="2012-10-17", Statement=scientist_statements(refs))


def instance_role_policy(bucket: Any) -> awacs_aws.PolicyDocument:
    return awacs_aws.PolicyDocument(
        Version="2012-10-17",
        Statement=[
            awacs_aws.Statement(
                Sid="ReadAnnexConfiguration",
                Effect=awacs_aws.Allow,
                Action=[s3_actions.GetObject],
                Resource=[_bucket_arn(bucket, f"/{contract.ANNEX_PREFIX}/*")],
            )
        ],
    )


def enforcer_role_policy(bucket: Any) -> awacs_aws.PolicyDocument:
    return awacs_aws.PolicyDocument(
        Version="2012-10-17",
        Statement=[
            awacs_aws.Statement(
                Sid="FindInstances",
                Effect=awacs_aws.Allow,
                Action=[ec2_actions.DescribeInstances],
                Resource=["*"],
            ),
            awacs_aws.Statement(
                Sid="TerminateOnlyAnnexInstances",
                Effect=awacs_aws.Allow,
                Action=[ec2_actions.TerminateInstances],
                Resource=["*"],
                Condition=awacs_aws.Condition(
                    awacs_aws.Null("aws:ResourceTag/" + contract.TAG_ANNEX_NAME, "false")
                ),
            ),
            awacs_aws.Statement(
                Sid="ListConfiguration",
                Effect=awacs_aws.Allow,
                Action=[s3_actions.ListBucket],
                Resource=[_bucket_arn(bucket)],
            ),
            awacs_aws.Statement(
                Sid="ReadProjectCaps",
                Effect=awacs_aws.Allow,
                Action=[s3_actions.GetObject],
                Resource=[_bucket_arn(bucket, f"/{contract.PROJECT_CAPS_PREFIX}/*")],
            ),
            awacs_aws.Statement(
                Sid="DeleteOrphanConfiguration",
                Effect=awacs_aws.Allow,
                Action=[s3_actions.DeleteObject],
                Resource=[_bucket_arn(bucket, f"/{contract.ANNEX_PREFIX}/*")],
            ),
            awacs_aws.Statement(
                Sid="WriteOwnLogs",
                Effect=awacs_aws.Allow,
                Action=[logs_actions.CreateLogGroup, logs_actions.CreateLogStream, logs_actions.PutLogEvents],
                Resource=[Sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/*")],
            ),
        ],
    )
