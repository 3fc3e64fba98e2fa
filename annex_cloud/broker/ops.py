"""The broker's operations, for the proven caller's own project, on the administrator's terms."""

from __future__ import annotations

import dataclasses
import difflib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from annex_cloud import cost
from annex_cloud.broker import pool as pools
from annex_cloud.broker import requests as asks
from annex_cloud.broker.commitments import Turn, counted_instances, in_turn
from annex_cloud.broker.settings import BrokerSettings
from annex_cloud.caps import Caps, lease_end_problem
from annex_cloud.calls import error_code
from annex_cloud.errors import Busy, Refused
from annex_cloud.expiry import format_expiry_tag
from annex_cloud.fleet import FleetResult, FleetSpec, run_fleet
from annex_cloud.instances import AnnexInstance, project_instances
from annex_cloud.layout import NODE_ENV_OBJECT, PASSWORD_OBJECT, TOKEN_OBJECT, annex_prefix
from annex_cloud.node.config import NodeConfigInputs, render_node_env
from annex_cloud.prices import stack_price_book
from annex_cloud.pool_tokens import read_claims
from annex_cloud.registry import AnnexRecord, NodeRecord, Registry
from annex_cloud.status_view import annex_summaries, instance_page, project_totals
from annex_cloud.tags import STATUS_STATES, TAG_ANNEX_NAME, TAG_EXPIRY, TAG_IDLE, TAG_OWNER, TAG_PROJECT, TAG_STACK
from annex_cloud.termination import Ending, end_instances

TAG_BATCH = 1000  # ids per CreateTags call
# CreateTags refuses an id EC2 does not list yet (a launch of seconds ago): asked again after these.
TAG_WAITS = (1.0, 2.0, 4.0, 8.0)
# Longer than the function's timeout (300 s) and the project lock's lease: a request still
# "started" after this was cut short.
ABANDONED_AFTER_SECONDS = 900
NAMED_IN_REFUSAL = 10  # instance ids a refusal names (an interrupted launch leaves them running)


@dataclass
class Call:
    """One request: who asks (proven), for which project, under which caps, with which clients."""

    settings: BrokerSettings
    user: str
    project_id: str
    caps: Caps
    ec2: Any
    s3: Any
    registry: Registry
    now: datetime
    params: dict[str, Any]
    fingerprint: str = ""  # what names the request in its record (requests.fingerprint)
    ssm: Any = None  # reads the recorded pools (annex_cloud.pools)


# -- requests that change things: carried out once per request id --------------------------


