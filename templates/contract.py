"""Names both programs, the enforcer and the instances agree on. Changing one breaks a contract."""

from __future__ import annotations

# The tag contract, the expiry format and the bucket layout live with the code that runs in AWS.
from annex_cloud.expiry import EXPIRY_FORMAT  # noqa: E402,F401
from annex_cloud.layout import (  # noqa: E402,F401
    ANNEX_PREFIX,
    NODE_ENV_OBJECT,
    PASSWORD_OBJECT,
    TOKEN_OBJECT,
    annex_prefix,
)
from annex_cloud.tags import (  # noqa: E402,F401
    REQUIRED_INSTANCE_TAGS,
    TAG_ANNEX_NAME,
    TAG_EXPIRY,
    TAG_IDLE,
    TAG_OWNER,
    TAG_PROJECT,
    TAG_STACK,
)

# Tags on a scientist's IAM user: the project she may act for and her caps. The managed policy
# reads the project through ${aws:PrincipalTag/htcondor:annex:project}.
USER_TAG_PROJECT = TAG_PROJECT
USER_TAG_MAX_INSTANCES = "htcondor:annex:max-instances"
USER_TAG_MAX_LEASE_HOURS = "htcondor:annex:max-lease-hours"
USER_TAG_MAX_SPEND = "htcondor:annex:max-spend-usd"
USER_TAG_MANAGED = "htcondor:annex:managed-by"
# Where she was issued: IAM users are account-wide, a stack is one region's, so a user of one stack
# must never be issued (her keys replaced, her caps overwritten) by another.
USER_TAG_STACK = TAG_STACK
USER_TAG_REGION = "htcondor:annex:region"
USER_PATH = "/condor-annex/"



def scientist_policy_name(stack_name: str, region: str) -> str:
    """The scientists' managed policy: one per stack and region (IAM names are account-wide)."""
    return f"{stack_name}-scientist-{region}"


# Images made by `annex-admin build-image`: the builder instance, the image and its snapshots
# carry the stack's tag and the build's id (teardown removes exactly those); the image also says
# which HTCondor it holds, when it was built, and from which image.
TAG_IMAGE_BUILD = "htcondor:annex:image-build"
TAG_HTCONDOR_VERSION = "htcondor:annex:htcondor-version"
TAG_HTCONDOR_SERIES = "htcondor:annex:htcondor-series"
TAG_BUILT_AT = "htcondor:annex:built-at"
TAG_BASE_IMAGE = "htcondor:annex:base-image"

DEFAULT_STACK_NAME = "HTCondorAnnex"
DEFAULT_INSTANCE_TYPES = ("m7i.large", "m6i.large", "m5.large")
DEFAULT_IMAGE_PARAMETER = (
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
)
MAX_AVAILABILITY_ZONES = 3
MIN_AVAILABILITY_ZONES = 2

# Caps defaults for issue-credentials.
DEFAULT_MAX_INSTANCES = 32
DEFAULT_MAX_LEASE_HOURS = 168
DEFAULT_MAX_SPEND_USD = 500.0

def artifact_bucket_name(stack_name: str, account: str, region: str) -> str:
    """The bucket setup keeps the functions' code in (it must exist before the stack does).

    Also used with CloudFormation's ``${AWS::AccountId}``/``${AWS::Region}`` in the template, so
    both sides name the same bucket. At most 6 + 12 + 1 + 14 + 1 + 10 = 44 characters.
    """
    import hashlib

    digest = hashlib.sha256(stack_name.encode()).hexdigest()[:10]
    return f"annex-{account}-{region}-{digest}"


def broker_function_name(stack_name: str) -> str:
    """The broker's name: fixed by the stack's name, so a client finds it without a lookup."""
    import hashlib

    name = f"{stack_name}-broker"
    return name if len(name) <= 64 else f"{stack_name[:44]}-{hashlib.sha256(stack_name.encode()).hexdigest()[:12]}-broker"


# Stack outputs the tools read (the stack is found by name; everything else by these).
OUT_VPC = "VpcId"
OUT_SUBNETS = "SubnetIds"  # comma-separated
OUT_AZS = "AvailabilityZones"  # comma-separated, same order as subnets
OUT_SECURITY_GROUP = "SecurityGroupId"
OUT_KEY_PAIR = "KeyPairName"
OUT_BUCKET = "ConfigBucket"
OUT_NODE_ROLE_PATH = "NodeRolePath"  # IAM path of the projects' node roles and profiles
OUT_SCIENTIST_POLICY = "ScientistPolicyArn"
OUT_ENFORCER_FUNCTION = "EnforcerFunctionName"
OUT_BROKER_FUNCTION = "BrokerFunctionName"
OUT_REGISTRY_TABLE = "RegistryTable"
OUT_CODE_BUCKET = "CodeBucket"
OUT_ENFORCER_RULE = "EnforcerRuleName"
OUT_IMAGE = "ImageId"
OUT_INSTANCE_TYPES = "InstanceTypes"  # comma-separated
OUT_LAUNCH_TEMPLATES = "LaunchTemplates"  # "type=lt-id,type=lt-id"
OUT_ALARM_TOPIC = "AlarmTopicArn"  # the enforcer's alarms notify it
OUT_ENFORCER_STATE_RULE = "EnforcerStateRuleName"  # hands every starting instance to the enforcer
OUT_POOL_KEY = "PoolKeyArn"  # the KMS key the recorded pools' secrets are encrypted with
OUT_POOL_PARAMETERS = "PoolParameterPath"  # the SSM path of the recorded pools (annex_cloud.pools)
REQUIRED_OUTPUTS = (
    OUT_VPC,
    OUT_SUBNETS,
    OUT_AZS,
    OUT_SECURITY_GROUP,
    OUT_KEY_PAIR,
    OUT_BUCKET,
    OUT_NODE_ROLE_PATH,
    OUT_SCIENTIST_POLICY,
    OUT_ENFORCER_FUNCTION,
    OUT_BROKER_FUNCTION,
    OUT_REGISTRY_TABLE,
    OUT_CODE_BUCKET,
    OUT_ENFORCER_RULE,
    OUT_IMAGE,
    OUT_INSTANCE_TYPES,
    OUT_LAUNCH_TEMPLATES,
    OUT_ALARM_TOPIC,
    OUT_ENFORCER_STATE_RULE,
    OUT_POOL_KEY,
    OUT_POOL_PARAMETERS,
)

ENFORCER_SCHEDULE = "rate(5 minutes)"
