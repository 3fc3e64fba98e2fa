"""`annex-admin teardown`: remove everything setup and issue-credentials made in a region."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Collection

import botocore.exceptions

from annex_admin.enforce import scope_from_outputs
from annex_cloud import leftovers
from annex_cloud.leftovers import StackScope
from annex_cloud.tags import STATUS_STATES
from annex_cloud.termination import end_instances
from annex_admin.leftovers import StackResource, orphan_scientist_policy, remove_leftovers, stack_resources
from annex_common.aws import AwsClients, aws_errors, error_code
from annex_common.errors import AnnexError, NotReady
from annex_admin.stack import describe_stack
from templates import contract

Progress = Callable[[str], None]
WAIT_BATCH = 500  # instance ids per waiter call


@dataclass
class TeardownReport:
    removed: list[str] = field(default_factory=list)
    not_removed: list[tuple[str, str]] = field(default_factory=list)  # what, why

    @property
    def complete(self) -> bool:
        return not self.not_removed

    def to_dict(self, stack_name: str, region: str) -> dict[str, object]:
        return {
            "stack_name": stack_name,
            "region": region,
            "complete": self.complete,
            "removed": list(self.removed),
            "not_removed": [{"what": what, "why": why} for what, why in self.not_removed],
        }


def annex_instances(clients: AwsClients, vpc_id: str | None) -> list[str]:
    filters = [
        {"Name": "tag-key", "Values": [contract.TAG_ANNEX_NAME]},
        {"Name": "instance-state-name", "Values": list(STATUS_STATES)},
    ]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    ids: list[str] = []
    with aws_errors("could not list annex instances"):
        for page in clients.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                ids.extend(i["InstanceId"] for i in reservation["Instances"])
    return ids


def live_annex_instances(clients: AwsClients, stack_name: str) -> list[str]:
    """The annex instances teardown would have to terminate (none when there is no stack)."""
    raw = describe_stack(clients, stack_name)
    if raw is None:
        return []
    outputs = {o["OutputKey"]: o["OutputValue"] for o in raw.get("Outputs", [])}
    return annex_instances(clients, outputs.get(contract.OUT_VPC))


def instances_alive(count: int, stack_name: str) -> NotReady:
    return NotReady(
        f"{count} annex instance(s) are still alive in stack {stack_name}",
        "tearing down now would strand them without their enforcer",
        "Let their leases run out, ask the scientists to terminate them, or run teardown with "
        f"--force to terminate all {count} first.",
    )


def teardown(clients: AwsClients, stack_name: str, *, force: bool, progress: Progress) -> TeardownReport:
    report = TeardownReport()
    raw = describe_stack(clients, stack_name)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (raw or {}).get("Outputs", [])}
    live = annex_instances(clients, outputs.get(contract.OUT_VPC)) if raw else []
    if live and not force:
        raise instances_alive(len(live), stack_name)
    scope = scope_from_outputs(stack_name, outputs)
    # Fleets and spot requests first (they would replace what is terminated), volumes once the
    # instances are gone (a terminated instance's volumes become available then).
    _remove_annex_leftovers(clients, scope, (leftovers.FLEET, leftovers.SPOT_REQUEST), live, progress, report)
    if live:
        _terminate_and_wait(clients, live, progress, report)
    _remove_annex_leftovers(clients, scope, (leftovers.VOLUME,), live, progress, report)
    if outputs.get(contract.OUT_BUCKET):
        _empty_bucket(clients, outputs[contract.OUT_BUCKET], progress, report)
    # A stack deleted earlier may have left its policy, and the scientists' users attached to it.
    policy = outputs.get(contract.OUT_SCIENTIST_POLICY) or orphan_scientist_policy(clients, stack_name)
    if policy:
        revoked = _revoked_users(clients, outputs.get(contract.OUT_REGISTRY_TABLE), report)
        _remove_scientists(clients, policy, revoked, progress, report)
    _remove_node_roles(clients, stack_name, progress, report)
    _remove_pools(clients, stack_name, progress, report)
    _remove_built_images(clients, stack_name, progress, report)
    resources = stack_resources(clients, stack_name) if raw else []
    if policy and not raw:
        resources.append(StackResource("ScientistPolicy", "AWS::IAM::ManagedPolicy", policy))
    clean = _delete_stack(clients, stack_name, progress, report) if raw else False
    left = remove_leftovers(clients, resources, deletion_clean=clean, progress=progress)
    report.removed += left.removed
    report.not_removed += left.not_removed
    _remove_code_bucket(clients, stack_name, progress, report)
    _remove_leftovers(clients, stack_name, progress, report)
    return report


def _remove_built_images(clients: AwsClients, stack_name: str, progress: Progress, report: TeardownReport) -> None:
    """The images and snapshots `annex-admin build-image` made for this stack, by their tags (never
    an image it did not make, such as one given with setup --image-id): images first, since a
    snapshot of a registered image cannot be deleted."""
    from annex_admin.image import built_images

    try:
        images, snapshots = built_images(clients, stack_name)
    except AnnexError as exc:
        report.not_removed.append(("images build-image made", exc.why or exc.what))
        return
    for item in images:
        progress(f"Deregistering image {item.image_id}")
        try:
            clients.ec2.deregister_image(ImageId=item.image_id)
            report.removed.append(f"image {item.image_id} ({item.name}, made by build-image)")
        except botocore.exceptions.ClientError as exc:
            report.not_removed.append((f"image {item.image_id}", f"{error_code(exc)}: {exc.response['Error'].get('Message', '')}"))
    for snapshot in snapshots:
        try:
            clients.ec2.delete_snapshot(SnapshotId=snapshot)
            report.removed.append(f"snapshot {snapshot} (of an image build-image made)")
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "InvalidSnapshot.NotFound":
                report.not_removed.append((f"snapshot {snapshot}", f"{error_code(exc)}: {exc.response['Error'].get('Message', '')}"))


def teardown_preview(clients: AwsClients, stack_name: str, names: RemovalNames | None = None) -> list[str]:
    """What teardown would remove, in outline, changing nothing: the stack, its live annex
    instances, the images and snapshots build-image made, the code bucket, and ``names`` (the
    users, node roles and pools; found here when not given)."""
    from annex_admin.deploy import account_id
    from annex_admin.image import built_images

    lines: list[str] = []
    raw = describe_stack(clients, stack_name)
    if raw is not None:
        lines.append(f"stack {stack_name} ({raw['StackStatus']}) and every resource it holds, with its bucket emptied")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in raw.get("Outputs", [])}
        live = annex_instances(clients, outputs.get(contract.OUT_VPC))
        if live:
            lines.append(f"{len(live)} live annex instance(s), with --force only: {', '.join(live)}")
    images, snapshots = built_images(clients, stack_name)
    lines += [f"image {i.image_id} ({i.name}, made by build-image)" for i in images]
    lines += [f"snapshot {s} (of an image build-image made)" for s in snapshots]
    bucket = contract.artifact_bucket_name(stack_name, account_id(clients), clients.region)
    try:
        clients.s3.head_bucket(Bucket=bucket)
        lines.append(f"code bucket {bucket}")
    except botocore.exceptions.ClientError:
        pass
    return lines + (names or removal_names(clients, stack_name)).lines()


@dataclass(frozen=True)
class RemovalNames:
    """Who and what teardown removes beyond the stack, by name: for its question and --dry-run."""

    users: list[str]  # the scientists' IAM users
    node_roles: list[str]  # the projects' node roles (each with its instance profile)
    pools: list[str]  # the recorded pools' SSM parameters
    stack_exists: bool = True  # False: only what a stack deleted earlier left behind

    def lines(self) -> list[str]:
        return ([f"IAM user {u} (a scientist's)" for u in self.users]
                + [f"node role {r} and its instance profile" for r in self.node_roles]
                + [f"recorded pool {p}" for p in self.pools])

    def summary(self) -> str:
        parts = [f"{len(self.users)} scientist(s)' IAM user(s)" if self.users else "",
                 f"{len(self.node_roles)} node role(s)" if self.node_roles else "",
                 f"{len(self.pools)} recorded pool(s)" if self.pools else ""]
        return ", ".join(p for p in parts if p)


def removal_names(clients: AwsClients, stack_name: str) -> RemovalNames:
    """The users, node roles and pools teardown would remove, found as it finds them; changes nothing."""
    from annex_admin.nodes import node_roles_at
    from annex_admin.pool import recorded_parameters
    from annex_cloud.nodes import node_role_path

    raw = describe_stack(clients, stack_name)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (raw or {}).get("Outputs", [])}
    users: set[str] = set()
    policy = outputs.get(contract.OUT_SCIENTIST_POLICY) or orphan_scientist_policy(clients, stack_name)
    path = node_role_path(stack_name, clients.region)
    with aws_errors("could not list what teardown would remove"):
        if policy:
            users.update(_revoked_users(clients, outputs.get(contract.OUT_REGISTRY_TABLE), TeardownReport()))
            try:
                users.update(u["UserName"] for page in clients.iam.get_paginator("list_entities_for_policy").paginate(
                    PolicyArn=policy, EntityFilter="User") for u in page["PolicyUsers"])
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
        roles = [role["RoleName"] for role in node_roles_at(clients.iam, path)[1]]
        pools = recorded_parameters(clients, stack_name)
    return RemovalNames(sorted(users), sorted(roles), pools, stack_exists=raw is not None)


def nothing_to_remove(clients: AwsClients, stack_name: str, preview: list[str]) -> bool:
    """No stack, and nothing of one that is gone for teardown to find: nothing in its ``preview``
    (images, code bucket, users, node roles, recorded pools), no scientists' policy, no tagged
    network. Teardown then says so and asks nothing."""
    if preview or orphan_scientist_policy(clients, stack_name):
        return False
    with aws_errors(f"could not look for what stack {stack_name} left"):
        tag_filter = [{"Name": f"tag:{contract.TAG_STACK}", "Values": [stack_name]}]
        return not clients.ec2.describe_vpcs(Filters=tag_filter)["Vpcs"]


def _remove_code_bucket(clients: AwsClients, stack_name: str, progress: Progress, report: TeardownReport) -> None:
    """The bucket setup made for the functions' code, outside the stack (it must exist first)."""
    from annex_admin.deploy import account_id

    bucket = contract.artifact_bucket_name(stack_name, account_id(clients), clients.region)
    try:
        clients.s3.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        return  # never made, or already gone
    _empty_bucket(clients, bucket, progress, report)
    try:
        clients.s3.delete_bucket(Bucket=bucket)
        report.removed.append(f"code bucket {bucket}")
    except botocore.exceptions.ClientError as exc:
        report.not_removed.append((f"code bucket {bucket}", f"{error_code(exc)}: {exc.response['Error'].get('Message', '')}"))


