"""The deployed IAM documents, evaluated request by request with an IAM policy simulator.

The documents are the ones the emulator stored when the real template was deployed (every Ref
resolved), evaluated by @cloud-copilot/iam-simulate with the context keys AWS would supply. All
requests run in one Node process; each case below is one request and one test. A case also fails
when the simulator ignores one of its context keys (a key AWS does not send for that action and
resource), so every context here is one AWS could produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest

from templates import contract
from tests.policy.simulator import simulate
from tests.policy.stack_under_test import REGION, DeployedStack

USER = "needsmoore"
PROJECT = "ProjA"
OTHER_PROJECT = "ProjB"
ANNEX = "proja-annex-1"
EXPIRY = "2026-12-18T23:59:00Z"

ALLOW = "Allowed"
DENY = "Denied"  # explicitly or implicitly

Context = dict[str, Any]


@dataclass(frozen=True)
class Case:
    id: str
    action: str
    resource: Callable[[DeployedStack], str]
    expect: str
    context: Callable[[DeployedStack], Context] = lambda s: {}
    who: str = "scientist"  # scientist | untagged | instance | enforcer
    denied_by: str | None = None  # the Deny statement that must decide, when one should


def request_tags(**overrides: str | None) -> Context:
    """aws:RequestTag/* and aws:TagKeys for the tags condor_annex puts on an instance."""
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


def instance(s: DeployedStack, instance_id: str = "i-0123456789abcdef0") -> str:
    return s.ec2_arn(f"instance/{instance_id}")


def launch(s: DeployedStack, itype: str = "m7i.large", **extra: Any) -> Context:
    """Context common to every resource of a RunInstances from the stack's template."""
    return {"ec2:LaunchTemplate": s.launch_template_arn(itype), "ec2:Region": REGION, **extra}


def launch_instance(s: DeployedStack, itype: str = "m7i.large", lt_type: str | None = None, **tags: str | None) -> Context:
    context = launch(s, lt_type or itype)
    context.update(request_tags(**tags))
    context.update({"ec2:InstanceType": itype, "ec2:InstanceProfile": s.outputs[contract.OUT_INSTANCE_PROFILE],
                    "ec2:IsLaunchTemplateResource": "false"})
    return context


def fleet_instance(s: DeployedStack, itype: str = "m7i.large", **tags: str | None) -> Context:
    context = request_tags(**tags)
    context.update({"ec2:InstanceType": itype, "ec2:Region": REGION,
                    "ec2:InstanceProfile": s.outputs[contract.OUT_INSTANCE_PROFILE]})
    return context


def vpc_arn(s: DeployedStack) -> str:
    return s.ec2_arn("vpc/" + s.outputs[contract.OUT_VPC])


def existing_instance(project: str = PROJECT, **more: str) -> Context:
    tags = {
        contract.TAG_ANNEX_NAME: ANNEX,
        contract.TAG_PROJECT: project,
        contract.TAG_EXPIRY: EXPIRY,
        contract.TAG_IDLE: "900",
        contract.TAG_OWNER: USER,
        **more,
    }
    return {f"aws:ResourceTag/{k}": v for k, v in tags.items()} | {"ec2:Region": REGION}


def retag(keys: dict[str, str], project: str = PROJECT) -> Context:
    """A CreateTags call after creation (no ec2:CreateAction) on an instance of `project`."""
    context = existing_instance(project)
    context.update({f"aws:RequestTag/{k}": v for k, v in keys.items()})
    context["aws:TagKeys"] = list(keys)
    return context


def obj(key: str) -> Callable[[DeployedStack], str]:
    return lambda s: f"arn:aws:s3:::{s.bucket}/{key}"


OWN = contract.annex_prefix(PROJECT, ANNEX)
OTHER = contract.annex_prefix(OTHER_PROJECT, "projb-annex-1")
STACK = lambda s: s.stack_id  # noqa: E731
INSTANCE = instance
OTHER_LT_ARN = "launch-template/lt-0ffeeffeeffeeffee"

SCIENTIST_CASES = [
    # --- reading ---------------------------------------------------------------------------------
    Case("read-stack-outputs", "cloudformation:DescribeStacks", STACK, ALLOW),
    Case("describe-instances", "ec2:DescribeInstances", lambda s: "*", ALLOW, lambda s: {"ec2:Region": REGION}),
    Case("spot-price-history", "ec2:DescribeSpotPriceHistory", lambda s: "*", ALLOW),
    Case("on-demand-prices", "pricing:GetProducts", lambda s: "*", ALLOW),
    Case("describe-other-stack", "cloudformation:DescribeStacks",
         lambda s: f"arn:aws:cloudformation:{REGION}:{s.account}:stack/Payroll/0a1b2c3d", DENY,
         denied_by="DenyOtherStacks"),
    # --- the launch condor_annex makes: RunInstances, one request per resource type --------------
    Case("run-instances:instance", "ec2:RunInstances", INSTANCE, ALLOW, launch_instance),
    Case("run-instances:volume", "ec2:RunInstances", lambda s: s.ec2_arn("volume/vol-0123456789abcdef0"), ALLOW,
         lambda s: launch(s, **{"ec2:IsLaunchTemplateResource": "true", "ec2:VolumeType": "gp3",
                                "ec2:Encrypted": "true", "ec2:VolumeSize": "30"})),
    Case("run-instances:network-interface", "ec2:RunInstances", lambda s: s.ec2_arn("network-interface/eni-0123456789abcdef0"), ALLOW,
         lambda s: launch(s, **{"ec2:Subnet": s.ec2_arn("subnet/" + s.subnets[0]), "ec2:Vpc": vpc_arn(s),
                                "ec2:IsLaunchTemplateResource": "false"})),
    Case("run-instances:subnet", "ec2:RunInstances", lambda s: s.ec2_arn("subnet/" + s.subnets[0]), ALLOW,
         lambda s: launch(s, **{"ec2:SubnetID": s.subnets[0], "ec2:Vpc": vpc_arn(s),
                                "ec2:IsLaunchTemplateResource": "false"})),
    Case("run-instances:security-group", "ec2:RunInstances",
         lambda s: s.ec2_arn("security-group/" + s.outputs[contract.OUT_SECURITY_GROUP]), ALLOW,
         lambda s: launch(s, **{"ec2:SecurityGroupID": s.outputs[contract.OUT_SECURITY_GROUP],
                                "ec2:Vpc": vpc_arn(s), "ec2:IsLaunchTemplateResource": "true"})),
    Case("run-instances:launch-template", "ec2:RunInstances", lambda s: s.launch_template_arn(), ALLOW,
         lambda s: launch(s, **{"ec2:IsLaunchTemplateResource": "true"})),
    Case("run-instances:image", "ec2:RunInstances", lambda s: f"arn:aws:ec2:{REGION}::image/ami-0123456789abcdef0",
         ALLOW, lambda s: launch(s, **{"ec2:ImageID": "ami-0123456789abcdef0", "ec2:IsLaunchTemplateResource": "true"})),
    Case("run-instances:key-pair", "ec2:RunInstances",
         lambda s: s.ec2_arn("key-pair/" + s.outputs[contract.OUT_KEY_PAIR]), ALLOW,
         lambda s: launch(s, **{"ec2:KeyPairName": s.outputs[contract.OUT_KEY_PAIR],
                                "ec2:IsLaunchTemplateResource": "true"})),
    Case("run-instances:tag-on-create", "ec2:CreateTags", INSTANCE, ALLOW,
         lambda s: {**request_tags(), "ec2:CreateAction": "RunInstances", "ec2:Region": REGION}),
    Case("run-instances:pass-instance-role", "iam:PassRole",
         lambda s: s.outputs[contract.OUT_INSTANCE_ROLE], ALLOW, lambda s: {"iam:PassedToService": "ec2.amazonaws.com"}),
    # --- the same launch through an instant EC2 Fleet --------------------------------------------
    Case("create-fleet:fleet", "ec2:CreateFleet", lambda s: s.ec2_arn("fleet/fleet-01234567-89ab-cdef-0123-456789abcdef"), ALLOW,
         lambda s: {"ec2:Region": REGION}),
    Case("create-fleet:instance", "ec2:CreateFleet", INSTANCE, ALLOW, fleet_instance),
    Case("create-fleet:launch-template", "ec2:CreateFleet", lambda s: s.launch_template_arn("m6i.large"), ALLOW),
    Case("create-fleet:subnet", "ec2:CreateFleet", lambda s: s.ec2_arn("subnet/" + s.subnets[1]), ALLOW,
         lambda s: {"ec2:SubnetID": s.subnets[1], "ec2:Vpc": vpc_arn(s)}),
    Case("create-fleet:volume", "ec2:CreateFleet", lambda s: s.ec2_arn("volume/vol-0123456789abcdef0"), ALLOW,
         lambda s: {"ec2:VolumeType": "gp3", "ec2:Encrypted": "true"}),
    Case("create-fleet:image", "ec2:CreateFleet", lambda s: f"arn:aws:ec2:{REGION}::image/ami-0123456789abcdef0", ALLOW,
         lambda s: {"ec2:ImageID": "ami-0123456789abcdef0"}),
    Case("create-fleet:tag-on-create", "ec2:CreateTags", INSTANCE, ALLOW,
         lambda s: {**request_tags(), "ec2:CreateAction": "CreateFleet"}),
    # --- launches that must be refused -------------------------------------------------------------
    Case("launch-for-another-project", "ec2:RunInstances", INSTANCE, DENY,
         lambda s: launch_instance(s, **{"htcondor__annex__project": OTHER_PROJECT}),
         denied_by="DenyLaunchForAnotherProject"),
    Case("launch-without-project-tag", "ec2:RunInstances", INSTANCE, DENY,
         lambda s: launch_instance(s, **without(contract.TAG_PROJECT)), denied_by="DenyLaunchForAnotherProject"),
    Case("launch-for-another-owner", "ec2:RunInstances", INSTANCE, DENY,
         lambda s: launch_instance(s, **{"htcondor__annex__owner": "labmate"}), denied_by="DenyLaunchForAnotherOwner"),
    Case("launch-without-expiry-tag", "ec2:RunInstances", INSTANCE, DENY,
         lambda s: launch_instance(s, **without(contract.TAG_EXPIRY)), denied_by="DenyLaunchWithoutLease"),
    Case("launch-without-annex-name", "ec2:RunInstances", INSTANCE, DENY,
         lambda s: launch_instance(s, **without(contract.TAG_ANNEX_NAME)), denied_by="DenyLaunchWithoutAnnexName"),
    Case("launch-without-idle-tag", "ec2:RunInstances", INSTANCE, DENY,
         lambda s: launch_instance(s, **without(contract.TAG_IDLE)), denied_by="DenyLaunchWithoutIdleTimeout"),
    Case("launch-without-launch-template", "ec2:RunInstances", INSTANCE, DENY,
         lambda s: {k: v for k, v in launch_instance(s).items() if k != "ec2:LaunchTemplate"}),
    Case("launch-from-another-template", "ec2:RunInstances", INSTANCE, DENY,
         lambda s: {**launch_instance(s), "ec2:LaunchTemplate": s.ec2_arn(OTHER_LT_ARN)}),
    Case("launch-another-instance-type", "ec2:RunInstances", INSTANCE, DENY,
         lambda s: launch_instance(s, itype="p5.48xlarge", lt_type="m7i.large"), denied_by="DenyOtherInstanceTypes"),
    Case("launch-overriding-the-image", "ec2:RunInstances", lambda s: f"arn:aws:ec2:{REGION}::image/ami-0badbadbadbadbad0",
         DENY, lambda s: launch(s, **{"ec2:ImageID": "ami-0badbadbadbadbad0", "ec2:IsLaunchTemplateResource": "false"}),
         denied_by="DenyTemplateOverrides"),
    Case("launch-into-a-foreign-subnet", "ec2:RunInstances", lambda s: s.ec2_arn("subnet/subnet-0f0f0f0f0f0f0f0f0"), DENY,
         lambda s: launch(s, **{"ec2:SubnetID": "subnet-0f0f0f0f0f0f0f0f0", "ec2:Vpc": s.ec2_arn("vpc/vpc-0f0f0f0f"),
                                "ec2:IsLaunchTemplateResource": "false"}), denied_by="DenyOtherSubnets"),
    Case("launch-with-a-foreign-security-group", "ec2:RunInstances",
         lambda s: s.ec2_arn("security-group/sg-0f0f0f0f0f0f0f0f0"), DENY,
         lambda s: launch(s, **{"ec2:SecurityGroupID": "sg-0f0f0f0f0f0f0f0f0", "ec2:Vpc": vpc_arn(s),
                                "ec2:IsLaunchTemplateResource": "false"}), denied_by="DenyTemplateOverrides"),
    Case("launch-with-her-own-key-pair", "ec2:RunInstances", lambda s: s.ec2_arn("key-pair/needsmoore-laptop"), DENY,
         lambda s: launch(s, **{"ec2:KeyPairName": "needsmoore-laptop", "ec2:IsLaunchTemplateResource": "false"}),
         denied_by="DenyTemplateOverrides"),
    Case("fleet-another-instance-type", "ec2:CreateFleet", INSTANCE, DENY,
         lambda s: fleet_instance(s, itype="p5.48xlarge"), denied_by="DenyOtherInstanceTypes"),
    Case("fleet-for-another-project", "ec2:CreateFleet", INSTANCE, DENY,
         lambda s: fleet_instance(s, **{"htcondor__annex__project": OTHER_PROJECT}),
         denied_by="DenyLaunchForAnotherProject"),
    Case("fleet-without-expiry-tag", "ec2:CreateFleet", INSTANCE, DENY,
         lambda s: fleet_instance(s, **without(contract.TAG_EXPIRY)), denied_by="DenyLaunchWithoutLease"),
    Case("fleet-from-another-template", "ec2:CreateFleet", lambda s: s.ec2_arn(OTHER_LT_ARN), DENY,
         denied_by="DenyFleetFromOtherTemplates"),
    Case("fleet-into-a-foreign-subnet", "ec2:CreateFleet", lambda s: s.ec2_arn("subnet/subnet-0f0f0f0f0f0f0f0f0"),
         DENY, lambda s: {"ec2:SubnetID": "subnet-0f0f0f0f0f0f0f0f0", "ec2:Vpc": s.ec2_arn("vpc/vpc-0f0f0f0f")},
         denied_by="DenyOtherSubnets"),
    Case("pass-the-enforcer-role", "iam:PassRole", lambda s: s.enforcer_role_arn, DENY,
         lambda s: {"iam:PassedToService": "lambda.amazonaws.com"}),
    Case("pass-the-instance-role-to-lambda", "iam:PassRole", lambda s: s.outputs[contract.OUT_INSTANCE_ROLE], DENY,
         lambda s: {"iam:PassedToService": "lambda.amazonaws.com"}),
    # --- lease and lifetime ------------------------------------------------------------------------
    Case("extend-own-project-expiry", "ec2:CreateTags", INSTANCE, ALLOW,
         lambda s: retag({contract.TAG_EXPIRY: "2026-12-19T23:59:00Z"})),
    Case("extend-labmates-instance-in-project", "ec2:CreateTags", INSTANCE, ALLOW,
         lambda s: retag({contract.TAG_EXPIRY: "2026-12-19T23:59:00Z"}) | {f"aws:ResourceTag/{contract.TAG_OWNER}": "labmate"}),
    Case("terminate-own-project-instance", "ec2:TerminateInstances", INSTANCE, ALLOW, lambda s: existing_instance()),
    Case("extend-another-projects-expiry", "ec2:CreateTags", INSTANCE, DENY,
         lambda s: retag({contract.TAG_EXPIRY: "2027-12-19T23:59:00Z"}, project=OTHER_PROJECT)),
    Case("terminate-another-projects-instance", "ec2:TerminateInstances", INSTANCE, DENY,
         lambda s: existing_instance(OTHER_PROJECT)),
    Case("terminate-a-non-annex-instance", "ec2:TerminateInstances", INSTANCE, DENY,
         lambda s: {"ec2:Region": REGION, "aws:ResourceTag/Name": "payroll-db"}),
    Case("retag-project-after-creation", "ec2:CreateTags", INSTANCE, DENY,
         lambda s: retag({contract.TAG_PROJECT: OTHER_PROJECT}), denied_by="DenyRetaggingIdentity"),
    Case("retag-owner-after-creation", "ec2:CreateTags", INSTANCE, DENY,
         lambda s: retag({contract.TAG_OWNER: "labmate"}), denied_by="DenyRetaggingIdentity"),
    Case("retag-expiry-and-project-together", "ec2:CreateTags", INSTANCE, DENY,
         lambda s: retag({contract.TAG_EXPIRY: "2027-01-01T00:00:00Z", contract.TAG_PROJECT: PROJECT}),
         denied_by="DenyRetaggingIdentity"),
    Case("tag-a-foreign-instance-into-the-project", "ec2:CreateTags", INSTANCE, DENY,
         lambda s: {"ec2:Region": REGION, f"aws:RequestTag/{contract.TAG_PROJECT}": PROJECT,
                    "aws:TagKeys": [contract.TAG_PROJECT]}),
    Case("delete-expiry-tag", "ec2:DeleteTags", INSTANCE, DENY,
         lambda s: existing_instance() | {"aws:TagKeys": [contract.TAG_EXPIRY]}, denied_by="DenyUntagging"),
    # --- configuration bucket ----------------------------------------------------------------------
    Case("put-own-annex-config", "s3:PutObject", obj(OWN + contract.NODE_CONFIG_OBJECT), ALLOW),
    Case("get-own-annex-token", "s3:GetObject", obj(OWN + contract.TOKEN_OBJECT), ALLOW),
    Case("delete-own-annex-config", "s3:DeleteObject", obj(OWN + contract.NODE_ENV_OBJECT), ALLOW),
    Case("list-own-project-prefix", "s3:ListBucket", lambda s: f"arn:aws:s3:::{s.bucket}", ALLOW,
         lambda s: {"s3:prefix": f"{contract.ANNEX_PREFIX}/{PROJECT}/{ANNEX}/"}),
    Case("put-other-project-config", "s3:PutObject", obj(OTHER + contract.NODE_CONFIG_OBJECT), DENY,
         denied_by="DenyOtherProjectsConfiguration"),
    Case("get-other-project-pool-password", "s3:GetObject", obj(OTHER + contract.PASSWORD_OBJECT), DENY,
         denied_by="DenyOtherProjectsConfiguration"),
    Case("put-project-prefix-lookalike", "s3:PutObject", obj(f"{contract.ANNEX_PREFIX}/{PROJECT}-evil/x"), DENY),
    Case("write-own-project-caps", "s3:PutObject", obj(contract.caps_key(PROJECT)), DENY, denied_by="DenyProjectCaps"),
    Case("read-own-project-caps", "s3:GetObject", obj(contract.caps_key(PROJECT)), DENY),
    Case("list-other-project-prefix", "s3:ListBucket", lambda s: f"arn:aws:s3:::{s.bucket}", DENY,
         lambda s: {"s3:prefix": f"{contract.ANNEX_PREFIX}/{OTHER_PROJECT}/"}),
    Case("list-whole-bucket", "s3:ListBucket", lambda s: f"arn:aws:s3:::{s.bucket}", DENY),
    Case("put-into-another-bucket", "s3:PutObject", lambda s: f"arn:aws:s3:::payroll-exports/{OWN}x", DENY),
    # --- administration: never ---------------------------------------------------------------------
    Case("iam-create-user", "iam:CreateUser", lambda s: f"arn:aws:iam::{s.account}:user/mallory", DENY),
    Case("iam-attach-policy-to-self", "iam:AttachUserPolicy",
         lambda s: f"arn:aws:iam::{s.account}:user{contract.USER_PATH}{USER}", DENY,
         lambda s: {"iam:PolicyARN": "arn:aws:iam::aws:policy/AdministratorAccess"}),
    Case("iam-put-inline-policy-on-self", "iam:PutUserPolicy",
         lambda s: f"arn:aws:iam::{s.account}:user{contract.USER_PATH}{USER}", DENY),
    Case("iam-create-access-key-for-labmate", "iam:CreateAccessKey",
         lambda s: f"arn:aws:iam::{s.account}:user{contract.USER_PATH}labmate", DENY),
    Case("iam-tag-self-into-another-project", "iam:TagUser",
         lambda s: f"arn:aws:iam::{s.account}:user{contract.USER_PATH}{USER}", DENY,
         lambda s: {f"aws:RequestTag/{contract.USER_TAG_PROJECT}": OTHER_PROJECT,
                    "aws:TagKeys": [contract.USER_TAG_PROJECT]}),
    Case("iam-untag-own-caps", "iam:UntagUser",
         lambda s: f"arn:aws:iam::{s.account}:user{contract.USER_PATH}{USER}", DENY,
         lambda s: {"aws:TagKeys": [contract.USER_TAG_MAX_SPEND]}),
    Case("new-launch-template-version", "ec2:CreateLaunchTemplateVersion", lambda s: s.launch_template_arn(), DENY),
    Case("modify-launch-template-default", "ec2:ModifyLaunchTemplate", lambda s: s.launch_template_arn(), DENY),
    Case("replace-enforcer-code", "lambda:UpdateFunctionCode",
         lambda s: f"arn:aws:lambda:{REGION}:{s.account}:function:{s.outputs[contract.OUT_ENFORCER_FUNCTION]}", DENY),
    Case("reschedule-enforcer", "events:PutRule",
         lambda s: f"arn:aws:events:{REGION}:{s.account}:rule/{s.outputs[contract.OUT_ENFORCER_RULE]}", DENY),
    Case("disable-enforcer", "events:DisableRule",
         lambda s: f"arn:aws:events:{REGION}:{s.account}:rule/{s.outputs[contract.OUT_ENFORCER_RULE]}", DENY),
    Case("update-stack", "cloudformation:UpdateStack", STACK, DENY),
    Case("delete-stack", "cloudformation:DeleteStack", STACK, DENY),
    # --- a user whose project tag is missing gets nothing project-scoped ---------------------------
    Case("untagged-user-launch", "ec2:RunInstances", INSTANCE, DENY, launch_instance, who="untagged"),
    Case("untagged-user-put-config", "s3:PutObject", obj(OWN + contract.NODE_CONFIG_OBJECT), DENY, who="untagged"),
    Case("untagged-user-terminate", "ec2:TerminateInstances", INSTANCE, DENY, lambda s: existing_instance(),
         who="untagged"),
]

INSTANCE_ROLE_CASES = [
    Case("instance-reads-annex-config", "s3:GetObject", obj(OWN + contract.NODE_CONFIG_OBJECT), ALLOW, who="instance"),
    Case("instance-reads-annex-token", "s3:GetObject", obj(OWN + contract.TOKEN_OBJECT), ALLOW, who="instance"),
    Case("instance-reads-project-caps", "s3:GetObject", obj(contract.caps_key(PROJECT)), DENY, who="instance"),
    Case("instance-writes-annex-config", "s3:PutObject", obj(OWN + contract.NODE_CONFIG_OBJECT), DENY, who="instance"),
    Case("instance-lists-bucket", "s3:ListBucket", lambda s: f"arn:aws:s3:::{s.bucket}", DENY, who="instance",
         context=lambda s: {"s3:prefix": f"{contract.ANNEX_PREFIX}/"}),
    Case("instance-describes-instances", "ec2:DescribeInstances", lambda s: "*", DENY, who="instance"),
    Case("instance-extends-own-lease", "ec2:CreateTags", INSTANCE, DENY, who="instance",
         context=lambda s: retag({contract.TAG_EXPIRY: "2030-01-01T00:00:00Z"})),
    Case("instance-terminates-instances", "ec2:TerminateInstances", INSTANCE, DENY, who="instance",
         context=lambda s: existing_instance()),
    Case("instance-passes-its-role", "iam:PassRole", lambda s: s.outputs[contract.OUT_INSTANCE_ROLE], DENY,
         who="instance", context=lambda s: {"iam:PassedToService": "ec2.amazonaws.com"}),
]

ENFORCER_CASES = [
    Case("enforcer-describes-instances", "ec2:DescribeInstances", lambda s: "*", ALLOW, who="enforcer"),
    Case("enforcer-terminates-annex-instance", "ec2:TerminateInstances", INSTANCE, ALLOW, who="enforcer",
         context=lambda s: existing_instance(OTHER_PROJECT)),
    Case("enforcer-terminates-non-annex-instance", "ec2:TerminateInstances", INSTANCE, DENY, who="enforcer",
         context=lambda s: {"ec2:Region": REGION, "aws:ResourceTag/Name": "payroll-db"}),
    Case("enforcer-deletes-orphan-config", "s3:DeleteObject", obj(OTHER + contract.NODE_CONFIG_OBJECT), ALLOW,
         who="enforcer"),
    Case("enforcer-reads-project-caps", "s3:GetObject", obj(contract.caps_key(PROJECT)), ALLOW, who="enforcer"),
    Case("enforcer-lists-configuration", "s3:ListBucket", lambda s: f"arn:aws:s3:::{s.bucket}", ALLOW, who="enforcer",
         context=lambda s: {"s3:prefix": f"{contract.ANNEX_PREFIX}/"}),
    Case("enforcer-reads-annex-secrets", "s3:GetObject", obj(OWN + contract.PASSWORD_OBJECT), DENY, who="enforcer"),
    Case("enforcer-deletes-project-caps", "s3:DeleteObject", obj(contract.caps_key(PROJECT)), DENY, who="enforcer"),
    Case("enforcer-writes-config", "s3:PutObject", obj(OWN + contract.NODE_CONFIG_OBJECT), DENY, who="enforcer"),
    Case("enforcer-launches", "ec2:RunInstances", INSTANCE, DENY, who="enforcer", context=launch_instance),
    Case("enforcer-retags", "ec2:CreateTags", INSTANCE, DENY, who="enforcer",
         context=lambda s: retag({contract.TAG_EXPIRY: "2030-01-01T00:00:00Z"})),
    Case("enforcer-passes-roles", "iam:PassRole", lambda s: s.outputs[contract.OUT_INSTANCE_ROLE], DENY,
         who="enforcer", context=lambda s: {"iam:PassedToService": "ec2.amazonaws.com"}),
    Case("enforcer-rewrites-itself", "lambda:UpdateFunctionCode",
         lambda s: f"arn:aws:lambda:{REGION}:{s.account}:function:{s.outputs[contract.OUT_ENFORCER_FUNCTION]}", DENY,
         who="enforcer"),
]



def from_template(lt_id: Callable[[DeployedStack], str]) -> Callable[[DeployedStack], Context]:
    """An instance EC2 launched from a launch template and tagged with nothing else."""
    return lambda s: {"ec2:Region": REGION, "aws:ResourceTag/aws:ec2launchtemplate:id": lt_id(s)}


def tagged(tags: dict[str, str]) -> Callable[[DeployedStack], Context]:
    return lambda s: {"ec2:Region": REGION, **{f"aws:ResourceTag/{k}": v for k, v in tags.items()}}


STACK_LT = lambda s: s.launch_templates["m7i.large"]  # noqa: E731
METRICS_DATASET = lambda s: f"arn:aws:cloudwatch:{REGION}:{s.account}:dataset/enforcer"  # noqa: E731
STACK_TAG = {contract.TAG_STACK: contract.DEFAULT_STACK_NAME}

ENFORCER_BACKSTOP_CASES = [
    # Nothing shields an annex instance; nothing else is touched.
    Case("enforcer-clears-protection-of-annex-instance", "ec2:ModifyInstanceAttribute", INSTANCE, ALLOW,
         who="enforcer", context=lambda s: existing_instance(OTHER_PROJECT)),
    Case("enforcer-clears-protection-of-miscased-annex-instance", "ec2:ModifyInstanceAttribute", INSTANCE, ALLOW,
         who="enforcer", context=tagged({"HTCondor:annexname": ANNEX})),
    Case("enforcer-modifies-non-annex-instance", "ec2:ModifyInstanceAttribute", INSTANCE, DENY, who="enforcer",
         context=lambda s: {"ec2:Region": REGION, "aws:ResourceTag/Name": "payroll-db"}),
    Case("enforcer-terminates-untagged-stack-instance", "ec2:TerminateInstances", INSTANCE, ALLOW, who="enforcer",
         context=from_template(STACK_LT)),
    Case("enforcer-clears-protection-of-untagged-stack-instance", "ec2:ModifyInstanceAttribute", INSTANCE, ALLOW,
         who="enforcer", context=from_template(STACK_LT)),
    Case("enforcer-terminates-other-template-instance", "ec2:TerminateInstances", INSTANCE, DENY, who="enforcer",
         context=from_template(lambda s: "lt-0ffeeffeeffeeffee")),
    # Leftovers: the stack's and annexes', not anyone else's.
    Case("enforcer-deletes-stack-volume", "ec2:DeleteVolume", lambda s: s.ec2_arn("volume/vol-0123456789abcdef0"),
         ALLOW, who="enforcer", context=tagged(STACK_TAG)),
    Case("enforcer-deletes-other-volume", "ec2:DeleteVolume", lambda s: s.ec2_arn("volume/vol-0123456789abcdef0"),
         DENY, who="enforcer", context=tagged({contract.TAG_STACK: "OtherStack"})),
    Case("enforcer-cancels-annex-spot-request", "ec2:CancelSpotInstanceRequests",
         lambda s: s.ec2_arn("spot-instances-request/sir-0123456789abcdef0"), ALLOW, who="enforcer",
         context=tagged({contract.TAG_ANNEX_NAME: ANNEX})),
    Case("enforcer-cancels-other-spot-request", "ec2:CancelSpotInstanceRequests",
         lambda s: s.ec2_arn("spot-instances-request/sir-0123456789abcdef0"), DENY, who="enforcer",
         context=tagged({"Name": "batch"})),
    Case("enforcer-deletes-fleet", "ec2:DeleteFleets", lambda s: s.ec2_arn("fleet/fleet-0123"), ALLOW,
         who="enforcer", context=lambda s: {"ec2:Region": REGION}),
    Case("enforcer-describes-volumes", "ec2:DescribeVolumes", lambda s: "*", ALLOW, who="enforcer"),
    # Heard when it fails, in its own namespace only. (PutMetricData's only resource type is an
    # optional dataset; the simulator evaluates one resource, so the request names one.)
    Case("enforcer-publishes-its-metrics", "cloudwatch:PutMetricData", METRICS_DATASET, ALLOW, who="enforcer",
         context=lambda s: {"cloudwatch:namespace": "CondorAnnex"}),
    Case("enforcer-publishes-other-metrics", "cloudwatch:PutMetricData", METRICS_DATASET, DENY, who="enforcer",
         context=lambda s: {"cloudwatch:namespace": "AWS/EC2"}),
]

ALL_CASES = SCIENTIST_CASES + INSTANCE_ROLE_CASES + ENFORCER_CASES + ENFORCER_BACKSTOP_CASES


def principal_and_policies(case: Case, s: DeployedStack) -> tuple[str, list[dict[str, Any]], Context]:
    if case.who in ("scientist", "untagged"):
        principal = f"arn:aws:iam::{s.account}:user{contract.USER_PATH}{USER}"
        identity: Context = {"aws:username": USER, "aws:PrincipalType": "User", "aws:PrincipalArn": principal}
        if case.who == "scientist":
            identity[f"aws:PrincipalTag/{contract.USER_TAG_PROJECT}"] = PROJECT
        return principal, [{"name": "ScientistPolicy", "policy": s.scientist_policy}], identity
    if case.who == "instance":
        role = s.outputs[contract.OUT_INSTANCE_ROLE]
        principal = f"arn:aws:sts::{s.account}:assumed-role/{role.rsplit('/', 1)[1]}/i-0123456789abcdef0"
        return principal, s.instance_role_policies, {"aws:PrincipalArn": role, "aws:PrincipalType": "AssumedRole"}
    role = s.enforcer_role_arn
    principal = f"arn:aws:sts::{s.account}:assumed-role/{role.rsplit('/', 1)[1]}/{s.outputs[contract.OUT_ENFORCER_FUNCTION]}"
    return principal, s.enforcer_role_policies, {"aws:PrincipalArn": role, "aws:PrincipalType": "AssumedRole"}


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
    }


@pytest.fixture(scope="module")
def decisions(deployed: DeployedStack) -> dict[str, dict[str, Any]]:
    return simulate([build_request(case, deployed) for case in ALL_CASES])


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in ALL_CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_policy_decision(case: Case, decisions: dict[str, dict[str, Any]]) -> None:
    result = decisions[case.id]
    assert result["decision"] != "Error", result.get("errors")
    assert result["ignoredContextKeys"] == [], "context keys AWS would not send for this request"
    if case.expect == ALLOW:
        assert result["decision"] == "Allowed", result
    else:
        assert result["decision"] in ("ExplicitlyDenied", "ImplicitlyDenied"), result
    if case.denied_by:
        assert case.denied_by in result["deniedBy"], result
