"""condor-annex enforcer: the server-side guardrail that runs every few minutes.

Deployed in the region stack's function zip with the rest of ``annex_cloud`` (handler
``annex_cloud.enforcer.handler``); ``annex-admin enforce`` invokes that same function.

One sweep:
1. finds every annex instance (tag ``htcondor:AnnexName``) that is pending, running, stopping or
   stopped; no other instance is ever touched;
2. terminates those whose lease has ended, whose expiry tag is missing or unparsable, or whose lease
   (expiry - launch time) is longer than the project's cap;
3. per project, terminates the newest of the remaining instances while the project has more live
   instances than its cap, then the newest while its committed spend (hourly price x remaining lease
   hours, summed) exceeds its cap;
4. deletes the configuration objects of annexes that have no live instance left, once they are
   older than a grace period (a launch uploads its configuration just before its instances exist).

It is idempotent: a second sweep at the same moment finds nothing to do. A dry run changes nothing
and reports what a real sweep would do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

from annex_cloud.caps import SPEND_EPSILON
from annex_cloud.caps import Caps as ProjectCaps
from annex_cloud.cost import PriceBook
from annex_cloud.prices import shipped_prices
from annex_cloud.registry import Registry
from annex_cloud.expiry import format_expiry_tag, parse_expiry_tag
from annex_cloud.layout import ANNEX_PREFIX
from annex_cloud.tags import LIVE_STATES, TAG_ANNEX_NAME, TAG_EXPIRY, TAG_PROJECT

# TerminateInstances takes at most 1,000 ids; half that keeps one failed batch small.
TERMINATE_BATCH = 500
# DeleteObjects takes at most 1,000 keys.
DELETE_BATCH = 1000
# A scientist's clock may run a little ahead of AWS's: an expiry computed as "her now + the cap"
# then measures slightly longer than the cap from the instance's launch time. Forgive that much.
LEASE_CAP_SLACK = timedelta(minutes=5)


# ---------------------------------------------------------------------------------------------
# Pure rule logic (no AWS calls): instances in, decisions out.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnexInstance:
    instance_id: str
    annex_name: str
    project: str  # "" when the instance carries no project tag
    state: str
    instance_type: str
    launch_time: datetime | None
    expiry_raw: str | None  # the tag's value, None when the tag is absent

    @property
    def expiry(self) -> datetime | None:
        return parse_expiry(self.expiry_raw)

    @property
    def age_key(self) -> tuple[datetime, str]:
        """Sort key, oldest first; instances launched in the same second are ordered by id."""
        return (self.launch_time or datetime.min.replace(tzinfo=timezone.utc), self.instance_id)


@dataclass(frozen=True)
class Caps:
    max_instances: int | None = None
    max_lease_hours: float | None = None
    max_spend_usd: float | None = None


@dataclass(frozen=True)
class Termination:
    instance: AnnexInstance
    reason: str


@dataclass
class Plan:
    terminations: list[Termination] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # informational log lines, not actions


def parse_expiry(value: str | None) -> datetime | None:
    return parse_expiry_tag(value)


def format_time(moment: datetime) -> str:
    return format_expiry_tag(moment)


def _as_utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, str):
        try:
            return _as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def annex_instance(description: Mapping[str, Any]) -> AnnexInstance | None:
    """An instance from describe_instances output, or None unless it is a live annex instance.

    This re-checks, client side, what the server-side filters asked for, so that a filter the
    service ignored can never widen what the enforcer touches.
    """
    tags = {t.get("Key"): t.get("Value", "") for t in description.get("Tags") or []}
    state = (description.get("State") or {}).get("Name", "")
    if TAG_ANNEX_NAME not in tags or state not in LIVE_STATES:
        return None
    instance_id = description.get("InstanceId")
    if not instance_id:
        return None
    return AnnexInstance(
        instance_id=instance_id,
        annex_name=tags.get(TAG_ANNEX_NAME) or "",
        project=tags.get(TAG_PROJECT) or "",
        state=state,
        instance_type=description.get("InstanceType", ""),
        launch_time=_as_utc(description.get("LaunchTime")),
        expiry_raw=tags.get(TAG_EXPIRY),
    )


def lease_violation(instance: AnnexInstance, caps: Caps | None, now: datetime) -> str | None:
    """Why the instance's lease alone condemns it, or None."""
    if instance.expiry_raw is None:
        return "no expiry tag"
    expiry = instance.expiry
    if expiry is None:
        return f"unparsable expiry tag {printable(instance.expiry_raw)}"
    if expiry <= now:
        return f"lease expired at {format_time(expiry)}"
    if caps is not None and caps.max_lease_hours is not None and instance.launch_time is not None:
        lease = expiry - instance.launch_time
        if lease > timedelta(hours=caps.max_lease_hours) + LEASE_CAP_SLACK:
            hours = lease.total_seconds() / 3600
            return f"lease of {hours:.2f} h exceeds the project's cap of {caps.max_lease_hours:g} h"
    return None


