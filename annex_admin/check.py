"""`annex-admin check-setup`: is everything the tools need in place?"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import botocore.exceptions

from annex_common.aws import AwsClients, error_code
from annex_common.stack import HEALTHY_STATES, describe_stack, recovery_advice
from templates import contract


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    stack_name: str
    items: list[CheckItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(item.ok for item in self.items)

    def to_dict(self, region: str) -> dict[str, object]:
        return {
            "stack_name": self.stack_name,
            "region": region,
            "complete": self.ok,
            "checks": [{"name": i.name, "ok": i.ok, "detail": i.detail} for i in self.items],
        }


def _probe(name: str, call: Callable[[], str]) -> CheckItem:
    try:
        return CheckItem(name, True, call())
    except botocore.exceptions.ClientError as exc:
        return CheckItem(name, False, f"{error_code(exc)}: {exc.response['Error'].get('Message', '')}")
    except (botocore.exceptions.BotoCoreError, KeyError, ValueError) as exc:
        return CheckItem(name, False, str(exc))


def check_setup(clients: AwsClients, stack_name: str) -> CheckReport:
    report = CheckReport(stack_name)
    raw = describe_stack(clients, stack_name)
    if raw is None:
        report.items.append(
            CheckItem("stack", False, f"no stack {stack_name} in {clients.region}: run `annex-admin setup`")
        )
        return report
    status = raw["StackStatus"]
    healthy = status in HEALTHY_STATES
    report.items.append(
        CheckItem("stack", healthy, status if healthy else f"{status}: {recovery_advice(status)}")
    )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in raw.get("Outputs", [])}
    missing = [key for key in contract.REQUIRED_OUTPUTS if not outputs.get(key)]
    report.items.append(
        CheckItem("outputs", not missing, "all present" if not missing else "missing: " + ", ".join(missing))
    )
    if missing:
        return report
    ec2, iam = clients.ec2, clients.iam
    subnets = outputs[contract.OUT_SUBNETS].split(",")
    launch_templates = dict(pair.split("=", 1) for pair in outputs[contract.OUT_LAUNCH_TEMPLATES].split(","))
    report.items += [
        _probe("network", lambda: f"{len(ec2.describe_subnets(SubnetIds=subnets)['Subnets'])} subnets in "
               f"{outputs[contract.OUT_AZS]}"),
        _probe("security group", lambda: ec2.describe_security_groups(
            GroupIds=[outputs[contract.OUT_SECURITY_GROUP]])["SecurityGroups"][0]["GroupId"]),
        _probe("launch templates", lambda: ", ".join(
            f"{lt['LaunchTemplateName']}" for lt in ec2.describe_launch_templates(
                LaunchTemplateIds=list(launch_templates.values()))["LaunchTemplates"])),
        _probe("bucket", lambda: (clients.s3.head_bucket(Bucket=outputs[contract.OUT_BUCKET]),
                                  outputs[contract.OUT_BUCKET])[1]),
        _probe("instance profile", lambda: iam.get_instance_profile(
            InstanceProfileName=outputs[contract.OUT_INSTANCE_PROFILE].rsplit("/", 1)[1]
        )["InstanceProfile"]["InstanceProfileName"]),
        _probe("scientist policy", lambda: iam.get_policy(
            PolicyArn=outputs[contract.OUT_SCIENTIST_POLICY])["Policy"]["PolicyName"]),
        _probe("enforcer function", lambda: clients.awslambda.get_function(
            FunctionName=outputs[contract.OUT_ENFORCER_FUNCTION])["Configuration"]["FunctionName"]),
        _probe("enforcer schedule", lambda: _rule_detail(clients, outputs[contract.OUT_ENFORCER_RULE])),
    ]
    return report


def _rule_detail(clients: AwsClients, rule_name: str) -> str:
    rule = clients.events.describe_rule(Name=rule_name)
    if rule.get("State") != "ENABLED":
        raise ValueError(f"rule {rule_name} is {rule.get('State')}")
    return f"{rule_name} ({rule.get('ScheduleExpression')})"
