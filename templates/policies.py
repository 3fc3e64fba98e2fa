"""IAM policy documents (awacs) for the scientists, the instances and the enforcer.

Statement style, and why. AWS evaluates every statement fully; the local emulator (moto) does
not: it counts every condition as true, checks EC2 and CloudFormation requests against resource
``*`` only, does not substitute policy variables, and treats a statement without ``Resource``
(that is, one with ``NotResource``) as matching. So:

- every Allow that the client needs names resource ``*`` (or a plain prefix) and narrows with
  condition keys AWS documents for the action: AWS applies the narrowing, the emulator the grant;
- every conditional Deny names the ARN pattern of the resource type it guards (instance, subnet,
  image, ...): AWS applies it to that resource, the emulator never matches it (EC2 is checked
  against ``*``), so it never refuses what AWS would allow;
- where AWS needs an exact resource scope that the emulator cannot check (a stack ARN, an S3 key
  holding ``${aws:PrincipalTag/...}``), a Deny with ``NotResource`` does the scoping on AWS. The
  emulator never refuses on such a statement (it even counts it as a grant of its actions), so
  under the emulator the scientist can reach other projects' annexes/ prefixes: that part is
  proven by the simulator only;
- unconditional Denies on plain ARNs (the caps objects) bind on both.

The real semantics are proven with an IAM policy simulator in tests/policy; what the emulator
enforces is proven in tests/policy/test_emulator_enforcement.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from awacs import aws as awacs_aws
from awacs import cloudformation as cfn_actions
from awacs import cloudwatch as cloudwatch_actions
from awacs import ec2 as ec2_actions
from awacs import iam as iam_actions
from awacs import logs as logs_actions
from awacs import pricing as pricing_actions
from awacs import s3 as s3_actions
from troposphere import Join, Sub

from annex_cloud import metrics
from annex_cloud.enforcer import TAG_LAUNCH_TEMPLATE_ID as LAUNCH_TEMPLATE_ID_TAG
from templates import contract

PRINCIPAL_PROJECT = "${aws:PrincipalTag/" + contract.TAG_PROJECT + "}"
PRINCIPAL_USER = "${aws:username}"

# Tags that identify an instance and its owner: set at creation, never changed afterwards. The
# expiry is the one tag a scientist may move (extend); deleting it is never allowed.
PROTECTED_INSTANCE_TAGS = (
    contract.TAG_ANNEX_NAME,
    contract.TAG_PROJECT,
    contract.TAG_OWNER,
    contract.TAG_IDLE,
)

# Both launch paths: an instant EC2 Fleet authorizes the instances it creates against the
# caller's own policy (it needs no service-linked role), so every launch guard names both.
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-fleet-prerequisites.html
LAUNCH_ACTIONS = [ec2_actions.RunInstances, ec2_actions.CreateFleet]

# A statement that names ${aws:PrincipalTag/...} does not apply at all when the user has no such
# tag (the variable cannot be resolved), so the Denies that compare against it would not bind:
# every grant that relies on them requires the tag instead.
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html
_HAS_PROJECT_TAG = awacs_aws.Null("aws:PrincipalTag/" + contract.TAG_PROJECT, "false")

S3_OBJECT_ACTIONS = [s3_actions.PutObject, s3_actions.GetObject, s3_actions.DeleteObject]


@dataclass
class PolicyRefs:
    """Template references the scientist policy is scoped to.

    ``security_group_id`` is accepted but not needed: the launch template's security group is
    pinned by refusing any group the request names instead (ec2:IsLaunchTemplateResource).
    """

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


def _any_ec2(resource_type: str) -> Sub:
    """Every resource of a type, in any region and account: the scope of a Deny (wider is safer,
    and shorter: the managed policy must stay under IAM's 6,144-character limit)."""
    if resource_type == "image":
        # AMIs are public-namespace resources: their ARN has no account field.
        return Sub("arn:${AWS::Partition}:ec2:*::image/*")
    return Sub("arn:${AWS::Partition}:ec2:*:*:" + resource_type + "/*")


def _bucket_arn(bucket: Any, suffix: str = "") -> Join:
    return Join("", [Sub("arn:${AWS::Partition}:s3:::"), bucket, suffix])


def _launch_template_arn(lt_id: Any) -> Join:
    # Region and account are wildcards only to keep the policy short: template ids are unique,
    # and a template in another account cannot be launched from here anyway.
    return Join("", [Sub("arn:${AWS::Partition}:ec2:*:*:launch-template/"), lt_id])


def _stack_arn(stack_name: str) -> Sub:
    return Sub(
        "arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/"
        + stack_name
        + "/*"
    )


def _deny(sid: str, actions: list[Any], resources: list[Any], condition: Any = None) -> awacs_aws.Statement:
    kwargs: dict[str, Any] = {"Sid": sid, "Effect": awacs_aws.Deny, "Action": actions, "Resource": resources}
    if condition is not None:
        kwargs["Condition"] = awacs_aws.Condition(condition)
    return awacs_aws.Statement(**kwargs)


def _read_statements(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    return [
        awacs_aws.Statement(
            Sid="DescribeAndReadStack",
            Effect=awacs_aws.Allow,
            # Only what condor_annex calls; these support no resource-level permissions.
            Action=[
                ec2_actions.DescribeInstances,
                ec2_actions.DescribeInstanceTypes,
                ec2_actions.DescribeInstanceTypeOfferings,
                ec2_actions.DescribeSpotPriceHistory,
                pricing_actions.GetProducts,
                # Narrowed to the stack by the Deny below (the emulator checks "*" only).
                cfn_actions.DescribeStacks,
            ],
            Resource=["*"],
        ),
        # Other stacks' outputs may name things she has no business seeing.
        # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notresource.html
        awacs_aws.Statement(
            Sid="DenyOtherStacks",
            Effect=awacs_aws.Deny,
            Action=[cfn_actions.DescribeStacks],
            NotResource=[_stack_arn(refs.stack_name)],
        ),
    ]


def _launch_statements(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    launch_templates = [_launch_template_arn(lt) for lt in refs.launch_template_ids]
    return [
        # ec2:LaunchTemplate is set on every resource type RunInstances touches, so one
        # statement over "*" covers instance, volume, network interface, subnet, security group,
        # image, key pair and the template itself, and only for the stack's templates.
        # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/use-launch-templates-to-control-launching-instances.html
        awacs_aws.Statement(
            Sid="LaunchOnlyFromStackTemplates",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.RunInstances],
            Resource=["*"],
            Condition=awacs_aws.Condition(
                [awacs_aws.ArnLike("ec2:LaunchTemplate", launch_templates), _HAS_PROJECT_TAG]
            ),
        ),
        # CreateFleet offers no ec2:LaunchTemplate key; the Deny below pins its templates.
        awacs_aws.Statement(
            Sid="FleetRequests",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.CreateFleet],
            Resource=["*"],
            Condition=awacs_aws.Condition(_HAS_PROJECT_TAG),
        ),
        awacs_aws.Statement(
            Sid="DenyFleetFromOtherTemplates",
            Effect=awacs_aws.Deny,
            Action=[ec2_actions.CreateFleet],
            # Every other resource type CreateFleet touches stays out of this Deny.
            NotResource=launch_templates
            + [_any_ec2(kind) for kind in ("fleet", "instance", "volume", "subnet", "image")],
        ),
        # Tag-on-create only: ec2:CreateAction is present only when the tags ride on the
        # creating call. https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html
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
            Sid="PassOnlyTheInstanceRole",
            Effect=awacs_aws.Allow,
            Action=[iam_actions.PassRole],
            Resource=[refs.instance_role_arn],
            # https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html
            Condition=awacs_aws.Condition(
                awacs_aws.StringEquals("iam:PassedToService", "ec2.amazonaws.com")
            ),
        ),
    ]


