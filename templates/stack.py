"""The region stack: a pure function from ``StackSettings`` to a troposphere ``Template``.

No AWS calls happen here; ``annex_admin.deploy`` resolves zones and the image first.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from troposphere import (
    GetAtt,
    Join,
    Output,
    Ref,
    Sub,
    Tags,
    Template,
)
from troposphere import awslambda, cloudwatch, dynamodb, ec2, events, iam, kms, s3, sns

from annex_cloud import metrics
from annex_cloud.guardrails import FUNCTION_TIMEOUT_SECONDS
from annex_cloud.pools import pools_path
from annex_cloud.nodes import node_role_path
from annex_cloud.enforcer import STATE_CHANGE_DETAIL_TYPE, STATE_CHANGE_SOURCE
from templates import contract, node_bootstrap, policies
from templates.settings import METADATA_KEY, StackSettings, settings_record

FUNCTION_RUNTIME = "python3.12"
BROKER_HANDLER = "annex_cloud.broker.handler"
ENFORCER_HANDLER = "annex_cloud.enforcer.handler"


def logical_id(prefix: str, instance_type: str) -> str:
    return prefix + "".join(part.capitalize() for part in instance_type.replace("-", ".").split("."))


def launch_template_name(stack_name: str, instance_type: str) -> str:
    return f"{stack_name}-{instance_type.replace('.', '-')}"


def pool_key_alias(stack_name: str) -> str:
    return f"alias/condor-annex/{stack_name}/pools"


def subnet_cidrs(vpc_cidr: str, count: int) -> list[str]:
    # /20 per zone leaves room for 4,000 instances in each.
    return [str(net) for net in list(ipaddress.ip_network(vpc_cidr).subnets(new_prefix=20))[:count]]


def build_template(settings: StackSettings) -> Template:
    if not settings.availability_zones:
        raise ValueError("settings.availability_zones must be resolved before building")
    if not settings.image_id:
        raise ValueError("settings.image_id must be resolved before building")
    if not settings.code_key:
        raise ValueError("settings.code_key must be resolved before building")
    t = Template()
    t.set_version("2010-09-09")
    t.set_description(
        f"condor-annex region stack {settings.stack_name}: network, launch templates, "
        "configuration bucket, registry, the broker, scoped IAM and the lease enforcer."
    )
    # What it was built with, so that the next setup changes only what its options change.
    t.set_metadata({METADATA_KEY: settings_record(settings)})
    tags = Tags({contract.TAG_STACK: settings.stack_name})

    vpc = t.add_resource(
        ec2.VPC(
            "Vpc",
            CidrBlock=settings.vpc_cidr,
            EnableDnsHostnames=True,
            EnableDnsSupport=True,
            Tags=tags,
        )
    )
    igw = t.add_resource(ec2.InternetGateway("InternetGateway", Tags=tags))
    attach = t.add_resource(
        ec2.VPCGatewayAttachment("GatewayAttachment", VpcId=Ref(vpc), InternetGatewayId=Ref(igw))
    )
    routes = t.add_resource(ec2.RouteTable("PublicRouteTable", VpcId=Ref(vpc), Tags=tags))
    t.add_resource(
        ec2.Route(
            "DefaultRoute",
            DependsOn=attach.title,
            RouteTableId=Ref(routes),
            DestinationCidrBlock="0.0.0.0/0",
            GatewayId=Ref(igw),
        )
    )
    subnets = []
    for index, (zone, cidr) in enumerate(
        zip(settings.availability_zones, subnet_cidrs(settings.vpc_cidr, len(settings.availability_zones)))
    ):
        subnet = t.add_resource(
            ec2.Subnet(
                f"PublicSubnet{index + 1}",
                VpcId=Ref(vpc),
                AvailabilityZone=zone,
                CidrBlock=cidr,
                MapPublicIpOnLaunch=True,
                Tags=tags,
                # The zones were read from the region at setup (describe_availability_zones,
                # filtered to zones that offer the instance types), so naming them is the point.
                Metadata={"cfn-lint": {"config": {"ignore_checks": ["W3010"]}}},
            )
        )
        t.add_resource(
            ec2.SubnetRouteTableAssociation(
                f"PublicSubnet{index + 1}Routes", SubnetId=Ref(subnet), RouteTableId=Ref(routes)
            )
        )
        subnets.append(subnet)

    ingress = []
    if settings.ssh_cidr:
        ingress.append(
            ec2.SecurityGroupRule(
                IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp=settings.ssh_cidr,
                Description="SSH from the administrator's network",
            )
        )
    security_group = t.add_resource(
        ec2.SecurityGroup(
            "InstanceSecurityGroup",
            GroupDescription="condor-annex execute nodes: outbound to the pool, no inbound (CCB)",
            VpcId=Ref(vpc),
            SecurityGroupIngress=ingress,
            SecurityGroupEgress=[
                ec2.SecurityGroupRule(
                    IpProtocol="-1", CidrIp="0.0.0.0/0",
                    Description="Outbound to the pool's collector, package mirrors and S3",
                )
            ],
            Tags=tags,
        )
    )
    key_name = f"{settings.stack_name}-annex"
    t.add_resource(ec2.KeyPair("KeyPair", KeyName=key_name, KeyType="ed25519", Tags=tags))

    bucket = t.add_resource(
        s3.Bucket(
            "ConfigBucket",
            BucketEncryption=s3.BucketEncryption(
                ServerSideEncryptionConfiguration=[
                    s3.ServerSideEncryptionRule(
                        ServerSideEncryptionByDefault=s3.ServerSideEncryptionByDefault(
                            SSEAlgorithm="AES256"
                        ),
                        BucketKeyEnabled=True,
                    )
                ]
            ),
            PublicAccessBlockConfiguration=s3.PublicAccessBlockConfiguration(
                BlockPublicAcls=True,
                BlockPublicPolicy=True,
                IgnorePublicAcls=True,
                RestrictPublicBuckets=True,
            ),
            OwnershipControls=s3.OwnershipControls(
                Rules=[s3.OwnershipControlsRule(ObjectOwnership="BucketOwnerEnforced")]
            ),
            LifecycleConfiguration=s3.LifecycleConfiguration(
                Rules=[
                    s3.LifecycleRule(
                        Id="ExpireAnnexConfiguration",
                        Status="Enabled",
                        Prefix=f"{contract.ANNEX_PREFIX}/",
                        # No lease may exceed the cap issue-credentials allows (at most a
                        # year); a stale configuration never outlives that.
                        ExpirationInDays=400,
                        AbortIncompleteMultipartUpload=s3.AbortIncompleteMultipartUpload(
                            DaysAfterInitiation=1
                        ),
                    )
                ]
            ),
            Tags=tags,
        )
    )

    # The functions' zip and the node bootstrap live here; setup makes the bucket before the stack.
    code_bucket = Sub(contract.artifact_bucket_name(settings.stack_name, "${AWS::AccountId}", "${AWS::Region}"))
    user_data = node_bootstrap.user_data(Ref(bucket), Ref("AWS::Region"), code_bucket)
    # No instance profile here: each project's nodes get their own role through the project's
    # version of these templates (annex_cloud.nodes); an instance from a default version can read
    # nothing, and powers off.
    launch_templates = {}
    for itype in settings.instance_types:
        lt = t.add_resource(
            ec2.LaunchTemplate(
                logical_id("LaunchTemplate", itype),
                LaunchTemplateName=launch_template_name(settings.stack_name, itype),
                LaunchTemplateData=ec2.LaunchTemplateData(
                    ImageId=settings.image_id,
                    InstanceType=itype,
                    KeyName=key_name,
                    InstanceInitiatedShutdownBehavior="terminate",
                    MetadataOptions=ec2.MetadataOptions(
                        HttpEndpoint="enabled",
                        HttpTokens="required",
                        HttpPutResponseHopLimit=1,
                        InstanceMetadataTags="enabled",
                    ),
                    SecurityGroupIds=[Ref(security_group)],
                    BlockDeviceMappings=[
                        ec2.LaunchTemplateBlockDeviceMapping(
                            DeviceName="/dev/xvda",
                            Ebs=ec2.EBSBlockDevice(
                                VolumeSize=30, VolumeType="gp3", Encrypted=True,
                                DeleteOnTermination=True,
                            ),
                        )
                    ],
                    UserData=user_data,
                ),
            )
        )
        launch_templates[itype] = lt

    registry = t.add_resource(
        dynamodb.Table(
            "Registry",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                dynamodb.AttributeDefinition(AttributeName="pk", AttributeType="S"),
                dynamodb.AttributeDefinition(AttributeName="sk", AttributeType="S"),
            ],
            KeySchema=[
                dynamodb.KeySchema(AttributeName="pk", KeyType="HASH"),
                dynamodb.KeySchema(AttributeName="sk", KeyType="RANGE"),
            ],
            TimeToLiveSpecification=dynamodb.TimeToLiveSpecification(AttributeName="ttl", Enabled=True),
            PointInTimeRecoverySpecification=dynamodb.PointInTimeRecoverySpecification(
                PointInTimeRecoveryEnabled=True
            ),
            SSESpecification=dynamodb.SSESpecification(SSEEnabled=True),
            Tags=tags,
        )
    )
    # The recorded pools' secrets (annex_cloud.pools): SSM SecureStrings the administrator writes
    # with this key; of the stack's roles, only the broker's may read them.
    pool_key = t.add_resource(
        kms.Key(
            "PoolKey",
            Description=f"condor-annex {settings.stack_name}: encrypts the recorded pools' signing keys and passwords",
            EnableKeyRotation=True,
            PendingWindowInDays=7,
            KeyPolicy=policies.pool_key_policy(),
            Tags=tags,
        )
    )
    t.add_resource(kms.Alias("PoolKeyAlias", AliasName=pool_key_alias(settings.stack_name), TargetKeyId=Ref(pool_key)))
    pool_path = pools_path(settings.stack_name)
    code = awslambda.Code(S3Bucket=code_bucket, S3Key=settings.code_key)
    node_path = node_role_path(settings.stack_name, settings.region)
    policy_refs = policies.PolicyRefs(
        bucket=Ref(bucket),
        node_role_arns=Sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role" + node_path + "*"),
        node_profile_arns=Sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:instance-profile" + node_path + "*"),
        launch_template_ids=[Ref(lt) for lt in launch_templates.values()],
        instance_types=list(settings.instance_types),
        subnet_ids=[Ref(s) for s in subnets],
        table_arn=GetAtt(registry, "Arn"),
        stack_name=settings.stack_name,
        pool_parameters=Sub("arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter" + pool_path + "*"),
        pool_key_arn=GetAtt(pool_key, "Arn"),
    )
    broker_role = t.add_resource(
        iam.Role(
            "BrokerRole",
            AssumeRolePolicyDocument=policies.assume_role_document("lambda.amazonaws.com"),
            Policies=[iam.Policy(PolicyName="BrokerActions", PolicyDocument=policies.broker_role_policy(policy_refs))],
            Tags=tags,
        )
    )
    broker = t.add_resource(
        awslambda.Function(
            "BrokerFunction",
            FunctionName=contract.broker_function_name(settings.stack_name),
            Description="condor-annex broker: plans, launches, extends and ends annexes for scientists",
            Runtime=FUNCTION_RUNTIME,
            Handler=BROKER_HANDLER,
            Role=GetAtt(broker_role, "Arn"),
            Timeout=FUNCTION_TIMEOUT_SECONDS,
            MemorySize=512,
            **_reserved(settings.broker_concurrency),
            Code=code,
            Environment=awslambda.Environment(
                Variables={
                    "ANNEX_STACK_NAME": settings.stack_name,
                    "ANNEX_BUCKET": Ref(bucket),
                    "ANNEX_REGISTRY_TABLE": Ref(registry),
                    "ANNEX_SUBNETS": Join(",", [Ref(s) for s in subnets]),
                    "ANNEX_LAUNCH_TEMPLATES": Join(
                        ",", [Join("=", [itype, Ref(lt)]) for itype, lt in launch_templates.items()]
                    ),
                }
            ),
            Tags=tags,
        )
    )
    scientist_policy = t.add_resource(
        iam.ManagedPolicy(
            "ScientistPolicy",
            ManagedPolicyName=contract.scientist_policy_name(settings.stack_name, settings.region),
            Description="condor-annex scientists: ask the broker, nothing else",
            Path=contract.USER_PATH,
            PolicyDocument=policies.scientist_policy(GetAtt(broker, "Arn")),
        )
    )

    enforcer_role = t.add_resource(
        iam.Role(
            "EnforcerRole",
            AssumeRolePolicyDocument=policies.assume_role_document("lambda.amazonaws.com"),
            Policies=[
                iam.Policy(
                    PolicyName="EnforceAnnexLeases",
                    PolicyDocument=policies.enforcer_role_policy(Ref(bucket), GetAtt(registry, "Arn")),
                )
            ],
            Tags=tags,
        )
    )
    enforcer = t.add_resource(
        awslambda.Function(
            "EnforcerFunction",
            Description="condor-annex lease, cap and orphan enforcer (runs every 5 minutes)",
            Runtime=FUNCTION_RUNTIME,
            Handler=ENFORCER_HANDLER,
            Role=GetAtt(enforcer_role, "Arn"),
            Timeout=FUNCTION_TIMEOUT_SECONDS,
            MemorySize=256,
            **_reserved(settings.enforcer_concurrency),
            Code=code,
            Environment=awslambda.Environment(
                Variables={"ANNEX_BUCKET": Ref(bucket), "ANNEX_REGISTRY_TABLE": Ref(registry)}
            ),
            Tags=tags,
        )
    )
    rule = t.add_resource(
        events.Rule(
            "EnforcerSchedule",
            Description="Run the condor-annex enforcer",
            ScheduleExpression=contract.ENFORCER_SCHEDULE,
            State="ENABLED",
            Targets=[events.Target(Arn=GetAtt(enforcer, "Arn"), Id="AnnexEnforcer")],
        )
    )
    t.add_resource(
        awslambda.Permission(
            "EnforcerSchedulePermission",
            FunctionName=Ref(enforcer),
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
            SourceArn=GetAtt(rule, "Arn"),
        )
    )

    _add_enforcer_backstops(
        t, settings, enforcer=enforcer, enforcer_role=enforcer_role, launch_templates=launch_templates
    )

    outputs = {
        contract.OUT_VPC: Ref(vpc),
        contract.OUT_SUBNETS: Join(",", [Ref(s) for s in subnets]),
        contract.OUT_AZS: ",".join(settings.availability_zones),
        contract.OUT_SECURITY_GROUP: Ref(security_group),
        # A literal, not a Ref: the key pair's name is fixed by the template.
        contract.OUT_KEY_PAIR: key_name,
        contract.OUT_BUCKET: Ref(bucket),
        # A literal: the path of the projects' node roles follows from the stack and region.
        contract.OUT_NODE_ROLE_PATH: node_path,
        contract.OUT_SCIENTIST_POLICY: Ref(scientist_policy),
        contract.OUT_ENFORCER_FUNCTION: Ref(enforcer),
        contract.OUT_BROKER_FUNCTION: Ref(broker),
        contract.OUT_REGISTRY_TABLE: Ref(registry),
        contract.OUT_CODE_BUCKET: code.S3Bucket,
        contract.OUT_ENFORCER_RULE: Ref(rule),
        contract.OUT_IMAGE: settings.image_id,
        contract.OUT_INSTANCE_TYPES: ",".join(settings.instance_types),
        contract.OUT_LAUNCH_TEMPLATES: Join(
            ",", [Join("=", [itype, Ref(lt)]) for itype, lt in launch_templates.items()]
        ),
        contract.OUT_POOL_KEY: GetAtt(pool_key, "Arn"),
        # A literal: the path follows from the stack's name (annex_cloud.pools).
        contract.OUT_POOL_PARAMETERS: pool_path,
    }
    for name, value in outputs.items():
        t.add_output(Output(name, Value=value))
    return t


# --- the enforcer's backstops: nothing shields an instance, leftovers, state changes, alarms ----

ALARM_EMAIL_RESOURCE = "EnforcerAlarmEmail"
# The alarms look at 5-minute periods: the schedule's own rhythm.
ALARM_PERIOD_SECONDS = 300
# States in which a new instance is handed to the enforcer at once (the first two of its life).
STATE_CHANGE_STATES = ["pending", "running"]


def _add_enforcer_backstops(
    t: Template,
    settings: StackSettings,
    *,
    enforcer: awslambda.Function,
    enforcer_role: iam.Role,
    launch_templates: dict[str, ec2.LaunchTemplate],
) -> None:
    """What makes the enforcer hard to block or blind, kept apart from the blocks it extends."""
    _tag_volumes_at_launch(launch_templates.values(), settings.stack_name)
    _name_the_stack_to_the_enforcer(enforcer, settings.stack_name, launch_templates)
    t.add_resource(
        iam.PolicyType(
            "EnforcerBackstopPolicy",
            PolicyName="EndAnnexInstancesAndLeftovers",
            PolicyDocument=policies.enforcer_backstop_policy(
                settings.stack_name, [Ref(lt) for lt in launch_templates.values()]
            ),
            Roles=[Ref(enforcer_role)],
        )
    )
    state_rule = _add_state_change_rule(t, enforcer)
    topic = _add_alarm_topic(t, settings.stack_name, settings.notify_email)
    _add_enforcer_alarms(t, settings.stack_name, enforcer, topic)
    t.add_output(Output(contract.OUT_ALARM_TOPIC, Value=Ref(topic)))
    t.add_output(Output(contract.OUT_ENFORCER_STATE_RULE, Value=Ref(state_rule)))


def _tag_volumes_at_launch(launch_templates: Iterable[ec2.LaunchTemplate], stack_name: str) -> None:
    """Volumes carry the stack's tag from creation, so one left behind is known as the stack's.
    (Spot requests cannot be tagged here: EC2 then refuses every on-demand launch.)"""
    for lt in launch_templates:
        lt.LaunchTemplateData.TagSpecifications = [
            ec2.TagSpecifications(ResourceType="volume", Tags=Tags({contract.TAG_STACK: stack_name}))
        ]


def _name_the_stack_to_the_enforcer(
    enforcer: awslambda.Function, stack_name: str, launch_templates: dict[str, ec2.LaunchTemplate]
) -> None:
    """The stack's name (its metrics' dimension, its leftovers' tag) and launch templates (its
    instances, whatever their tags), in the function's environment."""
    enforcer.Environment.Variables.update(
        {
            "ANNEX_STACK_NAME": stack_name,
            "ANNEX_LAUNCH_TEMPLATES": Join(",", [Ref(lt) for lt in launch_templates.values()]),
            "ANNEX_LAUNCH_TEMPLATE_NAMES": ",".join(
                launch_template_name(stack_name, itype) for itype in launch_templates
            ),
        }
    )