def _terminate_and_wait(clients: AwsClients, ids: list[str], progress: Progress, report: TeardownReport) -> None:
    """Terminate (annex_cloud.termination: protection cleared, one refusal keeps no other alive)
    and wait for what ended; what could not be ended is reported, with why."""
    progress(f"Terminating {len(ids)} annex instance(s)")
    ending = end_instances(clients.ec2, ids, progress)
    report.not_removed += [(f"annex instance {i}", why) for i, why in sorted(ending.could_not_end.items())]
    with aws_errors("could not wait for the annex instances to terminate"):
        waiter = clients.ec2.get_waiter("instance_terminated")
        for start in range(0, len(ending.ended), WAIT_BATCH):
            waiter.wait(InstanceIds=ending.ended[start : start + WAIT_BATCH], WaiterConfig={"Delay": 5, "MaxAttempts": 120})
    if ending.ended:
        report.removed.append(f"{len(ending.ended)} annex instance(s) (terminated)")


def _remove_annex_leftovers(
    clients: AwsClients,
    scope: StackScope,
    kinds: tuple[str, ...],
    annex_instance_ids: Collection[str],
    progress: Progress,
    report: TeardownReport,
) -> None:
    """The enforcer's leftovers of the stack, with no grace: nothing will launch from it again."""
    errors: list[str] = []
    now = datetime.now(timezone.utc)
    found = leftovers.find(clients.ec2, kinds, scope, now, 0, errors, progress, frozenset(annex_instance_ids))
    for item in leftovers.remove(clients.ec2, found, False, errors, progress):
        report.removed.append(f"{item.kind} {item.resource_id} ({item.reason})")
    report.not_removed += [("annex leftovers", message) for message in errors]


