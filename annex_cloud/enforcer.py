"""condor-annex enforcer: the server-side guardrail that runs every few minutes.

Deployed in the region stack's function zip with the rest of ``annex_cloud`` (handler
``annex_cloud.enforcer.handler``); ``annex-admin enforce`` invokes that same function.

One sweep:
1. deletes the stack's lasting fleets (``annex_cloud.leftovers``), which would otherwise replace
   what the sweep ends;
2. finds every annex instance that is pending, running, stopping or stopped: those with the tag
   ``htcondor:AnnexName``, and those launched from the stack's launch templates whatever their
   tags; no other instance is ever touched; cancels their persistent or open spot requests;
3. terminates those whose lease has ended, whose expiry tag is missing or unparsable, whose tag
   keys differ in case from the contract's, whose lease (expiry - launch time) is longer than
   the project's cap, or that run with an instance profile other than their project's node
   profile (``annex_cloud.nodes``: it could read another project's material); termination
   protection does not save them;
4. per project, terminates the newest of the remaining instances while the project has more live
   instances than its cap, then the newest while its committed spend (hourly price x remaining lease
   hours, summed) exceeds its cap;
5. deletes the stack's volumes left available, and the configuration objects of annexes that have
   no live instance left, once they are older than a grace period;
6. publishes its heartbeat and counts as CloudWatch metrics (``annex_cloud.metrics``).

It is idempotent: a second sweep at the same moment finds nothing to do. A dry run changes nothing
and reports what a real sweep would do. ``check_instance`` makes the same decision for one
instance, as soon as EC2 reports it starting (the stack's state-change rule).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

from annex_cloud import leftovers, metrics
from annex_cloud.calls import error_code, error_text as _error_text, function_clients
from annex_cloud.caps import Caps
from annex_cloud.cost import PriceBook, commitment, committed_spend
from annex_cloud.expiry import format_expiry_tag
from annex_cloud.guardrails import LEFTOVER_GRACE_SECONDS
from annex_cloud.instances import AnnexInstance, as_utc, describe, from_description
from annex_cloud.layout import ANNEX_PREFIX
from annex_cloud.leftovers import Leftover, StackScope
from annex_cloud.nodes import profile_name_of
from annex_cloud.prices import stack_price_book
from annex_cloud.registry import Registry
from annex_cloud.tags import LIVE_STATES, REQUIRED_INSTANCE_TAGS, TAG_ANNEX_NAME, TAG_PROJECT, tag_dict
from annex_cloud.termination import end_instances

# DeleteObjects takes at most 1,000 keys.
DELETE_BATCH = 1000
# EC2 tags every instance launched from a launch template with the template's id under this key
# (an "aws:" key: nobody can set or change it).
TAG_LAUNCH_TEMPLATE_ID = "aws:ec2launchtemplate:id"


# ---------------------------------------------------------------------------------------------
# Pure rule logic (no AWS calls): instances in, decisions out.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Termination:
    instance: AnnexInstance
    reason: str


@dataclass
class Plan:
    terminations: list[Termination] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # informational log lines, not actions


def tag_key_problem(tags: Mapping[str, str]) -> str | None:
    """A contract tag key spelled in another case. EC2 and the node's metadata read tag keys
    exactly, IAM conditions ignore their case: such an instance has no lease all three agree on."""
    canonical = {key.lower(): key for key in REQUIRED_INSTANCE_TAGS}
    for key in sorted(tags):
        wanted = canonical.get(key.lower())
        if wanted is not None and key != wanted:
            return f"tag key {printable(key)} differs in case from {wanted!r}"
    return None


NodeProfile = Callable[[str], str]  # project id -> the name of its nodes' instance profile


def profile_problem(description: Mapping[str, Any], project: str, node_profile: NodeProfile | None) -> str | None:
    """An instance profile that is not the project's node profile: its role may read another
    project's material. No profile at all reads nothing, and is no problem here."""
    arn = (description.get("IamInstanceProfile") or {}).get("Arn")
    if node_profile is None or not arn:
        return None
    name = profile_name_of(str(arn))
    if project and name == node_profile(project):
        return None
    return f"runs with instance profile {printable(name)}, not the node profile of project {printable(project)}"


