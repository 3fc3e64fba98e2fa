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
    # Whose choice image_id is: setup's (the region's latest Amazon Linux 2023, True) or the
    # administrator's (--image-id, or the image build-image made: False); None when the stack was
    # recorded by a version that did not say.
    image_chosen_by_setup: bool | None = None
    instance_types: tuple[str, ...] = contract.DEFAULT_INSTANCE_TYPES
    ssh_cidr: str | None = None
    availability_zones: tuple[str, ...] = ()
    # The functions' zip in the artifact bucket (annex_admin.artifact: content-addressed).
    code_key: str = ""
    vpc_cidr: str = "10.73.0.0/16"
    # Subscribed to the enforcer's alarms; setup keeps the stack's current one when not given
    # (None), and NO_EMAIL removes it.
    notify_email: str | None = None
    # Reserved Lambda executions (annex_admin.concurrency): the enforcer's guaranteed share and the
    # broker's ceiling; None where the account cannot spare them.
    enforcer_concurrency: int | None = None
    broker_concurrency: int | None = None


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


# Wider than this, SSH to the nodes is open to a large part of the internet (a /8 is 16 million addresses).
SSH_WIDE_PREFIX = 8


def ssh_exposure(cidr: str | None) -> str | None:
    """Words for an SSH rule open to much of the internet, which setup says and asks about; None otherwise."""
    if not cidr or cidr == NO_SSH:
        return None
    network = ipaddress.ip_network(cidr, strict=False)
    if network.prefixlen == 0:
        return f"SSH open to every address on the internet ({cidr})"
    if network.prefixlen < SSH_WIDE_PREFIX:
        return f"SSH open to {network.num_addresses:,} addresses ({cidr})"
    return None


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


# A choice of "no subscription", as opposed to None: "not given" (as NO_SSH for --ssh-cidr).
NO_EMAIL = ""


def validate_notify_email(address: str | None) -> str | None:
    """--notify-email: None when not given, NO_EMAIL for 'none' (remove the subscription), else
    the address."""
    if address is None:
        return None
    if address.strip().lower() in ("", "none"):
        return NO_EMAIL
    if len(address) > 254 or not re.match(NOTIFY_EMAIL_PATTERN, address):
        raise BadInput(
            f"--notify-email {address!r} is not an e-mail address",
            "the enforcer's alarms are sent to it by e-mail",
            "Pass an address such as admin@example.org, or 'none' to remove the subscription.",
        )
    return address


# --- what the stack was built with, kept in its template and read back by the next setup ----

METADATA_KEY = "CondorAnnex"
NO_SSH = ""  # a choice of "no SSH rule", as opposed to None: "not given"


@dataclass(frozen=True)
class SetupChoices:
    """The administrator's setup options; None means "not given on this run"."""

    image_id: str | None = None
    instance_types: tuple[str, ...] | None = None
    ssh_cidr: str | None = None  # NO_SSH: no inbound rule
    # Recorded with the stack's image (StackSettings.image_chosen_by_setup), never given: it goes
    # wherever image_id goes.
    image_chosen_by_setup: bool | None = None


@dataclass(frozen=True)
class MergedChoices:
    choices: SetupChoices
    kept: frozenset[str]  # the fields taken from the stack's current settings


def settings_record(settings: StackSettings) -> dict[str, object]:
    """The choices a stack was built with, for its template's Metadata."""
    # Whose choice the image was is recorded only when known (CloudFormation takes no null).
    chosen = {} if settings.image_chosen_by_setup is None else {"ImageChosenBySetup": settings.image_chosen_by_setup}
    return {
        "Settings": {
            "ImageId": settings.image_id,
            **chosen,
            "InstanceTypes": list(settings.instance_types),
            "SshCidr": settings.ssh_cidr or NO_SSH,
        }
    }


def choices_from_template(template: dict[str, object]) -> SetupChoices | None:
    """The choices recorded in a stack's template; None when it records none (or garbage)."""
    record = (template.get("Metadata") or {}).get(METADATA_KEY) if isinstance(template, dict) else None
    values = record.get("Settings") if isinstance(record, dict) else None
    if not isinstance(values, dict):
        return None
    image, types, ssh = values.get("ImageId"), values.get("InstanceTypes"), values.get("SshCidr")
    chosen = values.get("ImageChosenBySetup")
    return SetupChoices(
        image_id=image if isinstance(image, str) and IMAGE_ID_RE.match(image) else None,
        image_chosen_by_setup=chosen if isinstance(chosen, bool) else None,
        instance_types=tuple(types) if isinstance(types, list) and types and all(isinstance(t, str) for t in types) else None,
        ssh_cidr=ssh if isinstance(ssh, str) else None,
    )


def merge_choices(given: SetupChoices, current: SetupChoices | None) -> MergedChoices:
    """Options given on this run win; the rest are the stack's current settings, if it has any."""
    if current is None:
        return MergedChoices(given, frozenset())
    merged: dict[str, object] = {}
    kept: set[str] = set()
    for name in ("image_id", "instance_types", "ssh_cidr"):
        value = getattr(given, name)
        if value is None and getattr(current, name) is not None:
            value = getattr(current, name)
            kept.add(name)
        merged[name] = value
    # A kept image keeps whose choice it was; a given one is the administrator's.
    merged["image_chosen_by_setup"] = current.image_chosen_by_setup if "image_id" in kept else given.image_chosen_by_setup
    return MergedChoices(SetupChoices(**merged), frozenset(kept))


def parse_ssh_choice(text: str | None) -> str | None:
    """--ssh-cidr: None when not given, NO_SSH for 'none' (remove the rule), else a valid CIDR."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return NO_SSH
    return validate_ssh_cidr(text)