def _empty_bucket(clients: AwsClients, bucket: str, progress: Progress, report: TeardownReport) -> None:
    progress(f"Emptying bucket {bucket} (every version)")
    count = 0
    try:
        paginator = clients.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket):
            entries = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            for start in range(0, len(entries), 1000):
                clients.s3.delete_objects(Bucket=bucket, Delete={"Objects": entries[start : start + 1000], "Quiet": True})
            count += len(entries)
        report.removed.append(f"{count} object version(s) in bucket {bucket}")
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "NoSuchBucket":
            report.not_removed.append((f"objects in bucket {bucket}", f"{error_code(exc)}: {exc}"))


def _revoked_users(clients: AwsClients, table: str | None, report: TeardownReport) -> list[str]:
    """Scientists revoke-credentials detached from the policy: the registry still names them."""
    from annex_cloud.registry import Registry

    if not table:
        return []
    try:
        return [u.user for u in Registry(clients.client("dynamodb"), table).users() if u.revoked]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            report.not_removed.append(("revoked scientists' IAM users", f"{error_code(exc)}: {exc}"))
        return []


def _remove_scientists(
    clients: AwsClients, policy_arn: str, revoked: list[str], progress: Progress, report: TeardownReport
) -> None:
    """Users issue-credentials made (attached to the policy, or revoked): their keys, the policy
    attachment, the user."""
    iam = clients.iam
    try:
        attached = [
            u["UserName"]
            for page in iam.get_paginator("list_entities_for_policy").paginate(PolicyArn=policy_arn, EntityFilter="User")
            for u in page["PolicyUsers"]
        ]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            report.not_removed.append(("scientists' IAM users", f"{error_code(exc)}: {exc}"))
        return
    for user in sorted(set(attached) | set(revoked)):
        progress(f"Removing IAM user {user}")
        try:
            for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
                iam.update_access_key(UserName=user, AccessKeyId=key["AccessKeyId"], Status="Inactive")
                iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
            if user in attached:
                iam.detach_user_policy(UserName=user, PolicyArn=policy_arn)
            tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=user)["Tags"]}
            if tags.get(contract.USER_TAG_MANAGED) == "condor-annex":
                iam.delete_user(UserName=user)
                report.removed.append(f"IAM user {user}")
            else:
                report.removed.append(f"access to the annex policy for IAM user {user} (user kept: not made by annex-admin)")
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "NoSuchEntity" and user not in attached:
                continue  # a revoked user someone has deleted already
            report.not_removed.append((f"IAM user {user}", f"{error_code(exc)}: {exc.response['Error'].get('Message', '')}"))


