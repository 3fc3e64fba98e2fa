"""The administrator's record, in the stack's DynamoDB table: one place, read by everyone.

``issue-credentials`` writes who belongs to which project and the project's caps; the broker
and the enforcer read them; setup stores the region's prices. The same table serialises each
project's spending requests (a lock item taken with a conditional write) and remembers every
request by its id, so a retried request never acts twice.

Items (partition key ``pk``, sort key ``sk``). The administrator's items (users, caps, prices) and
the broker's working items (``project#``: lock, requests, launches) have different partition keys,
so the broker's role may write only ``project#*`` (IAM's ``dynamodb:LeadingKeys``) and can never
raise a cap, whatever its code does:
  user#<user>      / user            project, arn, user_id (the IAM user as IAM named it at
                                     issue-credentials), revoked (when revoke-credentials ran)
  caps#<p>         / caps            max_instances, max_lease_hours, max_spend_usd
  node#<p>         / node            role, profile, templates (JSON: type -> id, version, source):
                                     the project's node role and its launch template versions
                                     (the administrator's: issue-credentials writes it)
  pool#<p>         / pool            own_pool, own_key: the project joins its own pool (its
                                     parameter, annex_cloud.pools) rather than the stack's; its
                                     scientists may bring their own key (the administrator's)
  project#<p>      / annex#<name>    security, token_id (never the token), expiry, ended,
                                     minted_by, pool, ttl: one annex the broker launched, so
                                     status can show its token's id for revocation, the broker
                                     re-mints it on extension, and terminate knows a name it
                                     never launched from one that is gone (kept a week after it ends)
  project#<p>      / lock            holder, expires (epoch seconds)
  project#<p>      / request#<id>    state, digest (the request's SHA-256), result (JSON),
                                     created, ttl: one request that changes things (launch,
                                     extend, terminate), answered from here when sent again
  project#<p>      / launch#<t>#<id>#<n>  annex, expiry, instances ("id:type,..."), created, ttl:
                                     what round n of request id launched at epoch second t
                                     (one item per CreateFleet, so an item stays far below
                                     DynamoDB's 400 KB; t first, so recent ones are one range)
  stack            / prices          hourly (JSON), source, fetched_at
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from annex_cloud.calls import error_code
from annex_cloud.caps import Caps, caps_from_mapping
from annex_cloud.cost import PriceBook
from annex_cloud.errors import Busy
from annex_cloud.expiry import format_expiry_tag, parse_expiry_tag
from annex_cloud.guardrails import FUNCTION_TIMEOUT_SECONDS

# The project lock's lease outlives any invocation that can hold it (a Lambda function is stopped
# at its timeout), so it never lapses under a live request; a holder stopped mid-request frees it
# at most this long after it started. See ``Registry.acquire``.
LOCK_SECONDS = FUNCTION_TIMEOUT_SECONDS + 60
LOCK_WAIT_SECONDS = 60
REQUEST_TTL_SECONDS = 7 * 24 * 3600
RECENT_SECONDS = 15 * 60  # launches this recent count even if DescribeInstances lags


@dataclass(frozen=True)
class UserRecord:
    """The administrator's record of one scientist: her IAM user as IAM named it, her project."""

    user: str
    project_id: str
    arn: str = ""  # the IAM user's ARN; "" in a record made before identities were bound
    user_id: str = ""  # IAM's unique id of the user (AIDA…): a user made again has another
    revoked: str = ""  # when revoke-credentials ran (ISO 8601 UTC); "" while she may ask


@dataclass(frozen=True)
class NodeTemplate:
    """The project's version of one of the stack's launch templates."""

    template_id: str
    version: int
    source_version: int  # the template's default version it copies, all but the instance profile


@dataclass(frozen=True)
class NodeRecord:
    """What a project's nodes run as (annex_cloud.nodes)."""

    project_id: str
    role_arn: str
    profile_arn: str
    templates: dict[str, NodeTemplate]  # instance type -> the project's version of its template