def _lease_statements() -> list[awacs_aws.Statement]:
    return [
        # Only the expiry key, and at least one key: ForAllValues is true for an empty set, so
        # the Null check rules that out.
        # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
        awacs_aws.Statement(
            Sid="ExtendOwnProjectLease",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.CreateTags],
            Resource=["*"],
            Condition=awacs_aws.Condition(
                [
                    awacs_aws.StringEquals("aws:ResourceTag/" + contract.TAG_PROJECT, PRINCIPAL_PROJECT),
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
    ]


def _configuration_statements(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    own_prefix = f"{contract.ANNEX_PREFIX}/{PRINCIPAL_PROJECT}/"
    return [
        # The grant names the plain annexes/ prefix (the emulator cannot substitute policy
        # variables); the Deny below narrows it to her project's prefix on AWS.
        awacs_aws.Statement(
            Sid="ProjectConfiguration",
            Effect=awacs_aws.Allow,
            Action=S3_OBJECT_ACTIONS,
            Resource=[_bucket_arn(refs.bucket, f"/{contract.ANNEX_PREFIX}/*")],
            Condition=awacs_aws.Condition(_HAS_PROJECT_TAG),
        ),
        awacs_aws.Statement(
            Sid="DenyOtherProjectsConfiguration",
            Effect=awacs_aws.Deny,
            Action=S3_OBJECT_ACTIONS,
            NotResource=[_bucket_arn(refs.bucket, "/" + own_prefix + "*")],
        ),
        # The caps objects are the administrator's; the enforcer trusts them.
        _deny(
            "DenyProjectCaps",
            [s3_actions.Action("*")],
            [_bucket_arn(refs.bucket, f"/{contract.PROJECT_CAPS_PREFIX}/*")],
        ),
        awacs_aws.Statement(
            Sid="ListOwnProjectConfiguration",
            Effect=awacs_aws.Allow,
            Action=[s3_actions.ListBucket],
            Resource=[_bucket_arn(refs.bucket)],
            Condition=awacs_aws.Condition(awacs_aws.StringLike("s3:prefix", [own_prefix + "*"])),
        ),
    ]


def _launch_guards(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    """Denies on what a launch creates; each names the resource type it inspects."""
    instance = [_any_ec2("instance")]
    guards = [
        # aws:RequestTag with the instance resource of RunInstances:
        # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ExamplePolicies_EC2.html#iam-example-runinstances
        _deny(
            "DenyLaunchForAnotherProject",
            LAUNCH_ACTIONS,
            instance,
            awacs_aws.StringNotEquals("aws:RequestTag/" + contract.TAG_PROJECT, PRINCIPAL_PROJECT),
        ),
        _deny(
            "DenyLaunchForAnotherOwner",
            LAUNCH_ACTIONS,
            instance,
            awacs_aws.StringNotEquals("aws:RequestTag/" + contract.TAG_OWNER, PRINCIPAL_USER),
        ),
    ]
    # One statement per key: keys inside one Null block are ANDed.
    for sid, key in (
        ("DenyLaunchWithoutLease", contract.TAG_EXPIRY),
        ("DenyLaunchWithoutAnnexName", contract.TAG_ANNEX_NAME),
        ("DenyLaunchWithoutIdleTimeout", contract.TAG_IDLE),
    ):
        guards.append(_deny(sid, LAUNCH_ACTIONS, instance, awacs_aws.Null("aws:RequestTag/" + key, "true")))
    guards.append(
        _deny(
            "DenyOtherInstanceTypes",
            LAUNCH_ACTIONS,
            instance,
            awacs_aws.StringNotEquals("ec2:InstanceType", refs.instance_types),
        )
    )
    # The template's image, security group and key pair, not ones named in the request: another
    # key pair would open the instance (and its role's credentials) to her.
    # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/use-launch-templates-to-control-launching-instances.html
    guards.append(
        _deny(
            "DenyTemplateOverrides",
            [ec2_actions.RunInstances],
            [_any_ec2(kind) for kind in ("image", "security-group", "key-pair")],
            awacs_aws.Bool("ec2:IsLaunchTemplateResource", "false"),
        )
    )
    if refs.subnet_ids:
        guards.append(
            _deny(
                "DenyOtherSubnets",
                LAUNCH_ACTIONS,
                [_any_ec2("subnet")],
                awacs_aws.StringNotEquals("ec2:SubnetID", list(refs.subnet_ids)),
            )
        )
    guards += [
        # Identity tags are fixed at creation: no CreateTags on them outside a creating call.
        _deny(
            "DenyRetaggingIdentity",
            [ec2_actions.CreateTags],
            instance,
            [
                awacs_aws.ForAnyValueStringEquals("aws:TagKeys", list(PROTECTED_INSTANCE_TAGS)),
                awacs_aws.Null("ec2:CreateAction", "true"),
            ],
        ),
        _deny("DenyUntagging", [ec2_actions.DeleteTags], instance),
    ]
    return guards


def scientist_statements(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    return (
        _read_statements(refs)
        + _launch_statements(refs)
        + _lease_statements()
        + _configuration_statements(refs)
        + _launch_guards(refs)
    )


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


def enforcer_backstop_policy(stack_name: str, launch_template_ids: list[Any]) -> awacs_aws.PolicyDocument:
    """What the enforcer needs beyond reading and terminating tagged instances: to end an annex
    instance whatever shields it, to find the stack's instances whose tags are missing or
    misspelt, to remove what an annex leaves that still costs money, and to report each run.

    Annex instances are those tagged with the annex name (IAM compares tag keys without regard to
    case, so a misspelt key still counts) and those EC2 tagged, at launch, with one of the stack's
    launch template ids (an ``aws:`` tag: nobody can set or change it).
    """
    from_stack_templates = awacs_aws.StringEquals(
        "aws:ResourceTag/" + LAUNCH_TEMPLATE_ID_TAG, list(launch_template_ids)
    )
    annex_tagged = awacs_aws.Null("aws:ResourceTag/" + contract.TAG_ANNEX_NAME, "false")
    stack_tagged = awacs_aws.StringEquals("aws:ResourceTag/" + contract.TAG_STACK, stack_name)
    # ModifyInstanceAttribute can change other attributes too; the enforcer only ever clears
    # disableApiTermination, and these conditions keep even that to annex instances.
    end_instances = [ec2_actions.TerminateInstances, ec2_actions.ModifyInstanceAttribute]
    remove_leftovers = [ec2_actions.DeleteVolume, ec2_actions.CancelSpotInstanceRequests]
    return awacs_aws.PolicyDocument(
        Version="2012-10-17",
        Statement=[
            awacs_aws.Statement(
                Sid="EndInstancesFromStackTemplates",
                Effect=awacs_aws.Allow,
                Action=end_instances,
                Resource=["*"],
                Condition=awacs_aws.Condition(from_stack_templates),
            ),
            awacs_aws.Statement(
                Sid="ClearProtectionOfAnnexInstances",
                Effect=awacs_aws.Allow,
                Action=[ec2_actions.ModifyInstanceAttribute],
                Resource=["*"],
                Condition=awacs_aws.Condition(annex_tagged),
            ),
            awacs_aws.Statement(
                Sid="FindLeftovers",
                Effect=awacs_aws.Allow,
                # These support no resource-level permissions.
                Action=[
                    ec2_actions.DescribeVolumes,
                    ec2_actions.DescribeFleets,
                    ec2_actions.DescribeSpotInstanceRequests,
                ],
                Resource=["*"],
            ),
            awacs_aws.Statement(
                Sid="RemoveStackLeftovers",
                Effect=awacs_aws.Allow,
                Action=remove_leftovers,
                Resource=["*"],
                Condition=awacs_aws.Condition(stack_tagged),
            ),
            awacs_aws.Statement(
                Sid="RemoveAnnexLeftovers",
                Effect=awacs_aws.Allow,
                Action=remove_leftovers,
                Resource=["*"],
                Condition=awacs_aws.Condition(annex_tagged),
            ),
            # A fleet made from the stack's templates carries no tag of ours, so no condition can
            # single it out: the enforcer checks each fleet's templates, and always deletes with
            # TerminateInstances=false (its instances are judged by the lease rules).
            awacs_aws.Statement(
                Sid="DeleteFleetsFromStackTemplates",
                Effect=awacs_aws.Allow,
                Action=[ec2_actions.DeleteFleets],
                Resource=["*"],
            ),
            awacs_aws.Statement(
                Sid="PublishEnforcerMetrics",
                Effect=awacs_aws.Allow,
                Action=[cloudwatch_actions.PutMetricData],
                Resource=["*"],
                Condition=awacs_aws.Condition(awacs_aws.StringEquals("cloudwatch:namespace", metrics.NAMESPACE)),
            ),
        ],
    )