def _remove_pools(clients: AwsClients, stack_name: str, progress: Progress, report: TeardownReport) -> None:
    """The recorded pools (pool set and issue-credentials wrote them outside the stack), found by the
    stack's pool path; the key that encrypts them goes with the stack."""
    from annex_admin.pool import recorded_parameters, remove_pool
    from annex_cloud.pools import pools_path

    progress(f"Removing the recorded pools under {pools_path(stack_name)}")
    try:
        for name in recorded_parameters(clients, stack_name):
            if remove_pool(clients, name):
                report.removed.append(f"recorded pool {name}")
    except botocore.exceptions.ClientError as exc:
        report.not_removed.append((f"recorded pools under {pools_path(stack_name)}", f"{error_code(exc)}: {exc}"))


def _remove_node_roles(clients: AwsClients, stack_name: str, progress: Progress, report: TeardownReport) -> None:
    """The projects' node roles and profiles (issue-credentials made them outside the stack),
    found by the stack's node path, so a stack deleted earlier leaves none behind either."""
    from annex_admin.nodes import remove_node_roles
    from annex_cloud.nodes import node_role_path

    path = node_role_path(stack_name, clients.region)
    progress(f"Removing the projects' node roles under {path}")
    try:
        removed, not_removed = remove_node_roles(clients.iam, path)
    except botocore.exceptions.ClientError as exc:
        report.not_removed.append((f"node roles under {path}", f"{error_code(exc)}: {exc}"))
        return
    report.removed += removed
    report.not_removed += not_removed