def _reserved(executions: int | None) -> dict[str, int]:
    """A function's reserved concurrency, when the account can spare it (annex_admin.concurrency)."""
    return {} if executions is None else {"ReservedConcurrentExecutions": executions}


def _add_state_change_rule(t: Template, enforcer: awslambda.Function) -> events.Rule:
    """Every instance that starts is handed to the enforcer at once: one outside the broker's
    rules ends within a minute, not at the next sweep."""
    rule = t.add_resource(
        events.Rule(
            "EnforcerStateChangeRule",
            Description="Hand every starting EC2 instance to the condor-annex enforcer",
            EventPattern={
                "source": [STATE_CHANGE_SOURCE],
                "detail-type": [STATE_CHANGE_DETAIL_TYPE],
                "detail": {"state": STATE_CHANGE_STATES},
            },
            State="ENABLED",
            Targets=[events.Target(Arn=GetAtt(enforcer, "Arn"), Id="AnnexEnforcerStateChange")],
        )
    )
    t.add_resource(
        awslambda.Permission(
            "EnforcerStateChangePermission",
            FunctionName=Ref(enforcer),
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
            SourceArn=GetAtt(rule, "Arn"),
        )
    )
    return rule


def _add_alarm_topic(t: Template, stack_name: str, notify_email: str | None) -> sns.Topic:
    """The topic the alarms notify, and the address ``annex-admin setup --notify-email`` gave.

    The address is written into the template (not a parameter): the template alone then says
    what the stack has, and setup reads it back from there to keep it."""
    topic = t.add_resource(
        sns.Topic(
            "EnforcerAlarmTopic",
            DisplayName=f"condor-annex {stack_name} enforcer alarms",
            Tags=Tags({contract.TAG_STACK: stack_name}),
        )
    )
    if notify_email:
        t.add_resource(
            sns.SubscriptionResource(
                ALARM_EMAIL_RESOURCE, TopicArn=Ref(topic), Protocol="email", Endpoint=notify_email
            )
        )
    return topic


