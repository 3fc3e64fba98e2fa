"""The region stack: a pure function from ``StackSettings`` to a troposphere ``Template``.

No AWS calls happen here; ``annex_admin.deploy`` resolves zones and the image first.
"""

from __future__ import annotations

import ipaddress
import json
from importlib import resources

from troposphere import (
    Base64,
    GetAtt,
    Join,
    Output,
    Ref,
    Tags,
    Template,
)
from troposphere import awslambda, ec2, events, iam, s3

from templates import contract, policies
from templates.settings import METADATA_KEY, StackSettings, settings_record

ENFORCER_RUNTIME = "python3.12"


def load_bootstrap_script() -> str:
    return resources.files("annex_cloud.node").joinpath("bootstrap.sh").read_text()


def load_enforcer_source() -> str:
    return resources.files("annex_cloud").joinpath("enforcer.py").read_text()


def logical_id(prefix: str, instance_type: str) -> str:
    return prefix + "".join(part.capitalize() for part in instance_type.replace("-", ".").split("."))


def subnet_cidrs(vpc_cidr: str, count: int) -> list[str]:
    # /20 per zone leaves room for 4,000 instances in each.
    return [str(net) for net in list(ipaddress.ip_network(vpc_cidr).subnets(new_prefix=20))[:count]]


def build_template(settings: StackSettings) -> Template:
    if not settings.availability_zones:
        raise ValueError("settings.availability_zones must be resolved before building")
    if not settings.image_id:
        raise ValueError("settings.image_id must be resolved before building")
    t = Template()
    t.set_version("2010-09-09")
    t.set_description(
        f"condor-annex region stack {settings.stack_name}: network, launch templates, "
        "configuration bucket, scoped IAM and the lease enforcer."
    )
    # What it was built with, so that the next setup changes only what its options change.
    t.set_metadata({METADATA_KEY: settings_record(settings)})
    tags = Tags({"htcondor:annex:stack": settings.stack_name})

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

    instance_role = t.add_resource(
        iam.Role(
            "InstanceRole",
            AssumeRolePolicyDocument=policies.assume_role_document("ec2.amazonaws.com"),
            Policies=[
                iam.Policy(
                    PolicyName="ReadAnnexConfiguration",
                    PolicyDocument=policies.instance_role_policy(Ref(bucket)),
                )
            ],
            Tags=tags,
        )
    )
    instance_profile = t.add_resource(
        iam.InstanceProfile("InstanceProfile", Roles=[Ref(instance_role)])
    )

    user_data = Base64(
        Join(
            "",
            [
                "#!/bin/bash\n",
                "# condor-annex bootstrap; settings from the region stack:\n",
                "ANNEX_BUCKET='", Ref(bucket), "'\n",
                "ANNEX_REGION='", Ref("AWS::Region"), "'\n",
                "export ANNEX_BUCKET ANNEX_REGION\n",
                user_data_body(load_bootstrap_script()),
            ],
        )
    )
    launch_templates = {}
    for itype in settings.instance_types:
        lt = t.add_resource(
            ec2.LaunchTemplate(
                logical_id("LaunchTemplate", itype),
                LaunchTemplateName=f"{settings.stack_name}-{itype.replace('.', '-')}",
                LaunchTemplateData=ec2.LaunchTemplateData(
                    ImageId=settings.image_id,
                    InstanceType=itype,
                    KeyName=key_name,
                    IamInstanceProfile=ec2.IamInstanceProfile(Arn=GetAtt(instance_profile, "Arn")),
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

    policy_refs = policies.PolicyRefs(
        bucket=Ref(bucket),
        instance_role_arn=GetAtt(instance_role, "Arn"),
        launch_template_ids=[Ref(lt) for lt in launch_templates.values()],
        instance_types=list(settings.instance_types),
        subnet_ids=[Ref(s) for s in subnets],
        security_group_id=Ref(security_group),
        stack_name=settings.stack_name,
    )
    scientist_policy = t.add_resource(
        iam.ManagedPolicy(
            "ScientistPolicy",
            ManagedPolicyName=contract.scientist_policy_name(settings.stack_name, settings.region),
            Description="condor-annex scientists: launch, watch, extend and end their own project's annexes",
            Path=contract.USER_PATH,
            PolicyDocument=policies.scientist_policy(policy_refs),
        )
    )

    enforcer_role = t.add_resource(
        iam.Role(
            "EnforcerRole",
            AssumeRolePolicyDocument=policies.assume_role_document("lambda.amazonaws.com"),
            Policies=[
                iam.Policy(
                    PolicyName="EnforceAnnexLeases",
                    PolicyDocument=policies.enforcer_role_policy(Ref(bucket)),
                )
            ],
            Tags=tags,
        )
    )
    # The whole regional table, not just the allowed types: the function then does not change
    # when the administrator changes --instance-types, and instances of a type removed later
    # are still priced.
    prices = dict(settings.hourly_prices)
    enforcer = t.add_resource(
        awslambda.Function(
            "EnforcerFunction",
            Description="condor-annex lease, cap and orphan enforcer (runs every 5 minutes)",
            Runtime=ENFORCER_RUNTIME,
            Handler="index.handler",
            Role=GetAtt(enforcer_role, "Arn"),
            Timeout=300,
            MemorySize=256,
            Code=awslambda.Code(ZipFile=load_enforcer_source()),
            Environment=awslambda.Environment(
                Variables={
                    "ANNEX_BUCKET": Ref(bucket),
                    "ANNEX_PRICES": json.dumps(prices, sort_keys=True),
                }
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

    outputs = {
        contract.OUT_VPC: Ref(vpc),
        contract.OUT_SUBNETS: Join(",", [Ref(s) for s in subnets]),
        contract.OUT_AZS: ",".join(settings.availability_zones),
        contract.OUT_SECURITY_GROUP: Ref(security_group),
        # A literal, not a Ref: the key pair's name is fixed by the template.
        contract.OUT_KEY_PAIR: key_name,
        contract.OUT_BUCKET: Ref(bucket),
        contract.OUT_INSTANCE_ROLE: GetAtt(instance_role, "Arn"),
        contract.OUT_INSTANCE_PROFILE: GetAtt(instance_profile, "Arn"),
        contract.OUT_SCIENTIST_POLICY: Ref(scientist_policy),
        contract.OUT_ENFORCER_FUNCTION: Ref(enforcer),
        contract.OUT_ENFORCER_RULE: Ref(rule),
        contract.OUT_IMAGE: settings.image_id,
        contract.OUT_INSTANCE_TYPES: ",".join(settings.instance_types),
        contract.OUT_LAUNCH_TEMPLATES: Join(
            ",", [Join("=", [itype, Ref(lt)]) for itype, lt in launch_templates.items()]
        ),
    }
    for name, value in outputs.items():
        t.add_output(Output(name, Value=value))
    return t


def user_data_body(script: str) -> str:
    """The script as user data: no shebang (the header has one) and no comment lines.

    EC2 caps user data at 16 KB; the comments stay in annex_cloud/node/bootstrap.sh, where people read
    them. Shebangs of embedded scripts (``#!``) and shellcheck directives are kept.
    """
    lines = script.splitlines(keepends=True)
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    return "".join(line for line in lines if not _is_comment(line))


def _is_comment(line: str) -> bool:
    text = line.strip()
    return (text == "#" or text.startswith("# ")) and not text.startswith("# shellcheck")


def template_json(settings: StackSettings) -> str:
    return build_template(settings).to_json(indent=1)