def _delete_stack(clients: AwsClients, stack_name: str, progress: Progress, report: TeardownReport) -> bool:
    """Delete the stack and wait; True when the deletion finished without a complaint."""
    progress(f"Deleting stack {stack_name}")
    cfn = clients.cloudformation
    clean = True
    try:
        cfn.delete_stack(StackName=stack_name)
    except botocore.exceptions.ClientError as exc:
        # CloudFormation stopped at a resource still in use (the local emulator always does, at
        # the VPC): what it left is found from the stack's resource list and by tag, and removed;
        # only what then remains is reported, with its own reason.
        progress(f"  some of the stack's resources outlived its deletion ({_plain(exc)}); removing them")
        clean = False
    deadline = time.monotonic() + 3600
    while True:
        raw = describe_stack(clients, stack_name)
        if raw is None or raw["StackStatus"] == "DELETE_COMPLETE":
            report.removed.append(f"stack {stack_name}")
            return clean
        if raw["StackStatus"] == "DELETE_FAILED" or time.monotonic() > deadline:
            report.not_removed.append((f"stack {stack_name}", raw.get("StackStatusReason") or raw["StackStatus"]))
            return False
        progress(f"  {raw['StackStatus']}")
        time.sleep(3)


def _remove_leftovers(clients: AwsClients, stack_name: str, progress: Progress, report: TeardownReport) -> None:
    """Network pieces tagged with the stack's name that outlived the stack, in dependency order."""
    ec2 = clients.ec2
    tag_filter = [{"Name": f"tag:{contract.TAG_STACK}", "Values": [stack_name]}]
    try:
        vpcs = [v["VpcId"] for v in ec2.describe_vpcs(Filters=tag_filter)["Vpcs"]]
    except botocore.exceptions.ClientError as exc:
        report.not_removed.append(("network leftovers", f"{error_code(exc)}"))
        return
    for vpc in vpcs:
        vpc_filter = [{"Name": "vpc-id", "Values": [vpc]}]
        steps: list[tuple[str, Callable[[], None]]] = []
        for table in ec2.describe_route_tables(Filters=vpc_filter)["RouteTables"]:
            if any(a.get("Main") for a in table.get("Associations", [])):
                continue
            for assoc in table.get("Associations", []):
                steps.append((f"route table association {assoc['RouteTableAssociationId']}",
                              lambda a=assoc: ec2.disassociate_route_table(AssociationId=a["RouteTableAssociationId"])))
            steps.append((f"route table {table['RouteTableId']}",
                          lambda t=table: ec2.delete_route_table(RouteTableId=t["RouteTableId"])))
        for subnet in ec2.describe_subnets(Filters=vpc_filter)["Subnets"]:
            steps.append((f"subnet {subnet['SubnetId']}", lambda s=subnet: ec2.delete_subnet(SubnetId=s["SubnetId"])))
        for group in ec2.describe_security_groups(Filters=vpc_filter)["SecurityGroups"]:
            if group["GroupName"] != "default":
                steps.append((f"security group {group['GroupId']}", lambda g=group: ec2.delete_security_group(GroupId=g["GroupId"])))
        for gateway in ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc]}])["InternetGateways"]:
            gid = gateway["InternetGatewayId"]
            steps.append((f"internet gateway {gid}", lambda g=gid: (ec2.detach_internet_gateway(InternetGatewayId=g, VpcId=vpc),
                                                                    ec2.delete_internet_gateway(InternetGatewayId=g))))
        steps.append((f"VPC {vpc}", lambda: ec2.delete_vpc(VpcId=vpc)))
        for what, step in steps:
            try:
                step()
                if not what.startswith("route table association"):
                    report.removed.append(f"{what} (left by the stack deletion)")
            except botocore.exceptions.ClientError as exc:
                report.not_removed.append((what, f"{error_code(exc)}: {exc.response['Error'].get('Message', '')}"))
    progress("Checked for leftovers")


def _plain(exc: botocore.exceptions.ClientError) -> str:
    """CloudFormation's reason in words, without its error code."""
    return exc.response.get("Error", {}).get("Message", "").rstrip(".") or "no reason given"
