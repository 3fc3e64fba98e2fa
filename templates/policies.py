"""IAM policy documents (awacs) for the scientists, the broker, the instances and the enforcer.

The scientists' keys may only ask: their managed policy allows invoking the stack's broker and
nothing else. The broker's role does the launching, within the stack's launch templates, types and
subnets, tag-on-create only; its code fixes everything IAM cannot see.

Statement style, and why. AWS evaluates every statement fully; the local emulator (moto) does
not: it counts every condition as true, checks EC2 requests against resource ``*`` only, and does
not substitute policy variables. So every Allow names resource ``*`` (or a plain ARN) and narrows
with condition keys AWS documents for the action (AWS applies the narrowing, the emulator the
grant), and every conditional Deny names the ARN pattern of the resource type it guards (AWS
applies it to that resource; the emulator, checking ``*``, never matches it).

The real semantics are proven with an IAM policy simulator in tests/policy; what the emulator
enforces is proven in tests/policy/test_emulator_enforcement.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from awacs import aws as awacs_aws
from awacs import awslambda as lambda_actions
from awacs import dynamodb as ddb_actions
from awacs import cloudwatch as cloudwatch_actions
from awacs import ec2 as ec2_actions
from awacs import iam as iam_actions
from awacs import kms as kms_actions
from awacs import logs as logs_actions
from awacs import s3 as s3_actions
from awacs import ssm as ssm_actions
from troposphere import Join, Ref, Sub

from annex_cloud import metrics
from annex_cloud.enforcer import TAG_LAUNCH_TEMPLATE_ID as LAUNCH_TEMPLATE_ID_TAG
from templates import contract
from templates.node_bootstrap import BOOTSTRAP_PREFIX

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

# Resource types other than launch templates that an instant fleet of the stack's templates may
# be authorized against (see DenyFleetFromOtherTemplates).
FLEET_RESOURCE_TYPES = (
    "fleet", "instance", "volume", "subnet", "image",
    "network-interface", "security-group", "key-pair", "snapshot", "spot-instances-request",
)

S3_OBJECT_ACTIONS = [s3_actions.PutObject, s3_actions.GetObject, s3_actions.DeleteObject]


@dataclass
class PolicyRefs:
    """Template references the broker's launch rights are scoped to."""

    bucket: Any
    node_role_arns: Any  # ARN pattern of every project's node role (annex_cloud.nodes)
    launch_template_ids: list[Any]
    instance_types: list[str]
    subnet_ids: list[Any] = field(default_factory=list)
    table_arn: Any = None
    node_profile_arns: Any = None  # ARN pattern of their instance profiles
    stack_name: Any = None  # the tag value every fleet the broker makes must carry
    pool_parameters: Any = None  # ARN pattern of the stack's pool parameters (annex_cloud.pools)
    pool_key_arn: Any = None  # the stack's KMS key that encrypts them


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
    and shorter: a role's inline policies must stay under IAM's 10,240 characters together)."""
    if resource_type in ("image", "snapshot"):
        # AMIs and snapshots are public-namespace resources: their ARN has no account field.
        return Sub("arn:${AWS::Partition}:ec2:*::" + resource_type + "/*")
    return Sub("arn:${AWS::Partition}:ec2:*:*:" + resource_type + "/*")


def _bucket_arn(bucket: Any, suffix: str = "") -> Join:
    return Join("", [Sub("arn:${AWS::Partition}:s3:::"), bucket, suffix])


def _launch_template_arn(lt_id: Any) -> Join:
    # Region and account are wildcards only to keep the policy short: template ids are unique,
    # and a template in another account cannot be launched from here anyway.
    return Join("", [Sub("arn:${AWS::Partition}:ec2:*:*:launch-template/"), lt_id])


def _all_of(*elements: awacs_aws.ConditionElement) -> awacs_aws.Condition:
    """A Condition that requires every element.

    awacs renders a Condition as one block per operator and, given two elements with the same
    operator (two ``Null`` checks, say), silently keeps only the last. Here elements that share an
    operator are merged into one block (keys inside a block are ANDed, as IAM evaluates them), and
    a key given twice under one operator is an error rather than a lost check.
    """
    blocks: dict[str, tuple[type, dict[str, Any]]] = {}
    for element in elements:
        kind, merged = blocks.setdefault(element.condition, (type(element), {}))
        for key, value in element.get_dict().items():
            if key in merged:
                raise ValueError(f"condition key {key} given twice under {element.condition}")
            merged[key] = value
    return awacs_aws.Condition([kind(merged) for kind, merged in blocks.values()])


def _deny(sid: str, actions: list[Any], resources: list[Any], *conditions: Any) -> awacs_aws.Statement:
    kwargs: dict[str, Any] = {"Sid": sid, "Effect": awacs_aws.Deny, "Action": actions, "Resource": resources}
    if conditions:
        kwargs["Condition"] = _all_of(*conditions)
    return awacs_aws.Statement(**kwargs)


def scientist_policy(broker_arn: Any) -> awacs_aws.PolicyDocument:
    """Her keys may ask the broker, and nothing else: no EC2, no S3, no PassRole, no stack."""
    return awacs_aws.PolicyDocument(
        Version="2012-10-17",
        Statement=[
            awacs_aws.Statement(
                Sid="AskTheBroker",
                Effect=awacs_aws.Allow,
                Action=[lambda_actions.InvokeFunction],
                Resource=[broker_arn],
            )
        ],
    )


def _read_statements() -> list[awacs_aws.Statement]:
    return [
        awacs_aws.Statement(
            Sid="DescribeInstances",
            Effect=awacs_aws.Allow,
            # Supports no resource-level permissions.
            Action=[ec2_actions.DescribeInstances],
            Resource=["*"],
        ),
    ]


def _launch_statements(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    launch_templates = [_launch_template_arn(lt) for lt in refs.launch_template_ids]
    return [
        # ec2:LaunchTemplate is set on every resource type RunInstances touches but one, so one
        # statement over "*" covers instance, volume, network interface, subnet, security group,
        # image, key pair and the template itself, and only for the stack's templates.
        # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/use-launch-templates-to-control-launching-instances.html
        awacs_aws.Statement(
            Sid="LaunchOnlyFromStackTemplates",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.RunInstances],
            Resource=["*"],
            Condition=awacs_aws.Condition(awacs_aws.ArnLike("ec2:LaunchTemplate", launch_templates)),
        ),
        # The one that carries no ec2:LaunchTemplate key: the spot request of a spot launch
        # (the Service Authorization Reference lists each resource type's keys). Every other
        # resource of the same request must still pass the statement above, so this admits no
        # launch by itself; without it every --spot launch is refused.
        awacs_aws.Statement(
            Sid="SpotRequestsOfStackLaunches",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.RunInstances],
            Resource=[_any_ec2("spot-instances-request")],
        ),
        # EC2 creates Spot's service-linked role, as the caller, on an account's first spot
        # launch; without this, that launch fails (AuthFailure.ServiceLinkedRoleCreationNotPermitted).
        # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-requests.html#service-linked-roles-spot-instance-requests
        awacs_aws.Statement(
            Sid="CreateSpotServiceRole",
            Effect=awacs_aws.Allow,
            Action=[iam_actions.CreateServiceLinkedRole],
            Resource=[Sub(
                "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/aws-service-role/"
                "spot.amazonaws.com/AWSServiceRoleForEC2Spot"
            )],
            Condition=awacs_aws.Condition(awacs_aws.StringEquals("iam:AWSServiceName", "spot.amazonaws.com")),
        ),
        # CreateFleet offers no ec2:LaunchTemplate key; the Denies below pin its templates, and
        # its fleet to the stack's tag (DenyFleetWithoutStackTag). ec2:Region is present on every
        # resource type a fleet is authorized against.
        awacs_aws.Statement(
            Sid="FleetRequests",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.CreateFleet],
            Resource=["*"],
            Condition=awacs_aws.Condition(awacs_aws.StringEquals("ec2:Region", Ref("AWS::Region"))),
        ),
        awacs_aws.Statement(
            Sid="DenyFleetFromOtherTemplates",
            Effect=awacs_aws.Deny,
            Action=[ec2_actions.CreateFleet],
            # Every other resource type a launch touches stays out of this Deny. For CreateFleet
            # the Service Authorization Reference lists fleet, instance, volume, subnet and image
            # (capacity reservations and placement groups, unused here, stay denied); the policy
            # AWS publishes for Karpenter (instant fleets only) also grants CreateFleet on network
            # interfaces, security groups, snapshots and spot requests, and the template names a
            # key pair. Leaving a type out would deny every launch that touches it; naming one
            # can never admit another template.
            NotResource=launch_templates
            + [_any_ec2(kind) for kind in FLEET_RESOURCE_TYPES],
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
        # Only the projects' node roles, each put on an instance by its project's template version.
        awacs_aws.Statement(
            Sid="PassOnlyNodeRoles",
            Effect=awacs_aws.Allow,
            Action=[iam_actions.PassRole],
            Resource=[refs.node_role_arns],
            # https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html
            Condition=awacs_aws.Condition(
                awacs_aws.StringEquals("iam:PassedToService", "ec2.amazonaws.com")
            ),
        ),
    ]


def _lease_statements() -> list[awacs_aws.Statement]:
    annex_instance = awacs_aws.Null("aws:ResourceTag/" + contract.TAG_ANNEX_NAME, "false")
    return [
        # Only the expiry key, and at least one key: ForAllValues is true for an empty set, so
        # the Null check rules that out.
        # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
        awacs_aws.Statement(
            Sid="MoveAnnexLeases",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.CreateTags],
            Resource=["*"],
            Condition=_all_of(
                annex_instance,
                awacs_aws.ForAllValuesStringEquals("aws:TagKeys", [contract.TAG_EXPIRY]),
                awacs_aws.Null("aws:TagKeys", "false"),
            ),
        ),
        awacs_aws.Statement(
            Sid="TerminateAnnexInstances",
            Effect=awacs_aws.Allow,
            Action=[ec2_actions.TerminateInstances],
            Resource=["*"],
            Condition=awacs_aws.Condition(annex_instance),
        ),
    ]


def _configuration_statements(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    return [
        awacs_aws.Statement(
            Sid="AnnexConfiguration",
            Effect=awacs_aws.Allow,
            Action=S3_OBJECT_ACTIONS,
            Resource=[_bucket_arn(refs.bucket, f"/{contract.ANNEX_PREFIX}/*")],
        ),
        awacs_aws.Statement(
            Sid="ListAnnexConfiguration",
            Effect=awacs_aws.Allow,
            Action=[s3_actions.ListBucket],
            Resource=[_bucket_arn(refs.bucket)],
        ),
    ]


def _registry_statements(table_arn: Any, actions: list[Any]) -> list[awacs_aws.Statement]:
    return [
        awacs_aws.Statement(Sid="AdministratorsRecord", Effect=awacs_aws.Allow, Action=actions, Resource=[table_arn])
    ]


# The broker's working items (lock, requests, launches) sit under project#<p>; users, caps and
# prices under other partition keys, which are the administrator's alone (annex_cloud.registry).
BROKER_WRITABLE_KEYS = ["project#*"]


def _broker_registry_writes(table_arn: Any) -> awacs_aws.Statement:
    # ForAllValues: every partition key the request touches must match (an empty set would
    # match too, so the Null check requires the key to be present).
    # https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/specifying-conditions.html
    return awacs_aws.Statement(
        Sid="BrokerWorkingItems",
        Effect=awacs_aws.Allow,
        Action=[ddb_actions.PutItem, ddb_actions.UpdateItem, ddb_actions.DeleteItem],
        Resource=[table_arn],
        Condition=awacs_aws.Condition(
            [
                awacs_aws.ForAllValuesStringLike("dynamodb:LeadingKeys", BROKER_WRITABLE_KEYS),
                awacs_aws.Null("dynamodb:LeadingKeys", "false"),
            ]
        ),
    )


def _launch_guards(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    """Denies on what a launch creates; each names the resource type it inspects."""
    instance = [_any_ec2("instance")]
    guards = []
    # aws:RequestTag with the instance resource of RunInstances:
    # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ExamplePolicies_EC2.html#iam-example-runinstances
    # One statement per key: keys inside one Null block are ANDed.
    for sid, key in (
        ("DenyLaunchWithoutProject", contract.TAG_PROJECT),
        ("DenyLaunchWithoutOwner", contract.TAG_OWNER),
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
    if refs.node_profile_arns is not None:
        # An instance runs with a project's node profile or is not launched: no other profile,
        # and none at all (the templates' default versions name none, so a node of theirs could
        # read nothing and would only power off). The broker's code picks the project's own.
        guards.append(
            _deny(
                "DenyOtherInstanceProfiles",
                LAUNCH_ACTIONS,
                instance,
                awacs_aws.ArnNotLike("ec2:InstanceProfile", refs.node_profile_arns),
            )
        )
    if refs.stack_name is not None:
        # The fleet itself carries the stack's tag (aws:RequestTag on the fleet resource), so the
        # enforcer, allowed to delete only fleets with that tag, can remove any fleet the broker made.
        guards.append(
            _deny(
                "DenyFleetWithoutStackTag",
                [ec2_actions.CreateFleet],
                [_any_ec2("fleet")],
                awacs_aws.StringNotEquals("aws:RequestTag/" + contract.TAG_STACK, refs.stack_name),
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
            awacs_aws.ForAnyValueStringEquals("aws:TagKeys", list(PROTECTED_INSTANCE_TAGS)),
            awacs_aws.Null("ec2:CreateAction", "true"),
        ),
        _deny("DenyUntagging", [ec2_actions.DeleteTags], instance),
    ]
    return guards


def broker_role_policy(refs: PolicyRefs) -> awacs_aws.PolicyDocument:
    return awacs_aws.PolicyDocument(
        Version="2012-10-17",
        Statement=_read_statements()
        + _launch_statements(refs)
        + _lease_statements()
        + _configuration_statements(refs)
        + _registry_statements(refs.table_arn, [ddb_actions.GetItem, ddb_actions.Query])
        + [_broker_registry_writes(refs.table_arn)]
        + _pool_statements(refs)
        + _launch_guards(refs)
        + [_logs_statement()],
    )


def _pool_statements(refs: PolicyRefs) -> list[awacs_aws.Statement]:
    """The recorded pools' secrets: the broker reads them (it mints the annexes' tokens), through
    SSM only; no other role of the stack, no node and no scientist has either grant."""
    if refs.pool_parameters is None or refs.pool_key_arn is None:
        return []
    return [
        awacs_aws.Statement(
            Sid="ReadRecordedPools",
            Effect=awacs_aws.Allow,
            Action=[ssm_actions.GetParameter],
            Resource=[refs.pool_parameters],
        ),
        # https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service
        awacs_aws.Statement(
            Sid="DecryptRecordedPools",
            Effect=awacs_aws.Allow,
            Action=[kms_actions.Decrypt],
            Resource=[refs.pool_key_arn],
            Condition=awacs_aws.Condition(
                awacs_aws.StringEquals("kms:ViaService", Sub("ssm.${AWS::Region}.amazonaws.com"))
            ),
        ),
    ]


def pool_key_policy() -> awacs_aws.PolicyDocument:
    """The pools' key: the account's IAM policies decide who may use it (AWS's default key
    policy), so only principals granted kms:Decrypt on it (the broker's role, the administrator)
    can read a pool's secret."""
    return awacs_aws.PolicyDocument(
        Version="2012-10-17",
        Statement=[
            awacs_aws.Statement(
                Sid="AccountPoliciesDecide",
                Effect=awacs_aws.Allow,
                Principal=awacs_aws.Principal("AWS", [Sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")]),
                Action=[awacs_aws.Action("kms", "*")],
                Resource=["*"],
            )
        ],
    )


def _logs_statement() -> awacs_aws.Statement:
    return awacs_aws.Statement(
        Sid="WriteOwnLogs",
        Effect=awacs_aws.Allow,
        Action=[logs_actions.CreateLogGroup, logs_actions.CreateLogStream, logs_actions.PutLogEvents],
        Resource=[Sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/*")],
    )


def node_role_policy(bucket: str, code_bucket: str, project_id: str, partition: str = "aws") -> awacs_aws.PolicyDocument:
    """One project's node role: its own annexes' material, and the bootstrap. Nothing else of the
    bucket, no listing (another annex's keys are not to be found), no other store.

    Made at issue-credentials time, so every name is a plain string."""
    return awacs_aws.PolicyDocument(
        Version="2012-10-17",
        Statement=[
            awacs_aws.Statement(
                Sid="ReadOwnProjectMaterial",
                Effect=awacs_aws.Allow,
                Action=[s3_actions.GetObject],
                Resource=[f"arn:{partition}:s3:::{bucket}/{contract.ANNEX_PREFIX}/{project_id}/*"],
            ),
            _read_bootstrap_statement(f"arn:{partition}:s3:::{code_bucket}"),
        ],
    )


def _read_bootstrap_statement(code_bucket_arn: str) -> awacs_aws.Statement:
    """The node bootstrap the launch templates' loader fetches (templates/node_bootstrap.py)."""
    return awacs_aws.Statement(
        Sid="ReadNodeBootstrap",
        Effect=awacs_aws.Allow,
        Action=[s3_actions.GetObject],
        Resource=[f"{code_bucket_arn}/{BOOTSTRAP_PREFIX}*"],
    )


def enforcer_role_policy(bucket: Any, table_arn: Any) -> awacs_aws.PolicyDocument:
    return awacs_aws.PolicyDocument(
        Version="2012-10-17",
        Statement=_registry_statements(table_arn, [ddb_actions.GetItem, ddb_actions.Query])
        + [
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
            # Every fleet the broker makes carries the stack's tag (its role may make no other);
            # the enforcer deletes only those, always with TerminateInstances=false (their
            # instances are judged by the lease rules).
            awacs_aws.Statement(
                Sid="DeleteStackFleets",
                Effect=awacs_aws.Allow,
                Action=[ec2_actions.DeleteFleets],
                Resource=["*"],
                Condition=awacs_aws.Condition(stack_tagged),
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