def annex_instance(
    description: Mapping[str, Any], launch_template_ids: Iterable[str] = (), node_profile: NodeProfile | None = None
) -> AnnexInstance | None:
    """An instance from describe_instances output, or None unless it is a live annex instance:
    one with the annex name tag, or one launched from one of ``launch_template_ids`` (the
    stack's), whatever its tags. With ``node_profile``, one running with another profile than
    its project's nodes' has no valid lease.

    This re-checks, client side, what the server-side filters asked for, so that a filter the
    service ignored can never widen what the enforcer touches.
    """
    tags = tag_dict(description.get("Tags"))
    state = (description.get("State") or {}).get("Name", "")
    from_stack = tags.get(TAG_LAUNCH_TEMPLATE_ID) in set(launch_template_ids)
    if (TAG_ANNEX_NAME not in tags and not from_stack) or state not in LIVE_STATES:
        return None
    if not description.get("InstanceId"):
        return None
    problem = tag_key_problem(tags) or _unnamed(tags) or profile_problem(description, tags.get(TAG_PROJECT) or "", node_profile)
    return dataclasses.replace(from_description(description), tag_problem=problem)


def _unnamed(tags: Mapping[str, str]) -> str | None:
    if TAG_ANNEX_NAME in tags:
        return None
    return "launched from the stack's launch template without an annex name tag"


def lease_violation(instance: AnnexInstance, caps: Caps | None, now: datetime) -> str | None:
    """Why the instance's lease alone condemns it, or None."""
    if instance.tag_problem:
        return instance.tag_problem
    if instance.expiry_tag is None:
        return "no expiry tag"
    expiry = instance.expiry
    if expiry is None:
        return f"unparsable expiry tag {printable(instance.expiry_tag)}"
    if expiry <= now:
        return f"lease expired at {format_expiry_tag(expiry)}"
    if caps is not None and instance.launch_time is not None:
        lease = (expiry - instance.launch_time).total_seconds()
        if not caps.allows_lease(lease):
            return f"lease of {lease / 3600:.2f} h exceeds the project's cap of {caps.max_lease_hours:g} h"
    return None


def newest_first(instances: Iterable[AnnexInstance]) -> list[AnnexInstance]:
    return sorted(instances, key=lambda i: i.age_key, reverse=True)


def cap_violations(instances: list[AnnexInstance], caps: Caps, prices: PriceBook, now: datetime) -> list[Termination]:
    """One project's surplus, newest first: beyond the instance cap, then while spend is over its cap."""
    survivors = sorted(instances, key=lambda i: i.age_key)  # oldest first
    condemned: list[Termination] = []
    if not caps.allows_instances(len(survivors)):
        live = len(survivors)
        surplus = survivors[caps.max_instances :]
        survivors = survivors[: caps.max_instances]
        condemned += [
            Termination(i, f"project has {live} live instances, cap is {caps.max_instances}")
            for i in reversed(surplus)
        ]
    # What cannot be priced could cost anything: under a spend cap it never lives on.
    unpriced = [i for i in survivors if prices.price(i.instance_type) is None]
    survivors = [i for i in survivors if prices.price(i.instance_type) is not None]
    condemned += [
        Termination(i, f"no price is known for instance type {printable(i.instance_type)} under a spend cap")
        for i in reversed(unpriced)
    ]
    spend = committed_spend(survivors, prices, now)
    while survivors and not caps.allows_spend(spend):
        newest = survivors.pop()
        condemned.append(
            Termination(newest, f"project's committed spend ${spend:.2f} exceeds its cap of ${caps.max_spend_usd:.2f}")
        )
        spend -= commitment(newest, prices, now)
    return condemned


def plan_terminations(
    instances: Iterable[AnnexInstance],
    caps_for: Callable[[str], Caps | None],
    prices: PriceBook,
    now: datetime,
) -> Plan:
    """Every termination one sweep makes, lease breakers first; they do not count towards caps."""
    plan = Plan()
    by_project: dict[str, list[AnnexInstance]] = {}
    for instance in sorted(instances, key=lambda i: (i.project_id, i.age_key)):
        caps = caps_for(instance.project_id) if instance.project_id else None
        reason = lease_violation(instance, caps, now)
        if reason:
            plan.terminations.append(Termination(instance, reason))
        else:
            by_project.setdefault(instance.project_id, []).append(instance)
    for project, group in sorted(by_project.items()):
        caps = caps_for(project) if project else None
        if caps is not None:
            plan.terminations += cap_violations(group, caps, prices, now)
    return plan