@dataclass(frozen=True)
class AnnexRecord:
    """What the broker remembers of one annex beside EC2's tags."""

    annex_name: str
    security: str  # idtoken | password
    token_id: str  # the id (jti) of the annex's IDTOKEN; "" in password mode
    expiry: str  # the lease end, as tagged
    ended: str = ""  # when terminate ended it (expiry format); "" while it may run
    minted_by: str = ""  # "broker": it mints the token (and re-mints it); "": the scientist's own key
    pool: str = ""  # the pool parameter the broker minted with (annex_cloud.pools)


@dataclass(frozen=True)
class ProjectPool:
    """Which pool a project's annexes join, and whether its scientists may bring their own key."""

    own_pool: bool = False  # its own pool parameter rather than the stack's
    own_key: bool = False  # a scientist may launch with her own pool's key (her personal pool)


@dataclass(frozen=True)
class LaunchedInstance:
    """One instance as the launch record of its fleet round names it."""

    instance_id: str
    instance_type: str
    annex_name: str
    expiry: str  # the lease end it was tagged with
    launched_at: float  # epoch seconds of the record
    request_id: str


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    state: str  # started | done
    result: dict[str, Any] | None
    created: float
    digest: str = ""  # the SHA-256 of the request (annex_cloud.identity.request_digest)


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value)) if not float(value).is_integer() else str(int(value))}


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": _s(pk), "sk": _s(sk)}


def _written(write: Callable[[], object]) -> bool:
    """Make a conditional write: False when DynamoDB refused it for its condition."""
    try:
        write()
        return True
    except Exception as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return False