def _add_enforcer_alarms(t: Template, stack_name: str, enforcer: awslambda.Function, topic: sns.Topic) -> None:
    """Heard when it fails: the function failing, a sweep failing or leaving an instance alive,
    and no sweep at all for three periods (missing data counts as failure)."""
    ours = [cloudwatch.MetricDimension(Name=metrics.DIMENSION, Value=stack_name)]
    function = [cloudwatch.MetricDimension(Name="FunctionName", Value=Ref(enforcer))]
    alarms = [
        ("EnforcerFunctionErrorsAlarm", "AWS/Lambda", "Errors", function, "GreaterThanThreshold", 0, 1, "notBreaching",
         "the enforcer function failed (an exception or a timeout)"),
        ("EnforcerSweepErrorsAlarm", metrics.NAMESPACE, metrics.ERRORS, ours, "GreaterThanThreshold", 0, 1,
         "notBreaching", "an enforcer run met errors (see the function's log)"),
        ("EnforcerCouldNotEndAlarm", metrics.NAMESPACE, metrics.COULD_NOT_END, ours, "GreaterThanThreshold", 0, 1,
         "notBreaching", "the enforcer condemned an instance it could not end: it is still costing money"),
        ("EnforcerHeartbeatAlarm", metrics.NAMESPACE, metrics.HEARTBEAT, ours, "LessThanThreshold", 1, 3,
         "breaching", "no enforcer sweep completed for 15 minutes: leases are not being enforced"),
    ]
    for title, namespace, metric, dimensions, comparison, threshold, periods, missing, what in alarms:
        t.add_resource(
            cloudwatch.Alarm(
                title,
                AlarmDescription=f"condor-annex {stack_name}: {what}",
                Namespace=namespace,
                MetricName=metric,
                Dimensions=dimensions,
                Statistic="Sum",
                Period=ALARM_PERIOD_SECONDS,
                EvaluationPeriods=periods,
                DatapointsToAlarm=periods,
                Threshold=threshold,
                ComparisonOperator=comparison,
                TreatMissingData=missing,
                AlarmActions=[Ref(topic)],
                OKActions=[Ref(topic)],
            )
        )


def template_json(settings: StackSettings) -> str:
    return build_template(settings).to_json(indent=1)
