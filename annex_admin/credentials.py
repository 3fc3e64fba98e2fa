"""Scientists' credentials: an IAM user per scientist, tagged with her project and caps."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import botocore.exceptions

from annex_common.aws import AwsClients, aws_errors, error_code
from annex_common.errors import AnnexError, BadInput
from annex_common.stack import read_stack
from annex_user.bundle import Bundle, Caps, write_bundle
from templates import contract

PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
USER_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
MAX_CAP_LEASE_HOURS = 24 * 366  # the bucket lifecycle keeps configuration 400 days


@dataclass(frozen=True)
class IssueRequest:
    stack_name: str
    project_id: str
    user: str
    output: Path
    caps: Caps


@dataclass(frozen=True)
class IssueResult:
    bundle: Bundle
    user_created: bool
    keys_removed: list[str]
    output: Path


def validate_issue(project_id: str, user: str, caps: Caps, output: Path) -> None:
    if not PROJECT_RE.match(project_id or ""):
        raise BadInput(
            f"project id {project_id!r} is not allowed",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            "Pass another --project-id.",
        )
    if not USER_RE.match(user or ""):
        raise BadInput(
            f"user name {user!r} is not a valid IAM user name",
            "IAM user names are 1-64 of letters, digits and + = , . @ _ -",
            "Pass another --user.",
        )
    _check_positive_caps(caps)
    if caps.max_lease_hours > MAX_CAP_LEASE_HOURS:
        raise BadInput(
            f"--max-lease-hours {caps.max_lease_hours:g} is over a year",
            "annex configuration is kept at most 400 days",
            f"Pass at most {MAX_CAP_LEASE_HOURS}.",
        )
    if output.exists() and output.is_dir():
        raise BadInput(f"--output {output} is a directory", "the bundle is a file", "Pass a file path.")
    if not output.parent.exists():
        raise BadInput(f"the folder of --output {output} does not exist", "", "Create it first.")


def _check_positive_caps(caps: Caps) -> None:
    """Each cap named by its option and its value, never as a Python object."""
    if caps.max_instances < 1:
        raise BadInput(
            f"--max-instances {caps.max_instances} is not allowed",
            "a project needs room for at least one instance at once",
            "Pass --max-instances 1 or more.",
        )
    if not (math.isfinite(caps.max_lease_hours) and caps.max_lease_hours > 0):
        raise BadInput(
            f"--max-lease-hours {caps.max_lease_hours:g} is not allowed",
            "the longest lease is a positive number of hours",
            "Pass for example --max-lease-hours 72.",
        )
    if not (math.isfinite(caps.max_spend_usd) and caps.max_spend_usd > 0):
        raise BadInput(
            f"--max-spend {caps.max_spend_usd:g} is not allowed",
            "the spend cap is a positive amount of US dollars",
            "Pass for example --max-spend 500.",
        )


def _user_tags(project_id: str, caps: Caps) -> list[dict[str, str]]:
    return [
        {"Key": contract.USER_TAG_PROJECT, "Value": project_id},
        {"Key": contract.USER_TAG_MAX_INSTANCES, "Value": str(caps.max_instances)},
        {"Key": contract.USER_TAG_MAX_LEASE_HOURS, "Value": f"{caps.max_lease_hours:g}"},
        {"Key": contract.USER_TAG_MAX_SPEND, "Value": f"{caps.max_spend_usd:.2f}"},
        {"Key": contract.USER_TAG_MANAGED, "Value": "condor-annex"},
    ]


def issue_credentials(clients: AwsClients, request: IssueRequest) -> IssueResult:
    validate_issue(request.project_id, request.user, request.caps, request.output)
    stack = read_stack(clients, request.stack_name)
    policy_arn = stack.output(contract.OUT_SCIENTIST_POLICY)
    iam = clients.iam
    created = False
    with aws_errors(f"could not create or update the IAM user {request.user}"):
        try:
            iam.create_user(UserName=request.user, Path=contract.USER_PATH, Tags=_user_tags(request.project_id, request.caps))
            created = True
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "EntityAlreadyExists":
                raise
            iam.tag_user(UserName=request.user, Tags=_user_tags(request.project_id, request.caps))
        iam.attach_user_policy(UserName=request.user, PolicyArn=policy_arn)
        # The admin-only copy of the caps the enforcer reads (scientists cannot write it).
        clients.s3.put_object(
            Bucket=stack.bucket,
            Key=contract.caps_key(request.project_id),
            Body=json.dumps(
                {
                    "project_id": request.project_id,
                    "max_instances": request.caps.max_instances,
                    "max_lease_hours": request.caps.max_lease_hours,
                    "max_spend_usd": request.caps.max_spend_usd,
                },
                sort_keys=True,
            ).encode(),
            ContentType="application/json",
            ServerSideEncryption="AES256",
        )
        # One live key per scientist: issuing again rotates. IAM allows two keys, so the oldest
        # goes first only when both slots are taken; the rest go once the new bundle is written.
        old_keys = sorted(
            iam.list_access_keys(UserName=request.user)["AccessKeyMetadata"], key=lambda k: k["CreateDate"]
        )
        old_ids = [k["AccessKeyId"] for k in old_keys]
        make_room = old_ids[:1] if len(old_ids) >= 2 else []
        _delete_keys(iam, request.user, make_room)
        key = iam.create_access_key(UserName=request.user)["AccessKey"]
    bundle = Bundle(
        region=clients.region,
        stack_name=request.stack_name,
        project_id=request.project_id,
        user=request.user,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        caps=request.caps,
    )
    try:
        write_bundle(request.output, bundle)
    except OSError as exc:
        # Without its bundle the new key is of no use to anyone: take it back, keep the old ones.
        with aws_errors("could not withdraw the key whose bundle could not be written"):
            _delete_keys(iam, request.user, [key["AccessKeyId"]])
        raise AnnexError(
            f"could not write the bundle {request.output}",
            exc.strerror or str(exc),
            "Choose an --output path you can write; the scientist's earlier key still works.",
        ) from exc
    with aws_errors(f"could not retire the earlier keys of {request.user}"):
        _delete_keys(iam, request.user, [k for k in old_ids if k not in make_room])
    return IssueResult(bundle, created, old_ids, request.output)


def _delete_keys(iam, user: str, key_ids: list[str]) -> None:
    """Deactivate first, so no key stays usable if a later delete fails."""
    for key_id in key_ids:
        iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
    for key_id in key_ids:
        iam.delete_access_key(UserName=user, AccessKeyId=key_id)


@dataclass(frozen=True)
class RevokeResult:
    user: str
    keys_removed: list[str]


def revoke_credentials(clients: AwsClients, user: str) -> RevokeResult:
    if not USER_RE.match(user or ""):
        raise BadInput(f"user name {user!r} is not a valid IAM user name", "", "Pass the --user you issued.")
    iam = clients.iam
    with aws_errors(f"could not revoke the keys of {user}"):
        try:
            keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                raise BadInput(f"there is no IAM user {user}", "nothing to revoke", "Check the --user name.") from exc
            raise
        _delete_keys(iam, user, keys)
    return RevokeResult(user, keys)