def earlier_answer(call: Call, request_id: str, cut_short: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """None when the request is new (it is recorded as started now); otherwise the answer the
    first one got, for a request sent again (a retry, or its proof replayed): never acted on twice.

    ``cut_short`` answers for a first attempt that neither finished nor was forgotten in time."""
    earlier = call.registry.begin_request(call.project_id, request_id, call.fingerprint)
    if earlier is None:
        return None
    if earlier.digest != call.fingerprint:
        raise Refused(
            f"request id {request_id} was already used for another request",
            "a request id names one request: its operation and parameters",
            "Use condor_annex, which makes a new id for every request.",
        )
    if earlier.state == "done" and earlier.result is not None:
        return {**earlier.result, "replayed": True}
    if time.time() - earlier.created < ABANDONED_AFTER_SECONDS:
        raise Busy(f"request {request_id} is still being carried out")
    return cut_short()


def once(call: Call, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Carry out ``work`` for the request's id once, and remember its answer; a request that
    failed or was refused is forgotten (it changed nothing the record could answer for)."""
    request_id = asks.request_id(call.params)

    def cut_short() -> dict[str, Any]:
        raise Refused(
            f"request {request_id} was cut short and is not carried out again",
            "its first attempt neither finished nor failed within 15 minutes",
            "Run the command again: it makes a new request.",
        )

    earlier = earlier_answer(call, request_id, cut_short)
    if earlier is not None:
        return earlier
    try:
        result = work()
    except BaseException:
        call.registry.forget_request(call.project_id, request_id)
        raise
    call.registry.finish_request(call.project_id, request_id, result)
    return result


# -- shared pieces --------------------------------------------------------------------------


def price_book(call: Call) -> cost.PriceBook:
    return stack_price_book(call.registry.prices(), call.settings.region)


def require_prices(book: cost.PriceBook, types: tuple[str, ...] | list[str]) -> dict[str, float]:
    try:
        return book.require(types)
    except cost.NoPrice as exc:
        raise Refused(
            f"no price is known for {', '.join(exc.missing)} in this region",
            f"the broker never launches what it cannot price (prices from {exc.source})",
            "Ask your pool administrator to run `annex-admin setup` so the region's prices are fetched.",
        ) from exc


def live_instances(call: Call) -> list[AnnexInstance]:
    """The project's live instances, as every request that changes the project counts them."""
    return counted_instances(call.ec2, call.registry, call.project_id)


def lease_hours(call: Call, expiry: datetime, start: datetime, running_annex: str | None = None) -> float:
    """Hours from ``start`` to ``expiry``; Refused when the end is too near to be of any use, or
    so far ahead that times reckoned from it would be no dates (checked before any is)."""
    problem = lease_end_problem((expiry - call.now).total_seconds(), running_annex)
    if problem:
        raise Refused(*problem)
    return cost.hours_between(start, expiry)


# The caps, each a rule that returns what it would break (None when it holds): a plan shows them
# all beside its figures, and the request that acts refuses the first (refuse_broken).


def lease_cap_problem(call: Call, hours: float, expiry: datetime, what: str = "lease") -> Refused | None:
    cap = call.caps.max_lease_hours
    if call.caps.allows_lease(hours * 3600):
        return None
    return Refused(
        f"the {what} of {hours:.1f} hours from launch is beyond the project's lease cap of {cap:g} hours",
        f"the lease would end {format_expiry_tag(expiry)}, and the cap counts a lease from its annex's launch",
        f"Choose an end within {cap:g} hours of the annex's launch, or ask your pool administrator to raise the cap.",
    )


def instance_cap_problem(call: Call, live: int, adding: int) -> Refused | None:
    cap = call.caps.max_instances
    if call.caps.allows_instances(live + adding):
        return None
    room = cap - live
    return Refused(
        f"{adding} more {'instance' if adding == 1 else 'instances'} would break the project's instance cap of {cap}",
        f"the project already has {live} live instance(s)",
        f"Ask for at most {room}, or end another annex first." if room > 0 else
        "The project has no room left: end another annex first, or ask your pool administrator to raise the cap.",
    )


def spend_problem(call: Call, committed_before: float, adding: float, what: str) -> Refused | None:
    cap = call.caps.max_spend_usd
    if call.caps.allows_spend(committed_before + adding):
        return None
    return Refused(
        f"{what} could cost up to ${adding:,.2f}, which would break the project's spend cap of ${cap:,.2f}",
        f"the project's other live instances can still cost ${committed_before:,.2f}",
        "Ask for fewer instances or a shorter lease, end another annex, or ask your pool administrator to raise the cap.",
    )


def broken(problems: list[Refused | None]) -> list[dict[str, str]]:
    """The caps a plan breaks, as its answer names them (the first is the one a request raises)."""
    return [p.to_dict() for p in problems if p is not None]


def refuse_broken(plan: dict[str, Any]) -> None:
    """A request that would act refuses what its plan breaks."""
    for problem in plan["breaks"][:1]:
        raise Refused(problem["what"], problem["why"], problem["next"])


def caps_dict(caps: Caps) -> dict[str, float]:
    return {"max_instances": caps.max_instances, "max_lease_hours": caps.max_lease_hours, "max_spend_usd": caps.max_spend_usd}


def locked(call: Call, work: Callable[[Turn], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in the project's turn: its launches, extensions and terminations take turns."""
    return in_turn(call.registry, call.project_id, work)


# -- plan and launch ------------------------------------------------------------------------


def project_node(call: Call, instance_types: tuple[str, ...]) -> NodeRecord:
    """The project's node role and its version of each template the launch may use: without
    them its nodes could not run as the project's own role, so nothing is launched."""
    again = "Ask your pool administrator to run `annex-admin issue-credentials` for your project again."
    try:
        record = call.registry.node(call.project_id)
    except ValueError as exc:
        raise Refused(f"project {call.project_id}'s node record is unreadable", str(exc), again) from exc
    missing = [
        itype for itype in instance_types
        if record is None or itype not in record.templates
        or record.templates[itype].template_id != call.settings.launch_templates[itype]
    ]
    if missing:
        raise Refused(
            f"project {call.project_id} has no node role for {', '.join(missing)}",
            "its nodes would not run as the project's own role, the only one that reads its material",
            again,
        )
    assert record is not None
    return record


def _launch_plan(
    call: Call, ask: asks.LaunchAsk, counted: list[AnnexInstance], node: NodeRecord
) -> dict[str, Any]:
    """Every check of a launch, reading only; Refused names the rule it would break."""
    book = price_book(call)
    prices = require_prices(book, ask.instance_types)
    hours = lease_hours(call, ask.expiry, call.now)
    in_use = sorted(i.instance_id for i in counted if i.annex_name == ask.annex_name)
    if in_use:
        named = ", ".join(in_use[:NAMED_IN_REFUSAL])
        more = f" and {len(in_use) - NAMED_IN_REFUSAL} more" if len(in_use) > NAMED_IN_REFUSAL else ""
        raise Refused(
            f"the annex name {ask.annex_name} is already in use",
            f"it has {len(in_use)} live instance(s): {named}{more}",
            "See `condor_annex status`; extend or terminate it, or pick another --annex-name.",
        )
    committed = cost.committed_spend(counted, book, call.now)
    most = cost.most_cost(ask.count, prices, hours)
    breaks = broken([
        lease_cap_problem(call, hours, ask.expiry),
        instance_cap_problem(call, len(counted), ask.count),
        spend_problem(call, committed, most, "this annex"),
    ])
    return {
        "annex_name": ask.annex_name,
        "project_id": call.project_id,
        "owner": call.user,
        "count": ask.count,
        "instance_types": list(ask.instance_types),
        "prices": prices,
        "price_source": book.source,
        "spot": ask.spot,
        "expiry": format_expiry_tag(ask.expiry),
        "lease_hours": hours,
        "hourly_low": min(prices.values()) * ask.count,
        "hourly_high": max(prices.values()) * ask.count,
        "most_cost": most,
        "live_instances": len(counted),
        "committed_spend": committed,
        "caps": caps_dict(call.caps),
        "node_role": node.role_arn,
        "breaks": breaks,  # the caps it would break: a plan shows them, a launch is refused
    }


def plan_launch(call: Call) -> dict[str, Any]:
    ask = asks.launch_ask(call.params, call.settings.instance_types, with_pool=False)
    plan = _launch_plan(call, ask, live_instances(call), project_node(call, ask.instance_types))
    return {**plan, "pool": pools.plan(call, ask)}


def launch(call: Call) -> dict[str, Any]:
    """Launch once per request id: a retry gets the first answer, never a second annex."""
    ask = asks.launch_ask(call.params, call.settings.instance_types, with_pool=True)
    request_id = asks.request_id(call.params)

    def cut_short() -> dict[str, Any]:
        # Its broker died mid-launch (a timeout): report what it launched, never launch again.
        launched = call.registry.launched_by(call.project_id, request_id)
        return {"instance_ids": sorted(r.instance_id for r in launched), "replayed": True,
                "stopped_by": "the first attempt at this request was cut short"}

    earlier = earlier_answer(call, request_id, cut_short)
    if earlier is not None:
        # Answered earlier: say which of its instances still run, so a client run again after
        # Ctrl-C never reports an annex that has since ended as launched.
        launched = set(earlier.get("instance_ids", []))
        live = sorted(i.instance_id for i in counted_instances(call.ec2, call.registry, call.project_id)
                      if i.instance_id in launched)
        return {**earlier, "live_instance_ids": live}
    fleet = FleetResult()
    try:
        result = locked(call, lambda turn: _launch_locked(call, ask, request_id, fleet, turn))
    except BaseException as exc:
        if fleet.instances:
            # Something runs: remember it under this id, so a retry reports it and never relaunches.
            call.registry.finish_request(call.project_id, request_id, {"instance_ids": sorted(fleet.instances), "failed": str(exc)[:300]})
        else:
            call.registry.forget_request(call.project_id, request_id)
        raise
    if result["instance_ids"]:
        call.registry.finish_request(call.project_id, request_id, result)
    else:
        call.registry.forget_request(call.project_id, request_id)
    return result


def _launch_locked(
    call: Call, ask: asks.LaunchAsk, request_id: str, fleet: FleetResult, turn: Turn
) -> dict[str, Any]:
    node = project_node(call, ask.instance_types)
    plan = _launch_plan(call, ask, live_instances(call), node)
    refuse_broken(plan)
    annex_pool = pools.for_launch(call, ask)
    prefix = annex_prefix(call.project_id, ask.annex_name)
    for name, body in node_objects(call, ask, annex_pool.contact).items():
        call.s3.put_object(Bucket=call.settings.bucket, Key=prefix + name, Body=body, ServerSideEncryption="AES256")
    call.registry.put_annex(call.project_id, annex_pool.record(ask.annex_name, plan["expiry"]))
    create_fleet = RetryNoticingCreateFleet(call.ec2)

    def remember(new: list[str]) -> None:
        call.registry.record_launch(
            call.project_id, request_id, fleet.rounds, annex=ask.annex_name, expiry=plan["expiry"],
            instances={i: fleet.instances[i][0] for i in new},
        )

    spec = FleetSpec(
        count=ask.count,
        launch_templates={t: call.settings.launch_templates[t] for t in ask.instance_types},
        pools=[(t, s) for t in ask.instance_types for s in call.settings.subnets],
        tags=instance_tags(call, ask),
        spot=ask.spot,
        max_price=plan["prices"],
        versions={t: str(node.templates[t].version) for t in ask.instance_types},
        fleet_tags=fleet_tags(call, ask),
    )
    try:
        run_fleet(create_fleet, spec, token_prefix=request_id, on_launched=remember, result=fleet,
                  before_round=turn.lost)
    finally:
        if not fleet.instances:  # nothing runs: nothing is left half-done
            delete_prefix(call, prefix)
            call.registry.delete_annex(call.project_id, ask.annex_name)
    duplicates = (
        end_duplicates(call.ec2, call.project_id, ask.annex_name, set(fleet.instances)) if create_fleet.retried else []
    )
    return {
        **plan,
        "instance_ids": sorted(fleet.instances),
        "by_type": fleet.by_type(),
        "errors": [e.to_dict() for e in fleet.errors],
        "rounds": fleet.rounds,
        "stopped_by": fleet.stopped_by,
        "duplicates_ended": len(duplicates),
        "security": annex_pool.contact.security,
        "token_id": annex_pool.contact.token_id or None,
        "token_minted_by": annex_pool.minted_by or "you",
        "collector_host": annex_pool.contact.collector_host,
        "trust_domain": annex_pool.contact.trust_domain,
    }


def fleet_tags(call: Call, ask: asks.LaunchAsk) -> dict[str, str]:
    """The fleet's own tags: its stack (which the broker's role must name), project and annex."""
    return {TAG_STACK: call.settings.stack_name, TAG_PROJECT: call.project_id, TAG_ANNEX_NAME: ask.annex_name}


def instance_tags(call: Call, ask: asks.LaunchAsk) -> dict[str, str]:
    """The tag contract; project and owner from the proven identity and the administrator's record."""
    return {
        TAG_ANNEX_NAME: ask.annex_name,
        TAG_PROJECT: call.project_id,
        TAG_EXPIRY: format_expiry_tag(ask.expiry),
        TAG_IDLE: str(ask.idle_minutes * 60),
        TAG_OWNER: call.user,
    }


def node_objects(call: Call, ask: asks.LaunchAsk, contact: asks.PoolContact) -> dict[str, bytes]:
    """The annex's typed values (the node renders its configuration from them) and its security
    material. No configuration text: the node's template is fixed and ships with its bootstrap."""
    inputs = NodeConfigInputs(
        annex_name=ask.annex_name,
        project_id=call.project_id,
        owner=contact.job_owner,
        collector_host=contact.collector_host,
        trust_domain=contact.trust_domain,
        idle_seconds=ask.idle_minutes * 60,
        security=contact.security,  # type: ignore[arg-type]
    )
    material_object = TOKEN_OBJECT if contact.security == "idtoken" else PASSWORD_OBJECT
    return {
        NODE_ENV_OBJECT: render_node_env(inputs).encode(),
        material_object: contact.material,
    }


@dataclass
class RetryNoticingCreateFleet:
    """``ec2.create_fleet``, noting whether the SDK had to send any request more than once."""

    ec2: Any
    retried: bool = False

    def __call__(self, **request: Any) -> dict[str, Any]:
        response = self.ec2.create_fleet(**request)
        self.retried |= response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
        return response


def end_duplicates(ec2: Any, project_id: str, annex_name: str, known: set[str]) -> list[str]:
    """After a retried CreateFleet, end instances of this annex no answer named: an endpoint
    that did not honour the client token launched them twice."""
    present = project_instances(ec2, project_id, annex_name=annex_name)
    extra = [i.instance_id for i in present if i.instance_id not in known]
    return end_instances(ec2, extra).ended


def retag_expiry(ec2: Any, ids: list[str], expiry: str, sleep: Callable[[float], None] = time.sleep) -> None:
    """Move the lease tag of ``ids``, asking again while EC2 does not list one of them yet."""
    for start in range(0, len(ids), TAG_BATCH):
        batch = ids[start : start + TAG_BATCH]
        for pause in (0.0, *TAG_WAITS):
            sleep(pause)
            try:
                ec2.create_tags(Resources=batch, Tags=[{"Key": TAG_EXPIRY, "Value": expiry}])
                break
            except Exception as exc:
                if error_code(exc) != "InvalidInstanceID.NotFound" or pause == TAG_WAITS[-1]:
                    raise


def delete_prefix(call: Call, prefix: str) -> int:
    """Delete the annex's objects; the count deleted. Objects S3 would not delete raise, so the
    caller never reports configuration as gone when it is not (the enforcer retries later)."""
    deleted = 0
    for page in call.s3.get_paginator("list_objects_v2").paginate(Bucket=call.settings.bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if not keys:
            continue
        answer = call.s3.delete_objects(Bucket=call.settings.bucket, Delete={"Objects": keys, "Quiet": True})
        failed = answer.get("Errors", [])
        if failed:
            first = failed[0]
            raise RuntimeError(
                f"S3 kept {len(failed)} of the annex's objects ({first.get('Key')}: {first.get('Code')})"
            )
        deleted += len(keys)
    return deleted


# -- status ---------------------------------------------------------------------------------


def status(call: Call) -> dict[str, Any]:
    """The project's annexes, one summary each (or one annex's), the whole project's totals (its
    caps are the project's, so its figures against them never depend on which annex was asked
    about), and with ``instances`` one page of instance rows (``page``: where the last page ended)."""
    name = call.params.get("annex_name")
    if name is not None:
        name = asks.annex_name(call.params)
    instances = project_instances(call.ec2, call.project_id, states=STATUS_STATES)
    if name is not None and not any(i.annex_name == name for i in instances):
        # An annex it knew that has ended has no live instance; a name it never knew is a mistake.
        refuse_unknown_annex(call, name, [i for i in instances if i.live])
    rows = status_rows(call, instances)
    shown = [r for r in rows if name is None or r["annex_name"] == name]
    answer: dict[str, Any] = {
        # The project the broker answers for (the administrator's record), never the bundle's word.
        "project_id": call.project_id,
        "annexes": annex_summaries(shown),
        "totals": project_totals(rows),
        "caps": caps_dict(call.caps),
        "now": format_expiry_tag(call.now),
        "price_source": price_book(call).source,
    }
    if call.params.get("instances") is True:
        answer["instances"], answer["next_page"] = instance_page(shown, asks.page_key(call.params))
    return answer


def status_rows(call: Call, instances: list[AnnexInstance]) -> list[dict[str, Any]]:
    """One row per instance of the project that is live or ending: who, what, where, costs."""
    book = price_book(call)
    remembered = call.registry.annexes(call.project_id)
    rows = []
    for i in instances:
        record = remembered.get(i.annex_name)
        hourly = book.hourly_or_unbounded(i.instance_type)
        expiry = i.expiry
        launched = i.launch_time or call.now
        rows.append({
            "instance_id": i.instance_id,
            "annex_name": i.annex_name,
            "project_id": i.project_id,
            "owner": i.owner,
            "state": i.state,
            "instance_type": i.instance_type,
            "availability_zone": i.zone,
            "lifecycle": i.lifecycle,
            "launch_time": format_expiry_tag(launched),
            "expiry": format_expiry_tag(expiry) if expiry else None,
            "hourly_price": None if hourly == float("inf") else hourly,
            "cost_so_far": _finite(cost.spent_so_far(hourly, launched, call.now)),
            "can_still_cost": _finite(cost.remaining_cost(hourly, expiry, call.now)) if i.live else 0.0,
            # The annex's token id, for the pool administrator to revoke it (never the token).
            "token_id": (record.token_id or None) if record else None,
        })
    return rows


def _finite(value: float) -> float | None:
    return None if value == float("inf") else round(value, 6)


# -- extend ---------------------------------------------------------------------------------


def _annex_or_refuse(call: Call, name: str, instances: list[AnnexInstance]) -> list[AnnexInstance]:
    mine = [i for i in instances if i.annex_name == name]
    if not mine:
        raise Refused(
            f"no live annex named {name} in project {call.project_id}",
            "no pending or running instance carries that annex name",
            closest_annex_hint(name, instances),
        )
    return mine


def closest_annex_hint(name: str, live: list[AnnexInstance]) -> str:
    """What to do about a name that is no live annex: the closest live annex's name, if any."""
    counts: dict[str, int] = {}
    for instance in live:
        counts[instance.annex_name] = counts.get(instance.annex_name, 0) + 1
    close = difflib.get_close_matches(name, list(counts), n=1, cutoff=0.6)
    if close:
        return (f"Did you mean --annex-name {close[0]} ({counts[close[0]]} live instance(s))? "
                "See `condor_annex status` for the project's annexes.")
    if counts:
        return f"The project's live annexes: {', '.join(sorted(counts))} (see `condor_annex status`)."
    return "The project has no live annex (see `condor_annex status`)."


def _extend_plan(call: Call, ask: asks.ExtendAsk) -> tuple[dict[str, Any], list[AnnexInstance]]:
    project = live_instances(call)
    annex = _annex_or_refuse(call, ask.annex_name, project)
    current = [i.expiry for i in annex if i.expiry is not None]
    latest = max(current) if current else None
    if latest is not None and ask.expiry < latest and not ask.shorten:
        raise Refused(
            f"the new lease end {format_expiry_tag(ask.expiry)} is earlier than today's ({format_expiry_tag(latest)})",
            "extend never shortens a lease unless asked to",
            "Pass a later end, or add --shorten to end the lease earlier.",
        )
    hours = lease_hours(call, ask.expiry, min(i.launch_time or call.now for i in annex), ask.annex_name)
    book = price_book(call)
    require_prices(book, sorted({i.instance_type for i in annex}))
    committed_others = cost.committed_spend([i for i in project if i.annex_name != ask.annex_name], book, call.now)
    record = _annex_record(call, ask.annex_name)
    annex_cost = sum(cost.remaining_cost(book.hourly_or_unbounded(i.instance_type), ask.expiry, call.now) for i in annex)
    breaks = broken([
        lease_cap_problem(call, hours, ask.expiry, "extended lease"),
        spend_problem(call, committed_others, annex_cost, "the extended annex"),
    ])
    # What the annex could still cost on its current lease: the extension adds the difference.
    cost_before = sum(cost.remaining_cost(book.hourly_or_unbounded(i.instance_type), i.expiry, call.now) for i in annex)
    plan = {
        "annex_name": ask.annex_name,
        "instance_ids": [i.instance_id for i in annex],
        "instance_types": sorted({i.instance_type for i in annex}),
        "old_expiries": sorted({i.expiry_tag or "" for i in annex}),
        "expiry": format_expiry_tag(ask.expiry),
        "lease_hours": hours,  # from the annex's launch, as the lease cap counts it
        "hours_from_now": cost.hours_between(call.now, ask.expiry),
        "hourly": sum(book.hourly_or_unbounded(i.instance_type) for i in annex),
        "price_source": book.source,
        "most_cost": annex_cost,
        "cost_before": cost_before,
        "adds": annex_cost - cost_before,
        "live_instances": len(project),
        "committed_spend": committed_others,
        "caps": caps_dict(call.caps),
        "shortens": latest is not None and ask.expiry < latest,
        "breaks": breaks,
        # An extension's new token keeps the annex's id, so one revocation covers the annex.
        "token_id": record.token_id or None,
        # Who mints the new token: the broker, the scientist (her own key), or nobody (a password).
        "token_from": token_source(record),
    }
    return plan, annex


def token_source(record: AnnexRecord) -> str | None:
    """"broker" when it mints the annex's tokens, "scientist" when she does with her own key,
    None when the annex runs on no token."""
    if record.security != "idtoken":
        return None
    return "broker" if record.minted_by == pools.MINTED_BY_BROKER else "scientist"


def _annex_record(call: Call, name: str) -> AnnexRecord:
    """What the broker remembers of the annex; an annex launched before it remembered any is
    taken as it is tagged, with no token id yet."""
    return call.registry.annex(call.project_id, name) or AnnexRecord(name, "", "", "")


def token_id_of(token: bytes) -> str:
    """The id a token names (checked against the rest of the rule by the caller)."""
    try:
        return read_claims(token).token_id
    except ValueError as exc:
        raise Refused("the annex's pool token cannot be used", str(exc), "Use condor_annex.") from exc


def plan_extend(call: Call) -> dict[str, Any]:
    plan, _ = _extend_plan(call, asks.extend_ask(call.params))
    return plan


def extend(call: Call) -> dict[str, Any]:
    """Move the lease once per request: sent again, it is answered from its record, so a replay
    never undoes a later extension or shortening."""
    ask = asks.extend_ask(call.params)

    def work() -> dict[str, Any]:
        plan, annex = _extend_plan(call, ask)
        refuse_broken(plan)
        prefix = annex_prefix(call.project_id, ask.annex_name)
        record = _annex_record(call, ask.annex_name)
        token = _extension_token(call, ask, record)
        if token is not None:
            call.s3.put_object(
                Bucket=call.settings.bucket, Key=prefix + TOKEN_OBJECT, Body=token, ServerSideEncryption="AES256"
            )
            record = dataclasses.replace(record, security="idtoken", token_id=record.token_id or token_id_of(token))
        call.registry.put_annex(call.project_id, dataclasses.replace(record, expiry=plan["expiry"]))
        retag_expiry(call.ec2, [i.instance_id for i in annex], plan["expiry"])
        return {**plan, "token_replaced": token is not None, "token_id": record.token_id or None}

    return once(call, lambda: locked(call, lambda _turn: work()))


def _extension_token(call: Call, ask: asks.ExtendAsk, record: AnnexRecord) -> bytes | None:
    """The annex's new token, lasting to the new lease end plus the margin: the broker mints it
    for an annex it minted for; one on her own key must come with the request. None: no token."""
    source = token_source(record)
    if source == "broker":
        if ask.token is not None:
            raise Refused(
                "the request carries a pool token, and the broker mints this annex's tokens itself",
                "the pool's key is kept by the stack; a token she sends is never used",
                "Use condor_annex extend, which sends none.",
            )
        return pools.remint(call, record, ask.expiry)
    if source == "scientist":
        if ask.token is None:
            raise Refused(
                f"annex {ask.annex_name} runs on a token minted with your own pool key, and the request has none",
                "its nodes would drop out of the pool when their token expires, while still billed",
                "Run condor_annex extend with CONDOR_CONFIG naming your pool (it mints the token with your key).",
            )
        asks.check_token(ask.token, record.token_id or token_id_of(ask.token), ask.expiry)
        return ask.token
    if ask.token is not None:  # an annex remembered without a token (launched before the broker kept one)
        asks.check_token(ask.token, token_id_of(ask.token), ask.expiry)
    return ask.token


# -- terminate ------------------------------------------------------------------------------


def end_annex(call: Call) -> dict[str, Any]:
    """End the annex once per request: the same request sent again (its proof replayed, say,
    after a new annex took the name) is answered from its record and ends nothing. A name with no
    live instance is "already gone" only for an annex the broker knows (it remembers each annex it
    launched until a week after it ended); any other name is a mistake, refused with the closest
    live annex, and nothing is ended."""
    name = asks.annex_name(call.params)

    def work() -> dict[str, Any]:
        project = live_instances(call)
        annex = [i for i in project if i.annex_name == name]
        record = call.registry.annex(call.project_id, name)
        if not annex and record is None:
            refuse_unknown_annex(call, name, project)
        ending = end_instances(call.ec2, [i.instance_id for i in annex])
        removed = delete_prefix(call, annex_prefix(call.project_id, name))
        ended = record or AnnexRecord(name, "", "", format_expiry_tag(call.now))
        call.registry.put_annex(call.project_id, dataclasses.replace(ended, ended=format_expiry_tag(call.now)))
        return {"annex_name": name, "instance_ids": ending.ended, "objects_removed": removed, "already_gone": not annex,
                **_not_ended(ending)}

    return once(call, lambda: locked(call, lambda _turn: work()))


def refuse_unknown_annex(call: Call, name: str, live: list[AnnexInstance]) -> None:
    """Refused, naming the closest live annex, when the broker never knew an annex of this name
    (it remembers each it launched until a week after it ended); nothing when it did."""
    if call.registry.annex(call.project_id, name) is not None or _seen_in_ec2(call, name):
        return
    raise Refused(
        f"project {call.project_id} has no annex named {name}",
        "the broker never launched an annex of that name, or it ended more than a week ago",
        closest_annex_hint(name, live),
    )


def _not_ended(ending: Ending) -> dict[str, Any]:
    """What terminate could not end (a protected instance: the broker may not clear that, the
    enforcer's next sweep does), named in the answer; nothing when all ended."""
    if not ending.could_not_end:
        return {}
    return {"could_not_end": ending.could_not_end}


def _seen_in_ec2(call: Call, name: str) -> bool:
    """EC2 still lists an instance of the annex that is on its way out or ended (within the hour
    it keeps them), for an annex ended before the broker remembered its annexes."""
    ending = ("shutting-down", "terminated")
    return bool(project_instances(call.ec2, call.project_id, annex_name=name, states=ending))


OPERATIONS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "plan_launch": plan_launch,
    "launch": launch,
    "status": status,
    "plan_extend": plan_extend,
    "extend": extend,
    "terminate": end_annex,
}