def committed_cost(instance: AnnexInstance, prices: Mapping[str, float], now: datetime) -> float:
    """What the instance may still cost: hourly price x hours left on its lease (priced types only)."""
    expiry = instance.expiry
    if expiry is None or expiry <= now:
        return 0.0
    return float(prices[instance.instance_type]) * (expiry - now).total_seconds() / 3600


def newest_first(instances: Iterable[AnnexInstance]) -> list[AnnexInstance]:
    return sorted(instances, key=lambda i: i.age_key, reverse=True)


def cap_violations(
    instances: list[AnnexInstance], caps: Caps, prices: Mapping[str, float], now: datetime
) -> list[Termination]:
    """One project's surplus, newest first: beyond the instance cap, then while spend is over its cap."""
    survivors = sorted(instances, key=lambda i: i.age_key)  # oldest first
    condemned: list[Termination] = []
    if caps.max_instances is not None and len(survivors) > caps.max_instances:
        live = len(survivors)
        surplus = survivors[caps.max_instances :]
        survivors = survivors[: caps.max_instances]
        condemned += [
            Termination(i, f"project has {live} live instances, cap is {caps.max_instances}")
            for i in reversed(surplus)
        ]
    if caps.max_spend_usd is not None:
        # What cannot be priced could cost anything: under a spend cap it never lives on.
        unpriced = [i for i in survivors if i.instance_type not in prices]
        survivors = [i for i in survivors if i.instance_type in prices]
        condemned += [
            Termination(i, f"no price is known for instance type {printable(i.instance_type)} under a spend cap")
            for i in reversed(unpriced)
        ]
        spend = sum(committed_cost(i, prices, now) for i in survivors)
        while survivors and spend > caps.max_spend_usd + SPEND_EPSILON:
            newest = survivors.pop()
            condemned.append(
                Termination(
                    newest,
                    f"project's committed spend ${spend:.2f} exceeds its cap of ${caps.max_spend_usd:.2f}",
                )
            )
            spend -= committed_cost(newest, prices, now)
    return condemned


def plan_terminations(
    instances: Iterable[AnnexInstance],
    caps_for: Callable[[str], Caps | None],
    prices: Mapping[str, float],
    now: datetime,
) -> Plan:
    """Every termination one sweep makes, lease breakers first; they do not count towards caps."""
    plan = Plan()
    by_project: dict[str, list[AnnexInstance]] = {}
    for instance in sorted(instances, key=lambda i: (i.project, i.age_key)):
        caps = caps_for(instance.project) if instance.project else None
        reason = lease_violation(instance, caps, now)
        if reason:
            plan.terminations.append(Termination(instance, reason))
        else:
            by_project.setdefault(instance.project, []).append(instance)
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
        if all(_as_utc(modified) is not None and _as_utc(modified) <= cutoff for _, modified in members):
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "terminated": [
                {"instance_id": i, "annex_name": a, "project_id": p, "reason": r}
                for i, a, p, r in self.terminated
            ],
            "kept": self.kept,
            "deleted_objects": list(self.deleted_objects),
            "errors": list(self.errors),
        }


