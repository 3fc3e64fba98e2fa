"""The deployed IAM documents, evaluated request by request with an IAM policy simulator.

Four principals: the scientist (her IAM user, with her project tag, and the stack's managed
policy), the broker's role, the enforcer's role and the instances' role. The documents are the
ones the emulator stored when the real template was deployed (every Ref resolved), evaluated by
@cloud-copilot/iam-simulate with the context keys AWS would supply. All requests run in one Node
process; each case below is one request and one test, with the reason it must be decided so.

A case fails when the simulator ignores one of its context keys (a key AWS does not send for that
action and resource), so every context here is one AWS could produce. A denial names the Deny
statement that must decide it (``denied_by``); a denial without one must be implicit (no statement
allows it), so a case never passes for a reason other than the one it states.

The emulator cannot prove any of the conditional rules below: it counts every condition as true
and checks EC2 against resource "*" (see test_emulator_enforcement.py). This module is where the
broker's guards (templates, types, subnets, tags, template overrides) are proven.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest

from annex_cloud.pools import pool_parameter
from templates import contract
from templates.node_bootstrap import bootstrap_artifact
from tests.policy.simulator import simulate
from tests.policy.stack_under_test import REGION, DeployedStack

USER = "needsmoore"
PROJECT = "ProjA"
OTHER_PROJECT = "ProjB"
ANNEX = "proja-annex-1"
EXPIRY = "2026-12-18T23:59:00Z"

ALLOW = "Allowed"
DENY = "Denied"

Context = dict[str, Any]
Resource = Callable[[DeployedStack], str]


@dataclass(frozen=True)
class Case:
    id: str
    action: str
    resource: Resource
    expect: str
    reason: str  # why AWS must decide it so: the rule this case pins
    context: Callable[[DeployedStack], Context] = lambda s: {}
    who: str = "scientist"  # scientist | broker | enforcer | instance
    denied_by: str | None = None  # the Deny statement that must decide; None: implicitly denied
    known_gap: str | None = None  # expected to fail today (strict xfail), and why


def scientist(*args: Any, **kwargs: Any) -> Case:
    return Case(*args, who="scientist", **kwargs)


def broker(*args: Any, **kwargs: Any) -> Case:
    return Case(*args, who="broker", **kwargs)


def enforcer(*args: Any, **kwargs: Any) -> Case:
    return Case(*args, who="enforcer", **kwargs)


def instance_role(*args: Any, **kwargs: Any) -> Case:
    return Case(*args, who="instance", **kwargs)


# --- request context, as AWS builds it ------------------------------------------------------------

def request_tags(**overrides: str | None) -> Context:
    """aws:RequestTag/* and aws:TagKeys for the tags the broker puts on an instance."""
    tags: dict[str, str | None] = {
        contract.TAG_ANNEX_NAME: ANNEX,
        contract.TAG_PROJECT: PROJECT,
        contract.TAG_EXPIRY: EXPIRY,
        contract.TAG_IDLE: "900",
        contract.TAG_OWNER: USER,
    }
    tags.update({k.replace("__", ":"): v for k, v in overrides.items()})
    present = {k: v for k, v in tags.items() if v is not None}
    context: Context = {f"aws:RequestTag/{k}": v for k, v in present.items()}
    context["aws:TagKeys"] = list(present)
    return context


def without(key: str) -> dict[str, None]:
    return {key.replace(":", "__"): None}


def launch(s: DeployedStack, itype: str = "m7i.large", **extra: Any) -> Context:
    """Context common to every resource of a RunInstances from the stack's template."""
    return {"ec2:LaunchTemplate": s.launch_template_arn(itype), "ec2:Region": REGION, **extra}


def launch_instance(s: DeployedStack, itype: str = "m7i.large", lt_type: str | None = None, **tags: str | None) -> Context:
    context = launch(s, lt_type or itype)
    context.update(request_tags(**tags))
    context.update({"ec2:InstanceType": itype, "ec2:InstanceProfile": s.projects[PROJECT].node_profile_arn,
                    "ec2:IsLaunchTemplateResource": "false"})
    return context


def fleet_instance(s: DeployedStack, itype: str = "m7i.large", **tags: str | None) -> Context:
    context = request_tags(**tags)
    context.update({"ec2:InstanceType": itype, "ec2:Region": REGION,
                    "ec2:InstanceProfile": s.projects[PROJECT].node_profile_arn})
    return context


def existing_instance(project: str = PROJECT, **more: str) -> Context:
    """An annex instance as it runs: every contract tag, as aws:ResourceTag/*."""
    tags = {
        contract.TAG_ANNEX_NAME: ANNEX,
        contract.TAG_PROJECT: project,
        contract.TAG_EXPIRY: EXPIRY,
        contract.TAG_IDLE: "900",
        contract.TAG_OWNER: USER,
        **more,
    }
    return {f"aws:ResourceTag/{k}": v for k, v in tags.items()} | {"ec2:Region": REGION}


def non_annex_instance(s: DeployedStack) -> Context:
    return {"ec2:Region": REGION, "aws:ResourceTag/Name": "payroll-db"}


def retag(keys: dict[str, str], project: str = PROJECT) -> Context:
    """A CreateTags call after creation (no ec2:CreateAction) on an instance of `project`."""
    context = existing_instance(project)
    context.update({f"aws:RequestTag/{k}": v for k, v in keys.items()})
    context["aws:TagKeys"] = list(keys)
    return context


def tag_on_create(action: str) -> Callable[[DeployedStack], Context]:
    return lambda s: {**request_tags(), "ec2:CreateAction": action, "ec2:Region": REGION}


def items(*keys: str) -> Callable[[DeployedStack], Context]:
    """A DynamoDB item request: the partition keys it touches."""
    return lambda s: {"dynamodb:LeadingKeys": list(keys)}


def passed_to(service: str) -> Callable[[DeployedStack], Context]:
    return lambda s: {"iam:PassedToService": service}


def region(s: DeployedStack) -> Context:
    return {"ec2:Region": REGION}


def fleet_request(stack: str = contract.DEFAULT_STACK_NAME) -> Callable[[DeployedStack], Context]:
    """The fleet resource of a CreateFleet: the tags the broker puts on the fleet itself."""
    tags = {contract.TAG_STACK: stack, contract.TAG_PROJECT: PROJECT, contract.TAG_ANNEX_NAME: ANNEX}
    return lambda s: {"ec2:Region": REGION, **{f"aws:RequestTag/{k}": v for k, v in tags.items()},
                      "aws:TagKeys": list(tags)}


# --- resources --------------------------------------------------------------------------------------

def instance(s: DeployedStack, instance_id: str = "i-0123456789abcdef0") -> str:
    return s.ec2_arn(f"instance/{instance_id}")


FLEET: Resource = lambda s: s.ec2_arn("fleet/fleet-01234567-89ab-cdef-0123-456789abcdef")  # noqa: E731


def vpc_arn(s: DeployedStack) -> str:
    return s.ec2_arn("vpc/" + s.outputs[contract.OUT_VPC])


def obj(key: str) -> Resource:
    return lambda s: f"arn:aws:s3:::{s.bucket}/{key}"


def bucket(s: DeployedStack) -> str:
    return f"arn:aws:s3:::{s.bucket}"


def code_object(s: DeployedStack) -> str:
    return f"arn:aws:s3:::{s.outputs[contract.OUT_CODE_BUCKET]}/functions/annex_cloud-0123456789abcdef0123.zip"


def bootstrap_object(s: DeployedStack) -> str:
    return f"arn:aws:s3:::{s.outputs[contract.OUT_CODE_BUCKET]}/{bootstrap_artifact().key}"


def iam_user(name: str) -> Resource:
    return lambda s: f"arn:aws:iam::{s.account}:user{contract.USER_PATH}{name}"


def rule(s: DeployedStack) -> str:
    return f"arn:aws:events:{REGION}:{s.account}:rule/{s.outputs[contract.OUT_ENFORCER_RULE]}"


def log_stream(function: Callable[[DeployedStack], str]) -> Resource:
    return lambda s: (f"arn:aws:logs:{REGION}:{s.account}:log-group:/aws/lambda/{function(s)}"
                      ":log-stream:2026/12/18/[$LATEST]0123456789abcdef")


OWN = contract.annex_prefix(PROJECT, ANNEX)
OTHER = contract.annex_prefix(OTHER_PROJECT, "projb-annex-1")
STACK: Resource = lambda s: s.stack_id  # noqa: E731
BROKER_FN: Resource = lambda s: s.broker.arn  # noqa: E731
ENFORCER_FN: Resource = lambda s: s.enforcer.arn  # noqa: E731
BROKER_ROLE: Resource = lambda s: s.broker.role_arn  # noqa: E731
ENFORCER_ROLE: Resource = lambda s: s.enforcer.role_arn  # noqa: E731
NODE_ROLE: Resource = lambda s: s.projects[PROJECT].node_role_arn  # noqa: E731
OTHER_NODE_ROLE: Resource = lambda s: s.projects[OTHER_PROJECT].node_role_arn  # noqa: E731
TABLE: Resource = lambda s: s.table_arn  # noqa: E731
OTHER_TABLE: Resource = lambda s: f"arn:aws:dynamodb:{REGION}:{s.account}:table/Payroll"  # noqa: E731
SCIENTIST_POLICY: Resource = lambda s: s.outputs[contract.OUT_SCIENTIST_POLICY]  # noqa: E731
OTHER_LT: Resource = lambda s: s.ec2_arn("launch-template/lt-0ffeeffeeffeeffee")  # noqa: E731
FOREIGN_SUBNET: Resource = lambda s: s.ec2_arn("subnet/subnet-0f0f0f0f0f0f0f0f0")  # noqa: E731
IMAGE: Resource = lambda s: f"arn:aws:ec2:{REGION}::image/ami-0123456789abcdef0"  # noqa: E731
SG: Resource = lambda s: s.ec2_arn("security-group/" + s.outputs[contract.OUT_SECURITY_GROUP])  # noqa: E731
SPOT_REQUEST: Resource = lambda s: s.ec2_arn("spot-instances-request/sir-0123456789abcdef")  # noqa: E731
VOLUME: Resource = lambda s: s.ec2_arn("volume/vol-0123456789abcdef0")  # noqa: E731
POOL_PARAMETER: Resource = lambda s: (  # noqa: E731
    f"arn:aws:ssm:{REGION}:{s.account}:parameter" + pool_parameter(contract.DEFAULT_STACK_NAME))
PROJECT_POOL_PARAMETER: Resource = lambda s: (  # noqa: E731
    f"arn:aws:ssm:{REGION}:{s.account}:parameter" + pool_parameter(contract.DEFAULT_STACK_NAME, PROJECT))
OTHER_PARAMETER: Resource = lambda s: f"arn:aws:ssm:{REGION}:{s.account}:parameter/payroll/db-password"  # noqa: E731
POOL_KEY: Resource = lambda s: s.outputs[contract.OUT_POOL_KEY]  # noqa: E731
VIA_SSM: Callable[[DeployedStack], Context] = lambda s: {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}  # noqa: E731
CAPS = f"caps#{PROJECT}"
WORK = f"project#{PROJECT}"  # the broker's working items: lock, requests, launches
ANYWHERE: Resource = lambda s: "*"  # noqa: E731
LAUNCH_TEMPLATE: Resource = lambda s: s.launch_template_arn()  # noqa: E731


def protect(s: DeployedStack) -> Context:
    return existing_instance() | {"ec2:Attribute/DisableApiTermination": "true"}


# --- the scientist: her keys may only ask ----------------------------------------------------------

SCIENTIST_CASES = [
    scientist("scientist-reads-the-stacks-pool", "ssm:GetParameter", POOL_PARAMETER, DENY,
              "the pool's key is the stack's: she holds no pool secret"),
    scientist("scientist-reads-her-projects-pool", "ssm:GetParameter", PROJECT_POOL_PARAMETER, DENY,
              "her project's own pool is kept the same way"),
    scientist("scientist-decrypts-with-the-pool-key", "kms:Decrypt", POOL_KEY, DENY,
              "no grant on the pools' key", VIA_SSM),

    scientist("ask-the-broker", "lambda:InvokeFunction", BROKER_FN, ALLOW,
              "every condor_annex command is one Invoke of the stack's broker"),
    scientist("ask-a-published-broker-version", "lambda:InvokeFunction", lambda s: s.broker.arn + ":1", DENY,
              "only the broker's current code answers her; a qualified ARN is another resource"),
    scientist("invoke-the-enforcer", "lambda:InvokeFunction", ENFORCER_FN, DENY,
              "the enforcer is the administrator's backstop; she cannot run (or flood) it"),
    scientist("invoke-another-function", "lambda:InvokeFunction",
              lambda s: s.function_arn("payroll-export"), DENY, "her grant names one function"),
    # --- EC2: nothing that starts, changes or stops an instance, and nothing to read ---------------
    scientist("run-instances-from-stack-template", "ec2:RunInstances", instance, DENY,
              "EC2 takes launch parameters no condition key sees (user data, MaxCount, protection): "
              "only the broker launches", launch_instance),
    scientist("run-instances-launch-template", "ec2:RunInstances", LAUNCH_TEMPLATE, DENY,
              "not even the stack's own template may be launched by her keys",
              lambda s: launch(s, **{"ec2:IsLaunchTemplateResource": "true"})),
    scientist("create-fleet-fleet", "ec2:CreateFleet", lambda s: s.ec2_arn("fleet/fleet-01234567-89ab-cdef-0123-456789abcdef"),
              DENY, "fleet type maintain/request and image overrides would outlive any lease", region),
    scientist("create-fleet-instance", "ec2:CreateFleet", instance, DENY,
              "an instant fleet launches as the caller; she has no launch right", fleet_instance),
    scientist("request-spot-instances", "ec2:RequestSpotInstances", SPOT_REQUEST, DENY,
              "a persistent spot request relaunches after the enforcer terminates", region),
    scientist("tag-on-create-run-instances", "ec2:CreateTags", instance, DENY,
              "tags ride only on launches, and she launches nothing", tag_on_create("RunInstances")),
    scientist("tag-on-create-create-fleet", "ec2:CreateTags", instance, DENY,
              "tags ride only on launches, and she launches nothing", tag_on_create("CreateFleet")),
    scientist("extend-own-lease-directly", "ec2:CreateTags", instance, DENY,
              "a lease moves only through the broker, which checks the lease and spend caps",
              lambda s: retag({contract.TAG_EXPIRY: "2030-01-01T00:00:00Z"})),
    scientist("retag-own-instance-into-another-project", "ec2:CreateTags", instance, DENY,
              "project and owner tags are fixed at creation by the broker",
              lambda s: retag({contract.TAG_PROJECT: OTHER_PROJECT})),
    scientist("delete-own-expiry-tag", "ec2:DeleteTags", instance, DENY,
              "an instance without an expiry would be judged only by the enforcer's next sweep",
              lambda s: existing_instance() | {"aws:TagKeys": [contract.TAG_EXPIRY]}),
    scientist("terminate-own-instance-directly", "ec2:TerminateInstances", instance, DENY,
              "terminate goes through the broker, which also removes the annex's secrets", lambda s: existing_instance()),
    scientist("protect-own-instance-from-termination", "ec2:ModifyInstanceAttribute", instance, DENY,
              "termination protection would make the enforcer's TerminateInstances fail for the whole zone", protect),
    scientist("stop-own-instance", "ec2:StopInstances", instance, DENY,
              "a stopped instance keeps its volumes (and its lease clock) outside the broker's view",
              lambda s: existing_instance()),
    scientist("start-a-stopped-instance", "ec2:StartInstances", instance, DENY,
              "starting is launching again", lambda s: existing_instance()),
    scientist("reboot-own-instance", "ec2:RebootInstances", instance, DENY,
              "nothing that changes an instance", lambda s: existing_instance()),
    scientist("enable-imdsv1", "ec2:ModifyInstanceMetadataOptions", instance, DENY,
              "IMDSv1 would hand the node role's credentials to any request forger on the node",
              lambda s: existing_instance()),
    scientist("new-launch-template-version", "ec2:CreateLaunchTemplateVersion", LAUNCH_TEMPLATE, DENY,
              "a new default version would change what the broker launches", region),
    scientist("modify-launch-template-default", "ec2:ModifyLaunchTemplate", LAUNCH_TEMPLATE, DENY,
              "the default version is the stack's", region),
    scientist("create-own-launch-template", "ec2:CreateLaunchTemplate", OTHER_LT, DENY,
              "nothing to launch it with, and nothing to make", region),
    scientist("create-a-64tib-volume", "ec2:CreateVolume", VOLUME, DENY,
              "volumes outlive instances and cost by the month", region),
    scientist("describe-instances", "ec2:DescribeInstances", ANYWHERE, DENY,
              "status comes from the broker; her keys read nothing of EC2", region),
    # --- S3: the bucket holds every annex's pool secrets ---------------------------------------------
    scientist("put-own-annex-settings", "s3:PutObject", obj(OWN + contract.NODE_ENV_OBJECT), DENY,
              "the broker writes a node's typed values; her text never reaches a node"),
    scientist("get-own-annex-token", "s3:GetObject", obj(OWN + contract.TOKEN_OBJECT), DENY,
              "she minted it; the bucket copy is the node's"),
    scientist("delete-own-annex-config", "s3:DeleteObject", obj(OWN + contract.NODE_ENV_OBJECT), DENY,
              "the broker removes an annex's objects when it ends it"),
    scientist("list-own-project-prefix", "s3:ListBucket", bucket, DENY, "no reads of the bucket at all",
              lambda s: {"s3:prefix": f"{contract.ANNEX_PREFIX}/{PROJECT}/"}),
    scientist("get-other-project-pool-password", "s3:GetObject", obj(OTHER + contract.PASSWORD_OBJECT), DENY,
              "another project's pool secret"),
    scientist("replace-the-functions-zip", "s3:PutObject", code_object, DENY,
              "the code setup deploys is the administrator's"),
    scientist("open-the-bucket", "s3:PutBucketPolicy", bucket, DENY, "bucket policy is the stack's"),
    # --- IAM and STS --------------------------------------------------------------------------------
    scientist("pass-node-role-to-ec2", "iam:PassRole", NODE_ROLE, DENY,
              "only the broker puts her project's node role on an instance", passed_to("ec2.amazonaws.com")),
    scientist("pass-broker-role-to-lambda", "iam:PassRole", BROKER_ROLE, DENY,
              "her own function with the broker's role would be a broker without its checks",
              passed_to("lambda.amazonaws.com")),
    scientist("assume-the-broker-role", "sts:AssumeRole", BROKER_ROLE, DENY,
              "the broker's role trusts Lambda only, and her policy grants no AssumeRole"),
    scientist("assume-the-node-role", "sts:AssumeRole", NODE_ROLE, DENY,
              "her project's node role reads its annexes' pool material"),
    scientist("iam-create-user", "iam:CreateUser", iam_user("mallory"), DENY, "no identity administration"),
    scientist("iam-attach-admin-policy-to-self", "iam:AttachUserPolicy", iam_user(USER), DENY,
              "no identity administration",
              lambda s: {"iam:PolicyARN": "arn:aws:iam::aws:policy/AdministratorAccess"}),
    scientist("iam-put-inline-policy-on-self", "iam:PutUserPolicy", iam_user(USER), DENY, "no identity administration"),
    scientist("iam-rewrite-the-scientist-policy", "iam:CreatePolicyVersion", SCIENTIST_POLICY, DENY,
              "the managed policy that bounds her is the stack's"),
    scientist("iam-create-access-key-for-labmate", "iam:CreateAccessKey", iam_user("labmate"), DENY,
              "a labmate's keys would ask the broker as the labmate"),
    scientist("iam-tag-self-into-another-project", "iam:TagUser", iam_user(USER), DENY,
              "user tags are informational, and still not hers to change",
              lambda s: {f"aws:RequestTag/{contract.USER_TAG_PROJECT}": OTHER_PROJECT,
                         "aws:TagKeys": [contract.USER_TAG_PROJECT]}),
    scientist("iam-untag-own-caps", "iam:UntagUser", iam_user(USER), DENY, "no identity administration",
              lambda s: {"aws:TagKeys": [contract.USER_TAG_MAX_SPEND]}),
    # --- the administrator's record ------------------------------------------------------------------
    scientist("raise-own-caps", "dynamodb:PutItem", TABLE, DENY,
              "caps are the administrator's record, the only one any check trusts", items(CAPS)),
    scientist("update-own-caps", "dynamodb:UpdateItem", TABLE, DENY,
              "caps are the administrator's record", items(CAPS)),
    scientist("move-self-into-another-project", "dynamodb:PutItem", TABLE, DENY,
              "her project comes from the record, written by issue-credentials only", items(f"user#{USER}")),
    scientist("free-the-project-lock", "dynamodb:DeleteItem", TABLE, DENY,
              "the lock serialises the project's spending requests", items(CAPS)),
    scientist("read-own-caps", "dynamodb:GetItem", TABLE, DENY,
              "the broker reports the caps in its answers; her keys read no table", items(CAPS)),
    scientist("query-the-registry", "dynamodb:Query", TABLE, DENY, "no table reads", items(CAPS)),
    scientist("scan-the-registry", "dynamodb:Scan", TABLE, DENY, "every project's record"),
    # --- the functions and the stack ------------------------------------------------------------------
    scientist("replace-broker-code", "lambda:UpdateFunctionCode", BROKER_FN, DENY,
              "the broker's code is what makes her keys safe"),
    scientist("reconfigure-broker", "lambda:UpdateFunctionConfiguration", BROKER_FN, DENY,
              "its environment names the templates, subnets and table it trusts"),
    scientist("open-broker-to-the-world", "lambda:AddPermission", BROKER_FN, DENY,
              "the broker's resource policy is the stack's"),
    scientist("broker-function-url", "lambda:CreateFunctionUrlConfig", BROKER_FN, DENY,
              "a public URL would bypass IAM on the function"),
    scientist("read-broker-configuration", "lambda:GetFunction", BROKER_FN, DENY,
              "the client finds the broker by the stack's name; it needs no read"),
    scientist("replace-enforcer-code", "lambda:UpdateFunctionCode", ENFORCER_FN, DENY, "the time backstop"),
    scientist("describe-the-stack", "cloudformation:DescribeStacks", STACK, DENY,
              "no longer needed: the broker's name follows from the stack's"),
    scientist("update-stack", "cloudformation:UpdateStack", STACK, DENY, "the stack is the administrator's"),
    scientist("delete-stack", "cloudformation:DeleteStack", STACK, DENY, "the stack is the administrator's"),
    scientist("change-set-on-stack", "cloudformation:CreateChangeSet", STACK, DENY, "the stack is the administrator's"),
    scientist("disable-enforcer-schedule", "events:DisableRule", rule, DENY, "the enforcer must keep running"),
    scientist("reschedule-enforcer", "events:PutRule", rule, DENY, "the enforcer runs every five minutes"),
    scientist("detach-enforcer-target", "events:RemoveTargets", rule, DENY, "the enforcer must keep running"),
]

# --- the broker: acts within the stack's templates, types and subnets ------------------------------

BROKER_CASES = [
    broker("broker-reads-the-stacks-pool", "ssm:GetParameter", POOL_PARAMETER, ALLOW,
           "it mints each annex's token with the recorded key"),
    broker("broker-reads-a-projects-pool", "ssm:GetParameter", PROJECT_POOL_PARAMETER, ALLOW,
           "a project may join its own pool"),
    broker("broker-decrypts-the-pool-through-ssm", "kms:Decrypt", POOL_KEY, ALLOW,
           "SecureString values are decrypted by SSM with the caller's rights", VIA_SSM),
    broker("broker-decrypts-with-the-pool-key-directly", "kms:Decrypt", POOL_KEY, DENY,
           "the key serves SSM's parameters only"),
    broker("broker-reads-another-parameter", "ssm:GetParameter", OTHER_PARAMETER, DENY, "the pools' path only"),
    broker("broker-records-a-pool", "ssm:PutParameter", POOL_PARAMETER, DENY, "the pool is the administrator's record"),
    broker("broker-deletes-the-pool", "ssm:DeleteParameter", POOL_PARAMETER, DENY, "the administrator's record"),

    broker("broker-describes-instances", "ec2:DescribeInstances", ANYWHERE, ALLOW,
           "caps count the project's live instances", region),
    # The launch the broker makes: one CreateFleet; an instant fleet authorizes as the caller, and
    # launches with RunInstances from the template, so both are proven resource type by resource type.
    broker("broker-run-instances-instance", "ec2:RunInstances", instance, ALLOW,
           "the stack's template, a listed type and every contract tag", launch_instance),
    broker("broker-run-instances-other-listed-type", "ec2:RunInstances", instance, ALLOW,
           "every type of the stack's list has its template",
           lambda s: launch_instance(s, itype="m5.large")),
    broker("broker-run-instances-volume", "ec2:RunInstances", VOLUME, ALLOW, "the template's root volume",
           lambda s: launch(s, **{"ec2:IsLaunchTemplateResource": "true", "ec2:VolumeType": "gp3",
                                  "ec2:Encrypted": "true", "ec2:VolumeSize": "30"})),
    broker("broker-run-instances-network-interface", "ec2:RunInstances",
           lambda s: s.ec2_arn("network-interface/eni-0123456789abcdef0"), ALLOW, "the primary interface in a stack subnet",
           lambda s: launch(s, **{"ec2:Subnet": s.ec2_arn("subnet/" + s.subnets[0]), "ec2:Vpc": vpc_arn(s),
                                  "ec2:IsLaunchTemplateResource": "false"})),
    broker("broker-run-instances-subnet", "ec2:RunInstances", lambda s: s.ec2_arn("subnet/" + s.subnets[0]), ALLOW,
           "a stack subnet, chosen per capacity pool",
           lambda s: launch(s, **{"ec2:SubnetID": s.subnets[0], "ec2:Vpc": vpc_arn(s),
                                  "ec2:IsLaunchTemplateResource": "false"})),
    broker("broker-run-instances-security-group", "ec2:RunInstances", SG, ALLOW, "the template's security group",
           lambda s: launch(s, **{"ec2:SecurityGroupID": s.outputs[contract.OUT_SECURITY_GROUP],
                                  "ec2:Vpc": vpc_arn(s), "ec2:IsLaunchTemplateResource": "true"})),
    broker("broker-run-instances-launch-template", "ec2:RunInstances", LAUNCH_TEMPLATE, ALLOW, "the stack's template",
           lambda s: launch(s, **{"ec2:IsLaunchTemplateResource": "true"})),
    broker("broker-run-instances-image", "ec2:RunInstances", IMAGE, ALLOW, "the template's image",
           lambda s: launch(s, **{"ec2:ImageID": "ami-0123456789abcdef0", "ec2:IsLaunchTemplateResource": "true"})),
    broker("broker-run-instances-key-pair", "ec2:RunInstances",
           lambda s: s.ec2_arn("key-pair/" + s.outputs[contract.OUT_KEY_PAIR]), ALLOW, "the template's key pair",
           lambda s: launch(s, **{"ec2:KeyPairName": s.outputs[contract.OUT_KEY_PAIR],
                                  "ec2:IsLaunchTemplateResource": "true"})),
    # A spot launch also authorizes its spot request, which carries no ec2:LaunchTemplate key.
    broker("broker-run-instances-spot-request", "ec2:RunInstances", SPOT_REQUEST, ALLOW,
           "--spot: the one-time spot request of a launch from the stack's template", region),
    broker("broker-tags-at-run-instances", "ec2:CreateTags", instance, ALLOW,
           "the tag contract rides on the launch", tag_on_create("RunInstances")),
    broker("broker-create-fleet-fleet", "ec2:CreateFleet", FLEET, ALLOW,
           "one instant fleet per launch round, tagged with its stack", fleet_request()),
    broker("broker-create-fleet-instance", "ec2:CreateFleet", instance, ALLOW,
           "a listed type with every contract tag", fleet_instance),
    broker("broker-create-fleet-launch-template", "ec2:CreateFleet", lambda s: s.launch_template_arn("m6i.large"),
           ALLOW, "each stack template may be a launch specification", region),
    broker("broker-create-fleet-subnet", "ec2:CreateFleet", lambda s: s.ec2_arn("subnet/" + s.subnets[1]), ALLOW,
           "overrides name the stack's subnets",
           lambda s: {"ec2:SubnetID": s.subnets[1], "ec2:Vpc": vpc_arn(s), "ec2:Region": REGION}),
    broker("broker-create-fleet-volume", "ec2:CreateFleet", VOLUME, ALLOW, "the template's root volume",
           lambda s: {"ec2:VolumeType": "gp3", "ec2:Encrypted": "true", "ec2:Region": REGION}),
    broker("broker-create-fleet-image", "ec2:CreateFleet", IMAGE, ALLOW, "the template's image",
           lambda s: {"ec2:ImageID": "ami-0123456789abcdef0", "ec2:Region": REGION}),
    broker("broker-tags-at-create-fleet", "ec2:CreateTags", instance, ALLOW,
           "the tag contract rides on the fleet", tag_on_create("CreateFleet")),
    broker("broker-passes-a-node-role-to-ec2", "iam:PassRole", NODE_ROLE, ALLOW,
           "the project's template version names the project's node profile", passed_to("ec2.amazonaws.com")),
    broker("broker-passes-another-projects-node-role-to-ec2", "iam:PassRole", OTHER_NODE_ROLE, ALLOW,
           "the broker launches for every project; which version it picks is its code's, from the record",
           passed_to("ec2.amazonaws.com")),
    broker("broker-launches-with-another-profile", "ec2:RunInstances", instance, DENY,
           "an instance runs with a project's node profile or is not launched (a profile of any other "
           "role could read anything)", lambda s: launch_instance(s) | {"ec2:InstanceProfile": (
               f"arn:aws:iam::{s.account}:instance-profile/{s.broker.role_name}")},
           denied_by="DenyOtherInstanceProfiles"),
    broker("broker-launches-without-a-profile", "ec2:RunInstances", instance, DENY,
           "a template's default version names no profile: its node could read nothing, and would only "
           "power off", lambda s: {k: v for k, v in launch_instance(s).items() if k != "ec2:InstanceProfile"},
           denied_by="DenyOtherInstanceProfiles"),
    broker("broker-fleet-with-another-profile", "ec2:CreateFleet", instance, DENY,
           "the same for the instances of a fleet", lambda s: fleet_instance(s) | {"ec2:InstanceProfile": (
               f"arn:aws:iam::{s.account}:instance-profile/condor-annex/nodes/OtherStack/{REGION}/x")},
           denied_by="DenyOtherInstanceProfiles"),
    broker("broker-creates-the-spot-service-role", "iam:CreateServiceLinkedRole",
           lambda s: f"arn:aws:iam::{s.account}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot",
           ALLOW, "EC2 creates Spot's service-linked role on the first spot launch of an account, as the caller",
           lambda s: {"iam:AWSServiceName": "spot.amazonaws.com"}),
    # --- leases and ends ----------------------------------------------------------------------------
    broker("broker-moves-a-lease", "ec2:CreateTags", instance, ALLOW,
           "extend writes only the expiry tag of annex instances",
           lambda s: retag({contract.TAG_EXPIRY: "2026-12-19T23:59:00Z"})),
    broker("broker-moves-another-projects-lease", "ec2:CreateTags", instance, ALLOW,
           "the broker acts for every project; which project asked is its code's check, from STS and the record",
           lambda s: retag({contract.TAG_EXPIRY: "2026-12-19T23:59:00Z"}, project=OTHER_PROJECT)),
    broker("broker-terminates-an-annex-instance", "ec2:TerminateInstances", instance, ALLOW,
           "terminate, and duplicates of a retried fleet", lambda s: existing_instance()),
    broker("broker-writes-annex-settings", "s3:PutObject", obj(OWN + contract.NODE_ENV_OBJECT), ALLOW,
           "the node's typed values, checked by the broker"),
    broker("broker-writes-annex-token", "s3:PutObject", obj(OWN + contract.TOKEN_OBJECT), ALLOW,
           "the annex's token, replaced on extend"),
    broker("broker-reads-annex-config", "s3:GetObject", obj(OWN + contract.NODE_ENV_OBJECT), ALLOW,
           "the annex's own objects"),
    broker("broker-deletes-annex-objects", "s3:DeleteObject", obj(OWN + contract.PASSWORD_OBJECT), ALLOW,
           "an ended (or failed) annex leaves no secret behind"),
    broker("broker-lists-annex-prefix", "s3:ListBucket", bucket, ALLOW, "finds an annex's objects to delete",
           lambda s: {"s3:prefix": OWN}),
    broker("broker-reads-the-record", "dynamodb:GetItem", TABLE, ALLOW, "user, caps and prices",
           items(f"user#{USER}")),
    broker("broker-reads-the-caps", "dynamodb:GetItem", TABLE, ALLOW, "the caps it checks", items(CAPS)),
    broker("broker-takes-the-project-lock", "dynamodb:PutItem", TABLE, ALLOW,
           "a conditional write serialises the project's requests", items(WORK)),
    broker("broker-records-instances", "dynamodb:UpdateItem", TABLE, ALLOW,
           "launched instances count at once, before DescribeInstances shows them", items(WORK)),
    broker("broker-releases-the-project-lock", "dynamodb:DeleteItem", TABLE, ALLOW, "the lock's release", items(WORK)),
    broker("broker-queries-recent-launches", "dynamodb:Query", TABLE, ALLOW, "the project's recent requests",
           items(WORK)),
    broker("broker-raises-caps", "dynamodb:PutItem", TABLE, DENY,
           "caps are the administrator's: not even the broker's role may write them", items(CAPS)),
    broker("broker-edits-caps", "dynamodb:UpdateItem", TABLE, DENY, "caps are the administrator's", items(CAPS)),
    broker("broker-moves-a-user", "dynamodb:PutItem", TABLE, DENY,
           "which project a user acts for is the administrator's record", items(f"user#{USER}")),
    broker("broker-rewrites-prices", "dynamodb:PutItem", TABLE, DENY, "prices are setup's", items("stack")),
    broker("broker-writes-caps-with-its-lock", "dynamodb:PutItem", TABLE, DENY,
           "a request touching any other partition key is refused whole", items(WORK, CAPS)),
    broker("broker-writes-its-logs", "logs:PutLogEvents", log_stream(lambda s: s.broker.name), ALLOW,
           "Lambda's own log stream"),
    # --- launches that must be refused ----------------------------------------------------------------
    broker("broker-run-instances-another-template", "ec2:RunInstances", instance, DENY,
           "only the stack's templates: image, user data, profile and IMDSv2 are theirs",
           lambda s: {**launch_instance(s), "ec2:LaunchTemplate": OTHER_LT(s)}),
    broker("broker-run-instances-without-template", "ec2:RunInstances", instance, DENY,
           "a launch without a template sets every parameter itself",
           lambda s: {k: v for k, v in launch_instance(s).items() if k != "ec2:LaunchTemplate"}),
    broker("broker-run-instances-another-type", "ec2:RunInstances", instance, DENY,
           "a p5.48xlarge costs a hundred times an m7i.large",
           lambda s: launch_instance(s, itype="p5.48xlarge", lt_type="m7i.large"), denied_by="DenyOtherInstanceTypes"),
    broker("broker-run-instances-foreign-subnet", "ec2:RunInstances", FOREIGN_SUBNET, DENY,
           "annexes live in the stack's VPC only",
           lambda s: launch(s, **{"ec2:SubnetID": "subnet-0f0f0f0f0f0f0f0f0", "ec2:Vpc": s.ec2_arn("vpc/vpc-0f0f0f0f"),
                                  "ec2:IsLaunchTemplateResource": "false"}), denied_by="DenyOtherSubnets"),
    broker("broker-run-instances-without-project-tag", "ec2:RunInstances", instance, DENY,
           "caps and the enforcer count instances by project", lambda s: launch_instance(s, **without(contract.TAG_PROJECT)),
           denied_by="DenyLaunchWithoutProject"),
    broker("broker-run-instances-without-owner-tag", "ec2:RunInstances", instance, DENY,
           "the owner is the user STS proved", lambda s: launch_instance(s, **without(contract.TAG_OWNER)),
           denied_by="DenyLaunchWithoutOwner"),
    broker("broker-run-instances-without-expiry-tag", "ec2:RunInstances", instance, DENY,
           "no instance without a lease", lambda s: launch_instance(s, **without(contract.TAG_EXPIRY)),
           denied_by="DenyLaunchWithoutLease"),
    broker("broker-run-instances-without-annex-name", "ec2:RunInstances", instance, DENY,
           "the annex name marks an instance as the enforcer's to judge",
           lambda s: launch_instance(s, **without(contract.TAG_ANNEX_NAME)), denied_by="DenyLaunchWithoutAnnexName"),
    broker("broker-run-instances-without-idle-tag", "ec2:RunInstances", instance, DENY,
           "the node's idle shutdown reads it", lambda s: launch_instance(s, **without(contract.TAG_IDLE)),
           denied_by="DenyLaunchWithoutIdleTimeout"),
    broker("broker-run-instances-overriding-image", "ec2:RunInstances",
           lambda s: f"arn:aws:ec2:{REGION}::image/ami-0badbadbadbadbad0", DENY,
           "another image runs no watchdog",
           lambda s: launch(s, **{"ec2:ImageID": "ami-0badbadbadbadbad0", "ec2:IsLaunchTemplateResource": "false"}),
           denied_by="DenyTemplateOverrides"),
    broker("broker-run-instances-overriding-key-pair", "ec2:RunInstances", lambda s: s.ec2_arn("key-pair/needsmoore-laptop"),
           DENY, "another key pair opens the node (and its role's credentials) to its holder",
           lambda s: launch(s, **{"ec2:KeyPairName": "needsmoore-laptop", "ec2:IsLaunchTemplateResource": "false"}),
           denied_by="DenyTemplateOverrides"),
    broker("broker-run-instances-overriding-security-group", "ec2:RunInstances",
           lambda s: s.ec2_arn("security-group/sg-0f0f0f0f0f0f0f0f0"), DENY, "another group opens inbound ports",
           lambda s: launch(s, **{"ec2:SecurityGroupID": "sg-0f0f0f0f0f0f0f0f0", "ec2:Vpc": vpc_arn(s),
                                  "ec2:IsLaunchTemplateResource": "false"}), denied_by="DenyTemplateOverrides"),
    broker("broker-create-fleet-another-template", "ec2:CreateFleet", OTHER_LT, DENY,
           "CreateFleet has no ec2:LaunchTemplate key; the template's own ARN is pinned", region,
           denied_by="DenyFleetFromOtherTemplates"),
    broker("broker-create-fleet-placement-group", "ec2:CreateFleet", lambda s: s.ec2_arn("placement-group/cluster-pg"),
           DENY, "a fleet touches only the resource types the stack's launches use", region,
           denied_by="DenyFleetFromOtherTemplates"),
    broker("broker-create-fleet-untagged-fleet", "ec2:CreateFleet", FLEET, DENY,
           "a fleet without its stack's tag could not be removed by the enforcer", region,
           denied_by="DenyFleetWithoutStackTag"),
    broker("broker-create-fleet-another-stacks-fleet", "ec2:CreateFleet", FLEET, DENY,
           "the fleet carries this stack's tag, not another's", fleet_request("OtherStack"),
           denied_by="DenyFleetWithoutStackTag"),
    broker("broker-create-fleet-in-another-region", "ec2:CreateFleet", FLEET, DENY,
           "the broker launches in its own region only",
           lambda s: {**fleet_request()(s), "ec2:Region": "eu-west-1"}),
    broker("broker-create-fleet-another-type", "ec2:CreateFleet", instance, DENY, "types are the stack's list",
           lambda s: fleet_instance(s, itype="p5.48xlarge"), denied_by="DenyOtherInstanceTypes"),
    broker("broker-create-fleet-foreign-subnet", "ec2:CreateFleet", FOREIGN_SUBNET, DENY, "the stack's VPC only",
           lambda s: {"ec2:SubnetID": "subnet-0f0f0f0f0f0f0f0f0", "ec2:Vpc": s.ec2_arn("vpc/vpc-0f0f0f0f")},
           denied_by="DenyOtherSubnets"),
    broker("broker-create-fleet-without-owner-tag", "ec2:CreateFleet", instance, DENY, "the tag contract, fleet path",
           lambda s: fleet_instance(s, **without(contract.TAG_OWNER)), denied_by="DenyLaunchWithoutOwner"),
    broker("broker-create-fleet-without-expiry-tag", "ec2:CreateFleet", instance, DENY, "no instance without a lease",
           lambda s: fleet_instance(s, **without(contract.TAG_EXPIRY)), denied_by="DenyLaunchWithoutLease"),
    # --- tags after creation ----------------------------------------------------------------------------
    broker("broker-retags-project", "ec2:CreateTags", instance, DENY,
           "identity tags are fixed at creation: a retagged instance would move to another budget",
           lambda s: retag({contract.TAG_PROJECT: OTHER_PROJECT}), denied_by="DenyRetaggingIdentity"),
    broker("broker-retags-owner", "ec2:CreateTags", instance, DENY, "identity tags are fixed at creation",
           lambda s: retag({contract.TAG_OWNER: "labmate"}), denied_by="DenyRetaggingIdentity"),
    broker("broker-retags-annex-name", "ec2:CreateTags", instance, DENY, "identity tags are fixed at creation",
           lambda s: retag({contract.TAG_ANNEX_NAME: "another-annex"}), denied_by="DenyRetaggingIdentity"),
    broker("broker-retags-idle", "ec2:CreateTags", instance, DENY, "identity tags are fixed at creation",
           lambda s: retag({contract.TAG_IDLE: "86400"}), denied_by="DenyRetaggingIdentity"),
    broker("broker-retags-expiry-and-project", "ec2:CreateTags", instance, DENY,
           "the expiry may move only alone",
           lambda s: retag({contract.TAG_EXPIRY: "2027-01-01T00:00:00Z", contract.TAG_PROJECT: PROJECT}),
           denied_by="DenyRetaggingIdentity"),
    broker("broker-tags-a-non-annex-instance", "ec2:CreateTags", instance, DENY,
           "an instance without an annex name is not the broker's",
           lambda s: non_annex_instance(s) | {f"aws:RequestTag/{contract.TAG_EXPIRY}": EXPIRY,
                                              "aws:TagKeys": [contract.TAG_EXPIRY]}),
    broker("broker-adds-another-tag-to-an-annex", "ec2:CreateTags", instance, DENY,
           "after creation only the expiry key", lambda s: retag({"Name": "renamed"})),
    broker("broker-deletes-expiry-tag", "ec2:DeleteTags", instance, DENY,
           "an annex instance always has a lease",
           lambda s: existing_instance() | {"aws:TagKeys": [contract.TAG_EXPIRY]}, denied_by="DenyUntagging"),
    # --- everything else ------------------------------------------------------------------------------
    broker("broker-terminates-a-non-annex-instance", "ec2:TerminateInstances", instance, DENY,
           "never an instance that is not an annex's", non_annex_instance),
    broker("broker-protects-an-instance", "ec2:ModifyInstanceAttribute", instance, DENY,
           "termination protection would shield instances from the enforcer", protect),
    broker("broker-stops-an-instance", "ec2:StopInstances", instance, DENY, "end means terminate",
           lambda s: existing_instance()),
    broker("broker-new-template-version", "ec2:CreateLaunchTemplateVersion", LAUNCH_TEMPLATE, DENY,
           "the templates are the stack's; the broker launches them as they are", region),
    broker("broker-modifies-template", "ec2:ModifyLaunchTemplate", LAUNCH_TEMPLATE, DENY,
           "the default version is the stack's", region),
    broker("broker-passes-enforcer-role", "iam:PassRole", ENFORCER_ROLE, DENY, "only node roles, only to EC2",
           passed_to("lambda.amazonaws.com")),
    broker("broker-passes-node-role-to-lambda", "iam:PassRole", NODE_ROLE, DENY, "only to EC2",
           passed_to("lambda.amazonaws.com")),
    broker("broker-passes-a-role-beside-the-node-path", "iam:PassRole",
           lambda s: s.role_arn("condor-annex/nodes/OtherStack/us-east-1/annex-node-ProjA-0123456789"), DENY,
           "only the node roles of this stack in this region", passed_to("ec2.amazonaws.com")),
    broker("broker-passes-its-own-role-to-ec2", "iam:PassRole", BROKER_ROLE, DENY,
           "a node with the broker's role could launch", passed_to("ec2.amazonaws.com")),
    broker("broker-creates-another-service-role", "iam:CreateServiceLinkedRole",
           lambda s: f"arn:aws:iam::{s.account}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
           DENY, "only Spot's", lambda s: {"iam:AWSServiceName": "autoscaling.amazonaws.com"}),
    broker("broker-writes-another-table", "dynamodb:PutItem", OTHER_TABLE, DENY, "the registry table only",
           items(WORK)),
    broker("broker-scans-the-registry", "dynamodb:Scan", TABLE, DENY,
           "it reads one project's items by key; a scan is the administrator's"),
    broker("broker-deletes-the-registry", "dynamodb:DeleteTable", TABLE, DENY, "the table is the stack's"),
    broker("broker-writes-outside-annexes", "s3:PutObject", obj("index.html"), DENY, "annexes/ only"),
    broker("broker-reads-outside-annexes", "s3:GetObject", obj("exports/payroll.csv"), DENY, "annexes/ only"),
    broker("broker-writes-another-bucket", "s3:PutObject", lambda s: f"arn:aws:s3:::payroll-exports/{OWN}x", DENY,
           "the stack's bucket only"),
    broker("broker-replaces-the-functions-zip", "s3:PutObject", code_object, DENY,
           "its own code is the administrator's"),
    broker("broker-opens-the-bucket", "s3:PutBucketPolicy", bucket, DENY, "bucket policy is the stack's"),
    broker("broker-creates-a-user", "iam:CreateUser", iam_user("mallory"), DENY, "no identity administration"),
    broker("broker-attaches-admin-to-a-user", "iam:AttachUserPolicy", iam_user(USER), DENY,
           "no identity administration",
           lambda s: {"iam:PolicyARN": "arn:aws:iam::aws:policy/AdministratorAccess"}),
    broker("broker-widens-its-own-role", "iam:PutRolePolicy", BROKER_ROLE, DENY, "no self-escalation"),
    broker("broker-replaces-its-own-code", "lambda:UpdateFunctionCode", BROKER_FN, DENY, "no self-modification"),
    broker("broker-replaces-enforcer-code", "lambda:UpdateFunctionCode", ENFORCER_FN, DENY, "the time backstop"),
    broker("broker-invokes-the-enforcer", "lambda:InvokeFunction", ENFORCER_FN, DENY, "not its job"),
    broker("broker-disables-enforcer-schedule", "events:DisableRule", rule, DENY, "the enforcer must keep running"),
]

# --- the enforcer: reads the record, ends what is out of bounds, nothing else -----------------------

ENFORCER_CASES = [
    enforcer("enforcer-reads-the-stacks-pool", "ssm:GetParameter", POOL_PARAMETER, DENY,
             "it never needs a pool secret"),
    enforcer("enforcer-decrypts-with-the-pool-key", "kms:Decrypt", POOL_KEY, DENY, "no grant on the pools' key",
             VIA_SSM),

    enforcer("enforcer-describes-instances", "ec2:DescribeInstances", ANYWHERE, ALLOW, "its sweep", region),
    enforcer("enforcer-terminates-an-annex-instance", "ec2:TerminateInstances", instance, ALLOW,
             "expired or over a cap, any project", lambda s: existing_instance(OTHER_PROJECT)),
    enforcer("enforcer-terminates-an-annex-without-expiry", "ec2:TerminateInstances", instance, ALLOW,
             "an annex instance without a valid lease is ended",
             lambda s: {"ec2:Region": REGION, f"aws:ResourceTag/{contract.TAG_ANNEX_NAME}": ANNEX}),
    enforcer("enforcer-deletes-orphan-config", "s3:DeleteObject", obj(OTHER + contract.NODE_ENV_OBJECT), ALLOW,
             "configuration of annexes with no live instance"),
    enforcer("enforcer-deletes-orphan-secret", "s3:DeleteObject", obj(OTHER + contract.PASSWORD_OBJECT), ALLOW,
             "secrets must not outlive their annex"),
    enforcer("enforcer-lists-configuration", "s3:ListBucket", bucket, ALLOW, "finds orphans",
             lambda s: {"s3:prefix": f"{contract.ANNEX_PREFIX}/"}),
    enforcer("enforcer-reads-caps", "dynamodb:GetItem", TABLE, ALLOW, "caps from the administrator's record",
             items(CAPS)),
    enforcer("enforcer-reads-prices", "dynamodb:GetItem", TABLE, ALLOW, "the stored price table", items("stack")),
    enforcer("enforcer-queries-the-registry", "dynamodb:Query", TABLE, ALLOW, "a project's items", items(CAPS)),
    enforcer("enforcer-writes-its-logs", "logs:PutLogEvents", log_stream(lambda s: s.enforcer.name), ALLOW,
             "Lambda's own log stream"),
    enforcer("enforcer-terminates-a-non-annex-instance", "ec2:TerminateInstances", instance, DENY,
             "never an instance that is not an annex's", non_annex_instance),
    enforcer("enforcer-raises-caps", "dynamodb:PutItem", TABLE, DENY, "it reads the record, never writes it",
             items(CAPS)),
    enforcer("enforcer-updates-caps", "dynamodb:UpdateItem", TABLE, DENY, "read-only record", items(CAPS)),
    enforcer("enforcer-deletes-a-user-record", "dynamodb:DeleteItem", TABLE, DENY, "read-only record",
             items(f"user#{USER}")),
    enforcer("enforcer-reads-another-table", "dynamodb:GetItem", OTHER_TABLE, DENY, "the registry only", items(CAPS)),
    enforcer("enforcer-writes-config", "s3:PutObject", obj(OWN + contract.NODE_ENV_OBJECT), DENY,
             "it only deletes"),
    enforcer("enforcer-reads-annex-secrets", "s3:GetObject", obj(OWN + contract.PASSWORD_OBJECT), DENY,
             "it never needs a pool secret"),
    enforcer("enforcer-deletes-outside-annexes", "s3:DeleteObject", obj("exports/payroll.csv"), DENY, "annexes/ only"),
    enforcer("enforcer-launches", "ec2:RunInstances", instance, DENY, "it only ends", launch_instance),
    enforcer("enforcer-retags", "ec2:CreateTags", instance, DENY, "it never moves a lease",
             lambda s: retag({contract.TAG_EXPIRY: "2030-01-01T00:00:00Z"})),
    enforcer("enforcer-protects-a-non-annex-instance", "ec2:ModifyInstanceAttribute", instance, DENY,
             "it may clear protection of annex instances only", context=non_annex_instance),
    enforcer("enforcer-passes-roles", "iam:PassRole", NODE_ROLE, DENY, "it launches nothing",
             passed_to("ec2.amazonaws.com")),
    enforcer("enforcer-rewrites-itself", "lambda:UpdateFunctionCode", ENFORCER_FN, DENY, "no self-modification"),
    enforcer("enforcer-asks-the-broker", "lambda:InvokeFunction", BROKER_FN, DENY, "not a client of the broker"),
]

# --- the instances: each project's nodes run as its own role, made by issue-credentials -----------------

# The cases are asked as a node of ProjA; test_a_projects_nodes_read_nothing_of_another_project below
# asks, as each project's node, for every object and record the other project has.
INSTANCE_ROLE_CASES = [
    instance_role("instance-reads-the-stacks-pool", "ssm:GetParameter", POOL_PARAMETER, DENY,
                  "root on a node must not get the key that signs every annex's token"),
    instance_role("instance-reads-its-projects-pool", "ssm:GetParameter", PROJECT_POOL_PARAMETER, DENY,
                  "its project's own pool neither"),
    instance_role("instance-decrypts-with-the-pool-key", "kms:Decrypt", POOL_KEY, DENY,
                  "no grant on the pools' key", VIA_SSM),

    instance_role("instance-reads-annex-env", "s3:GetObject", obj(OWN + contract.NODE_ENV_OBJECT), ALLOW,
                  "the bootstrap fetches its settings"),
    instance_role("instance-reads-annex-token", "s3:GetObject", obj(OWN + contract.TOKEN_OBJECT), ALLOW,
                  "the node's IDTOKEN"),
    instance_role("instance-reads-other-projects-password", "s3:GetObject", obj(OTHER + contract.PASSWORD_OBJECT), DENY,
                  "nodes see only their own project's material (DESIGN.md, Trust); every object of the "
                  "other project is asked for in test_a_projects_nodes_read_nothing_of_another_project"),
    instance_role("instance-reads-outside-annexes", "s3:GetObject", obj("exports/payroll.csv"), DENY, "annexes/ only"),
    instance_role("instance-reads-the-bootstrap", "s3:GetObject", bootstrap_object, ALLOW,
                  "the launch templates' loader fetches the node bootstrap from the code bucket"),
    instance_role("instance-reads-the-functions-zip", "s3:GetObject", code_object, DENY,
                  "of the code bucket, only the node bootstrap is a node's"),
    instance_role("instance-writes-annex-config", "s3:PutObject", obj(OWN + contract.NODE_ENV_OBJECT), DENY,
                  "root on a node must not rewrite what other nodes boot with"),
    instance_role("instance-deletes-annex-config", "s3:DeleteObject", obj(OWN + contract.NODE_ENV_OBJECT), DENY,
                  "read-only"),
    instance_role("instance-lists-bucket", "s3:ListBucket", bucket, DENY, "no listing of other annexes",
                  lambda s: {"s3:prefix": f"{contract.ANNEX_PREFIX}/"}),
    instance_role("instance-describes-instances", "ec2:DescribeInstances", ANYWHERE, DENY,
                  "the node reads its own tags from instance metadata", region),
    instance_role("instance-extends-own-lease", "ec2:CreateTags", instance, DENY,
                  "root on a node must not outlive the lease",
                  lambda s: retag({contract.TAG_EXPIRY: "2030-01-01T00:00:00Z"})),
    instance_role("instance-terminates-instances", "ec2:TerminateInstances", instance, DENY,
                  "a node shuts itself down; it terminates no other", lambda s: existing_instance()),
    instance_role("instance-protects-itself", "ec2:ModifyInstanceAttribute", instance, DENY,
                  "termination protection would shield it from the enforcer", protect),
    instance_role("instance-launches", "ec2:RunInstances", instance, DENY, "nodes launch nothing", launch_instance),
    instance_role("instance-passes-its-role", "iam:PassRole", NODE_ROLE, DENY, "nodes launch nothing",
                  passed_to("ec2.amazonaws.com")),
    instance_role("instance-reads-the-record", "dynamodb:GetItem", TABLE, DENY, "the record is not the node's",
                  items(CAPS)),
    instance_role("instance-raises-caps", "dynamodb:PutItem", TABLE, DENY, "the record is the administrator's",
                  items(CAPS)),
    instance_role("instance-asks-the-broker", "lambda:InvokeFunction", BROKER_FN, DENY,
                  "the broker proves callers by IAM user; a node is no scientist"),
    instance_role("instance-assumes-the-broker-role", "sts:AssumeRole", BROKER_ROLE, DENY,
                  "the broker's role trusts Lambda only"),
]



def from_template(lt_id: Callable[[DeployedStack], str]) -> Callable[[DeployedStack], Context]:
    """An instance EC2 launched from a launch template and tagged with nothing else."""
    return lambda s: {"ec2:Region": REGION, "aws:ResourceTag/aws:ec2launchtemplate:id": lt_id(s)}


def tagged(tags: dict[str, str]) -> Callable[[DeployedStack], Context]:
    return lambda s: {"ec2:Region": REGION, **{f"aws:ResourceTag/{k}": v for k, v in tags.items()}}


def ec2_resource(path: str) -> Resource:
    return lambda s: s.ec2_arn(path)


STACK_LT = lambda s: s.launch_templates["m7i.large"]  # noqa: E731
METRICS_DATASET = lambda s: f"arn:aws:cloudwatch:{REGION}:{s.account}:dataset/enforcer"  # noqa: E731
STACK_TAG = {contract.TAG_STACK: contract.DEFAULT_STACK_NAME}
VOLUME = ec2_resource("volume/vol-0123456789abcdef0")
SPOT_REQUEST = ec2_resource("spot-instances-request/sir-0123456789abcdef0")

ENFORCER_BACKSTOP_CASES = [
    # Nothing shields an annex instance; nothing else is touched.
    enforcer("enforcer-clears-protection-of-annex-instance", "ec2:ModifyInstanceAttribute", instance, ALLOW,
             "termination protection must never keep an annex alive", context=lambda s: existing_instance(OTHER_PROJECT)),
    enforcer("enforcer-clears-protection-of-miscased-annex-instance", "ec2:ModifyInstanceAttribute", instance, ALLOW,
             "a tag key in another case is no lease, and no shield", context=tagged({"HTCondor:annexname": ANNEX})),
    enforcer("enforcer-modifies-non-annex-instance", "ec2:ModifyInstanceAttribute", instance, DENY,
             "the enforcer never touches an instance that is not an annex's", context=non_annex_instance),
    enforcer("enforcer-terminates-untagged-stack-instance", "ec2:TerminateInstances", instance, ALLOW,
             "an instance from the stack's template without its tags has no valid lease",
             context=from_template(STACK_LT)),
    enforcer("enforcer-clears-protection-of-untagged-stack-instance", "ec2:ModifyInstanceAttribute", instance, ALLOW,
             "nor may it shield itself", context=from_template(STACK_LT)),
    enforcer("enforcer-terminates-other-template-instance", "ec2:TerminateInstances", instance, DENY,
             "another template's instances are not the stack's", context=from_template(lambda s: "lt-0ffeeffeeffeeffee")),
    # Leftovers: the stack's and annexes', not anyone else's.
    enforcer("enforcer-deletes-stack-volume", "ec2:DeleteVolume", VOLUME, ALLOW,
             "an available annex volume costs money after its instance ended", context=tagged(STACK_TAG)),
    enforcer("enforcer-deletes-other-volume", "ec2:DeleteVolume", VOLUME, DENY,
             "another stack's volumes are not ours", context=tagged({contract.TAG_STACK: "OtherStack"})),
    enforcer("enforcer-cancels-annex-spot-request", "ec2:CancelSpotInstanceRequests", SPOT_REQUEST, ALLOW,
             "an open spot request would start instances again", context=tagged({contract.TAG_ANNEX_NAME: ANNEX})),
    enforcer("enforcer-cancels-other-spot-request", "ec2:CancelSpotInstanceRequests", SPOT_REQUEST, DENY,
             "other spot requests are not ours", context=tagged({"Name": "batch"})),
    enforcer("enforcer-deletes-stack-fleet", "ec2:DeleteFleets", FLEET, ALLOW,
             "a lasting fleet of the stack would replace what the enforcer ends", context=tagged(STACK_TAG)),
    enforcer("enforcer-deletes-untagged-fleet", "ec2:DeleteFleets", FLEET, DENY,
             "a fleet the stack did not make is not the enforcer's to delete", context=region),
    enforcer("enforcer-deletes-other-stack-fleet", "ec2:DeleteFleets", FLEET, DENY,
             "another stack's fleets are not ours", context=tagged({contract.TAG_STACK: "OtherStack"})),
    enforcer("enforcer-describes-volumes", "ec2:DescribeVolumes", lambda s: "*", ALLOW, "to find leftovers"),
    # Heard when it fails, in its own namespace only. (PutMetricData's only resource type is an
    # optional dataset; the simulator evaluates one resource, so the request names one.)
    enforcer("enforcer-publishes-its-metrics", "cloudwatch:PutMetricData", METRICS_DATASET, ALLOW,
             "heartbeat and counts, so a failing enforcer is heard",
             context=lambda s: {"cloudwatch:namespace": "CondorAnnex"}),
    enforcer("enforcer-publishes-other-metrics", "cloudwatch:PutMetricData", METRICS_DATASET, DENY,
             "no other namespace", context=lambda s: {"cloudwatch:namespace": "AWS/EC2"}),
]

ALL_CASES = SCIENTIST_CASES + BROKER_CASES + ENFORCER_CASES + ENFORCER_BACKSTOP_CASES + INSTANCE_ROLE_CASES


def principal_and_policies(case: Case, s: DeployedStack) -> tuple[str, list[dict[str, Any]], Context]:
    if case.who == "scientist":
        principal = f"arn:aws:iam::{s.account}:user{contract.USER_PATH}{USER}"
        identity: Context = {
            "aws:username": USER,
            "aws:PrincipalType": "User",
            "aws:PrincipalArn": principal,
            f"aws:PrincipalTag/{contract.USER_TAG_PROJECT}": PROJECT,
        }
        return principal, [{"name": "ScientistPolicy", "policy": s.scientist_policy}], identity
    if case.who == "instance":
        return node_principal(s, PROJECT)
    function = {"broker": s.broker, "enforcer": s.enforcer}[case.who]
    identity = {"aws:PrincipalArn": function.role_arn, "aws:PrincipalType": "AssumedRole"}
    return function.session_arn(s.account), function.role_policies, identity


def node_principal(s: DeployedStack, project: str) -> tuple[str, list[dict[str, Any]], Context]:
    """A node of the project: an EC2 session of its node role, named after the instance."""
    role = s.projects[project].node_role_arn
    principal = f"arn:aws:sts::{s.account}:assumed-role/{role.rsplit('/', 1)[1]}/i-0123456789abcdef0"
    identity: Context = {"aws:PrincipalArn": role, "aws:PrincipalType": "AssumedRole"}
    return principal, s.projects[project].node_role_policies, identity


def build_request(case: Case, s: DeployedStack) -> dict[str, Any]:
    principal, policies, identity = principal_and_policies(case, s)
    return {
        "id": case.id,
        "principal": principal,
        "action": case.action,
        "resource": case.resource(s),
        "accountId": s.account,
        "context": {**identity, **case.context(s)},
        "policies": policies,
        # The pools' key: KMS reads the key's own policy too (it delegates to the account's IAM).
        **({"resourcePolicy": s.pool_key_policy} if case.resource is POOL_KEY else {}),
    }


@pytest.fixture(scope="module")
def decisions(deployed: DeployedStack) -> dict[str, dict[str, Any]]:
    return simulate([build_request(case, deployed) for case in ALL_CASES])


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in ALL_CASES]
    assert len(ids) == len(set(ids))


def test_every_case_gives_its_reason() -> None:
    assert all(case.reason.strip() for case in ALL_CASES)


def test_the_scientist_is_allowed_one_thing() -> None:
    """Among her cases, one request is allowed: invoking the broker."""
    allowed = [(c.action, c.id) for c in SCIENTIST_CASES if c.expect == ALLOW]
    assert allowed == [("lambda:InvokeFunction", "ask-the-broker")]


def test_scientist_policy_is_one_statement_invoking_the_broker(deployed: DeployedStack) -> None:
    statements = deployed.scientist_policy["Statement"]
    assert isinstance(statements, list) and len(statements) == 1, statements
    (statement,) = statements
    assert statement["Effect"] == "Allow"
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    assert actions == ["lambda:InvokeFunction"]
    assert resources == [deployed.broker.arn]
    assert not {"Condition", "NotAction", "NotResource"} & set(statement)


def _params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.known_gap)] if c.known_gap else [])
        for c in cases
    ]


@pytest.mark.parametrize("case", _params(ALL_CASES))
def test_policy_decision(case: Case, decisions: dict[str, dict[str, Any]]) -> None:
    result = decisions[case.id]
    assert result["decision"] != "Error", result.get("errors")
    assert result["ignoredContextKeys"] == [], "context keys AWS would not send for this request"
    if case.expect == ALLOW:
        assert result["decision"] == "Allowed", f"{case.reason}: {result}"
    elif case.denied_by:
        assert result["decision"] == "ExplicitlyDenied", f"{case.reason}: {result}"
        assert case.denied_by in result["deniedBy"], result
    else:
        assert result["decision"] == "ImplicitlyDenied", f"{case.reason}: {result}"


# --- what the simulator cannot ask: the documents themselves -----------------------------------------

def _statement(documents: list[dict[str, Any]], sid: str) -> dict[str, Any]:
    found = [st for doc in documents for st in doc["policy"]["Statement"] if st.get("Sid") == sid]
    assert len(found) == 1, f"{sid}: {len(found)} statements"
    return found[0]


def test_lease_moves_keep_both_null_checks(deployed: DeployedStack) -> None:
    """awacs writes one block per operator and kept only the last of two Null checks: the grant
    to move a lease lost its annex-instance check (case broker-tags-a-non-annex-instance)."""
    statement = _statement(deployed.broker.role_policies, "MoveAnnexLeases")
    assert statement["Condition"]["Null"] == {
        f"aws:ResourceTag/{contract.TAG_ANNEX_NAME}": "false",
        "aws:TagKeys": "false",
    }


def test_one_operator_given_twice_is_merged_and_a_repeated_key_refused() -> None:
    from awacs import aws as awacs_aws

    from templates.policies import _all_of

    merged = _all_of(awacs_aws.Null("a", "false"), awacs_aws.StringEquals("c", "x"), awacs_aws.Null("b", "true"))
    assert merged.JSONrepr() == {"Null": {"a": "false", "b": "true"}, "StringEquals": {"c": "x"}}
    with pytest.raises(ValueError):
        _all_of(awacs_aws.Null("a", "false"), awacs_aws.Null("a", "true"))


def test_fleet_deny_pins_templates_and_spares_what_a_launch_touches(deployed: DeployedStack) -> None:
    """The simulator knows CreateFleet only on the resource types the Service Authorization
    Reference lists, so the types beyond those (which AWS's own Karpenter policy grants for
    instant fleets) are checked on the document: the Deny must not fall on any of them, and
    must spare no launch template but the stack's."""
    statement = _statement(deployed.broker.role_policies, "DenyFleetFromOtherTemplates")
    assert statement["Effect"] == "Deny" and "Resource" not in statement
    spared = statement["NotResource"]
    templates = sorted(arn.rsplit("/", 1)[1] for arn in spared if ":launch-template/" in arn)
    assert templates == sorted(deployed.launch_templates.values())
    kinds = {arn.rsplit(":", 1)[1].split("/", 1)[0] for arn in spared if arn.endswith("/*")}
    assert kinds == {"fleet", "instance", "volume", "subnet", "image", "network-interface",
                     "security-group", "key-pair", "snapshot", "spot-instances-request"}


def test_no_allow_uses_not_resource_or_not_action(deployed: DeployedStack) -> None:
    """An Allow over NotResource/NotAction grants everything else; the emulator even counts a
    NotResource Deny as a grant, so only Denies may use them."""
    documents = (deployed.broker.role_policies + deployed.enforcer.role_policies
                 + [doc for p in deployed.projects.values() for doc in p.node_role_policies]
                 + [{"name": "ScientistPolicy", "policy": deployed.scientist_policy}])
    for doc in documents:
        for statement in doc["policy"]["Statement"]:
            if statement["Effect"] == "Allow":
                assert not {"NotResource", "NotAction"} & set(statement), (doc["name"], statement.get("Sid"))


# --- one project's nodes and everything of another project ---------------------------------------------

OBJECT_READS = ("s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes", "s3:GetObjectAcl")
RECORD_READS = ("dynamodb:GetItem", "dynamodb:Query")


def test_both_projects_have_material_and_records_to_ask_for(deployed: DeployedStack) -> None:
    """The cross-project test below means something only if there is something to ask for: each
    project's launch left its settings and pool material, and issue-credentials its records."""
    for project in deployed.projects.values():
        assert any(k.endswith(contract.NODE_ENV_OBJECT) for k in project.objects), project.objects
        assert any(k.endswith(contract.PASSWORD_OBJECT) for k in project.objects), project.objects
        assert {sk for _pk, sk in project.items} >= {"caps", "node", "user"}
        assert project.node_role_arn.split(":role", 1)[1].startswith(deployed.outputs[contract.OUT_NODE_ROLE_PATH])


def test_a_projects_nodes_read_nothing_of_another_project(deployed: DeployedStack) -> None:
    """As a node of each project: every object of the other project in the stack's bucket and
    every record of it in the registry, by every read action, is denied; its own objects it may
    get (GetObject only), its own records it may not read either."""
    requests, expected = [], {}
    for reader in deployed.projects:
        principal, policies, identity = node_principal(deployed, reader)
        for owner, project in deployed.projects.items():
            for key in project.objects:
                for action in OBJECT_READS:
                    request_id = f"{reader} {action} {key}"
                    expected[request_id] = "Allowed" if reader == owner and action == "s3:GetObject" else "ImplicitlyDenied"
                    requests.append({"id": request_id, "principal": principal, "action": action,
                                     "resource": f"arn:aws:s3:::{deployed.bucket}/{key}", "accountId": deployed.account,
                                     "context": dict(identity), "policies": policies})
            for pk, sk in project.items:
                for action in RECORD_READS:
                    request_id = f"{reader} {action} {pk}/{sk}"
                    expected[request_id] = "ImplicitlyDenied"
                    requests.append({"id": request_id, "principal": principal, "action": action,
                                     "resource": deployed.table_arn, "accountId": deployed.account,
                                     "context": {**identity, "dynamodb:LeadingKeys": [pk]}, "policies": policies})
    decisions = simulate(requests)
    wrong = {rid: decisions[rid]["decision"] for rid, want in expected.items() if decisions[rid]["decision"] != want}
    assert wrong == {}
    assert all(d["ignoredContextKeys"] == [] for d in decisions.values())
    assert sum(want == "Allowed" for want in expected.values()) == sum(len(p.objects) for p in deployed.projects.values())