class Registry:
    """Typed access to the table through a low-level DynamoDB client."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.db = dynamodb
        self.table = table

    # -- users and projects ------------------------------------------------------------------

    def user(self, user: str) -> UserRecord | None:
        item = self._get(f"user#{user}", "user")
        if not item or "project" not in item:
            return None
        return _user(user, item)

    def put_user(self, user: str, project_id: str, *, arn: str, user_id: str) -> None:
        """The administrator's write: who the user is (as IAM names it) and her project. A
        record written again is no longer revoked."""
        self.db.put_item(
            TableName=self.table,
            Item={
                **_key(f"user#{user}", "user"), "project": _s(project_id), "arn": _s(arn), "user_id": _s(user_id),
                "updated": _s(_now_text()),
            },
        )

    def revoke_user(self, user: str) -> bool:
        """Mark the user's record revoked (the broker refuses her from then on); False when
        there is no record."""
        return _written(lambda: self.db.update_item(
            TableName=self.table,
            Key=_key(f"user#{user}", "user"),
            UpdateExpression="SET revoked = :at, updated = :at",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":at": _s(_now_text())},
        ))

    def delete_user(self, user: str) -> None:
        self.db.delete_item(TableName=self.table, Key=_key(f"user#{user}", "user"))

    def caps(self, project_id: str) -> Caps | None:
        """The project's caps; None when it has no record. ValueError when the record is corrupt."""
        item = self._get(f"caps#{project_id}", "caps")
        if not item:
            return None
        return caps_from_mapping({name: value.get("N") for name, value in item.items() if "N" in value})

    def put_caps(self, project_id: str, caps: Caps) -> None:
        """The administrator's write (issue-credentials); the broker's role is refused it."""
        self.db.put_item(
            TableName=self.table,
            Item={
                **_key(f"caps#{project_id}", "caps"),
                "max_instances": _n(caps.max_instances),
                "max_lease_hours": _n(caps.max_lease_hours),
                "max_spend_usd": _n(caps.max_spend_usd),
                "updated": _s(_now_text()),
            },
        )

    def users(self) -> Iterator[UserRecord]:
        for item in self._scan():
            if item["pk"]["S"].startswith("user#") and "project" in item:
                yield _user(item["pk"]["S"][5:], item)

    # -- the projects' node roles ------------------------------------------------------------

    def node(self, project_id: str) -> NodeRecord | None:
        """The project's node role and template versions; None when it has none. ValueError when
        the record is corrupt."""
        item = self._get(f"node#{project_id}", "node")
        return _node(project_id, item) if item else None

    def put_node(self, record: NodeRecord) -> None:
        templates = {
            itype: {"id": t.template_id, "version": t.version, "source": t.source_version}
            for itype, t in sorted(record.templates.items())
        }
        self.db.put_item(
            TableName=self.table,
            Item={
                **_key(f"node#{record.project_id}", "node"),
                "role": _s(record.role_arn),
                "profile": _s(record.profile_arn),
                "templates": _s(json.dumps(templates, sort_keys=True)),
                "updated": _s(_now_text()),
            },
        )

    def nodes(self) -> Iterator[NodeRecord]:
        for item in self._scan():
            if item["pk"]["S"].startswith("node#") and item["sk"]["S"] == "node":
                yield _node(item["pk"]["S"][len("node#"):], item)

    # -- the project's pool -------------------------------------------------------------------

    def project_pool(self, project_id: str) -> ProjectPool:
        """The administrator's choice for the project; the stack's pool when she made none."""
        item = self._get(f"pool#{project_id}", "pool") or {}
        return ProjectPool(item.get("own_pool", {}).get("BOOL") is True, item.get("own_key", {}).get("BOOL") is True)

    def put_project_pool(self, project_id: str, choice: ProjectPool) -> None:
        """The administrator's write (issue-credentials); the broker's role is refused it."""
        self.db.put_item(
            TableName=self.table,
            Item={**_key(f"pool#{project_id}", "pool"), "own_pool": {"BOOL": choice.own_pool},
                  "own_key": {"BOOL": choice.own_key}, "updated": _s(_now_text())},
        )

    # -- live annexes ------------------------------------------------------------------------

    def put_annex(self, project_id: str, record: AnnexRecord) -> None:
        """Kept a week past its lease end, or past its end by terminate if earlier (DynamoDB's
        TTL); replaced on extend and by a new launch of the name."""
        ends = min(_moment(text) for text in (record.expiry, record.ended) if text)
        self.db.put_item(
            TableName=self.table,
            Item={
                **_key(f"project#{project_id}", f"annex#{record.annex_name}"),
                "security": _s(record.security),
                "token_id": _s(record.token_id),
                "expiry": _s(record.expiry),
                **({"ended": _s(record.ended)} if record.ended else {}),
                "minted_by": _s(record.minted_by),
                "pool": _s(record.pool),
                "ttl": _n(int(ends.timestamp()) + REQUEST_TTL_SECONDS),
            },
        )

    def annex(self, project_id: str, annex_name: str) -> AnnexRecord | None:
        item = self._get(f"project#{project_id}", f"annex#{annex_name}")
        return _annex(annex_name, item) if item else None

    def annexes(self, project_id: str) -> dict[str, AnnexRecord]:
        """Every annex of the project the broker remembers, by name."""
        found: dict[str, AnnexRecord] = {}
        for item in self._query(f"project#{project_id}", "annex#"):
            name = item["sk"]["S"][len("annex#"):]
            found[name] = _annex(name, item)
        return found

    def delete_annex(self, project_id: str, annex_name: str) -> None:
        self.db.delete_item(TableName=self.table, Key=_key(f"project#{project_id}", f"annex#{annex_name}"))

    # -- prices ------------------------------------------------------------------------------

    def prices(self) -> PriceBook | None:
        item = self._get("stack", "prices")
        if not item:
            return None
        try:
            hourly = {str(k): float(v) for k, v in json.loads(item["hourly"]["S"]).items()}
        except (KeyError, ValueError, TypeError, AttributeError):
            return None
        return PriceBook(hourly, item.get("source", {}).get("S", "registry"), item.get("fetched_at", {}).get("S"),
                         item.get("note", {}).get("S"))

    def put_prices(self, book: PriceBook) -> None:
        self.db.put_item(
            TableName=self.table,
            Item={
                **_key("stack", "prices"),
                "hourly": _s(json.dumps(dict(book.hourly), sort_keys=True)),
                "source": _s(book.source),
                "fetched_at": _s(book.fetched_at or _now_text()),
                **({"note": _s(book.note)} if book.note else {}),
            },
        )

    # -- the per-project lock ----------------------------------------------------------------

    def acquire(self, project_id: str, *, wait_seconds: float = LOCK_WAIT_SECONDS) -> str:
        """Take the project's lock (a conditional write); Busy when it stays held.

        Every request that changes what a project has committed (launch, extend, terminate) runs
        whole under this lock, so what one was admitted for is in EC2 or in the launch records
        before the next one counts. Its lease is longer than the function's timeout, so a live
        holder never loses it; a holder that works in rounds (a launch's fleet rounds) still
        checks it before each further round (``renew``), and stops if another has taken it.

        That was chosen over a reservation of count and cost beside a short lock: one rule, the
        lock, covers all three requests (a terminate or an extension of an annex being launched
        waits for the launch rather than missing its later rounds), and what the lock protects is
        exactly what EC2 and the launch records already count. The price is that a project's
        changing requests take turns: one that waits longer than ``wait_seconds`` is Busy.
        """
        holder = uuid.uuid4().hex
        deadline = time.monotonic() + wait_seconds
        pause = 0.05
        while True:
            now = time.time()
            if _written(lambda: self.db.put_item(
                TableName=self.table,
                Item={**_key(f"project#{project_id}", "lock"), "holder": _s(holder), "expires": _n(now + LOCK_SECONDS)},
                ConditionExpression="attribute_not_exists(pk) OR expires < :now",
                ExpressionAttributeValues={":now": _n(now)},
            )):
                return holder
            if time.monotonic() > deadline:
                raise Busy(f"another request of project {project_id} has held its lock for over {wait_seconds:g} s")
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def renew(self, project_id: str, holder: str) -> bool:
        """Extend the lease of a lock ``holder`` still holds; False when another took it (the
        lease lapsed), and the holder must stop changing the project's commitments."""
        return _written(lambda: self.db.update_item(
            TableName=self.table,
            Key=_key(f"project#{project_id}", "lock"),
            UpdateExpression="SET expires = :later",
            ConditionExpression="holder = :me",
            ExpressionAttributeValues={":me": _s(holder), ":later": _n(time.time() + LOCK_SECONDS)},
        ))

    def release(self, project_id: str, holder: str) -> None:
        # Refused only when the lease lapsed and another request holds the lock now.
        _written(lambda: self.db.delete_item(
            TableName=self.table,
            Key=_key(f"project#{project_id}", "lock"),
            ConditionExpression="holder = :me",
            ExpressionAttributeValues={":me": _s(holder)},
        ))

    # -- requests, remembered by id ----------------------------------------------------------

    def begin_request(self, project_id: str, request_id: str, digest: str = "") -> RequestRecord | None:
        """Record a new request; None if it is new, else the earlier record of the same id."""
        now = time.time()
        if _written(lambda: self.db.put_item(
            TableName=self.table,
            Item={
                **_key(f"project#{project_id}", f"request#{request_id}"),
                "state": _s("started"),
                "digest": _s(digest),
                "created": _n(now),
                "ttl": _n(int(now + REQUEST_TTL_SECONDS)),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )):
            return None
        item = self._get(f"project#{project_id}", f"request#{request_id}") or {}
        return _request(request_id, item)

    def record_launch(
        self, project_id: str, request_id: str, round_no: int, *, annex: str, expiry: str, instances: dict[str, str]
    ) -> None:
        """The instances (id -> type) one fleet round launched, kept so the next request counts
        them at once even if DescribeInstances does not show them yet."""
        now = time.time()
        self.db.put_item(
            TableName=self.table,
            Item={
                **_key(f"project#{project_id}", f"launch#{int(now):010d}#{request_id}#{round_no:04d}"),
                "annex": _s(annex),
                "expiry": _s(expiry),
                "instances": _s(",".join(f"{i}:{t}" for i, t in sorted(instances.items()))),
                "created": _n(now),
                "ttl": _n(int(now + REQUEST_TTL_SECONDS)),
            },
        )

    def finish_request(self, project_id: str, request_id: str, result: dict[str, Any]) -> None:
        self.db.update_item(
            TableName=self.table,
            Key=_key(f"project#{project_id}", f"request#{request_id}"),
            UpdateExpression="SET #s = :done, #r = :r",
            ExpressionAttributeNames={"#s": "state", "#r": "result"},
            ExpressionAttributeValues={":done": _s("done"), ":r": _s(json.dumps(result))},
        )

    def forget_request(self, project_id: str, request_id: str) -> None:
        """A request that changed nothing is forgotten, so the same id may be tried again."""
        self.db.delete_item(TableName=self.table, Key=_key(f"project#{project_id}", f"request#{request_id}"))

    def recent_launches(self, project_id: str, *, now: float | None = None) -> list[LaunchedInstance]:
        """Instances launched by this project's requests of the last few minutes (one key range)."""
        since = int((now or time.time()) - RECENT_SECONDS)
        return self._launches(project_id, since=since)

    def launched_by(self, project_id: str, request_id: str) -> list[LaunchedInstance]:
        """Every instance one request launched (a rare question: a request cut short)."""
        return self._launches(project_id, since=0, request_id=request_id)

    def _launches(self, project_id: str, *, since: int, request_id: str | None = None) -> list[LaunchedInstance]:
        found: list[LaunchedInstance] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :p AND sk BETWEEN :from AND :to",
            "ExpressionAttributeValues": {
                ":p": _s(f"project#{project_id}"), ":from": _s(f"launch#{since:010d}"), ":to": _s("launch#~"),
            },
        }
        while True:
            page = self.db.query(**kwargs)
            for item in page.get("Items", []):
                launched_by = item["sk"]["S"].split("#")[2]
                if request_id is not None and launched_by != request_id:
                    continue
                for pair in filter(None, item.get("instances", {}).get("S", "").split(",")):
                    instance_id, _, instance_type = pair.partition(":")
                    found.append(LaunchedInstance(
                        instance_id, instance_type, item["annex"]["S"], item["expiry"]["S"],
                        float(item.get("created", {}).get("N", "0")), launched_by,
                    ))
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- plumbing ----------------------------------------------------------------------------

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        return self.db.get_item(TableName=self.table, Key=_key(pk, sk), ConsistentRead=True).get("Item")

    def _query(self, pk: str, sk_prefix: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :p AND begins_with(sk, :l)",
            "ExpressionAttributeValues": {":p": _s(pk), ":l": _s(sk_prefix)},
        }
        while True:
            page = self.db.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _scan(self) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = self.db.scan(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _annex(annex_name: str, item: dict[str, Any]) -> AnnexRecord:
    def text(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    return AnnexRecord(annex_name, text("security"), text("token_id"), text("expiry"), ended=text("ended"),
                       minted_by=text("minted_by"), pool=text("pool"))


def _moment(text: str) -> datetime:
    moment = parse_expiry_tag(text)
    if moment is None:
        raise ValueError(f"{text!r} is not a lease end")
    return moment


def _node(project_id: str, item: dict[str, Any]) -> NodeRecord:
    try:
        templates = {
            str(itype): NodeTemplate(str(t["id"]), int(t["version"]), int(t["source"]))
            for itype, t in json.loads(item["templates"]["S"]).items()
        }
        return NodeRecord(project_id, item["role"]["S"], item["profile"]["S"], templates)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"the node record of project {project_id} is unreadable ({exc!r})") from exc


def _request(request_id: str, item: dict[str, Any]) -> RequestRecord:
    def text(name: str) -> str | None:
        return item.get(name, {}).get("S")

    result_text = text("result")
    return RequestRecord(
        request_id=request_id,
        state=text("state") or "started",
        result=json.loads(result_text) if result_text else None,
        created=float(item.get("created", {}).get("N", "0")),
        digest=text("digest") or "",
    )


def _user(user: str, item: dict[str, Any]) -> UserRecord:
    def text(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    return UserRecord(user, text("project"), text("arn"), text("user_id"), text("revoked"))


def _now_text() -> str:
    return format_expiry_tag(datetime.now(timezone.utc))