def list_annex_instances(ec2: Any) -> list[AnnexInstance]:
    paginator = ec2.get_paginator("describe_instances")
    pages = paginator.paginate(
        Filters=[
            {"Name": "tag-key", "Values": [TAG_ANNEX_NAME]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
    )
    found: dict[str, AnnexInstance] = {}
    for page in pages:
        for reservation in page.get("Reservations", []):
            for description in reservation.get("Instances", []):
                instance = annex_instance(description)
                if instance is not None:
                    found[instance.instance_id] = instance
    return list(found.values())


def _error_text(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


CapsReader = Callable[[str], "ProjectCaps | None"]


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
        return Caps(recorded.max_instances, recorded.max_lease_hours, recorded.max_spend_usd)

    def _error(self, message: str) -> None:
        self._errors.append(message)
        self._log(f"error: {message}; only lease rules apply to this project")


def _terminate(
    ec2: Any, terminations: list[Termination], dry_run: bool, report: SweepReport, log: Callable[[str], None]
) -> set[str]:
    """Terminate in batches; returns the ids that are gone (or would be, in a dry run)."""
    done: set[str] = set()
    verb = "would terminate" if dry_run else "terminated"
    for start in range(0, len(terminations), TERMINATE_BATCH):
        batch = terminations[start : start + TERMINATE_BATCH]
        if not dry_run:
            try:
                ec2.terminate_instances(InstanceIds=[t.instance.instance_id for t in batch])
            except Exception as exc:  # one failed batch must not stop the others
                ids = ", ".join(t.instance.instance_id for t in batch[:3])
                more = f" and {len(batch) - 3} more" if len(batch) > 3 else ""
                message = f"could not terminate {len(batch)} instances ({ids}{more}): {_error_text(exc)}"
                report.errors.append(message)
                log(f"error: {message}")
                continue
        for t in batch:
            i = t.instance
            done.add(i.instance_id)
            report.terminated.append((i.instance_id, i.annex_name, i.project, t.reason))
            where = f"annex {printable(i.annex_name)}, project {printable(i.project)}"
            log(f"{verb} {i.instance_id} ({where}): {t.reason}")
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


def sweep(
    ec2: Any,
    s3: Any,
    *,
    bucket: str,
    prices: dict[str, float],
    caps: CapsReader,
    now: datetime,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
    config_grace_seconds: int = 900,
) -> SweepReport:
    """One enforcement pass. A failure to list instances raises; every later failure is reported."""
    now = _as_utc(now) or datetime.now(timezone.utc)
    report = SweepReport(dry_run=dry_run)
    instances = list_annex_instances(ec2)
    plan = plan_terminations(instances, CapsCache(caps, log, report.errors), prices, now)
    for note in plan.notes:
        log(note)
    gone = _terminate(ec2, plan.terminations, dry_run, report, log)
    survivors = [i for i in instances if i.instance_id not in gone]
    report.kept = len(survivors)
    live_annexes = {(i.project, i.annex_name) for i in survivors}
    _delete_orphans(s3, bucket, live_annexes, now, config_grace_seconds, dry_run, report, log)
    log(
        f"enforcer{' (dry run)' if dry_run else ''} at {format_time(now)}: "
        f"{len(report.terminated)} instances {'to terminate' if dry_run else 'terminated'}, "
        f"{report.kept} kept, {len(report.deleted_objects)} configuration objects "
        f"{'to delete' if dry_run else 'deleted'}, {len(report.errors)} errors"
    )
    return report


# ---------------------------------------------------------------------------------------------
# The scheduled function's entry point.
# ---------------------------------------------------------------------------------------------


def handler(event: Any, context: Any, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Lambda entry point. A misconfigured function raises, so the failure shows in its metrics."""
    import boto3
    import botocore.config

    env = os.environ if environ is None else environ
    bucket, table = env.get("ANNEX_BUCKET", ""), env.get("ANNEX_REGISTRY_TABLE", "")
    if not bucket or not table:
        raise ValueError("ANNEX_BUCKET or ANNEX_REGISTRY_TABLE is not set: the function was not deployed by the region stack")
    dry_run = isinstance(event, dict) and event.get("dry_run") is True
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    session = boto3.session.Session(region_name=region or None)
    config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 8})
    registry = Registry(session.client("dynamodb", config=config), table)
    report = sweep(
        session.client("ec2", config=config),
        session.client("s3", config=config),
        bucket=bucket,
        prices=stack_prices(registry, region),
        caps=registry.caps,
        now=datetime.now(timezone.utc),
        dry_run=dry_run,
    )
    return report.to_dict()


def stack_prices(registry: Registry, region: str) -> dict[str, float]:
    """The prices setup stored with the stack; the shipped table only when none were stored."""
    stored = registry.prices()
    book = stored if stored is not None and stored.hourly else PriceBook(shipped_prices(region), "shipped")
    return {itype: price for itype in book.hourly if (price := book.price(itype)) is not None}
