"""Find the region stack by name and read its outputs: the only way the tools learn resource ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from annex_common.aws import AwsClients, aws_errors, error_code
from annex_common.errors import BadInput, NotReady
from templates import contract


class StackMissing(BadInput):
    """No stack of that name in the region: the administrator named a stack that is not there
    (nothing was changed)."""


HEALTHY_STATES = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"}


@dataclass(frozen=True)
class StackInfo:
    name: str
    stack_id: str
    status: str
    outputs: dict[str, str]

    def output(self, key: str) -> str:
        value = self.outputs.get(key)
        if not value:
            raise NotReady(
                f"stack {self.name} has no output {key}",
                "the stack was made by another version of annex-admin or is incomplete",
                f"Run `{admin_command('setup', self.name)}` again.",
            )
        return value

    @property
    def bucket(self) -> str:
        return self.output(contract.OUT_BUCKET)

    @property
    def subnets(self) -> list[str]:
        return [s for s in self.output(contract.OUT_SUBNETS).split(",") if s]

    @property
    def availability_zones(self) -> list[str]:
        return [z for z in self.output(contract.OUT_AZS).split(",") if z]

    @property
    def instance_types(self) -> list[str]:
        return [t for t in self.output(contract.OUT_INSTANCE_TYPES).split(",") if t]

    @property
    def launch_templates(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.output(contract.OUT_LAUNCH_TEMPLATES).split(","))
        return {itype: lt for itype, lt in pairs}

    @property
    def subnet_zones(self) -> dict[str, str]:
        return dict(zip(self.subnets, self.availability_zones))


def describe_stack(clients: AwsClients, stack_name: str) -> dict[str, Any] | None:
    """The raw stack description, or None when no such stack exists."""
    try:
        stacks = clients.cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            return None
        with aws_errors(f"could not look up stack {stack_name}"):
            raise
    except botocore.exceptions.BotoCoreError:
        with aws_errors(f"could not look up stack {stack_name}"):
            raise
    return stacks[0] if stacks else None


def admin_command(words: str, stack_name: str, clients: AwsClients | None = None) -> str:
    """``annex-admin <words>`` for this stack, naming --stack-name when it is not the default and
    --region when the administrator named one, so that the command acts on the same stack."""
    command = f"annex-admin {words}"
    if stack_name != contract.DEFAULT_STACK_NAME:
        command += f" --stack-name {stack_name}"
    if clients is not None and clients.region_given:
        command += f" --region {clients.region}"
    return command


def stack_missing(clients: AwsClients, stack_name: str) -> StackMissing:
    return StackMissing(
        f"no condor-annex stack named {stack_name} in {clients.region}",
        "the region has not been set up with that name, or the name or region is wrong",
        f"Run `{admin_command('setup', stack_name, clients)}` to set it up, or check --region and --stack-name.",
    )


def read_stack(clients: AwsClients, stack_name: str) -> StackInfo:
    raw = describe_stack(clients, stack_name)
    if raw is None:
        raise stack_missing(clients, stack_name)
    status = raw["StackStatus"]
    if status not in HEALTHY_STATES:
        raise NotReady(
            f"stack {stack_name} is in state {status}",
            raw.get("StackStatusReason") or "the last stack operation did not complete",
            recovery_advice(status),
        )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in raw.get("Outputs", [])}
    return StackInfo(name=stack_name, stack_id=raw["StackId"], status=status, outputs=outputs)


def recovery_advice(status: str) -> str:
    if status == "ROLLBACK_COMPLETE":
        return (
            "A stack whose creation rolled back cannot be updated: run "
            "`annex-admin teardown --yes`, then `annex-admin setup` again."
        )
    if status.endswith("_IN_PROGRESS"):
        return "Wait for the running stack operation to finish, then retry."
    if status.endswith("_FAILED"):
        return (
            "Look at the stack's events in the CloudFormation console for the failing resource, "
            "fix the cause, then run `annex-admin teardown --yes` and `annex-admin setup`."
        )
    return "Run `annex-admin check-setup` for details."