def orphan_keys(
    objects: Iterable[tuple[str, datetime]],
    live_annexes: set[tuple[str, str]],
    now: datetime,
    grace_seconds: int,
) -> list[str]:
    """Configuration objects to delete: of annexes with no live instance, none of them fresh.

    An annex any of whose objects is younger than the grace period is left whole: a launch is
    probably uploading it right now. Keys outside annexes/<project>/<annex>/ are never touched.
    """
    cutoff = now - timedelta(seconds=grace_seconds)
    groups: dict[tuple[str, str], list[tuple[str, datetime]]] = {}
    for key, modified in objects:
        parts = key.split("/")
        if len(parts) < 4 or parts[0] != ANNEX_PREFIX or not parts[1] or not parts[2] or not parts[3]:
            continue
        groups.setdefault((parts[1], parts[2]), []).append((key, modified))
    doomed: list[str] = []
    for annex, members in sorted(groups.items()):
        if annex in live_annexes:
            continue
        if all((moment := as_utc(modified)) is not None and moment <= cutoff for _, modified in members):
            doomed += sorted(key for key, _ in members)
    return doomed


def one_line(text: str) -> str:
    """Escape control characters so a value cannot break or forge a log line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


def printable(value: Any, limit: int = 80) -> str:
    """A tag value safe for a one-line log: quoted, control characters escaped, length bounded."""
    text = repr(str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


# ---------------------------------------------------------------------------------------------
# The sweep: the I/O around the rules.
# ---------------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    terminated: list[tuple[str, str, str, str]] = field(default_factory=list)  # id, annex, project, reason
    kept: int = 0
    deleted_objects: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    # Condemned but still alive after every attempt: id, annex, project, why it could not be ended.
    could_not_end: list[tuple[str, str, str, str]] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)  # removed, or to be removed in a dry run

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "terminated": [
                {"instance_id": i, "annex_name": a, "project_id": p, "reason": r}
                for i, a, p, r in self.terminated
            ],
            "kept": self.kept,
            "could_not_end": [
                {"instance_id": i, "annex_name": a, "project_id": p, "error": e}
                for i, a, p, e in self.could_not_end
            ],
            "leftovers": [
                {"kind": item.kind, "id": item.resource_id, "reason": item.reason} for item in self.leftovers
            ],
            "deleted_objects": list(self.deleted_objects),
            "errors": list(self.errors),
        }

    def metric_counts(self) -> dict[str, float]:
        return {
            metrics.ENDED: len(self.terminated),
            metrics.COULD_NOT_END: len(self.could_not_end),
            metrics.ERRORS: len(self.errors),
        }


def list_annex_instances(
    ec2: Any, launch_template_ids: Iterable[str] = (), node_profile: NodeProfile | None = None
) -> list[AnnexInstance]:
    """Live instances with the annex name tag, and those launched from the stack's templates (an
    instance whose annex name tag is missing, or spelled in another case, is found that way)."""
    template_ids = sorted(set(launch_template_ids))
    live = {"Name": "instance-state-name", "Values": list(LIVE_STATES)}
    queries = [[{"Name": "tag-key", "Values": [TAG_ANNEX_NAME]}, live]]
    if template_ids:
        queries.append([{"Name": f"tag:{TAG_LAUNCH_TEMPLATE_ID}", "Values": template_ids}, live])
    found: dict[str, AnnexInstance] = {}
    for filters in queries:
        for description in describe(ec2, filters):
            instance = annex_instance(description, template_ids, node_profile)
            if instance is not None:
                found[instance.instance_id] = instance
    return list(found.values())


CapsReader = Callable[[str], Caps | None]


class CapsCache:
    """Reads each project's caps from the administrator's record at most once per sweep.

    A project with no record gets no instances at all: only the broker launches, and it launches
    only for recorded projects. A record that cannot be read leaves only the lease rules.
    """

    def __init__(self, read: CapsReader, log: Callable[[str], None], errors: list[str]) -> None:
        self._read, self._log, self._errors = read, log, errors
        self._cache: dict[str, Caps | None] = {}

    def __call__(self, project: str) -> Caps | None:
        if project not in self._cache:
            self._cache[project] = self._load(project)
        return self._cache[project]

    def _load(self, project: str) -> Caps | None:
        try:
            recorded = self._read(project)
        except ValueError as exc:
            self._error(f"caps of project {printable(project)} are invalid: {exc}")
            return None
        except Exception as exc:  # botocore errors; the enforcer must go on with other projects
            self._error(f"could not read caps of project {printable(project)}: {_error_text(exc)}")
            return None
        if recorded is None:
            self._log(f"project {printable(project)} has no record: none of its instances may run")
            return Caps(max_instances=0)
        return recorded

    def _error(self, message: str) -> None:
        self._errors.append(message)
        self._log(f"error: {message}; only lease rules apply to this project")


def _where(instance: AnnexInstance) -> str:
    return f"annex {printable(instance.annex_name)}, project {printable(instance.project_id)}"


def _terminate(
    ec2: Any, terminations: list[Termination], dry_run: bool, report: SweepReport, log: Callable[[str], None]
) -> set[str]:
    """Terminate (annex_cloud.termination); returns the ids that are gone (or would be, in a dry run)."""
    ids = [t.instance.instance_id for t in terminations]
    could_not_end = {} if dry_run else end_instances(ec2, ids, log).could_not_end
    done: set[str] = set()
    verb = "would terminate" if dry_run else "terminated"
    for t in terminations:
        i = t.instance
        problem = could_not_end.get(i.instance_id)
        if problem is not None:
            message = f"could not terminate {i.instance_id} ({_where(i)}; {t.reason}): {problem}"
            report.errors.append(message)
            report.could_not_end.append((i.instance_id, i.annex_name, i.project_id, problem))
            log(f"error: {message}")
            continue
        done.add(i.instance_id)
        report.terminated.append((i.instance_id, i.annex_name, i.project_id, t.reason))
        log(f"{verb} {i.instance_id} ({_where(i)}): {t.reason}")
    return done


def _delete_orphans(
    s3: Any,
    bucket: str,
    live_annexes: set[tuple[str, str]],
    now: datetime,
    grace_seconds: int,
    dry_run: bool,
    report: SweepReport,
    log: Callable[[str], None],
) -> None:
    objects: list[tuple[str, datetime]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=ANNEX_PREFIX + "/"):
            objects += [(o["Key"], o["LastModified"]) for o in page.get("Contents", [])]
    except Exception as exc:
        message = f"could not list configuration in s3://{bucket}/{ANNEX_PREFIX}/: {_error_text(exc)}"
        report.errors.append(message)
        log(f"error: {message}")
        return
    doomed = orphan_keys(objects, live_annexes, now, grace_seconds)
    for start in range(0, len(doomed), DELETE_BATCH):
        batch = doomed[start : start + DELETE_BATCH]
        failed: dict[str, str] = {}
        if not dry_run:
            try:
                response = s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
                failed = {
                    e.get("Key", ""): f"{e.get('Code', '')}: {e.get('Message', '')}"
                    for e in response.get("Errors", [])
                }
            except Exception as exc:
                message = f"could not delete {len(batch)} configuration objects: {_error_text(exc)}"
                report.errors.append(message)
                log(f"error: {message}")
                continue
        for key in batch:
            if key in failed:
                message = f"could not delete s3://{bucket}/{one_line(key)}: {failed[key]}"
                report.errors.append(message)
                log(f"error: {message}")
                continue
            report.deleted_objects.append(key)
            verb = "would delete" if dry_run else "deleted"
            log(f"{verb} orphan configuration s3://{bucket}/{one_line(key)}")


def _publish(
    cloudwatch: Any,
    stack: StackScope | None,
    counts: Mapping[str, float],
    now: datetime,
    log: Callable[[str], None],
    errors: list[str] | None,
) -> None:
    """Publishes the run's metrics when there is somewhere to publish them; a failure is reported
    (its missing heartbeat then raises the alarm)."""
    if cloudwatch is None or stack is None:
        return
    try:
        metrics.publish(cloudwatch, stack.name, counts, now)
    except Exception as exc:
        message = f"could not publish the enforcer's metrics: {_error_text(exc)}"
        if errors is not None:
            errors.append(message)
        log(f"error: {message}")


def _remove_leftovers(
    ec2: Any,
    kinds: tuple[str, ...],
    stack: StackScope | None,
    now: datetime,
    grace_seconds: int,
    dry_run: bool,
    report: SweepReport,
    log: Callable[[str], None],
    annex_instance_ids: frozenset[str] = frozenset(),
) -> None:
    found = leftovers.find(ec2, kinds, stack, now, grace_seconds, report.errors, log, annex_instance_ids)
    report.leftovers += leftovers.remove(ec2, found, dry_run, report.errors, log)


def sweep(
    ec2: Any,
    s3: Any,
    *,
    bucket: str,
    prices: PriceBook,
    caps: CapsReader,
    now: datetime,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
    config_grace_seconds: int = 900,
    stack: StackScope | None = None,
    cloudwatch: Any = None,
    leftover_grace_seconds: int = LEFTOVER_GRACE_SECONDS,
) -> SweepReport:
    """One enforcement pass. A failure to list instances raises; every later failure is reported.

    ``stack`` names the region stack: its launch templates find instances whatever their tags,
    and mark its fleets. With ``cloudwatch`` as well, a real sweep publishes its heartbeat and
    counts (a sweep that raises publishes one error).
    """
    now = as_utc(now) or datetime.now(timezone.utc)
    try:
        report = _sweep(
            ec2, s3, bucket, prices, caps, now, dry_run, log, config_grace_seconds, stack, leftover_grace_seconds
        )
    except Exception:
        if not dry_run:
            _publish(cloudwatch, stack, {metrics.ERRORS: 1}, now, log, None)
        raise
    if not dry_run:
        _publish(cloudwatch, stack, {metrics.HEARTBEAT: 1, **report.metric_counts()}, now, log, report.errors)
    return report


def _sweep(
    ec2: Any,
    s3: Any,
    bucket: str,
    prices: PriceBook,
    caps: CapsReader,
    now: datetime,
    dry_run: bool,
    log: Callable[[str], None],
    config_grace_seconds: int,
    stack: StackScope | None,
    leftover_grace_seconds: int,
) -> SweepReport:
    report = SweepReport(dry_run=dry_run)
    # Fleets and spot requests before instances: they would replace the instances ended below.
    _remove_leftovers(ec2, (leftovers.FLEET,), stack, now, leftover_grace_seconds, dry_run, report, log)
    instances = list_annex_instances(ec2, stack.launch_template_ids if stack else (), _node_profile(stack))
    annex_ids = frozenset(i.instance_id for i in instances)
    _remove_leftovers(
        ec2, (leftovers.SPOT_REQUEST,), stack, now, leftover_grace_seconds, dry_run, report, log, annex_ids
    )
    plan = plan_terminations(instances, CapsCache(caps, log, report.errors), prices, now)
    for note in plan.notes:
        log(note)
    gone = _terminate(ec2, plan.terminations, dry_run, report, log)
    survivors = [i for i in instances if i.instance_id not in gone]
    report.kept = len(survivors)
    # Volumes of instances ended just now become available later: the next sweep removes them.
    _remove_leftovers(ec2, (leftovers.VOLUME,), stack, now, leftover_grace_seconds, dry_run, report, log)
    live_annexes = {(i.project_id, i.annex_name) for i in survivors}
    _delete_orphans(s3, bucket, live_annexes, now, config_grace_seconds, dry_run, report, log)
    log(
        f"enforcer{' (dry run)' if dry_run else ''} at {format_expiry_tag(now)}: "
        f"{len(report.terminated)} instances {'to terminate' if dry_run else 'terminated'}, "
        f"{report.kept} kept, {len(report.could_not_end)} could not be ended, "
        f"{len(report.leftovers)} leftovers {'to remove' if dry_run else 'removed'}, "
        f"{len(report.deleted_objects)} configuration objects "
        f"{'to delete' if dry_run else 'deleted'}, {len(report.errors)} errors"
    )
    return report


def _node_profile(stack: StackScope | None) -> NodeProfile | None:
    return stack.node_profile if stack is not None and stack.region else None


def describe_instance(ec2: Any, instance_id: str) -> Mapping[str, Any] | None:
    """One instance's description, or None when EC2 does not know it (yet: a state-change event
    can arrive before DescribeInstances shows the instance)."""
    try:
        response = ec2.describe_instances(InstanceIds=[instance_id])
    except Exception as exc:
        if error_code(exc) == "InvalidInstanceID.NotFound":
            return None
        raise
    for reservation in response.get("Reservations", []):
        for description in reservation.get("Instances", []):
            if description.get("InstanceId") == instance_id:
                return description
    return None


def check_instance(
    ec2: Any,
    s3: Any,
    instance_id: str,
    *,
    bucket: str,
    prices: PriceBook,
    caps: CapsReader,
    now: datetime,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
    stack: StackScope | None = None,
    cloudwatch: Any = None,
) -> SweepReport:
    """The sweep's decision for one instance, made when EC2 reports it pending or running, so an
    instance outside the broker's rules ends within a minute instead of at the next sweep.

    Only what the instance shows by itself is decided here (its tags, its lease, a cap it breaks
    alone); how many instances its project runs, and what they commit together, is the sweep's.
    Its counts are published without a heartbeat: the heartbeat stands for the schedule.
    """
    now = as_utc(now) or datetime.now(timezone.utc)
    report = SweepReport(dry_run=dry_run)
    try:
        description = describe_instance(ec2, instance_id)
    except Exception:
        if not dry_run:
            _publish(cloudwatch, stack, {metrics.ERRORS: 1}, now, log, None)
        raise
    templates = stack.launch_template_ids if stack else ()
    instance = annex_instance(description, templates, _node_profile(stack)) if description is not None else None
    if instance is None:
        log(f"{instance_id} is not a live annex instance: nothing to do")
    else:
        plan = plan_terminations([instance], CapsCache(caps, log, report.errors), prices, now)
        gone = _terminate(ec2, plan.terminations, dry_run, report, log)
        report.kept = 0 if gone else 1
        if not plan.terminations:
            log(f"{instance_id} ({_where(instance)}) keeps its lease until {printable(instance.expiry_tag)}")
    if not dry_run:
        _publish(cloudwatch, stack, report.metric_counts(), now, log, report.errors)
    return report


# ---------------------------------------------------------------------------------------------
# The scheduled function's entry point.
# ---------------------------------------------------------------------------------------------

STATE_CHANGE_SOURCE = "aws.ec2"
STATE_CHANGE_DETAIL_TYPE = "EC2 Instance State-change Notification"
INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")


def state_change_instance(event: Any) -> str | None:
    """The instance named by an EC2 state-change event, or None for any other event.

    EventBridge delivers the event as EC2 documents it
    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instance-state-changes.html):

        {"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
         "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
         "account": "123456789012", "time": "2021-11-11T21:29:54Z", "region": "us-east-1",
         "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0"],
         "detail": {"instance-id": "i-1234567890abcdef0", "state": "pending"}}

    A state-change event without a usable instance id raises: it is not one EC2 sends.
    """
    if not isinstance(event, Mapping):
        return None
    if event.get("source") != STATE_CHANGE_SOURCE or event.get("detail-type") != STATE_CHANGE_DETAIL_TYPE:
        return None
    detail = event.get("detail")
    instance_id = detail.get("instance-id") if isinstance(detail, Mapping) else None
    if not isinstance(instance_id, str) or not INSTANCE_ID_RE.match(instance_id):
        raise ValueError(f"state-change event without a usable instance id: {printable(instance_id)}")
    return instance_id


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def stack_scope_from_env(env: Mapping[str, str]) -> StackScope | None:
    """ANNEX_STACK_NAME, ANNEX_LAUNCH_TEMPLATES (ids) and ANNEX_LAUNCH_TEMPLATE_NAMES, as the
    region stack sets them, and the function's region; None without a stack name."""
    name = env.get("ANNEX_STACK_NAME", "").strip()
    if not name:
        return None
    return StackScope(
        name=name,
        launch_template_ids=_csv(env.get("ANNEX_LAUNCH_TEMPLATES")),
        launch_template_names=_csv(env.get("ANNEX_LAUNCH_TEMPLATE_NAMES")),
        region=(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip(),
    )


def handler(event: Any, context: Any, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Lambda entry point: the scheduled sweep, or the check of one instance for an EC2
    state-change event. A misconfigured function raises, so the failure shows in its metrics."""

    env = os.environ if environ is None else environ
    bucket, table = env.get("ANNEX_BUCKET", ""), env.get("ANNEX_REGISTRY_TABLE", "")
    if not bucket or not table:
        raise ValueError("ANNEX_BUCKET or ANNEX_REGISTRY_TABLE is not set: the function was not deployed by the region stack")
    dry_run = isinstance(event, dict) and event.get("dry_run") is True
    instance_id = state_change_instance(event)
    stack = stack_scope_from_env(env)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    clients = function_clients(region, attempts=8)
    ec2, s3 = clients["ec2"], clients["s3"]
    cloudwatch = clients["cloudwatch"] if stack else None
    registry = Registry(clients["dynamodb"], table)
    prices, caps = stack_price_book(registry.prices(), region), registry.caps
    now = datetime.now(timezone.utc)
    if instance_id is not None:
        report = check_instance(
            ec2, s3, instance_id, bucket=bucket, prices=prices, caps=caps, now=now, dry_run=dry_run,
            stack=stack, cloudwatch=cloudwatch,
        )
    else:
        report = sweep(
            ec2, s3, bucket=bucket, prices=prices, caps=caps, now=now, dry_run=dry_run, stack=stack,
            cloudwatch=cloudwatch,
        )
    return report.to_dict()

