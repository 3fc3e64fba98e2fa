"""Setup settings: everything the region stack is built from, validated before any AWS call."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from annex_common.errors import BadInput
from templates import contract

STACK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,99}$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
MAX_INSTANCE_TYPES = 6
IMAGE_ID_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
# Loose on purpose: SNS sends a confirmation message, which is the real check of an address.
NOTIFY_EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


@dataclass(frozen=True)
class StackSettings:
    region: str
    stack_name: str = contract.DEFAULT_STACK_NAME
    image_id: str = ""
    instance_types: tuple[str, ...] = contract.DEFAULT_INSTANCE_TYPES
    ssh_cidr: str | None = None
    availability_zones: tuple[str, ...] = ()
    # The functions' zip in the artifact bucket (annex_admin.artifact: content-addressed).
    code_key: str = ""
    vpc_cidr: str = "10.73.0.0/16"
    # Subscribed to the enforcer's alarms; setup keeps the stack's current one when not given.
    notify_email: str | None = None


def validate_stack_name(name: str) -> str:
    if not STACK_NAME_RE.match(name or ""):
        raise BadInput(
            f"stack name {name!r} is not allowed",
            "CloudFormation stack names start with a letter and hold only letters, digits and "
            "hyphens (at most 100 characters)",
            "Choose a name such as HTCondorAnnex.",
        )
    return name


def parse_instance_types(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    types = tuple(dict.fromkeys(t.strip() for t in items if t.strip()))
    if not types:
        raise BadInput(
            "no instance types were given",
            "--instance-types needs at least one type",
            "Pass for example --instance-types m7i.large,m6i.large.",
        )
    if len(types) > MAX_INSTANCE_TYPES:
        raise BadInput(
            f"{len(types)} instance types is too many",
            f"at most {MAX_INSTANCE_TYPES}: each type adds a launch template to the broker's role policy, "
            "which IAM caps at 10,240 characters per role",
            "Pass the types annexes really need.",
        )
    for itype in types:
        if not INSTANCE_TYPE_RE.match(itype):
            raise BadInput(
                f"instance type {itype!r} is malformed",
                "instance types look like family.size, e.g. m7i.large",
                "Fix the --instance-types list.",
            )
    return types


def validate_ssh_cidr(cidr: str | None) -> str | None:
    if cidr in (None, ""):
        return None
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise BadInput(
            f"--ssh-cidr {cidr!r} is not a valid CIDR block",
            str(exc),
            "Pass a network such as 203.0.113.0/24 (host bits zero).",
        ) from exc
    if network.version != 4:
        raise BadInput(
            f"--ssh-cidr {cidr!r} is an IPv6 network",
            "the annex VPC is IPv4 only",
            "Pass an IPv4 network such as 203.0.113.0/24.",
        )
    return str(network)


def validate_image_id(image_id: str | None) -> str:
    if not image_id:
        return ""
    if not IMAGE_ID_RE.match(image_id):
        raise BadInput(
            f"image id {image_id!r} is malformed",
            "AMI ids look like ami-0123456789abcdef0",
            "Pass a valid --image-id, or omit it to use the latest Amazon Linux 2023.",
        )
    return image_id


def validate_notify_email(address: str | None) -> str | None:
    if address in (None, ""):
        return None
    if len(address) > 254 or not re.match(NOTIFY_EMAIL_PATTERN, address):
        raise BadInput(
            f"--notify-email {address!r} is not an e-mail address",
            "the enforcer's alarms are sent to it by e-mail",
            "Pass an address such as admin@example.org.",
        )
    return address
